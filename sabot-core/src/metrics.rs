//! Named counters shared between the engine and whoever watches it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A monotonically increasing counter; clones share the value.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sub-buckets per power of two: values are kept within 1/16 (6.25%) of their size.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = 64 * SUB;

/// The bucket of `v`: values below 16 exactly, larger ones by their top 5 bits.
fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) as usize & (SUB - 1);
    (e - SUB_BITS + 1) as usize * SUB + sub
}

/// The largest value of bucket `i`.
fn bucket_max(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    let low = (SUB as u64 + sub) << (e - SUB_BITS);
    low.saturating_add((1u64 << (e - SUB_BITS)) - 1)
}

/// A histogram of non-negative values (latencies in microseconds, say) in log-linear
/// buckets: a quantile is reported as its bucket's upper end, at most 6.25% above the
/// true value. Recording is one relaxed atomic add; clones share the buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<[AtomicU64]>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram((0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Histogram {
    /// Records `v`.
    #[inline]
    pub fn record(&self, v: u64) {
        self.0[bucket_of(v)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// The counts of a [`Histogram`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: Vec<u64>,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0.0..=1.0), as the upper end of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_max(i));
            }
        }
        None
    }
}

/// A registry of named counters and histograms. Asking twice for a name gives the same
/// one.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<String, Counter>>>,
    histograms: Arc<Mutex<BTreeMap<String, Histogram>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter called `name`, created at zero on first use.
    pub fn counter(&self, name: &str) -> Counter {
        let mut map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned()).or_default().clone()
    }

    /// The value of `name`, 0 if it was never created.
    pub fn value(&self, name: &str) -> u64 {
        let map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(name).map_or(0, Counter::get)
    }

    /// Every counter and its value, by name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.get())).collect()
    }

    /// The histogram called `name`, created empty on first use.
    pub fn histogram(&self, name: &str) -> Histogram {
        let mut map = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned()).or_default().clone()
    }

    /// Every histogram's counts, by name.
    pub fn histograms(&self) -> BTreeMap<String, HistogramSnapshot> {
        let map = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_shares_one_counter() {
        let m = Metrics::new();
        m.counter("a").add(2);
        m.clone().counter("a").add(3);
        assert_eq!(m.value("a"), 5);
        assert_eq!(m.value("b"), 0);
        assert_eq!(m.snapshot().len(), 1);
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let max = bucket_max(i);
            assert!(i == 0 || max > last, "bucket {i}");
            assert_eq!(bucket_of(max), i, "bucket {i}'s largest value");
            if i > 0 {
                assert_eq!(bucket_of(last + 1), i, "bucket {i}'s smallest value");
            }
            last = max;
            if max == u64::MAX {
                break;
            }
        }
        assert_eq!(last, u64::MAX);
    }

    proptest::proptest! {
        #[test]
        fn quantiles_are_within_a_sixteenth_of_the_exact_ones(
            mut values in proptest::collection::vec(0u64..10_000_000, 1..500),
            q in 0.0f64..=1.0,
        ) {
            let h = Metrics::new().histogram("h");
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let got = h.snapshot().quantile(q).unwrap();
            proptest::prop_assert!(got >= exact && got <= exact + exact / 16, "{got} vs {exact}");
        }
    }
}
