//! [`LocalStore`]: checkpoint storage on a local folder, every write a temporary file,
//! fsynced and renamed into place.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ChecksumCache, FileEntry, Store, StoreLock};
use crate::{CheckpointError, Result};

const LOCK: &str = "_lock";

/// The file operations a [`LocalStore`] performs, one call per step, so that a test can
/// fail any of them ([`Io::fail_at`]).
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

/// A [`Store`] on a local folder. Objects are files (`a/b` is the file `b` in the
/// folder `a`); a write is a temporary file, fsynced and renamed into place, and a
/// publication also fsyncs the folder. Staged folders are the objects' own folders, so
/// sealing one only fsyncs and checksums its files.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
    io: Io,
}

impl LocalStore {
    /// Objects under the folder `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore> {
        LocalStore::with_io(root, Io::default())
    }

    /// Like [`LocalStore::open`], with the file operations of `io` (for fault tests).
    pub fn with_io(root: impl Into<PathBuf>, io: Io) -> Result<LocalStore> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| CheckpointError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(LocalStore { root, io })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            self.root.clone()
        } else {
            self.root.join(name)
        }
    }

    /// Writes `bytes` to `path` (its folder created first if `create_folder`): a
    /// temporary file, fsynced, renamed into place.
    fn write(&self, path: &Path, bytes: &[u8], create_folder: bool) -> Result<()> {
        if let Some(parent) = path.parent().filter(|_| create_folder) {
            self.io
                .io("create folder", parent, || fs::create_dir_all(parent))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = self.io.io("create", &tmp, || File::create(&tmp))?;
        self.io.io("write", &tmp, || f.write_all(bytes))?;
        self.io.io("fsync", &tmp, || f.sync_all())?;
        self.io.io("rename", path, || fs::rename(&tmp, path))
    }

    /// The entries of the file `name`, or of every file under the folder `name`, in
    /// path order, each fsynced; paths relative to the root.
    fn scan(&self, name: &str, cache: &mut ChecksumCache) -> Result<Vec<FileEntry>> {
        let path = self.path(name);
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
                out.extend(self.scan(&format!("{name}/{n}"), cache)?);
            }
            return Ok(out);
        }
        if let Some(crc32) = cache.get(&meta) {
            return Ok(vec![FileEntry {
                path: name.to_owned(),
                len: meta.len(),
                crc32,
            }]);
        }
        let bytes = self.io.io("read", &path, || fs::read(&path))?;
        let f = self.io.io("open", &path, || File::open(&path))?;
        self.io.io("fsync", &path, || f.sync_all())?;
        let crc32 = crc32fast::hash(&bytes);
        cache.insert(&meta, crc32);
        Ok(vec![FileEntry {
            path: name.to_owned(),
            len: bytes.len() as u64,
            crc32,
        }])
    }
}

impl Store for LocalStore {
    fn location(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write(&self.path(name), bytes, true)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io { path, source }),
        }
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.path(name).exists())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Io { path, source }),
            Ok(m) if m.is_dir() => self
                .io
                .io("remove folder", &path, || fs::remove_dir_all(&path)),
            Ok(_) => self.io.io("remove", &path, || fs::remove_file(&path)),
        }
    }

    fn publish(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        self.write(&path, bytes, false)?;
        let folder = path.parent().unwrap_or(&self.root).to_path_buf();
        let dir = File::open(&folder).map_err(|source| CheckpointError::Io {
            path: folder.clone(),
            source,
        })?;
        self.io.io("fsync folder", &folder, || dir.sync_all())
    }

    fn stage(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name);
        self.io
            .io("create folder", &path, || fs::create_dir_all(&path))?;
        Ok(path)
    }

    fn seal(&self, name: &str, cache: &mut ChecksumCache) -> Result<Vec<FileEntry>> {
        self.scan(name, cache)
    }

    fn fetch(&self, name: &str) -> Result<PathBuf> {
        Ok(self.path(name))
    }

    fn lock(&self) -> Result<StoreLock> {
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
        Ok(StoreLock::new(path, Box::new(file)))
    }
}
