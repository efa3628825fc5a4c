//! A failing subtask stops the whole job, which reports the cause (not a follow-up error),
//! and never hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sabot_operators::{CollectSink, MapFactory, OperatorError, VecSource};
use sabot_runtime::{JobConfig, JobGraph, Partitioning, Result, RuntimeError};
use sabot_test_kit::{keyed_batches, keyed_schema};

/// Runs the job on a helper thread; a hang fails the test instead of blocking CI.
fn run_with_timeout(g: JobGraph) -> Result<sabot_runtime::JobResult> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(g.build().and_then(|j| j.run()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the job hung after a subtask failed")
}

/// source -> key_by -> map (may fail) -> sink, at parallelism 3, with many batches so
/// upstream subtasks are blocked on full queues when the failure happens.
fn job(map: MapFactory) -> JobGraph {
    let mut c = JobConfig::default();
    c.parallelism = 3;
    c.queue_capacity = 1;
    let mut g = JobGraph::new(c);
    let src = g.add_source(Arc::new(VecSource::new(
        keyed_schema(),
        keyed_batches(3, 200_000, 500, 100, 1, 1),
    )));
    let ex = g.add_exchange(src, Partitioning::Hash(vec!["key".into()]));
    let m = g.add_operator(ex, Arc::new(map));
    g.add_sink(m, Arc::new(CollectSink::new().0));
    g
}

#[test]
fn user_error_stops_the_job_and_is_reported() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let map = MapFactory::new("fragile", move |b| {
        if c.fetch_add(1, Ordering::SeqCst) == 20 {
            return Err("record 20 is malformed".into());
        }
        Ok(b)
    });
    let err = run_with_timeout(job(map)).unwrap_err();
    let msg = sabot_test_kit::error_chain(&err);
    assert!(msg.contains("record 20 is malformed"), "{msg}");
    assert!(
        msg.contains("fragile"),
        "the error names the operator: {msg}"
    );
    match err {
        RuntimeError::Subtask { source, .. } => {
            assert!(matches!(
                *source,
                RuntimeError::Operator(OperatorError::User { .. })
            ))
        }
        other => panic!("expected the user's error, got {other:?}"),
    }
}

#[test]
fn panicking_operator_stops_the_job_and_is_reported() {
    let map = MapFactory::new("buggy", |b| {
        if b.num_rows() > 0 {
            panic!("operator bug");
        }
        Ok(b)
    });
    let err = run_with_timeout(job(map)).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Panicked { message, .. } if message == "operator bug"),
        "{err:?}"
    );
}

#[test]
fn map_with_wrong_schema_is_reported() {
    let map = MapFactory::new("drops-a-column", |b| Ok(b.project(&[0, 1])?));
    let err = run_with_timeout(job(map)).unwrap_err();
    assert!(err.to_string().contains("drops-a-column"), "{err}");
}

#[test]
fn more_subtasks_than_input_partitions_still_finishes() {
    let mut c = JobConfig::default();
    c.parallelism = 4;
    let mut g = JobGraph::new(c);
    // One batch: three of the four source subtasks have nothing to read.
    let src = g.add_source(Arc::new(VecSource::new(
        keyed_schema(),
        keyed_batches(3, 100, 100, 10, 1, 1),
    )));
    let ex = g.add_exchange(src, Partitioning::Hash(vec!["key".into()]));
    let (sink, out) = CollectSink::new();
    g.add_sink(ex, Arc::new(sink));
    run_with_timeout(g).unwrap();
    assert_eq!(out.num_rows(), 100);
}
