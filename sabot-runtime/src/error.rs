use sabot_core::CoreError;
use sabot_operators::OperatorError;
use sabot_shuffle::ShuffleError;
use sabot_time::TimeError;

/// Result alias for `sabot-runtime`.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Errors raised while building or running a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A core error (bad parallelism, missing column, unsupported key type).
    #[error(transparent)]
    Core(#[from] CoreError),

    /// An operator, source or sink failed or was misconfigured.
    #[error(transparent)]
    Operator(#[from] OperatorError),

    /// A watermark tracker rejected a message.
    #[error(transparent)]
    Time(#[from] TimeError),

    /// Partitioning a batch failed.
    #[error(transparent)]
    Shuffle(#[from] ShuffleError),

    /// Taking or restoring a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] sabot_checkpoint::CheckpointError),

    /// The job graph is malformed.
    #[error("invalid job graph: {reason}")]
    InvalidGraph {
        /// What is wrong.
        reason: String,
    },

    /// Building node `node` failed.
    #[error("cannot build `{node}`")]
    Build {
        /// The node (operator, source, sink or exchange) that was rejected.
        node: String,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },

    /// A subtask failed; the job was stopped.
    #[error("subtask {task} failed")]
    Subtask {
        /// The subtask, as `name[index/parallelism]`.
        task: String,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },

    /// A subtask's thread panicked (a bug in an operator or in Sabot).
    #[error("subtask {task} panicked: {message}")]
    Panicked {
        /// The subtask.
        task: String,
        /// The panic message.
        message: String,
    },

    /// A downstream subtask went away (it failed): this subtask stops too.
    #[error("downstream subtask {target} is gone")]
    DownstreamClosed {
        /// The downstream subtask's index.
        target: usize,
    },

    /// Every upstream subtask went away before end of stream (one of them failed).
    #[error("upstream subtasks went away before end of stream")]
    UpstreamLost,

    /// Another subtask failed while this one waited for the end-of-input protocol.
    #[error("stopped: another subtask failed")]
    Cancelled,

    /// The checkpoint taken at the end of input did not complete, so the output since
    /// the last completed checkpoint was not committed; a run on the same checkpoint
    /// folder continues from that one.
    #[error(
        "{reason}: output since the previous checkpoint is not committed; run the job again on the same checkpoint folder to continue"
    )]
    FinalCheckpoint {
        /// What happened to it.
        reason: String,
    },

    /// The OS refused to start a thread.
    #[error("cannot start thread for {task}")]
    Spawn {
        /// The subtask.
        task: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Whether this error is only a consequence of another subtask's failure.
    pub(crate) fn is_secondary(&self) -> bool {
        match self {
            RuntimeError::DownstreamClosed { .. }
            | RuntimeError::UpstreamLost
            | RuntimeError::Cancelled => true,
            RuntimeError::Subtask { source, .. } => source.is_secondary(),
            _ => false,
        }
    }

    pub(crate) fn in_node(self, node: impl Into<String>) -> Self {
        RuntimeError::Build {
            node: node.into(),
            source: Box::new(self),
        }
    }
}
