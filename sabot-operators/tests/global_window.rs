//! Global windows with count and event-time triggers, accumulating and purging, on
//! memory and RocksDB state, against a row-at-a-time model with random batch boundaries
//! and watermarks; processing-time triggers on a manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_core::metrics::Metrics;
use sabot_core::{Message, Timestamp};
use sabot_operators::{
    Aggregate, GlobalWindowFactory, OperatorFactory, Output, TaskContext, Trigger,
};
use sabot_state::{RocksDbConfig, StateConfig};
use sabot_test_kit::{int64_batch, row_strings};

fn rows_of(out: &mut Output) -> Vec<String> {
    out.drain()
        .filter_map(|m| match m {
            Message::Data(b) => Some(row_strings(&b)),
            _ => None,
        })
        .flatten()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn triggers_match_the_model(
        rows in proptest::collection::vec((0i64..4, 0i64..1000, -50i64..50), 0..200),
        cuts in proptest::collection::vec(1usize..30, 1..20),
        count in prop_oneof![Just(None), (1u64..6).prop_map(Some)],
        interval in 1i64..200,
        purge in any::<bool>(),
        rocksdb in any::<bool>(),
    ) {
        let trigger = match count {
            Some(n) => Trigger::Count(n),
            None => Trigger::EventTime(Duration::from_millis(interval as u64)),
        };
        let mut factory = GlobalWindowFactory::new(
            vec!["k".into()],
            trigger,
            vec![Aggregate::count(), Aggregate::sum("v")],
        )
        .with_time_column(Some("ts".into()));
        if purge {
            factory = factory.purging();
        }
        let dir = tempfile::tempdir().unwrap();
        let state = if rocksdb {
            StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path())
        } else {
            StateConfig::memory()
        };
        let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_state(state);
        let schema = int64_batch(&[("k", vec![]), ("ts", vec![]), ("v", vec![])]).schema();
        let mut op = factory.create(&schema, &ctx).unwrap();
        let mut out = Output::new();

        // Model per key: (count, sum) accumulated, records since the last firing, and
        // the boundary its periodic firing waits for.
        let mut acc: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        let mut pending: BTreeMap<i64, (i64, i64)> = BTreeMap::new(); // key -> (records, due at)
        let mut expected = Vec::new();
        let mut wm = i64::MIN;
        let mut start = 0;
        let mut cut = cuts.iter().cycle();
        let boundary = |t: i64| (t.div_euclid(interval) + 1).saturating_mul(interval);
        let fire = |k: i64, acc: &mut BTreeMap<i64, (i64, i64)>, expected: &mut Vec<String>| {
            let (c, s) = acc[&k];
            expected.push(format!("{k},{c},{s}"));
            if purge {
                acc.remove(&k);
            }
        };
        while start < rows.len() {
            let end = (start + cut.next().unwrap()).min(rows.len());
            let chunk = &rows[start..end];
            start = end;
            for &(k, _, v) in chunk {
                let a = acc.entry(k).or_insert((0, 0));
                a.0 += 1;
                a.1 += v;
                let p = pending.entry(k).or_insert((0, boundary(wm)));
                p.0 += 1;
                if let Some(n) = count
                    && p.0 == n as i64
                {
                    pending.remove(&k);
                    fire(k, &mut acc, &mut expected);
                }
            }
            let batch = int64_batch(&[
                ("k", chunk.iter().map(|r| r.0).collect()),
                ("ts", chunk.iter().map(|r| r.1).collect()),
                ("v", chunk.iter().map(|r| r.2).collect()),
            ]);
            op.on_batch(batch, &mut out).unwrap();
            let max = chunk.iter().map(|r| r.1).max().unwrap_or(i64::MIN);
            if max > wm {
                wm = max;
                op.on_watermark(Timestamp::from_millis(wm), &mut out).unwrap();
                if count.is_none() {
                    let due: Vec<i64> = pending.iter().filter(|(_, p)| p.1 <= wm).map(|(k, _)| *k).collect();
                    for k in due {
                        pending.remove(&k);
                        fire(k, &mut acc, &mut expected);
                    }
                }
            }
        }
        op.on_end(&mut out).unwrap();
        if count.is_none() {
            for (k, _) in std::mem::take(&mut pending) {
                fire(k, &mut acc, &mut expected);
            }
        }
        let mut actual = rows_of(&mut out);
        expected.sort();
        actual.sort();
        prop_assert_eq!(actual, expected);
    }
}

#[test]
fn processing_time_trigger_fires_keys_with_news_every_interval() {
    let clock = Arc::new(sabot_time::ManualClock::new(1_000));
    let factory = GlobalWindowFactory::new(
        vec!["k".into()],
        Trigger::ProcessingTime(Duration::from_millis(100)),
        vec![Aggregate::count()],
    )
    .purging();
    let ctx = TaskContext::new(0, 1, 128, Metrics::new()).with_clock(clock.clone());
    let batch = |ks: Vec<i64>| int64_batch(&[("k", ks)]);
    let mut op = factory.create(&batch(vec![]).schema(), &ctx).unwrap();
    let mut out = Output::new();
    op.on_batch(batch(vec![1, 1, 2]), &mut out).unwrap();
    op.on_tick(1_099, &mut out).unwrap();
    assert!(rows_of(&mut out).is_empty(), "fired before the boundary");
    op.on_tick(1_100, &mut out).unwrap();
    let mut fired = rows_of(&mut out);
    fired.sort();
    assert_eq!(fired, vec!["1,2", "2,1"]);
    clock.set(1_150);
    op.on_batch(batch(vec![2]), &mut out).unwrap();
    op.on_tick(1_250, &mut out).unwrap();
    assert_eq!(rows_of(&mut out), vec!["2,1"], "key 1 had no news");
    op.on_batch(batch(vec![3]), &mut out).unwrap();
    op.on_end(&mut out).unwrap();
    assert_eq!(
        rows_of(&mut out),
        vec!["3,1"],
        "the end fires keys with news"
    );
}
