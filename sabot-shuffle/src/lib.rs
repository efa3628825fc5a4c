//! Moving batches between subtasks for the Sabot stream processor.
//!
//! - [`queue`]: bounded queues; a full queue blocks the producer (backpressure).
//! - [`HashPartitioner`]: splits a batch by key group into one batch per downstream
//!   subtask, with Arrow's `take` kernel. [`RoundRobinPartitioner`] rotates whole batches.
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
//! Lock-free SPSC/MPSC rings and the Arrow Flight exchange between processes arrive with
//! issue 5, behind the same API.

mod error;
mod partition;
pub mod queue;

pub use error::{Result, ShuffleError};
pub use partition::{HashPartitioner, RoundRobinPartitioner};
