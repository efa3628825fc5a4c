//! A hash table from composite keys to dense group indices.

use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::arrow::error::ArrowError;
use sabot_core::arrow::row::{Row, RowConverter, Rows};

use super::aggregate::RowSel;
use crate::keys::BatchKeys;

/// Where a [`GroupTable`] keeps its keys: a single `Int64` key column is stored as plain
/// integers (compared as integers) in an [`IntTable`]; anything else in Arrow's row
/// format, found through a hash table of group indices.
enum KeyStore {
    Int64(IntTable),
    Rows(Rows),
}

/// A slot of an [`IntTable`]: a key and its group (12 bytes, no padding).
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Slot {
    key: i64,
    group: u32,
}

/// An empty slot's group.
const EMPTY: u32 = u32::MAX;

/// Open addressing with linear probing over (key, group) slots, at most half full: a
/// lookup usually touches one cache line, which [`prefetch`](Self::prefetch) can fetch
/// ahead of time (a table of group indices would chase the key in a second array).
struct IntTable {
    slots: Vec<Slot>,
    ints: Vec<i64>,
}

impl IntTable {
    fn new() -> Self {
        IntTable {
            slots: Vec::new(),
            ints: Vec::new(),
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Brings the slot where `hash`'s search starts into the cache.
    #[inline]
    fn prefetch(&self, hash: u64) {
        if let Some(s) = self.slots.get(hash as usize & self.mask()) {
            sabot_core::hint::prefetch(s);
        }
    }

    #[inline]
    fn find(&self, hash: u64, key: i64) -> Option<u32> {
        let mask = self.mask();
        if self.slots.is_empty() {
            return None;
        }
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.group == EMPTY {
                return None;
            }
            if s.key == key {
                return Some(s.group);
            }
            i = (i + 1) & mask;
        }
    }

    /// The group of `key`, the next group number if new.
    #[inline]
    fn find_or_insert(&mut self, hash: u64, key: i64) -> (u32, bool) {
        if (self.ints.len() + 1) * 2 > self.slots.len() {
            self.grow(self.ints.len() + 1);
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.group == EMPTY {
                let g = self.ints.len() as u32;
                self.slots[i] = Slot { key, group: g };
                self.ints.push(key);
                return (g, true);
            }
            if s.key == key {
                return (s.group, false);
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes room for `groups` groups (re-placing every slot).
    fn grow(&mut self, groups: usize) {
        let want = (groups * 2).next_power_of_two().max(16);
        if want <= self.slots.len() {
            return;
        }
        let mut slots = vec![
            Slot {
                key: 0,
                group: EMPTY
            };
            want
        ];
        let mask = want - 1;
        let slot_of = |key: i64| sabot_core::key::hash_i64(key) as usize & mask;
        for (g, &key) in self.ints.iter().enumerate() {
            // The new table is larger than the caches too: fetch ahead.
            if let Some(&ahead) = self.ints.get(g + PREFETCH_AHEAD) {
                sabot_core::hint::prefetch(&slots[slot_of(ahead)]);
            }
            let mut i = slot_of(key);
            while slots[i].group != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                key,
                group: g as u32,
            };
        }
        self.slots = slots;
    }

    fn clear(&mut self) {
        self.slots.fill(Slot {
            key: 0,
            group: EMPTY,
        });
        self.ints.clear();
    }
}

/// Maps keys to group indices `0..len()`, in first-seen order. Keys are stored once, in
/// one contiguous buffer, so a group costs no allocation of its own.
pub(crate) struct GroupTable {
    /// Row keys: group indices by key hash (unused for integer keys).
    table: HashTable<u32>,
    hashes: Vec<u64>,
    keys: KeyStore,
    /// Groups `0..indexed` can be found by key; later ones were appended with
    /// [`push_from`](Self::push_from) (a pane whose keys are found through the window's
    /// shared dictionary) and are indexed when a lookup first needs them.
    indexed: usize,
}

/// How many rows ahead [`GroupTable::groups_of`] prefetches integer keys' slots.
const PREFETCH_AHEAD: usize = 16;

impl GroupTable {
    /// The group of row `r` of a batch with keys `keys` and key hashes `hashes`,
    /// inserted if new.
    #[inline]
    pub(crate) fn group_of(&mut self, keys: &BatchKeys, hashes: &[u64], r: usize) -> u32 {
        match keys {
            BatchKeys::Int64(k) => self.find_or_insert_i64(hashes[r], k.value(r)),
            BatchKeys::Rows(k) => self.find_or_insert_row(hashes[r], k.row(r)),
        }
    }

    /// Appends the group of each selected row (as [`group_of`](Self::group_of)) to `out`.
    pub(crate) fn groups_of(
        &mut self,
        keys: &BatchKeys,
        hashes: &[u64],
        sel: RowSel<'_>,
        out: &mut Vec<u32>,
    ) {
        self.ensure_index();
        if let (BatchKeys::Int64(k), KeyStore::Int64(_)) = (keys, &self.keys) {
            // Fetch the slots a few rows ahead: the table is larger than the caches.
            match sel {
                RowSel::All => {
                    for r in 0..hashes.len() {
                        if let Some(&ahead) = hashes.get(r + PREFETCH_AHEAD) {
                            self.prefetch_i64(ahead);
                        }
                        out.push(self.find_or_insert_i64(hashes[r], k.value(r)));
                    }
                }
                RowSel::Some(rows) => {
                    for (n, &r) in rows.iter().enumerate() {
                        if let Some(&ahead) = rows.get(n + PREFETCH_AHEAD) {
                            self.prefetch_i64(hashes[ahead as usize]);
                        }
                        out.push(self.find_or_insert_i64(hashes[r as usize], k.value(r as usize)));
                    }
                }
            }
            return;
        }
        match sel {
            RowSel::All => out.extend((0..hashes.len()).map(|r| self.group_of(keys, hashes, r))),
            RowSel::Some(rows) => out.extend(
                rows.iter()
                    .map(|&r| self.group_of(keys, hashes, r as usize)),
            ),
        }
    }

    #[inline]
    fn prefetch_i64(&self, hash: u64) {
        if let KeyStore::Int64(t) = &self.keys {
            t.prefetch(hash);
        }
    }

    /// A table for a single `Int64` key column.
    pub(crate) fn for_int64() -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            keys: KeyStore::Int64(IntTable::new()),
            indexed: 0,
        }
    }

    /// A table for keys in the row format of `converter`.
    pub(crate) fn for_rows(converter: &RowConverter) -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            keys: KeyStore::Rows(converter.empty_rows(0, 0)),
            indexed: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Forgets every group, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.hashes.clear();
        self.indexed = 0;
        match &mut self.keys {
            KeyStore::Int64(t) => t.clear(),
            KeyStore::Rows(rows) => rows.clear(),
        }
    }

    /// The key hash of group `g`.
    #[inline]
    pub(crate) fn hash(&self, g: usize) -> u64 {
        self.hashes[g]
    }

    /// Appends the key of group `g` in its stored form: the integer (8 bytes,
    /// little-endian) or the row-format bytes.
    #[inline]
    pub(crate) fn key_bytes(&self, g: usize, out: &mut Vec<u8>) {
        match &self.keys {
            KeyStore::Int64(t) => out.extend_from_slice(&t.ints[g].to_le_bytes()),
            KeyStore::Rows(rows) => out.extend_from_slice(rows.row(g).as_ref()),
        }
    }

    /// The group of the integer `key` (hashed as `hash`), created if new.
    ///
    /// # Panics
    /// If the table was made for row keys (a bug in the window operator).
    #[inline]
    pub(crate) fn find_or_insert_i64(&mut self, hash: u64, key: i64) -> u32 {
        self.ensure_index();
        let KeyStore::Int64(t) = &mut self.keys else {
            panic!("integer key used on a table of row keys");
        };
        let (g, new) = t.find_or_insert(hash, key);
        if new {
            self.hashes.push(hash);
            self.indexed += 1;
        }
        g
    }

    /// The group of the row `key` (hashed as `hash`), created if new.
    ///
    /// # Panics
    /// If the table was made for integer keys (a bug in the window operator).
    #[inline]
    pub(crate) fn find_or_insert_row(&mut self, hash: u64, key: Row<'_>) -> u32 {
        self.ensure_index();
        let GroupTable {
            table,
            hashes,
            keys,
            indexed,
        } = self;
        let KeyStore::Rows(rows) = keys else {
            panic!("row key used on a table of integer keys");
        };
        match table.entry(
            hash,
            |&g| hashes[g as usize] == hash && rows.row(g as usize) == key,
            |&g| hashes[g as usize],
        ) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(v) => {
                let g = hashes.len() as u32;
                hashes.push(hash);
                rows.push(key);
                v.insert(g);
                *indexed += 1;
                g
            }
        }
    }

    /// Appends `other`'s group `g` (same key kind) as a new group, without looking for
    /// it: the caller knows it is not here (a pane adding a key through the window's
    /// dictionary). It is indexed when a lookup first needs it.
    #[inline]
    pub(crate) fn push_from(&mut self, other: &GroupTable, g: usize) -> u32 {
        let n = self.hashes.len() as u32;
        self.hashes.push(other.hashes[g]);
        match (&mut self.keys, &other.keys) {
            (KeyStore::Int64(mine), KeyStore::Int64(theirs)) => mine.ints.push(theirs.ints[g]),
            (KeyStore::Rows(mine), KeyStore::Rows(theirs)) => mine.push(theirs.row(g)),
            _ => panic!("keys of another kind appended to a group table"),
        }
        n
    }

    /// Whether every group can be found by key (see [`push_from`](Self::push_from)).
    #[inline]
    pub(crate) fn is_indexed(&self) -> bool {
        self.indexed == self.hashes.len()
    }

    /// Indexes the groups appended by [`push_from`](Self::push_from).
    #[inline]
    pub(crate) fn ensure_index(&mut self) {
        if !self.is_indexed() {
            self.index_appended();
        }
    }

    #[cold]
    #[inline(never)]
    fn index_appended(&mut self) {
        match &mut self.keys {
            KeyStore::Int64(t) => {
                // Re-places every key: the appended ones are usually most of them.
                t.slots.clear();
                t.grow(t.ints.len());
            }
            KeyStore::Rows(_) => {
                let hashes = &self.hashes;
                for g in self.indexed..hashes.len() {
                    self.table
                        .insert_unique(hashes[g], g as u32, |&h| hashes[h as usize]);
                }
            }
        }
        self.indexed = self.hashes.len();
    }

    /// Makes room for `n` more groups.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.ensure_index();
        self.hashes.reserve(n);
        match &mut self.keys {
            KeyStore::Int64(t) => {
                t.grow(t.ints.len() + n);
                t.ints.reserve(n);
            }
            KeyStore::Rows(_) => {
                let hashes = &self.hashes;
                self.table.reserve(n, |&g| hashes[g as usize]);
            }
        }
    }

    /// An empty table for keys of the same kind.
    pub(crate) fn empty_like(&self) -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            indexed: 0,
            keys: match &self.keys {
                KeyStore::Int64(_) => KeyStore::Int64(IntTable::new()),
                KeyStore::Rows(rows) => {
                    let mut empty = rows.clone();
                    empty.clear();
                    KeyStore::Rows(empty)
                }
            },
        }
    }

    /// The group of `other`'s group `g` in this table (same key kind), created if new.
    #[inline]
    pub(crate) fn insert_from(&mut self, other: &GroupTable, g: usize) -> u32 {
        let hash = other.hashes[g];
        match &other.keys {
            KeyStore::Int64(t) => self.find_or_insert_i64(hash, t.ints[g]),
            KeyStore::Rows(rows) => self.find_or_insert_row(hash, rows.row(g)),
        }
    }

    /// The group of `other`'s group `g` in this table, if it has that key.
    #[inline]
    pub(crate) fn find_from(&self, other: &GroupTable, g: usize) -> Option<u32> {
        debug_assert!(self.is_indexed(), "find_from on a table not indexed");
        let hash = other.hashes[g];
        match (&self.keys, &other.keys) {
            (KeyStore::Int64(mine), KeyStore::Int64(theirs)) => mine.find(hash, theirs.ints[g]),
            (KeyStore::Rows(mine), KeyStore::Rows(theirs)) => self
                .table
                .find(hash, |&h| {
                    self.hashes[h as usize] == hash && mine.row(h as usize) == theirs.row(g)
                })
                .copied(),
            _ => None,
        }
    }

    /// The keys of `groups` (every group, in order, if `None`) as Arrow columns.
    pub(crate) fn key_columns(
        &self,
        converter: &RowConverter,
        groups: Option<&[u32]>,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        match (&self.keys, groups) {
            (KeyStore::Int64(t), None) => Ok(vec![Arc::new(Int64Array::from(t.ints.clone()))]),
            (KeyStore::Int64(t), Some(g)) => Ok(vec![Arc::new(Int64Array::from_iter_values(
                g.iter().map(|&g| t.ints[g as usize]),
            ))]),
            (KeyStore::Rows(rows), None) => converter.convert_rows(rows.iter()),
            (KeyStore::Rows(rows), Some(g)) => {
                converter.convert_rows(g.iter().map(|&g| rows.row(g as usize)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The integer table against a `HashMap` model: groups in first-seen order,
        /// through growth, `reserve` and `clear`.
        #[test]
        fn int_table_matches_a_map(
            rounds in proptest::collection::vec(
                (proptest::collection::vec(-50i64..5000, 0..3000), any::<bool>()),
                1..4,
            ),
        ) {
            let mut t = GroupTable::for_int64();
            for (keys, reserve_first) in rounds {
                if reserve_first {
                    t.reserve(keys.len());
                }
                let mut model: std::collections::HashMap<i64, u32> = Default::default();
                for &k in &keys {
                    let next = model.len() as u32;
                    let want = *model.entry(k).or_insert(next);
                    prop_assert_eq!(t.find_or_insert_i64(sabot_core::key::hash_i64(k), k), want);
                }
                prop_assert_eq!(t.len(), model.len());
                let mut bytes = Vec::new();
                for (&k, &g) in &model {
                    bytes.clear();
                    t.key_bytes(g as usize, &mut bytes);
                    prop_assert_eq!(bytes.as_slice(), &k.to_le_bytes()[..]);
                    let mut other = GroupTable::for_int64();
                    let og = other.find_or_insert_i64(sabot_core::key::hash_i64(k), k);
                    prop_assert_eq!(t.find_from(&other, og as usize), Some(g));
                }
                let mut absent = GroupTable::for_int64();
                let ag = absent.find_or_insert_i64(sabot_core::key::hash_i64(-99), -99);
                prop_assert_eq!(t.find_from(&absent, ag as usize), None);
                t.clear();
                prop_assert_eq!(t.len(), 0);
            }
        }
    }
}
