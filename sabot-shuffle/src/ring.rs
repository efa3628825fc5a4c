//! Lock-free bounded rings, and the queues' asymmetric barrier: the only `unsafe` code of
//! the crate.
//!
//! - MPSC: Vyukov's bounded queue. A sequence number per slot says whether it is free for
//!   the producer of position `pos` (`seq == pos`) or holds that producer's value
//!   (`seq == pos + 1`), so producer and consumer meet only in the slot they hand over;
//!   producers claim a position with a compare-and-swap on the enqueue index.
//! - SPSC: Lamport's ring, values packed in an array between a head and a tail index,
//!   each side caching the other's index.
//!
//! Safety rests on the handle types: an SPSC producer and every consumer are unique
//! (not `Clone`) and `!Sync` (they hold `Cell`s), so at most one thread at a time
//! pushes into an SPSC ring or pops from any ring; MPSC producers may be shared freely.
//! Values left in a ring when its last handle drops are dropped exactly once.

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};

/// Keeps what it holds on its own cache line (two on machines that prefetch pairs).
#[repr(align(128))]
struct Padded<T>(T);

/// `!Sync` marker for the handles that must stay on one thread at a time.
type NotSync = PhantomData<Cell<()>>;

fn capacity_for(requested: usize) -> usize {
    requested.max(1).next_power_of_two()
}

// ---------------------------------------------------------------------------------------
// SPSC: Lamport's ring with cached indices

/// A single-producer single-consumer ring: values sit packed in one array (eight `u64`s
/// to a cache line, against four slots of value and sequence number in the MPSC ring);
/// the producer publishes `tail`, the consumer `head`. Each side keeps its own index and
/// a cached copy of the other's, and reads the shared one only when the copy says full
/// (producer) or empty (consumer): a line of values crosses between the cores once, and
/// the indices once per run of pushes or pops rather than once per item.
struct Spsc<T> {
    buf: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// The next position to pop; written only by the consumer.
    head: Padded<AtomicUsize>,
    /// The next position to push; written only by the producer.
    tail: Padded<AtomicUsize>,
}

// SAFETY: values of `T` move between threads (hence `T: Send`); position `p` is written
// only by the one producer while `p - head < capacity` (the consumer is done with the
// previous lap's value, published by its Release store of `head`) and read only by the
// one consumer once `p < tail` (published by the producer's Release store of `tail`).
unsafe impl<T: Send> Send for Spsc<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Spsc<T> {}

impl<T> Drop for Spsc<T> {
    fn drop(&mut self) {
        let end = self.tail.0.load(Ordering::Relaxed);
        let mut pos = self.head.0.load(Ordering::Relaxed);
        while pos != end {
            // SAFETY: `&mut self`: no handle is left; positions in [head, tail) were
            // written and never read.
            self.buf[pos & self.mask].with_mut(|p| unsafe { (*p).assume_init_drop() });
            pos = pos.wrapping_add(1);
        }
    }
}

/// The producing end of an SPSC ring (`Cell`s make it `!Sync`).
pub(crate) struct SpscProducer<T> {
    ring: Arc<Spsc<T>>,
    /// The next position to push (the producer's own copy of `tail`).
    tail: Cell<usize>,
    /// `head` as last read: the consumer is at least this far.
    head: Cell<usize>,
}

/// The consuming end of an SPSC ring (`Cell`s make it `!Sync`).
pub(crate) struct SpscConsumer<T> {
    ring: Arc<Spsc<T>>,
    /// The next position to pop (the consumer's own copy of `head`).
    head: Cell<usize>,
    /// `tail` as last read: the producer is at least this far.
    tail: Cell<usize>,
}

/// A single-producer single-consumer ring of at least `capacity` slots (a power of two,
/// at least 2).
pub(crate) fn spsc<T>(capacity: usize) -> (SpscProducer<T>, SpscConsumer<T>) {
    let cap = capacity_for(capacity.max(2));
    let ring = Arc::new(Spsc {
        buf: (0..cap)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: cap - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (
        SpscProducer {
            ring: ring.clone(),
            tail: Cell::new(0),
            head: Cell::new(0),
        },
        SpscConsumer {
            ring,
            head: Cell::new(0),
            tail: Cell::new(0),
        },
    )
}

impl<T> SpscProducer<T> {
    /// Pushes `value` if there is room; hands it back if full.
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let r = &*self.ring;
        let t = self.tail.get();
        if t.wrapping_sub(self.head.get()) == r.buf.len() {
            self.head.set(r.head.0.load(Ordering::Acquire));
            if t.wrapping_sub(self.head.get()) == r.buf.len() {
                return Err(value);
            }
        }
        // SAFETY: `t - head < capacity` with `head` read Acquire: the consumer has read
        // the value of this position's previous lap; this producer is the only one (not
        // Clone, not Sync).
        r.buf[t & r.mask].with_mut(|p| unsafe { (*p).write(value) });
        r.tail.0.store(t.wrapping_add(1), Ordering::Release);
        self.tail.set(t.wrapping_add(1));
        Ok(())
    }

    /// Whether the ring looked full just now.
    pub(crate) fn is_full(&self) -> bool {
        let r = &*self.ring;
        self.tail
            .get()
            .wrapping_sub(r.head.0.load(Ordering::Acquire))
            == r.buf.len()
    }

    pub(crate) fn len(&self) -> usize {
        len(&self.ring.tail.0, &self.ring.head.0)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.buf.len()
    }
}

impl<T> SpscConsumer<T> {
    /// The next value, if one is there.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        let r = &*self.ring;
        let h = self.head.get();
        if h == self.tail.get() {
            self.tail.set(r.tail.0.load(Ordering::Acquire));
            if h == self.tail.get() {
                return None;
            }
        }
        // SAFETY: `h < tail` with `tail` read Acquire: the producer wrote this position;
        // this consumer is the only one (not Clone, not Sync).
        let v = r.buf[h & r.mask].with_mut(|p| unsafe { (*p).assume_init_read() });
        r.head.0.store(h.wrapping_add(1), Ordering::Release);
        self.head.set(h.wrapping_add(1));
        Some(v)
    }

    /// Whether a value is ready to pop.
    pub(crate) fn has_next(&self) -> bool {
        self.head.get() != self.ring.tail.0.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> usize {
        len(&self.ring.tail.0, &self.ring.head.0)
    }
}

fn len(tail: &AtomicUsize, head: &AtomicUsize) -> usize {
    let h = head.load(Ordering::Acquire);
    tail.load(Ordering::Acquire).saturating_sub(h)
}

// ---------------------------------------------------------------------------------------
// MPSC

struct Slot<T> {
    /// `pos` when free for the producer claiming position `pos`; `pos + 1` once written.
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Mpsc<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    enqueue: Padded<AtomicUsize>,
    dequeue: Padded<AtomicUsize>,
}

// SAFETY: values of `T` move between threads (hence `T: Send`); a slot's value is
// written only by the producer that claimed its position (a compare-and-swap on
// `enqueue`) and read only by the single consumer after the slot's sequence number
// (Release/Acquire) says it is written.
unsafe impl<T: Send> Send for Mpsc<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Mpsc<T> {}

impl<T> Drop for Mpsc<T> {
    fn drop(&mut self) {
        let mut pos = self.dequeue.0.load(Ordering::Relaxed);
        let end = self.enqueue.0.load(Ordering::Relaxed);
        while pos != end {
            let slot = &self.slots[pos & self.mask];
            if slot.seq.load(Ordering::Relaxed) == pos.wrapping_add(1) {
                // SAFETY: `&mut self`: no handle is left, so every claimed slot was
                // written (its producer finished before dropping its handle), and this
                // one was never read.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
            pos = pos.wrapping_add(1);
        }
    }
}

/// A producing end of an MPSC ring; clone it for more producers.
pub(crate) struct MpscProducer<T> {
    ring: Arc<Mpsc<T>>,
}

impl<T> Clone for MpscProducer<T> {
    fn clone(&self) -> Self {
        MpscProducer {
            ring: self.ring.clone(),
        }
    }
}

/// The consuming end of an MPSC ring.
pub(crate) struct MpscConsumer<T> {
    ring: Arc<Mpsc<T>>,
    _not_sync: NotSync,
}

/// A multi-producer single-consumer ring of at least `capacity` slots (a power of two,
/// at least 2).
pub(crate) fn mpsc<T>(capacity: usize) -> (MpscProducer<T>, MpscConsumer<T>) {
    // One slot would make "written" (pos + 1) and "free next lap" (pos + capacity) equal.
    let cap = capacity_for(capacity.max(2));
    let ring = Arc::new(Mpsc {
        slots: (0..cap)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect(),
        mask: cap - 1,
        enqueue: Padded(AtomicUsize::new(0)),
        dequeue: Padded(AtomicUsize::new(0)),
    });
    (
        MpscProducer { ring: ring.clone() },
        MpscConsumer {
            ring,
            _not_sync: PhantomData,
        },
    )
}

impl<T> MpscProducer<T> {
    /// Pushes `value` if there is room; hands it back if full.
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let r = &*self.ring;
        let mut pos = r.enqueue.0.load(Ordering::Relaxed);
        loop {
            let slot = &r.slots[pos & r.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                match r.enqueue.0.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the compare-and-swap gave this producer position
                        // `pos`; the slot's sequence (== pos, Acquire) says the consumer
                        // has read the previous lap's value.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                // The slot still holds the previous lap's value: full.
                return Err(value);
            } else {
                pos = r.enqueue.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Whether the ring looked full just now.
    pub(crate) fn is_full(&self) -> bool {
        let r = &*self.ring;
        let pos = r.enqueue.0.load(Ordering::Relaxed);
        (r.slots[pos & r.mask]
            .seq
            .load(Ordering::Acquire)
            .wrapping_sub(pos) as isize)
            < 0
    }

    pub(crate) fn len(&self) -> usize {
        len(&self.ring.enqueue.0, &self.ring.dequeue.0)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.slots.len()
    }
}

impl<T> MpscConsumer<T> {
    /// The next value, if it is there (a slot claimed but not yet written reads as
    /// empty).
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        let r = &*self.ring;
        let pos = r.dequeue.0.load(Ordering::Relaxed);
        let slot = &r.slots[pos & r.mask];
        if slot.seq.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        // SAFETY: the sequence (pos + 1, Acquire) says the producer wrote the value, and
        // this consumer is the only one (not Clone, not Sync).
        let v = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
        slot.seq
            .store(pos.wrapping_add(r.slots.len()), Ordering::Release);
        r.dequeue.0.store(pos.wrapping_add(1), Ordering::Release);
        Some(v)
    }

    /// Whether a value is ready to pop.
    pub(crate) fn has_next(&self) -> bool {
        let r = &*self.ring;
        let pos = r.dequeue.0.load(Ordering::Relaxed);
        r.slots[pos & r.mask].seq.load(Ordering::Acquire) == pos.wrapping_add(1)
    }

    pub(crate) fn len(&self) -> usize {
        len(&self.ring.enqueue.0, &self.ring.dequeue.0)
    }
}

// ---------------------------------------------------------------------------------------
// The asymmetric barrier behind `Event`

/// Barriers for a handshake with a frequent side and a rare side: a notifier (every push
/// and pop) publishes its change, then reads the waiter count; a waiter (before it sleeps)
/// counts itself, then reads the change. Each side needs its write ordered before its
/// read, or both can miss the other's write and the waiter sleeps through its wake-up.
///
/// With Linux's expedited `membarrier` (kernel 4.14 and later), the frequent side only
/// stops the compiler from reordering ([`light_barrier`]), and the rare side runs a full
/// barrier on every core running a thread of this process ([`heavy_barrier`], some
/// microseconds, like the futex wait it comes before). Whichever point of the notifier's
/// program order that barrier lands on, either its write is visible to the waiter's read or
/// its read comes after the waiter's write. Without `membarrier`, and under loom, both
/// sides use a sequentially consistent fence.
pub(crate) mod barrier {
    use crate::sync::{Ordering, fence};

    #[cfg(all(target_os = "linux", not(sabot_loom)))]
    mod membarrier {
        use std::sync::Once;
        use std::sync::atomic::{AtomicBool, Ordering};

        const QUERY: libc::c_int = 0;
        const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

        static INIT: Once = Once::new();
        static READY: AtomicBool = AtomicBool::new(false);

        fn call(cmd: libc::c_int) -> libc::c_long {
            // SAFETY: `membarrier(cmd, flags)` takes two integers and touches no memory of
            // ours; an unknown or refused command returns -1 (as under a seccomp filter).
            unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint) }
        }

        pub(super) fn init() {
            INIT.call_once(|| {
                let supported = call(QUERY);
                let needed = (PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED) as libc::c_long;
                if supported >= 0
                    && supported & needed == needed
                    && call(REGISTER_PRIVATE_EXPEDITED) == 0
                {
                    READY.store(true, Ordering::Release);
                }
            });
        }

        /// Whether `init` registered the process. Set once, before the first queue
        /// exists; every queue operation happens after its creation.
        #[inline]
        pub(super) fn ready() -> bool {
            READY.load(Ordering::Relaxed)
        }

        pub(super) fn expedited() -> bool {
            loop {
                if call(PRIVATE_EXPEDITED) == 0 {
                    return true;
                }
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return false;
                }
            }
        }
    }

    /// Chooses the barriers for the process; call before the first event exists.
    pub(crate) fn init() {
        #[cfg(all(target_os = "linux", not(sabot_loom)))]
        membarrier::init();
    }

    /// Whether the process uses `membarrier` (else fences on both sides).
    #[cfg(all(test, target_os = "linux", not(sabot_loom)))]
    pub(crate) fn membarrier_ready() -> bool {
        membarrier::ready()
    }

    /// The frequent side's barrier: between publishing a change and reading the waiter
    /// count.
    #[inline]
    pub(crate) fn light_barrier() {
        #[cfg(all(target_os = "linux", not(sabot_loom)))]
        if membarrier::ready() {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
            return;
        }
        fence(Ordering::SeqCst);
    }

    /// The rare side's barrier: between counting a waiter and reading the change it waits
    /// for. `false` if the system barrier failed after registration (not seen in
    /// practice): the waiter must then not sleep for long, as a wake-up may be missed.
    pub(crate) fn heavy_barrier() -> bool {
        fence(Ordering::SeqCst);
        #[cfg(all(target_os = "linux", not(sabot_loom)))]
        if membarrier::ready() {
            return membarrier::expedited();
        }
        true
    }
}

#[cfg(all(test, target_os = "linux", not(sabot_loom)))]
mod tests {
    #[test]
    fn the_expedited_membarrier_works_once_registered() {
        super::barrier::init();
        if super::barrier::membarrier_ready() {
            assert!(super::barrier::heavy_barrier());
        } else {
            // Refused (old kernel, seccomp): both sides use fences; nothing to check.
            eprintln!("membarrier unavailable: the queues use fences on both sides");
        }
    }
}
