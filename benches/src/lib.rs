//! Shared pieces of Sabot's benchmarks: raw baselines that compute the same results as the
//! engine with plain loops, so that every bench group reports a ratio measured in one run.

use std::collections::HashMap;

/// The allocator of the `sabot` binary, so that benches measure what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sabot::arrow::array::AsArray;
use sabot::arrow::datatypes::Int64Type;
use sabot_cli::demo::{FraudRules, TransactionGenerator};

/// A bench size from environment variable `var`, else `default`.
pub fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts of what the fraud rules found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FraudCounts {
    /// Windows over the threshold.
    pub window_alerts: usize,
    /// Transactions over the spike factor.
    pub spike_alerts: usize,
}

/// The demo job's two rules as a single-threaded plain loop over the same generated
/// batches: a `HashMap` keyed by `(account, window)` for windows, and a sort by
/// `(ts, txn_id)` then a per-account running average for spikes.
pub fn plain_fraud_baseline(generator: &TransactionGenerator, rules: &FraudRules) -> FraudCounts {
    let size = rules.window.as_millis() as i64;
    let mut windows: HashMap<(i64, i64), (i64, i64, i64)> = HashMap::new();
    let mut rows: Vec<(i64, i64, i64, i64)> = Vec::new();
    for b in generator
        .all_batches()
        .expect("generator settings are valid")
    {
        let col = |n: &str| {
            b.column_by_name(n)
                .expect("generator column")
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (id, acc, amt, ts) = (col("txn_id"), col("account"), col("amount"), col("ts"));
        for i in 0..b.num_rows() {
            let (a, t) = (amt.value(i), ts.value(i));
            if a <= 0 {
                continue;
            }
            let w = windows
                .entry((acc.value(i), t.div_euclid(size) * size))
                .or_insert((0, 0, i64::MIN));
            w.0 += a;
            w.1 += 1;
            w.2 = w.2.max(a);
            rows.push((t, id.value(i), acc.value(i), a));
        }
    }
    let window_alerts = windows
        .values()
        .filter(|w| w.0 > rules.threshold_cents)
        .count();
    rows.sort_unstable();
    let mut history: HashMap<i64, (u64, i128)> = HashMap::new();
    let mut spike_alerts = 0;
    for (_, _, account, amount) in rows {
        let (n, sum) = history.entry(account).or_default();
        if *n >= rules.min_history && amount as f64 > rules.spike_factor * (*sum as f64 / *n as f64)
        {
            spike_alerts += 1;
        }
        *n += 1;
        *sum += i128::from(amount);
    }
    FraudCounts {
        window_alerts,
        spike_alerts,
    }
}
