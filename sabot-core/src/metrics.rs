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

/// A registry of named counters. Asking twice for a name gives the same counter.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<String, Counter>>>,
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
}
