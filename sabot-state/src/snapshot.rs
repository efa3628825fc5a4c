//! The snapshot file: format, durable writing, and checked reading.
//!
//! One file, `state.sbst`, per snapshot folder. All integers little-endian:
//!
//! ```text
//! "SBST"  version:u8=2  max_parallelism:u32
//! tables:u32  { name_len:u32 name fingerprint_len:u32 fingerprint }*
//! groups:u32  { key_group:u16 table:u32 entries:u32 payload_len:u64 crc32(payload):u32
//!               payload = { composite_len:u32 composite value_len:u32 value }* }*
//! crc32(every byte before it):u32
//! ```
//!
//! That is a [frame](sabot_core::codec) (`SBST`, version 2), streamed into the file;
//! each key group's payload carries its own checksum too.
//!
//! `composite` is (key length u32, key, namespace); one whose key length runs past its end
//! makes the file corrupt. Entries are in composite byte order.
//! The file is written as `state.sbst.tmp`, fsynced, renamed into place, and the folder
//! fsynced: a folder either has a complete file or none.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use sabot_core::codec::{Codec, FrameWriter, put_bytes, unframe};

use crate::backend::split_composite;
use crate::{Result, StateError};

/// The snapshot file's name inside its folder.
pub const SNAPSHOT_FILE: &str = "state.sbst";
const MAGIC: &[u8; 4] = b"SBST";
const VERSION: u8 = 2;

/// A state table's identity in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub(crate) name: String,
    pub(crate) fingerprint: String,
}

/// The index of table `name` in `tables`, if registered; a different value layout is an
/// error. `tables` hold what was registered or restored first.
pub(crate) fn find_table<'a>(
    tables: impl Iterator<Item = &'a TableMeta>,
    name: &str,
    fingerprint: &str,
) -> Result<Option<usize>> {
    for (i, t) in tables.enumerate() {
        if t.name == name {
            if t.fingerprint != fingerprint {
                return Err(StateError::SerializerMismatch {
                    state: name.to_owned(),
                    written: t.fingerprint.clone(),
                    registered: fingerprint.to_owned(),
                });
            }
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Checks that no state in a snapshot has another layout than the one registered here.
pub(crate) fn check_layouts<'a>(
    mine: impl Iterator<Item = &'a TableMeta> + Clone,
    snapshot: &[TableMeta],
) -> Result<()> {
    for t in snapshot {
        if let Some(m) = mine.clone().find(|m| m.name == t.name)
            && m.fingerprint != t.fingerprint
        {
            return Err(StateError::SerializerMismatch {
                state: t.name.clone(),
                written: t.fingerprint.clone(),
                registered: m.fingerprint.clone(),
            });
        }
    }
    Ok(())
}

/// One key group of one table: its entries in composite order.
pub(crate) struct GroupData {
    pub(crate) key_group: u16,
    pub(crate) table: u32,
    pub(crate) entries: Vec<(Vec<u8>, Vec<u8>)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One key group of one table, borrowed: (key group, table index, entries in order).
pub(crate) type GroupRef<'a> = (u16, u32, Vec<(&'a [u8], &'a [u8])>);

/// Encodes and durably writes a snapshot into `dir`, streaming (no copy of the whole
/// state is built in memory); returns (file, bytes, entries).
pub(crate) fn write(
    dir: &Path,
    max_parallelism: usize,
    tables: &[TableMeta],
    groups: &[GroupRef<'_>],
) -> Result<(PathBuf, u64, u64)> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut entries_written = 0u64;
    let mut write_all = || -> std::io::Result<u64> {
        let file = File::create(&tmp)?;
        let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut w = FrameWriter::new(buffered, MAGIC, VERSION)?;
        let mut head = Vec::new();
        (max_parallelism as u32).encode(&mut head);
        (tables.len() as u32).encode(&mut head);
        for t in tables {
            put_bytes(&mut head, t.name.as_bytes());
            put_bytes(&mut head, t.fingerprint.as_bytes());
        }
        let non_empty = groups.iter().filter(|g| !g.2.is_empty()).count();
        (non_empty as u32).encode(&mut head);
        w.write_all(&head)?;
        let mut payload = Vec::new();
        let mut gh = Vec::with_capacity(22);
        for (kg, table, entries) in groups.iter().filter(|g| !g.2.is_empty()) {
            payload.clear();
            for (k, v) in entries {
                put_bytes(&mut payload, k);
                put_bytes(&mut payload, v);
            }
            gh.clear();
            kg.encode(&mut gh);
            table.encode(&mut gh);
            (entries.len() as u32).encode(&mut gh);
            (payload.len() as u64).encode(&mut gh);
            crc32fast::hash(&payload).encode(&mut gh);
            w.write_all(&gh)?;
            w.write_all(&payload)?;
            entries_written += entries.len() as u64;
        }
        let (buffered, bytes) = w.finish()?;
        buffered
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        Ok(bytes)
    };
    let bytes = write_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok((path, bytes, entries_written))
}

/// What a snapshot file holds, for inspection tools.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotSummary {
    /// The number of key groups of the job that wrote it.
    pub max_parallelism: usize,
    /// Every state: (name, value-layout fingerprint).
    pub states: Vec<(String, String)>,
    /// Per key-group section: (key group, state name, entries).
    pub groups: Vec<(u16, String, usize)>,
}

/// Decodes and checks snapshot bytes (every checksum, every length) and summarizes
/// them; `path` only names them in errors. Damaged bytes are an error, never a panic.
///
/// ```
/// use std::path::Path;
/// let err = sabot_state::snapshot::inspect(b"not a snapshot", Path::new("x")).unwrap_err();
/// assert!(err.to_string().contains("not a state snapshot"));
/// ```
pub fn inspect(data: &[u8], path: &Path) -> Result<SnapshotSummary> {
    let d = decode(data, path)?;
    Ok(SnapshotSummary {
        max_parallelism: d.max_parallelism,
        groups: d
            .groups
            .iter()
            .map(|g| {
                (
                    g.key_group,
                    d.tables[g.table as usize].name.clone(),
                    g.entries.len(),
                )
            })
            .collect(),
        states: d
            .tables
            .into_iter()
            .map(|t| (t.name, t.fingerprint))
            .collect(),
    })
}

/// A decoded snapshot file.
pub(crate) struct Decoded {
    pub(crate) max_parallelism: usize,
    pub(crate) tables: Vec<TableMeta>,
    pub(crate) groups: Vec<GroupData>,
}

struct Reader<'a> {
    buf: &'a [u8],
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, reason: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path: self.path.to_owned(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.corrupt(format!(
                "truncated {what}: need {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt(format!("{what} is not UTF-8")))
    }
}

/// Reads and checks the snapshot in folder `dir`.
pub(crate) fn read(dir: &Path) -> Result<Decoded> {
    let path = dir.join(SNAPSHOT_FILE);
    let data = fs::read(&path).map_err(io(&path))?;
    decode(&data, &path)
}

/// Decodes snapshot bytes (`path` only names them in errors).
pub(crate) fn decode(data: &[u8], path: &Path) -> Result<Decoded> {
    let mut r = Reader { buf: data, path };
    let (_, body) = unframe(data, MAGIC, VERSION..=VERSION, "state snapshot")
        .map_err(|e| r.corrupt(e.reason))?;
    r.buf = body;
    let max_parallelism = r.u32("max parallelism")? as usize;
    let n_tables = r.u32("table count")?;
    let mut tables = Vec::new();
    for _ in 0..n_tables {
        tables.push(TableMeta {
            name: r.string("table name")?,
            fingerprint: r.string("table fingerprint")?,
        });
    }
    let n_groups = r.u32("group count")?;
    let mut groups = Vec::new();
    for _ in 0..n_groups {
        let kg = u16::from_le_bytes(r.take(2, "key group")?.try_into().unwrap_or([0, 0]));
        let table = r.u32("table index")?;
        let entries = r.u32("entry count")?;
        let len_bytes = r.take(8, "payload length")?;
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
        let crc = r.u32("payload checksum")?;
        let payload = r.take(usize::try_from(len).unwrap_or(usize::MAX), "payload")?;
        if crc32fast::hash(payload) != crc {
            return Err(r.corrupt(format!("key group {kg}: payload checksum mismatch")));
        }
        if table as usize >= tables.len() || usize::from(kg) >= max_parallelism {
            return Err(r.corrupt(format!("key group {kg} of table {table} out of range")));
        }
        let mut p = Reader { buf: payload, path };
        let mut list = Vec::with_capacity((entries as usize).min(payload.len() / 8 + 1));
        for i in 0..entries {
            let k = p.bytes("entry key")?;
            if split_composite(k).is_none() {
                // Restored, it could be neither scanned nor addressed, yet kept for ever.
                return Err(r.corrupt(format!(
                    "key group {kg}: entry {i}'s key is not a key length, key and namespace"
                )));
            }
            let v = p.bytes("entry value")?;
            list.push((k.to_vec(), v.to_vec()));
        }
        if !p.buf.is_empty() {
            return Err(r.corrupt(format!("key group {kg}: bytes after the last entry")));
        }
        groups.push(GroupData {
            key_group: kg,
            table,
            entries: list,
        });
    }
    if !r.buf.is_empty() {
        return Err(r.corrupt("bytes after the last key group"));
    }
    Ok(Decoded {
        max_parallelism,
        tables,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<TableMeta> {
        vec![TableMeta {
            name: "s".into(),
            fingerprint: "v1".into(),
        }]
    }

    #[test]
    fn an_entry_key_that_is_not_a_composite_is_corrupt_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        // Key length 2, key "ab", namespace "n": well formed; then a key length of 9
        // with only 2 key bytes after it.
        let good: &[u8] = &[2, 0, 0, 0, b'a', b'b', b'n'];
        let bad: &[u8] = &[9, 0, 0, 0, b'a', b'b'];
        write(
            dir.path(),
            8,
            &table(),
            &[(3, 0, vec![(good, b"v".as_slice())])],
        )
        .unwrap();
        let d = read(dir.path()).unwrap();
        assert_eq!(d.groups[0].entries, vec![(good.to_vec(), b"v".to_vec())]);

        write(
            dir.path(),
            8,
            &table(),
            &[(3, 0, vec![(good, b"v".as_slice()), (bad, b"w".as_slice())])],
        )
        .unwrap();
        let err = read(dir.path()).err().expect("a malformed key is an error");
        let msg = err.to_string();
        assert!(matches!(err, StateError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("key group 3: entry 1's key"), "{msg}");
        assert!(msg.contains(SNAPSHOT_FILE), "{msg}");
    }
}
