//! The demo job at parallelism 1 and 4, with window state in memory and in RocksDB,
//! against a naive row-at-a-time recomputation over
//! the same generated transactions: exact equality.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sabot::StreamEnv;
use sabot::arrow::array::{AsArray, RecordBatch};
use sabot::arrow::datatypes::{Float64Type, Int64Type};
use sabot::operators::LATE_RECORDS_DROPPED;
use sabot::runtime::{SINK_RECORDS, SOURCE_RECORDS};
use sabot::state::{RocksDbConfig, StateConfig};
use sabot_cli::demo::{FraudRules, GeneratorConfig, TransactionGenerator, fraud_job};

/// (account, window_start) -> (total, txns, max_amount)
type Windows = BTreeMap<(i64, i64), (i64, i64, i64)>;
/// (txn_id, account, amount, average in 1/1000 cent), sorted.
type Spikes = Vec<(i64, i64, i64, i64)>;

struct Txn {
    id: i64,
    account: i64,
    amount: i64,
    ts: i64,
}

fn transactions(g: &TransactionGenerator) -> Vec<Txn> {
    let mut out = Vec::new();
    for b in g.all_batches().unwrap() {
        let c = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (id, acc, amt, ts) = (c("txn_id"), c("account"), c("amount"), c("ts"));
        for i in 0..b.num_rows() {
            out.push(Txn {
                id: id.value(i),
                account: acc.value(i),
                amount: amt.value(i),
                ts: ts.value(i),
            });
        }
    }
    out
}

fn naive_windows(txns: &[Txn], size_ms: i64) -> Windows {
    let mut w = Windows::new();
    for t in txns.iter().filter(|t| t.amount > 0) {
        let start = t.ts.div_euclid(size_ms) * size_ms;
        let e = w.entry((t.account, start)).or_insert((0, 0, i64::MIN));
        e.0 += t.amount;
        e.1 += 1;
        e.2 = e.2.max(t.amount);
    }
    w
}

/// (txn_id, account, amount, average rounded to 1/1000 cent)
fn naive_spikes(txns: &[Txn], factor: f64, min_history: u64) -> Spikes {
    let mut sorted: Vec<&Txn> = txns.iter().filter(|t| t.amount > 0).collect();
    sorted.sort_by_key(|t| (t.ts, t.id));
    let mut history: HashMap<i64, (u64, i128)> = HashMap::new();
    let mut out = Vec::new();
    for t in sorted {
        let (n, sum) = history.entry(t.account).or_default();
        if *n >= min_history {
            let avg = *sum as f64 / *n as f64;
            if t.amount as f64 > factor * avg {
                out.push((t.id, t.account, t.amount, (avg * 1000.0).round() as i64));
            }
        }
        *n += 1;
        *sum += i128::from(t.amount);
    }
    out.sort();
    out
}

fn windows_of(batches: &[RecordBatch]) -> Windows {
    let mut w = Windows::new();
    for b in batches {
        let c = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (acc, start, end, total, txns, max) = (
            c("account"),
            c("window_start"),
            c("window_end"),
            c("total"),
            c("txns"),
            c("max_amount"),
        );
        for i in 0..b.num_rows() {
            assert_eq!(end.value(i) - start.value(i), 60_000);
            let prev = w.insert(
                (acc.value(i), start.value(i)),
                (total.value(i), txns.value(i), max.value(i)),
            );
            assert!(
                prev.is_none(),
                "window emitted twice: {:?}",
                (acc.value(i), start.value(i))
            );
        }
    }
    w
}

fn spikes_of(batches: &[RecordBatch]) -> Spikes {
    let mut out = Vec::new();
    for b in batches {
        let c = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (id, acc, amt) = (c("txn_id"), c("account"), c("amount"));
        let avg = b
            .column_by_name("average")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((
                id.value(i),
                acc.value(i),
                amt.value(i),
                (avg.value(i) * 1000.0).round() as i64,
            ));
        }
    }
    out.sort();
    out
}

fn generator() -> TransactionGenerator {
    let mut c = GeneratorConfig::default();
    c.events = 200_000;
    c.seed = 2024;
    c.accounts = 2_000;
    c.rate = 2_000; // 100 s of event time: two windows boundaries per account at least
    c.batch_size = 1_000;
    c.spike_one_in = 300;
    c.max_delay = Duration::from_millis(1_500);
    TransactionGenerator::new(c).unwrap()
}

fn run_at(
    parallelism: usize,
    state: StateConfig,
    rules: &FraudRules,
) -> (Windows, Windows, Spikes) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism)
        .set_queue_capacity(2)
        .set_state(state);
    let out = fraud_job(&env, generator(), rules).unwrap();
    let result = env.execute().unwrap();
    assert_eq!(result.metric(SOURCE_RECORDS), 200_000);
    assert_eq!(result.metric(LATE_RECORDS_DROPPED), 0);
    assert!(result.metric(SINK_RECORDS) > 0);
    (
        windows_of(&out.all_windows.unwrap().batches()),
        windows_of(&out.window_alerts.batches()),
        spikes_of(&out.spike_alerts.batches()),
    )
}

#[test]
fn demo_job_matches_naive_recomputation_at_parallelism_1_and_4() {
    let mut rules = FraudRules::default();
    rules.collect_all_windows = true;
    rules.threshold_cents = 100_000;
    let txns = transactions(&generator());
    let expected = naive_windows(&txns, 60_000);
    let expected_alerts: Windows = expected
        .iter()
        .filter(|(_, v)| v.0 > rules.threshold_cents)
        .map(|(k, v)| (*k, *v))
        .collect();
    let expected_spikes = naive_spikes(&txns, rules.spike_factor, rules.min_history);
    assert!(
        !expected_alerts.is_empty() && !expected_spikes.is_empty(),
        "the input must trigger both rules"
    );

    // Window state in memory, then in RocksDB (files under a temporary folder).
    let dir = tempfile::tempdir().unwrap();
    let rocksdb = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(dir.path());
    for (p, state) in [
        (1, StateConfig::memory()),
        (4, StateConfig::memory()),
        (4, rocksdb),
    ] {
        let backend = state.name();
        let (all, alerts, spikes) = run_at(p, state, &rules);
        assert_eq!(
            all.len(),
            expected.len(),
            "window count at parallelism {p}, {backend} state"
        );
        assert!(
            all == expected,
            "window results differ from the naive computation at parallelism {p}, {backend} state"
        );
        assert!(
            alerts == expected_alerts,
            "window alerts differ at parallelism {p}, {backend} state"
        );
        assert!(
            spikes == expected_spikes,
            "spike alerts differ at parallelism {p}, {backend} state"
        );
    }
    // Each operator subtask's RocksDB folder is removed when the job ends.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_demo_generator_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<sabot_cli::demo::TransactionGenerator>();
}
