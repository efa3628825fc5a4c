//! Synchronization through one door, so loom can model it (`--cfg sabot_loom`).

#[cfg(sabot_loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(sabot_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(sabot_loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(sabot_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
