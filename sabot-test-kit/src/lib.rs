//! Test infrastructure shared by Sabot's crates (not published): seeded Arrow batches
//! and helpers, and a real Kafka-compatible broker ([`kafka::Broker`]) started for a test.
//!
//! ```
//! use sabot_test_kit::{keyed_batches, keyed_schema};
//!
//! let batches = keyed_batches(7, 1_000, 100, 10, 1, 50);
//! assert_eq!(batches[0].schema(), keyed_schema());
//! ```

mod batches;
pub mod kafka;

pub use batches::{int64_batch, keyed_batches, keyed_schema, row_strings, seed_from_env};
