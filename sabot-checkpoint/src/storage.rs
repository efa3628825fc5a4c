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
//! folder is fsynced, so after a crash the manifest is either absent or complete.
//! Every file operation goes through [`Io`], where tests inject a failure at any step.

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
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let body_end = text
            .rfind("checksum ")
            .ok_or_else(|| bad("no checksum line".into()))?;
        let (body, tail) = text.split_at(body_end);
        let want = tail
            .trim_end()
            .strip_prefix("checksum ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("unreadable checksum line".into()))?;
        if crc32fast::hash(body.as_bytes()) != want || !tail.ends_with('\n') {
            return Err(bad(
                "checksum mismatch: the manifest is damaged or incomplete".into(),
            ));
        }
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
            io: self.io.clone(),
            files: BTreeMap::new(),
        })
    }

    /// Every checkpoint folder, oldest first, complete or not.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(|source| CheckpointError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut ids = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(CheckpointId(id));
            }
        }
        ids.sort();
        for id in ids {
            out.push(match self.manifest(id) {
                Ok(m) => Listed::Complete(m),
                Err(e) => Listed::Incomplete {
                    id,
                    reason: e.to_string(),
                },
            });
        }
        Ok(out)
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

    /// The newest published checkpoint whose files are all intact, if any. A newer one
    /// that fails verification is skipped (and logged), never half-used.
    pub fn latest(&self) -> Result<Option<Manifest>> {
        for m in self.completed()?.into_iter().rev() {
            match self.verify(&m) {
                Ok(()) => return Ok(Some(m)),
                Err(e) => {
                    tracing::warn!(checkpoint = %m.id, error = %e, "skipping a damaged checkpoint")
                }
            }
        }
        Ok(None)
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

    /// Deletes checkpoint `id` (published or not).
    pub fn discard(&self, id: CheckpointId) -> Result<()> {
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
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            self.io
                .io("create folder", parent, || fs::create_dir_all(parent))?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = self.io.io("create", &tmp, || File::create(&tmp))?;
        self.io.io("write", &tmp, || f.write_all(bytes))?;
        self.io.io("fsync", &tmp, || f.sync_all())?;
        self.io.io("rename", &path, || fs::rename(&tmp, &path))?;
        self.files.insert(
            name.to_owned(),
            FileEntry {
                path: name.to_owned(),
                len: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            },
        );
        Ok(())
    }

    /// Records a file (or every file under a folder) already written inside the
    /// checkpoint's folder, fsyncing each.
    pub fn add(&mut self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        if path.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(&path)
                .map_err(|source| CheckpointError::Io {
                    path: path.clone(),
                    source,
                })?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            entries.sort();
            for e in entries {
                self.add(&format!("{name}/{e}"))?;
            }
            return Ok(());
        }
        let bytes = self.io.io("read", &path, || fs::read(&path))?;
        let f = self.io.io("open", &path, || File::open(&path))?;
        self.io.io("fsync", &path, || f.sync_all())?;
        self.files.insert(
            name.to_owned(),
            FileEntry {
                path: name.to_owned(),
                len: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            },
        );
        Ok(())
    }

    /// Publishes the checkpoint: writes the manifest with `meta` and every file's
    /// checksum, fsyncs it, renames it into place and fsyncs the folder.
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
        Ok(manifest)
    }
}
