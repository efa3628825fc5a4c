//! The byte-level state backend contract.

use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use sabot_core::{KeyGroup, KeyGroupRange};

use crate::Result;
use crate::bytes::short_copy;

/// A registered state (a table in the memory backend, a column family in RocksDB).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub(crate) u32);

/// What a snapshot wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The files written (already fsynced and in place).
    pub files: Vec<PathBuf>,
    /// Bytes written.
    pub bytes: u64,
    /// Entries written, when the backend counts them (a RocksDB checkpoint links files
    /// without reading them).
    pub entries: Option<u64>,
}

/// A snapshot begun with [`StateBackend::snapshot_async`]: it holds the state as it was
/// when it began, and [`finish`](Self::finish) writes it, on any thread, while the
/// backend goes on changing.
pub struct PendingSnapshot(PendingInner);

enum PendingInner {
    Done(SnapshotInfo),
    Write(Box<dyn FnOnce() -> Result<SnapshotInfo> + Send>),
}

impl PendingSnapshot {
    /// A snapshot already written (backends that cannot defer the work).
    pub fn done(info: SnapshotInfo) -> Self {
        PendingSnapshot(PendingInner::Done(info))
    }

    /// A snapshot whose files `write` writes later.
    pub fn deferred(write: impl FnOnce() -> Result<SnapshotInfo> + Send + 'static) -> Self {
        PendingSnapshot(PendingInner::Write(Box::new(write)))
    }

    /// Whether work is left for [`finish`](Self::finish).
    pub fn is_deferred(&self) -> bool {
        matches!(self.0, PendingInner::Write(_))
    }

    /// Writes the snapshot (every file fsynced and published), if not done yet.
    pub fn finish(self) -> Result<SnapshotInfo> {
        match self.0 {
            PendingInner::Done(info) => Ok(info),
            PendingInner::Write(w) => w(),
        }
    }
}

impl std::fmt::Debug for PendingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PendingInner::Done(info) => f.debug_tuple("PendingSnapshot::Done").field(info).finish(),
            PendingInner::Write(_) => f.write_str("PendingSnapshot::Deferred"),
        }
    }
}

/// Visits one entry of a scan: `(namespace, value)`; return `false` to stop.
pub type ScanFn<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// Visits one entry of a key-group scan: `(key, namespace, value)`; return `false` to stop.
pub type GroupScanFn<'a> = dyn FnMut(&[u8], &[u8], &[u8]) -> bool + 'a;

/// Computes a new value from the current one (`None` if absent) into the buffer (empty
/// when called); see [`StateBackend::update`].
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> Result<()> + 'a;

/// Byte-level keyed state, addressed by (state, key group, key, namespace).
///
/// Values are opaque bytes; [`merge`](Self::merge) appends an operand to the stored value
/// (what list state needs, and what RocksDB's merge operator does without a read).
/// Snapshots cover a range of key groups and land in a folder; a backend restores from
/// one or several snapshots, keeping only its own key groups, so key groups can move
/// between subtasks on rescale.
pub trait StateBackend: Send + Debug {
    /// The key groups this backend holds.
    fn key_groups(&self) -> KeyGroupRange;

    /// Registers state `name` whose values have layout `fingerprint` (or finds it again).
    /// A state restored from a snapshot with another fingerprint is an error.
    fn register(&mut self, name: &str, fingerprint: &str) -> Result<StateId>;

    /// Reads a value into `out` (cleared first); returns whether it exists.
    fn get(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool>;

    /// A hint that `entry` will be read or written soon: a backend that can start
    /// loading it now (the memory backend brings its slot into the CPU cache) does, so
    /// that a caller walking a batch overlaps the memory loads of the rows ahead with
    /// the work on the current one. Does nothing by default; never fails (an unknown
    /// state or key group is simply not prefetched).
    fn prefetch_entry(&self, state: StateId, kg: KeyGroup, entry: &EntryKey) {
        let _ = (state, kg, entry);
    }

    /// [`get`](Self::get) of a prepared entry key (a backend may skip re-encoding and
    /// re-hashing it).
    #[inline]
    fn get_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.get(state, kg, entry.key(), entry.namespace(), out)
    }

    /// Calls `f` with the value of a prepared entry key, if there is one; returns whether
    /// there is. Backends holding values in memory pass them without a copy; the default
    /// reads through [`get_entry`](Self::get_entry).
    #[inline]
    fn read_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        let mut buf = Vec::new();
        let found = self.get_entry(state, kg, entry, &mut buf)?;
        if found {
            f(&buf);
        }
        Ok(found)
    }

    /// [`put`](Self::put) of a prepared entry key.
    #[inline]
    fn put_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        value: &[u8],
    ) -> Result<()> {
        self.put(state, kg, entry.key(), entry.namespace(), value)
    }

    /// [`delete`](Self::delete) of a prepared entry key.
    #[inline]
    fn delete_entry(&mut self, state: StateId, kg: KeyGroup, entry: &EntryKey) -> Result<bool> {
        self.delete(state, kg, entry.key(), entry.namespace())
    }

    /// [`merge`](Self::merge) of a prepared entry key.
    #[inline]
    fn merge_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        operand: &[u8],
    ) -> Result<()> {
        self.merge(state, kg, entry.key(), entry.namespace(), operand)
    }

    /// [`update`](Self::update) of a prepared entry key.
    #[inline]
    fn update_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut UpdateFn<'_>,
    ) -> Result<()> {
        self.update(state, kg, entry.key(), entry.namespace(), f)
    }

    /// Writes a value.
    fn put(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
    ) -> Result<()>;

    /// Deletes a value; returns whether it existed.
    fn delete(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<bool>;

    /// Appends `operand` to the value (an absent value counts as empty).
    fn merge(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        operand: &[u8],
    ) -> Result<()>;

    /// Allows the backend to drop the state's least recently used entries when it runs
    /// over a memory bound: the state is a cache. Backends without a memory bound keep
    /// everything (the default; RocksDB spills to disk instead).
    fn set_evictable(&mut self, state: StateId) -> Result<()> {
        let _ = state;
        Ok(())
    }

    /// Tells the backend that `state` will be scanned by key ([`scan`](Self::scan)):
    /// backends whose scans would otherwise pass over the whole key group keep an
    /// ordered index for it (the memory backend; it costs an ordered insert per new
    /// entry). Backends ordered anyway (RocksDB) ignore it (the default).
    fn index_for_scans(&mut self, state: StateId) -> Result<()> {
        let _ = state;
        Ok(())
    }

    /// Whether [`merge`](Self::merge) (a blind write) is much cheaper here than
    /// [`update`](Self::update) (a read, then a write): true for log-structured stores
    /// such as RocksDB, where a read searches the memtable and SST files; false for hash
    /// maps, where an in-place update is one lookup and keeps values compact.
    fn prefers_merge(&self) -> bool {
        false
    }

    /// Read-modify-write of one value: `f` sees the current value and writes the new one,
    /// which is then stored. Backends that can do it in one lookup do (the memory
    /// backend); the default is a get then a put. An error from `f` writes nothing.
    fn update(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        f: &mut UpdateFn<'_>,
    ) -> Result<()> {
        let mut old = Vec::new();
        let found = self.get(state, kg, key, namespace, &mut old)?;
        let mut new = Vec::new();
        f(found.then_some(old.as_slice()), &mut new)?;
        self.put(state, kg, key, namespace, &new)
    }

    /// Visits the entries of `key` whose namespace starts with `prefix`, in namespace
    /// byte order.
    fn scan(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        prefix: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<()>;

    /// Visits every entry of a key group, in (key, namespace) byte order.
    fn scan_key_group(&self, state: StateId, kg: KeyGroup, f: &mut GroupScanFn<'_>) -> Result<()>;

    /// Writes the key groups of `range` to a snapshot in folder `dir` (created if
    /// missing): every file fsynced and published by an atomic rename.
    fn snapshot(&mut self, dir: &Path, range: KeyGroupRange) -> Result<SnapshotInfo>;

    /// Begins a snapshot of `range` into `dir` that [`PendingSnapshot::finish`] writes,
    /// possibly on another thread while processing goes on (Flink's asynchronous
    /// snapshot phase). Backends that can share their state copy-on-write (the memory
    /// backend) defer the writing; the default writes at once.
    fn snapshot_async(&mut self, dir: &Path, range: KeyGroupRange) -> Result<PendingSnapshot> {
        self.snapshot(dir, range).map(PendingSnapshot::done)
    }

    /// Loads the key groups of this backend's range from the snapshots in `dirs`
    /// (several, after a rescale), replacing what it held for them.
    fn restore(&mut self, dirs: &[PathBuf]) -> Result<()>;
}

/// A boxed backend is a backend: jobs pick theirs at run time.
impl<B: StateBackend + ?Sized> StateBackend for Box<B> {
    fn key_groups(&self) -> KeyGroupRange {
        (**self).key_groups()
    }
    fn register(&mut self, name: &str, fingerprint: &str) -> Result<StateId> {
        (**self).register(name, fingerprint)
    }
    #[inline]
    fn get(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        (**self).get(state, kg, key, namespace, out)
    }
    #[inline]
    fn prefetch_entry(&self, state: StateId, kg: KeyGroup, entry: &EntryKey) {
        (**self).prefetch_entry(state, kg, entry)
    }
    #[inline]
    fn get_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        (**self).get_entry(state, kg, entry, out)
    }
    #[inline]
    fn read_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        (**self).read_entry(state, kg, entry, f)
    }
    #[inline]
    fn put_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        value: &[u8],
    ) -> Result<()> {
        (**self).put_entry(state, kg, entry, value)
    }
    #[inline]
    fn delete_entry(&mut self, state: StateId, kg: KeyGroup, entry: &EntryKey) -> Result<bool> {
        (**self).delete_entry(state, kg, entry)
    }
    #[inline]
    fn merge_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        operand: &[u8],
    ) -> Result<()> {
        (**self).merge_entry(state, kg, entry, operand)
    }
    #[inline]
    fn update_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut UpdateFn<'_>,
    ) -> Result<()> {
        (**self).update_entry(state, kg, entry, f)
    }
    #[inline]
    fn put(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
    ) -> Result<()> {
        (**self).put(state, kg, key, namespace, value)
    }
    fn delete(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<bool> {
        (**self).delete(state, kg, key, namespace)
    }
    fn merge(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        operand: &[u8],
    ) -> Result<()> {
        (**self).merge(state, kg, key, namespace, operand)
    }
    #[inline]
    fn update(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        f: &mut UpdateFn<'_>,
    ) -> Result<()> {
        (**self).update(state, kg, key, namespace, f)
    }
    fn prefers_merge(&self) -> bool {
        (**self).prefers_merge()
    }
    fn set_evictable(&mut self, state: StateId) -> Result<()> {
        (**self).set_evictable(state)
    }
    fn index_for_scans(&mut self, state: StateId) -> Result<()> {
        (**self).index_for_scans(state)
    }
    fn scan(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        prefix: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<()> {
        (**self).scan(state, kg, key, prefix, f)
    }
    fn scan_key_group(&self, state: StateId, kg: KeyGroup, f: &mut GroupScanFn<'_>) -> Result<()> {
        (**self).scan_key_group(state, kg, f)
    }
    fn snapshot(&mut self, dir: &Path, range: KeyGroupRange) -> Result<SnapshotInfo> {
        (**self).snapshot(dir, range)
    }
    fn snapshot_async(&mut self, dir: &Path, range: KeyGroupRange) -> Result<PendingSnapshot> {
        (**self).snapshot_async(dir, range)
    }
    fn restore(&mut self, dirs: &[PathBuf]) -> Result<()> {
        (**self).restore(dirs)
    }
}

/// Hashes an entry's (key, namespace), the same way everywhere in this process (one
/// random seed per process: a crafted key cannot aim at a known hash). The parts are
/// hashed where they lie, not from a freshly written composite key: reading back bytes
/// just stored in pieces would stall the CPU's store forwarding.
#[inline]
pub(crate) fn entry_hash(key: &[u8], namespace: &[u8]) -> u64 {
    static HASHER: std::sync::OnceLock<hashbrown::DefaultHashBuilder> = std::sync::OnceLock::new();
    let mut h = HASHER.get_or_init(Default::default).build_hasher();
    h.write_usize(key.len());
    h.write(key);
    if !namespace.is_empty() {
        h.write(namespace);
    }
    h.finish()
}

/// [`entry_hash`] of a composite key.
#[inline]
pub(crate) fn composite_hash(c: &[u8]) -> u64 {
    match split_composite(c) {
        Some((key, namespace)) => entry_hash(key, namespace),
        None => entry_hash(c, &[]),
    }
}

/// The address of an entry within a state, prepared once for several accesses: the
/// composite key (key length, key, namespace) and its hash. [`KeyedState`] keeps one
/// for its current key and namespace, so a read and a write of the same entry (or of
/// several states of one key) encode and hash it once.
///
/// [`KeyedState`]: crate::KeyedState
#[derive(Clone, Debug)]
pub struct EntryKey {
    /// The composite when it fits (most keys): no allocation, no library copy.
    inline: [u8; ENTRY_INLINE],
    /// The composite when it does not.
    heap: Vec<u8>,
    len: usize,
    key_len: usize,
    hash: u64,
}

/// The longest composite an [`EntryKey`] holds without allocating.
const ENTRY_INLINE: usize = 48;

impl Default for EntryKey {
    fn default() -> Self {
        EntryKey::new(&[], &[])
    }
}

impl EntryKey {
    /// The entry of (`key`, `namespace`).
    pub fn new(key: &[u8], namespace: &[u8]) -> Self {
        let mut e = EntryKey {
            inline: [0; ENTRY_INLINE],
            heap: Vec::new(),
            len: 0,
            key_len: 0,
            hash: 0,
        };
        e.set(key, namespace);
        e
    }

    /// Readdresses to (`key`, `namespace`).
    #[inline]
    pub fn set(&mut self, key: &[u8], namespace: &[u8]) {
        let (k, total) = (key.len(), 4 + key.len() + namespace.len());
        if total <= ENTRY_INLINE {
            self.inline[..4].copy_from_slice(&(k as u32).to_le_bytes());
            short_copy(&mut self.inline[4..4 + k], key);
            short_copy(&mut self.inline[4 + k..total], namespace);
        } else {
            composite(&mut self.heap, key, namespace);
        }
        self.len = total;
        self.key_len = k;
        self.hash = entry_hash(key, namespace);
    }

    /// Readdresses to `key`, keeping the namespace.
    #[inline]
    pub fn set_key(&mut self, key: &[u8]) {
        if self.namespace().is_empty() {
            self.set(key, &[]);
        } else {
            let namespace = smallvec::SmallVec::<[u8; ENTRY_INLINE]>::from_slice(self.namespace());
            self.set(key, &namespace);
        }
    }

    /// Readdresses to `namespace`, keeping the key.
    pub fn set_namespace(&mut self, namespace: &[u8]) {
        let start = 4 + self.key_len;
        let total = start + namespace.len();
        match (self.len <= ENTRY_INLINE, total <= ENTRY_INLINE) {
            (true, true) => short_copy(&mut self.inline[start..total], namespace),
            (true, false) => {
                self.heap.clear();
                self.heap.extend_from_slice(&self.inline[..start]);
                self.heap.extend_from_slice(namespace);
            }
            (false, true) => {
                self.inline[..start].copy_from_slice(&self.heap[..start]);
                self.inline[start..total].copy_from_slice(namespace);
            }
            (false, false) => {
                self.heap.truncate(start);
                self.heap.extend_from_slice(namespace);
            }
        }
        self.len = total;
        self.hash = entry_hash(self.key(), namespace);
    }

    /// The key.
    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.composite()[4..4 + self.key_len]
    }

    /// The namespace.
    #[inline]
    pub fn namespace(&self) -> &[u8] {
        &self.composite()[4 + self.key_len..]
    }

    /// Key length (u32 LE), key, namespace.
    #[inline]
    pub(crate) fn composite(&self) -> &[u8] {
        if self.len <= ENTRY_INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    /// [`entry_hash`] of the key and namespace.
    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// The composite key of an entry: key length (u32 LE), key, namespace. Prefixing the
/// length keeps `(key, namespace)` pairs unambiguous and groups a key's namespaces.
#[inline]
pub(crate) fn composite(buf: &mut Vec<u8>, key: &[u8], namespace: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(namespace);
}

/// Calls `f` with `prefix` followed by the composite key of (`key`, `namespace`), built
/// in a stack buffer when small: reads take `&self` and have no scratch buffer.
#[inline]
pub(crate) fn with_composite<R>(
    prefix: &[u8],
    key: &[u8],
    namespace: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let n = prefix.len() + 4 + key.len() + namespace.len();
    let mut stack = [0u8; 64];
    if n > stack.len() {
        let mut buf = Vec::with_capacity(n);
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(namespace);
        return f(&buf);
    }
    let mut at = 0;
    for part in [prefix, &(key.len() as u32).to_le_bytes(), key, namespace] {
        stack[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    f(&stack[..n])
}

/// Splits a composite key into (key, namespace).
pub(crate) fn split_composite(c: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(c.get(..4)?.try_into().ok()?) as usize;
    let rest = &c[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// An entry key readdressed any way (key and namespace together or one at a
        /// time; short and long ones, so it moves between its inline buffer and the
        /// heap) matches one built from scratch.
        #[test]
        fn an_entry_key_matches_its_parts(
            key in prop::collection::vec(any::<u8>(), 0..60),
            other in prop::collection::vec(any::<u8>(), 0..60),
            ns in prop::collection::vec(any::<u8>(), 0..60),
            ns2 in prop::collection::vec(any::<u8>(), 0..60),
        ) {
            let mut e = EntryKey::new(&other, &ns2);
            for (k, n) in [(&key, &ns), (&other, &ns2), (&key, &ns2)] {
                e.set(k, n);
                let mut k = k;
                for (i, n) in [n, &ns, &ns2].into_iter().enumerate() {
                    e.set_namespace(n);
                    if i == 1 {
                        // The key changes under the namespace.
                        e.set_key(&other);
                        k = &other;
                    }
                    let mut c = Vec::new();
                    composite(&mut c, k, n);
                    prop_assert_eq!(e.composite(), &c[..]);
                    prop_assert_eq!(e.key(), &k[..]);
                    prop_assert_eq!(e.namespace(), &n[..]);
                    prop_assert_eq!(e.hash(), entry_hash(k, n));
                    prop_assert_eq!(composite_hash(&c), entry_hash(k, n));
                }
            }
        }
    }
}
