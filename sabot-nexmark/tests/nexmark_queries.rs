//! Every Nexmark query against an independent naive computation over the same events
//! (plain Rust over the rows), at parallelism 1 and 3, and with a failure and a restart
//! from the checkpoint folder in the middle (results through the exactly-once CSV sink):
//! exact equality. q12 runs in processing time: there the bids per bidder must add up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sabot::StreamEnv;
use sabot::arrow::array::{AsArray, Float64Array, RecordBatch};
use sabot::arrow::datatypes::Int64Type;
use sabot::arrow::util::display::array_value_to_string;
use sabot::checkpoint::storage::CheckpointStorage;
use sabot::operators::TransactionalCsvSink;
use sabot::runtime::CheckpointSettings;
use sabot_nexmark::{EventKind, Generator, NexmarkConfig, Query};
use sabot_test_kit::row_strings;

const EVENTS: u64 = 120_000;
const RATE: u64 = 1_000;

fn config() -> NexmarkConfig {
    NexmarkConfig::new(EVENTS, 5, RATE)
}

/// The events of a kind as rows of named values.
struct Rows {
    batch: RecordBatch,
}

impl Rows {
    fn of(kind: EventKind) -> Rows {
        Rows {
            batch: Generator::new(config()).batch(kind, 0..EVENTS).unwrap(),
        }
    }
    fn len(&self) -> usize {
        self.batch.num_rows()
    }
    fn int(&self, c: &str, i: usize) -> i64 {
        self.batch
            .column_by_name(c)
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(i)
    }
    fn text(&self, c: &str, i: usize) -> String {
        array_value_to_string(self.batch.column_by_name(c).unwrap(), i).unwrap()
    }
}

fn f64_text(v: f64) -> String {
    array_value_to_string(&Float64Array::from(vec![v]), 0).unwrap()
}

/// The naive answer of `q`, as CSV-like rows (values as Arrow displays them), sorted.
fn expected(q: Query) -> Vec<String> {
    let bids = || Rows::of(EventKind::Bid);
    let mut out: Vec<String> = match q {
        Query::Q0 => {
            let b = bids();
            (0..b.len())
                .map(|i| {
                    format!(
                        "{},{},{},{},{}",
                        b.int("auction", i),
                        b.int("bidder", i),
                        b.int("price", i),
                        b.int("date_time", i),
                        b.text("extra", i)
                    )
                })
                .collect()
        }
        Query::Q1 => {
            let b = bids();
            (0..b.len())
                .map(|i| {
                    format!(
                        "{},{},{},{},{}",
                        b.int("auction", i),
                        b.int("bidder", i),
                        f64_text(b.int("price", i) as f64 * 0.908),
                        b.int("date_time", i),
                        b.text("extra", i)
                    )
                })
                .collect()
        }
        Query::Q2 => {
            let b = bids();
            (0..b.len())
                .filter(|&i| b.int("auction", i) % 123 == 0)
                .map(|i| format!("{},{}", b.int("auction", i), b.int("price", i)))
                .collect()
        }
        Query::Q3 => {
            let (a, p) = (Rows::of(EventKind::Auction), Rows::of(EventKind::Person));
            let mut out = Vec::new();
            for i in 0..a.len() {
                if a.int("category", i) != 10 {
                    continue;
                }
                for j in 0..p.len() {
                    let state = p.text("state", j);
                    if p.int("id", j) == a.int("seller", i)
                        && matches!(state.as_str(), "OR" | "ID" | "CA")
                    {
                        out.push(format!(
                            "{},{},{},{}",
                            p.text("name", j),
                            p.text("city", j),
                            state,
                            a.int("id", i)
                        ));
                    }
                }
            }
            out
        }
        Query::Q4 => return Vec::new(), // checked by `q4_final_averages`
        Query::Q5 => {
            let b = bids();
            let (lo, hi) = (b.int("date_time", 0), b.int("date_time", b.len() - 1));
            let mut out = Vec::new();
            let mut w = lo - lo.rem_euclid(2000) - 8000;
            while w <= hi {
                let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
                for i in 0..b.len() {
                    let t = b.int("date_time", i);
                    if t >= w && t < w + 10_000 {
                        *counts.entry(b.int("auction", i)).or_default() += 1;
                    }
                }
                if let Some(&max) = counts.values().max() {
                    for (a, n) in counts.iter().filter(|(_, n)| **n == max) {
                        out.push(format!("{a},{n},{w},{}", w + 10_000));
                    }
                }
                w += 2000;
            }
            out
        }
        Query::Q7 => {
            let b = bids();
            let mut per_window: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            for i in 0..b.len() {
                let t = b.int("date_time", i);
                per_window
                    .entry(t - t.rem_euclid(10_000))
                    .or_default()
                    .push(i);
            }
            let mut out = Vec::new();
            for rows in per_window.values() {
                let max = rows.iter().map(|&i| b.int("price", i)).max().unwrap();
                for &i in rows.iter().filter(|&&i| b.int("price", i) == max) {
                    out.push(format!(
                        "{},{},{},{},{}",
                        b.int("auction", i),
                        max,
                        b.int("bidder", i),
                        b.int("date_time", i),
                        b.text("extra", i)
                    ));
                }
            }
            out
        }
        Query::Q8 => {
            let (p, a) = (Rows::of(EventKind::Person), Rows::of(EventKind::Auction));
            let window = |t: i64| t - t.rem_euclid(10_000);
            let sellers: BTreeSet<(i64, i64)> = (0..a.len())
                .map(|i| (a.int("seller", i), window(a.int("date_time", i))))
                .collect();
            (0..p.len())
                .filter(|&j| sellers.contains(&(p.int("id", j), window(p.int("date_time", j)))))
                .map(|j| {
                    format!(
                        "{},{},{}",
                        p.int("id", j),
                        p.text("name", j),
                        window(p.int("date_time", j))
                    )
                })
                .collect()
        }
        Query::Q11 => {
            let b = bids();
            let mut per_bidder: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for i in 0..b.len() {
                per_bidder
                    .entry(b.int("bidder", i))
                    .or_default()
                    .push(b.int("date_time", i));
            }
            let mut out = Vec::new();
            for (bidder, mut ts) in per_bidder {
                ts.sort_unstable();
                let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
                for t in ts {
                    if t > last + 10_000 {
                        out.push(format!("{bidder},{n},{start},{}", last + 10_000));
                        (start, n) = (t, 0);
                    }
                    last = t;
                    n += 1;
                }
                out.push(format!("{bidder},{n},{start},{}", last + 10_000));
            }
            out
        }
        _ => Vec::new(),
    };
    out.sort();
    out
}

/// q4: per category, the average of the closing prices of its auctions that had bids
/// (closing price: the highest bid between opening and expiry).
fn q4_final_averages() -> BTreeMap<i64, (usize, String)> {
    let (a, b) = (Rows::of(EventKind::Auction), Rows::of(EventKind::Bid));
    let mut best: BTreeMap<i64, i64> = BTreeMap::new();
    let mut auctions: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for i in 0..a.len() {
        auctions.insert(
            a.int("id", i),
            (
                a.int("category", i),
                a.int("date_time", i),
                a.int("expires", i),
            ),
        );
    }
    for i in 0..b.len() {
        let id = b.int("auction", i);
        if let Some(&(_, open, expires)) = auctions.get(&id) {
            let t = b.int("date_time", i);
            if t >= open && t <= expires {
                let p = b.int("price", i);
                let e = best.entry(id).or_insert(p);
                *e = (*e).max(p);
            }
        }
    }
    let mut per_category: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (id, price) in best {
        per_category.entry(auctions[&id].0).or_default().push(price);
    }
    per_category
        .into_iter()
        .map(|(c, prices)| {
            let sum: i64 = prices.iter().sum();
            (
                c,
                (prices.len(), f64_text(sum as f64 / prices.len() as f64)),
            )
        })
        .collect()
}

fn run(q: Query, p: usize) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(p);
    let out = q.build(&env, &config()).collect();
    env.execute().unwrap();
    let mut rows: Vec<String> = out.batches().iter().flat_map(row_strings).collect();
    rows.sort();
    rows
}

/// Runs `q` with checkpoints every 10 ms into `dir/ckpt` and results into `dir/out`,
/// failing once at the first result batch after a checkpoint completed; then again on the
/// same folders to the end. Returns the committed rows. A query whose few result
/// batches all came before the first checkpoint (a busy machine) is tried again on fresh
/// folders with its results slowed down more.
fn run_with_failure(q: Query, p: usize, dir: &Path) -> Vec<String> {
    // One failure scenario at a time: they need checkpoints to complete mid-run.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (round, pause_ms) in [1u64, 5, 25, 100].into_iter().enumerate() {
        let dir = dir.join(format!("round-{round}"));
        let (ckpt, out) = (dir.join("ckpt"), dir.join("out"));
        let failed = Arc::new(AtomicBool::new(false));
        let mut restored = false;
        for attempt in 0..2 {
            let env = StreamEnv::new();
            env.set_parallelism(p)
                .set_checkpoints(CheckpointSettings::new(&ckpt, Duration::from_millis(10)));
            let (f, c) = (failed.clone(), ckpt.clone());
            q.build(&env, &config())
                .map(move |b| {
                    // Slow enough for checkpoints in the middle of the input.
                    std::thread::sleep(Duration::from_millis(pause_ms));
                    let completed = CheckpointStorage::open(&c)
                        .and_then(|s| s.completed())
                        .is_ok_and(|c| !c.is_empty());
                    if attempt == 0 && completed && !f.swap(true, Ordering::SeqCst) {
                        return Err("injected failure".into());
                    }
                    Ok(b)
                })
                .sink(TransactionalCsvSink::new(&out, q.name()));
            let r = env.execute();
            if attempt == 0 {
                if r.is_ok() {
                    break; // the input ended before a checkpoint: try again, slower
                }
                assert!(failed.load(Ordering::SeqCst), "{r:?}");
            } else {
                let r = r.unwrap();
                assert!(r.restored_from.is_some(), "the rerun did not restore");
                restored = true;
            }
        }
        if !restored {
            continue;
        }
        let mut rows = Vec::new();
        for e in std::fs::read_dir(&out).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".csv") {
                let text = std::fs::read_to_string(&path).unwrap();
                rows.extend(text.lines().skip(1).map(str::to_owned));
            }
        }
        rows.sort();
        return rows;
    }
    panic!(
        "{}: no checkpoint completed before the end in any round",
        q.name()
    );
}

fn check(q: Query) {
    let want = expected(q);
    assert!(!want.is_empty(), "{}: the naive answer is empty", q.name());
    for p in [1, 3] {
        let got = run(q, p);
        assert_eq!(
            got.len(),
            want.len(),
            "{} at parallelism {p}: row count",
            q.name()
        );
        assert!(got == want, "{} at parallelism {p}: rows differ", q.name());
    }
    let dir = tempfile::tempdir().unwrap();
    let got = run_with_failure(q, 3, dir.path());
    assert_eq!(
        got.len(),
        want.len(),
        "{} after a failure: row count",
        q.name()
    );
    assert!(got == want, "{} after a failure: rows differ", q.name());
}

#[test]
fn q0_matches_the_naive_answer() {
    check(Query::Q0);
}

#[test]
fn q1_matches_the_naive_answer() {
    check(Query::Q1);
}

#[test]
fn q2_matches_the_naive_answer() {
    check(Query::Q2);
}

#[test]
fn q3_matches_the_naive_answer() {
    check(Query::Q3);
}

#[test]
fn q5_matches_the_naive_answer() {
    check(Query::Q5);
}

#[test]
fn q7_matches_the_naive_answer() {
    check(Query::Q7);
}

#[test]
fn q8_matches_the_naive_answer() {
    check(Query::Q8);
}

#[test]
fn q11_matches_the_naive_answer() {
    check(Query::Q11);
}

/// q4's running averages arrive in an order that depends on the parallel closing of
/// auctions: per category, the number of updates and the final average must match.
#[test]
fn q4_final_averages_match_the_naive_answer() {
    let want = q4_final_averages();
    assert!(!want.is_empty());
    // Per category: how many updates, and whether one of them is the naive average of
    // all its closings (the last one covers them all; its position in the sorted rows
    // says nothing).
    let last_values = |rows: Vec<String>| -> BTreeMap<i64, (usize, String)> {
        let mut per: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for r in rows {
            let (c, v) = r.split_once(',').unwrap();
            per.entry(c.parse().unwrap())
                .or_default()
                .push(v.to_owned());
        }
        per.into_iter()
            .map(|(c, vals)| {
                let w = want.get(&c).map(|w| w.1.clone()).unwrap_or_default();
                let found = if vals.contains(&w) {
                    w
                } else {
                    format!("missing among {vals:?}")
                };
                (c, (vals.len(), found))
            })
            .collect()
    };
    for p in [1, 3] {
        assert_eq!(
            last_values(run(Query::Q4, p)),
            want,
            "q4 at parallelism {p}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        last_values(run_with_failure(Query::Q4, 3, dir.path())),
        want,
        "q4 after a failure"
    );
}

/// q12 counts in processing-time windows: which window a bid falls in depends on the
/// run, but every bid is counted once.
#[test]
fn q12_counts_every_bid_once() {
    let b = Rows::of(EventKind::Bid);
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for i in 0..b.len() {
        *want.entry(b.int("bidder", i)).or_default() += 1;
    }
    for p in [1, 3] {
        let mut got: BTreeMap<i64, i64> = BTreeMap::new();
        for r in run(Query::Q12, p) {
            let f: Vec<&str> = r.split(',').collect();
            *got.entry(f[0].parse().unwrap()).or_default() += f[1].parse::<i64>().unwrap();
        }
        assert_eq!(got, want, "q12 at parallelism {p}");
    }
}

#[test]
fn query_names_parse() {
    for q in Query::ALL {
        assert_eq!(Query::parse(q.name()), Some(q));
    }
    assert_eq!(Query::parse("Q5"), Some(Query::Q5));
    assert_eq!(Query::parse("6"), None);
}
