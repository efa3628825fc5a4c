//! Count distinct, first, last and a user aggregate function in tumbling and sliding
//! windows (on memory and RocksDB state) against a row-at-a-time model, with random
//! batch boundaries and out-of-orderness; count distinct and the user function in count
//! windows; first and last are rejected where there is no event time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch, Timestamp};
use sabot_operators::{
    Aggregate, AggregateFunction, BoxError, CountWindowFactory, OperatorFactory, Output,
    SlidingWindowFactory, TaskContext, TumblingWindowFactory,
};
use sabot_state::{RocksDbConfig, StateConfig};

/// Sum of squares of an Int64 column; null for a group without values. Its accumulator:
/// seen (1 byte) + sum (8 bytes LE).
#[derive(Debug)]
struct SumSq;

impl AggregateFunction for SumSq {
    fn name(&self) -> &str {
        "sum_sq"
    }
    fn output_type(&self, input: &DataType) -> Result<DataType, BoxError> {
        match input {
            DataType::Int64 => Ok(DataType::Int64),
            other => Err(format!("sum_sq takes Int64, not {other}").into()),
        }
    }
    fn create(&self, acc: &mut Vec<u8>) {
        acc.extend_from_slice(&[0; 9]);
    }
    fn add(&self, acc: &mut Vec<u8>, values: &ArrayRef, rows: &[u32]) -> Result<(), BoxError> {
        let v = values.as_primitive::<Int64Type>();
        let mut sum = i64::from_le_bytes(acc[1..9].try_into()?);
        for &r in rows {
            if v.is_valid(r as usize) {
                sum = sum.wrapping_add(v.value(r as usize).wrapping_mul(v.value(r as usize)));
                acc[0] = 1;
            }
        }
        acc[1..9].copy_from_slice(&sum.to_le_bytes());
        Ok(())
    }
    fn merge(&self, acc: &mut Vec<u8>, other: &[u8]) -> Result<(), BoxError> {
        if other.len() != 9 {
            return Err("not a sum_sq accumulator".into());
        }
        let sum = i64::from_le_bytes(acc[1..9].try_into()?)
            .wrapping_add(i64::from_le_bytes(other[1..9].try_into()?));
        acc[0] |= other[0];
        acc[1..9].copy_from_slice(&sum.to_le_bytes());
        Ok(())
    }
    fn result(&self, accs: &[&[u8]]) -> Result<ArrayRef, BoxError> {
        Ok(Arc::new(
            accs.iter()
                .map(|a| (a[0] == 1).then(|| i64::from_le_bytes(a[1..9].try_into().unwrap())))
                .collect::<Int64Array>(),
        ))
    }
}

#[derive(Clone, Debug)]
struct Row {
    key: i64,
    ts: i64,
    value: Option<i64>,
    price: f64,
}

fn row() -> impl Strategy<Value = Row> {
    (
        0i64..4,
        0i64..2000,
        proptest::option::weighted(0.8, -6i64..6),
        -8i64..8,
    )
        .prop_map(|(key, ts, value, p)| Row {
            key,
            ts,
            value,
            price: p as f64 / 4.0,
        })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Int64, true),
        Field::new("price", DataType::Float64, false),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.price))),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

/// (distinct values, first price bits, last price bits, sum of squares)
type Agg = (i64, Option<u64>, Option<u64>, Option<i64>);

fn model(rows: &[&Row]) -> Agg {
    let distinct: BTreeSet<i64> = rows.iter().filter_map(|r| r.value).collect();
    let first = rows
        .iter()
        .min_by(|a, b| a.ts.cmp(&b.ts).then(a.price.total_cmp(&b.price)))
        .map(|r| r.price.to_bits());
    let last = rows
        .iter()
        .max_by(|a, b| a.ts.cmp(&b.ts).then(a.price.total_cmp(&b.price)))
        .map(|r| r.price.to_bits());
    let values: Vec<i64> = rows.iter().filter_map(|r| r.value).collect();
    let sum_sq = (!values.is_empty()).then(|| values.iter().map(|v| v * v).sum());
    (distinct.len() as i64, first, last, sum_sq)
}

fn aggregates() -> Vec<Aggregate> {
    vec![
        Aggregate::count_distinct("value"),
        Aggregate::first("price"),
        Aggregate::last("price"),
        Aggregate::user("value", Arc::new(SumSq)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn distinct_first_last_and_user_aggregates_match_the_model(
        rows in proptest::collection::vec(row(), 0..250),
        cuts in proptest::collection::vec(1usize..40, 1..20),
        bound_ms in 0i64..300,
        slide_ms in 1i64..150,
        ratio in prop_oneof![Just(1i64), Just(5)],
        rocksdb in any::<bool>(),
    ) {
        let size_ms = slide_ms * ratio;
        let factory = SlidingWindowFactory::new(
            vec!["key".into()],
            Some("ts".into()),
            Duration::from_millis(size_ms as u64),
            Duration::from_millis(slide_ms as u64),
            aggregates(),
        );
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
        let mut op = factory.create(&schema(), &ctx).unwrap();
        let mut out = Output::new();

        // Model: the rows of each (key, window) that were not too late for it.
        let mut windows: BTreeMap<(i64, i64), Vec<Row>> = BTreeMap::new();
        let mut wm = i64::MIN;
        let mut max_ts = i64::MIN;
        let mut start = 0;
        let mut cut = cuts.iter().cycle();
        while start < rows.len() {
            let end = (start + cut.next().unwrap()).min(rows.len());
            let chunk = &rows[start..end];
            start = end;
            for r in chunk {
                let pane = r.ts.div_euclid(slide_ms) * slide_ms;
                for i in 0..ratio {
                    let ws = pane - i * slide_ms;
                    if ws + size_ms - 1 > wm && pane + size_ms - 1 > wm {
                        windows.entry((r.key, ws)).or_default().push(r.clone());
                    }
                }
            }
            op.on_batch(batch(chunk), &mut out).unwrap();
            max_ts = chunk.iter().map(|r| r.ts).fold(max_ts, i64::max);
            if max_ts - bound_ms > wm {
                wm = max_ts - bound_ms;
                op.on_watermark(Timestamp::from_millis(wm), &mut out).unwrap();
            }
        }
        op.on_end(&mut out).unwrap();
        let expected: BTreeMap<(i64, i64), Agg> = windows
            .iter()
            .map(|(k, rows)| (*k, model(&rows.iter().collect::<Vec<_>>())))
            .collect();
        let mut actual: BTreeMap<(i64, i64), Agg> = BTreeMap::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let key = b.column(0).as_primitive::<Int64Type>();
                let ws = b.column(1).as_primitive::<Int64Type>();
                let distinct = b.column(3).as_primitive::<Int64Type>();
                let first = b.column(4).as_primitive::<Float64Type>();
                let last = b.column(5).as_primitive::<Float64Type>();
                let sum_sq = b.column(6).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    let f = |a: &Float64Array| a.is_valid(i).then(|| a.value(i).to_bits());
                    actual.insert(
                        (key.value(i), ws.value(i)),
                        (distinct.value(i), f(first), f(last), sum_sq.is_valid(i).then(|| sum_sq.value(i))),
                    );
                }
            }
        }
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn count_windows_take_distinct_and_user_aggregates(
        rows in proptest::collection::vec(row(), 0..200),
        cuts in proptest::collection::vec(1usize..40, 1..20),
        size in 1u64..7,
    ) {
        let factory = CountWindowFactory::new(
            vec!["key".into()],
            size,
            vec![Aggregate::count_distinct("value"), Aggregate::user("value", Arc::new(SumSq))],
        );
        let ctx = TaskContext::new(0, 1, 128, Metrics::new());
        let mut op = factory.create(&schema(), &ctx).unwrap();
        let mut out = Output::new();
        let mut start = 0;
        let mut cut = cuts.iter().cycle();
        while start < rows.len() {
            let end = (start + cut.next().unwrap()).min(rows.len());
            op.on_batch(batch(&rows[start..end]), &mut out).unwrap();
            start = end;
        }
        let mut per_key: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            per_key.entry(r.key).or_default().push(r);
        }
        let mut expected = BTreeMap::new();
        for (k, rs) in per_key {
            for (i, w) in rs.chunks(size as usize).enumerate() {
                if w.len() == size as usize {
                    let m = model(w);
                    expected.insert((k, i as i64), (m.0, m.3));
                }
            }
        }
        let mut actual = BTreeMap::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let key = b.column(0).as_primitive::<Int64Type>();
                let idx = b.column(1).as_primitive::<Int64Type>();
                let distinct = b.column(2).as_primitive::<Int64Type>();
                let sum_sq = b.column(3).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    actual.insert((key.value(i), idx.value(i)), (distinct.value(i), sum_sq.is_valid(i).then(|| sum_sq.value(i))));
                }
            }
        }
        prop_assert_eq!(actual, expected);
    }
}

#[test]
fn first_and_last_need_event_time_and_user_functions_check_their_input() {
    let count = CountWindowFactory::new(vec!["key".into()], 3, vec![Aggregate::first("price")]);
    let e = count.output_schema(&schema()).unwrap_err().to_string();
    assert!(e.contains("first and last need event time"), "{e}");
    let tumbling = TumblingWindowFactory::new(
        vec!["key".into()],
        Some("ts".into()),
        Duration::from_millis(10),
        vec![Aggregate::user("price", Arc::new(SumSq))],
    );
    let e = tumbling.output_schema(&schema()).unwrap_err().to_string();
    assert!(e.contains("sum_sq takes Int64"), "{e}");
}

/// Runs `factory` over `rows` cut at `cuts` with a bounded out-of-orderness watermark;
/// returns each (key, window start)'s last emitted row.
fn final_rows(
    factory: &dyn OperatorFactory,
    state: StateConfig,
    rows: &[Row],
    cuts: &[usize],
    bound_ms: i64,
) -> BTreeMap<(i64, i64), String> {
    let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
    let mut op = factory.create(&schema(), &ctx).unwrap();
    let mut out = Output::new();
    let mut last = BTreeMap::new();
    let collect = |out: &mut Output, last: &mut BTreeMap<(i64, i64), String>| {
        for m in out.drain() {
            if let Message::Data(b) = m {
                let key = b.column(0).as_primitive::<Int64Type>();
                let ws = b.column(1).as_primitive::<Int64Type>();
                for (i, r) in sabot_test_kit::row_strings(&b).into_iter().enumerate() {
                    last.insert((key.value(i), ws.value(i)), r);
                }
            }
        }
    };
    let (mut wm, mut max_ts, mut start) = (i64::MIN, i64::MIN, 0);
    let mut cut = cuts.iter().cycle();
    while start < rows.len() {
        let end = (start + cut.next().unwrap()).min(rows.len());
        let chunk = &rows[start..end];
        start = end;
        op.on_batch(batch(chunk), &mut out).unwrap();
        max_ts = chunk.iter().map(|r| r.ts).fold(max_ts, i64::max);
        if max_ts - bound_ms > wm {
            wm = max_ts - bound_ms;
            op.on_watermark(Timestamp::from_millis(wm), &mut out)
                .unwrap();
        }
        collect(&mut out, &mut last);
    }
    op.on_end(&mut out).unwrap();
    collect(&mut out, &mut last);
    last
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Sliding windows of counts and integer sums and averages on memory state are
    /// computed incrementally (newest pane in, oldest out); they must give what the
    /// RocksDB-resident window (checked against the row model elsewhere) gives, with
    /// random lateness and allowed lateness (late updates invalidate the running sums).
    #[test]
    fn incremental_sliding_windows_match_the_backend_resident_ones(
        rows in proptest::collection::vec(row(), 0..300),
        cuts in proptest::collection::vec(1usize..40, 1..20),
        bound_ms in 0i64..300,
        slide_ms in 1i64..60,
        ratio in prop_oneof![Just(5i64), Just(60)],
        lateness_ms in prop_oneof![Just(0u64), 0u64..300],
    ) {
        let factory = SlidingWindowFactory::new(
            vec!["key".into()],
            Some("ts".into()),
            Duration::from_millis((slide_ms * ratio) as u64),
            Duration::from_millis(slide_ms as u64),
            vec![
                Aggregate::count(),
                Aggregate::count_of("value"),
                Aggregate::avg("value"),
                Aggregate::sum("ts"),
            ],
        )
        .with_allowed_lateness(Duration::from_millis(lateness_ms));
        let dir = tempfile::tempdir().unwrap();
        let rocks = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path());
        let memory = final_rows(&factory, StateConfig::memory(), &rows, &cuts, bound_ms);
        let backend = final_rows(&factory, rocks, &rows, &cuts, bound_ms);
        prop_assert_eq!(memory, backend);
    }
}

/// Keys that come and go (each lives about 30 ms of a 300 s stream, 30,000 in all):
/// the incremental sliding window's shared key dictionary is compacted many times on
/// the way, renumbering the panes; late rows reach panes the watermark passed. The
/// results must still be the RocksDB-resident window's.
#[test]
fn sliding_windows_over_keys_that_come_and_go_match_the_backend_resident_ones() {
    let rows: Vec<Row> = (0..60_000i64)
        .map(|i| {
            let ts = i * 5 - if i % 97 == 0 { 400 } else { 0 };
            Row {
                key: ts.max(0) / 10 + i % 3,
                ts: ts.max(0),
                value: Some(i % 7),
                price: (i % 5) as f64,
            }
        })
        .collect();
    let factory = SlidingWindowFactory::new(
        vec!["key".into()],
        Some("ts".into()),
        Duration::from_millis(500),
        Duration::from_millis(100),
        vec![Aggregate::count(), Aggregate::sum("ts")],
    )
    .with_allowed_lateness(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let rocks = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path());
    let cuts = [700, 1300, 64];
    let memory = final_rows(&factory, StateConfig::memory(), &rows, &cuts, 100);
    let backend = final_rows(&factory, rocks, &rows, &cuts, 100);
    assert!(memory.len() > 100_000, "{} windows", memory.len());
    assert_eq!(memory, backend);
}
