//! The keyed process function: Flink's "count with timeout" example against a simple
//! model, over random keys, batch boundaries and watermarks, with state in memory and in
//! RocksDB; processing-time timers on a manual clock; misuse of the output writer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use sabot_core::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch, Timestamp};
use sabot_operators::{
    KeyedContext, KeyedProcessFactory, KeyedProcessFunction, Operator, OperatorFactory, Output,
    ProcessState, Result, RowWriter, TaskContext,
};
use sabot_state::{RocksDbConfig, StateConfig, StateDescriptor, ValueState};
use sabot_time::{ManualClock, TimeDomain};

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
        Field::new("last", DataType::Int64, false),
    ]))
}

fn batch(rows: &[(i64, i64)]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("user-{}", r.0)),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
    ];
    RecordBatch::try_new(input_schema(), cols).unwrap()
}

/// Flink's `CountWithTimeoutFunction`: counts a key's records and emits the count once
/// the key has seen no record for `gap` ms of event time.
struct CountWithTimeout {
    gap: i64,
    count: Option<ValueState<u64>>,
    last: Option<ValueState<i64>>,
    id: Option<ValueState<i64>>,
}

impl CountWithTimeout {
    fn new(gap: i64) -> Self {
        CountWithTimeout {
            gap,
            count: None,
            last: None,
            id: None,
        }
    }
}

impl KeyedProcessFunction for CountWithTimeout {
    fn open(&mut self, state: &mut ProcessState) -> Result<()> {
        self.count = Some(state.value_state(StateDescriptor::new("count"))?);
        self.last = Some(state.value_state(StateDescriptor::new("last"))?);
        self.id = Some(state.value_state(StateDescriptor::new("id"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        _out: &mut RowWriter,
    ) -> Result<()> {
        let (count, last) = (self.count.as_ref().unwrap(), self.last.as_ref().unwrap());
        let ts = batch.column(2).as_primitive::<Int64Type>().value(row);
        let n = count.get(ctx.state())?.unwrap_or(0) + 1;
        count.update(ctx.state(), &n)?;
        last.update(ctx.state(), &ts)?;
        let id = batch.column(0).as_primitive::<Int64Type>().value(row);
        self.id.as_ref().unwrap().update(ctx.state(), &id)?;
        ctx.register_event_time_timer(Timestamp::from_millis(ts + self.gap));
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()> {
        assert_eq!(domain, TimeDomain::EventTime);
        let (count, last) = (self.count.as_ref().unwrap(), self.last.as_ref().unwrap());
        let Some(l) = last.get(ctx.state())? else {
            return Ok(());
        };
        if at.millis() == l + self.gap {
            let n = count.get(ctx.state())?.unwrap_or(0);
            let id = self.id.as_ref().unwrap().get(ctx.state())?.unwrap();
            if let Some(key) = ctx.key_i64() {
                assert_eq!(key, id, "the timer's key is the key that set it");
            }
            out.append_i64(0, id)?;
            out.append_i64(1, n as i64)?;
            out.append_i64(2, l)?;
            count.clear(ctx.state())?;
            last.clear(ctx.state())?;
            self.id.as_ref().unwrap().clear(ctx.state())?;
        }
        Ok(())
    }
}

/// The model: the same rules, one record and one timer at a time, in plain maps.
fn model(batches: &[(Vec<(i64, i64)>, i64)], gap: i64) -> BTreeSet<(i64, i64, i64)> {
    let mut state: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut timers: BTreeSet<(i64, i64)> = BTreeSet::new();
    let mut out = BTreeSet::new();
    let mut fire = |wm: i64, state: &mut BTreeMap<i64, (i64, i64)>, timers: &mut BTreeSet<_>| {
        while let Some(&(at, k)) = timers.iter().next() {
            if at > wm {
                break;
            }
            timers.remove(&(at, k));
            if let Some(&(n, l)) = state.get(&k)
                && at == l + gap
            {
                out.insert((k, n, l));
                state.remove(&k);
            }
        }
    };
    let mut wm = i64::MIN;
    for (rows, next_wm) in batches {
        for &(k, ts) in rows {
            let e = state.entry(k).or_insert((0, 0));
            e.0 += 1;
            e.1 = ts;
            timers.insert((ts + gap, k));
        }
        if *next_wm > wm {
            wm = *next_wm;
            fire(wm, &mut state, &mut timers);
        }
    }
    fire(i64::MAX, &mut state, &mut timers);
    out
}

fn run(
    batches: &[(Vec<(i64, i64)>, i64)],
    gap: i64,
    key: &str,
    state: StateConfig,
) -> BTreeSet<(i64, i64, i64)> {
    let factory =
        KeyedProcessFactory::new("count_with_timeout", &[key], output_schema(), move || {
            CountWithTimeout::new(gap)
        });
    let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
    let mut op = factory.create(&input_schema(), &ctx).unwrap();
    let mut out = Output::new();
    let mut rows = Vec::new();
    let collect = |out: &mut Output, rows: &mut Vec<RecordBatch>| {
        for m in out.drain() {
            if let Message::Data(b) = m {
                rows.push(b);
            }
        }
    };
    let mut wm = i64::MIN;
    for (b, next_wm) in batches {
        op.on_batch(batch(b), &mut out).unwrap();
        collect(&mut out, &mut rows);
        if *next_wm > wm {
            wm = *next_wm;
            op.on_watermark(Timestamp::from_millis(wm), &mut out)
                .unwrap();
            collect(&mut out, &mut rows);
        }
    }
    op.on_end(&mut out).unwrap();
    collect(&mut out, &mut rows);
    let mut result = BTreeSet::new();
    for b in rows {
        let c = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (id, n, l) = (c(0), c(1), c(2));
        for i in 0..b.num_rows() {
            assert!(
                result.insert((id.value(i), n.value(i), l.value(i))),
                "a session was emitted twice"
            );
        }
    }
    result
}

fn batches() -> impl Strategy<Value = Vec<(Vec<(i64, i64)>, i64)>> {
    // Event times grow by 0..30 ms per record (with some disorder); the watermark after
    // each batch trails the largest time by 0..50 ms.
    (
        proptest::collection::vec((0i64..6, 0i64..30, 0i64..20), 0..150),
        proptest::collection::vec((1usize..20, 0i64..50), 1..10),
    )
        .prop_map(|(recs, cuts)| {
            let mut t = 1_000;
            let rows: Vec<(i64, i64)> = recs
                .into_iter()
                .map(|(k, step, jitter)| {
                    t += step;
                    (k, t - jitter)
                })
                .collect();
            let mut out = Vec::new();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < rows.len() {
                let (n, lag) = cut.next().unwrap();
                let end = (at + n).min(rows.len());
                let chunk = rows[at..end].to_vec();
                let max = chunk.iter().map(|r| r.1).max().unwrap();
                out.push((chunk, max - lag));
                at = end;
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn count_with_timeout_matches_model(
        input in batches(),
        gap in 1i64..80,
        string_key in any::<bool>(),
        rocksdb in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let key = if string_key { "name" } else { "id" };
        let expected = model(&input, gap);
        prop_assert_eq!(run(&input, gap, key, state), expected);
    }
}

/// Emits `(key, now)` when a key's processing-time timer, set 100 ms after its first
/// record, fires.
struct Reminder {
    armed: Option<ValueState<bool>>,
}

impl KeyedProcessFunction for Reminder {
    fn open(&mut self, state: &mut ProcessState) -> Result<()> {
        self.armed = Some(state.value_state(StateDescriptor::new("armed"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        _batch: &RecordBatch,
        _row: usize,
        ctx: &mut KeyedContext<'_>,
        _out: &mut RowWriter,
    ) -> Result<()> {
        let armed = self.armed.as_ref().unwrap();
        if armed.get(ctx.state())?.is_none() {
            armed.update(ctx.state(), &true)?;
            let at = Timestamp::from_millis(ctx.current_processing_time().millis() + 100);
            ctx.register_processing_time_timer(at);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()> {
        assert_eq!(domain, TimeDomain::ProcessingTime);
        out.append_i64(0, ctx.key_i64().unwrap())?;
        out.append_i64(1, at.millis())?;
        self.armed.as_ref().unwrap().clear(ctx.state())?;
        Ok(())
    }
}

#[test]
fn processing_time_timers_fire_on_the_clock_per_key() {
    let clock = Arc::new(ManualClock::new(10_000));
    let output = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("at", DataType::Int64, false),
    ]));
    let factory =
        KeyedProcessFactory::new("reminder", &["id"], output, || Reminder { armed: None });
    let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_clock(clock.clone());
    let mut op: Box<dyn Operator> = factory.create(&input_schema(), &ctx).unwrap();
    let mut out = Output::new();
    op.on_batch(batch(&[(1, 0), (2, 0), (1, 0)]), &mut out)
        .unwrap();
    clock.set(10_050);
    op.on_batch(batch(&[(3, 0)]), &mut out).unwrap();
    op.on_tick(10_099, &mut out).unwrap();
    assert_eq!(out.drain().count(), 0, "no timer is due before 10,100");
    op.on_tick(10_100, &mut out).unwrap();
    let fired: Vec<RecordBatch> = out
        .drain()
        .filter_map(|m| match m {
            Message::Data(b) => Some(b),
            _ => None,
        })
        .collect();
    let rows: BTreeSet<(i64, i64)> = fired
        .iter()
        .flat_map(|b| {
            let id = b.column(0).as_primitive::<Int64Type>().clone();
            let at = b.column(1).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| (id.value(i), at.value(i)))
        })
        .collect();
    assert_eq!(rows, BTreeSet::from([(1, 10_100), (2, 10_100)]));
    op.on_tick(10_150, &mut out).unwrap();
    assert_eq!(out.drain().count(), 1, "key 3's timer fires at 10,150");
    // Event time does not fire processing-time timers, nor does end of input.
    op.on_batch(batch(&[(4, 0)]), &mut out).unwrap();
    op.on_watermark(Timestamp::MAX, &mut out).unwrap();
    op.on_end(&mut out).unwrap();
    assert!(
        out.drain().all(|m| !matches!(m, Message::Data(_))),
        "a processing-time timer fired without the clock"
    );
}

/// Writes a float into an integer column.
struct Misuse;

impl KeyedProcessFunction for Misuse {
    fn open(&mut self, _state: &mut ProcessState) -> Result<()> {
        Ok(())
    }

    fn process_element(
        &mut self,
        _batch: &RecordBatch,
        _row: usize,
        _ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()> {
        out.append_f64(0, 1.5)
    }
}

#[test]
fn writing_the_wrong_type_is_a_clear_error() {
    let factory = KeyedProcessFactory::new("misuse", &["id"], output_schema(), || Misuse);
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let mut op = factory.create(&input_schema(), &ctx).unwrap();
    let err = sabot_core::ErrorChain(
        &op.on_batch(batch(&[(1, 0)]), &mut Output::new())
            .unwrap_err(),
    )
    .to_string();
    assert!(
        err.contains("misuse")
            && err.contains("`id`")
            && err.contains("PrimitiveBuilder<Float64Type>"),
        "{err}"
    );
    // A key column that does not exist fails when the job is built.
    let bad = KeyedProcessFactory::new("misuse", &["nope"], output_schema(), || Misuse);
    let err = bad.output_schema(&input_schema()).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

/// Writes one column of a two-column output.
struct Ragged;

impl KeyedProcessFunction for Ragged {
    fn open(&mut self, _state: &mut ProcessState) -> Result<()> {
        Ok(())
    }

    fn process_element(
        &mut self,
        _batch: &RecordBatch,
        _row: usize,
        _ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()> {
        out.append_i64(0, 1)
    }
}

#[test]
fn rows_missing_a_column_are_a_clear_error() {
    let factory = KeyedProcessFactory::new("ragged", &["id"], output_schema(), || Ragged);
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let mut op = factory.create(&input_schema(), &ctx).unwrap();
    let err = sabot_core::ErrorChain(
        &op.on_batch(batch(&[(1, 0), (2, 0)]), &mut Output::new())
            .unwrap_err(),
    )
    .to_string();
    assert!(
        err.contains("ragged") && err.contains("unequal lengths [2, 0, 0]"),
        "{err}"
    );
}
