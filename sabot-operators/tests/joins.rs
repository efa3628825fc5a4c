//! The joins against naive models, over random rows on both sides, random interleaving
//! and batch boundaries, and random out-of-orderness, inner and left outer, on memory and
//! RocksDB state: the interval and window joins against a nested loop over the rows that
//! were not late; the regular join (with or without an event-time TTL, and as a
//! changelog when left outer) against a row-at-a-time model.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::arrow::array::{ArrayRef, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch, Timestamp};
use sabot_operators::SnapshotTarget;
use sabot_operators::{
    JOIN_LATE_RECORDS_DROPPED, JoinFactory, JoinType, LookupJoinFactory, Operator, Output,
    TaskContext, TwoInputOperatorFactory,
};
use sabot_state::{RocksDbConfig, StateConfig};
use sabot_test_kit::row_strings;

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

/// RocksDB state in `dir`, or memory state.
fn state_config(rocksdb: bool, dir: &std::path::Path) -> StateConfig {
    if rocksdb {
        StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir)
    } else {
        StateConfig::memory()
    }
}

/// The input with only the first row of each key on a side declared unique
/// (`unique[side]`), as such a side's input is; `two_keys`: the key is (key, name).
fn first_of_each_unique_key(
    steps: Vec<(bool, Vec<Row>)>,
    unique: [bool; 2],
    two_keys: bool,
) -> Vec<(bool, Vec<Row>)> {
    let mut seen = std::collections::HashSet::new();
    steps
        .into_iter()
        .map(|(right, rows)| {
            let rows = rows
                .into_iter()
                .filter(|r| {
                    !unique[usize::from(right)]
                        || seen.insert((right, r.key, two_keys.then(|| r.name.clone())))
                })
                .collect();
            (right, rows)
        })
        .collect()
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
        unique in 0u8..3,
    ) {
        let unique = [unique == 1, unique == 2];
        let steps = first_of_each_unique_key(steps, unique, two_keys);
        let (lk, rk): (Vec<&str>, Vec<&str>) = if two_keys {
            (vec!["key", "name"], vec!["key", "name"])
        } else {
            (vec!["key"], vec!["key"])
        };
        let factory = match kind {
            Kind::Interval(lower, upper) => {
                JoinFactory::interval_ms(&lk, &rk, "ts", "r_ts", lower, upper)
            }
            Kind::Window(size) => JoinFactory::window(
                &lk, &rk, "ts", "r_ts", Duration::from_millis(size as u64),
            ),
        }
        .with_join_type(if outer { JoinType::LeftOuter } else { JoinType::Inner })
        .with_unique_keys(unique[0], unique[1]);
        let dir = tempfile::tempdir().unwrap();
        let state = state_config(rocksdb, dir.path());
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn regular_join_matches_row_at_a_time_model(
        steps in proptest::collection::vec((any::<bool>(), proptest::collection::vec(row(), 0..12)), 0..40),
        bound_ms in 0i64..300,
        ttl in proptest::option::of(1i64..400),
        outer in any::<bool>(),
        rocksdb in any::<bool>(),
        unique in 0u8..3,
    ) {
        let unique = [unique == 1, unique == 2];
        let steps = first_of_each_unique_key(steps, unique, false);
        let mut factory = JoinFactory::regular(&["key"], &["key"])
            .with_join_type(if outer { JoinType::LeftOuter } else { JoinType::Inner })
            .with_unique_keys(unique[0], unique[1]);
        if let Some(ttl) = ttl {
            factory = factory
                .with_ttl(Duration::from_millis(ttl as u64), true)
                .with_time_columns(Some("ts"), Some("r_ts"));
        }
        let dir = tempfile::tempdir().unwrap();
        let state = state_config(rocksdb, dir.path());
        let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
        let mut op = factory.create(&schema(""), &schema("r_"), &ctx).unwrap();
        let mut out = Output::new();

        // Model: each stored row with how many of its outer rows are out (left only).
        let kind = Kind::Interval(0, 0); // renders no window columns
        let mut wm = i64::MIN;
        let mut max_ts = i64::MIN;
        let mut lefts: Vec<(Row, u32)> = Vec::new();
        let mut rights: Vec<Row> = Vec::new();
        let mut expected: Vec<String> = Vec::new();
        let op_col = |s: String, retract: bool| {
            if outer { format!("{s},{}", if retract { "-D" } else { "+I" }) } else { s }
        };
        let alive = |ts: i64, wm: i64| ttl.is_none_or(|ttl| ts + ttl > wm);
        for (right, rows) in &steps {
            for r in rows {
                if *right {
                    for (l, unmatched) in lefts.iter_mut() {
                        if l.key != r.key || !alive(l.ts, wm) {
                            continue;
                        }
                        for _ in 0..*unmatched {
                            expected.push(op_col(render(kind, l, None, false), true));
                        }
                        *unmatched = 0;
                        expected.push(op_col(render(kind, l, Some(r), false), false));
                    }
                    if alive(r.ts, wm) {
                        rights.push(r.clone());
                    }
                } else {
                    let mut any = false;
                    for p in rights.iter().filter(|p| p.key == r.key && alive(p.ts, wm)) {
                        any = true;
                        expected.push(op_col(render(kind, r, Some(p), false), false));
                    }
                    let unmatched = u32::from(outer && !any);
                    if unmatched > 0 {
                        expected.push(op_col(render(kind, r, None, false), false));
                    }
                    if alive(r.ts, wm) {
                        lefts.push((r.clone(), unmatched));
                    }
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
        let mut actual = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                actual.extend(row_strings(&b));
            }
        }
        expected.sort();
        actual.sort();
        prop_assert_eq!(actual, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// The event-time lookup join: each left row joins the version of its key current at
    /// its event time (the `value` column of the right input says `-D` when negative).
    #[test]
    fn lookup_join_matches_versioned_table_model(
        steps in proptest::collection::vec((any::<bool>(), proptest::collection::vec(row(), 0..12)), 0..40),
        bound_ms in 0i64..300,
        outer in any::<bool>(),
        rocksdb in any::<bool>(),
    ) {
        let factory = LookupJoinFactory::new(&["key"], &["key"])
            .event_time(Some("ts"), Some("r_ts"))
            .with_op_column("op")
            .with_join_type(if outer { JoinType::LeftOuter } else { JoinType::Inner });
        let dir = tempfile::tempdir().unwrap();
        let state = state_config(rocksdb, dir.path());
        let metrics = Metrics::new();
        let ctx = TaskContext::new(0, 1, 128, metrics.clone()).with_state(state);
        let table = table_schema();
        let mut op = factory.create(&schema(""), &table, &ctx).unwrap();
        let mut out = Output::new();

        let mut wm = i64::MIN;
        let mut max_ts = i64::MIN;
        let mut late = 0u64;
        let mut versions: std::collections::BTreeMap<(i64, i64), Row> = Default::default();
        let mut waiting: Vec<Row> = Vec::new();
        let mut expected = Vec::new();
        let render_lookup = |l: &Row, v: Option<&Row>| {
            let opt = |f: &dyn Fn(&Row) -> String| v.map(f).unwrap_or_default();
            format!(
                "{},{},{},{},{},{},{},{}",
                l.name, l.key, l.ts, l.value,
                opt(&|v| v.name.clone()),
                opt(&|v| v.ts.to_string()),
                opt(&|v| v.value.to_string()),
                opt(&|v| if v.value < 0 { "-D".into() } else { "+I".into() }),
            )
        };
        for (right, rows) in &steps {
            for r in rows {
                if r.ts <= wm {
                    late += 1;
                } else if *right {
                    versions.insert((r.key, r.ts), r.clone());
                } else {
                    waiting.push(r.clone());
                }
                max_ts = max_ts.max(r.ts);
            }
            if *right {
                op.on_batch_from(1, table_batch(rows), &mut out).unwrap();
            } else {
                op.on_batch_from(0, batch("", rows), &mut out).unwrap();
            }
            let mut fire = |wm: i64, waiting: &mut Vec<Row>| {
                for l in waiting.iter().filter(|l| l.ts <= wm) {
                    let v = versions
                        .range((l.key, i64::MIN)..=(l.key, l.ts))
                        .next_back()
                        .map(|(_, v)| v)
                        .filter(|v| v.value >= 0);
                    if v.is_some() || outer {
                        expected.push(render_lookup(l, v));
                    }
                }
                waiting.retain(|l| l.ts > wm);
            };
            if max_ts != i64::MIN && max_ts - bound_ms > wm {
                wm = max_ts - bound_ms;
                op.on_watermark(Timestamp::from_millis(wm), &mut out).unwrap();
                fire(wm, &mut waiting);
            }
        }
        op.on_watermark(Timestamp::MAX, &mut out).unwrap();
        op.on_end(&mut out).unwrap();
        for l in &waiting {
            let v = versions
                .range((l.key, i64::MIN)..=(l.key, l.ts))
                .next_back()
                .map(|(_, v)| v)
                .filter(|v| v.value >= 0);
            if v.is_some() || outer {
                expected.push(render_lookup(l, v));
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

/// The table side of the lookup test: the right rows plus an `op` column, `-D` where the
/// value is negative.
fn table_schema() -> Arc<Schema> {
    let mut fields: Vec<Field> = schema("r_")
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("op", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

fn table_batch(rows: &[Row]) -> RecordBatch {
    let mut cols = batch("r_", rows).columns().to_vec();
    cols.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| if r.value < 0 { "-D" } else { "+I" }),
    )));
    RecordBatch::try_new(table_schema(), cols).unwrap()
}

/// A processing-time lookup joins the current version at once; deletions remove it.
#[test]
fn processing_time_lookup_joins_the_current_version() {
    let factory = LookupJoinFactory::new(&["key"], &["key"])
        .with_op_column("op")
        .with_join_type(JoinType::LeftOuter);
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let mut op = factory.create(&schema(""), &table_schema(), &ctx).unwrap();
    let mut out = Output::new();
    let r = |key: i64, ts: i64, value: i64| Row {
        name: "a".into(),
        key,
        ts,
        value,
    };
    op.on_batch_from(0, batch("", &[r(1, 0, 0)]), &mut out)
        .unwrap(); // nothing yet
    op.on_batch_from(1, table_batch(&[r(1, 9, 5), r(2, 9, 6)]), &mut out)
        .unwrap();
    op.on_batch_from(1, table_batch(&[r(1, 10, 7)]), &mut out)
        .unwrap(); // newer version
    op.on_batch_from(0, batch("", &[r(1, 1, 0), r(2, 1, 0)]), &mut out)
        .unwrap();
    op.on_batch_from(1, table_batch(&[r(2, 11, -1)]), &mut out)
        .unwrap(); // deletes key 2
    op.on_batch_from(0, batch("", &[r(2, 2, 0)]), &mut out)
        .unwrap();
    let rows: Vec<String> = out
        .drain()
        .filter_map(|m| match m {
            Message::Data(b) => Some(row_strings(&b)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        rows,
        vec![
            "a,1,0,0,,,,",
            "a,1,1,0,a,10,7,+I",
            "a,2,1,0,a,9,6,+I",
            "a,2,2,0,,,,"
        ]
    );
}

/// A processing-time TTL: rows stop joining once their time is up, and are deleted on
/// the next tick.
#[test]
fn processing_time_ttl_expires_rows() {
    let clock = Arc::new(sabot_time::ManualClock::new(1_000));
    let factory =
        JoinFactory::regular(&["key"], &["key"]).with_ttl(Duration::from_millis(100), false);
    let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_clock(clock.clone());
    let mut op = factory.create(&schema(""), &schema("r_"), &ctx).unwrap();
    let mut out = Output::new();
    let r = |key: i64, ts: i64| Row {
        name: "a".into(),
        key,
        ts,
        value: 0,
    };
    op.on_batch_from(0, batch("", &[r(1, 0)]), &mut out)
        .unwrap();
    clock.set(1_050);
    op.on_batch_from(1, batch("r_", &[r(1, 5)]), &mut out)
        .unwrap(); // joins
    clock.set(1_100); // the left row's time is up
    op.on_batch_from(1, batch("r_", &[r(1, 6)]), &mut out)
        .unwrap(); // joins nothing
    op.on_tick(1_100, &mut out).unwrap();
    op.on_batch_from(0, batch("", &[r(1, 7)]), &mut out)
        .unwrap(); // joins the right row at 1_050 and 1_100
    let rows: Vec<String> = out
        .drain()
        .filter_map(|m| match m {
            Message::Data(b) => Some(row_strings(&b)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        rows,
        vec!["a,1,0,0,a,5,0", "a,1,7,0,a,5,0", "a,1,7,0,a,6,0"]
    );
}

/// State stays bounded: rows are deleted once the watermark makes them unjoinable. A
/// long run with a sliding watermark keeps only the rows of the last interval.
#[test]
fn state_is_cleaned_up_behind_the_watermark() {
    let factory = JoinFactory::interval_ms(&["key"], &["key"], "ts", "r_ts", -10, 10);
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
        // Behind the batch's newest rows: each key keeps some rows from one watermark
        // to the next, so a key's expiry must keep coming back for its later rows.
        op.on_watermark(Timestamp::from_millis(step * 100 + 30), &mut out)
            .unwrap();
        out.drain().for_each(drop);
        if step % 50 == 49 {
            // The snapshot holds exactly the live state: its size must not grow.
            let d = dir.path().join(step.to_string());
            op.snapshot(&SnapshotTarget::local(&d).unwrap()).unwrap();
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

/// A second row for a key declared unique, while the first is held, fails the batch
/// with an error naming it (on memory and RocksDB state); the other side's rows of a
/// key whose unique row is held still join it.
#[test]
fn a_repeated_unique_key_is_an_error() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let state = state_config(rocksdb, dir.path());
        let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
        let factory = JoinFactory::interval_ms(&["key"], &["key"], "ts", "r_ts", 0, 100)
            .with_unique_keys(true, false);
        let mut op = factory.create(&schema(""), &schema("r_"), &ctx).unwrap();
        let mut out = Output::new();
        let row = |key, ts| Row {
            name: "a".into(),
            key,
            ts,
            value: 1,
        };
        op.on_batch_from(0, batch("", &[row(1, 10)]), &mut out)
            .unwrap();
        op.on_batch_from(1, batch("r_", &[row(1, 20), row(1, 30)]), &mut out)
            .unwrap();
        let joined: usize = out
            .drain()
            .map(|m| match m {
                Message::Data(b) => b.num_rows(),
                _ => 0,
            })
            .sum();
        assert_eq!(joined, 2, "rocksdb: {rocksdb}");
        let e = op
            .on_batch_from(0, batch("", &[row(2, 11), row(1, 12)]), &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("declared unique on the left input") && e.contains("row 1 of a batch"),
            "{e}"
        );
    }
}
