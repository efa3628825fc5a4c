//! Bounded queues between subtasks.
//!
//! A full queue blocks the sender: that is Sabot's backpressure. Dropping every sender
//! closes the queue for the receiver once it is drained; dropping the receiver makes every
//! later push fail and hand its value back. Nothing is lost or duplicated on close: an
//! item is either popped or dropped with the queue, exactly once.
//!
//! Two flavours over the lock-free rings of the `ring` module: [`bounded`] (MPSC: clone
//! the [`Sender`] for several producers; what an exchange uses, one queue per downstream
//! subtask) and [`spsc`] (one producer, one consumer: the cheapest). A thread that must
//! wait spins briefly, then sleeps on an event the other side signals.

use std::fmt;
use std::marker::PhantomData;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::ring::{self, MpscConsumer, MpscProducer, SpscConsumer, SpscProducer};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Ordering};

/// Backs off while `waiting()` holds, before a thread goes to sleep (not under loom,
/// which does not model spinning): spins doubling each round up to 2^6 pauses, then
/// yields the core a few times (crossbeam's `Backoff::snooze`). Going to sleep costs a
/// futex wait and a wake-up on the other side, several microseconds; the other thread is
/// usually about to push or pop by then.
#[inline]
fn spin_while(mut waiting: impl FnMut() -> bool) {
    #[cfg(not(sabot_loom))]
    for round in 0..10u32 {
        if round <= 6 {
            for _ in 0..1u32 << round {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        if !waiting() {
            return;
        }
    }
    #[cfg(sabot_loom)]
    let _ = &mut waiting;
}

/// Creates a bounded multi-producer queue holding at least `capacity` items (rounded up
/// to a power of two, at least 2).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (p, c) = ring::mpsc(capacity);
    let shared = Shared::new();
    (
        Sender(Tx::new(p, shared.clone())),
        Receiver(Rx::new(c, shared)),
    )
}

/// Creates a bounded single-producer single-consumer queue holding at least `capacity`
/// items (rounded up to a power of two, at least 2).
pub fn spsc<T>(capacity: usize) -> (SpscSender<T>, SpscReceiver<T>) {
    let (p, c) = ring::spsc(capacity);
    let shared = Shared::new();
    (
        SpscSender(Tx::new(p, shared.clone())),
        SpscReceiver(Rx::new(c, shared)),
    )
}

/// Creates a fan-in of `producers` SPSC queues (one per producer, each holding at least
/// `capacity` items) into one receiver: an MPSC queue without the compare-and-swap, what
/// an exchange needs between `producers` upstream subtasks and one downstream subtask.
/// Each producer's items arrive in order; the receiver takes from the producers in turn.
pub fn fan_in<T>(producers: usize, capacity: usize) -> (Vec<FanInSender<T>>, FanInReceiver<T>) {
    let producers = producers.max(1);
    let shared = Shared::new();
    shared.senders.store(producers, Ordering::Relaxed);
    let (tx, rx): (Vec<_>, Vec<_>) = (0..producers).map(|_| ring::spsc(capacity)).unzip();
    let senders = tx
        .into_iter()
        .map(|p| FanInSender(Tx::new(p, shared.clone())))
        .collect();
    let rings = FanIn {
        rings: rx,
        next: std::cell::Cell::new(0),
    };
    (senders, FanInReceiver(Rx::new(rings, shared)))
}

/// The consuming ends of a fan-in's rings, read in turn.
struct FanIn<T> {
    rings: Vec<SpscConsumer<T>>,
    next: std::cell::Cell<usize>,
}

impl<T> FanIn<T> {
    fn len(&self) -> usize {
        self.rings.iter().map(SpscConsumer::len).sum()
    }
}

impl<T> RingRx<T> for FanIn<T> {
    #[inline]
    fn pop(&self) -> Option<T> {
        let n = self.rings.len();
        let start = self.next.get();
        for i in 0..n {
            let r = (start + i) % n;
            if let Some(v) = self.rings[r].pop() {
                // The next pop starts after this ring: no producer starves the others.
                self.next.set((r + 1) % n);
                return Some(v);
            }
        }
        None
    }

    fn has_next(&self) -> bool {
        self.rings.iter().any(SpscConsumer::has_next)
    }
}

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

/// State both ends share besides the ring.
struct Shared {
    senders: AtomicUsize,
    receiver_alive: AtomicBool,
    not_empty: Event,
    not_full: Event,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            senders: AtomicUsize::new(1),
            receiver_alive: AtomicBool::new(true),
            not_empty: Event::new(),
            not_full: Event::new(),
        })
    }
}

/// The producing side of a ring.
trait RingTx<T> {
    fn push(&self, value: T) -> Result<(), T>;
    fn is_full(&self) -> bool;
}

/// The consuming side of a ring.
trait RingRx<T> {
    fn pop(&self) -> Option<T>;
    fn has_next(&self) -> bool;
}

macro_rules! ring_impls {
    ($tx:ident, $rx:ident) => {
        impl<T> RingTx<T> for $tx<T> {
            #[inline]
            fn push(&self, value: T) -> Result<(), T> {
                $tx::push(self, value)
            }
            fn is_full(&self) -> bool {
                $tx::is_full(self)
            }
        }
        impl<T> RingRx<T> for $rx<T> {
            #[inline]
            fn pop(&self) -> Option<T> {
                $rx::pop(self)
            }
            fn has_next(&self) -> bool {
                $rx::has_next(self)
            }
        }
    };
}
ring_impls!(SpscProducer, SpscConsumer);
ring_impls!(MpscProducer, MpscConsumer);

struct Tx<T, P: RingTx<T>> {
    ring: P,
    shared: Arc<Shared>,
    _t: PhantomData<fn(T)>,
}

impl<T, P: RingTx<T>> Tx<T, P> {
    fn new(ring: P, shared: Arc<Shared>) -> Self {
        Tx {
            ring,
            shared,
            _t: PhantomData,
        }
    }

    #[inline]
    fn try_push(&self, value: T) -> Result<(), TryPushError<T>> {
        if !self.shared.receiver_alive.load(Ordering::Acquire) {
            return Err(TryPushError::Closed(value));
        }
        match self.ring.push(value) {
            Ok(()) => {
                self.shared.not_empty.notify();
                Ok(())
            }
            Err(v) => Err(TryPushError::Full(v)),
        }
    }

    #[inline]
    fn push(&self, value: T) -> Result<(), T> {
        match self.try_push(value) {
            Ok(()) => Ok(()),
            Err(TryPushError::Closed(v)) => Err(v),
            Err(TryPushError::Full(v)) => self.push_waiting(v),
        }
    }

    /// `push` once the queue was full: waits for room, out of line so that the fast path
    /// stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn push_waiting(&self, mut value: T) -> Result<(), T> {
        loop {
            match self.try_push(value) {
                Ok(()) => return Ok(()),
                Err(TryPushError::Closed(v)) => return Err(v),
                Err(TryPushError::Full(v)) => value = v,
            }
            spin_while(|| self.ring.is_full());
            let shared = &self.shared;
            shared.not_full.wait_until(
                || !self.ring.is_full() || !shared.receiver_alive.load(Ordering::Acquire),
                None,
            );
        }
    }
}

impl<T, P: RingTx<T>> Tx<T, P> {
    /// Pushes `value`, waiting (as a task) while the queue is full.
    async fn push_async(&mut self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        // Moving the exclusive borrow into the closure keeps the future `Send` (a shared
        // borrow would need the handle to be `Sync`).
        let this = self;
        std::future::poll_fn(move |cx| {
            loop {
                let Some(v) = value.take() else {
                    return Poll::Ready(Ok(()));
                };
                match this.try_push(v) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(TryPushError::Closed(v)) => return Poll::Ready(Err(v)),
                    Err(TryPushError::Full(v)) => value = Some(v),
                }
                let shared = &this.shared;
                if !shared.not_full.poll_until(cx, || {
                    !this.ring.is_full() || !shared.receiver_alive.load(Ordering::Acquire)
                }) {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

impl<T, P: RingTx<T>> Drop for Tx<T, P> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.not_empty.notify();
        }
    }
}

struct Rx<T, C: RingRx<T>> {
    ring: C,
    shared: Arc<Shared>,
    _t: PhantomData<fn() -> T>,
}

impl<T, C: RingRx<T>> Rx<T, C> {
    fn new(ring: C, shared: Arc<Shared>) -> Self {
        Rx {
            ring,
            shared,
            _t: PhantomData,
        }
    }

    #[inline]
    fn try_pop(&self) -> Option<T> {
        let v = self.ring.pop()?;
        self.shared.not_full.notify();
        Some(v)
    }

    fn closed(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// `Ok(Some)`: an item; `Ok(None)`: closed and drained; `Err`: the deadline passed.
    #[inline]
    fn pop_until(&self, deadline: Option<Instant>) -> Result<Option<T>, ()> {
        match self.try_pop() {
            Some(v) => Ok(Some(v)),
            None => self.pop_waiting(deadline),
        }
    }

    /// `pop_until` once the queue was empty, out of line so that the fast path stays small
    /// enough to inline.
    #[cold]
    #[inline(never)]
    fn pop_waiting(&self, deadline: Option<Instant>) -> Result<Option<T>, ()> {
        loop {
            if let Some(v) = self.try_pop() {
                return Ok(Some(v));
            }
            if self.closed() {
                // Every push finished before its sender was dropped: one last look.
                return Ok(self.try_pop());
            }
            spin_while(|| !self.ring.has_next());
            if !self
                .shared
                .not_empty
                .wait_until(|| self.ring.has_next() || self.closed(), deadline)
            {
                return Err(());
            }
        }
    }
}

impl<T, C: RingRx<T>> Rx<T, C> {
    /// The next item, waiting (as a task) while the queue is empty; `None` once closed
    /// and drained.
    async fn pop_async(&mut self) -> Option<T> {
        let this = self;
        std::future::poll_fn(move |cx| {
            loop {
                if let Some(v) = this.try_pop() {
                    return Poll::Ready(Some(v));
                }
                if this.closed() {
                    return Poll::Ready(this.try_pop());
                }
                if !this
                    .shared
                    .not_empty
                    .poll_until(cx, || this.ring.has_next() || this.closed())
                {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

impl<T, C: RingRx<T>> Drop for Rx<T, C> {
    fn drop(&mut self) {
        self.shared.receiver_alive.store(false, Ordering::Release);
        self.shared.not_full.notify();
        // Free what is queued now; anything pushed later goes with the ring.
        while self.ring.pop().is_some() {}
    }
}

macro_rules! sender_api {
    ($name:ident, $ring:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $name<T>(Tx<T, $ring<T>>);

        impl<T> $name<T> {
            /// Pushes `value`, blocking while the queue is full. Returns the value back
            /// if the receiver is gone.
            #[inline]
            pub fn push(&self, value: T) -> Result<(), T> {
                self.0.push(value)
            }

            /// Pushes `value` if there is room right now.
            pub fn try_push(&self, value: T) -> Result<(), TryPushError<T>> {
                self.0.try_push(value)
            }

            /// Pushes `value` from async code: the task waits while the queue is full
            /// (woken when the receiver pops or leaves). Returns the value back if the
            /// receiver is gone. It borrows the handle exclusively, so the future is
            /// `Send` whenever `T` is (a spawned task can own the handle).
            pub async fn push_async(&mut self, value: T) -> Result<(), T> {
                self.0.push_async(value).await
            }

            /// Items waiting in the queue (a snapshot; other threads move it).
            pub fn len(&self) -> usize {
                self.0.ring.len()
            }

            /// Whether no item is waiting.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// How many items the queue holds at most.
            pub fn capacity(&self) -> usize {
                self.0.ring.capacity()
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.len())
                    .finish()
            }
        }
    };
}

macro_rules! receiver_api {
    ($name:ident, $ring:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $name<T>(Rx<T, $ring<T>>);

        impl<T> $name<T> {
            /// The next item, blocking while the queue is empty; `None` once every sender
            /// is gone and the queue is drained.
            #[inline]
            pub fn pop(&self) -> Option<T> {
                self.0.pop_until(None).unwrap_or(None)
            }

            /// Like `pop`, giving up after `timeout`: `Ok(None)` means closed and
            /// drained, `Err(())` means nothing arrived in time.
            #[allow(clippy::result_unit_err)]
            pub fn pop_timeout(&self, timeout: Duration) -> Result<Option<T>, ()> {
                self.0.pop_until(Some(Instant::now() + timeout))
            }

            /// The next item if one is waiting.
            pub fn try_pop(&self) -> Option<T> {
                self.0.try_pop()
            }

            /// The next item, from async code: the task waits while the queue is empty
            /// (woken when a sender pushes or the last one leaves); `None` once closed
            /// and drained. It borrows the handle exclusively, so the future is `Send`
            /// whenever `T` is.
            pub async fn pop_async(&mut self) -> Option<T> {
                self.0.pop_async().await
            }

            /// Items waiting in the queue (a snapshot; other threads move it).
            pub fn len(&self) -> usize {
                self.0.ring.len()
            }

            /// Whether no item is waiting.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.len())
                    .finish()
            }
        }
    };
}

sender_api!(
    Sender,
    MpscProducer,
    "The sending side of a [`bounded`] queue; clone it for several producers."
);
receiver_api!(
    Receiver,
    MpscConsumer,
    "The receiving side of a [`bounded`] queue."
);
sender_api!(
    SpscSender,
    SpscProducer,
    "The sending side of an [`spsc`] queue: one producer (not `Clone`, not `Sync`)."
);
receiver_api!(
    SpscReceiver,
    SpscConsumer,
    "The receiving side of an [`spsc`] queue."
);
sender_api!(
    FanInSender,
    SpscProducer,
    "One producer's side of a [`fan_in`] (not `Clone`, not `Sync`)."
);
receiver_api!(FanInReceiver, FanIn, "The receiving side of a [`fan_in`].");

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender(Tx::new(self.0.ring.clone(), self.0.shared.clone()))
    }
}

#[cfg(all(test, not(sabot_loom)))]
mod tests {
    use super::*;

    #[test]
    fn full_queue_hands_the_value_back() {
        let (tx, rx) = bounded(1);
        assert_eq!(tx.capacity(), 2, "MPSC rings hold at least two items");
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert_eq!(tx.try_push(3), Err(TryPushError::Full(3)));
        assert_eq!(rx.pop(), Some(1));
        drop(rx);
        assert_eq!(tx.push(3), Err(3));
        assert_eq!(tx.try_push(4), Err(TryPushError::Closed(4)));

        let (tx, rx) = spsc(1);
        assert_eq!(tx.capacity(), 2);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert_eq!(tx.try_push(3), Err(TryPushError::Full(3)));
        assert_eq!(rx.try_pop(), Some(1));
        assert_eq!(rx.try_pop(), Some(2));
        assert_eq!(rx.try_pop(), None);
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
        assert_eq!(rx.pop_timeout(Duration::from_millis(1)), Ok(None));
    }

    #[test]
    fn pop_timeout_gives_up_on_an_open_empty_queue() {
        let (tx, rx) = spsc::<u8>(4);
        let start = Instant::now();
        assert_eq!(rx.pop_timeout(Duration::from_millis(30)), Err(()));
        assert!(start.elapsed() >= Duration::from_millis(30));
        drop(tx);
        assert_eq!(rx.pop_timeout(Duration::from_millis(30)), Ok(None));
    }
}

/// Loom models of push, pop and close (`RUSTFLAGS="--cfg sabot_loom"`).
#[cfg(all(test, sabot_loom))]
mod loom_tests {
    use super::*;

    #[test]
    fn loom_spsc_delivers_in_order_and_closes() {
        loom::model(|| {
            let (tx, rx) = spsc::<u32>(2);
            let t = loom::thread::spawn(move || {
                for i in 0..3 {
                    tx.push(i).unwrap();
                }
            });
            for i in 0..3 {
                assert_eq!(rx.pop(), Some(i));
            }
            assert_eq!(rx.pop(), None);
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_mpsc_delivers_each_item_once() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(2);
            let tx2 = tx.clone();
            let a = loom::thread::spawn(move || tx.push(1).unwrap());
            let b = loom::thread::spawn(move || tx2.push(2).unwrap());
            let mut got = vec![rx.pop().unwrap(), rx.pop().unwrap()];
            got.sort_unstable();
            assert_eq!(got, vec![1, 2]);
            assert_eq!(rx.pop(), None);
            a.join().unwrap();
            b.join().unwrap();
        });
    }

    #[test]
    fn loom_fan_in_delivers_each_item_once_and_closes() {
        loom::model(|| {
            let (mut tx, rx) = fan_in::<u32>(2, 2);
            let b = tx.pop().unwrap();
            let a = tx.pop().unwrap();
            let ta = loom::thread::spawn(move || a.push(1).unwrap());
            let tb = loom::thread::spawn(move || b.push(2).unwrap());
            let mut got = vec![rx.pop().unwrap(), rx.pop().unwrap()];
            got.sort_unstable();
            assert_eq!(got, vec![1, 2]);
            assert_eq!(rx.pop(), None);
            ta.join().unwrap();
            tb.join().unwrap();
        });
    }

    #[test]
    fn loom_async_pop_is_woken_by_a_push_and_by_close() {
        loom::model(|| {
            let (tx, mut rx) = spsc::<u32>(2);
            let t = loom::thread::spawn(move || {
                tx.push(7).unwrap();
            });
            assert_eq!(loom::future::block_on(rx.pop_async()), Some(7));
            assert_eq!(loom::future::block_on(rx.pop_async()), None);
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_receiver_close_wakes_a_blocked_sender_and_drops_items_once() {
        loom::model(|| {
            let item = std::sync::Arc::new(());
            let (tx, rx) = bounded::<std::sync::Arc<()>>(2);
            tx.push(item.clone()).unwrap();
            tx.push(item.clone()).unwrap();
            let t = loom::thread::spawn(move || {
                // Full: blocks until the receiver pops or goes away.
                let _ = tx.push(std::sync::Arc::new(()));
            });
            drop(rx);
            t.join().unwrap();
            // Both queued items were dropped exactly once.
            assert_eq!(std::sync::Arc::strong_count(&item), 1);
        });
    }
}
