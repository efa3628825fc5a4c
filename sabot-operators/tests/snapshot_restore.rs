//! Stateful operators snapshot in the middle of a stream and continue from the snapshot,
//! at the same or a different parallelism (key groups move between subtasks), with the
//! same output as an uninterrupted run.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot_core::key::hash_i64;
use sabot_core::metrics::Metrics;
use sabot_core::{KeyGroup, KeyGroupRange, Message, RecordBatch, Timestamp};
use sabot_operators::{
    Aggregate, KeyedContext, KeyedProcessFactory, KeyedProcessFunction, Operator, OperatorFactory,
    Output, ProcessState, RowWriter, TaskContext, TumblingWindowFactory,
};
use sabot_operators::{SnapshotSource, SnapshotTarget};
use sabot_state::{RocksDbConfig, StateConfig, StateDescriptor, ValueState};
use sabot_test_kit::row_strings;
use sabot_time::TimeDomain;

const MAX_P: usize = 16;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
    let col = |f: fn(&(i64, i64, i64)) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    RecordBatch::try_new(schema(), vec![col(|r| r.0), col(|r| r.1), col(|r| r.2)]).unwrap()
}

/// A running count and sum per key, emitted for every row, plus a row per key when an
/// event-time timer 50 ms after the key's last row fires.
struct RunningSum {
    count: Option<ValueState<(i64, i64)>>,
}

impl KeyedProcessFunction for RunningSum {
    fn open(&mut self, state: &mut ProcessState) -> sabot_operators::Result<()> {
        self.count = Some(state.value_state(StateDescriptor::new("sum"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> sabot_operators::Result<()> {
        let s = self.count.as_ref().unwrap();
        let v = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(row);
        let ts = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(row);
        let (n, sum) = s.get(ctx.state())?.unwrap_or((0, 0));
        s.update(ctx.state(), &(n + 1, sum + v))?;
        ctx.register_event_time_timer(Timestamp::from_millis(ts + 50));
        out.append_i64(0, ctx.key_i64().unwrap())?;
        out.append_i64(1, n + 1)?;
        out.append_i64(2, sum + v)
    }

    fn on_timer(
        &mut self,
        at: Timestamp,
        _: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> sabot_operators::Result<()> {
        let (n, _) = self
            .count
            .as_ref()
            .unwrap()
            .get(ctx.state())?
            .unwrap_or((0, 0));
        out.append_i64(0, ctx.key_i64().unwrap())?;
        out.append_i64(1, -n)?;
        out.append_i64(2, at.millis())
    }
}

fn factories() -> Vec<Arc<dyn OperatorFactory>> {
    let output = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("x", DataType::Int64, false),
    ]));
    vec![
        Arc::new(TumblingWindowFactory::new(
            vec!["key".into()],
            Some("ts".into()),
            Duration::from_millis(100),
            vec![Aggregate::count(), Aggregate::sum("value")],
        )),
        Arc::new(KeyedProcessFactory::new(
            "running_sum",
            &["key"],
            output,
            || RunningSum { count: None },
        )),
    ]
}

/// The stream: batches of rows, each followed by a watermark 30 ms behind its newest row.
fn stream(rows: &[(i64, i64, i64)], cuts: &[usize]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut max_ts = i64::MIN;
    for &c in cuts.iter().cycle() {
        if at >= rows.len() {
            break;
        }
        let end = (at + c).min(rows.len());
        let part = &rows[at..end];
        max_ts = part.iter().map(|r| r.2).fold(max_ts, i64::max);
        out.push(Message::Data(batch(part)));
        out.push(Message::Watermark(Timestamp::from_millis(max_ts - 30)));
        at = end;
    }
    out
}

fn owner(key: i64, p: usize) -> usize {
    let kg = KeyGroup::of_hash(hash_i64(key), MAX_P);
    (0..p)
        .find(|&s| KeyGroupRange::for_subtask(MAX_P, p, s).contains(kg))
        .unwrap()
}

/// Sends `msg` to the subtask of each row's key (watermarks to all); collects output rows.
fn feed(ops: &mut [Box<dyn Operator>], msg: &Message, rows: &mut Vec<String>) {
    let p = ops.len();
    let mut out = Output::new();
    for (s, op) in ops.iter_mut().enumerate() {
        match msg {
            Message::Data(b) => {
                let keys = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let mine: Vec<(i64, i64, i64)> = (0..b.num_rows())
                    .filter(|&r| owner(keys.value(r), p) == s)
                    .map(|r| {
                        let c = |i: usize| {
                            b.column(i)
                                .as_any()
                                .downcast_ref::<Int64Array>()
                                .unwrap()
                                .value(r)
                        };
                        (c(0), c(1), c(2))
                    })
                    .collect();
                if !mine.is_empty() {
                    op.on_batch(batch(&mine), &mut out).unwrap();
                }
            }
            Message::Watermark(w) => op.on_watermark(*w, &mut out).unwrap(),
            Message::EndOfStream => op.on_end(&mut out).unwrap(),
            _ => {}
        }
        collect(&mut out, rows);
    }
}

fn collect(out: &mut Output, rows: &mut Vec<String>) {
    for m in out.drain() {
        if let Message::Data(b) = m {
            rows.extend(row_strings(&b));
        }
    }
}

fn operators(
    f: &Arc<dyn OperatorFactory>,
    p: usize,
    state: &StateConfig,
    metrics: &Metrics,
) -> Vec<Box<dyn Operator>> {
    (0..p)
        .map(|s| {
            let ctx = TaskContext::new(s, p, MAX_P, metrics.clone()).with_state(state.clone());
            f.create(&schema(), &ctx).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn operators_continue_from_a_snapshot_at_any_parallelism(
        rows in prop::collection::vec((0i64..40, -50i64..50, 0i64..2000), 1..400),
        cuts in prop::collection::vec(1usize..60, 1..8),
        split in 0.0f64..1.0,
        from_p in 1usize..4,
        to_p in 1usize..4,
        rocks in any::<bool>(),
    ) {
        let mut rows = rows;
        // Roughly in time order: out of order by up to 100 ms across window boundaries,
        // against a watermark 30 ms behind, so some rows are late (and the restored
        // watermark matters).
        rows.sort_by_key(|r| (r.2 + 50) / 100);
        let msgs = stream(&rows, &cuts);
        let k = ((msgs.len() as f64) * split) as usize;
        let dir = tempfile::tempdir().unwrap();
        let state = if rocks {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let metrics = Metrics::new();
        for f in factories() {
            // Uninterrupted, one subtask.
            let mut expected = Vec::new();
            let mut one = operators(&f, 1, &state, &metrics);
            for m in msgs.iter().chain([&Message::EndOfStream]) {
                feed(&mut one, m, &mut expected);
            }
            expected.sort();

            // Interrupted after message k at parallelism from_p, continued at to_p.
            let mut got = Vec::new();
            let mut before = operators(&f, from_p, &state, &metrics);
            for m in &msgs[..k] {
                feed(&mut before, m, &mut got);
            }
            let snaps: Vec<_> = (0..from_p)
                .map(|s| dir.path().join(format!("snap-{}-{s}", f.name())))
                .collect();
            for (op, d) in before.iter_mut().zip(&snaps) {
                op.snapshot(&SnapshotTarget::local(d).unwrap()).unwrap();
            }
            drop(before);
            let sources: Vec<_> = snaps.iter().map(|d| SnapshotSource::local(d).unwrap()).collect();
            let mut after = operators(&f, to_p, &state, &metrics);
            for op in after.iter_mut() {
                op.restore(&sources).unwrap();
            }
            for m in msgs[k..].iter().chain([&Message::EndOfStream]) {
                feed(&mut after, m, &mut got);
            }
            got.sort();
            prop_assert_eq!(&got, &expected, "{} split at {} of {}, {} -> {}", f.name(), k, msgs.len(), from_p, to_p);
        }
    }
}

#[test]
fn a_damaged_operator_snapshot_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let f = &factories()[0];
    let mut op = operators(f, 1, &StateConfig::memory(), &metrics).remove(0);
    let mut out = Output::new();
    op.on_batch(batch(&[(1, 2, 3)]), &mut out).unwrap();
    let snap = dir.path().join("snap");
    op.snapshot(&SnapshotTarget::local(&snap).unwrap()).unwrap();
    let file = snap.join("operator.sbop");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let mut fresh = operators(f, 1, &StateConfig::memory(), &metrics).remove(0);
    let e = fresh
        .restore(&[SnapshotSource::local(&snap).unwrap()])
        .unwrap_err();
    assert!(e.to_string().contains("operator.sbop"), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
}
