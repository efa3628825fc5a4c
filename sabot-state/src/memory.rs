//! The in-memory state backend: hash maps per key group, copy-on-write snapshots.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashMap;
use sabot_core::{KeyGroup, KeyGroupRange};
use smallvec::SmallVec;

use crate::backend::{
    GroupScanFn, PendingSnapshot, ScanFn, SnapshotInfo, StateBackend, StateId, UpdateFn, composite,
    split_composite, with_composite,
};
use crate::snapshot::{self, TableMeta};
use crate::{Result, StateError};

/// Small keys and values live inside the hash table's buckets (no pointer to chase, no
/// allocation); larger ones spill to the heap.
type Key = SmallVec<[u8; 24]>;
type Value = SmallVec<[u8; 16]>;

/// One key group of one state: composite key -> value, and, for states scanned by key
/// (see [`StateBackend::index_for_scans`]), each key's namespaces in order.
#[derive(Debug, Clone, Default)]
struct Group {
    map: HashMap<Key, Value>,
    /// Key part of the composite (length + key) -> its namespaces, ordered.
    index: Option<HashMap<Key, std::collections::BTreeSet<Key>>>,
}

/// Overwrites a stored value: in place when the length is unchanged (the common case of
/// a counter or a fixed-size record), without the vector's growth checks.
#[inline]
fn set_value(v: &mut Value, value: &[u8]) {
    if v.len() == value.len() {
        v.copy_from_slice(value);
    } else {
        v.clear();
        v.extend_from_slice(value);
    }
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
            map: HashMap::new(),
            index: indexed.then(Default::default),
        }
    }

    /// Starts keeping the ordered index (of the entries there now, too).
    fn build_index(&mut self) {
        if self.index.is_none() {
            let mut index: HashMap<Key, std::collections::BTreeSet<Key>> = HashMap::new();
            for k in self.map.keys() {
                let (key, ns) = split_at_namespace(k);
                index
                    .entry(Key::from_slice(key))
                    .or_default()
                    .insert(Key::from_slice(ns));
            }
            self.index = Some(index);
        }
    }

    #[inline]
    fn get(&self, k: &[u8]) -> Option<&Value> {
        self.map.get(k)
    }

    #[inline]
    fn get_mut(&mut self, k: &[u8]) -> Option<&mut Value> {
        self.map.get_mut(k)
    }

    #[inline]
    fn contains_key(&self, k: &[u8]) -> bool {
        self.map.contains_key(k)
    }

    #[inline]
    fn insert(&mut self, k: Key, v: Value) {
        if let Some(index) = &mut self.index {
            let (key, ns) = split_at_namespace(&k);
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
        self.map.insert(k, v);
    }

    #[inline]
    fn remove(&mut self, k: &[u8]) -> Option<Value> {
        let v = self.map.remove(k)?;
        if let Some(index) = &mut self.index {
            let (key, ns) = split_at_namespace(k);
            if let Some(set) = index.get_mut(key) {
                set.remove(ns);
                if set.is_empty() {
                    index.remove(key);
                }
            }
        }
        Some(v)
    }

    fn iter(&self) -> hashbrown::hash_map::Iter<'_, Key, Value> {
        self.map.iter()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
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

/// State in hash maps (hashbrown), one per (state, key group).
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
    scratch: Vec<u8>,
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
            scratch: Vec::new(),
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
            if let Some(t) = self.tables.get_mut(state as usize) {
                Arc::make_mut(&mut t.groups[usize::from(slot)]).remove(key.as_slice());
                self.evicted += 1;
            }
        }
    }

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

    fn table(&self, state: StateId) -> Result<&Table> {
        self.tables
            .get(state.0 as usize)
            .ok_or_else(|| StateError::UnknownState(state.0))
    }

    fn group(&self, state: StateId, kg: KeyGroup) -> Result<&Group> {
        let slot = self.slot(kg)?;
        Ok(&self.table(state)?.groups[slot])
    }

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
            .map(|(kg, t, g)| {
                let mut entries: Vec<(&[u8], &[u8])> =
                    g.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                entries.sort_unstable();
                (*kg, *t, entries)
            })
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
        out.clear();
        let group = self.group(state, kg)?;
        Ok(with_composite(&[], key, namespace, |c| {
            match group.get(c) {
                Some(v) => {
                    out.extend_from_slice(v);
                    if self.tracked(state) {
                        self.touch(state, kg, c, v.len());
                    }
                    true
                }
                None => false,
            }
        }))
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
        let mut scratch = std::mem::take(&mut self.scratch);
        composite(&mut scratch, key, namespace);
        let group = self.group_mut(state, kg)?;
        match group.get_mut(scratch.as_slice()) {
            Some(v) => set_value(v, value),
            None => {
                group.insert(Key::from_slice(&scratch), Value::from_slice(value));
            }
        }
        if self.tracked(state) {
            self.touch(state, kg, &scratch, value.len());
            self.evict();
        }
        self.scratch = scratch;
        Ok(())
    }

    fn delete(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<bool> {
        let mut scratch = std::mem::take(&mut self.scratch);
        composite(&mut scratch, key, namespace);
        // Only copy a shared group if there is something to delete.
        let exists = self.group(state, kg)?.contains_key(scratch.as_slice());
        let removed = exists
            && self
                .group_mut(state, kg)?
                .remove(scratch.as_slice())
                .is_some();
        if removed && self.tracked(state) {
            let slot = kg.0 - self.range.start;
            self.lru.borrow_mut().remove(state.0, slot, &scratch);
        }
        self.scratch = scratch;
        Ok(removed)
    }

    fn merge(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        operand: &[u8],
    ) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        composite(&mut scratch, key, namespace);
        let group = self.group_mut(state, kg)?;
        let len = match group.get_mut(scratch.as_slice()) {
            Some(v) => {
                v.extend_from_slice(operand);
                v.len()
            }
            None => {
                group.insert(Key::from_slice(&scratch), Value::from_slice(operand));
                operand.len()
            }
        };
        if self.tracked(state) {
            self.touch(state, kg, &scratch, len);
            self.evict();
        }
        self.scratch = scratch;
        Ok(())
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
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut new = std::mem::take(&mut self.value_scratch);
        composite(&mut scratch, key, namespace);
        new.clear();
        let group = self.group_mut(state, kg)?;
        // One probe when the entry exists; the value is rewritten in place.
        let result = match group.get_mut(scratch.as_slice()) {
            Some(v) => f(Some(v), &mut new).map(|()| set_value(v, &new)),
            None => f(None, &mut new).map(|()| {
                group.insert(Key::from_slice(&scratch), Value::from_slice(&new));
            }),
        };
        if result.is_ok() && self.tracked(state) {
            self.touch(state, kg, &scratch, new.len());
            self.evict();
        }
        self.scratch = scratch;
        self.value_scratch = new;
        result
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
                match group.get(&c) {
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
            .map(|(k, v)| (&k[4 + key.len()..], v.as_slice()))
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
        let mut all: Vec<(&[u8], &[u8])> =
            group.iter().map(|(k, v)| (&k[..], v.as_slice())).collect();
        all.sort_unstable();
        for (c, v) in all {
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
                let tracked = self.tracked(id);
                let group = self.group_mut(id, kg)?;
                let mut used = Vec::new();
                for (k, v) in g.entries {
                    if tracked {
                        used.push((Key::from_slice(&k), v.len()));
                    }
                    group.insert(Key::from_vec(k), Value::from_vec(v));
                }
                for (k, len) in used {
                    self.touch(id, kg, &k, len);
                }
            }
        }
        self.evict();
        Ok(())
    }
}
