//! Checkpoint storage: a job's checkpoints in a [`Store`] (named objects under one
//! root: [`LocalStore`] on a local folder, object storage beside it), each one files
//! written first and a manifest with their checksums published last, atomically. A
//! checkpoint without a valid manifest does not exist.
//!
//! [`CheckpointStorage`] holds the protocol (begin, write, publish, find the checkpoint
//! to continue from, verify, discard) once, over any store; operators write their
//! snapshots through a [`SnapshotTarget`] and read them back through a
//! [`SnapshotSource`], never through a file system path of their own.
//!
//! Layout under the root:
//!
//! ```text
//! chk-00000000000000000042/          one folder per checkpoint
//!     <task files>                   whatever the tasks wrote (state snapshots, ...)
//!     _manifest                      published last: the checkpoint exists from here on
//! _latest                            the newest published checkpoint's id (see below)
//! _lock                              held (flock) by the one process running on the folder
//! ```
//!
//! The manifest is text, one record per line:
//!
//! ```text
//! sabot-checkpoint 1
//! id 42
//! created_ms 1764000000000
//! meta <key> <value, percent-escaped>
//! file <crc32 as 8 hex digits> <length in bytes> <path relative to the folder>
//! checksum <crc32 of every byte above this line, 8 hex digits>
//! ```
//!
//! Publishing: the manifest goes through [`Store::publish`] (on a local folder:
//! `_manifest.tmp` written and fsynced, renamed to `_manifest`, the folder fsynced), so
//! after a crash the manifest is either absent or complete. Then `_latest` is replaced
//! the same way (`sabot-checkpoint-latest 1`, `id N`, and a checksum line as in the
//! manifest). Every file operation of a [`LocalStore`] goes through [`Io`], where tests
//! inject a failure at any step.
//!
//! **Continuing never goes back past committed output.** Sinks commit their output once
//! a checkpoint is published, so the newest published checkpoint is the only one a job
//! may continue from on its own: continuing from an older one would produce again, and
//! commit a second time, what the newer one had committed. The newest published
//! checkpoint is the larger of `_latest` and the highest folder whose `_manifest` exists
//! (valid or not: a manifest that exists was published, since it is renamed into place
//! whole; `_latest` still names a checkpoint whose manifest or whole folder was lost).
//! If that checkpoint is damaged in any way (a manifest that does not parse or whose
//! checksum fails, a file missing, cut short or altered, a damaged `_latest`),
//! [`CheckpointStorage::latest`] is an error ([`CheckpointError::Damaged`]) naming the
//! damaged file and the older intact checkpoint, if any; the user chooses
//! ([`CheckpointStorage::restore_from`] continues from a checkpoint named explicitly).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sabot_core::CheckpointId;

use crate::{CheckpointError, Result};

mod local;
mod snapshot;

pub use local::{Io, LocalStore};
pub use snapshot::{SnapshotSource, SnapshotTarget};

const MANIFEST: &str = "_manifest";
const HEADER: &str = "sabot-checkpoint 1";
const LATEST: &str = "_latest";
const LATEST_HEADER: &str = "sabot-checkpoint-latest 1";

/// Where checkpoints live: named objects (`/`-separated paths) under one root, as a
/// local folder or an object storage bucket offers them. [`CheckpointStorage`] builds
/// the checkpoint protocol on these operations only, so a new kind of storage is one
/// implementation of this trait and touches no operator.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where the object `path` is, for messages (a file path, or a URL as a path).
    fn location(&self, path: &str) -> PathBuf;
    /// Writes the object `path` durably (whole or not at all), replacing any before.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// Reads the object `path`; `None` if there is none.
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Whether the object `path` (or anything under the prefix `path`) exists.
    fn exists(&self, path: &str) -> Result<bool>;
    /// The names directly under the prefix `path` (`""`: the root), sorted.
    fn list(&self, path: &str) -> Result<Vec<String>>;
    /// Deletes the object `path` or everything under the prefix `path`; nothing there
    /// is no error.
    fn delete(&self, path: &str) -> Result<()>;
    /// Publishes the object `path`: readers see the previous object or all of the new
    /// one, never a part, and once this returns a crash does not lose it.
    fn publish(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// A local folder where a task puts the files that a library writes as files
    /// (RocksDB's checkpoints) to become the objects under `path` when
    /// [sealed](Store::seal).
    fn stage(&self, path: &str) -> Result<PathBuf>;
    /// Makes what was staged for `path` durable objects, returning their entries
    /// (paths relative to the root). `cache` spares reading files already checksummed.
    fn seal(&self, path: &str, cache: &mut ChecksumCache) -> Result<Vec<FileEntry>>;
    /// A local folder holding the objects under `path`, for libraries that read files
    /// (a local store's own folder; a remote store downloads them).
    fn fetch(&self, path: &str) -> Result<PathBuf>;
    /// Takes the store for this process: a second process gets
    /// [`CheckpointError::Locked`]. The lock goes with the guard, or with the process
    /// however it ends.
    fn lock(&self) -> Result<StoreLock>;
}

/// The lock on a store ([`Store::lock`]); released when dropped.
pub struct StoreLock {
    path: PathBuf,
    _guard: Box<dyn Send + Sync>,
}

impl StoreLock {
    /// A lock named `path` (for messages), held while `guard` lives.
    pub fn new(path: PathBuf, guard: Box<dyn Send + Sync>) -> StoreLock {
        StoreLock {
            path,
            _guard: guard,
        }
    }

    /// Where the lock is (the lock file of a local store).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLock")
            .field("path", &self.path)
            .finish()
    }
}

/// One file of a checkpoint, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the checkpoint's folder (`/`-separated).
    pub path: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 of the contents.
    pub crc32: u32,
}

/// A file entry's bytes (an acknowledgement from a task in another process).
impl sabot_core::codec::Codec for FileEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.path.encode(out);
        self.len.encode(out);
        self.crc32.encode(out);
    }

    fn decode(input: &mut &[u8]) -> std::result::Result<Self, sabot_core::codec::CodecError> {
        Ok(FileEntry {
            path: String::decode(input)?,
            len: u64::decode(input)?,
            crc32: u32::decode(input)?,
        })
    }
}

impl FileEntry {
    /// The entry of `bytes` written as `path`.
    pub fn of(path: &str, bytes: &[u8]) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
}

/// A published checkpoint's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The checkpoint.
    pub id: CheckpointId,
    /// When it was published (ms since the epoch).
    pub created_ms: i64,
    /// What the job recorded with it (source positions, parallelism, ...).
    pub meta: BTreeMap<String, String>,
    /// Every file, in path order.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Total bytes of the checkpoint's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }

    fn encode(&self) -> String {
        let mut s = format!(
            "{HEADER}\nid {}\ncreated_ms {}\n",
            self.id.0, self.created_ms
        );
        for (k, v) in &self.meta {
            s.push_str(&format!("meta {} {}\n", escape(k), escape(v)));
        }
        for f in &self.files {
            s.push_str(&format!(
                "file {:08x} {} {}\n",
                f.crc32,
                f.len,
                escape(&f.path)
            ));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("checksum {crc:08x}\n"));
        s
    }

    /// Parses a manifest (untrusted bytes: any damage is an error naming the line).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let bad = |reason: String| CheckpointError::BadManifest {
            path: path.to_path_buf(),
            reason,
        };
        let body = checked_body(bytes).map_err(bad)?;
        let mut lines = body.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(HEADER) {
            return Err(bad(format!("the first line must be `{HEADER}`")));
        }
        let (mut id, mut created_ms) = (None, None);
        let mut meta = BTreeMap::new();
        let mut files = Vec::new();
        for (n, line) in lines {
            let at = |reason: &str| bad(format!("line {}: {reason}", n + 1));
            let mut parts = line.splitn(2, ' ');
            let (kind, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match kind {
                "id" => id = Some(rest.parse::<u64>().map_err(|_| at("bad id"))?),
                "created_ms" => {
                    created_ms = Some(rest.parse::<i64>().map_err(|_| at("bad created_ms"))?)
                }
                "meta" => {
                    let (k, v) = rest
                        .split_once(' ')
                        .ok_or_else(|| at("meta needs a key and a value"))?;
                    meta.insert(
                        unescape(k).map_err(|e| at(&e))?,
                        unescape(v).map_err(|e| at(&e))?,
                    );
                }
                "file" => {
                    let mut p = rest.splitn(3, ' ');
                    let crc32 = p
                        .next()
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .ok_or_else(|| at("bad file checksum"))?;
                    let len = p
                        .next()
                        .and_then(|l| l.parse::<u64>().ok())
                        .ok_or_else(|| at("bad file length"))?;
                    let path = unescape(p.next().ok_or_else(|| at("file without a path"))?)
                        .map_err(|e| at(&e))?;
                    if path.is_empty()
                        || path
                            .split('/')
                            .any(|c| c.is_empty() || c == "." || c == "..")
                    {
                        return Err(at("a file path must stay inside the checkpoint folder"));
                    }
                    files.push(FileEntry { path, len, crc32 });
                }
                other => return Err(at(&format!("unknown record `{other}`"))),
            }
        }
        Ok(Manifest {
            id: CheckpointId(id.ok_or_else(|| bad("no id".into()))?),
            created_ms: created_ms.ok_or_else(|| bad("no created_ms".into()))?,
            meta,
            files,
        })
    }
}

/// Percent-escapes spaces, newlines, `%` and non-printable bytes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a cut-off % escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad % escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "an escape that is not UTF-8".into())
}

/// A checkpoint folder and what is in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Published: its manifest is valid.
    Complete(Manifest),
    /// No valid manifest (in progress, aborted or cut off by a crash): it does not
    /// exist as a checkpoint.
    Incomplete {
        /// The checkpoint id from the folder name.
        id: CheckpointId,
        /// Why it is not complete.
        reason: String,
    },
}

/// A job's checkpoints in a [`Store`].
#[derive(Clone, Debug)]
pub struct CheckpointStorage {
    store: Arc<dyn Store>,
}

/// The name of checkpoint `id`'s folder (prefix) under the root.
fn folder(id: CheckpointId) -> String {
    format!("chk-{:020}", id.0)
}

impl CheckpointStorage {
    /// Checkpoints in the local folder `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<CheckpointStorage> {
        Ok(CheckpointStorage::new(Arc::new(LocalStore::open(root)?)))
    }

    /// Checkpoints in the local folder `root`, with the file operations of `io` (for
    /// fault tests).
    pub fn with_io(root: impl Into<PathBuf>, io: Io) -> Result<CheckpointStorage> {
        Ok(CheckpointStorage::new(Arc::new(LocalStore::with_io(
            root, io,
        )?)))
    }

    /// Checkpoints in `store`.
    pub fn new(store: Arc<dyn Store>) -> CheckpointStorage {
        CheckpointStorage { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where the checkpoints are (the root folder of a local store).
    pub fn root(&self) -> PathBuf {
        self.store.location("")
    }

    /// Where checkpoint `id` is (its folder, in a local store).
    pub fn dir(&self, id: CheckpointId) -> PathBuf {
        self.store.location(&folder(id))
    }

    /// Writes `bytes` as file `name` (a `/`-separated path) of checkpoint `id`,
    /// durably. Returns the file's entry for the manifest.
    pub fn put(&self, id: CheckpointId, name: &str, bytes: &[u8]) -> Result<FileEntry> {
        self.store.put(&format!("{}/{name}", folder(id)), bytes)?;
        Ok(FileEntry::of(name, bytes))
    }

    /// Reads file `name` of checkpoint `id` (an error naming it if it is missing).
    pub fn get(&self, id: CheckpointId, name: &str) -> Result<Vec<u8>> {
        let path = format!("{}/{name}", folder(id));
        self.store
            .get(&path)?
            .ok_or_else(|| CheckpointError::Missing {
                path: self.store.location(&path),
            })
    }

    /// Where operator snapshot `name` (a folder) of checkpoint `id` is written.
    pub fn snapshot_target(&self, id: CheckpointId, name: &str) -> SnapshotTarget {
        SnapshotTarget::new(self.store.clone(), folder(id), name.to_owned())
    }

    /// Where operator snapshot `name` of checkpoint `m` is read back from; `None` if
    /// the checkpoint holds no file under it (an operator that had nothing to write).
    pub fn snapshot_source(&self, m: &Manifest, name: &str) -> Option<SnapshotSource> {
        let prefix = format!("{name}/");
        m.files
            .iter()
            .any(|f| f.path.starts_with(&prefix))
            .then(|| SnapshotSource::new(self.store.clone(), format!("{}/{name}", folder(m.id))))
    }

    /// Starts writing checkpoint `id` (an unfinished earlier attempt is removed).
    pub fn begin(&self, id: CheckpointId) -> Result<CheckpointWriter> {
        let name = folder(id);
        self.store.delete(&name)?;
        self.store.stage(&name)?;
        Ok(CheckpointWriter {
            id,
            folder: name,
            store: self.store.clone(),
            files: BTreeMap::new(),
        })
    }

    /// Every checkpoint folder, oldest first, complete or not.
    pub fn list(&self) -> Result<Vec<Listed>> {
        Ok(self
            .folder_ids()?
            .into_iter()
            .map(|id| match self.manifest(id) {
                Ok(m) => Listed::Complete(m),
                Err(e) => Listed::Incomplete {
                    id,
                    reason: e.to_string(),
                },
            })
            .collect())
    }

    /// The published checkpoints, oldest first.
    pub fn completed(&self) -> Result<Vec<Manifest>> {
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|l| match l {
                Listed::Complete(m) => Some(m),
                Listed::Incomplete { .. } => None,
            })
            .collect())
    }

    /// The checkpoint a job continues from: the newest published one, if any (see the
    /// module docs), checked intact. A damaged one is an error naming what is damaged,
    /// never a silent step back to an older checkpoint.
    pub fn latest(&self) -> Result<Option<Manifest>> {
        let Some(newest) = self.newest_published()? else {
            return Ok(None);
        };
        match self.intact(newest) {
            Ok(m) => Ok(Some(m)),
            Err(cause) => {
                let older = self.newest_intact_before(newest);
                Err(CheckpointError::Damaged {
                    checkpoint: newest,
                    folder: self.root(),
                    older,
                    cause: Box::new(cause),
                })
            }
        }
    }

    /// Checkpoint `id`, named explicitly (for a user's choice after [`latest`] refused a
    /// damaged newest checkpoint): it must be published and intact. Logs a warning when
    /// a newer checkpoint was published: output committed after `id` is not rolled
    /// back.
    ///
    /// [`latest`]: CheckpointStorage::latest
    pub fn restore_from(&self, id: CheckpointId) -> Result<Manifest> {
        if !self.store.exists(&folder(id))? {
            let have: Vec<String> = self
                .completed()?
                .iter()
                .map(|m| m.id.0.to_string())
                .collect();
            return Err(CheckpointError::BadManifest {
                path: self.dir(id),
                reason: format!(
                    "no such checkpoint in the folder (complete ones: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ),
            });
        }
        let m = self.intact(id)?;
        if let Ok(Some(newest)) = self.newest_published()
            && newest > id
        {
            tracing::warn!(
                checkpoint = %id, newest = %newest,
                "continuing from an older checkpoint than the newest published one: output committed after it is produced again"
            );
        }
        Ok(m)
    }

    /// Checkpoint `id`'s manifest, with every file checked.
    pub fn intact(&self, id: CheckpointId) -> Result<Manifest> {
        let m = self.manifest(id)?;
        self.verify(&m)?;
        Ok(m)
    }

    /// The newest published checkpoint: the larger of `_latest` and the highest folder
    /// with a `_manifest` (intact or not). An error if `_latest` is damaged.
    pub fn newest_published(&self) -> Result<Option<CheckpointId>> {
        let pointer = self.read_latest()?;
        let mut newest = pointer;
        for id in self.folder_ids()?.into_iter().rev() {
            if self.store.exists(&format!("{}/{MANIFEST}", folder(id)))? {
                newest = newest.max(Some(id));
                break;
            }
        }
        Ok(newest)
    }

    /// The newest intact checkpoint older than `id`, if any.
    fn newest_intact_before(&self, id: CheckpointId) -> Option<CheckpointId> {
        let ids = self.folder_ids().ok()?;
        ids.into_iter()
            .rev()
            .filter(|i| *i < id)
            .find(|i| self.intact(*i).is_ok())
    }

    /// What `_latest` says (none if absent).
    fn read_latest(&self) -> Result<Option<CheckpointId>> {
        let Some(bytes) = self.store.get(LATEST)? else {
            return Ok(None);
        };
        let bad = |reason: &str| CheckpointError::BadManifest {
            path: self.store.location(LATEST),
            reason: format!(
                "{reason}; this file names the newest checkpoint, so no checkpoint is used: restore it, or delete it if the highest chk-* folder with an intact _manifest is the newest checkpoint the job completed"
            ),
        };
        let body = checked_body(&bytes).map_err(|r| bad(&r))?;
        let mut lines = body.lines();
        if lines.next() != Some(LATEST_HEADER) {
            return Err(bad(&format!("the first line must be `{LATEST_HEADER}`")));
        }
        let id = lines
            .next()
            .and_then(|l| l.strip_prefix("id "))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("the second line must be `id <checkpoint>`"))?;
        if lines.next().is_some() {
            return Err(bad("more than two lines"));
        }
        Ok(Some(CheckpointId(id)))
    }

    /// Takes the storage for this process ([`Store::lock`]): a second process on the
    /// same checkpoints gets [`CheckpointError::Locked`].
    pub fn lock(&self) -> Result<StoreLock> {
        self.store.lock()
    }

    /// Checkpoint ids of the folders under the root, ascending.
    fn folder_ids(&self) -> Result<Vec<CheckpointId>> {
        let mut ids: Vec<CheckpointId> = self
            .store
            .list("")?
            .iter()
            .filter_map(|n| n.strip_prefix("chk-")?.parse::<u64>().ok())
            .map(CheckpointId)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads checkpoint `id`'s manifest.
    pub fn manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let name = format!("{}/{MANIFEST}", folder(id));
        let path = self.store.location(&name);
        let bytes = self
            .store
            .get(&name)?
            .ok_or_else(|| CheckpointError::Missing { path: path.clone() })?;
        let m = Manifest::decode(&bytes, &path)?;
        if m.id != id {
            return Err(CheckpointError::BadManifest {
                path,
                reason: format!(
                    "it names checkpoint {} but lies in the folder of {id}",
                    m.id
                ),
            });
        }
        Ok(m)
    }

    /// Checks every file of `m`: present, of the recorded length and checksum.
    pub fn verify(&self, m: &Manifest) -> Result<()> {
        for f in &m.files {
            let name = format!("{}/{}", folder(m.id), f.path);
            let path = self.store.location(&name);
            let bytes = self
                .store
                .get(&name)?
                .ok_or_else(|| CheckpointError::Missing { path: path.clone() })?;
            if bytes.len() as u64 != f.len || crc32fast::hash(&bytes) != f.crc32 {
                return Err(CheckpointError::BadManifest {
                    path,
                    reason: format!(
                        "the file has {} bytes (crc {:08x}), the manifest says {} (crc {:08x})",
                        bytes.len(),
                        crc32fast::hash(&bytes),
                        f.len,
                        f.crc32
                    ),
                });
            }
        }
        Ok(())
    }

    /// Deletes checkpoint `id` (published or not), unless it is the newest published
    /// one: without it a restart could only go back past committed output.
    pub fn discard(&self, id: CheckpointId) -> Result<()> {
        if self.newest_published().ok().flatten() == Some(id) {
            return Err(CheckpointError::Protocol {
                reason: format!(
                    "checkpoint {id} is the newest published checkpoint in {}: it is never discarded",
                    self.root().display()
                ),
            });
        }
        // The manifest goes first: a half-deleted checkpoint is never complete.
        self.store.delete(&format!("{}/{MANIFEST}", folder(id)))?;
        self.store.delete(&folder(id))
    }
}

/// Writes one checkpoint's files, then publishes it.
#[derive(Debug)]
pub struct CheckpointWriter {
    id: CheckpointId,
    folder: String,
    store: Arc<dyn Store>,
    files: BTreeMap<String, FileEntry>,
}

impl CheckpointWriter {
    /// The checkpoint.
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// Writes `bytes` to `name` (a `/`-separated path inside the checkpoint), durably.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.store.put(&format!("{}/{name}", self.folder), bytes)?;
        self.files
            .insert(name.to_owned(), FileEntry::of(name, bytes));
        Ok(())
    }

    /// A local folder for files that become the checkpoint's folder `name` once
    /// [added](CheckpointWriter::add).
    pub fn stage(&self, name: &str) -> Result<PathBuf> {
        self.store.stage(&format!("{}/{name}", self.folder))
    }

    /// Records the files staged under `name` ([`stage`](CheckpointWriter::stage)),
    /// made durable (and read for their checksums).
    pub fn add(&mut self, name: &str) -> Result<()> {
        let entries = self.store.seal(
            &format!("{}/{name}", self.folder),
            &mut ChecksumCache::default(),
        )?;
        let prefix = format!("{}/", self.folder);
        self.record(entries.into_iter().map(|mut e| {
            e.path = e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_owned();
            e
        }));
        Ok(())
    }

    /// Records files whose entries the tasks that wrote them reported (see
    /// [`CheckpointStorage::put`] and [`SnapshotTarget::finish`]): nothing is read
    /// again.
    pub fn record(&mut self, entries: impl IntoIterator<Item = FileEntry>) {
        for e in entries {
            self.files.insert(e.path.clone(), e);
        }
    }

    /// Publishes the checkpoint: the manifest with `meta` and every file's checksum,
    /// published atomically ([`Store::publish`]); then `_latest` points at it the same
    /// way.
    pub fn commit(self, created_ms: i64, meta: BTreeMap<String, String>) -> Result<Manifest> {
        let manifest = Manifest {
            id: self.id,
            created_ms,
            meta,
            files: self.files.into_values().collect(),
        };
        self.store.publish(
            &format!("{}/{MANIFEST}", self.folder),
            manifest.encode().as_bytes(),
        )?;
        // The checkpoint is published. `_latest` keeps its id even if its folder or its
        // manifest is lost later.
        let mut text = format!("{LATEST_HEADER}\nid {}\n", self.id.0);
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("checksum {crc:08x}\n"));
        self.store.publish(LATEST, text.as_bytes())?;
        Ok(manifest)
    }
}

/// Checksums of files already read, by the file's identity (device, inode, length,
/// modification time): a file hard-linked unchanged into a later checkpoint is not read
/// again. Bounded: it forgets everything past [`ChecksumCache::CAPACITY`] files.
#[derive(Debug, Default)]
pub struct ChecksumCache {
    known: std::collections::HashMap<(u64, u64, u64, i64, i64), u32>,
}

impl ChecksumCache {
    /// Files remembered at most.
    pub const CAPACITY: usize = 1 << 16;

    #[cfg(unix)]
    fn key(m: &std::fs::Metadata) -> Option<(u64, u64, u64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    }

    #[cfg(not(unix))]
    fn key(_: &std::fs::Metadata) -> Option<(u64, u64, u64, i64, i64)> {
        None
    }

    /// The checksum of the file `m` describes, if it was read before.
    pub fn get(&self, m: &std::fs::Metadata) -> Option<u32> {
        Self::key(m).and_then(|k| self.known.get(&k).copied())
    }

    /// Remembers the checksum of the file `m` describes.
    pub fn insert(&mut self, m: &std::fs::Metadata, crc32: u32) {
        let Some(key) = Self::key(m) else { return };
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(key, crc32);
    }
}

/// The text above a `checksum <crc32>` last line, if the checksum matches.
fn checked_body(bytes: &[u8]) -> std::result::Result<&str, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body_end = text
        .rfind("checksum ")
        .ok_or_else(|| "no checksum line".to_string())?;
    let (body, tail) = text.split_at(body_end);
    let want = tail
        .trim_end()
        .strip_prefix("checksum ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| "unreadable checksum line".to_string())?;
    if crc32fast::hash(body.as_bytes()) != want || !tail.ends_with('\n') {
        return Err("checksum mismatch: the file is damaged or incomplete".into());
    }
    Ok(body)
}
