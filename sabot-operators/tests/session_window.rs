//! Session windows against a naive model (union of overlapping intervals, recomputed
//! from scratch), over random rows, random batch boundaries and random
//! out-of-orderness, with one or two key columns, on memory and RocksDB state: sessions
//! merge across batches and across watermarks, late records go to the side output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::arrow::array::{ArrayRef, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch, Timestamp};
use sabot_operators::{
    Aggregate, LATE_DATA, LATE_RECORDS_DROPPED, OperatorFactory, Output, SessionWindowFactory,
    TaskContext,
};
use sabot_operators::{SnapshotSource, SnapshotTarget};
use sabot_state::{RocksDbConfig, StateConfig};
use sabot_test_kit::row_strings;

#[derive(Clone, Debug)]
struct Row {
    name: String,
    key: i64,
    ts: i64,
    value: Option<i64>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        "[ab]",
        0i64..4,
        0i64..1500,
        proptest::option::weighted(0.8, -100i64..100),
    )
        .prop_map(|(name, key, ts, value)| Row {
            name,
            key,
            ts,
            value,
        })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("key", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Int64, true),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.name.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.value))),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

/// A session of the model: its interval and its rows.
#[derive(Clone, Debug)]
struct Session {
    start: i64,
    end: i64,
    rows: Vec<Row>,
}

fn render(key: &str, s: &Session) -> String {
    let values: Vec<i64> = s.rows.iter().filter_map(|r| r.value).collect();
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{key},{},{},{},{},{},{},{}",
        s.start,
        s.end,
        s.rows.len(),
        values.len(),
        opt((!values.is_empty()).then(|| values.iter().sum())),
        opt(values.iter().copied().min()),
        opt(values.iter().copied().max()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sessions_match_interval_union_model(
        rows in proptest::collection::vec(row(), 0..200),
        cuts in proptest::collection::vec(1usize..30, 1..20),
        bound_ms in 0i64..300,
        gap in 1i64..120,
        two_keys in any::<bool>(),
        rocksdb in any::<bool>(),
    ) {
        let keys: Vec<String> = if two_keys {
            vec!["name".into(), "key".into()]
        } else {
            vec!["key".into()]
        };
        let factory = SessionWindowFactory::new(
            keys,
            Some("ts".into()),
            Duration::from_millis(gap as u64),
            vec![
                Aggregate::count(),
                Aggregate::count_of("value"),
                Aggregate::sum("value"),
                Aggregate::min("value"),
                Aggregate::max("value"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let metrics = Metrics::new();
        let ctx = TaskContext::new(0, 1, 128, metrics.clone()).with_state(state);
        let mut op = factory.create(&schema(), &ctx).unwrap();
        let mut out = Output::new();
        let key_of = |r: &Row| {
            if two_keys { format!("{},{}", r.name, r.key) } else { r.key.to_string() }
        };

        let mut open: BTreeMap<String, Vec<Session>> = BTreeMap::new();
        let mut expected = Vec::new();
        let mut late = 0u64;
        let mut wm = i64::MIN;
        let mut max_ts = i64::MIN;
        let fire = |open: &mut BTreeMap<String, Vec<Session>>, wm: i64, expected: &mut Vec<String>| {
            for (k, sessions) in open.iter_mut() {
                for s in sessions.iter().filter(|s| s.end - 1 <= wm) {
                    expected.push(render(k, s));
                }
                sessions.retain(|s| s.end - 1 > wm);
            }
        };
        let mut start = 0;
        let mut cut = cuts.iter().cycle();
        while start < rows.len() {
            let end = (start + cut.next().unwrap()).min(rows.len());
            let chunk = &rows[start..end];
            start = end;
            // The batch's records of a key, with the key's open sessions: connected
            // components of overlapping (or touching) intervals.
            let mut by_key: BTreeMap<String, Vec<Row>> = BTreeMap::new();
            for r in chunk {
                by_key.entry(key_of(r)).or_default().push(r.clone());
            }
            for (k, new_rows) in by_key {
                let stored = open.remove(&k).unwrap_or_default();
                let mut parts: Vec<(Session, bool)> = stored.into_iter().map(|s| (s, true)).collect();
                parts.extend(new_rows.into_iter().map(|r| (Session { start: r.ts, end: r.ts + gap, rows: vec![r] }, false)));
                let mut merged = true;
                while merged {
                    merged = false;
                    'outer: for i in 0..parts.len() {
                        for j in i + 1..parts.len() {
                            let (a, b) = (&parts[i].0, &parts[j].0);
                            if a.start <= b.end && b.start <= a.end {
                                let (b, b_stored) = parts.remove(j);
                                let a = &mut parts[i];
                                a.0.start = a.0.start.min(b.start);
                                a.0.end = a.0.end.max(b.end);
                                a.0.rows.extend(b.rows);
                                a.1 |= b_stored;
                                merged = true;
                                break 'outer;
                            }
                        }
                    }
                }
                let mut kept = Vec::new();
                for (s, has_stored) in parts {
                    if !has_stored && s.end - 1 <= wm {
                        late += s.rows.len() as u64;
                    } else {
                        kept.push(s);
                    }
                }
                open.insert(k, kept);
            }
            op.on_batch(batch(chunk), &mut out).unwrap();
            max_ts = chunk.iter().map(|r| r.ts).fold(max_ts, i64::max);
            if max_ts != i64::MIN && max_ts - bound_ms > wm {
                wm = max_ts - bound_ms;
                fire(&mut open, wm, &mut expected);
                op.on_watermark(Timestamp::from_millis(wm), &mut out).unwrap();
            }
        }
        fire(&mut open, i64::MAX, &mut expected);
        op.on_end(&mut out).unwrap();

        let mut actual = Vec::new();
        let mut side = 0u64;
        for m in out.drain() {
            if let Message::Data(b) = m {
                actual.extend(row_strings(&b));
            }
        }
        for (tag, b) in out.drain_side() {
            prop_assert_eq!(tag, LATE_DATA);
            side += b.num_rows() as u64;
        }
        expected.sort();
        actual.sort();
        prop_assert_eq!(actual, expected);
        prop_assert_eq!(side, late);
        prop_assert_eq!(metrics.counter(LATE_RECORDS_DROPPED).get(), late);
    }
}

/// A session snapshot restores into a new instance, which goes on merging.
#[test]
fn sessions_survive_snapshot_and_restore() {
    let factory = SessionWindowFactory::new(
        vec!["key".into()],
        Some("ts".into()),
        Duration::from_millis(10),
        vec![Aggregate::count()],
    );
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let r = |key: i64, ts: i64| Row {
        name: "a".into(),
        key,
        ts,
        value: None,
    };
    let mut op = factory.create(&schema(), &ctx).unwrap();
    let mut out = Output::new();
    op.on_batch(batch(&[r(1, 0), r(1, 30)]), &mut out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    op.snapshot(&SnapshotTarget::local(dir.path()).unwrap())
        .unwrap();
    let mut op = factory.create(&schema(), &ctx).unwrap();
    op.restore(&[SnapshotSource::local(dir.path()).unwrap()])
        .unwrap();
    // Bridges the two sessions: [0, 10) + [5, 15) + [15, 25) + [30, 40).
    op.on_batch(batch(&[r(1, 5), r(1, 15), r(1, 22)]), &mut out)
        .unwrap();
    op.on_end(&mut out).unwrap();
    let rows: Vec<String> = out
        .drain()
        .filter_map(|m| match m {
            Message::Data(b) => Some(row_strings(&b)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(rows, vec!["1,0,40,5"]);
}
