//! Lock-free bounded rings: the only `unsafe` code of the crate.
//!
//! Vyukov's bounded queue: a sequence number per slot says whether it is free for the
//! producer of position `pos` (`seq == pos`) or holds that producer's value
//! (`seq == pos + 1`), so producer and consumer meet only in the slot they hand over, never
//! on a shared index.
//! - MPSC: producers claim a position with a compare-and-swap on the enqueue index.
//! - SPSC: the one producer takes the next position without one.
//!
//! Safety rests on the handle types: an SPSC producer and every consumer are unique
//! (not `Clone`) and `!Sync` (a `PhantomData<Cell<()>>`), so at most one thread at a time
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
// SPSC: the same slots, without the compare-and-swap

/// The producing end of an SPSC ring.
pub(crate) struct SpscProducer<T> {
    ring: Arc<Mpsc<T>>,
    _not_sync: NotSync,
}

/// The consuming end of an SPSC ring.
pub(crate) struct SpscConsumer<T> {
    inner: MpscConsumer<T>,
}

/// A single-producer single-consumer ring of at least `capacity` slots (a power of two,
/// at least 2).
pub(crate) fn spsc<T>(capacity: usize) -> (SpscProducer<T>, SpscConsumer<T>) {
    let (p, c) = mpsc(capacity);
    (
        SpscProducer {
            ring: p.ring,
            _not_sync: PhantomData,
        },
        SpscConsumer { inner: c },
    )
}

impl<T> SpscProducer<T> {
    /// Pushes `value` if there is room; hands it back if full.
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let r = &*self.ring;
        // Only this producer moves `enqueue` (not Clone, not Sync): no claim needed.
        let pos = r.enqueue.0.load(Ordering::Relaxed);
        let slot = &r.slots[pos & r.mask];
        if slot.seq.load(Ordering::Acquire) != pos {
            return Err(value);
        }
        // SAFETY: the slot's sequence (== pos, Acquire) says the consumer has read the
        // previous lap's value, and no other producer exists.
        slot.value.with_mut(|p| unsafe { (*p).write(value) });
        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
        r.enqueue.0.store(pos.wrapping_add(1), Ordering::Relaxed);
        Ok(())
    }

    /// Whether the ring looked full just now.
    pub(crate) fn is_full(&self) -> bool {
        let r = &*self.ring;
        let pos = r.enqueue.0.load(Ordering::Relaxed);
        r.slots[pos & r.mask].seq.load(Ordering::Acquire) != pos
    }

    pub(crate) fn len(&self) -> usize {
        len(&self.ring.enqueue.0, &self.ring.dequeue.0)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.slots.len()
    }
}

impl<T> SpscConsumer<T> {
    /// The next value, if one is there.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        self.inner.pop()
    }

    /// Whether a value is ready to pop.
    pub(crate) fn has_next(&self) -> bool {
        self.inner.has_next()
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
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
