//! The memory backend's hash table: byte keys to byte values, open addressing with linear
//! probing over 32-byte slots, two to a cache line.
//!
//! A slot holds the key's hash, and the key and value themselves when together they fit
//! in [`INLINE`] bytes (an integer key with a counter or a small record); larger ones
//! live in a heap buffer that grows by doubling (lists appended to). So a lookup of a
//! small entry touches one cache line, which [`ByteTable::prefetch`] can bring in ahead
//! of time from the hash alone: a caller that knows its next keys (an operator walking a
//! batch) overlaps those memory loads instead of waiting for each in turn. The table is
//! at most 5/8 full, and a deletion shifts the entries after it back (no tombstones), so
//! probe runs stay short.

use crate::bytes::{short_copy, short_eq};

/// Bytes of key and value a slot holds without a heap allocation.
pub(crate) const INLINE: usize = 22;

/// An entry of more than this many bytes (key and value) is refused: lengths are stored
/// as `u32` here and in snapshot files.
pub(crate) const MAX_ENTRY: usize = u32::MAX as usize;

/// An entry that would exceed [`MAX_ENTRY`] bytes; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) usize);

/// One entry, or none: 32 bytes.
#[derive(Clone)]
enum Slot {
    Empty,
    /// Key then value in the slot itself.
    Inline {
        /// The low 32 bits of the key's hash (where its search starts, and a filter).
        hash: u32,
        key_len: u8,
        value_len: u8,
        bytes: [u8; INLINE],
    },
    /// Key then value in `buf[..len]`; `buf.len()` is the capacity.
    Heap {
        hash: u32,
        key_len: u32,
        len: u32,
        buf: Box<[u8]>,
    },
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Slot {
    #[inline]
    fn is_empty(&self) -> bool {
        matches!(self, Slot::Empty)
    }

    /// The stored hash bits (0 for an empty slot).
    #[inline]
    fn hash(&self) -> u32 {
        match self {
            Slot::Empty => 0,
            Slot::Inline { hash, .. } | Slot::Heap { hash, .. } => *hash,
        }
    }

    /// (key length, key and value bytes).
    #[inline]
    fn parts(&self) -> (usize, &[u8]) {
        match self {
            Slot::Empty => (0, &[]),
            Slot::Inline {
                key_len,
                value_len,
                bytes,
                ..
            } => (
                usize::from(*key_len),
                &bytes[..usize::from(*key_len) + usize::from(*value_len)],
            ),
            Slot::Heap {
                key_len, len, buf, ..
            } => (*key_len as usize, &buf[..*len as usize]),
        }
    }

    #[inline]
    fn key(&self) -> &[u8] {
        let (k, b) = self.parts();
        &b[..k]
    }

    #[inline]
    fn value(&self) -> &[u8] {
        let (k, b) = self.parts();
        &b[k..]
    }

    /// A slot holding `head` then `tail` (together at most [`MAX_ENTRY`] bytes), whose
    /// first `key_len` bytes are the key; with room for `capacity` bytes if on the heap.
    fn new(hash: u32, key_len: usize, head: &[u8], tail: &[u8], capacity: usize) -> Slot {
        let total = head.len() + tail.len();
        if total <= INLINE {
            let mut bytes = [0; INLINE];
            short_copy(&mut bytes[..head.len()], head);
            short_copy(&mut bytes[head.len()..total], tail);
            Slot::Inline {
                hash,
                key_len: key_len as u8,
                value_len: (total - key_len) as u8,
                bytes,
            }
        } else {
            let mut buf = vec![0; capacity.max(total)].into_boxed_slice();
            buf[..head.len()].copy_from_slice(head);
            buf[head.len()..total].copy_from_slice(tail);
            Slot::Heap {
                hash,
                key_len: key_len as u32,
                len: total as u32,
                buf,
            }
        }
    }

    /// Writes `data` at byte `at` of the entry (key first, `at` at least the key's
    /// length), which then ends after it: in place where it fits, else into a new slot
    /// with room for `capacity` bytes (back inline when the entry fits there).
    #[inline]
    fn write_at(&mut self, at: usize, data: &[u8], capacity: usize) -> Result<(), TooLarge> {
        let k = self.key().len();
        let total = at + data.len();
        if total > MAX_ENTRY {
            return Err(TooLarge(total));
        }
        match self {
            Slot::Inline {
                value_len, bytes, ..
            } if total <= INLINE => {
                short_copy(&mut bytes[at..total], data);
                *value_len = (total - k) as u8;
            }
            Slot::Heap { len, buf, .. } if total <= buf.len() && total > INLINE => {
                buf[at..total].copy_from_slice(data);
                *len = total as u32;
            }
            _ => {
                let moved = Slot::new(self.hash(), k, &self.parts().1[..at], data, capacity);
                *self = moved;
            }
        }
        Ok(())
    }

    /// Replaces the value.
    #[inline]
    fn set_value(&mut self, value: &[u8]) -> Result<(), TooLarge> {
        let k = self.key().len();
        self.write_at(k, value, k + value.len())
    }

    /// Appends to the value; returns its new length.
    #[inline]
    fn append(&mut self, operand: &[u8]) -> Result<usize, TooLarge> {
        let (k, used) = (self.key().len(), self.parts().1.len());
        let total = used + operand.len();
        // Room doubles, so that a value appended to n times is copied O(n) bytes.
        self.write_at(used, operand, total.max(2 * used).min(MAX_ENTRY))?;
        Ok(total - k)
    }
}

/// A hash table of byte keys and values (see the module docs). Hashes come from the
/// caller, which must hash a key the same way every time.
#[derive(Clone, Default)]
pub(crate) struct ByteTable {
    slots: Vec<Slot>,
    len: usize,
}

impl std::fmt::Debug for ByteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteTable")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Where a search for `hash` starts.
#[inline]
fn home(hash: u32, mask: usize) -> usize {
    hash as usize & mask
}

impl ByteTable {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Brings the slot where a search for `hash` starts, and the one after it (mostly in
    /// the same cache line), into the cache: at this table's load, most searches end
    /// within those two.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let mask = self.mask();
        let i = home(hash as u32, mask);
        if let Some(s) = self.slots.get(i) {
            sabot_core::hint::prefetch(s);
            sabot_core::hint::prefetch(&self.slots[(i + 1) & mask]);
        }
    }

    /// The slot holding `key`.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (hash, mask) = (hash as u32, self.mask());
        let mut i = home(hash, mask);
        loop {
            let s = &self.slots[i];
            if s.is_empty() {
                return None;
            }
            if s.hash() == hash && short_eq(s.key(), key) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// `key`'s value.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        self.find(hash, key).map(|i| self.slots[i].value())
    }

    /// Whether `key` is there.
    #[inline]
    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.find(hash, key).is_some()
    }

    /// Sets `key`'s value; returns whether the key is new.
    #[inline]
    pub(crate) fn put(&mut self, hash: u64, key: &[u8], value: &[u8]) -> Result<bool, TooLarge> {
        match self.find(hash, key) {
            Some(i) => self.slots[i].set_value(value).map(|()| false),
            None => {
                self.insert_new(hash, key, value)?;
                Ok(true)
            }
        }
    }

    /// Appends `operand` to `key`'s value (the key is new if absent); returns the value's
    /// new length and whether the key is new.
    #[inline]
    pub(crate) fn append(
        &mut self,
        hash: u64,
        key: &[u8],
        operand: &[u8],
    ) -> Result<(usize, bool), TooLarge> {
        match self.find(hash, key) {
            Some(i) => self.slots[i].append(operand).map(|len| (len, false)),
            None => {
                self.insert_new(hash, key, operand)?;
                Ok((operand.len(), true))
            }
        }
    }

    /// Calls `f` with `key`'s value (`None` if absent) and a buffer for the new one; on
    /// `Ok` stores the buffer as the value. One search whether or not the key exists.
    /// Returns `f`'s result and whether the key is new.
    #[inline]
    pub(crate) fn update<E: From<TooLarge>>(
        &mut self,
        hash: u64,
        key: &[u8],
        new: &mut Vec<u8>,
        f: impl FnOnce(Option<&[u8]>, &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<bool, E> {
        match self.find(hash, key) {
            Some(i) => {
                f(Some(self.slots[i].value()), new)?;
                self.slots[i].set_value(new)?;
                Ok(false)
            }
            None => {
                f(None, new)?;
                self.insert_new(hash, key, new)?;
                Ok(true)
            }
        }
    }

    /// Adds an entry whose key is not in the table.
    fn insert_new(&mut self, hash: u64, key: &[u8], value: &[u8]) -> Result<(), TooLarge> {
        let total = key.len() + value.len();
        if total > MAX_ENTRY {
            return Err(TooLarge(total));
        }
        if (self.len + 1) * 8 > self.slots.len() * 5 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = home(hash as u32, mask);
        while !self.slots[i].is_empty() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot::new(hash as u32, key.len(), key, value, total);
        self.len += 1;
        Ok(())
    }

    /// Doubles the slots (16 at first), re-placing every entry by its stored hash.
    fn grow(&mut self) {
        let want = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![Slot::Empty; want]);
        let mask = want - 1;
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            let mut i = home(s.hash(), mask);
            while !self.slots[i].is_empty() {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Removes `key`; returns whether it was there. The entries after it in its probe run
    /// move back as far as their own start allows, so no search ever stops early.
    pub(crate) fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let Some(mut hole) = self.find(hash, key) else {
            return false;
        };
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            if self.slots[j].is_empty() {
                break;
            }
            // The entry at j may fill the hole unless its home lies cyclically in
            // (hole, j]: then a search for it starts after the hole.
            let h = home(self.slots[j].hash(), mask);
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                self.slots.swap(hole, j);
                hole = j;
            }
        }
        self.slots[hole] = Slot::Empty;
        self.len -= 1;
        true
    }

    /// Every (key, value), in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (s.key(), s.value()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::hash::BuildHasher;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, Vec<u8>),
        Append(u8, Vec<u8>),
        Update(u8, Vec<u8>),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Values from empty to well past the inline size, so entries move between the
        // slot and the heap both ways.
        let value = prop::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (any::<u8>(), value.clone()).prop_map(|(k, v)| Op::Put(k, v)),
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..12))
                .prop_map(|(k, v)| Op::Append(k, v)),
            (any::<u8>(), value).prop_map(|(k, v)| Op::Update(k, v)),
            any::<u8>().prop_map(Op::Remove),
        ]
    }

    /// Keys of 1 to 20 bytes; `collide` maps every key to one of four hashes, so probe
    /// runs are long and wrap around the end of the table.
    fn key_of(k: u8) -> Vec<u8> {
        vec![k; 1 + usize::from(k % 20)]
    }

    fn hash_of(key: &[u8], collide: bool) -> u64 {
        thread_local! {
            static HASHER: hashbrown::DefaultHashBuilder = Default::default();
        }
        if collide {
            u64::from(key[0] % 4).wrapping_sub(2)
        } else {
            HASHER.with(|h| h.hash_one(key))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn the_table_matches_a_btree_map(ops in prop::collection::vec(op(), 1..300), collide in any::<bool>()) {
            let mut t = ByteTable::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut new = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let key = key_of(k);
                        let fresh = t.put(hash_of(&key, collide), &key, &v).unwrap();
                        prop_assert_eq!(fresh, model.insert(key, v).is_none());
                    }
                    Op::Append(k, v) => {
                        let key = key_of(k);
                        let (len, fresh) = t.append(hash_of(&key, collide), &key, &v).unwrap();
                        prop_assert_eq!(fresh, !model.contains_key(&key));
                        let m = model.entry(key).or_default();
                        m.extend_from_slice(&v);
                        prop_assert_eq!(len, m.len());
                    }
                    Op::Update(k, v) => {
                        let key = key_of(k);
                        new.clear();
                        let before = model.get(&key).cloned();
                        let r: Result<bool, TooLarge> = t.update(hash_of(&key, collide), &key, &mut new, |old, out| {
                            assert_eq!(old.map(<[u8]>::to_vec), before);
                            out.extend_from_slice(old.unwrap_or_default());
                            out.extend_from_slice(&v);
                            Ok(())
                        });
                        prop_assert_eq!(r, Ok(before.is_none()));
                        model.entry(key).or_default().extend_from_slice(&v);
                    }
                    Op::Remove(k) => {
                        let key = key_of(k);
                        prop_assert_eq!(t.remove(hash_of(&key, collide), &key), model.remove(&key).is_some());
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(t.get(hash_of(k, collide), k), Some(&v[..]));
            }
            let mut all: Vec<(Vec<u8>, Vec<u8>)> = t.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            all.sort();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_failed_update_changes_nothing() {
        let mut t = ByteTable::default();
        let mut new = Vec::new();
        let r: Result<bool, TooLarge> = t.update(7, b"k", &mut new, |_, out| {
            out.push(1);
            Err(TooLarge(9))
        });
        assert_eq!(r, Err(TooLarge(9)));
        assert_eq!(t.len(), 0);
        assert!(!t.contains(7, b"k"));
    }
}
