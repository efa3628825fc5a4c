//! A job split over two workers exchanging data over Arrow Flight on loopback gives the
//! same output as the job in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sabot_operators::{
    Aggregate, CollectSink, Collected, TumblingWindowFactory, VecSource, WatermarkFactory,
};
use sabot_runtime::{Cluster, JobConfig, JobGraph, Partitioning, RuntimeError};
use sabot_shuffle::flight::FlightConfig;
use sabot_test_kit::row_strings;
use sabot_test_kit::{keyed_batches, keyed_schema};

/// source -> watermarks -> key_by -> 100 ms window (count, sum) -> rebalance -> sink.
fn job(cluster: Option<Cluster>) -> (JobGraph, Collected) {
    let mut c = JobConfig::default();
    c.parallelism = 3;
    c.queue_capacity = 2;
    c.cluster = cluster;
    let mut g = JobGraph::new(c);
    let src = g.add_source(Arc::new(VecSource::new(
        keyed_schema(),
        keyed_batches(11, 60_000, 700, 500, 1, 40),
    )));
    let wm = g.add_operator(
        src,
        Arc::new(WatermarkFactory::bounded_out_of_orderness(
            "ts",
            Duration::from_millis(50),
        )),
    );
    let keyed = g.add_exchange(wm, Partitioning::Hash(vec!["key".into()]));
    let win = g.add_operator(
        keyed,
        Arc::new(TumblingWindowFactory::new(
            vec!["key".into()],
            Some("ts".into()),
            Duration::from_millis(100),
            vec![Aggregate::count(), Aggregate::sum("value")],
        )),
    );
    let spread = g.add_exchange(win, Partitioning::RoundRobin);
    let (sink, out) = CollectSink::new();
    g.add_sink(spread, Arc::new(sink));
    (g, out)
}

fn rows(out: &[Collected]) -> Vec<String> {
    let mut rows = Vec::new();
    for c in out {
        for b in c.batches() {
            rows.extend(row_strings(&b));
        }
    }
    rows.sort();
    rows
}

fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

#[test]
fn two_workers_over_flight_give_the_same_output_as_one_process() {
    let (g, out) = job(None);
    let single = g.build().unwrap().run().unwrap();
    let expected = rows(&[out]);
    assert!(expected.len() > 1000, "{} windows", expected.len());

    let workers = free_ports(2);
    let mut outputs = Vec::new();
    let mut handles = Vec::new();
    for me in 0..2 {
        let (g, out) = job(Some(Cluster::new(workers.clone(), me)));
        handles.push(g.build().unwrap().start().unwrap());
        outputs.push(out);
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(rows(&outputs), expected);
    // Worker 0 runs subtasks 0 and 2, worker 1 subtask 1: together, every record once.
    let records: u64 = results
        .iter()
        .map(|r| r.metric(sabot_runtime::SOURCE_RECORDS))
        .sum();
    assert_eq!(records, single.metric(sabot_runtime::SOURCE_RECORDS));
    assert!(
        results
            .iter()
            .all(|r| r.metric(sabot_runtime::SOURCE_RECORDS) > 0)
    );
}

/// A coordinator's placement (`Cluster::with_owners`): worker 0 runs subtask 1, worker 1
/// subtasks 0 and 2; the output is still the one-process run's.
#[test]
fn an_explicit_placement_gives_the_same_output_as_one_process() {
    let (g, out) = job(None);
    g.build().unwrap().run().unwrap();
    let expected = rows(&[out]);
    let workers = free_ports(2);
    let mut outputs = Vec::new();
    let mut handles = Vec::new();
    for me in 0..2 {
        let cluster = Cluster::new(workers.clone(), me).with_owners(vec![1, 0, 1]);
        let (g, out) = job(Some(cluster));
        handles.push(g.build().unwrap().start().unwrap());
        outputs.push(out);
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(rows(&outputs), expected);
    // Worker 1 has two of the three source subtasks.
    let records: Vec<u64> = results
        .iter()
        .map(|r| r.metric(sabot_runtime::SOURCE_RECORDS))
        .collect();
    assert!(records[1] > records[0], "{records:?}");
}

/// Checkpoints of a job split over two workers: worker 0 runs the coordinator, worker 1
/// sends its tasks' reports and takes the controls over the network; both snapshot into
/// the shared folder. Checkpoints complete (the final one too), and the output is the
/// one-process run's.
#[test]
fn two_workers_take_checkpoints_together() {
    let (g, out) = job(None);
    g.build().unwrap().run().unwrap();
    let expected = rows(&[out]);
    let dir = tempfile::tempdir().unwrap();
    let workers = free_ports(2);
    let mut outputs = Vec::new();
    let mut handles = Vec::new();
    for me in 0..2 {
        let (mut g, out) = job(Some(Cluster::new(workers.clone(), me)));
        g.config_mut().checkpoints = Some(sabot_runtime::CheckpointSettings::new(
            dir.path(),
            Duration::from_millis(20),
        ));
        handles.push(g.build().unwrap().start().unwrap());
        outputs.push(out);
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(rows(&outputs), expected);
    assert!(
        !results[0].checkpoints.is_empty(),
        "worker 0 completed no checkpoint"
    );
    let storage = sabot_checkpoint::storage::CheckpointStorage::open(dir.path()).unwrap();
    let latest = storage.latest().unwrap().expect("a complete checkpoint");
    assert_eq!(Some(&latest.id), results[0].checkpoints.last());
    // Both workers' tasks wrote into it: every subtask's source position is there.
    let names: Vec<&str> = latest.files.iter().map(|f| f.path.as_str()).collect();
    for s in 0..3 {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("source-") && n.ends_with(&format!("-{s}.pos"))),
            "no position of source subtask {s} in {names:?}"
        );
    }
}

#[test]
fn a_worker_whose_peer_never_starts_fails_with_a_clear_error() {
    let workers = free_ports(2);
    let flight = FlightConfig::default().with_connect_timeout(Duration::from_millis(500));
    let (g, _) = job(Some(Cluster::new(workers.clone(), 0).with_flight(flight)));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(g.build().and_then(|j| j.run()));
    });
    let error = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the worker hung without its peer")
        .unwrap_err();
    let text = sabot_core::ErrorChain(&error).to_string();
    assert!(
        text.contains(&workers[1].to_string()) || text.contains("no upstream subtask connected"),
        "{text}"
    );
}

#[test]
fn cluster_settings_are_checked_at_build_time() {
    let workers = free_ports(2);
    for (cluster, want) in [
        (Cluster::new(vec![], 0), "empty"),
        (Cluster::new(workers.clone(), 2), "index 2"),
        (Cluster::new(vec![workers[0]; 4], 0), "parallelism 3"),
        (
            Cluster::new(workers.clone(), 0).with_owners(vec![0, 1]),
            "2 subtasks placed for parallelism 3",
        ),
        (
            Cluster::new(workers.clone(), 0).with_owners(vec![0, 2, 1]),
            "subtask 1 placed on worker 2 of 2",
        ),
        (
            Cluster::new(workers.clone(), 0).with_owners(vec![0, 0, 0]),
            "worker 1 has no subtask",
        ),
    ] {
        let (g, _) = job(Some(cluster));
        let e = g.build().unwrap_err();
        assert!(matches!(e, RuntimeError::Core(_)), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
}

/// Two sources -> watermarks -> key_by each -> interval join -> sink.
fn join_job(cluster: Option<Cluster>) -> (JobGraph, Collected) {
    use sabot_operators::JoinFactory;
    let mut c = JobConfig::default();
    c.parallelism = 3;
    c.queue_capacity = 2;
    c.cluster = cluster;
    let mut g = JobGraph::new(c);
    let side = |g: &mut JobGraph, seed: u64| {
        let src = g.add_source(Arc::new(VecSource::new(
            keyed_schema(),
            keyed_batches(seed, 20_000, 500, 300, 1, 0),
        )));
        let wm = g.add_operator(
            src,
            Arc::new(WatermarkFactory::bounded_out_of_orderness(
                "ts",
                Duration::from_millis(5),
            )),
        );
        g.add_exchange(wm, Partitioning::Hash(vec!["key".into()]))
    };
    let left = side(&mut g, 3);
    let right = side(&mut g, 4);
    let join = g.add_two_input(
        left,
        right,
        Arc::new(JoinFactory::interval_ms(
            &["key"],
            &["key"],
            "ts",
            "ts",
            -20,
            20,
        )),
    );
    let (sink, out) = CollectSink::new();
    g.add_sink(join, Arc::new(sink));
    (g, out)
}

/// A join split over two workers: the second input's channels cross the network tagged
/// as the second input, and the output equals the one-process run.
#[test]
fn a_join_over_two_workers_gives_the_same_output_as_one_process() {
    let (g, out) = join_job(None);
    g.build().unwrap().run().unwrap();
    let expected = rows(&[out]);
    assert!(expected.len() > 1000, "{} pairs", expected.len());
    let workers = free_ports(2);
    let mut outputs = Vec::new();
    let mut handles = Vec::new();
    for me in 0..2 {
        let (g, out) = join_job(Some(Cluster::new(workers.clone(), me)));
        handles.push(g.build().unwrap().start().unwrap());
        outputs.push(out);
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(rows(&outputs), expected);
}
