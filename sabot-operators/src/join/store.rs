//! Where a join keeps its rows: in the job's state backend, or (memory state) in hash
//! tables inside the operator, written to a backend only for snapshots.
//!
//! Both keep the same entries (see [`super::rows`]): per side, key and event time, a row
//! with how many times it arrived and how many of those matched nothing yet. The
//! in-operator store keeps each key's rows in a vector sorted by time, so a probe
//! binary-searches its time range and expiry drops a prefix; the backend store goes
//! through byte-level state (composite keys with the whole row in the namespace, an
//! ordered index per key). Snapshots of both have the same layout: a job can restore
//! either from either, at any parallelism.

use std::collections::VecDeque;

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;
use sabot_core::codec::Codec;
use sabot_core::key::KeyGroup;
use sabot_state::{StateBackend, StateId};
use smallvec::SmallVec;

use super::rows::{bad_entry, entry, split_namespace, time_key, write_entry};
use crate::{Result, TaskContext};

/// A join key in the hash table: up to 16 bytes (an `Int64` key is 8) sit in the bucket
/// and compare as two words (no pointer to chase, no `memcmp` call); longer ones live on
/// the heap. Hashed and borrowed as its bytes, so a lookup needs no `Key` built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; 16] },
    Heap(Box<[u8]>),
}

impl Key {
    #[inline]
    pub(crate) fn new(key: &[u8]) -> Self {
        match key.len() {
            len @ 0..=16 => {
                let mut bytes = [0; 16];
                // An `Int64` key: one fixed-size move, not a `memcpy` call.
                match <[u8; 8]>::try_from(key) {
                    Ok(k) => bytes[..8].copy_from_slice(&k),
                    Err(_) => bytes[..len].copy_from_slice(key),
                }
                Key::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => Key::Heap(key.into()),
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

/// Hashed as its bytes are (`Borrow<[u8]>` needs the same hash for both).
impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Ordered as byte strings (the order of the `Vec<u8>` keys it stands for).
impl Ord for Key {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if let (Key::Inline { len: a, bytes: x }, Key::Inline { len: b, bytes: y }) = (self, other)
        {
            // Zero padding sorts at or before any byte: the padded bytes as one big-endian
            // number, then the length, order as the byte strings do (no `memcmp` call;
            // expiry timers sort by key when they fire).
            return u128::from_be_bytes(*x)
                .cmp(&u128::from_be_bytes(*y))
                .then(a.cmp(b));
        }
        self.as_slice().cmp(other.as_slice())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// As a timer key: encoded as a `Vec<u8>` is (a `u32` length, then the bytes), so timers
/// in snapshots read the same either way; a short key costs no allocation.
impl Codec for Key {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.as_slice().len() as u32).encode(out);
        out.extend_from_slice(self.as_slice());
    }

    fn decode(input: &mut &[u8]) -> sabot_core::codec::Result<Self> {
        Ok(Key::new(&Vec::<u8>::decode(input)?))
    }
}

/// A stored row's bytes: a few fixed-width columns fit inline.
type RowBytes = SmallVec<[u8; 40]>;

/// One stored row of the in-operator store.
pub(crate) struct StoredRow {
    ts: i64,
    row: RowBytes,
    count: u32,
    unmatched: u32,
}

/// One key's rows, sorted by time (arrival order among equal times): expiry pops the
/// front, new rows push the back.
pub(crate) struct KeyRows {
    kg: KeyGroup,
    rows: Rows,
}

/// A key's rows in time order. Most keys hold one row (an auction under its id, a bid
/// under its auction until the next watermark expires it), kept in the hash table's
/// bucket: a probe or expiry of such a key reads one place in memory, not the bucket
/// and then a deque's buffer elsewhere. A second row moves them to a deque.
enum Rows {
    One(StoredRow),
    Many(VecDeque<StoredRow>),
}

impl Rows {
    #[inline]
    fn front(&self) -> Option<&StoredRow> {
        match self {
            Rows::One(r) => Some(r),
            Rows::Many(d) => d.front(),
        }
    }

    #[inline]
    fn back(&self) -> Option<&StoredRow> {
        match self {
            Rows::One(r) => Some(r),
            Rows::Many(d) => d.back(),
        }
    }

    /// The index of the first row for which `pred` is false (`pred` holds for a prefix).
    fn partition_point(&self, mut pred: impl FnMut(&StoredRow) -> bool) -> usize {
        match self {
            Rows::One(r) => usize::from(pred(r)),
            Rows::Many(d) => d.partition_point(pred),
        }
    }

    /// The rows from index `from` on, in order, until `f` returns `false`.
    #[inline]
    fn visit_from(&mut self, from: usize, mut f: impl FnMut(&mut StoredRow) -> bool) {
        match self {
            Rows::One(r) => {
                if from == 0 {
                    f(r);
                }
            }
            Rows::Many(d) => {
                for r in d.range_mut(from..) {
                    if !f(r) {
                        break;
                    }
                }
            }
        }
    }

    /// Adds `row` at its place in time order (after rows of the same time).
    #[inline]
    fn add(&mut self, row: StoredRow) {
        if let Rows::One(_) = self {
            let old = std::mem::replace(self, Rows::Many(VecDeque::with_capacity(4)));
            if let (Rows::One(first), Rows::Many(d)) = (old, &mut *self) {
                d.push_back(first);
            }
        }
        if let Rows::Many(d) = self {
            // Rows mostly come in time order: the end, or just before it.
            if d.back().is_none_or(|r| r.ts <= row.ts) {
                d.push_back(row);
            } else {
                let at = d.partition_point(|r| r.ts <= row.ts);
                d.insert(at, row);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &StoredRow> {
        let (one, many) = match self {
            Rows::One(r) => (Some(r), None),
            Rows::Many(d) => (None, Some(d.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// A row a probe found: its time, bytes, count and unmatched count.
pub(crate) struct Found<'a> {
    pub(crate) ts: i64,
    pub(crate) row: &'a [u8],
    pub(crate) count: u32,
    pub(crate) unmatched: u32,
}

/// The names a join's state is registered under, to open backends for snapshots.
pub(crate) struct StateNames {
    pub(crate) ctx: TaskContext,
    pub(crate) operator: String,
    pub(crate) fingerprints: [String; 2],
}

impl StateNames {
    /// A backend of this subtask with both sides' states registered.
    pub(crate) fn open(&self) -> Result<(Box<dyn StateBackend>, [StateId; 2])> {
        let mut backend = self.ctx.open_state(&self.operator)?;
        let states = [
            backend.register("join.left", &self.fingerprints[0])?,
            backend.register("join.right", &self.fingerprints[1])?,
        ];
        for &st in &states {
            backend.index_for_scans(st)?;
        }
        Ok((backend, states))
    }
}

/// A join's rows, per side.
// One per operator: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RowStore {
    /// In the job's backend.
    Backend {
        backend: Box<dyn StateBackend>,
        states: [StateId; 2],
        /// A namespace being built, reused.
        ns: Vec<u8>,
    },
    /// In the operator (memory state).
    Memory {
        sides: [HashMap<Key, KeyRows>; 2],
        names: StateNames,
    },
}

impl RowStore {
    /// The in-operator store.
    pub(crate) fn memory(names: StateNames) -> Self {
        RowStore::Memory {
            sides: [HashMap::new(), HashMap::new()],
            names,
        }
    }

    /// Visits the rows of `side` under `key` with times in `[lo, hi]`, in time order;
    /// `f` returns whether the row is now matched (its unmatched count drops to 0).
    /// Returns whether `side` holds any row under `key`, in the range or not.
    pub(crate) fn probe(
        &mut self,
        operator: &str,
        side: usize,
        kg: KeyGroup,
        key: &[u8],
        (lo, hi): (i64, i64),
        f: &mut dyn FnMut(Found<'_>) -> bool,
    ) -> Result<bool> {
        match self {
            RowStore::Memory { sides, .. } => {
                let Some(k) = sides[side].get_mut(key) else {
                    return Ok(false);
                };
                // Usually every row is in range from the first (a bid's auction, say).
                let from = if k.rows.front().is_none_or(|r| r.ts >= lo) {
                    0
                } else {
                    k.rows.partition_point(|r| r.ts < lo)
                };
                k.rows.visit_from(from, |r| {
                    if r.ts > hi {
                        return false;
                    }
                    let found = Found {
                        ts: r.ts,
                        row: &r.row[..],
                        count: r.count,
                        unmatched: r.unmatched,
                    };
                    if f(found) {
                        r.unmatched = 0;
                    }
                    true
                });
                Ok(true)
            }
            RowStore::Backend {
                backend, states, ..
            } => {
                let state = states[side];
                let mut matched: Vec<Vec<u8>> = Vec::new();
                let mut present = false;
                scan_entries(
                    operator,
                    backend.as_ref(),
                    state,
                    kg,
                    key,
                    &mut |ns, found| {
                        present = true;
                        if found.ts > hi {
                            return false;
                        }
                        if found.ts >= lo && f(found) {
                            matched.push(ns.to_vec());
                        }
                        true
                    },
                )?;
                for ns in matched {
                    let mut err = None;
                    backend.update(state, kg, key, &ns, &mut |old, new| {
                        match old.and_then(entry) {
                            Some((count, _)) => write_entry(new, count, 0),
                            None => err = Some("a row vanished while being matched"),
                        }
                        Ok(())
                    })?;
                    if let Some(what) = err {
                        return Err(bad_entry(operator, what));
                    }
                }
                Ok(present)
            }
        }
    }

    /// Whether `side` holds any row under `key`.
    pub(crate) fn has_rows(
        &self,
        operator: &str,
        side: usize,
        kg: KeyGroup,
        key: &[u8],
    ) -> Result<bool> {
        match self {
            RowStore::Memory { sides, .. } => Ok(sides[side].contains_key(key)),
            RowStore::Backend {
                backend, states, ..
            } => {
                let mut present = false;
                scan_entries(
                    operator,
                    backend.as_ref(),
                    states[side],
                    kg,
                    key,
                    &mut |_, _| {
                        present = true;
                        false
                    },
                )?;
                Ok(present)
            }
        }
    }

    /// Keeps one more arrival of `row` at time `ts` under `key`, `unmatched` (0 or 1)
    /// of it not matched yet. Returns whether the row needs an expiry timer of its own:
    /// in the operator, only a key's earliest row does (a key's timer is at its
    /// earliest row's expiry, and [`expire`](Self::expire) says when the next one is
    /// due); in the backend, every row does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        operator: &str,
        side: usize,
        kg: KeyGroup,
        key: &[u8],
        ts: i64,
        row: &[u8],
        unmatched: u32,
    ) -> Result<bool> {
        match self {
            RowStore::Memory { sides, .. } => {
                let stored = StoredRow {
                    ts,
                    row: RowBytes::from_slice(row),
                    count: 1,
                    unmatched,
                };
                Ok(add_row(&mut sides[side], kg, key, stored))
            }
            RowStore::Backend {
                backend,
                states,
                ns,
            } => {
                ns.clear();
                ns.extend_from_slice(&time_key(ts));
                ns.extend_from_slice(row);
                add_entry(
                    operator,
                    backend.as_mut(),
                    states[side],
                    kg,
                    key,
                    ns,
                    1,
                    unmatched,
                )?;
                Ok(true)
            }
        }
    }

    /// Removes the rows of `side` under `key` whose expiry (growing with their time) is
    /// at or before `cutoff`, visiting each with `f(ts, row, unmatched)`. In the
    /// operator, returns the time of the key's earliest row left, whose expiry the
    /// key's next timer is due at (rows in the backend have a timer each: `None`).
    pub(crate) fn expire(
        &mut self,
        operator: &str,
        side: usize,
        kg: KeyGroup,
        key: &[u8],
        expired: &dyn Fn(i64) -> bool,
        f: &mut dyn FnMut(i64, &[u8], u32),
    ) -> Result<Option<i64>> {
        match self {
            RowStore::Memory { sides, .. } => {
                let EntryRef::Occupied(mut o) = sides[side].entry_ref(key) else {
                    return Ok(None);
                };
                let rows = &mut o.get_mut().rows;
                // Usually all of a key's rows expire together (its newest is due too).
                if rows.back().is_some_and(|r| expired(r.ts)) {
                    for r in o.remove().rows.iter() {
                        f(r.ts, &r.row[..], r.unmatched);
                    }
                    return Ok(None);
                }
                let n = rows.partition_point(|r| expired(r.ts));
                if let Rows::Many(d) = rows {
                    for r in d.drain(..n) {
                        f(r.ts, &r.row[..], r.unmatched);
                    }
                }
                // Not every row expired (`n < len`): some are left.
                Ok(rows.front().map(|r| r.ts))
            }
            RowStore::Backend {
                backend, states, ..
            } => {
                let state = states[side];
                let mut gone: Vec<Vec<u8>> = Vec::new();
                scan_entries(
                    operator,
                    backend.as_ref(),
                    state,
                    kg,
                    key,
                    &mut |ns, found| {
                        if !expired(found.ts) {
                            return false;
                        }
                        f(found.ts, found.row, found.unmatched);
                        gone.push(ns.to_vec());
                        true
                    },
                )?;
                for ns in gone {
                    backend.delete(state, kg, key, &ns)?;
                }
                Ok(None)
            }
        }
    }

    /// Starts a snapshot into `dir`: of the job's backend, or (in-operator rows) of a
    /// fresh backend holding every row, identical rows merged into one entry as the
    /// backend store keeps them.
    pub(crate) fn snapshot_async<K, N>(
        &mut self,
        operator: &str,
        target: &crate::SnapshotTarget,
        timers: &sabot_time::TimerService<K, N>,
        watermark: sabot_core::Timestamp,
    ) -> Result<Option<crate::SnapshotWrite>>
    where
        K: sabot_time::TimerKey,
        N: sabot_core::codec::Codec + Clone + Eq + std::hash::Hash + Ord,
    {
        let (sides, names) = match self {
            RowStore::Backend { backend, .. } => {
                return crate::snapshot::backend_write_async(target, backend, timers, watermark);
            }
            RowStore::Memory { sides, names } => (sides, names),
        };
        let (mut backend, states) = names.open()?;
        let mut ns = Vec::new();
        for (side, rows) in sides.iter().enumerate() {
            for (key, k) in rows {
                for r in k.rows.iter() {
                    ns.clear();
                    ns.extend_from_slice(&time_key(r.ts));
                    ns.extend_from_slice(&r.row);
                    add_entry(
                        operator,
                        backend.as_mut(),
                        states[side],
                        k.kg,
                        key.as_slice(),
                        &ns,
                        r.count,
                        r.unmatched,
                    )?;
                }
            }
        }
        crate::snapshot::backend_write_async(target, &mut backend, timers, watermark)
    }

    /// Restores the rows and `timers` from the snapshots in `dirs`; returns the
    /// watermark they were taken at.
    pub(crate) fn restore<K, N>(
        &mut self,
        operator: &str,
        from: &[crate::SnapshotSource],
        timers: &mut sabot_time::TimerService<K, N>,
    ) -> Result<sabot_core::Timestamp>
    where
        K: sabot_time::TimerKey,
        N: sabot_core::codec::Codec + Clone + Eq + std::hash::Hash + Ord,
    {
        let (sides, names) = match self {
            RowStore::Backend { backend, .. } => {
                return crate::snapshot::backend_read(from, backend, timers);
            }
            RowStore::Memory { sides, names } => (sides, names),
        };
        let (mut backend, states) = names.open()?;
        let watermark = crate::snapshot::backend_read(from, &mut backend, timers)?;
        let range = backend.key_groups();
        for (side, state) in states.into_iter().enumerate() {
            let rows = &mut sides[side];
            rows.clear();
            for kg in range.start..range.end {
                let kg = KeyGroup(kg);
                let mut bad = None;
                backend.scan_key_group(state, kg, &mut |key, ns, value| {
                    let (Some((ts, row)), Some((count, unmatched))) =
                        (split_namespace(ns), entry(value))
                    else {
                        bad = Some("namespace or value too short");
                        return false;
                    };
                    let stored = StoredRow {
                        ts,
                        row: RowBytes::from_slice(row),
                        count,
                        unmatched,
                    };
                    add_row(rows, kg, key, stored);
                    true
                })?;
                if let Some(what) = bad {
                    return Err(bad_entry(operator, what));
                }
            }
            // A key group's scan need not come in namespace order.
            for k in rows.values_mut() {
                if let Rows::Many(d) = &mut k.rows {
                    d.make_contiguous()
                        .sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.row.cmp(&b.row)));
                }
            }
        }
        Ok(watermark)
    }
}

/// Adds `stored` under `key` in its time order; returns whether it is now the key's
/// earliest row (the first of a new key, or earlier than the others).
fn add_row(rows: &mut HashMap<Key, KeyRows>, kg: KeyGroup, key: &[u8], stored: StoredRow) -> bool {
    match rows.entry_ref(key) {
        EntryRef::Vacant(v) => {
            v.insert_with_key(
                Key::new(key),
                KeyRows {
                    kg,
                    rows: Rows::One(stored),
                },
            );
            true
        }
        EntryRef::Occupied(mut o) => {
            let rows = &mut o.get_mut().rows;
            let first = rows.front().is_none_or(|r| stored.ts < r.ts);
            rows.add(stored);
            first
        }
    }
}

/// Visits the entries of `state` under `key` in namespace (time) order with their
/// namespace; `f` returns `false` to stop. A malformed entry is an error.
fn scan_entries(
    operator: &str,
    backend: &dyn StateBackend,
    state: StateId,
    kg: KeyGroup,
    key: &[u8],
    f: &mut dyn FnMut(&[u8], Found<'_>) -> bool,
) -> Result<()> {
    let mut bad = None;
    backend.scan(state, kg, key, b"", &mut |ns, value| {
        let (Some((ts, row)), Some((count, unmatched))) = (split_namespace(ns), entry(value))
        else {
            bad = Some("namespace or value too short");
            return false;
        };
        f(
            ns,
            Found {
                ts,
                row,
                count,
                unmatched,
            },
        )
    })?;
    match bad {
        Some(what) => Err(bad_entry(operator, what)),
        None => Ok(()),
    }
}

/// Adds `count` arrivals (`unmatched` of them unmatched) to the entry at `ns`.
#[allow(clippy::too_many_arguments)]
fn add_entry(
    operator: &str,
    backend: &mut dyn StateBackend,
    state: StateId,
    kg: KeyGroup,
    key: &[u8],
    ns: &[u8],
    count: u32,
    unmatched: u32,
) -> Result<()> {
    let mut err = None;
    backend.update(state, kg, key, ns, &mut |old, new| {
        let (c, u) = match old {
            None => (0, 0),
            Some(v) => entry(v).unwrap_or_else(|| {
                err = Some("stored value too short");
                (0, 0)
            }),
        };
        write_entry(new, c.saturating_add(count), u.saturating_add(unmatched));
        Ok(())
    })?;
    match err {
        Some(what) => Err(bad_entry(operator, what)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use hashbrown::HashMap;
    use sabot_core::codec::Codec;

    use super::Key;

    /// Keys of every length, inline or not, are found by their bytes, hash as their
    /// bytes do, order as byte strings and encode as a `Vec<u8>` timer key.
    #[test]
    fn keys_are_found_by_their_bytes_at_every_length() {
        let mut keys: Vec<Vec<u8>> = (0..40u8).map(|n| (0..n).map(|i| i ^ n).collect()).collect();
        // Zero bytes and prefixes: inline keys compare zero-padded, then by length.
        keys.extend((1..=17).map(|n| vec![0; n]));
        keys.extend([
            vec![1],
            vec![1, 0],
            vec![1, 0, 0],
            vec![0, 1],
            vec![0xff; 16],
        ]);
        keys.sort_by_key(|k| (k.len(), k.clone()));
        keys.dedup();
        let mut map: HashMap<Key, usize> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            map.insert(Key::new(k), i);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(k.as_slice()), Some(&i), "key of {} bytes", k.len());
            assert_eq!(Key::new(k).as_slice(), k.as_slice());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            Key::new(k).encode(&mut a);
            k.encode(&mut b);
            assert_eq!(a, b);
            assert_eq!(Key::decode(&mut a.as_slice()).unwrap(), Key::new(k));
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let mut by_key: Vec<Key> = keys.iter().map(|k| Key::new(k)).collect();
        by_key.sort();
        assert!(
            by_key
                .iter()
                .map(Key::as_slice)
                .eq(sorted.iter().map(Vec::as_slice))
        );
    }
}
