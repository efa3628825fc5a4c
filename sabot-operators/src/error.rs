use sabot_core::CoreError;
use sabot_core::arrow::datatypes::SchemaRef;
use sabot_core::arrow::error::ArrowError;

/// Result alias for `sabot-operators`.
pub type Result<T, E = OperatorError> = std::result::Result<T, E>;

/// A user function's own error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors raised by operators, sources and sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// A core error: a missing column, an unsupported key type, a bad setting.
    #[error(transparent)]
    Core(#[from] CoreError),

    /// An Arrow kernel failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),

    /// An operator produced batches of a schema other than the one it declared.
    #[error("operator `{operator}` produced schema {actual:?}, but declared {expected:?}")]
    SchemaMismatch {
        /// The operator.
        operator: String,
        /// The declared schema.
        expected: SchemaRef,
        /// The schema of the batch it produced.
        actual: SchemaRef,
    },

    /// The job graph is not valid for this operator.
    #[error("operator `{operator}`: {reason}")]
    InvalidPlan {
        /// The operator.
        operator: String,
        /// What is wrong.
        reason: String,
    },

    /// A record could not be processed and the job's policy is to fail.
    #[error("bad record at {position}: {reason}")]
    BadRecord {
        /// What is wrong with it.
        reason: String,
        /// Where it is (row, batch, subtask; topic, partition and offset for Kafka).
        position: String,
    },

    /// Tracking event time failed.
    #[error(transparent)]
    Time(#[from] sabot_time::TimeError),

    /// Reading or writing state failed.
    #[error(transparent)]
    State(#[from] sabot_state::StateError),

    /// Writing or reading checkpoint storage failed.
    #[error(transparent)]
    Checkpoint(#[from] sabot_checkpoint::CheckpointError),

    /// An operator snapshot could not be written or read back.
    #[error("operator snapshot at {path}: {reason}")]
    Snapshot {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A connector (Kafka, a file system, a database) failed in `operator`.
    #[error("{connector} connector in `{operator}` failed")]
    Connector {
        /// The source or sink.
        operator: String,
        /// The connector (`kafka`, ...).
        connector: &'static str,
        /// The connector's error.
        #[source]
        source: BoxError,
    },

    /// A user function (map, filter, source, sink) failed.
    #[error("user function in `{operator}` failed")]
    User {
        /// The operator that called it.
        operator: String,
        /// The user's error.
        #[source]
        source: BoxError,
    },
}

impl OperatorError {
    /// A job-graph error of `operator`: its settings do not fit its input.
    pub fn invalid_plan(operator: impl Into<String>, reason: impl Into<String>) -> Self {
        OperatorError::InvalidPlan {
            operator: operator.into(),
            reason: reason.into(),
        }
    }

    /// Wraps a user function's error, naming the operator.
    pub fn user(operator: impl Into<String>, source: impl Into<BoxError>) -> Self {
        OperatorError::User {
            operator: operator.into(),
            source: source.into(),
        }
    }
}
