//! Event time for the Sabot stream processor: watermark generation and tracking.
//!
//! - [`BoundedOutOfOrderness`]: the watermark a source partition emits, trailing the
//!   largest event time seen by a bound.
//! - [`WatermarkTracker`]: combines the watermarks of several inputs into one (minimum over
//!   active inputs; idle inputs do not hold it back; end of stream counts as +infinity).
//!
//! Both are pure state machines: time is passed in, nothing reads a clock.
//!
//! ```
//! use std::time::Duration;
//! use sabot_core::Timestamp;
//! use sabot_time::{BoundedOutOfOrderness, WatermarkTracker};
//!
//! let mut partition = BoundedOutOfOrderness::new(Duration::from_secs(1));
//! let wm = partition.observe(10_000).unwrap();
//! let mut tracker = WatermarkTracker::new(1);
//! assert_eq!(tracker.on_watermark(0, wm).unwrap(), Some(Timestamp::from_millis(8_999)));
//! ```

mod error;
mod generator;
mod tracker;

pub use error::{Result, TimeError};
pub use generator::BoundedOutOfOrderness;
pub use tracker::WatermarkTracker;
