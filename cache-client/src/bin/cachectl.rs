//! `cachectl`: a command-line client for cachelet. See `cachectl --help`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = cache_client::cli::Args::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    cache_client::cli::run(args, &mut out, &mut err).await
}
