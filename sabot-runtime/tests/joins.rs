//! Joins in running jobs: the interval and window joins at parallelism 1 and 3, with
//! memory and RocksDB state, against a nested-loop model; and with a failure in the
//! middle of a checkpointed run, the committed output of the runs together is exactly
//! the model's (nothing lost, nothing twice).

mod common;

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::random::SplitMix64;
use sabot_core::{RecordBatch, SchemaRef};
use sabot_operators::{
    JoinFactory, JoinType, LookupJoinFactory, MapFactory, TwoInputOperatorFactory, VecSource,
    WatermarkFactory,
};
use sabot_runtime::{CheckpointSettings, JobConfig, JobGraph, Partitioning};
use sabot_state::{RocksDbConfig, StateConfig};

use common::{Chaos, ChaosFactory, EpochSink, Epochs, Fault, run};

/// (key, ts, value) rows; timestamps increase from batch to batch (every source subtask
/// gets every p-th batch), so no row is late anywhere.
fn rows(seed: u64, n: usize, keys: u64, step: i64) -> Vec<(i64, i64, i64)> {
    let mut rng = SplitMix64::new(seed, 0);
    (0..n)
        .map(|i| {
            (
                rng.below(keys) as i64,
                i as i64 * step,
                rng.below(1000) as i64,
            )
        })
        .collect()
}

fn schema(ts: &str, value: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new(ts, DataType::Int64, false),
        Field::new(value, DataType::Int64, false),
    ]))
}

fn batches(schema: &SchemaRef, rows: &[(i64, i64, i64)], size: usize) -> Vec<RecordBatch> {
    rows.chunks(size)
        .map(|c| {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.2))),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Interval(i64, i64),
    Window(i64),
    /// A regular join without TTL.
    Regular,
    /// An event-time lookup join (every right row is an upsert).
    Temporal,
}

struct Case {
    left: Vec<(i64, i64, i64)>,
    right: Vec<(i64, i64, i64)>,
    kind: Kind,
    outer: bool,
}

impl Case {
    fn new(kind: Kind, outer: bool, n: usize) -> Case {
        Case {
            left: rows(1, n, 50, 3),
            right: rows(2, n, 60, 2),
            kind,
            outer,
        }
    }

    fn factory(&self) -> Arc<dyn TwoInputOperatorFactory> {
        let join_type = if self.outer {
            JoinType::LeftOuter
        } else {
            JoinType::Inner
        };
        let f = match self.kind {
            Kind::Regular => JoinFactory::regular(&["key"], &["key"]),
            Kind::Temporal => {
                return Arc::new(
                    LookupJoinFactory::new(&["key"], &["key"])
                        .event_time(Some("ts"), Some("r_ts"))
                        .with_join_type(join_type),
                );
            }
            Kind::Interval(lo, hi) => {
                JoinFactory::interval_ms(&["key"], &["key"], "ts", "r_ts", lo, hi)
            }
            Kind::Window(size) => JoinFactory::window(
                &["key"],
                &["key"],
                "ts",
                "r_ts",
                Duration::from_millis(size as u64),
            ),
        };
        Arc::new(f.with_join_type(join_type))
    }

    /// The nested-loop answer, rendered as the sink renders rows.
    fn expected(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.left {
            if let Kind::Temporal = self.kind {
                let version = self
                    .right
                    .iter()
                    .filter(|r| r.0 == l.0 && r.1 <= l.1)
                    .max_by_key(|r| r.1);
                if version.is_some() || self.outer {
                    out.push(self.render(l, version));
                }
                continue;
            }
            let mut any = false;
            for r in &self.right {
                let hit = l.0 == r.0
                    && match self.kind {
                        Kind::Interval(lo, hi) => r.1 >= l.1 + lo && r.1 <= l.1 + hi,
                        Kind::Window(size) => l.1.div_euclid(size) == r.1.div_euclid(size),
                        Kind::Regular => true,
                        Kind::Temporal => unreachable!(),
                    };
                if hit {
                    any = true;
                    out.push(self.render(l, Some(r)));
                }
            }
            if self.outer && !any {
                out.push(self.render(l, None));
            }
        }
        out.sort();
        out
    }

    fn render(&self, l: &(i64, i64, i64), r: Option<&(i64, i64, i64)>) -> String {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut s = format!(
            "{},{},{},{},{}",
            l.0,
            l.1,
            l.2,
            opt(r.map(|r| r.1)),
            opt(r.map(|r| r.2))
        );
        if let Kind::Window(size) = self.kind {
            let start = l.1 - l.1.rem_euclid(size);
            s.push_str(&format!(",{start},{}", start + size));
        }
        s
    }

    fn job(
        &self,
        p: usize,
        state: StateConfig,
        ckpt: Option<&std::path::Path>,
        chaos: Arc<Chaos>,
        epochs: &Epochs,
    ) -> JobGraph {
        let mut c = JobConfig::default();
        c.parallelism = p;
        c.queue_capacity = 2;
        c.state = state;
        c.checkpoints = ckpt.map(|d| CheckpointSettings::new(d, Duration::from_millis(20)));
        let mut g = JobGraph::new(c);
        let left = side(&mut g, &self.left, "ts", "value");
        let left = g.add_operator(left, Arc::new(ChaosFactory(chaos)));
        let left = g.add_exchange(left, Partitioning::Hash(vec!["key".into()]));
        let right = side(&mut g, &self.right, "r_ts", "r_value");
        let right = g.add_exchange(right, Partitioning::Hash(vec!["key".into()]));
        let join = g.add_two_input(left, right, self.factory());
        g.add_sink(join, Arc::new(EpochSink(epochs.clone())));
        g
    }

    fn check(&self, p: usize, state: StateConfig) {
        let epochs = Epochs::default();
        let r = run(self.job(p, state, None, Chaos::new(Fault::Never), &epochs)).unwrap();
        let got = epochs.committed();
        let want = self.expected();
        assert_eq!(got.len(), want.len(), "p={p}: row count differs");
        assert!(got == want, "p={p}: rows differ from the model");
        assert_eq!(r.metric(sabot_operators::JOIN_LATE_RECORDS_DROPPED), 0);
    }
}

/// source -> watermarks -> slow map, for one input of the join.
fn side(
    g: &mut JobGraph,
    rows: &[(i64, i64, i64)],
    ts: &str,
    value: &str,
) -> sabot_runtime::NodeId {
    let schema = schema(ts, value);
    let src = g.add_source(Arc::new(VecSource::new(
        schema.clone(),
        batches(&schema, rows, 100),
    )));
    let wm = g.add_operator(
        src,
        Arc::new(WatermarkFactory::bounded_out_of_orderness(
            ts,
            Duration::from_millis(5),
        )),
    );
    // Slow enough that checkpoints happen in the middle of the input.
    g.add_operator(
        wm,
        Arc::new(MapFactory::new("slow", |b| {
            std::thread::sleep(Duration::from_millis(1));
            Ok(b)
        })),
    )
}

const N: usize = 3_000;

fn rocksdb(dir: &tempfile::TempDir) -> StateConfig {
    StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
}

#[test]
fn interval_join_matches_the_model_at_parallelism_1_and_3() {
    let case = Case::new(Kind::Interval(-20, 10), false, N);
    assert!(!case.expected().is_empty());
    case.check(1, StateConfig::memory());
    case.check(3, StateConfig::memory());
    let dir = tempfile::tempdir().unwrap();
    case.check(3, rocksdb(&dir));
}

#[test]
fn left_outer_window_join_matches_the_model_at_parallelism_1_and_3() {
    let case = Case::new(Kind::Window(40), true, N);
    let want = case.expected();
    assert!(
        want.iter().any(|r| r.contains(",,")),
        "no unmatched left rows"
    );
    case.check(1, StateConfig::memory());
    case.check(3, StateConfig::memory());
    let dir = tempfile::tempdir().unwrap();
    case.check(3, rocksdb(&dir));
}

#[test]
fn regular_and_temporal_joins_match_the_model_at_parallelism_3() {
    let mut case = Case::new(Kind::Regular, false, N / 3);
    case.check(1, StateConfig::memory());
    case.check(3, StateConfig::memory());
    case.kind = Kind::Temporal;
    case.outer = true;
    assert!(case.expected().iter().any(|r| r.ends_with(",,")));
    case.check(3, StateConfig::memory());
    let dir = tempfile::tempdir().unwrap();
    case.check(3, rocksdb(&dir));
}

/// A failure in the middle of a checkpointed run; the job is started again on its
/// folder: the committed rows are exactly the model's.
fn recovers(kind: Kind, outer: bool, state: StateConfig) {
    let case = Case::new(kind, outer, 5 * N);
    let dir = tempfile::tempdir().unwrap();
    let epochs = Epochs::default();
    let chaos = Chaos::new(Fault::AfterCheckpoint(dir.path().to_path_buf().into(), 100));
    let err = run(case.job(3, state.clone(), Some(dir.path()), chaos.clone(), &epochs))
        .expect_err("the injected failure");
    assert!(chaos.fired(), "{err}");
    let r = run(case.job(
        3,
        state,
        Some(dir.path()),
        Chaos::new(Fault::Never),
        &epochs,
    ))
    .unwrap();
    assert!(r.restored_from.is_some(), "the rerun started from scratch");
    println!(
        "restored from {:?}, {} rows committed",
        r.restored_from,
        epochs.committed().len()
    );
    let got = epochs.committed();
    let want = case.expected();
    assert_eq!(got.len(), want.len(), "rows lost or duplicated");
    assert!(got == want, "committed rows differ from the model");
}

#[test]
fn interval_join_recovers_exactly_once() {
    recovers(Kind::Interval(-30, 0), true, StateConfig::memory());
}

#[test]
fn temporal_join_recovers_exactly_once() {
    recovers(Kind::Temporal, false, StateConfig::memory());
}

#[test]
fn window_join_recovers_exactly_once_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    recovers(Kind::Window(25), false, rocksdb(&dir));
}

/// Join misuse is a build error naming the problem.
#[test]
fn build_errors() {
    let case = Case::new(Kind::Interval(0, 1), false, 10);
    let mut g = JobGraph::new(JobConfig::default());
    let s = schema("ts", "value");
    let a = g.add_source(Arc::new(VecSource::new(
        s.clone(),
        batches(&s, &case.left, 5),
    )));
    let b = g.add_source(Arc::new(VecSource::new(
        s.clone(),
        batches(&s, &case.left, 5),
    )));
    let a = g.add_exchange(a, Partitioning::Hash(vec!["value".into()]));
    let b = g.add_exchange(b, Partitioning::Hash(vec!["key".into()]));
    let f = JoinFactory::interval_ms(&["key"], &["key"], "ts", "ts", 0, 1);
    let j = g.add_two_input(a, b, Arc::new(f.clone()));
    g.add_sink(j, Arc::new(EpochSink(Epochs::default())));
    let e = g.build().unwrap_err().to_string();
    assert!(e.contains("partitioned by key_by(key)"), "{e}");
    assert!(f.name().contains("interval_join"));
}
