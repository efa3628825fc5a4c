//! Watermark generation at sources, per partition.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::{RecordBatch, Timestamp, duration_millis};

/// A user function deriving a watermark from a batch and its event times (ms, same order
/// as the rows): `None` when the batch carries no watermark.
pub type PunctuatedFn = dyn Fn(&RecordBatch, &[i64]) -> Option<Timestamp> + Send + Sync;

/// How a source partition derives watermarks from the event times it reads.
#[derive(Clone)]
#[non_exhaustive]
pub enum WatermarkStrategy {
    /// Records at most `bound` out of order: the watermark is `max_seen - bound - 1`, as
    /// in Flink, so a record exactly `bound` behind the newest is still on time.
    BoundedOutOfOrderness(Duration),
    /// Event time never decreases within a partition: `max_seen - 1`.
    Monotonic,
    /// A user function over each batch decides (e.g. a marker row in the data).
    Punctuated(Arc<PunctuatedFn>),
}

impl WatermarkStrategy {
    /// Bounded out-of-orderness by `bound`.
    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        WatermarkStrategy::BoundedOutOfOrderness(bound)
    }

    /// Punctuated watermarks from `f`.
    pub fn punctuated(
        f: impl Fn(&RecordBatch, &[i64]) -> Option<Timestamp> + Send + Sync + 'static,
    ) -> Self {
        WatermarkStrategy::Punctuated(Arc::new(f))
    }
}

impl fmt::Debug for WatermarkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatermarkStrategy::BoundedOutOfOrderness(d) => {
                write!(f, "BoundedOutOfOrderness({d:?})")
            }
            WatermarkStrategy::Monotonic => f.write_str("Monotonic"),
            WatermarkStrategy::Punctuated(_) => f.write_str("Punctuated(..)"),
        }
    }
}

/// Generates the watermarks of one source partition.
///
/// Watermarks never go backwards. Without an emit interval, a new watermark is emitted
/// after every batch that advances it; with one, at most once per interval of processing
/// time (the latest value is kept and emitted by a later batch or
/// [`on_tick`](Self::on_tick)). A pure state machine: processing time is passed in.
///
/// ```
/// use std::time::Duration;
/// use sabot_core::Timestamp;
/// use sabot_test_kit::int64_batch;
/// use sabot_time::{WatermarkGenerator, WatermarkStrategy};
///
/// let mut g = WatermarkGenerator::new(
///     WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100)),
///     None,
/// );
/// let batch = int64_batch(&[("ts", vec![1_000, 950])]);
/// assert_eq!(g.on_batch(&batch, &[1_000, 950], 0), Some(Timestamp::from_millis(899)));
/// ```
#[derive(Clone, Debug)]
pub struct WatermarkGenerator {
    strategy: WatermarkStrategy,
    interval_ms: Option<i64>,
    /// Best watermark known so far.
    current: Timestamp,
    /// Last watermark emitted.
    emitted: Timestamp,
    last_emit_ms: Option<i64>,
}

impl WatermarkGenerator {
    /// A generator with `strategy`, emitting at most every `emit_interval` (`None`: after
    /// every batch).
    pub fn new(strategy: WatermarkStrategy, emit_interval: Option<Duration>) -> Self {
        WatermarkGenerator {
            strategy,
            interval_ms: emit_interval.map(duration_millis).filter(|&ms| ms > 0),
            current: Timestamp::MIN,
            emitted: Timestamp::MIN,
            last_emit_ms: None,
        }
    }

    /// The best watermark known so far (emitted or not).
    pub fn current(&self) -> Timestamp {
        self.current
    }

    /// Observes a batch with event times `times` (non-null, one per row) at processing
    /// time `now`; returns a watermark to emit, if any.
    pub fn on_batch(&mut self, batch: &RecordBatch, times: &[i64], now: i64) -> Option<Timestamp> {
        let candidate = match &self.strategy {
            WatermarkStrategy::BoundedOutOfOrderness(bound) => times.iter().max().map(|&m| {
                Timestamp::from_millis(m.saturating_sub(duration_millis(*bound)).saturating_sub(1))
            }),
            WatermarkStrategy::Monotonic => times
                .iter()
                .max()
                .map(|&m| Timestamp::from_millis(m.saturating_sub(1))),
            WatermarkStrategy::Punctuated(f) => f(batch, times),
        };
        if let Some(c) = candidate {
            self.current = self.current.max(c);
        }
        self.on_tick(now)
    }

    /// Processing time moved to `now`: emits the pending watermark if one is due.
    pub fn on_tick(&mut self, now: i64) -> Option<Timestamp> {
        if self.current <= self.emitted {
            return None;
        }
        if let (Some(interval), Some(last)) = (self.interval_ms, self.last_emit_ms)
            && now.saturating_sub(last) < interval
        {
            return None;
        }
        self.emitted = self.current;
        self.last_emit_ms = Some(now);
        Some(self.current)
    }
}

#[cfg(test)]
mod tests {
    use sabot_test_kit::int64_batch;

    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn feed(g: &mut WatermarkGenerator, times: &[i64], now: i64) -> Option<Timestamp> {
        let b = int64_batch(&[("ts", times.to_vec())]);
        g.on_batch(&b, times, now)
    }

    #[test]
    fn bounded_out_of_orderness_never_goes_back() {
        let mut g = WatermarkGenerator::new(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10)),
            None,
        );
        assert_eq!(feed(&mut g, &[100, 50], 0), Some(ts(89)));
        assert_eq!(feed(&mut g, &[60], 0), None);
        assert_eq!(feed(&mut g, &[], 0), None);
        assert_eq!(feed(&mut g, &[101], 0), Some(ts(90)));
    }

    #[test]
    fn monotonic_trails_by_one_millisecond() {
        let mut g = WatermarkGenerator::new(WatermarkStrategy::Monotonic, None);
        assert_eq!(feed(&mut g, &[5, 7], 0), Some(ts(6)));
    }

    #[test]
    fn punctuated_uses_the_user_function_and_stays_monotonic() {
        // A row with time divisible by 100 is a marker.
        let mut g = WatermarkGenerator::new(
            WatermarkStrategy::punctuated(|_, times| {
                times
                    .iter()
                    .filter(|t| *t % 100 == 0)
                    .max()
                    .map(|&t| Timestamp::from_millis(t))
            }),
            None,
        );
        assert_eq!(feed(&mut g, &[150, 160], 0), None);
        assert_eq!(feed(&mut g, &[200, 250], 0), Some(ts(200)));
        assert_eq!(feed(&mut g, &[100], 0), None, "never backwards");
    }

    #[test]
    fn emit_interval_throttles_and_tick_flushes() {
        let mut g = WatermarkGenerator::new(
            WatermarkStrategy::Monotonic,
            Some(Duration::from_millis(50)),
        );
        assert_eq!(feed(&mut g, &[10], 0), Some(ts(9)));
        assert_eq!(feed(&mut g, &[20], 10), None, "too soon");
        assert_eq!(feed(&mut g, &[30], 20), None);
        assert_eq!(g.current(), ts(29));
        assert_eq!(g.on_tick(49), None);
        assert_eq!(g.on_tick(50), Some(ts(29)));
        assert_eq!(g.on_tick(200), None, "nothing new");
    }
}
