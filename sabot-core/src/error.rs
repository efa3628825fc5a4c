//! The core error type.

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// Result alias for `sabot-core`.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors raised by `sabot-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// An Arrow kernel or constructor failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),

    /// A column named by the user is not in the schema.
    #[error("column `{name}` not found; available columns: {available:?}")]
    ColumnNotFound {
        /// The missing column.
        name: String,
        /// The columns the schema does have.
        available: Vec<String>,
    },

    /// A key column has a type that cannot be hashed to a key group.
    #[error(
        "key column `{column}` has type {data_type}, which cannot be used as a key \
         (supported: integers, booleans, dates, timestamps, Utf8, LargeUtf8, Binary, LargeBinary)"
    )]
    UnsupportedKeyType {
        /// The offending column.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
    },

    /// A column has a type the operation does not accept.
    #[error("column `{column}` has type {actual}, expected {expected}")]
    InvalidColumnType {
        /// The offending column.
        column: String,
        /// What the operation accepts, in words.
        expected: String,
        /// The type the column has.
        actual: DataType,
    },

    /// A parallelism setting is out of range.
    #[error(
        "invalid parallelism {parallelism}: must be between 1 and max parallelism {max_parallelism}"
    )]
    InvalidParallelism {
        /// The requested parallelism.
        parallelism: usize,
        /// The number of key groups.
        max_parallelism: usize,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration `{name}`: {reason}")]
    InvalidConfig {
        /// The setting.
        name: String,
        /// Why it is rejected.
        reason: String,
    },
}
