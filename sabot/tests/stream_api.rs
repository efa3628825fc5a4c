//! The `Stream` API end to end: chained stateless operators, rebalance, a split stream,
//! and windows after them.

use std::sync::Arc;
use std::time::Duration;

use sabot::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use sabot::arrow::compute::kernels::cmp::eq;
use sabot::arrow::compute::kernels::numeric::mul;
use sabot::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot::operators::VecSource;
use sabot::{Aggregate, StreamEnv, TumblingWindow};
use sabot_test_kit::{keyed_batches, keyed_schema};

fn input() -> Vec<RecordBatch> {
    keyed_batches(11, 20_000, 700, 40, 3, 20)
}

fn ints(batches: &[RecordBatch], col: &str) -> Vec<i64> {
    let mut v: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(col)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn map_filter_select_and_rebalance_keep_every_selected_row() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let doubled_schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("double", DataType::Int64, false),
    ]));
    let s = doubled_schema.clone();
    let out = env
        .source(VecSource::new(keyed_schema(), input()))
        .filter(|b| {
            let key = b.column(0).as_primitive::<Int64Type>();
            let even = Int64Array::from_iter_values(key.values().iter().map(|k| k % 2));
            Ok(eq(&even, &Int64Array::new_scalar(0))?)
        })
        .map_to(doubled_schema, move |b| {
            let two = Int64Array::new_scalar(2);
            let cols: Vec<ArrayRef> = vec![b.column(0).clone(), mul(b.column(1), &two)?];
            Ok(RecordBatch::try_new(s.clone(), cols)?)
        })
        .rebalance()
        .select(&["double"])
        .collect();
    env.execute().unwrap();

    let all = input();
    let mut expected: Vec<i64> = Vec::new();
    for b in &all {
        let k = b.column(0).as_primitive::<Int64Type>();
        let v = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if k.value(i) % 2 == 0 {
                expected.push(v.value(i) * 2);
            }
        }
    }
    expected.sort_unstable();
    let got = out.batches();
    assert!(got.iter().all(|b| b.num_columns() == 1));
    assert_eq!(ints(&got, "double"), expected);
}

#[test]
fn a_split_stream_feeds_every_branch() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let keyed = env
        .source(VecSource::new(keyed_schema(), input()))
        .with_watermarks("ts", Duration::from_millis(20))
        .key_by(&["key"]);
    let raw = keyed.clone().collect();
    let windows = keyed
        .window(TumblingWindow::of(Duration::from_secs(1)))
        .aggregate([Aggregate::count().alias("n"), Aggregate::sum("value")])
        .collect();
    let result = env.execute().unwrap();
    assert_eq!(result.metric(sabot::runtime::SOURCE_RECORDS), 20_000);
    assert_eq!(raw.num_rows(), 20_000);
    let counted: i64 = ints(&windows.batches(), "n").iter().sum();
    assert_eq!(counted, 20_000, "every record counted once in some window");
    let summed: i64 = ints(&windows.batches(), "sum_value").iter().sum();
    assert_eq!(summed, ints(&input(), "value").iter().sum::<i64>());
}

#[test]
fn map_that_breaks_its_declared_schema_fails_the_job() {
    let env = StreamEnv::new();
    env.source(VecSource::new(keyed_schema(), input()))
        .map(|b| Ok(b.project(&[0])?))
        .collect();
    let err = sabot_test_kit::error_chain(&env.execute().unwrap_err());
    assert!(err.contains("declared"), "{err}");
}

#[test]
fn flat_map_explodes_rows_and_with_column_computes_a_column() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    // Each row becomes `value % 3` copies of (key, value).
    let pairs = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
    ]));
    let s = pairs.clone();
    let out = env
        .source(VecSource::new(keyed_schema(), input()))
        .flat_map(pairs, move |b| {
            let values = b.column(1).as_primitive::<Int64Type>();
            let idx: Vec<u32> = (0..b.num_rows() as u32)
                .flat_map(|r| std::iter::repeat_n(r, (values.value(r as usize) % 3) as usize))
                .collect();
            let idx = sabot::arrow::array::UInt32Array::from(idx);
            let cols = vec![
                sabot::arrow::compute::take(b.column(0), &idx, None)?,
                sabot::arrow::compute::take(b.column(1), &idx, None)?,
            ];
            // Two output batches per input batch: the copies, then nothing.
            Ok(vec![
                RecordBatch::try_new(s.clone(), cols)?,
                RecordBatch::new_empty(s.clone()),
            ])
        })
        .with_column("triple", DataType::Int64, |b| {
            Ok(mul(b.column(1), &Int64Array::new_scalar(3))?)
        })
        .collect();
    env.execute().unwrap();

    let mut want: Vec<i64> = input()
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .flat_map(|v| std::iter::repeat_n(v * 3, (v % 3) as usize))
        .collect();
    want.sort_unstable();
    let batches = out.batches();
    assert!(
        batches.iter().all(|b| b.num_rows() > 0),
        "empty batches are dropped"
    );
    assert_eq!(ints(&batches, "triple"), want);
}

#[test]
fn a_computed_column_of_the_wrong_type_or_length_is_a_clear_error() {
    for (data_type, rows_off) in [(DataType::Int32, 0), (DataType::Int64, 1)] {
        let env = StreamEnv::new();
        env.set_parallelism(1);
        env.source(VecSource::new(keyed_schema(), input()))
            .with_column("x", data_type, move |b| {
                Ok(Arc::new(Int64Array::from_iter_values(
                    0..(b.num_rows() + rows_off) as i64,
                )) as ArrayRef)
            })
            .collect();
        let e = sabot::core::ErrorChain(&env.execute().unwrap_err()).to_string();
        assert!(e.contains("with_column(x)"), "{e}");
        assert!(e.contains("declared") || e.contains("rows"), "{e}");
    }
}

#[test]
fn sliding_windows_at_parallelism_three_match_a_naive_count_per_window() {
    // 2 s windows every 250 ms; the watermark trails by more than the jitter, so no
    // record is late and every window holds exactly the records whose time it covers.
    let (size, slide) = (2_000i64, 250i64);
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let out = env
        .source(VecSource::new(keyed_schema(), input()))
        .with_watermarks("ts", Duration::from_millis(50))
        .key_by(&["key"])
        .window(sabot::SlidingWindow::of(
            Duration::from_millis(size as u64),
            Duration::from_millis(slide as u64),
        ))
        .aggregate([Aggregate::count().alias("n"), Aggregate::sum("value")])
        .collect();
    env.execute().unwrap();

    let mut want = std::collections::BTreeMap::<(i64, i64), (i64, i64)>::new();
    for b in input() {
        let (k, v, t) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            let pane = t.value(i).div_euclid(slide) * slide;
            for j in 0..size / slide {
                let e = want.entry((k.value(i), pane - j * slide)).or_default();
                e.0 += 1;
                e.1 += v.value(i);
            }
        }
    }
    let mut got = std::collections::BTreeMap::new();
    for b in out.batches() {
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (k, ws, we, n, sum) = (
            col("key"),
            col("window_start"),
            col("window_end"),
            col("n"),
            col("sum_value"),
        );
        for i in 0..b.num_rows() {
            assert_eq!(we.value(i) - ws.value(i), size);
            let prev = got.insert((k.value(i), ws.value(i)), (n.value(i), sum.value(i)));
            assert!(prev.is_none(), "window emitted twice");
        }
    }
    assert_eq!(got, want);
}

#[test]
fn count_windows_at_parallelism_two_close_every_n_records_per_key() {
    let n = 7i64;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let out = env
        .source(VecSource::new(keyed_schema(), input()))
        .key_by(&["key"])
        .window(sabot::CountWindow::of(n as u64))
        .aggregate([Aggregate::count().alias("n"), Aggregate::sum("value")])
        .collect();
    env.execute().unwrap();

    let mut per_key = std::collections::BTreeMap::<i64, i64>::new();
    for b in input() {
        for k in b.column(0).as_primitive::<Int64Type>().values() {
            *per_key.entry(*k).or_default() += 1;
        }
    }
    let mut windows = std::collections::BTreeMap::<i64, Vec<i64>>::new();
    for b in out.batches() {
        let col = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (k, idx, cnt) = (col("key"), col("window_index"), col("n"));
        for i in 0..b.num_rows() {
            assert_eq!(cnt.value(i), n, "a count window holds exactly n records");
            windows.entry(k.value(i)).or_default().push(idx.value(i));
        }
    }
    for (k, total) in per_key {
        let mut idx = windows.remove(&k).unwrap_or_default();
        idx.sort_unstable();
        assert_eq!(idx, (0..total / n).collect::<Vec<_>>(), "key {k}");
    }
}

#[test]
fn broadcast_gives_every_downstream_subtask_every_row() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let rows = env
        .source(VecSource::new(keyed_schema(), input()))
        .broadcast()
        .select(&["value"])
        .collect();
    env.execute().unwrap();
    let want: Vec<i64> = ints(&input(), "value")
        .into_iter()
        .flat_map(|v| [v, v, v])
        .collect();
    assert_eq!(ints(&rows.batches(), "value"), want);
}
