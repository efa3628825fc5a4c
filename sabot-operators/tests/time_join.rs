//! The interval and window joins against a naive nested-loop model, over random rows on
//! both sides, random interleaving and batch boundaries, and random out-of-orderness (so
//! some rows are late and dropped), inner and left outer, on memory and RocksDB state.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::arrow::array::{ArrayRef, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::test_util::row_strings;
use sabot_core::{Message, RecordBatch, Timestamp};
use sabot_operators::{
    JOIN_LATE_RECORDS_DROPPED, JoinType, Operator, Output, TaskContext, TimeJoinFactory,
    TwoInputOperatorFactory,
};
use sabot_state::{RocksDbConfig, StateConfig};

#[derive(Clone, Debug)]
struct Row {
    name: String,
    key: i64,
    ts: i64,
    value: i64,
}

fn row() -> impl Strategy<Value = Row> {
    ("[ab]{1,2}", 0i64..4, 0i64..600, -50i64..50).prop_map(|(name, key, ts, value)| Row {
        name,
        key,
        ts,
        value,
    })
}

fn schema(prefix: &str) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("key", DataType::Int64, false),
        Field::new(format!("{prefix}ts"), DataType::Int64, false),
        Field::new(format!("{prefix}value"), DataType::Int64, false),
    ]))
}

fn batch(prefix: &str, rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.name.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.value))),
    ];
    RecordBatch::try_new(schema(prefix), cols).unwrap()
}

#[derive(Copy, Clone, Debug)]
enum Kind {
    Interval(i64, i64),
    Window(i64),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (-80i64..80, 0i64..80).prop_map(|(lower, width)| Kind::Interval(lower, lower + width)),
        (1i64..150).prop_map(Kind::Window),
    ]
}

fn joins(kind: Kind, l: &Row, r: &Row, two_keys: bool) -> bool {
    if l.key != r.key || (two_keys && l.name != r.name) {
        return false;
    }
    match kind {
        Kind::Interval(lower, upper) => r.ts >= l.ts + lower && r.ts <= l.ts + upper,
        Kind::Window(size) => l.ts.div_euclid(size) == r.ts.div_euclid(size),
    }
}

/// The output row the join must emit, rendered as `row_strings` renders it.
fn render(kind: Kind, l: &Row, r: Option<&Row>, two_keys: bool) -> String {
    let mut cols = vec![
        l.name.clone(),
        l.key.to_string(),
        l.ts.to_string(),
        l.value.to_string(),
    ];
    let null = String::new;
    // The right key columns of the same name are left out.
    if !two_keys {
        cols.push(r.map_or_else(null, |r| r.name.clone()));
    }
    cols.push(r.map_or_else(null, |r| r.ts.to_string()));
    cols.push(r.map_or_else(null, |r| r.value.to_string()));
    if let Kind::Window(size) = kind {
        let start = l.ts - l.ts.rem_euclid(size);
        cols.push(start.to_string());
        cols.push((start + size).to_string());
    }
    cols.join(",")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn join_matches_nested_loop_model(
        steps in proptest::collection::vec((any::<bool>(), proptest::collection::vec(row(), 0..12)), 0..40),
        bound_ms in 0i64..300,
        kind in kind(),
        outer in any::<bool>(),
        two_keys in any::<bool>(),
        rocksdb in any::<bool>(),
    ) {
        let (lk, rk): (Vec<&str>, Vec<&str>) = if two_keys {
            (vec!["key", "name"], vec!["key", "name"])
        } else {
            (vec!["key"], vec!["key"])
        };
        let factory = match kind {
            Kind::Interval(lower, upper) => {
                TimeJoinFactory::interval_ms(&lk, &rk, "ts", "r_ts", lower, upper)
            }
            Kind::Window(size) => TimeJoinFactory::window(
                &lk, &rk, "ts", "r_ts", Duration::from_millis(size as u64),
            ),
        }
        .with_join_type(if outer { JoinType::LeftOuter } else { JoinType::Inner });
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let metrics = Metrics::new();
        let ctx = TaskContext::new(0, 1, 128, metrics.clone()).with_state(state);
        let mut op: Box<dyn Operator> = factory.create(&schema(""), &schema("r_"), &ctx).unwrap();
        let mut out = Output::new();

        // Model: the watermark trails the largest event time seen by `bound_ms`; a row at
        // or behind it when it arrives is dropped.
        let mut wm = i64::MIN;
        let mut max_ts = i64::MIN;
        let (mut lefts, mut rights) = (Vec::new(), Vec::new());
        let mut late = 0u64;
        for (right, rows) in &steps {
            for r in rows {
                if r.ts <= wm {
                    late += 1;
                } else if *right {
                    rights.push(r.clone());
                } else {
                    lefts.push(r.clone());
                }
                max_ts = max_ts.max(r.ts);
            }
            let input = usize::from(*right);
            let prefix = if *right { "r_" } else { "" };
            op.on_batch_from(input, batch(prefix, rows), &mut out).unwrap();
            if max_ts != i64::MIN && max_ts - bound_ms > wm {
                wm = max_ts - bound_ms;
                op.on_watermark(Timestamp::from_millis(wm), &mut out).unwrap();
            }
        }
        op.on_watermark(Timestamp::MAX, &mut out).unwrap();
        op.on_end(&mut out).unwrap();

        let mut expected = Vec::new();
        for l in &lefts {
            let mut any = false;
            for r in &rights {
                if joins(kind, l, r, two_keys) {
                    expected.push(render(kind, l, Some(r), two_keys));
                    any = true;
                }
            }
            if outer && !any {
                expected.push(render(kind, l, None, two_keys));
            }
        }
        let mut actual = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                actual.extend(row_strings(&b));
            }
        }
        expected.sort();
        actual.sort();
        prop_assert_eq!(actual, expected);
        prop_assert_eq!(metrics.counter(JOIN_LATE_RECORDS_DROPPED).get(), late);
    }
}

/// State stays bounded: rows are deleted once the watermark makes them unjoinable. A
/// long run with a sliding watermark keeps only the rows of the last interval.
#[test]
fn state_is_cleaned_up_behind_the_watermark() {
    let factory = TimeJoinFactory::interval_ms(&["key"], &["key"], "ts", "r_ts", -10, 10);
    let metrics = Metrics::new();
    let ctx = TaskContext::new(0, 1, 128, metrics.clone());
    let mut op = factory.create(&schema(""), &schema("r_"), &ctx).unwrap();
    let mut out = Output::new();
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = Vec::new();
    for step in 0..200i64 {
        let rows: Vec<Row> = (0..50)
            .map(|i| Row {
                name: "a".into(),
                key: i % 7,
                ts: step * 100 + i,
                value: i,
            })
            .collect();
        op.on_batch_from(0, batch("", &rows), &mut out).unwrap();
        op.on_batch_from(1, batch("r_", &rows), &mut out).unwrap();
        op.on_watermark(Timestamp::from_millis(step * 100 + 60), &mut out)
            .unwrap();
        out.drain().for_each(drop);
        if step % 50 == 49 {
            // The snapshot holds exactly the live state: its size must not grow.
            let d = dir.path().join(step.to_string());
            op.snapshot(&d).unwrap();
            sizes.push(dir_size(&d));
        }
    }
    assert!(
        sizes.windows(2).all(|w| w[1] <= w[0] + 64),
        "state grows with the input: snapshot sizes {sizes:?}"
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dir_size(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}
