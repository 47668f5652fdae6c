//! `cache-bench check` against real `cache-server` processes over local files, for 30 s, on
//! two schedules:
//! - the harsh one: changes of members every 0.5 s (two in three told to one node alone),
//!   kills, stops and client pauses. The first run must find no anomaly; the negative
//!   control, with epoch fencing switched off on every node, must find some (in one of up
//!   to three runs: a run finds a few).
//! - the default one, with changes every 3 s, under which about half the `Strong` reads are
//!   served from leased copies. No anomaly may be found; the negative control, whose writes
//!   do not wait for lease holders, must find some (in one of up to three runs).

use std::process::Command;

use serde_json::Value;

/// The harsh schedule.
const HARSH: &[&str] = &[
    "--faults",
    "members,kill,stop,pause",
    "--membership-interval",
    "500ms",
];
/// The default schedule, on local files.
const LEASED: &[&str] = &["--faults", "members,kill,stop,pause"];

/// Runs `cache-bench check` on the short settings plus `extra`; returns its exit code and
/// JSON summary.
fn check(extra: &[&str]) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("check.json");
    let history = dir.path().join("history.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_cache-bench"))
        .args([
            "check",
            "--duration",
            "30s",
            "--clients",
            "6",
            "--store",
            "file",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--history")
        .arg(&history)
        .args(extra)
        .output()
        .expect("run cache-bench check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let summary: Value = serde_json::from_slice(
        &std::fs::read(&json).unwrap_or_else(|e| panic!("no summary ({e}):\n{stderr}")),
    )
    .unwrap();
    // One op a line, each a complete record.
    let lines = std::fs::read_to_string(&history).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        summary["ops"].as_u64().unwrap()
    );
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for field in ["process", "key", "op", "invoke_ns", "complete_ns", "ok"] {
        assert!(
            first.get(field).is_some(),
            "history line lacks {field}: {first}"
        );
    }
    (output.status.code(), summary)
}

fn anomalies(summary: &Value) -> u64 {
    summary["anomalies"]
        .as_object()
        .expect("anomalies by kind")
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn a_run_under_faults_reports_every_figure_and_no_anomaly() {
    let (code, summary) = check(HARSH);
    for field in [
        "ops",
        "anomalies",
        "lost_writes",
        "membership_changes",
        "kills",
        "stops",
        "store_outages",
        "pauses",
        "strong_reads",
        "leased_reads",
        "failed_by_code",
        "unchecked_keys",
        "duration_s",
        "nemesis_control",
    ] {
        assert!(summary.get(field).is_some(), "missing {field}: {summary}");
    }
    assert!(summary["ops"].as_u64().unwrap() > 500, "{summary}");
    assert!(
        summary["membership_changes"].as_u64().unwrap() >= 3,
        "{summary}"
    );
    assert!(summary["kills"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["stops"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["pauses"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["leases"], true, "leases are on by default");
    assert_eq!(
        summary["unchecked_keys"].as_array().map(Vec::len),
        Some(0),
        "every key was checked: {summary}"
    );
    assert_eq!(
        summary["store_outages"], 0,
        "no store outages on local files"
    );
    assert_eq!(summary["nemesis_control"], "none");
    assert!(summary["failed_by_code"].is_object());
    assert_eq!(
        anomalies(&summary),
        0,
        "the checker found anomalies: {:#}",
        summary["first_anomalies"]
    );
    assert_eq!(code, Some(0));
}

/// Runs a negative control up to `tries` times, until one run finds anomalies (a run of 30 s
/// finds a few, so one may find none); returns that run's exit code and summary.
fn control(args: &[&str], tries: usize) -> (Option<i32>, Value) {
    let mut last = None;
    for _ in 0..tries {
        let (code, summary) = check(args);
        if anomalies(&summary) > 0 {
            return (code, summary);
        }
        last = Some(summary);
    }
    panic!("no anomaly in {tries} runs: {:?}", last);
}

#[test]
fn the_checker_catches_nodes_without_fencing() {
    let (code, summary) = control(&[HARSH, &["--nemesis-control", "unfenced"]].concat(), 3);
    assert_eq!(summary["nemesis_control"], "unfenced");
    assert_eq!(code, Some(2), "anomalies make the exit code 2");
}

#[test]
fn leased_reads_stay_linearizable_through_scale_events_and_pauses() {
    let (code, summary) = check(LEASED);
    let strong = summary["strong_reads"].as_u64().unwrap();
    let leased = summary["leased_reads"].as_u64().unwrap();
    assert!(
        leased * 4 > strong,
        "most Strong reads should be leased: {leased} of {strong}"
    );
    assert!(summary["membership_changes"].as_u64().unwrap() >= 3);
    assert!(summary["pauses"].as_u64().unwrap() >= 1);
    assert_eq!(
        anomalies(&summary),
        0,
        "the checker found anomalies: {:#}",
        summary["first_anomalies"]
    );
    assert_eq!(code, Some(0));
}

#[test]
fn the_checker_catches_writes_that_do_not_wait_for_lease_holders() {
    let (code, summary) = control(
        &[LEASED, &["--nemesis-control", "unleased-writes"]].concat(),
        3,
    );
    assert_eq!(summary["nemesis_control"], "unleased-writes");
    assert_eq!(code, Some(2));
}
