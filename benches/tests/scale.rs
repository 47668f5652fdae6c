//! `cache-bench scale` on small settings: every figure is produced and sane.

use cache_bench::scale::{self, ScaleArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_scenario_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scale.json");
    let report = scale::run(ScaleArgs {
        nodes: 2,
        keys: 2000,
        value_size: bytesize::ByteSize::kib(1),
        capacity: bytesize::ByteSize::kib(768),
        zipf: 0.99,
        warmup_ops: 6000,
        window_ops: 2000,
        reload_ops: 500,
        concurrency: 8,
        seed: 1,
        json: Some(json.clone()),
    })
    .await
    .unwrap();
    assert_eq!(report.failed_requests, 0);
    assert_eq!(report.lost_entries_scale_in, 0);
    assert!(report.entries_scale_in > 0);
    assert!(
        (report.moved_fraction - report.ideal_fraction).abs() < 0.1,
        "{report:?}"
    );
    assert!(
        report.prewarm_hit_ratio > report.cold_hit_ratio,
        "{report:?}"
    );
    assert!(report.prewarmed_entries > 0);
    // Handing entries over must pay: the window after scale-out hits more than without it.
    assert!(
        report.hit_ratio_after_handoff > report.hit_ratio_after_no_handoff,
        "{report:?}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for field in [
        "moved_fraction",
        "ideal_fraction",
        "hit_ratio_before",
        "hit_ratio_after_handoff",
        "hit_ratio_after_no_handoff",
        "lost_entries_scale_in",
        "prewarm_hit_ratio",
        "cold_hit_ratio",
        "failed_requests",
    ] {
        assert!(written.get(field).is_some(), "missing {field}");
    }
    for field in [
        "hit_ratio_before",
        "hit_ratio_after_handoff",
        "hit_ratio_after_no_handoff",
    ] {
        let r = written[field].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r), "{field} = {r}");
    }
}
