//! Session windows through the `Stream` API at parallelism 1 and 3, on memory and
//! RocksDB state: each user's sessions equal a sequential computation over all rows
//! (timestamps increase per source subtask, so no row is late).

use std::collections::BTreeMap;
use std::time::Duration;

use sabot::core::random::SplitMix64;
use sabot::operators::VecSource;
use sabot::state::{RocksDbConfig, StateConfig};
use sabot::{Aggregate, SessionWindow, StreamEnv};
use sabot_test_kit::{int64_batch, row_strings};

fn run(p: usize, state: StateConfig, rows: &[(i64, i64, i64)]) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(p).set_state(state);
    let batches = rows
        .chunks(64)
        .map(|c| {
            int64_batch(&[
                ("user", c.iter().map(|r| r.0).collect()),
                ("ts", c.iter().map(|r| r.1).collect()),
                ("amount", c.iter().map(|r| r.2).collect()),
            ])
        })
        .collect::<Vec<_>>();
    let sessions = env
        .source(VecSource::new(batches[0].schema(), batches))
        .with_watermarks("ts", Duration::from_millis(1))
        .key_by(&["user"])
        .window(SessionWindow::with_gap(Duration::from_millis(40)))
        .aggregate([Aggregate::count(), Aggregate::sum("amount")])
        .collect();
    env.execute().unwrap();
    let mut out: Vec<String> = sessions.batches().iter().flat_map(row_strings).collect();
    out.sort();
    out
}

#[test]
fn sessions_at_any_parallelism_equal_the_sequential_answer() {
    let mut rng = SplitMix64::new(7, 0);
    // Bursts of activity per user with pauses longer and shorter than the gap.
    let mut ts = 0;
    let rows: Vec<(i64, i64, i64)> = (0..6_000)
        .map(|_| {
            ts += if rng.below(20) == 0 {
                45
            } else {
                rng.below(3) as i64
            };
            (rng.below(30) as i64, ts, rng.below(100) as i64)
        })
        .collect();
    let mut by_user: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for r in &rows {
        by_user.entry(r.0).or_default().push((r.1, r.2));
    }
    let mut want = Vec::new();
    for (user, events) in by_user {
        let (mut start, mut last, mut n, mut sum) = (events[0].0, events[0].0, 0, 0);
        for (t, a) in events {
            if t > last + 40 {
                want.push(format!("{user},{start},{},{n},{sum}", last + 40));
                (start, n, sum) = (t, 0, 0);
            }
            last = t;
            n += 1;
            sum += a;
        }
        want.push(format!("{user},{start},{},{n},{sum}", last + 40));
    }
    want.sort();
    assert!(want.len() > 100);
    assert_eq!(run(1, StateConfig::memory(), &rows), want);
    assert_eq!(run(3, StateConfig::memory(), &rows), want);
    let dir = tempfile::tempdir().unwrap();
    let rocks = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path());
    assert_eq!(run(3, rocks, &rows), want);
}
