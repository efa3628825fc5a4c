//! One byte codec and one checksummed frame for every file and record Sabot writes and
//! reads back (operator snapshots, timers, state snapshots, source positions, staging
//! files): what comes back from disk is untrusted, so every decoder here returns an
//! error naming what is wrong, never panics.
//!
//! - [`Codec`]: integers little-endian and fixed-width; byte strings and strings a
//!   `u32` little-endian length then the bytes; `Option` a tag byte (0, 1) then the
//!   value; tuples their fields in order.
//! - A frame ([`frame`], [`FrameWriter`], [`unframe`]): a 4-byte magic naming the
//!   format, a version byte, the body, and a CRC-32 (u32 little-endian) of every byte
//!   before it. A frame cut short or with any byte changed fails its checksum.
//!
//! ```
//! use sabot_core::codec::{frame, unframe, Codec};
//!
//! let mut body = Vec::new();
//! (("topic".to_string(), 3i32), 42i64).encode(&mut body);
//! let bytes = frame(b"DEMO", 1, &body);
//! let (version, mut body) = unframe(&bytes, b"DEMO", 1..=1, "demo position").unwrap();
//! assert_eq!(version, 1);
//! assert_eq!(<((String, i32), i64)>::decode(&mut body).unwrap(), (("topic".into(), 3), 42));
//!
//! let mut damaged = bytes.clone();
//! damaged[6] ^= 1;
//! let e = unframe(&damaged, b"DEMO", 1..=1, "demo position").unwrap_err();
//! assert!(e.to_string().contains("checksum"));
//! ```

use std::io::Write;
use std::ops::RangeInclusive;

use crate::KeyGroup;

/// Bytes that do not decode: what is wrong, and where if known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CodecError {
    /// What is wrong.
    pub reason: String,
}

impl CodecError {
    /// An error saying `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        CodecError {
            reason: reason.into(),
        }
    }
}

/// Result alias for decoding.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

/// A value written as bytes and read back (see the [module](self) for the encoding).
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self>;
}

/// Takes `n` bytes from the front of `input` (`what` names them in the error).
pub fn take<'a>(input: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8]> {
    if input.len() < n {
        return Err(CodecError::new(format!(
            "truncated {what}: need {n} bytes, {} left",
            input.len()
        )));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Codec for $t {
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

impl Codec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        match u8::decode(input)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::new(format!("invalid bool byte {b}"))),
        }
    }
}

impl Codec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(_input: &mut &[u8]) -> Result<Self> {
        Ok(())
    }
}

impl Codec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        Ok(get_bytes(input, "byte string")?.to_vec())
    }
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        let bytes = Vec::<u8>::decode(input)?;
        String::from_utf8(bytes).map_err(|e| CodecError::new(format!("string is not UTF-8: {e}")))
    }
}

impl Codec for KeyGroup {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        Ok(KeyGroup(u16::decode(input)?))
    }
}

impl<T: Codec> Codec for Option<T> {
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
            b => Err(CodecError::new(format!("invalid option tag {b}"))),
        }
    }
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self> {
        Ok((A::decode(input)?, B::decode(input)?))
    }
}

/// Appends `b` as a byte string: its `u32` length, then the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    (b.len() as u32).encode(out);
    out.extend_from_slice(b);
}

/// Reads a byte string written by [`put_bytes`], borrowed from `input`.
pub fn get_bytes<'a>(input: &mut &'a [u8], what: &str) -> Result<&'a [u8]> {
    let n = u32::decode(input)? as usize;
    take(input, n, what)
}

/// `body` framed: `magic`, `version`, the body, the CRC-32 of all before.
pub fn frame(magic: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    out.extend_from_slice(magic);
    out.push(version);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes a frame into a writer (a file, streamed) while checksumming it: the header on
/// creation, the body through [`Write`], the checksum on [`finish`](FrameWriter::finish).
#[derive(Debug)]
pub struct FrameWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Starts a frame of format `magic`, version `version`, in `inner`.
    pub fn new(inner: W, magic: &[u8; 4], version: u8) -> std::io::Result<Self> {
        let mut w = FrameWriter {
            inner,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        w.write_all(magic)?;
        w.write_all(&[version])?;
        Ok(w)
    }

    /// Writes the checksum; returns the writer and the frame's length in bytes.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        let crc = self.hasher.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.flush()?;
        Ok((self.inner, self.written + 4))
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Checks a frame of format `magic` (named `what` in errors) whose version is in
/// `versions`; returns its version and body.
pub fn unframe<'a>(
    bytes: &'a [u8],
    magic: &[u8; 4],
    versions: RangeInclusive<u8>,
    what: &str,
) -> Result<(u8, &'a [u8])> {
    if bytes.len() < 9 || &bytes[..4] != magic {
        return Err(CodecError::new(format!(
            "not a {what} (it does not start with `{}`{})",
            String::from_utf8_lossy(magic),
            if bytes.len() < 9 {
                format!(", and has only {} bytes", bytes.len())
            } else {
                String::new()
            }
        )));
    }
    let (framed, crc) = bytes.split_at(bytes.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(framed) != want {
        return Err(CodecError::new(format!(
            "{what}: checksum mismatch: the bytes are damaged or cut short"
        )));
    }
    let version = framed[4];
    if !versions.contains(&version) {
        return Err(CodecError::new(format!(
            "{what}: unsupported version {version} (this build reads {}..={})",
            versions.start(),
            versions.end()
        )));
    }
    Ok((version, &framed[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        /// Any value round-trips; any frame with a byte changed, cut short or lengthened
        /// is an error, never a panic or a wrong body.
        #[test]
        fn frames_round_trip_and_reject_any_damage(
            entries in proptest::collection::vec((".{0,8}", any::<i32>(), any::<i64>(), any::<Option<bool>>()), 0..20),
            at in any::<usize>(),
            flip in 1u8..=255,
            cut in any::<usize>(),
        ) {
            let mut body = Vec::new();
            (entries.len() as u32).encode(&mut body);
            for (s, p, o, b) in &entries {
                ((s.clone(), *p), (*o, *b)).encode(&mut body);
            }
            let bytes = frame(b"TEST", 2, &body);
            let (v, mut back) = unframe(&bytes, b"TEST", 1..=2, "test").unwrap();
            prop_assert_eq!(v, 2);
            let n = u32::decode(&mut back).unwrap();
            let decoded: Vec<_> = (0..n)
                .map(|_| <((String, i32), (i64, Option<bool>))>::decode(&mut back).unwrap())
                .map(|((s, p), (o, b))| (s, p, o, b))
                .collect();
            prop_assert_eq!(decoded, entries);
            prop_assert!(back.is_empty());

            let mut damaged = bytes.clone();
            let i = at % damaged.len();
            damaged[i] ^= flip;
            prop_assert!(unframe(&damaged, b"TEST", 1..=2, "test").is_err());
            let short = &bytes[..cut % bytes.len()];
            prop_assert!(unframe(short, b"TEST", 1..=2, "test").is_err());
            let mut long = bytes.clone();
            long.push(0);
            prop_assert!(unframe(&long, b"TEST", 1..=2, "test").is_err());
            prop_assert!(unframe(&bytes, b"TEST", 3..=3, "test").is_err());
        }
    }
}
