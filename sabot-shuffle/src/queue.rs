//! Bounded queues between subtasks.
//!
//! A full queue blocks the sender: that is Sabot's backpressure. Dropping every sender
//! closes the queue for the receiver once it is drained; dropping the receiver makes every
//! later send fail and hand its value back.
//!
//! This version wraps `crossbeam-channel`; the lock-free SPSC/MPSC rings of issue 5 will
//! replace the internals behind the same API.

use std::fmt;
use std::time::Duration;

/// Creates a bounded queue holding at most `capacity` items (at least 1).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    (Sender(tx), Receiver(rx))
}

/// The sending side; clone it for several producers.
pub struct Sender<T>(crossbeam_channel::Sender<T>);

/// The receiving side.
pub struct Receiver<T>(crossbeam_channel::Receiver<T>);

/// Why a non-blocking push did not happen; the value comes back.
#[derive(PartialEq, Eq)]
pub enum TryPushError<T> {
    /// The queue is full.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> fmt::Debug for TryPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPushError::Full(_) => f.write_str("Full(..)"),
            TryPushError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> Sender<T> {
    /// Pushes `value`, blocking while the queue is full. Returns the value back if the
    /// receiver is gone.
    pub fn push(&self, value: T) -> Result<(), T> {
        self.0.send(value).map_err(|e| e.0)
    }

    /// Pushes `value` if there is room right now.
    pub fn try_push(&self, value: T) -> Result<(), TryPushError<T>> {
        self.0.try_send(value).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(v) => TryPushError::Full(v),
            crossbeam_channel::TrySendError::Disconnected(v) => TryPushError::Closed(v),
        })
    }

    /// Items waiting in the queue.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> Receiver<T> {
    /// The next item, blocking while the queue is empty; `None` once every sender is gone
    /// and the queue is drained.
    pub fn pop(&self) -> Option<T> {
        self.0.recv().ok()
    }

    /// Like [`Receiver::pop`], giving up after `timeout`: `Ok(None)` means closed and
    /// drained, `Err(())` means nothing arrived in time.
    #[allow(clippy::result_unit_err)]
    pub fn pop_timeout(&self, timeout: Duration) -> Result<Option<T>, ()> {
        match self.0.recv_timeout(timeout) {
            Ok(v) => Ok(Some(v)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(None),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(()),
        }
    }

    /// The next item if one is waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.0.try_recv().ok()
    }

    /// Items waiting in the queue.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("len", &self.len()).finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_hands_the_value_back() {
        let (tx, rx) = bounded(1);
        tx.push(1).unwrap();
        assert_eq!(tx.try_push(2), Err(TryPushError::Full(2)));
        assert_eq!(rx.pop(), Some(1));
        drop(rx);
        assert_eq!(tx.push(3), Err(3));
    }

    #[test]
    fn closed_queue_drains_before_reporting_end() {
        let (tx, rx) = bounded(4);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        drop(tx);
        assert_eq!(rx.pop(), Some(1));
        assert_eq!(rx.pop(), Some(2));
        assert_eq!(rx.pop(), None);
    }

    #[test]
    fn items_arrive_in_order_across_threads() {
        let (tx, rx) = bounded(8);
        let t = std::thread::spawn(move || {
            for i in 0..100_000u32 {
                tx.push(i).unwrap();
            }
        });
        for i in 0..100_000u32 {
            assert_eq!(rx.pop(), Some(i));
        }
        t.join().unwrap();
        assert_eq!(rx.pop(), None);
    }
}
