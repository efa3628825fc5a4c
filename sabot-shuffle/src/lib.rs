//! Moving batches between subtasks for the Sabot stream processor.
//!
//! - [`queue`]: bounded lock-free queues, MPSC ([`queue::bounded`]) and SPSC
//!   ([`queue::spsc`]); a full queue blocks the producer (backpressure), an empty one the
//!   consumer, both sleeping until the other side signals.
//! - [`HashPartitioner`]: splits a batch by key group into one batch per downstream
//!   subtask, with Arrow's `take` kernel; [`BroadcastPartitioner`] sends every batch
//!   everywhere;
//!   [`RoundRobinPartitioner`] rotates whole batches.
//!
//! ```
//! use sabot_shuffle::queue;
//!
//! let (tx, rx) = queue::bounded::<u32>(2);
//! tx.push(1).unwrap();
//! drop(tx);
//! assert_eq!(rx.pop(), Some(1));
//! assert_eq!(rx.pop(), None); // closed and drained
//! ```
//!
//! - `flight` (the `flight` feature, on by default): the network exchange between worker processes over Arrow Flight, with
//!   credit-based flow control and control messages in-band.

mod channel;
mod error;
mod event;
// Loom models build only the queues: the network stack stays out of them.
#[cfg(all(feature = "flight", not(sabot_loom)))]
pub mod flight;
mod partition;
pub mod queue;
mod ring;
mod sync;

pub use error::{Result, ShuffleError};

/// What a receiving subtask gets from a channel: the upstream subtask's index and its
/// message, or the error that ended the channel (peer lost, malformed frame, nobody
/// connected).
pub type Delivery = (
    usize,
    std::result::Result<sabot_core::Message, ShuffleError>,
);
pub use partition::{BroadcastPartitioner, HashPartitioner, RoundRobinPartitioner};
