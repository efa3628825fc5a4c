use sabot_core::CoreError;
use sabot_core::arrow::error::ArrowError;

/// Result alias for `sabot-shuffle`.
pub type Result<T, E = ShuffleError> = std::result::Result<T, E>;

/// Errors raised by `sabot-shuffle`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShuffleError {
    /// Hashing keys or validating columns failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Range bounds that do not increase strictly.
    #[error("{0}")]
    InvalidBounds(String),
    /// An Arrow kernel failed while splitting a batch.
    #[error("arrow error while partitioning: {0}")]
    Arrow(#[from] ArrowError),
}
