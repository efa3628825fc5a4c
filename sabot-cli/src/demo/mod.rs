//! The fraud-detection demo job that `sabot demo` runs.
//!
//! Card transactions from a seeded [`TransactionGenerator`] flow through a chain of
//! stateless operators (a sanity filter and a projection), are keyed by account, and feed
//! two detectors:
//! - a 1-minute tumbling event-time window per account (sum, count and max of amounts);
//!   windows whose total exceeds a threshold become *window alerts*;
//! - a [`SpikeDetector`] that flags transactions far above the account's running average
//!   (*spike alerts*).

mod generator;
mod kafka;
mod spike;

use std::time::Duration;

use sabot_core::arrow::array::{AsArray, Int64Array};
use sabot_core::arrow::compute::kernels::cmp::gt;
use sabot_core::arrow::datatypes::Int64Type;
use sabot_operators::{Aggregate, Collected, TransactionalCsvSink};

pub use generator::{BASE_TIME_MS, GeneratorConfig, TransactionGenerator};
pub use kafka::KafkaDemo;
pub use spike::{SPIKE_LATE_RECORDS, SpikeDetector};

use sabot::{Result, Stream, StreamEnv, TumblingWindow};

/// Settings of the fraud rules.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FraudRules {
    /// The spend window per account.
    pub window: Duration,
    /// A window alert fires when an account spends more than this (cents) in one window.
    pub threshold_cents: i64,
    /// A spike alert fires for a transaction above `spike_factor` x the account's average.
    pub spike_factor: f64,
    /// Transactions an account needs before spike alerts apply.
    pub min_history: u64,
    /// Also collect every window result, not only alerts (for tests).
    pub collect_all_windows: bool,
}

impl Default for FraudRules {
    fn default() -> Self {
        FraudRules {
            window: Duration::from_secs(60),
            threshold_cents: 500_000,
            spike_factor: 10.0,
            min_history: 3,
            collect_all_windows: false,
        }
    }
}

/// Where the demo job's results land.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FraudOutputs {
    /// Windows over the threshold: `account, window_start, window_end, total, txns,
    /// max_amount`.
    pub window_alerts: Collected,
    /// Transactions flagged by the [`SpikeDetector`].
    pub spike_alerts: Collected,
    /// Every window result, when [`FraudRules::collect_all_windows`] is set.
    pub all_windows: Option<Collected>,
}

/// Adds the fraud-detection job to `env`.
pub fn fraud_job(
    env: &StreamEnv,
    generator: TransactionGenerator,
    rules: &FraudRules,
) -> Result<FraudOutputs> {
    fraud_job_with_output(env, generator, rules, None)
}

/// Like [`fraud_job`], also writing the alerts as CSV files into `output` through
/// [`TransactionalCsvSink`]s (`window-alerts-<subtask>-*.csv`,
/// `spike-alerts-<subtask>-*.csv`): with checkpoints, a file is published only once the
/// checkpoint covering it completed, so a job that crashes and resumes writes every alert
/// exactly once.
pub fn fraud_job_with_output(
    env: &StreamEnv,
    generator: TransactionGenerator,
    rules: &FraudRules,
    output: Option<&std::path::Path>,
) -> Result<FraudOutputs> {
    let max_delay = generator.config().max_delay;
    let events = env.source(generator).with_watermarks("ts", max_delay);
    fraud_pipeline(events, rules, |window_alerts, spike_alerts| {
        if let Some(dir) = output {
            window_alerts.sink(TransactionalCsvSink::new(dir, "window-alerts"));
            spike_alerts.sink(TransactionalCsvSink::new(dir, "spike-alerts"));
        }
    })
}

/// The fraud rules over `events` (transactions with event time `ts`); `sinks` gets the
/// window alerts and the spike alerts to send them on (both are also collected).
pub(crate) fn fraud_pipeline(
    events: Stream,
    rules: &FraudRules,
    sinks: impl FnOnce(Stream, Stream),
) -> Result<FraudOutputs> {
    let keyed = events
        // Chained stateless operators: drop malformed amounts, keep what the rules read.
        .filter(|b| {
            let amount = b.column_by_name("amount").ok_or("no amount column")?;
            Ok(gt(
                amount.as_primitive::<Int64Type>(),
                &Int64Array::new_scalar(0),
            )?)
        })
        .select(&["txn_id", "account", "merchant", "amount", "ts"])
        .key_by(&["account"]);

    let windows = keyed
        .clone()
        .window(TumblingWindow::of(rules.window))
        .aggregate([
            Aggregate::sum("amount").alias("total"),
            Aggregate::count().alias("txns"),
            Aggregate::max("amount").alias("max_amount"),
        ]);
    let all_windows = rules.collect_all_windows.then(|| windows.clone().collect());
    let threshold = rules.threshold_cents;
    let window_alerts = windows.filter(move |b| {
        let total = b.column_by_name("total").ok_or("no total column")?;
        Ok(gt(
            total.as_primitive::<Int64Type>(),
            &Int64Array::new_scalar(threshold),
        )?)
    });
    let spike_alerts = keyed.process(SpikeDetector::new(rules.spike_factor, rules.min_history));
    sinks(window_alerts.clone(), spike_alerts.clone());
    let window_alerts = window_alerts.collect();
    let spike_alerts = spike_alerts.collect();
    Ok(FraudOutputs {
        window_alerts,
        spike_alerts,
        all_windows,
    })
}
