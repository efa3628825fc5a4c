//! Watermark generation at sources.

use std::time::Duration;

use sabot_core::{Timestamp, duration_millis};

/// Bounded out-of-orderness: the watermark trails the largest event time seen by a fixed
/// bound, so records up to `bound` late are still on time. As in Flink, the watermark is
/// `max_seen - bound - 1`, and it never goes back.
///
/// ```
/// use std::time::Duration;
/// use sabot_core::Timestamp;
/// use sabot_time::BoundedOutOfOrderness;
///
/// let mut g = BoundedOutOfOrderness::new(Duration::from_millis(100));
/// assert_eq!(g.observe(1_000), Some(Timestamp::from_millis(899)));
/// assert_eq!(g.observe(950), None); // older: no new watermark
/// ```
#[derive(Clone, Debug)]
pub struct BoundedOutOfOrderness {
    bound_ms: i64,
    max_seen: i64,
}

impl BoundedOutOfOrderness {
    /// A generator for records at most `bound` out of order.
    pub fn new(bound: Duration) -> Self {
        BoundedOutOfOrderness {
            bound_ms: duration_millis(bound),
            max_seen: i64::MIN,
        }
    }

    /// Observes the largest event time of a batch; returns a new watermark if it advanced.
    pub fn observe(&mut self, max_event_time: i64) -> Option<Timestamp> {
        if max_event_time <= self.max_seen {
            return None;
        }
        self.max_seen = max_event_time;
        Some(self.current())
    }

    /// The watermark so far ([`Timestamp::MIN`] before any record).
    pub fn current(&self) -> Timestamp {
        if self.max_seen == i64::MIN {
            Timestamp::MIN
        } else {
            Timestamp::from_millis(
                self.max_seen
                    .saturating_sub(self.bound_ms)
                    .saturating_sub(1),
            )
        }
    }
}
