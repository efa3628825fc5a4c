//! Files staged per checkpoint: the durable half of a two-phase-commit sink.
//!
//! A sink that commits its output with the job's checkpoints (the transactional CSV
//! sink, the exactly-once Kafka sink) writes between barriers into a hidden in-progress
//! file, closes it at each barrier into a pending file of that checkpoint (fsynced and
//! renamed: the pre-commit), and commits pending files once their checkpoint completed.
//! What "commit" means is the sink's own business (rename to a visible name, publish in
//! a Kafka transaction); this type keeps the files. With prefix `p` in folder `d`:
//!
//! - `d/.p.inprogress`: written since the last barrier;
//! - `d/.p.chk-K.pending`: closed at barrier `K`, waiting for checkpoint `K` to complete.
//!
//! After a restart from checkpoint `R`, pending files with `K <= R` are covered by it
//! (the crash came between completion and commit: the sink commits them), and every other
//! file of the prefix is deleted: its rows are produced again from `R`.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use sabot_core::CheckpointId;

use crate::{OperatorError, Result};

/// Buffer of the in-progress file's writer.
const WRITE_BUFFER: usize = 1 << 20;

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::Snapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// One sink subtask's staged files. See the module docs.
#[derive(Debug)]
pub struct StagedFiles {
    dir: PathBuf,
    prefix: String,
    current: Option<BufWriter<File>>,
    /// Pre-committed files: (checkpoint, file).
    pending: Vec<(u64, PathBuf)>,
}

impl StagedFiles {
    /// The files of `prefix` in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(StagedFiles {
            dir,
            prefix: prefix.into(),
            current: None,
            pending: Vec::new(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The in-progress file.
    pub fn in_progress_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.inprogress", self.prefix))
    }

    fn pending_path(&self, k: u64) -> PathBuf {
        self.dir.join(format!(".{}.chk-{k}.pending", self.prefix))
    }

    /// Whether rows were written since the last barrier.
    pub fn has_current(&self) -> bool {
        self.current.is_some()
    }

    /// The in-progress file's writer; a new file is created (and `start` writes its
    /// beginning, such as a header) if there is none.
    pub fn writer(
        &mut self,
        start: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<&mut BufWriter<File>> {
        if self.current.is_none() {
            let path = self.in_progress_path();
            let f = File::create(&path).map_err(|e| io_error(&path, e))?;
            let mut w = BufWriter::with_capacity(WRITE_BUFFER, f);
            start(&mut w).map_err(|e| io_error(&path, e))?;
            self.current = Some(w);
        }
        let path = self.in_progress_path();
        self.current
            .as_mut()
            .ok_or_else(|| io_error(&path, std::io::ErrorKind::NotFound.into()))
    }

    /// Ends the in-progress file: flushed, fsynced, renamed to `to`. Returns whether
    /// there was one.
    pub fn close_current(&mut self, to: &Path) -> Result<bool> {
        let Some(w) = self.current.take() else {
            return Ok(false);
        };
        let from = self.in_progress_path();
        let f = w
            .into_inner()
            .map_err(|e| io_error(&from, e.into_error()))?;
        f.sync_all().map_err(|e| io_error(&from, e))?;
        fs::rename(&from, to).map_err(|e| io_error(to, e))?;
        self.sync_dir();
        Ok(true)
    }

    /// Pre-commit at barrier `id`: the in-progress file, if any, becomes pending.
    pub fn stage(&mut self, id: CheckpointId) -> Result<()> {
        let to = self.pending_path(id.0);
        if self.close_current(&to)? {
            self.pending.push((id.0, to));
        }
        Ok(())
    }

    /// The pending files of checkpoints `<= id`, oldest first, no longer pending.
    pub fn take_ready(&mut self, id: CheckpointId) -> Vec<(u64, PathBuf)> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(k, _)| *k <= id.0);
        self.pending = later;
        ready
    }

    /// After a restart from `restored`: the pending files it covers, oldest first (for
    /// the sink to commit); every other file of the prefix is deleted.
    pub fn recover(&self, restored: Option<CheckpointId>) -> Result<Vec<(u64, PathBuf)>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let hidden = format!(".{}.", self.prefix);
        let mut covered = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&hidden) else {
                continue;
            };
            let path = e.path();
            let k = rest
                .strip_prefix("chk-")
                .and_then(|r| r.strip_suffix(".pending"))
                .and_then(|k| k.parse::<u64>().ok());
            match k {
                Some(k) if restored.is_some_and(|r| k <= r.0) => covered.push((k, path)),
                _ => fs::remove_file(&path).map_err(|e| io_error(&path, e))?,
            }
        }
        covered.sort();
        Ok(covered)
    }

    /// Makes renames in the folder durable (best effort).
    pub fn sync_dir(&self) {
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn stage_commit_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = StagedFiles::new(dir.path(), "s-0").unwrap();
        let mut other = StagedFiles::new(dir.path(), "s-1").unwrap();
        other.writer(|_| Ok(())).unwrap().write_all(b"x").unwrap();
        for k in 1..=3 {
            f.writer(|w| w.write_all(b"head\n"))
                .unwrap()
                .write_all(format!("{k}\n").as_bytes())
                .unwrap();
            f.stage(CheckpointId(k)).unwrap();
        }
        f.stage(CheckpointId(4)).unwrap(); // nothing written: nothing staged
        f.writer(|_| Ok(())).unwrap().write_all(b"late").unwrap();
        let ready = f.take_ready(CheckpointId(1));
        assert_eq!(ready.len(), 1);
        assert_eq!(fs::read_to_string(&ready[0].1).unwrap(), "head\n1\n");
        fs::remove_file(&ready[0].1).unwrap();
        drop(f);
        // Restart from 2: checkpoint 2 is covered, 3 and the in-progress file are not.
        let f = StagedFiles::new(dir.path(), "s-0").unwrap();
        let covered = f.recover(Some(CheckpointId(2))).unwrap();
        assert_eq!(covered.iter().map(|c| c.0).collect::<Vec<_>>(), [2]);
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".s-0."))
            .collect();
        assert_eq!(left, [".s-0.chk-2.pending"]);
        // Another prefix's files are left alone.
        assert!(other.has_current());
        assert!(other.in_progress_path().exists());
    }
}
