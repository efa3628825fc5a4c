//! Synchronization primitives through one door, so loom can model them
//! (`--cfg sabot_loom`).

#[cfg(sabot_loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(sabot_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
#[cfg(sabot_loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex};

#[cfg(not(sabot_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
#[cfg(not(sabot_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex};

/// `std::cell::UnsafeCell` with loom's closure-based access.
#[cfg(not(sabot_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(sabot_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
