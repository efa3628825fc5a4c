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

/// The error's chain on one line (as [`sabot_core::ErrorChain`] prints it), after
/// checking that no error in it repeats its cause: each one's message must not contain
/// the message of its source (which the chain prints next).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(src) = err.source() {
            let (outer, inner) = (err.to_string(), src.to_string());
            assert!(
                !inner.is_empty() && !outer.contains(&inner),
                "`{outer}` repeats its cause `{inner}`"
            );
        }
        cur = err.source();
    }
    sabot_core::ErrorChain(e).to_string()
}
