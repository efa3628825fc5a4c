//! What flows between operators.

use arrow::record_batch::RecordBatch;

use crate::{CheckpointBarrier, Timestamp};

/// Everything that travels on a stream. Batches, never single rows, cross a queue.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Message {
    /// A batch of records.
    Data(RecordBatch),
    /// No record with an event time at or before this instant will follow.
    Watermark(Timestamp),
    /// A checkpoint barrier: everything before it belongs to the checkpoint.
    Barrier(CheckpointBarrier),
    /// The sender has nothing to say for now; it must not hold back watermarks.
    Idle,
    /// The sender will send nothing more.
    EndOfStream,
    /// A latency marker (Flink's method): a source emitted it after a batch, stamped with
    /// the wall-clock time (microseconds since the Unix epoch) at which that batch left
    /// the source. It travels behind the batches before it, through every queue and
    /// operator, without waiting in windows; a sink records how old it is.
    LatencyMarker(i64),
}

/// The wall-clock time in microseconds since the Unix epoch, as latency markers carry.
pub fn wall_clock_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Message {
    /// The number of records this message carries (0 for control messages).
    pub fn num_rows(&self) -> usize {
        match self {
            Message::Data(b) => b.num_rows(),
            _ => 0,
        }
    }

    /// Whether this is a control message (anything but data).
    pub fn is_control(&self) -> bool {
        !matches!(self, Message::Data(_))
    }
}
