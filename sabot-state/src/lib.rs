//! State backends and keyed state for the Sabot stream processor.
//!
//! - [`StateBackend`]: byte-level get / put / delete / merge / scans addressed by
//!   (state, key group, key, namespace), with snapshots of key-group ranges to a folder
//!   and restore from one or several snapshots (rescaling).
//! - [`MemoryBackend`]: hash tables per key group (one cache line per small entry, which
//!   a caller can prefetch), copy-on-write snapshots.
//! - [`KeyedState`]: typed [`ValueState`], [`ListState`], [`MapState`], [`ReducingState`]
//!   and [`AggregatingState`] over any backend, postcard-encoded, with optional [`Ttl`] in
//!   event or processing time.
//!
//! Snapshot files have a documented format with checksums (see the `snapshot` module
//! docs); a damaged, truncated or foreign file is an error naming the path, never empty
//! state.
//!
//! ```
//! use sabot_core::{KeyGroup, KeyGroupRange};
//! use sabot_state::{MemoryBackend, StateBackend};
//!
//! let all = KeyGroupRange::for_subtask(128, 1, 0);
//! let mut b = MemoryBackend::new(128, all);
//! let s = b.register("seen", "bytes").unwrap();
//! b.merge(s, KeyGroup(1), b"k", b"", b"ab").unwrap();
//! b.merge(s, KeyGroup(1), b"k", b"", b"c").unwrap();
//! let mut out = Vec::new();
//! b.get(s, KeyGroup(1), b"k", b"", &mut out).unwrap();
//! assert_eq!(out, b"abc");
//! ```

mod backend;
mod bytes;
mod config;
mod error;
mod keyed;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
pub mod snapshot;
mod table;

pub use backend::{
    EntryKey, GroupScanFn, PendingSnapshot, ScanFn, SnapshotInfo, StateBackend, StateId, UpdateFn,
};
pub use config::{BackendKind, StateConfig};
pub use error::{Result, StateError};
pub use keyed::{
    AggregateFunction, AggregatingState, KeyedState, ListState, MapState, ReducingState,
    StateDescriptor, Ttl, TtlDomain, ValueState,
};
pub use memory::{MemoryBackend, MemorySnapshot};
#[cfg(feature = "rocksdb")]
pub use rocks::{
    Compression, ROCKSDB_CHECKPOINT_DIR, ROCKSDB_META_FILE, RocksDbBackend, RocksDbConfig,
};
