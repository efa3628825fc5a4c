//! A [`Store`] that keeps objects in memory, the way object storage keeps them away from
//! the job's disk: staged folders are uploaded (and deleted locally) when sealed, and
//! fetched folders are downloaded into fresh local folders. A job checkpointing into it
//! restores only from what went through the interface.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sabot_checkpoint::storage::{ChecksumCache, FileEntry, Store, StoreLock};
use sabot_checkpoint::{CheckpointError, Result};

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Local folders for staging and downloads (removed with the store).
    scratch: Mutex<Vec<tempfile::TempDir>>,
    /// Operations performed, by kind.
    pub calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl MemoryStore {
    pub fn new() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    fn count(&self, what: &'static str) {
        *self.calls.lock().unwrap().entry(what).or_default() += 1;
    }

    fn scratch(&self) -> PathBuf {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_path_buf();
        self.scratch.lock().unwrap().push(d);
        p
    }

    /// The names of every object, sorted.
    pub fn names(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    fn staged(&self, path: &str) -> PathBuf {
        let mut s = self.scratch.lock().unwrap();
        let key = format!("staged:{path}");
        // One staging folder per path, found again by `seal`.
        if let Some(d) = s.iter().find(|d| {
            d.path().join(".key").exists()
                && std::fs::read_to_string(d.path().join(".key")).unwrap() == key
        }) {
            return d.path().join("files");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".key"), &key).unwrap();
        std::fs::create_dir(d.path().join("files")).unwrap();
        let p = d.path().join("files");
        s.push(d);
        p
    }
}

fn files(dir: &std::path::Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), &format!("{name}/"), out);
        } else {
            out.push((name, e.path()));
        }
    }
}

impl Store for MemoryStore {
    fn location(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("mem://{path}"))
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.count("put");
        self.objects
            .lock()
            .unwrap()
            .insert(path.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.count("get");
        Ok(self.objects.lock().unwrap().get(path).cloned())
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let prefix = format!("{path}/");
        Ok(self
            .objects
            .lock()
            .unwrap()
            .keys()
            .any(|k| k == path || k.starts_with(&prefix)))
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut names: Vec<String> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        names.dedup();
        Ok(names)
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.count("delete");
        let prefix = format!("{path}/");
        self.objects
            .lock()
            .unwrap()
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }

    fn publish(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.count("publish");
        self.put(path, bytes)
    }

    fn stage(&self, path: &str) -> Result<PathBuf> {
        Ok(self.staged(path))
    }

    fn seal(&self, path: &str, _cache: &mut ChecksumCache) -> Result<Vec<FileEntry>> {
        self.count("seal");
        let dir = self.staged(path);
        let mut found = Vec::new();
        files(&dir, "", &mut found);
        let mut out = Vec::new();
        for (name, file) in found {
            let bytes = std::fs::read(&file).map_err(|source| CheckpointError::Io {
                path: file.clone(),
                source,
            })?;
            let full = format!("{path}/{name}");
            out.push(FileEntry::of(&full, &bytes));
            self.objects.lock().unwrap().insert(full, bytes);
        }
        // Nothing stays on the local disk: a restore must download.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        Ok(out)
    }

    fn fetch(&self, path: &str) -> Result<PathBuf> {
        self.count("fetch");
        let dir = self.scratch();
        let prefix = format!("{path}/");
        for (k, v) in self.objects.lock().unwrap().iter() {
            if let Some(rest) = k.strip_prefix(&prefix) {
                let file = dir.join(rest);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, v).unwrap();
            }
        }
        Ok(dir)
    }

    fn lock(&self) -> Result<StoreLock> {
        Ok(StoreLock::new(self.location("_lock"), Box::new(())))
    }
}
