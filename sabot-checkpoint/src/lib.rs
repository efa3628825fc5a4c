//! Barrier checkpoints for the Sabot stream processor (Chandy-Lamport asynchronous
//! barrier snapshots, as in Flink).
//!
//! - [`BarrierAligner`]: a task's barrier alignment over its inputs, exactly-once or
//!   at-least-once, as a pure state machine.
//! - [`CheckpointCoordinator`]: when to trigger, complete, abort and discard checkpoints,
//!   as a pure state machine.
//! - [`Inbox`] and [`Control`]: what the coordinator tells a running task (a barrier to
//!   inject, a checkpoint completed, cancel), as messages a task takes or waits on.
//! - [`CheckpointLayout`] and [`JobMeta`]: the names of a job's files in a checkpoint,
//!   and what it records with one (typed, with the graph's fingerprint).
//! - [`storage`]: checkpoints in a [`Store`](storage::Store) (a local folder first),
//!   published by an atomically written, checksummed manifest; operators write through
//!   a [`SnapshotTarget`](storage::SnapshotTarget).
//!
//! `sabot-runtime` drives them: sources inject barriers and record their positions,
//! operators snapshot their state when the aligned barrier passes, sinks pre-commit.
//!
//! ```
//! use sabot_checkpoint::{Aligned, BarrierAligner, CheckpointingMode, Input};
//! use sabot_core::{CheckpointBarrier, CheckpointId, Timestamp};
//!
//! let b = CheckpointBarrier { id: CheckpointId(1), triggered_at: Timestamp::from_millis(0) };
//! let mut a = BarrierAligner::new(2, CheckpointingMode::ExactlyOnce, 100);
//! a.push(0, Input::Barrier(b)).unwrap();
//! a.push(0, Input::Message("after the barrier")).unwrap(); // held back
//! a.push(1, Input::Barrier(b)).unwrap();
//! assert_eq!(a.next_action(), Some(Aligned::Checkpoint(b)));
//! assert_eq!(a.next_action(), Some(Aligned::Message(0, "after the barrier")));
//! ```

mod aligner;
mod control;
mod coordinator;
mod layout;
pub mod storage;
mod sync;

pub use aligner::{AbortReason, Aligned, BarrierAligner, CheckpointingMode, Input};
pub use control::{Control, Inbox};
pub use coordinator::{AbortCause, CheckpointCoordinator, Command, CoordinatorConfig};
pub use layout::{CheckpointLayout, GraphFingerprint, JobMeta};

/// Result alias for `sabot-checkpoint`.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Errors raised by `sabot-checkpoint`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// An error from `sabot-core`.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),
    /// A file operation on checkpoint storage failed.
    #[error("checkpoint I/O failed at {path}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file of a checkpoint that is not there.
    #[error("checkpoint file {path} is missing")]
    Missing {
        /// Where it should be.
        path: std::path::PathBuf,
    },
    /// A manifest (or a file it lists) that is damaged, incomplete or inconsistent.
    #[error("bad checkpoint at {path}: {reason}")]
    BadManifest {
        /// The manifest or file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The newest published checkpoint is damaged (its cause names the file and what is
    /// wrong). A job does not continue from an older checkpoint on its own: that would
    /// produce again, and commit a second time, the output committed after it.
    #[error(
        "the newest checkpoint, {}, in {} is damaged; continuing from an older one would repeat output committed after it. Repair or restore the damaged file; or {}; or start afresh with another checkpoint folder",
        checkpoint.0,
        folder.display(),
        match older {
            Some(o) => format!("continue from checkpoint {} explicitly (the CLI's --restore-from {}) once the output committed after it is removed", o.0, o.0),
            None => "remove the output it committed (no older intact checkpoint is left)".to_string(),
        }
    )]
    Damaged {
        /// The damaged checkpoint.
        checkpoint: sabot_core::CheckpointId,
        /// The checkpoint folder.
        folder: std::path::PathBuf,
        /// The newest intact checkpoint before it, if any.
        older: Option<sabot_core::CheckpointId>,
        /// What is damaged.
        #[source]
        cause: Box<CheckpointError>,
    },
    /// A checkpoint this job cannot continue from (another graph, another max
    /// parallelism).
    #[error("checkpoint {} in {} cannot be restored by this job: {reason}", checkpoint.0, folder.display())]
    Incompatible {
        /// The checkpoint.
        checkpoint: sabot_core::CheckpointId,
        /// The checkpoint folder.
        folder: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process runs on the checkpoint folder.
    #[error(
        "the checkpoint folder {} is in use by another process ({}); two jobs on one folder would overwrite each other's checkpoints",
        folder.display(),
        if holder.is_empty() { "unknown pid" } else { holder.as_str() }
    )]
    Locked {
        /// The checkpoint folder.
        folder: std::path::PathBuf,
        /// What the lock file says of its holder (`pid N`).
        holder: String,
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
