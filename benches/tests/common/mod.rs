//! What the tests of `cache-bench`'s commands share.

use std::ffi::OsStr;

/// Runs the `cache-bench` binary as a user does, with `args`; fails the test when it fails,
/// with its output; returns its standard output.
pub fn run_binary<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cache-bench"))
        .args(args)
        .output()
        .expect("run cache-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
