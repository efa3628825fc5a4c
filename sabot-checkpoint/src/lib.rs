//! Barrier checkpoints and exactly-once recovery for the Sabot stream processor.
//!
//! **Status:** this crate is reserved in the workspace; its contents arrive with issue 6
//! (`BarrierAligner`, `CheckpointCoordinator`, checkpoint storage with fsynced files and
//! atomically published manifests, recovery). The barrier itself,
//! [`sabot_core::CheckpointBarrier`], already flows in [`sabot_core::Message`].
//!
//! ```
//! let _ = sabot_checkpoint::CheckpointError::Unsupported { what: "checkpoints" };
//! ```

mod aligner;
mod coordinator;
pub mod storage;

pub use aligner::{AbortReason, Aligned, BarrierAligner, CheckpointingMode, Input};
pub use coordinator::{AbortCause, CheckpointCoordinator, Command, CoordinatorConfig};

/// Result alias for `sabot-checkpoint`.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Errors raised by `sabot-checkpoint`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The operation is not available in this version.
    #[error("{what} are not supported by this version of sabot-checkpoint")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
    /// An error from `sabot-core`.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),
    /// A file operation on checkpoint storage failed.
    #[error("checkpoint I/O failed at {path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A manifest (or a file it lists) that is damaged, incomplete or inconsistent.
    #[error("bad checkpoint at {path}: {reason}")]
    BadManifest {
        /// The manifest or file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A message to the coordinator that breaks the protocol (unknown task, twice).
    #[error("checkpoint protocol violated: {reason}")]
    Protocol {
        /// What is wrong.
        reason: String,
    },
    /// A barrier or message that breaks the protocol (out of order, after the end).
    #[error("barrier protocol violated on input {input}: {reason}")]
    Barrier {
        /// The task input it came from.
        input: usize,
        /// What is wrong.
        reason: String,
    },
}
