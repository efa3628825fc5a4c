//! A hash table from composite keys (in Arrow's row format) to dense group indices.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use sabot_core::arrow::row::{Row, RowConverter, Rows};

/// Maps keys to group indices `0..len()`, in first-seen order. Keys are stored once, in
/// one contiguous row buffer, so a group costs no allocation of its own.
pub(crate) struct GroupTable {
    table: HashTable<u32>,
    hashes: Vec<u64>,
    keys: Rows,
}

impl GroupTable {
    pub(crate) fn new(converter: &RowConverter) -> Self {
        GroupTable {
            table: HashTable::new(),
            hashes: Vec::new(),
            keys: converter.empty_rows(0, 0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The group of `key` (hashed as `hash`), created if new.
    #[inline]
    pub(crate) fn find_or_insert(&mut self, hash: u64, key: Row<'_>) -> u32 {
        let GroupTable {
            table,
            hashes,
            keys,
        } = self;
        let entry = table.entry(
            hash,
            |&g| hashes[g as usize] == hash && keys.row(g as usize) == key,
            |&g| hashes[g as usize],
        );
        match entry {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(v) => {
                let g = hashes.len() as u32;
                hashes.push(hash);
                keys.push(key);
                v.insert(g);
                g
            }
        }
    }

    /// Every key, in group order.
    pub(crate) fn keys(&self) -> &Rows {
        &self.keys
    }
}
