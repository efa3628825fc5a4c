//! The in-memory state backend: a hash table per key group, copy-on-write snapshots.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashMap;
use sabot_core::{KeyGroup, KeyGroupRange};
use smallvec::SmallVec;

use crate::backend::{
    EntryKey, GroupScanFn, PendingSnapshot, ScanFn, SnapshotInfo, StateBackend, StateId, UpdateFn,
    composite, composite_hash, entry_hash, split_composite, with_composite,
};
use crate::snapshot::{self, TableMeta};
use crate::table::{ByteTable, MAX_ENTRY, TooLarge};

impl From<TooLarge> for StateError {
    fn from(TooLarge(bytes): TooLarge) -> Self {
        StateError::EntryTooLarge {
            bytes,
            limit: MAX_ENTRY,
        }
    }
}
use crate::{Result, StateError};

/// A key as the ordered scan index holds it.
type Key = SmallVec<[u8; 24]>;

/// One key group of one state: composite key -> value, and, for states scanned by key
/// (see [`StateBackend::index_for_scans`]), each key's namespaces in order.
#[derive(Debug, Clone, Default)]
struct Group {
    map: ByteTable,
    /// Key part of the composite (length + key) -> its namespaces, ordered.
    index: Option<HashMap<Key, std::collections::BTreeSet<Key>>>,
}

/// Splits a composite key into its key part (length prefix and key) and namespace.
#[inline]
fn split_at_namespace(c: &[u8]) -> (&[u8], &[u8]) {
    let len = c
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    c.split_at((4 + len).min(c.len()))
}

impl Group {
    fn new(indexed: bool) -> Self {
        Group {
            map: ByteTable::default(),
            index: indexed.then(Default::default),
        }
    }

    /// Starts keeping the ordered index (of the entries there now, too).
    fn build_index(&mut self) {
        if self.index.is_none() {
            let mut index: HashMap<Key, std::collections::BTreeSet<Key>> = HashMap::new();
            for (k, _) in self.map.iter() {
                let (key, ns) = split_at_namespace(k);
                index
                    .entry(Key::from_slice(key))
                    .or_default()
                    .insert(Key::from_slice(ns));
            }
            self.index = Some(index);
        }
    }

    /// Records a new composite key in the index, if kept.
    #[inline]
    fn indexed(&mut self, fresh: bool, k: &[u8]) {
        if let (true, Some(index)) = (fresh, &mut self.index) {
            let (key, ns) = split_at_namespace(k);
            match index.get_mut(key) {
                Some(set) => {
                    set.insert(Key::from_slice(ns));
                }
                None => {
                    index.insert(
                        Key::from_slice(key),
                        std::iter::once(Key::from_slice(ns)).collect(),
                    );
                }
            }
        }
    }

    #[inline]
    fn get(&self, hash: u64, k: &[u8]) -> Option<&[u8]> {
        self.map.get(hash, k)
    }

    #[inline]
    fn contains_key(&self, hash: u64, k: &[u8]) -> bool {
        self.map.contains(hash, k)
    }

    #[inline]
    fn put(&mut self, hash: u64, k: &[u8], v: &[u8]) -> Result<()> {
        let fresh = self.map.put(hash, k, v)?;
        self.indexed(fresh, k);
        Ok(())
    }

    /// Appends to a value; returns its new length.
    #[inline]
    fn append(&mut self, hash: u64, k: &[u8], operand: &[u8]) -> Result<usize> {
        let (len, fresh) = self.map.append(hash, k, operand)?;
        self.indexed(fresh, k);
        Ok(len)
    }

    #[inline]
    fn remove(&mut self, hash: u64, k: &[u8]) -> bool {
        if !self.map.remove(hash, k) {
            return false;
        }
        if let Some(index) = &mut self.index {
            let (key, ns) = split_at_namespace(k);
            if let Some(set) = index.get_mut(key) {
                set.remove(ns);
                if set.is_empty() {
                    index.remove(key);
                }
            }
        }
        true
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Every (composite key, value) in key byte order. Sorted by the keys' first 16
    /// bytes read once each, so most comparisons do not go back to keys that live on
    /// the heap (entries with large values).
    fn sorted(&self) -> Vec<(&[u8], &[u8])> {
        let mut all: Vec<(u128, &[u8], &[u8])> = self
            .iter()
            .map(|(k, v)| {
                let mut head = [0u8; 16];
                let n = k.len().min(16);
                head[..n].copy_from_slice(&k[..n]);
                (u128::from_be_bytes(head), k, v)
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        all.into_iter().map(|(_, k, v)| (k, v)).collect()
    }

    fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

#[derive(Debug, Clone)]
struct Table {
    meta: TableMeta,
    /// Entries may be evicted (the state is a cache).
    evictable: bool,
    /// Groups keep an ordered index of their keys, for scans.
    indexed: bool,
    /// Indexed by key group minus the range start. `Arc` for copy-on-write snapshots: a
    /// snapshot shares the groups; the first write after it copies only that group.
    groups: Vec<Arc<Group>>,
}

/// State in hash tables (see the `table` module: one cache line per small entry, which
/// [`prefetch_entry`](StateBackend::prefetch_entry) fetches ahead), one per (state, key
/// group).
///
/// Snapshots are copy-on-write at key-group granularity: [`begin_snapshot`] only clones
/// pointers, processing continues at once, and the snapshot can be written on another
/// thread ([`MemorySnapshot::write`]); the first write to a key group after that copies
/// that group alone.
///
/// [`begin_snapshot`]: MemoryBackend::begin_snapshot
///
/// ```
/// use sabot_core::{KeyGroup, KeyGroupRange};
/// use sabot_state::{MemoryBackend, StateBackend};
///
/// let mut b = MemoryBackend::new(128, KeyGroupRange::for_subtask(128, 1, 0));
/// let counts = b.register("counts", "u64").unwrap();
/// b.put(counts, KeyGroup(5), b"alice", b"", &7u64.to_le_bytes()).unwrap();
/// let mut out = Vec::new();
/// assert!(b.get(counts, KeyGroup(5), b"alice", b"", &mut out).unwrap());
/// assert_eq!(out, 7u64.to_le_bytes());
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    max_parallelism: usize,
    range: KeyGroupRange,
    tables: Vec<Table>,
    value_scratch: Vec<u8>,
    /// Most bytes evictable states may hold, if bounded.
    bound: Option<usize>,
    /// Recency of evictable states' entries (reads count: `get` takes `&self`).
    lru: RefCell<Lru>,
    evicted: u64,
    /// Every state keeps an ordered index for scans.
    index_all: bool,
}

/// Bytes an entry is counted for beyond its key and value: the hash table bucket and the
/// recency bookkeeping.
const ENTRY_OVERHEAD: usize = 64;

/// An evictable entry: (state, key-group slot, composite key).
type EntryId = (u32, u16, Key);

/// Least-recently-used order of the entries of evictable states.
#[derive(Debug, Clone, Default)]
struct Lru {
    tick: u64,
    bytes: usize,
    /// Entry -> (last use, counted bytes).
    entries: HashMap<EntryId, (u64, usize)>,
    /// Last use -> entry, oldest first.
    order: BTreeMap<u64, EntryId>,
}

impl Lru {
    /// Records a use of an entry now holding `size` bytes.
    fn touch(&mut self, state: u32, slot: u16, key: &[u8], size: usize) {
        self.tick += 1;
        let id = (state, slot, Key::from_slice(key));
        if let Some(e) = self.entries.get_mut(&id) {
            self.order.remove(&e.0);
            self.bytes = self.bytes - e.1 + size;
            *e = (self.tick, size);
        } else {
            self.bytes += size;
            self.entries.insert(id.clone(), (self.tick, size));
        }
        self.order.insert(self.tick, id);
    }

    fn remove(&mut self, state: u32, slot: u16, key: &[u8]) {
        if let Some((tick, size)) = self.entries.remove(&(state, slot, Key::from_slice(key))) {
            self.order.remove(&tick);
            self.bytes -= size;
        }
    }

    fn pop_oldest(&mut self) -> Option<EntryId> {
        let (_, id) = self.order.pop_first()?;
        if let Some((_, size)) = self.entries.remove(&id) {
            self.bytes -= size;
        }
        Some(id)
    }
}

impl MemoryBackend {
    /// An empty backend for key groups `range` out of `max_parallelism`.
    pub fn new(max_parallelism: usize, range: KeyGroupRange) -> Self {
        MemoryBackend {
            max_parallelism,
            range,
            tables: Vec::new(),
            value_scratch: Vec::new(),
            bound: None,
            lru: RefCell::new(Lru::default()),
            evicted: 0,
            index_all: false,
        }
    }

    /// Keeps an ordered index for scans on every state, as
    /// [`index_for_scans`](StateBackend::index_for_scans) does for one.
    pub fn with_scan_indexes(mut self) -> Self {
        self.index_all = true;
        self
    }

    /// Bounds the memory of evictable states (see
    /// [`StateDescriptor::evictable`](crate::StateDescriptor::evictable)) to `max_bytes`,
    /// counting keys, values and 64 bytes per entry: beyond it, their least recently
    /// used entries (read or written) are dropped. Other states are never evicted.
    pub fn with_eviction_bound(mut self, max_bytes: usize) -> Self {
        self.bound = Some(max_bytes);
        self
    }

    /// Entries evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes counted against the eviction bound now.
    pub fn evictable_bytes(&self) -> usize {
        self.lru.borrow().bytes
    }

    /// Whether reads and writes of `state` are tracked for eviction.
    #[inline]
    fn tracked(&self, state: StateId) -> bool {
        self.bound.is_some()
            && self
                .tables
                .get(state.0 as usize)
                .is_some_and(|t| t.evictable)
    }

    /// Records a use of an entry of a tracked state.
    fn touch(&self, state: StateId, kg: KeyGroup, composite: &[u8], value_len: usize) {
        let slot = kg.0 - self.range.start;
        self.lru.borrow_mut().touch(
            state.0,
            slot,
            composite,
            composite.len() + value_len + ENTRY_OVERHEAD,
        );
    }

    /// Drops least recently used entries of evictable states until under the bound.
    fn evict(&mut self) {
        let Some(bound) = self.bound else { return };
        loop {
            let id = {
                let mut lru = self.lru.borrow_mut();
                if lru.bytes <= bound {
                    return;
                }
                lru.pop_oldest()
            };
            let Some((state, slot, key)) = id else { return };
            let hash = composite_hash(&key);
            if let Some(t) = self.tables.get_mut(state as usize) {
                Arc::make_mut(&mut t.groups[usize::from(slot)]).remove(hash, key.as_slice());
                self.evicted += 1;
            }
        }
    }

    #[inline]
    fn slot(&self, kg: KeyGroup) -> Result<usize> {
        if self.range.contains(kg) {
            Ok(usize::from(kg.0 - self.range.start))
        } else {
            Err(StateError::KeyGroupOutOfRange {
                key_group: kg.0,
                start: self.range.start,
                end: self.range.end,
            })
        }
    }

    #[inline]
    fn table(&self, state: StateId) -> Result<&Table> {
        self.tables
            .get(state.0 as usize)
            .ok_or_else(|| StateError::UnknownState(state.0))
    }

    #[inline]
    fn group(&self, state: StateId, kg: KeyGroup) -> Result<&Group> {
        let slot = self.slot(kg)?;
        Ok(&self.table(state)?.groups[slot])
    }

    #[inline]
    fn group_mut(&mut self, state: StateId, kg: KeyGroup) -> Result<&mut Group> {
        let slot = self.slot(kg)?;
        let t = self
            .tables
            .get_mut(state.0 as usize)
            .ok_or_else(|| StateError::UnknownState(state.0))?;
        Ok(Arc::make_mut(&mut t.groups[slot]))
    }

    fn new_table(&self, meta: TableMeta) -> Table {
        Table {
            meta,
            evictable: false,
            indexed: self.index_all,
            groups: (0..self.range.len())
                .map(|_| Arc::new(Group::new(self.index_all)))
                .collect(),
        }
    }

    // --- the operations on a composite key `c` whose hash is `hash` ---

    #[inline]
    fn get_at(
        &self,
        state: StateId,
        kg: KeyGroup,
        c: &[u8],
        hash: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        out.clear();
        match self.group(state, kg)?.get(hash, c) {
            Some(v) => {
                out.extend_from_slice(v);
                if self.tracked(state) {
                    self.touch(state, kg, c, v.len());
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[inline]
    fn put_at(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        c: &[u8],
        hash: u64,
        value: &[u8],
    ) -> Result<()> {
        self.group_mut(state, kg)?.put(hash, c, value)?;
        if self.tracked(state) {
            self.touch(state, kg, c, value.len());
            self.evict();
        }
        Ok(())
    }

    fn delete_at(&mut self, state: StateId, kg: KeyGroup, c: &[u8], hash: u64) -> Result<bool> {
        // Only copy a shared group if there is something to delete.
        if !self.group(state, kg)?.contains_key(hash, c) {
            return Ok(false);
        }
        let removed = self.group_mut(state, kg)?.remove(hash, c);
        if removed && self.tracked(state) {
            let slot = kg.0 - self.range.start;
            self.lru.borrow_mut().remove(state.0, slot, c);
        }
        Ok(removed)
    }

    fn merge_at(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        c: &[u8],
        hash: u64,
        operand: &[u8],
    ) -> Result<()> {
        let len = self.group_mut(state, kg)?.append(hash, c, operand)?;
        if self.tracked(state) {
            self.touch(state, kg, c, len);
            self.evict();
        }
        Ok(())
    }

    #[inline]
    fn update_at(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        c: &[u8],
        hash: u64,
        f: &mut UpdateFn<'_>,
    ) -> Result<()> {
        let mut new = std::mem::take(&mut self.value_scratch);
        new.clear();
        let result = (|| {
            let group = self.group_mut(state, kg)?;
            // One search whether or not the entry exists; the value is rewritten in place.
            let fresh = group
                .map
                .update(hash, c, &mut new, |old, new| f(old, new))?;
            group.indexed(fresh, c);
            if self.tracked(state) {
                self.touch(state, kg, c, new.len());
                self.evict();
            }
            Ok(())
        })();
        self.value_scratch = new;
        result
    }

    /// Starts a snapshot of the key groups of `range` (within this backend's): shares the
    /// current groups, copying nothing now.
    pub fn begin_snapshot(&self, range: KeyGroupRange) -> MemorySnapshot {
        let tables = self.tables.iter().map(|t| t.meta.clone()).collect();
        let mut groups = Vec::new();
        for (ti, t) in self.tables.iter().enumerate() {
            for kg in range.start.max(self.range.start)..range.end.min(self.range.end) {
                let g = &t.groups[usize::from(kg - self.range.start)];
                if !g.is_empty() {
                    groups.push((kg, ti as u32, g.clone()));
                }
            }
        }
        MemorySnapshot {
            max_parallelism: self.max_parallelism,
            tables,
            groups,
        }
    }

    /// The number of entries over every state and key group.
    pub fn len(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| t.groups.iter())
            .map(|g| g.len())
            .sum()
    }

    /// Whether no state holds an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A snapshot in progress: it shares the backend's key groups as they were when it began.
/// `Send`, so it can be written on another thread while processing goes on.
#[derive(Debug)]
pub struct MemorySnapshot {
    max_parallelism: usize,
    tables: Vec<TableMeta>,
    groups: Vec<(u16, u32, Arc<Group>)>,
}

impl MemorySnapshot {
    /// Writes the snapshot into folder `dir` (fsynced, atomically renamed).
    pub fn write(&self, dir: &Path) -> Result<SnapshotInfo> {
        let groups: Vec<snapshot::GroupRef<'_>> = self
            .groups
            .iter()
            .map(|(kg, t, g)| (*kg, *t, g.sorted()))
            .collect();
        let (file, bytes, entries) =
            snapshot::write(dir, self.max_parallelism, &self.tables, &groups)?;
        Ok(SnapshotInfo {
            files: vec![file],
            bytes,
            entries: Some(entries),
        })
    }
}

impl StateBackend for MemoryBackend {
    fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    fn register(&mut self, name: &str, fingerprint: &str) -> Result<StateId> {
        if let Some(i) =
            snapshot::find_table(self.tables.iter().map(|t| &t.meta), name, fingerprint)?
        {
            return Ok(StateId(i as u32));
        }
        let t = self.new_table(TableMeta {
            name: name.to_owned(),
            fingerprint: fingerprint.to_owned(),
        });
        self.tables.push(t);
        Ok(StateId(self.tables.len() as u32 - 1))
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
        with_composite(&[], key, namespace, |c| {
            self.get_at(state, kg, c, entry_hash(key, namespace), out)
        })
    }

    #[inline]
    fn get_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        self.get_at(state, kg, entry.composite(), entry.hash(), out)
    }

    #[inline]
    fn read_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        let c = entry.composite();
        match self.group(state, kg)?.get(entry.hash(), c) {
            Some(v) => {
                f(v);
                if self.tracked(state) {
                    self.touch(state, kg, c, v.len());
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[inline]
    fn prefetch_entry(&self, state: StateId, kg: KeyGroup, entry: &EntryKey) {
        if let Ok(group) = self.group(state, kg) {
            group.map.prefetch(entry.hash());
        }
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
        with_composite(&[], key, namespace, |c| {
            self.put_at(state, kg, c, entry_hash(key, namespace), value)
        })
    }

    #[inline]
    fn put_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        value: &[u8],
    ) -> Result<()> {
        self.put_at(state, kg, entry.composite(), entry.hash(), value)
    }

    fn delete(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<bool> {
        with_composite(&[], key, namespace, |c| {
            self.delete_at(state, kg, c, entry_hash(key, namespace))
        })
    }

    fn delete_entry(&mut self, state: StateId, kg: KeyGroup, entry: &EntryKey) -> Result<bool> {
        self.delete_at(state, kg, entry.composite(), entry.hash())
    }

    fn merge(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        operand: &[u8],
    ) -> Result<()> {
        with_composite(&[], key, namespace, |c| {
            self.merge_at(state, kg, c, entry_hash(key, namespace), operand)
        })
    }

    fn merge_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        operand: &[u8],
    ) -> Result<()> {
        self.merge_at(state, kg, entry.composite(), entry.hash(), operand)
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
        with_composite(&[], key, namespace, |c| {
            self.update_at(state, kg, c, entry_hash(key, namespace), f)
        })
    }

    #[inline]
    fn update_entry(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut UpdateFn<'_>,
    ) -> Result<()> {
        self.update_at(state, kg, entry.composite(), entry.hash(), f)
    }

    fn index_for_scans(&mut self, state: StateId) -> Result<()> {
        let t = self
            .tables
            .get_mut(state.0 as usize)
            .ok_or_else(|| StateError::UnknownState(state.0))?;
        if !t.indexed {
            t.indexed = true;
            for g in &mut t.groups {
                Arc::make_mut(g).build_index();
            }
        }
        Ok(())
    }

    fn set_evictable(&mut self, state: StateId) -> Result<()> {
        let t = self
            .tables
            .get_mut(state.0 as usize)
            .ok_or_else(|| StateError::UnknownState(state.0))?;
        if t.evictable {
            return Ok(());
        }
        t.evictable = true;
        if self.bound.is_some() {
            // Entries already there count too (in no particular order of use).
            let mut lru = self.lru.borrow_mut();
            for (slot, g) in t.groups.iter().enumerate() {
                for (k, v) in g.iter() {
                    lru.touch(state.0, slot as u16, k, k.len() + v.len() + ENTRY_OVERHEAD);
                }
            }
        }
        self.evict();
        Ok(())
    }

    fn scan(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        prefix: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<()> {
        let group = self.group(state, kg)?;
        if let Some(index) = &group.index {
            // This key's namespaces in order from the prefix: no sorting, no pass over
            // the other keys. Composite keys are built on the stack when small.
            let mut c: SmallVec<[u8; 128]> = SmallVec::new();
            c.extend_from_slice(&(key.len() as u32).to_le_bytes());
            c.extend_from_slice(key);
            let key_len = c.len();
            let Some(set) = index.get(&c[..]) else {
                return Ok(());
            };
            let mut visit = |ns: &Key| {
                c.truncate(key_len);
                c.extend_from_slice(ns);
                match group.get(composite_hash(&c), &c) {
                    Some(v) => f(ns, v),
                    None => true,
                }
            };
            if prefix.is_empty() {
                // Every namespace: no search for the first.
                for ns in set {
                    if !visit(ns) {
                        break;
                    }
                }
            } else {
                for ns in set
                    .range(Key::from_slice(prefix)..)
                    .take_while(|ns| ns.starts_with(prefix))
                {
                    if !visit(ns) {
                        break;
                    }
                }
            }
            return Ok(());
        }
        let mut p = Vec::new();
        composite(&mut p, key, prefix);
        let mut hits: Vec<(&[u8], &[u8])> = group
            .iter()
            .filter(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| (&k[4 + key.len()..], v))
            .collect();
        hits.sort_unstable();
        for (ns, v) in hits {
            if !f(ns, v) {
                break;
            }
        }
        Ok(())
    }

    fn scan_key_group(&self, state: StateId, kg: KeyGroup, f: &mut GroupScanFn<'_>) -> Result<()> {
        let group = self.group(state, kg)?;
        for (c, v) in group.sorted() {
            if let Some((k, ns)) = split_composite(c)
                && !f(k, ns, v)
            {
                break;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, dir: &Path, range: KeyGroupRange) -> Result<SnapshotInfo> {
        self.begin_snapshot(range).write(dir)
    }

    fn snapshot_async(&mut self, dir: &Path, range: KeyGroupRange) -> Result<PendingSnapshot> {
        let snapshot = self.begin_snapshot(range);
        let dir = dir.to_path_buf();
        Ok(PendingSnapshot::deferred(move || snapshot.write(&dir)))
    }

    fn restore(&mut self, dirs: &[PathBuf]) -> Result<()> {
        if dirs.is_empty() {
            return Err(StateError::NothingToRestore);
        }
        // Decode and check everything first: a failed restore changes nothing.
        let mut decoded = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let d = snapshot::read(dir)?;
            if d.max_parallelism != self.max_parallelism {
                return Err(StateError::MaxParallelismMismatch {
                    path: dir.join(snapshot::SNAPSHOT_FILE),
                    snapshot: d.max_parallelism,
                    expected: self.max_parallelism,
                });
            }
            snapshot::check_layouts(self.tables.iter().map(|t| &t.meta), &d.tables)?;
            decoded.push(d);
        }
        for d in decoded {
            let ids = d
                .tables
                .iter()
                .map(|t| self.register(&t.name, &t.fingerprint))
                .collect::<Result<Vec<_>>>()?;
            for g in d.groups {
                let kg = KeyGroup(g.key_group);
                if !self.range.contains(kg) {
                    continue;
                }
                let id = ids[g.table as usize];
                for (k, v) in &g.entries {
                    let hash = composite_hash(k);
                    self.group_mut(id, kg)?.put(hash, k, v)?;
                }
                if self.tracked(id) {
                    for (k, v) in &g.entries {
                        self.touch(id, kg, k, v.len());
                    }
                }
            }
        }
        self.evict();
        Ok(())
    }
}
