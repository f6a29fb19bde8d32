//! The `metrics` feature: a store reports its counters, gauges and latencies to the
//! recorder the application installed.
#![cfg(feature = "metrics")]

use std::time::Duration;

use idemdb::{Begin, Fingerprint, Store};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn a_store_reports_counters_gauges_and_latencies() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let store = Store::builder()
            .sweep_interval(None)
            .open_in_memory()
            .expect("open");
        let fp = Fingerprint::of(b"request");
        let Begin::Execute(claim) = store.begin("s", "k", fp).expect("begin") else {
            panic!("a fresh key executes")
        };
        claim.complete(b"done").expect("complete");
        assert!(matches!(
            store.begin("s", "k", fp).expect("begin"),
            Begin::Replay(_)
        ));
        let stats = store.stats();
        assert_eq!(stats.executes, 1);
        store.close().expect("close");
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: Option<(&str, &str)>| {
        snapshot
            .iter()
            .find(|(key, _, _, _)| {
                key.key().name() == name
                    && label.is_none_or(|(k, v)| {
                        key.key().labels().any(|l| l.key() == k && l.value() == v)
                    })
            })
            .map(|(_, _, _, value)| value)
            .unwrap_or_else(|| panic!("{name} {label:?} was not reported: {snapshot:?}"))
    };
    assert_eq!(find("idemdb_executes_total", None), &DebugValue::Counter(1));
    assert_eq!(find("idemdb_replays_total", None), &DebugValue::Counter(1));
    assert_eq!(
        find("idemdb_completes_total", None),
        &DebugValue::Counter(1)
    );
    assert!(matches!(
        find("idemdb_commits_total", None),
        DebugValue::Counter(n) if *n >= 1
    ));
    assert!(matches!(
        find("idemdb_generations", None),
        DebugValue::Gauge(_)
    ));
    for outcome in ["execute", "replay"] {
        match find("idemdb_begin_duration_seconds", Some(("outcome", outcome))) {
            DebugValue::Histogram(samples) => {
                assert_eq!(samples.len(), 1, "{outcome}");
                assert!(samples[0].into_inner() < Duration::from_secs(60).as_secs_f64());
            }
            other => panic!("{outcome}: {other:?}"),
        }
    }
    match find(
        "idemdb_claim_end_duration_seconds",
        Some(("op", "complete")),
    ) {
        DebugValue::Histogram(samples) => assert_eq!(samples.len(), 1),
        other => panic!("{other:?}"),
    }
}
