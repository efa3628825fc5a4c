//! Atomics through one door, so loom can model them (`--cfg sabot_loom`).

#[cfg(sabot_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(sabot_loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, Ordering};

#[cfg(not(sabot_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(sabot_loom))]
pub(crate) use std::sync::atomic::{AtomicI64, Ordering};
