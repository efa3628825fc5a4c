//! What an operator snapshots into and restores from: its folder in a checkpoint, in
//! whatever [`Store`] holds the checkpoints.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{ChecksumCache, FileEntry, LocalStore, Store};
use crate::Result;

/// Where one operator subtask writes its snapshot: files (bytes written whole) and
/// staged folders (for libraries that write files themselves, as RocksDB's
/// checkpoints). Cheap to clone and `Send`, so an asynchronous snapshot's deferred part
/// takes it along; the runtime [finishes](SnapshotTarget::finish) it once that part
/// has run, which makes the staged folders durable and lists everything written.
#[derive(Clone, Debug)]
pub struct SnapshotTarget {
    store: Arc<dyn Store>,
    /// The checkpoint's prefix in the store (`""`: none).
    checkpoint: String,
    /// This snapshot's folder inside the checkpoint.
    folder: String,
    written: Arc<Mutex<Written>>,
}

#[derive(Debug, Default)]
struct Written {
    files: Vec<FileEntry>,
    staged: Vec<String>,
}

impl SnapshotTarget {
    /// The snapshot `folder` of the checkpoint under `checkpoint` in `store`.
    pub fn new(store: Arc<dyn Store>, checkpoint: String, folder: String) -> SnapshotTarget {
        SnapshotTarget {
            store,
            checkpoint,
            folder,
            written: Arc::default(),
        }
    }

    /// A snapshot written into the local folder `dir`, outside any checkpoint (tests,
    /// tools).
    pub fn local(dir: impl Into<PathBuf>) -> Result<SnapshotTarget> {
        Ok(SnapshotTarget::new(
            Arc::new(LocalStore::open(dir)?),
            String::new(),
            String::new(),
        ))
    }

    /// The store path of `name` (relative to this snapshot).
    fn path(&self, name: &str) -> String {
        [self.checkpoint.as_str(), self.folder.as_str(), name]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The path of `name` inside the checkpoint (as its manifest records it).
    fn in_checkpoint(&self, name: &str) -> String {
        if self.folder.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.folder)
        }
    }

    /// Where `name` goes, for messages.
    pub fn location(&self, name: &str) -> PathBuf {
        self.store.location(&self.path(name))
    }

    /// Writes the file `name` (a `/`-separated path inside the snapshot), durably.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.store.put(&self.path(name), bytes)?;
        self.lock()
            .files
            .push(FileEntry::of(&self.in_checkpoint(name), bytes));
        Ok(())
    }

    /// A local folder for files written by a library, which become the snapshot's
    /// folder `name` when the snapshot is [finished](SnapshotTarget::finish).
    pub fn stage(&self, name: &str) -> Result<PathBuf> {
        let at = self.store.stage(&self.path(name))?;
        self.lock().staged.push(name.to_owned());
        Ok(at)
    }

    /// Makes the staged folders durable and returns the entries of everything written
    /// (paths inside the checkpoint), in path order. `cache` spares reading unchanged
    /// files again.
    pub fn finish(&self, cache: &mut ChecksumCache) -> Result<Vec<FileEntry>> {
        let (mut files, staged) = {
            let mut w = self.lock();
            (std::mem::take(&mut w.files), std::mem::take(&mut w.staged))
        };
        let prefix = if self.checkpoint.is_empty() {
            String::new()
        } else {
            format!("{}/", self.checkpoint)
        };
        for name in staged {
            for mut e in self.store.seal(&self.path(&name), cache)? {
                e.path = e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_owned();
                files.push(e);
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where one operator subtask's snapshot is read back from (see [`SnapshotTarget`]).
#[derive(Clone, Debug)]
pub struct SnapshotSource {
    store: Arc<dyn Store>,
    /// The snapshot's prefix in the store.
    prefix: String,
}

impl SnapshotSource {
    /// The snapshot under `prefix` in `store`.
    pub fn new(store: Arc<dyn Store>, prefix: String) -> SnapshotSource {
        SnapshotSource { store, prefix }
    }

    /// The snapshot written by [`SnapshotTarget::local`] into `dir`.
    pub fn local(dir: impl Into<PathBuf>) -> Result<SnapshotSource> {
        Ok(SnapshotSource::new(
            Arc::new(LocalStore::open(dir)?),
            String::new(),
        ))
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Where `name` is, for messages.
    pub fn location(&self, name: &str) -> PathBuf {
        self.store.location(&self.path(name))
    }

    /// Reads the file `name`; an error naming it if it is missing.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        self.store
            .get(&path)?
            .ok_or_else(|| crate::CheckpointError::Missing {
                path: self.store.location(&path),
            })
    }

    /// A local folder holding the snapshot's folder `name` (staged when written), for
    /// a library that reads files.
    pub fn fetch(&self, name: &str) -> Result<PathBuf> {
        self.store.fetch(&self.path(name))
    }
}
