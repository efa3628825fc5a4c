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
/// integers (compared as integers); anything else in Arrow's row format.
enum KeyStore {
    Int64(Vec<i64>),
    Rows(Rows),
}

/// Maps keys to group indices `0..len()`, in first-seen order. Keys are stored once, in
/// one contiguous buffer, so a group costs no allocation of its own.
pub(crate) struct GroupTable {
    table: HashTable<u32>,
    hashes: Vec<u64>,
    keys: KeyStore,
}

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
        match sel {
            RowSel::All => out.extend((0..hashes.len()).map(|r| self.group_of(keys, hashes, r))),
            RowSel::Some(rows) => out.extend(
                rows.iter()
                    .map(|&r| self.group_of(keys, hashes, r as usize)),
            ),
        }
    }

    /// A table for a single `Int64` key column.
    pub(crate) fn for_int64() -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            keys: KeyStore::Int64(Vec::new()),
        }
    }

    /// A table for keys in the row format of `converter`.
    pub(crate) fn for_rows(converter: &RowConverter) -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            keys: KeyStore::Rows(converter.empty_rows(0, 0)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Forgets every group, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.hashes.clear();
        match &mut self.keys {
            KeyStore::Int64(ints) => ints.clear(),
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
            KeyStore::Int64(ints) => out.extend_from_slice(&ints[g].to_le_bytes()),
            KeyStore::Rows(rows) => out.extend_from_slice(rows.row(g).as_ref()),
        }
    }

    /// The group of the integer `key` (hashed as `hash`), created if new.
    ///
    /// # Panics
    /// If the table was made for row keys (a bug in the window operator).
    #[inline]
    pub(crate) fn find_or_insert_i64(&mut self, hash: u64, key: i64) -> u32 {
        let GroupTable {
            table,
            hashes,
            keys,
        } = self;
        let KeyStore::Int64(ints) = keys else {
            panic!("integer key used on a table of row keys");
        };
        match table.entry(hash, |&g| ints[g as usize] == key, |&g| hashes[g as usize]) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(v) => {
                let g = hashes.len() as u32;
                hashes.push(hash);
                ints.push(key);
                v.insert(g);
                g
            }
        }
    }

    /// The group of the row `key` (hashed as `hash`), created if new.
    ///
    /// # Panics
    /// If the table was made for integer keys (a bug in the window operator).
    #[inline]
    pub(crate) fn find_or_insert_row(&mut self, hash: u64, key: Row<'_>) -> u32 {
        let GroupTable {
            table,
            hashes,
            keys,
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
                g
            }
        }
    }

    /// Makes room for `n` more groups.
    pub(crate) fn reserve(&mut self, n: usize) {
        let hashes = &self.hashes;
        self.table.reserve(n, |&g| hashes[g as usize]);
        self.hashes.reserve(n);
        if let KeyStore::Int64(ints) = &mut self.keys {
            ints.reserve(n);
        }
    }

    /// An empty table for keys of the same kind.
    pub(crate) fn empty_like(&self) -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            keys: match &self.keys {
                KeyStore::Int64(_) => KeyStore::Int64(Vec::new()),
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
            KeyStore::Int64(ints) => self.find_or_insert_i64(hash, ints[g]),
            KeyStore::Rows(rows) => self.find_or_insert_row(hash, rows.row(g)),
        }
    }

    /// The group of `other`'s group `g` in this table, if it has that key.
    #[inline]
    pub(crate) fn find_from(&self, other: &GroupTable, g: usize) -> Option<u32> {
        let hash = other.hashes[g];
        match (&self.keys, &other.keys) {
            (KeyStore::Int64(mine), KeyStore::Int64(theirs)) => self
                .table
                .find(hash, |&h| mine[h as usize] == theirs[g])
                .copied(),
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
            (KeyStore::Int64(ints), None) => Ok(vec![Arc::new(Int64Array::from(ints.clone()))]),
            (KeyStore::Int64(ints), Some(g)) => Ok(vec![Arc::new(Int64Array::from_iter_values(
                g.iter().map(|&g| ints[g as usize]),
            ))]),
            (KeyStore::Rows(rows), None) => converter.convert_rows(rows.iter()),
            (KeyStore::Rows(rows), Some(g)) => {
                converter.convert_rows(g.iter().map(|&g| rows.row(g as usize)))
            }
        }
    }
}
