//! Latency markers: sources stamp them, they travel behind the batches through queues,
//! exchanges (to one target each) and operators, and sinks record their age (`sabot::runtime::SINK_LATENCY_US`).

use std::time::Duration;

use sabot::StreamEnv;
use sabot::operators::VecSource;
use sabot::runtime::SINK_LATENCY_US;
use sabot_test_kit::{keyed_batches, keyed_schema};

#[test]
fn markers_cross_the_exchange_behind_the_batches_and_sinks_record_their_age() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let slow = Duration::from_millis(2);
    let out = env
        .source(VecSource::new(
            keyed_schema(),
            keyed_batches(5, 100_000, 500, 64, 3, 20),
        ))
        .rebalance()
        .map(move |b| {
            std::thread::sleep(slow);
            Ok(b)
        })
        .collect();
    let r = env.execute().unwrap();
    assert_eq!(out.num_rows(), 100_000);
    let markers = r.histograms[SINK_LATENCY_US].count();
    // The first batch of each source subtask gets one, then one every 10 ms of a job
    // that runs at least 200 batches x 2 ms over 2 subtasks.
    assert!(markers >= 10, "{markers} markers reached the sinks");
    // The source is far faster than the maps, so their input queues fill up: most
    // markers (each goes to one of the two maps, as in Flink) wait behind at least one
    // batch that takes the map 2 ms. A marker stamped late (or recorded early) would be
    // younger than that.
    let p50 = r.latency(0.5).unwrap();
    assert!(
        p50 >= slow,
        "markers did not wait behind the batches: p50 {p50:?}"
    );
    let p99 = r.latency(0.99).unwrap();
    assert!(p99 >= p50 && p99 < Duration::from_secs(10), "p99 {p99:?}");
}
