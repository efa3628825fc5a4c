//! A keyed process function in a running job: after a `key_by` exchange, at parallelism
//! 3, with state in memory and in RocksDB. Each key's state must be found again by every
//! later record of the key (the subtask's key groups are those the exchange sends it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sabot::StreamEnv;
use sabot::arrow::array::{AsArray, RecordBatch};
use sabot::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot::operators::{
    KeyedContext, KeyedProcessFunction, ProcessState, Result, RowWriter, VecSource,
};
use sabot::state::{ReducingState, RocksDbConfig, StateConfig, StateDescriptor, ValueState};
use sabot_test_kit::{keyed_batches, keyed_schema};

/// Per key: the running count of records, and the running sum of `value`.
struct Running {
    count: Option<ValueState<i64>>,
    sum: Option<ReducingState<i64>>,
}

impl KeyedProcessFunction for Running {
    fn open(&mut self, state: &mut ProcessState) -> Result<()> {
        self.count = Some(state.value_state(StateDescriptor::new("count"))?);
        self.sum = Some(state.reducing_state(StateDescriptor::new("sum"), |a, b| a + b)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()> {
        let (count, sum) = (self.count.as_ref().unwrap(), self.sum.as_ref().unwrap());
        let n = count.get(ctx.state())?.unwrap_or(0) + 1;
        count.update(ctx.state(), &n)?;
        let v = batch.column(1).as_primitive::<Int64Type>().value(row);
        sum.add(ctx.state(), v)?;
        let total = sum.get(ctx.state())?.unwrap_or(0);
        out.append_i64(0, ctx.key_i64().unwrap())?;
        out.append_i64(1, n)?;
        out.append_i64(2, total)?;
        Ok(())
    }
}

fn run(state: StateConfig) -> BTreeMap<i64, Vec<(i64, i64)>> {
    let env = StreamEnv::new();
    env.set_parallelism(3).set_state(state);
    let output = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
        Field::new("sum", DataType::Int64, false),
    ]));
    let out = env
        .source(VecSource::new(
            keyed_schema(),
            keyed_batches(7, 6_000, 250, 97, 1, 1),
        ))
        .with_watermarks("ts", Duration::from_millis(10))
        .key_by(&["key"])
        .process_fn("running", output, || Running {
            count: None,
            sum: None,
        })
        .collect();
    env.execute().unwrap();
    let mut per_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for b in out.batches() {
        let c = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (k, n, s) = (c(0), c(1), c(2));
        for i in 0..b.num_rows() {
            per_key
                .entry(k.value(i))
                .or_default()
                .push((n.value(i), s.value(i)));
        }
    }
    per_key
}

#[test]
fn process_function_state_follows_keys_in_both_backends() {
    // Per key: its number of records and the sum of their values.
    let mut totals: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for b in keyed_batches(7, 6_000, 250, 97, 1, 1) {
        let k = b.column(0).as_primitive::<Int64Type>().clone();
        let v = b.column(1).as_primitive::<Int64Type>().clone();
        for i in 0..b.num_rows() {
            let t = totals.entry(k.value(i)).or_default();
            t.0 += 1;
            t.1 += v.value(i);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for state in [
        StateConfig::memory(),
        StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path()),
    ] {
        let name = state.name();
        let mut actual = run(state);
        assert_eq!(actual.len(), totals.len(), "{name}: every key");
        for (key, rows) in &mut actual {
            // Source subtasks interleave, so a key's order varies; its counts do not: each
            // record saw the count of the records before it, and the last saw them all.
            rows.sort_unstable();
            let (n, sum) = totals[key];
            let counts: Vec<i64> = rows.iter().map(|r| r.0).collect();
            assert_eq!(
                counts,
                (1..=n).collect::<Vec<_>>(),
                "{name}: counts of key {key}"
            );
            assert_eq!(rows.last().unwrap().1, sum, "{name}: sum of key {key}");
        }
    }
}
