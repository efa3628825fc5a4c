//! Checkpoint storage on a local folder: files written then fsynced, a manifest with
//! checksums written last and published with an atomic rename. A checkpoint without a
//! valid manifest does not exist.
//!
//! Layout under the root folder:
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
//! Publishing: `_manifest.tmp` is written and fsynced, renamed to `_manifest`, and the
//! folder is fsynced, so after a crash the manifest is either absent or complete. Then
//! `_latest` is replaced the same way (`sabot-checkpoint-latest 1`, `id N`, and a
//! checksum line as in the manifest). Every file operation goes through [`Io`], where
//! tests inject a failure at any step.
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
//! [`LocalStorage::latest`] is an error ([`CheckpointError::Damaged`]) naming the
//! damaged file and the older intact checkpoint, if any; the user chooses
//! ([`LocalStorage::restore_from`] continues from a checkpoint named explicitly).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sabot_core::CheckpointId;

use crate::{CheckpointError, Result};

const MANIFEST: &str = "_manifest";
const HEADER: &str = "sabot-checkpoint 1";
const LATEST: &str = "_latest";
const LATEST_HEADER: &str = "sabot-checkpoint-latest 1";
const LOCK: &str = "_lock";

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

/// The file operations checkpoint storage performs, one call per step, so that a test
/// can fail any of them ([`Io::fail_at`]).
#[derive(Clone, Debug, Default)]
pub struct Io {
    fail_at: Option<usize>,
    steps: Arc<AtomicUsize>,
}

impl Io {
    /// Fails the `step`-th file operation (from 0) and every one after it, as a crash at
    /// that point would: nothing after it happens.
    pub fn fail_at(step: usize) -> Io {
        Io {
            fail_at: Some(step),
            steps: Arc::default(),
        }
    }

    /// File operations performed so far.
    pub fn steps(&self) -> usize {
        self.steps.load(Ordering::SeqCst)
    }

    fn step(&self, what: &str, path: &Path) -> Result<()> {
        let n = self.steps.fetch_add(1, Ordering::SeqCst);
        if self.fail_at.is_some_and(|f| n >= f) {
            return Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("injected failure at step {n} ({what})")),
            });
        }
        Ok(())
    }

    fn io<T>(&self, what: &str, path: &Path, f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
        self.step(what, path)?;
        f().map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
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

/// Checkpoints in a local folder.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    root: PathBuf,
    io: Io,
}

impl LocalStorage {
    /// Checkpoints under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStorage> {
        LocalStorage::with_io(root, Io::default())
    }

    /// Like [`LocalStorage::open`], with the file operations of `io` (for fault tests).
    pub fn with_io(root: impl Into<PathBuf>, io: Io) -> Result<LocalStorage> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| CheckpointError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(LocalStorage { root, io })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of checkpoint `id`.
    pub fn dir(&self, id: CheckpointId) -> PathBuf {
        self.root.join(format!("chk-{:020}", id.0))
    }

    /// Writes `bytes` as file `name` (a `/`-separated path) of checkpoint `id`, whose
    /// folder [`begin`](LocalStorage::begin) created: a temporary file, fsynced, renamed
    /// into place. Returns the file's entry for the manifest.
    pub fn put(&self, id: CheckpointId, name: &str, bytes: &[u8]) -> Result<FileEntry> {
        write_file(&self.io, &self.dir(id), name, bytes)
    }

    /// The entries of what a task wrote itself under `name` (a file, or every file
    /// under a folder) in checkpoint `id`, each fsynced: what its acknowledgement
    /// reports, so completing the checkpoint reads nothing again. A file `cache` knows
    /// (the same file, as RocksDB hard-links an unchanged SST file into the next
    /// checkpoint) is not read again either.
    pub fn scan(
        &self,
        id: CheckpointId,
        name: &str,
        cache: &mut ChecksumCache,
    ) -> Result<Vec<FileEntry>> {
        scan(&self.io, &self.dir(id), name, cache)
    }

    /// Starts writing checkpoint `id` (an unfinished earlier attempt is removed).
    pub fn begin(&self, id: CheckpointId) -> Result<CheckpointWriter> {
        let dir = self.dir(id);
        if dir.exists() {
            self.io
                .io("remove stale", &dir, || fs::remove_dir_all(&dir))?;
        }
        self.io
            .io("create folder", &dir, || fs::create_dir_all(&dir))?;
        Ok(CheckpointWriter {
            id,
            dir,
            root: self.root.clone(),
            io: self.io.clone(),
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
                    folder: self.root.clone(),
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
    /// [`latest`]: LocalStorage::latest
    pub fn restore_from(&self, id: CheckpointId) -> Result<Manifest> {
        if !self.dir(id).exists() {
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
    /// with a `_manifest` file (intact or not). An error if `_latest` is damaged.
    pub fn newest_published(&self) -> Result<Option<CheckpointId>> {
        let pointer = self.read_latest()?;
        let mut newest = pointer;
        for id in self.folder_ids()?.into_iter().rev() {
            if self.dir(id).join(MANIFEST).exists() {
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
        let path = self.root.join(LATEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        let bad = |reason: &str| CheckpointError::BadManifest {
            path: path.clone(),
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

    /// Takes the folder for this process: a second process on the same folder gets
    /// [`CheckpointError::Locked`]. The lock is the kernel's (`flock`): it goes with the
    /// returned guard, or with the process, however it ends.
    pub fn lock(&self) -> Result<FolderLock> {
        let path = self.root.join(LOCK);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(CheckpointError::Locked {
                    folder: self.root.clone(),
                    holder: holder.trim().to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message a second process gets.
        file.set_len(0).map_err(io)?;
        writeln!(file, "pid {}", std::process::id()).map_err(io)?;
        Ok(FolderLock { _file: file, path })
    }

    /// Checkpoint ids of the folders under the root, ascending.
    fn folder_ids(&self) -> Result<Vec<CheckpointId>> {
        let entries = fs::read_dir(&self.root).map_err(|source| CheckpointError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut ids: Vec<CheckpointId> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("chk-")?
                    .parse::<u64>()
                    .ok()
                    .map(CheckpointId)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads checkpoint `id`'s manifest.
    pub fn manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let path = self.dir(id).join(MANIFEST);
        let bytes = fs::read(&path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
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
        let dir = self.dir(m.id);
        for f in &m.files {
            let path = dir.join(&f.path);
            let bytes = fs::read(&path).map_err(|source| CheckpointError::Io {
                path: path.clone(),
                source,
            })?;
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
                    self.root.display()
                ),
            });
        }
        let dir = self.dir(id);
        if dir.exists() {
            // The manifest goes first: a half-deleted checkpoint is never complete.
            let manifest = dir.join(MANIFEST);
            if manifest.exists() {
                self.io
                    .io("remove manifest", &manifest, || fs::remove_file(&manifest))?;
            }
            self.io
                .io("remove folder", &dir, || fs::remove_dir_all(&dir))?;
        }
        Ok(())
    }
}

/// Writes one checkpoint's files, then publishes it.
#[derive(Debug)]
pub struct CheckpointWriter {
    id: CheckpointId,
    dir: PathBuf,
    root: PathBuf,
    io: Io,
    files: BTreeMap<String, FileEntry>,
}

impl CheckpointWriter {
    /// The checkpoint.
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// The checkpoint's folder (for tasks that write files themselves, then
    /// [`add`](CheckpointWriter::add) them).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` to `name` (a `/`-separated path inside the folder): a temporary
    /// file, fsynced, renamed into place.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let entry = write_file(&self.io, &self.dir, name, bytes)?;
        self.files.insert(entry.path.clone(), entry);
        Ok(())
    }

    /// Records a file (or every file under a folder) already written inside the
    /// checkpoint's folder, fsyncing each (and reading it for its checksum).
    pub fn add(&mut self, name: &str) -> Result<()> {
        let entries = scan(&self.io, &self.dir, name, &mut ChecksumCache::default())?;
        self.record(entries);
        Ok(())
    }

    /// Records files whose entries the tasks that wrote them reported (see
    /// [`LocalStorage::put`] and [`LocalStorage::scan`]): nothing is read again.
    pub fn record(&mut self, entries: impl IntoIterator<Item = FileEntry>) {
        for e in entries {
            self.files.insert(e.path.clone(), e);
        }
    }

    /// Publishes the checkpoint: writes the manifest with `meta` and every file's
    /// checksum, fsyncs it, renames it into place and fsyncs the folder; then points
    /// `_latest` at it the same way.
    pub fn commit(self, created_ms: i64, meta: BTreeMap<String, String>) -> Result<Manifest> {
        let manifest = Manifest {
            id: self.id,
            created_ms,
            meta,
            files: self.files.into_values().collect(),
        };
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        let path = self.dir.join(MANIFEST);
        let text = manifest.encode();
        let mut f = self.io.io("create", &tmp, || File::create(&tmp))?;
        self.io.io("write", &tmp, || f.write_all(text.as_bytes()))?;
        self.io.io("fsync", &tmp, || f.sync_all())?;
        self.io.io("rename", &path, || fs::rename(&tmp, &path))?;
        let dir = File::open(&self.dir).map_err(|source| CheckpointError::Io {
            path: self.dir.clone(),
            source,
        })?;
        self.io.io("fsync folder", &self.dir, || dir.sync_all())?;
        // The checkpoint is published. `_latest` keeps its id even if its folder or its
        // manifest is lost later.
        let mut text = format!("{LATEST_HEADER}\nid {}\n", self.id.0);
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("checksum {crc:08x}\n"));
        let tmp = self.root.join(format!("{LATEST}.tmp"));
        let path = self.root.join(LATEST);
        let mut f = self.io.io("create", &tmp, || File::create(&tmp))?;
        self.io.io("write", &tmp, || f.write_all(text.as_bytes()))?;
        self.io.io("fsync", &tmp, || f.sync_all())?;
        self.io.io("rename", &path, || fs::rename(&tmp, &path))?;
        let root = File::open(&self.root).map_err(|source| CheckpointError::Io {
            path: self.root.clone(),
            source,
        })?;
        self.io.io("fsync folder", &self.root, || root.sync_all())?;
        Ok(manifest)
    }
}

/// Writes `bytes` to `name` under `dir`: a temporary file, fsynced, renamed into place.
fn write_file(io: &Io, dir: &Path, name: &str, bytes: &[u8]) -> Result<FileEntry> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        io.io("create folder", parent, || fs::create_dir_all(parent))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = io.io("create", &tmp, || File::create(&tmp))?;
    io.io("write", &tmp, || f.write_all(bytes))?;
    io.io("fsync", &tmp, || f.sync_all())?;
    io.io("rename", &path, || fs::rename(&tmp, &path))?;
    Ok(FileEntry {
        path: name.to_owned(),
        len: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    })
}

/// The entries of the file `name` under `dir`, or of every file under the folder
/// `name`, in path order; each file fsynced.
fn scan(io: &Io, dir: &Path, name: &str, cache: &mut ChecksumCache) -> Result<Vec<FileEntry>> {
    let path = dir.join(name);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    let meta = fs::metadata(&path).map_err(io_err(&path))?;
    if meta.is_dir() {
        let mut names: Vec<String> = fs::read_dir(&path)
            .map_err(io_err(&path))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            out.extend(scan(io, dir, &format!("{name}/{n}"), cache)?);
        }
        return Ok(out);
    }
    let key = ChecksumCache::key(&meta);
    if let Some(crc32) = key.and_then(|k| cache.known.get(&k).copied()) {
        return Ok(vec![FileEntry {
            path: name.to_owned(),
            len: meta.len(),
            crc32,
        }]);
    }
    let bytes = io.io("read", &path, || fs::read(&path))?;
    let f = io.io("open", &path, || File::open(&path))?;
    io.io("fsync", &path, || f.sync_all())?;
    let crc32 = crc32fast::hash(&bytes);
    if let Some(k) = key {
        cache.insert(k, crc32);
    }
    Ok(vec![FileEntry {
        path: name.to_owned(),
        len: bytes.len() as u64,
        crc32,
    }])
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
    fn key(m: &fs::Metadata) -> Option<(u64, u64, u64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    }

    #[cfg(not(unix))]
    fn key(_: &fs::Metadata) -> Option<(u64, u64, u64, i64, i64)> {
        None
    }

    fn insert(&mut self, key: (u64, u64, u64, i64, i64), crc32: u32) {
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(key, crc32);
    }
}

/// The lock on a checkpoint folder ([`LocalStorage::lock`]); released when dropped.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
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
