//! The compact byte encoding of timer keys and namespaces in snapshots.

use sabot_core::KeyGroup;
use sabot_core::key::{hash_bytes, hash_i64};

use crate::{Result, TimeError};

/// A value that can be written into a timer snapshot and read back.
///
/// Integers are little-endian and fixed-width; byte strings and strings are a `u32`
/// little-endian length then the bytes; tuples are their fields in order.
pub trait TimerCodec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self>;
}

/// A timer key: it belongs to a key group, so timers can move with their keys on rescale.
pub trait TimerKey: TimerCodec + Clone + Eq + std::hash::Hash + Ord {
    /// The key group of this key when there are `max_parallelism` key groups.
    fn key_group(&self, max_parallelism: usize) -> KeyGroup;
}

/// Takes `n` bytes from the front of `input`.
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8]> {
    if input.len() < n {
        return Err(TimeError::Corrupt {
            reason: format!("truncated {what}: need {n} bytes, {} left", input.len()),
        });
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl TimerCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<Self> {
                let b = take(input, std::mem::size_of::<$t>(), stringify!($t))?;
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                Ok(<$t>::from_le_bytes(a))
            }
        }
    )*};
}
int_codec!(u8, u16, u32, u64, i32, i64);

impl TimerCodec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        match u8::decode(input)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(TimeError::Corrupt {
                reason: format!("invalid bool byte {b}"),
            }),
        }
    }
}

impl TimerCodec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(_input: &mut &[u8]) -> Result<Self> {
        Ok(())
    }
}

impl TimerCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        let n = u32::decode(input)? as usize;
        Ok(take(input, n, "byte string")?.to_vec())
    }
}

impl TimerCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        let bytes = Vec::<u8>::decode(input)?;
        String::from_utf8(bytes).map_err(|e| TimeError::Corrupt {
            reason: format!("string is not UTF-8: {e}"),
        })
    }
}

impl TimerCodec for KeyGroup {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        Ok(KeyGroup(u16::decode(input)?))
    }
}

/// A tag byte (0: none, 1: some), then the value.
impl<T: TimerCodec> TimerCodec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        match u8::decode(input)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(input)?)),
            b => Err(TimeError::Corrupt {
                reason: format!("invalid option tag {b}"),
            }),
        }
    }
}

impl<A: TimerCodec, B: TimerCodec> TimerCodec for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        Ok((A::decode(input)?, B::decode(input)?))
    }
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
impl<T: TimerCodec + Clone + Eq + std::hash::Hash + Ord> TimerKey for (KeyGroup, T) {
    fn key_group(&self, _max_parallelism: usize) -> KeyGroup {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_bad_tags_are_errors() {
        for v in [None, Some(b"abc".to_vec()), Some(Vec::new())] {
            let mut out = Vec::new();
            v.encode(&mut out);
            let mut input = out.as_slice();
            assert_eq!(Option::<Vec<u8>>::decode(&mut input).unwrap(), v);
            assert!(input.is_empty());
        }
        assert!(Option::<u8>::decode(&mut [2u8, 0].as_slice()).is_err());
        assert!(Option::<u32>::decode(&mut [1u8, 0].as_slice()).is_err());
    }
}
