//! Identifiers shared by every layer.

use std::fmt;

use crate::Timestamp;

/// The number of a checkpoint, increasing from 1 within a job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chk-{}", self.0)
    }
}

/// A checkpoint barrier, injected by sources and flowing in-band with the data.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckpointBarrier {
    /// The checkpoint this barrier belongs to.
    pub id: CheckpointId,
    /// Wall-clock time (ms since epoch) at which the checkpoint was triggered.
    pub triggered_at: Timestamp,
}
