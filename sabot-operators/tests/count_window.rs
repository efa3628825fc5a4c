//! Count windows against a row-at-a-time model: random keys (one Int64 key, or a string
//! and an Int64 key), random batch boundaries and window sizes, memory or RocksDB state,
//! and optionally a snapshot and a restore into a new operator in the middle.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sabot_core::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch};
use sabot_operators::{
    Aggregate, CountWindowFactory, Operator, OperatorFactory, Output, TaskContext,
};
use sabot_operators::{SnapshotSource, SnapshotTarget};
use sabot_state::{RocksDbConfig, StateConfig};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Int64, true),
    ]))
}

type Row = (String, i64, Option<i64>);

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.clone()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

/// (name, id, window index) -> (count, count(value), sum(value), min(value), avg bits)
type Windows = BTreeMap<(String, i64, i64), (i64, i64, Option<i64>, Option<i64>, Option<u64>)>;

/// A key's next window index and the values of its open window.
type OpenWindow = (i64, Vec<Option<i64>>);

fn factory(int_key_only: bool, size: u64) -> CountWindowFactory {
    let keys = if int_key_only {
        vec!["id".to_string()]
    } else {
        vec!["name".to_string(), "id".to_string()]
    };
    CountWindowFactory::new(
        keys,
        size,
        vec![
            Aggregate::count(),
            Aggregate::count_of("value"),
            Aggregate::sum("value"),
            Aggregate::min("value"),
            Aggregate::avg("value"),
        ],
    )
}

fn collect(out: &mut Output, int_key_only: bool, got: &mut Windows) {
    for m in out.drain() {
        let Message::Data(b) = m else { continue };
        let o = usize::from(!int_key_only);
        let name = |i: usize| {
            if int_key_only {
                String::new()
            } else {
                b.column(0).as_string::<i32>().value(i).to_owned()
            }
        };
        let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
        let (id, idx, n, nv, sum, min) = (
            int(o),
            int(o + 1),
            int(o + 2),
            int(o + 3),
            int(o + 4),
            int(o + 5),
        );
        let avg = b.column(o + 6).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let opt = |a: &Int64Array| (!a.is_null(i)).then(|| a.value(i));
            let prev = got.insert(
                (name(i), id.value(i), idx.value(i)),
                (
                    n.value(i),
                    nv.value(i),
                    opt(&sum),
                    opt(&min),
                    (!avg.is_null(i)).then(|| avg.value(i).to_bits()),
                ),
            );
            assert!(prev.is_none(), "a window emitted twice");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn count_windows_match_a_row_at_a_time_model(
        rows in proptest::collection::vec(
            ("[ab]{0,1}", 0i64..4, proptest::option::weighted(0.8, -100i64..100)),
            0..200,
        ),
        cuts in proptest::collection::vec(1usize..30, 1..10),
        size in 1u64..6,
        int_key_only in any::<bool>(),
        rocksdb in any::<bool>(),
        restore_at in proptest::option::of(0usize..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let f = factory(int_key_only, size);
        let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
        let mut op: Box<dyn Operator> = f.create(&schema(), &ctx).unwrap();
        let mut out = Output::new();
        let mut got = Windows::new();
        let (mut start, mut cut, mut batch_no) = (0, cuts.iter().cycle(), 0);
        while start < rows.len() {
            if restore_at == Some(batch_no) {
                // Snapshot, drop the operator, continue in a new one restored from it.
                let snap = dir.path().join("snap");
                op.snapshot(&SnapshotTarget::local(&snap).unwrap()).unwrap();
                op = f.create(&schema(), &ctx).unwrap();
                op.restore(&[SnapshotSource::local(&snap).unwrap()]).unwrap();
            }
            let end = (start + cut.next().unwrap()).min(rows.len());
            op.on_batch(batch(&rows[start..end]), &mut out).unwrap();
            collect(&mut out, int_key_only, &mut got);
            start = end;
            batch_no += 1;
        }
        op.on_end(&mut out).unwrap();
        collect(&mut out, int_key_only, &mut got);

        // The model: per key, every `size` rows in order make a window.
        let mut open: BTreeMap<(String, i64), OpenWindow> = BTreeMap::new();
        let mut want = Windows::new();
        for (name, id, v) in &rows {
            let k = (if int_key_only { String::new() } else { name.clone() }, *id);
            let e = open.entry(k.clone()).or_insert((0, Vec::new()));
            e.1.push(*v);
            if e.1.len() as u64 == size {
                let vals: Vec<i64> = e.1.iter().flatten().copied().collect();
                let sum = (!vals.is_empty()).then(|| vals.iter().sum::<i64>());
                want.insert(
                    (k.0, k.1, e.0),
                    (
                        size as i64,
                        vals.len() as i64,
                        sum,
                        vals.iter().min().copied(),
                        sum.map(|s| (s as f64 / vals.len() as f64).to_bits()),
                    ),
                );
                e.0 += 1;
                e.1.clear();
            }
        }
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_count_window_of_zero_records_is_a_build_error() {
    let e = factory(true, 0)
        .output_schema(&schema())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 1 record"), "{e}");
}
