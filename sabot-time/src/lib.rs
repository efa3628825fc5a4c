//! Event time for the Sabot stream processor: watermark generation and tracking, and
//! timers.
//!
//! - [`WatermarkGenerator`] with a [`WatermarkStrategy`] (bounded out-of-orderness,
//!   monotonic, punctuated): the watermarks of one source partition, never going back,
//!   emitted per batch or at most every N ms.
//! - [`WatermarkTracker`]: combines the watermarks of many inputs (minimum over active
//!   inputs; inputs idle for longer than a timeout stop holding it back and rejoin when
//!   they speak; end of stream counts as +infinity; never decreasing).
//! - [`TimerService`]: event-time and processing-time timers per (key, namespace,
//!   timestamp), de-duplicated, deletable, fired in order, snapshotted to bytes by key
//!   group ([`TimerKey`], in `sabot_core::codec`'s encoding) so they can be restored at another parallelism.
//! - [`SharedWatermark`]: a watermark one thread publishes and others read.
//! - [`Clock`]: processing time, from the system ([`SystemClock`]) or driven by tests
//!   ([`ManualClock`]).
//!
//! All but the last are pure state machines: processing time is passed in, nothing reads
//! a clock, so they are property-tested against naive models.
//!
//! ```
//! use std::time::Duration;
//! use sabot_core::Timestamp;
//! use sabot_test_kit::int64_batch;
//! use sabot_time::{WatermarkGenerator, WatermarkStrategy, WatermarkTracker};
//!
//! let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1));
//! let mut partition = WatermarkGenerator::new(strategy, None);
//! let batch = int64_batch(&[("ts", vec![10_000])]);
//! let wm = partition.on_batch(&batch, &[10_000], 0).unwrap();
//! let mut tracker = WatermarkTracker::new(1);
//! assert_eq!(tracker.on_watermark(0, wm, 0).unwrap(), Some(Timestamp::from_millis(8_999)));
//! ```

mod clock;
mod codec;
mod error;
mod generator;
mod shared;
mod sync;
mod timers;
mod tracker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::TimerKey;
pub use error::{Result, TimeError};
pub use generator::{PunctuatedFn, WatermarkGenerator, WatermarkStrategy};
pub use shared::SharedWatermark;
pub use timers::{TimeDomain, Timer, TimerService};
pub use tracker::WatermarkTracker;
