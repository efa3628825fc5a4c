//! Core types of the Sabot stream processor, shared by every other crate.
//!
//! - [`Message`]: what flows between operators: [`RecordBatch`]es, watermarks, checkpoint
//!   barriers, idle markers and end of stream.
//! - [`Timestamp`], [`CheckpointId`], [`CheckpointBarrier`]: time and ids.
//! - [`key`]: the stable key hash, [`KeyGroup`]s and [`KeyGroupRange`]s that decide which
//!   subtask owns a key.
//! - [`CoreError`]: the error type; lower-level errors of other crates wrap it.
//! - [`metrics`]: named counters; [`random`]: counter-based random numbers.
//! - Arrow re-exports ([`arrow`]), so that every crate speaks one Arrow version.
//!
//! ```
//! use std::sync::Arc;
//! use sabot_core::arrow::array::{ArrayRef, Int64Array};
//! use sabot_core::key::{hash_columns, KeyGroup, KeyGroupRange};
//!
//! let accounts: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 1]));
//! let mut hashes = Vec::new();
//! hash_columns(&[accounts], &mut hashes).unwrap();
//! assert_eq!(hashes[0], hashes[3]); // same key, same hash
//!
//! // 128 key groups over 4 subtasks: each key has exactly one owner.
//! let kg = KeyGroup::of_hash(hashes[0], 128);
//! let owner = kg.subtask(128, 4);
//! assert!(KeyGroupRange::for_subtask(128, 4, owner).contains(kg));
//! ```

pub use arrow;
pub use arrow::array::ArrayRef;
pub use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
pub use arrow::record_batch::RecordBatch;

pub mod codec;
mod error;
pub mod hint;
mod ids;
pub mod key;
mod message;
pub mod metrics;
pub mod random;
mod time;

pub use error::{CoreError, ErrorChain, Result};
pub use ids::{CheckpointBarrier, CheckpointId};
pub use key::{KeyGroup, KeyGroupRange};
pub use message::{Message, wall_clock_micros};
pub use time::{Timestamp, duration_millis};

/// What to do with a record that cannot be processed (a null event time, a malformed
/// message): stop the job with an error that says where, or count it and go on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BadRecordPolicy {
    /// Stop the job with an error naming the record's position.
    #[default]
    Fail,
    /// Drop the record and count it in a metric.
    Drop,
}

/// Looks up a column by name, with an error that lists the columns that do exist.
pub fn column_index(schema: &Schema, name: &str) -> Result<usize> {
    schema
        .index_of(name)
        .map_err(|_| CoreError::ColumnNotFound {
            name: name.to_owned(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Message>();
        check::<CoreError>();
        check::<metrics::Metrics>();
        check::<KeyGroupRange>();
    }

    #[test]
    fn missing_column_error_names_the_alternatives() {
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, false)]);
        let err = column_index(&schema, "b").unwrap_err().to_string();
        assert!(err.contains("`b`") && err.contains("\"a\""), "{err}");
    }
}
