//! Timer keys: values in [`Codec`]'s byte encoding (from `sabot-core`, one codec for
//! everything Sabot writes) that know their key group.

use sabot_core::KeyGroup;
use sabot_core::codec::Codec;
use sabot_core::key::{hash_bytes, hash_i64};

/// A timer key: it belongs to a key group, so timers can move with their keys on rescale.
pub trait TimerKey: Codec + Clone + Eq + std::hash::Hash + Ord {
    /// The key group of this key when there are `max_parallelism` key groups.
    fn key_group(&self, max_parallelism: usize) -> KeyGroup;
}

/// A key group as its own timer key: for operators that keep one timer per key group.
impl TimerKey for KeyGroup {
    fn key_group(&self, _max_parallelism: usize) -> KeyGroup {
        *self
    }
}

/// An integer key, grouped as `sabot_core::key` groups an integer key column.
impl TimerKey for i64 {
    fn key_group(&self, max_parallelism: usize) -> KeyGroup {
        KeyGroup::of_hash(hash_i64(*self), max_parallelism)
    }
}

/// A key in bytes, grouped as `sabot_core::key` groups a binary key column.
impl TimerKey for Vec<u8> {
    fn key_group(&self, max_parallelism: usize) -> KeyGroup {
        KeyGroup::of_hash(hash_bytes(self), max_parallelism)
    }
}

/// A string key, grouped as `sabot_core::key` groups a `Utf8` key column.
impl TimerKey for String {
    fn key_group(&self, max_parallelism: usize) -> KeyGroup {
        KeyGroup::of_hash(hash_bytes(self.as_bytes()), max_parallelism)
    }
}

/// A key that carries the key group its records were routed by (so timers move with the
/// key's state on rescale whatever the key's own encoding), and anything else.
impl<T: Codec + Clone + Eq + std::hash::Hash + Ord> TimerKey for (KeyGroup, T) {
    fn key_group(&self, _max_parallelism: usize) -> KeyGroup {
        self.0
    }
}
