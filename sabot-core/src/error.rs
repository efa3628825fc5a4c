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
    #[error(transparent)]
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

/// Displays an error and every cause in its chain, each once, joined by `: ` (as
/// `anyhow`'s `{:#}`). Every Sabot error's own `Display` names only what it adds and
/// leaves its causes to its [`source`](std::error::Error::source), so logs and messages
/// print errors through this.
///
/// ```
/// use sabot_core::ErrorChain;
/// let io = std::io::Error::other("disk full");
/// let e = sabot_core::CoreError::InvalidConfig { name: "x".into(), reason: "y".into() };
/// assert_eq!(ErrorChain(&e).to_string(), "invalid configuration `x`: y");
/// assert_eq!(ErrorChain(&io).to_string(), "disk full");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
