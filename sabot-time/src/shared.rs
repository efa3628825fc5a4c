//! A watermark published by one thread and read by others.

use sabot_core::Timestamp;

use crate::sync::{Arc, AtomicI64, Ordering};

/// A subtask's current watermark, shared with observers (progress displays, metrics,
/// other threads). Publishing never moves it backwards, whatever the interleaving.
///
/// ```
/// use sabot_core::Timestamp;
/// use sabot_time::SharedWatermark;
///
/// let w = SharedWatermark::new();
/// let reader = w.clone();
/// w.publish(Timestamp::from_millis(10));
/// w.publish(Timestamp::from_millis(5)); // ignored: older
/// assert_eq!(reader.get(), Timestamp::from_millis(10));
/// ```
#[derive(Clone, Debug)]
pub struct SharedWatermark(Arc<AtomicI64>);

impl Default for SharedWatermark {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedWatermark {
    /// A watermark at [`Timestamp::MIN`].
    pub fn new() -> Self {
        SharedWatermark(Arc::new(AtomicI64::new(i64::MIN)))
    }

    /// Raises the watermark to `wm` if that is newer.
    pub fn publish(&self, wm: Timestamp) {
        // Release pairs with `get`'s Acquire: what the publisher did before is visible to
        // a reader that sees this watermark.
        self.0.fetch_max(wm.millis(), Ordering::Release);
    }

    /// The latest watermark published.
    pub fn get(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::Acquire))
    }
}

#[cfg(all(test, sabot_loom))]
mod loom_tests {
    use super::*;

    #[test]
    fn concurrent_publishes_never_go_backwards() {
        loom::model(|| {
            let w = SharedWatermark::new();
            let a = w.clone();
            let b = w.clone();
            let t1 = loom::thread::spawn(move || {
                a.publish(Timestamp::from_millis(5));
                a.publish(Timestamp::from_millis(20));
            });
            let t2 = loom::thread::spawn(move || {
                b.publish(Timestamp::from_millis(10));
            });
            let first = w.get();
            let second = w.get();
            assert!(second >= first, "a reader saw the watermark go back");
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(w.get(), Timestamp::from_millis(20));
        });
    }

    #[test]
    fn data_written_before_publish_is_visible_after_reading_it() {
        use loom::sync::atomic::AtomicUsize;
        loom::model(|| {
            let w = SharedWatermark::new();
            let data = Arc::new(AtomicUsize::new(0));
            let (w2, d2) = (w.clone(), data.clone());
            let t = loom::thread::spawn(move || {
                d2.store(42, Ordering::Relaxed);
                w2.publish(Timestamp::from_millis(1));
            });
            if w.get() == Timestamp::from_millis(1) {
                assert_eq!(data.load(Ordering::Relaxed), 42);
            }
            t.join().unwrap();
        });
    }
}
