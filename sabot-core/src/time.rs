//! Event-time timestamps.

use std::fmt;
use std::time::Duration;

/// An event-time instant: milliseconds since the Unix epoch.
///
/// [`Timestamp::MIN`] is "no watermark yet" and [`Timestamp::MAX`] is "end of time"
/// (what an input that reached end of stream contributes to a combined watermark).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The smallest timestamp: no event time has been observed.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The largest timestamp: all event time has passed.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// This timestamp moved forward by `d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// This timestamp moved back by `d`, saturating at [`Timestamp::MIN`].
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Timestamp::MIN => f.write_str("Timestamp(MIN)"),
            Timestamp::MAX => f.write_str("Timestamp(MAX)"),
            Timestamp(ms) => write!(f, "Timestamp({ms}ms)"),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Timestamp::MIN => f.write_str("-inf"),
            Timestamp::MAX => f.write_str("+inf"),
            Timestamp(ms) => write!(f, "{ms}ms"),
        }
    }
}

impl From<i64> for Timestamp {
    fn from(ms: i64) -> Self {
        Timestamp(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_arithmetic_stays_in_range() {
        assert_eq!(
            Timestamp::MAX.saturating_add(Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            Timestamp::MIN.saturating_sub(Duration::from_secs(1)),
            Timestamp::MIN
        );
        assert_eq!(
            Timestamp::from_millis(1_000).saturating_sub(Duration::from_millis(250)),
            Timestamp::from_millis(750)
        );
    }
}
