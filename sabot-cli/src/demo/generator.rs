//! A seeded generator of card transactions.

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{ArrayRef, Int64Array, StringArray};
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::random::SplitMix64;
use sabot_core::{CoreError, RecordBatch, SchemaRef, duration_millis};
use sabot_operators::{ChunkCursor, Source, SourceFactory, SourcePoll, TaskContext};

/// Event time of the first transaction: 2023-11-14T22:13:20Z.
pub const BASE_TIME_MS: i64 = 1_700_000_000_000;

const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "JP", "BR", "IN", "NG"];

/// Settings of the [`TransactionGenerator`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GeneratorConfig {
    /// Total transactions over all subtasks.
    pub events: u64,
    /// Seed: the same seed gives the same transactions.
    pub seed: u64,
    /// Distinct card accounts.
    pub accounts: u64,
    /// Transactions per second of event time.
    pub rate: u64,
    /// Transactions per batch.
    pub batch_size: usize,
    /// Largest delay of a transaction behind its place in the stream (out-of-orderness).
    pub max_delay: Duration,
    /// One transaction in `spike_one_in` is a fraud-like spike, 20-50x the account's usual
    /// amount.
    pub spike_one_in: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            events: 5_000_000,
            seed: 42,
            accounts: 100_000,
            rate: 10_000,
            batch_size: 8_192,
            max_delay: Duration::from_secs(2),
            spike_one_in: 2_000,
        }
    }
}

impl GeneratorConfig {
    /// Checks the settings, naming the one that is out of range.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |name: &str, reason: &str| {
            Err(CoreError::InvalidConfig {
                name: name.into(),
                reason: reason.into(),
            })
        };
        if self.accounts == 0 {
            return bad("accounts", "must be at least 1");
        }
        if self.rate == 0 {
            return bad("rate", "must be at least 1 transaction per second");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.spike_one_in == 0 {
            return bad("spike_one_in", "must be at least 1");
        }
        Ok(())
    }
}

/// Card transactions (`txn_id`, `account`, `merchant`, `amount` in cents, `country`,
/// `ts` in ms), reproducible from a seed: transaction `n` depends only on `(seed, n)`.
///
/// The stream is cut into chunks of `batch_size` transactions; source subtask `s` of `P`
/// emits chunks `s, s + P, s + 2P, ...`, so every subtask advances through event time at
/// the same pace. A transaction's event time is its place in the stream minus a random
/// delay of at most `max_delay`, so watermarks trailing by `max_delay` see no late record.
#[derive(Clone, Debug)]
pub struct TransactionGenerator {
    config: GeneratorConfig,
    schema: SchemaRef,
}

impl TransactionGenerator {
    /// A generator with these settings (see [`GeneratorConfig::validate`]).
    pub fn new(config: GeneratorConfig) -> Result<Self, CoreError> {
        config.validate()?;
        Ok(TransactionGenerator {
            config,
            schema: Arc::new(Schema::new(vec![
                Field::new("txn_id", DataType::Int64, false),
                Field::new("account", DataType::Int64, false),
                Field::new("merchant", DataType::Int64, false),
                Field::new("amount", DataType::Int64, false),
                Field::new("country", DataType::Utf8, false),
                Field::new("ts", DataType::Int64, false),
            ])),
        })
    }

    /// The settings.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Transactions `start..end` as one batch.
    pub fn batch(&self, start: u64, end: u64) -> Result<RecordBatch, CoreError> {
        let c = &self.config;
        let n = (end.saturating_sub(start)) as usize;
        let (mut id, mut acc, mut mer, mut amt, mut ts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut country = Vec::with_capacity(n);
        let delay = duration_millis(c.max_delay).max(0) as u64;
        for e in start..end {
            let mut r = SplitMix64::new(c.seed, e);
            let account = 1 + r.below(c.accounts);
            // Every account has its own usual spend: 5 to 200 dollars.
            let mut profile = SplitMix64::new(c.seed ^ 0x0ACC_00A7, account);
            let usual = 500 + profile.below(19_500) as i64;
            let home = profile.below(COUNTRIES.len() as u64) as usize;
            let u = r.next_f64();
            let amount = if r.below(c.spike_one_in) == 0 {
                usual * 20 + (usual as f64 * 30.0 * u) as i64
            } else {
                (usual as f64 * (0.2 + 1.6 * u)) as i64 + 1
            };
            let abroad = r.below(50) == 0;
            let cty = if abroad {
                r.below(COUNTRIES.len() as u64) as usize
            } else {
                home
            };
            let place = BASE_TIME_MS + (u128::from(e) * 1000 / u128::from(c.rate)) as i64;
            id.push(e as i64);
            acc.push(account as i64);
            mer.push(r.below(5_000) as i64);
            amt.push(amount);
            country.push(COUNTRIES[cty]);
            ts.push(place - r.below(delay + 1) as i64);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(Int64Array::from(acc)),
            Arc::new(Int64Array::from(mer)),
            Arc::new(Int64Array::from(amt)),
            Arc::new(StringArray::from(country)),
            Arc::new(Int64Array::from(ts)),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    /// Every transaction, in batches, as one subtask would see them all: for tests that
    /// recompute results independently.
    pub fn all_batches(&self) -> Result<Vec<RecordBatch>, CoreError> {
        let b = self.config.batch_size as u64;
        (0..self.config.events)
            .step_by(b as usize)
            .map(|s| self.batch(s, (s + b).min(self.config.events)))
            .collect()
    }
}

impl SourceFactory for TransactionGenerator {
    fn name(&self) -> String {
        "transactions".into()
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn create(&self, ctx: &TaskContext) -> sabot_operators::Result<Box<dyn Source>> {
        Ok(Box::new(GeneratorSubtask {
            generator: self.clone(),
            cursor: ChunkCursor::new(ctx.subtask, ctx.parallelism),
        }))
    }
}

struct GeneratorSubtask {
    generator: TransactionGenerator,
    cursor: ChunkCursor,
}

impl Source for GeneratorSubtask {
    fn poll_next(&mut self) -> sabot_operators::Result<SourcePoll> {
        let c = &self.generator.config;
        let b = c.batch_size as u64;
        let start = self.cursor.next_chunk().saturating_mul(b);
        if start >= c.events {
            return Ok(SourcePoll::End);
        }
        Ok(SourcePoll::Batch(
            self.generator.batch(start, (start + b).min(c.events))?,
        ))
    }

    fn position(&mut self) -> sabot_operators::Result<Option<Vec<u8>>> {
        Ok(Some(self.cursor.position()))
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> sabot_operators::Result<()> {
        self.cursor.restore(positions).map_err(|reason| {
            sabot_operators::OperatorError::InvalidPlan {
                operator: "transactions".into(),
                reason,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_transactions() {
        let g = TransactionGenerator::new(GeneratorConfig::default()).unwrap();
        assert_eq!(g.batch(100, 200).unwrap(), g.batch(100, 200).unwrap());
        let other = GeneratorConfig {
            seed: 7,
            ..GeneratorConfig::default()
        };
        let h = TransactionGenerator::new(other).unwrap();
        assert_ne!(g.batch(100, 200).unwrap(), h.batch(100, 200).unwrap());
    }

    #[test]
    fn bad_settings_are_named() {
        let c = GeneratorConfig {
            rate: 0,
            ..GeneratorConfig::default()
        };
        let err = TransactionGenerator::new(c).unwrap_err().to_string();
        assert!(err.contains("rate"), "{err}");
    }
}
