//! The tumbling window operator against a naive row-at-a-time model, over random rows,
//! random batch boundaries and random out-of-orderness (so some rows are late).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::KeyGroupRange;
use sabot_core::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use sabot_core::metrics::Metrics;
use sabot_core::{Message, RecordBatch, Timestamp};
use sabot_operators::SnapshotTarget;
use sabot_operators::{
    Aggregate, LATE_DATA, LATE_RECORDS, LATE_RECORDS_DROPPED, OperatorFactory, Output,
    SlidingWindowFactory, TaskContext, TumblingWindowFactory,
};
use sabot_state::{MemoryBackend, RocksDbConfig, StateBackend, StateConfig};
use sabot_time::{WatermarkGenerator, WatermarkStrategy};

#[derive(Clone, Debug)]
struct Row {
    key: String,
    shard: i64,
    value: Option<i64>,
    price: f64,
    ts: i64,
}

fn row() -> impl Strategy<Value = Row> {
    (
        "[ab]{0,2}",
        0i64..3,
        proptest::option::weighted(0.9, -1000i64..1000),
        -100.0f64..100.0,
        -500i64..3000,
    )
        .prop_map(|(key, shard, value, price, ts)| Row {
            key,
            shard,
            value,
            price,
            ts,
        })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("shard", DataType::Int64, false),
        Field::new("value", DataType::Int64, true),
        Field::new("price", DataType::Float64, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.key.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.shard))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.price))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

/// (key, shard, window_start) -> (count, count(value), sum(value), min(value), max(price) as
/// bits, avg(value) as bits)
type Result = BTreeMap<(String, i64, i64), (i64, i64, Option<i64>, Option<i64>, u64, Option<u64>)>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn window_matches_row_at_a_time_model(
        rows in proptest::collection::vec(row(), 0..300),
        cuts in proptest::collection::vec(1usize..40, 1..20),
        bound_ms in 0u64..400,
        size_ms in 1i64..700,
        int_key_only in any::<bool>(),
        lateness_ms in prop_oneof![Just(0i64), 0i64..400],
        rocksdb in any::<bool>(),
        // Windows per pane: 1 is tumbling; 5 and 60 slide.
        ratio in prop_oneof![Just(1i64), Just(5), Just(60)],
        // Ratio 1: a TumblingWindowFactory, or a SlidingWindowFactory sliding by its size.
        named_tumbling in any::<bool>(),
    ) {
        let slide_ms = if ratio == 1 { size_ms } else { (size_ms / ratio).max(1) };
        let size_ms = slide_ms * ratio;

        // A single Int64 key takes the integer fast path; two keys take the row format.
        let keys: Vec<String> = if int_key_only {
            vec!["shard".into()]
        } else {
            vec!["key".into(), "shard".into()]
        };
        let aggregates = vec![
            Aggregate::count(),
            Aggregate::count_of("value"),
            Aggregate::sum("value"),
            Aggregate::min("value"),
            Aggregate::max("price"),
            Aggregate::avg("value"),
        ];
        let (size, slide) = (
            Duration::from_millis(size_ms as u64),
            Duration::from_millis(slide_ms as u64),
        );
        let lateness = Duration::from_millis(lateness_ms as u64);
        let factory: Box<dyn OperatorFactory> = if ratio == 1 && named_tumbling {
            Box::new(
                TumblingWindowFactory::new(keys, Some("ts".into()), size, aggregates)
                    .with_allowed_lateness(lateness),
            )
        } else {
            Box::new(
                SlidingWindowFactory::new(keys, Some("ts".into()), size, slide, aggregates)
                    .with_allowed_lateness(lateness),
            )
        };
        let metrics = Metrics::new();
        // Window contents live in the state backend: run the model against both.
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let ctx = TaskContext::new(0, 1, 128, metrics.clone()).with_state(state);
        let mut op = factory.create(&schema(), &ctx).unwrap();
        let mut out = Output::new();
        let mut emitted = Vec::new();

        // Model: watermark after each batch; a row is late when its window's last
        // millisecond is at or behind the watermark when it arrives.
        let mut wm_gen = WatermarkGenerator::new(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(bound_ms)),
            None,
        );
        let mut wm = i64::MIN;
        let mut expected = Result::new();
        let mut late = 0u64;
        let mut too_late = 0u64;
        let mut expected_side: Vec<(String, i64, i64)> = Vec::new();
        let mut side: Vec<(String, i64, i64)> = Vec::new();
        let mut start = 0;
        let mut cut = cuts.iter().cycle();
        while start < rows.len() {
            let end = (start + cut.next().unwrap()).min(rows.len());
            let chunk = &rows[start..end];
            for r in chunk {
                let pane = r.ts.div_euclid(slide_ms) * slide_ms;
                if pane + slide_ms - 1 <= wm {
                    late += 1;
                }
                if pane + size_ms - 1 + lateness_ms <= wm {
                    too_late += 1;
                    expected_side.push((r.key.clone(), r.shard, r.ts));
                    continue;
                }
                // Every window holding the row that has not fired yet (tumbling: its own
                // window, updated within the allowed lateness).
                let windows: Vec<i64> = (0..ratio)
                    .map(|i| pane - i * slide_ms)
                    .filter(|&ws| ws + size_ms - 1 + lateness_ms > wm)
                    .collect();
                for ws in windows {
                let k = if int_key_only { String::new() } else { r.key.clone() };
                let e = expected.entry((k, r.shard, ws)).or_insert((0, 0, None, None, f64::NEG_INFINITY.to_bits(), None));
                e.0 += 1;
                if let Some(v) = r.value {
                    e.1 += 1;
                    e.2 = Some(e.2.unwrap_or(0) + v);
                    e.3 = Some(e.3.map_or(v, |m: i64| m.min(v)));
                }
                e.4 = f64::from_bits(e.4).max(r.price).to_bits();
                e.5 = e.2.map(|s| (s as f64 / e.1 as f64).to_bits());
                }
            }
            let b = batch(chunk);
            op.on_batch(b.clone(), &mut out).unwrap();
            // A batch emits only late updates of windows that were already due.
            emitted.extend(out.drain().map(|m| (wm, m)));
            for (tag, late_rows) in out.drain_side() {
                prop_assert_eq!(tag, LATE_DATA);
                let k = late_rows.column(0).as_string::<i32>();
                let sh = late_rows.column(1).as_primitive::<Int64Type>();
                let t = late_rows.column(4).as_primitive::<Int64Type>();
                for i in 0..late_rows.num_rows() {
                    side.push((k.value(i).to_owned(), sh.value(i), t.value(i)));
                }
            }
            let times: Vec<i64> = chunk.iter().map(|r| r.ts).collect();
            if let Some(w) = wm_gen.on_batch(&b, &times, 0) {
                wm = w.millis();
                op.on_watermark(w, &mut out).unwrap();
            }
            emitted.extend(out.drain().map(|m| (wm, m)));
            start = end;
        }
        op.on_end(&mut out).unwrap();
        emitted.extend(out.drain().map(|m| (i64::MAX, m)));
        if !rocksdb {
            // Every window (and sliding pane) fired is dropped from the state: nothing
            // is left after the end of input.
            let snap = dir.path().join("after-end");
            op.snapshot(&SnapshotTarget::local(&snap).unwrap()).unwrap();
            let mut left = MemoryBackend::new(128, KeyGroupRange::for_subtask(128, 1, 0));
            left.restore(&[snap.join("state")]).unwrap();
            prop_assert_eq!(left.len(), 0, "window state left after the end of input");
        }

        let mut actual = Result::new();
        for (input_wm, m) in emitted {
            match m {
                Message::Watermark(w) => prop_assert_eq!(w, Timestamp::from_millis(input_wm)),
                Message::Data(b) => {
                    let o = usize::from(!int_key_only);
                    let key = |i: usize| if int_key_only { String::new() } else { b.column(0).as_string::<i32>().value(i).to_owned() };
                    let shard = b.column(o).as_primitive::<Int64Type>();
                    let ws = b.column(o + 1).as_primitive::<Int64Type>();
                    let we = b.column(o + 2).as_primitive::<Int64Type>();
                    let count = b.column(o + 3).as_primitive::<Int64Type>();
                    let count_v = b.column(o + 4).as_primitive::<Int64Type>();
                    let sum = b.column(o + 5).as_primitive::<Int64Type>();
                    let min = b.column(o + 6).as_primitive::<Int64Type>();
                    let max = b.column(o + 7).as_primitive::<Float64Type>();
                    let avg = b.column(o + 8).as_primitive::<Float64Type>();
                    for i in 0..b.num_rows() {
                        prop_assert_eq!(we.value(i) - ws.value(i), size_ms);
                        // Fired only once the watermark reached the window's last millisecond.
                        prop_assert!(input_wm >= we.value(i) - 1, "window fired early");
                        let opt = |a: &Int64Array| (!a.is_null(i)).then(|| a.value(i));
                        // A later row for the same key and window is an update.
                        let prev = actual.insert(
                            (key(i), shard.value(i), ws.value(i)),
                            (count.value(i), count_v.value(i), opt(sum), opt(min), max.value(i).to_bits(), (!avg.is_null(i)).then(|| avg.value(i).to_bits())),
                        );
                        if lateness_ms == 0 {
                            prop_assert!(prev.is_none(), "window emitted twice without lateness");
                        }
                    }
                }
                _ => {}
            }
        }
        prop_assert_eq!(actual, expected);
        prop_assert_eq!(metrics.value(LATE_RECORDS), late);
        prop_assert_eq!(metrics.value(LATE_RECORDS_DROPPED), too_late);
        side.sort();
        expected_side.sort();
        prop_assert_eq!(side, expected_side, "too-late rows go to the side output, unchanged");
    }
}

/// Early firing: every interval of processing time, windows not yet fired emit their
/// current results for the keys updated since; the final result comes with the
/// watermark. Sliding windows combine their panes for it.
#[test]
fn early_firing_emits_partial_results_of_open_windows() {
    use sabot_test_kit::{int64_batch, row_strings};
    for slide in [100u64, 50] {
        let factory = SlidingWindowFactory::new(
            vec!["k".into()],
            Some("ts".into()),
            Duration::from_millis(100),
            Duration::from_millis(slide),
            vec![Aggregate::count()],
        )
        .with_early_firing(Duration::from_millis(10));
        let ctx = TaskContext::new(0, 1, 128, Metrics::new());
        let batch = |k: Vec<i64>, ts: Vec<i64>| int64_batch(&[("k", k), ("ts", ts)]);
        let mut op = factory
            .create(&batch(vec![], vec![]).schema(), &ctx)
            .unwrap();
        let mut out = Output::new();
        let rows = |out: &mut Output| -> Vec<String> {
            let mut r: Vec<String> = out
                .drain()
                .filter_map(|m| match m {
                    Message::Data(b) => Some(row_strings(&b)),
                    _ => None,
                })
                .flatten()
                .collect();
            r.sort();
            r
        };
        op.on_tick(0, &mut out).unwrap();
        op.on_batch(batch(vec![1, 1, 2], vec![60, 70, 80]), &mut out)
            .unwrap();
        op.on_tick(5, &mut out).unwrap();
        assert!(rows(&mut out).is_empty(), "fired before the interval");
        op.on_tick(10, &mut out).unwrap();
        let first = rows(&mut out);
        op.on_batch(batch(vec![1], vec![90]), &mut out).unwrap();
        op.on_tick(20, &mut out).unwrap();
        let second = rows(&mut out);
        op.on_tick(30, &mut out).unwrap();
        assert!(rows(&mut out).is_empty(), "no news, no early firing");
        op.on_watermark(Timestamp::from_millis(99), &mut out)
            .unwrap();
        let last = rows(&mut out);
        if slide == 100 {
            assert_eq!(first, vec!["1,0,100,2", "2,0,100,1"]);
            assert_eq!(second, vec!["1,0,100,3"], "only the updated key");
            assert_eq!(last, vec!["1,0,100,3", "2,0,100,1"]);
        } else {
            // Windows [0, 100) and [50, 150) hold every row.
            assert_eq!(
                first,
                vec!["1,0,100,2", "1,50,150,2", "2,0,100,1", "2,50,150,1"]
            );
            assert_eq!(second, vec!["1,0,100,3", "1,50,150,3"]);
            assert_eq!(last, vec!["1,0,100,3", "2,0,100,1"]);
        }
    }
}
