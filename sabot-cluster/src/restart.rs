//! Restart strategies: how long a failed job waits before its next attempt, and when it
//! gives up (Flink's `fixed-delay` and `exponential-delay` strategies).

use std::time::Duration;

/// When and how often a failed job is restarted.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// Never: the first failure fails the job.
    None,
    /// Up to `attempts` restarts, each after `delay`.
    FixedDelay {
        /// Restarts allowed over the job's life.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restarts after a delay that starts at `initial` and grows by `multiplier` per
    /// failure up to `max`; a run that stays up for `reset_after` brings the delay back to
    /// `initial` and the failure count to 0. Up to `attempts` restarts in a row (counted
    /// since the last reset).
    ExponentialDelay {
        /// The first delay.
        initial: Duration,
        /// The largest delay.
        max: Duration,
        /// Growth per failure (at least 1).
        multiplier: f64,
        /// A run this long resets the delay and the count.
        reset_after: Duration,
        /// Restarts allowed in a row.
        attempts: u32,
    },
}

impl RestartStrategy {
    /// Up to `attempts` restarts, each after `delay`.
    pub fn fixed_delay(attempts: u32, delay: Duration) -> Self {
        RestartStrategy::FixedDelay { attempts, delay }
    }

    /// Flink's defaults for the exponential delay: 1 s doubling up to 5 min, reset after
    /// an hour up, with at most `attempts` restarts in a row.
    pub fn exponential_delay(attempts: u32) -> Self {
        RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            reset_after: Duration::from_secs(3600),
            attempts,
        }
    }
}

/// A restart strategy's count of failures so far.
#[derive(Clone, Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    /// Restarts counted against the strategy's limit.
    restarts: u32,
    /// Restarts over the job's life (for status).
    total: u32,
    /// The next delay of the exponential strategy.
    backoff: Duration,
}

impl RestartTracker {
    /// A job that has not failed yet.
    pub fn new(strategy: RestartStrategy) -> Self {
        let backoff = match &strategy {
            RestartStrategy::ExponentialDelay { initial, .. } => *initial,
            _ => Duration::ZERO,
        };
        RestartTracker {
            strategy,
            restarts: 0,
            total: 0,
            backoff,
        }
    }

    /// Restarts so far, over the job's life.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The job failed after running for `up` (since its last deployment): the wait
    /// before the next attempt, or `None` when the strategy allows no more.
    pub fn on_failure(&mut self, up: Duration) -> Option<Duration> {
        let delay = match &self.strategy {
            RestartStrategy::None => return None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.restarts >= *attempts {
                    return None;
                }
                *delay
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
                attempts,
            } => {
                if up >= *reset_after {
                    self.restarts = 0;
                    self.backoff = *initial;
                }
                if self.restarts >= *attempts {
                    return None;
                }
                let delay = self.backoff.min(*max);
                self.backoff = delay.mul_f64(multiplier.max(1.0)).min(*max);
                delay
            }
        };
        self.restarts += 1;
        self.total += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_allows_its_attempts_then_none() {
        let mut t = RestartTracker::new(RestartStrategy::fixed_delay(2, Duration::from_secs(3)));
        assert_eq!(t.on_failure(Duration::ZERO), Some(Duration::from_secs(3)));
        assert_eq!(
            t.on_failure(Duration::from_secs(9999)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(t.on_failure(Duration::ZERO), None);
        assert_eq!(t.total(), 2);
        let mut none = RestartTracker::new(RestartStrategy::None);
        assert_eq!(none.on_failure(Duration::ZERO), None);
    }

    #[test]
    fn exponential_delay_grows_to_its_maximum_and_resets_after_a_stable_run() {
        let s = RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            multiplier: 2.0,
            reset_after: Duration::from_secs(60),
            attempts: 5,
        };
        let mut t = RestartTracker::new(s);
        let short = Duration::from_secs(1);
        let delays: Vec<u128> = (0..5)
            .map(|_| t.on_failure(short).unwrap().as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(t.on_failure(short), None, "five in a row is the limit");
        // A long run resets the count and the delay.
        assert_eq!(
            t.on_failure(Duration::from_secs(61)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(t.total(), 6);
    }
}
