//! A transactional CSV file sink: part files become visible only when the checkpoint
//! that covers them completes (two-phase commit, as Flink's `FileSink` does).
//!
//! Subtask `s` of a sink named `n` writes into the output folder:
//!
//! - `.n-s.inprogress`: rows since the last checkpoint barrier (hidden);
//! - `.n-s.chk-K.pending`: rows before barrier `K`, fsynced when the barrier passed
//!   (pre-committed, hidden);
//! - `n-s-K.csv`: committed, published by an atomic rename once a checkpoint `>= K`
//!   completed (the runtime's [`Sink::notify_checkpoint_complete`], and on restart).
//!
//! A checkpointed job ends with a final checkpoint taken after all its output (the
//! runtime's end-of-input protocol), so every committed row is covered by a completed
//! checkpoint. On restart from checkpoint `R`, pending parts with `K <= R` are committed
//! (the checkpoint covers them; the crash came before the commit) and every other hidden
//! file is deleted: those rows are produced again from `R`. So the committed files hold
//! every row exactly once, whenever the crashes came. Without checkpoints the sink writes
//! `n-s-final.csv` at the end of input.
//!
//! Every file starts with a header line of the column names; values are written as
//! Arrow displays them.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sabot_core::arrow::util::display::array_value_to_string;
use sabot_core::{CheckpointId, RecordBatch, SchemaRef};

use crate::{OperatorError, Result, Sink, SinkFactory, TaskContext};

/// Writes CSV files committed with the job's checkpoints. See the module docs.
#[derive(Clone, Debug)]
pub struct TransactionalCsvSink {
    dir: PathBuf,
    name: String,
}

impl TransactionalCsvSink {
    /// A sink writing `name-<subtask>-*.csv` files into `dir`.
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        TransactionalCsvSink {
            dir: dir.into(),
            name: name.into(),
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::Snapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl SinkFactory for TransactionalCsvSink {
    fn name(&self) -> String {
        format!("csv_sink({})", self.name)
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Sink>> {
        fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let prefix = format!("{}-{}", self.name, ctx.subtask);
        let writer = CsvPartWriter {
            dir: self.dir.clone(),
            header: input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(","),
            prefix,
            current: None,
            pending: Vec::new(),
            checkpointed: ctx.checkpoint_dir.is_some(),
        };
        writer.recover(ctx.restored_from)?;
        Ok(Box::new(writer))
    }
}

struct CsvPartWriter {
    dir: PathBuf,
    header: String,
    prefix: String,
    current: Option<BufWriter<File>>,
    /// Pre-committed parts: (checkpoint, hidden file).
    pending: Vec<(u64, PathBuf)>,
    /// Whether the job takes checkpoints (else the end of input commits everything).
    checkpointed: bool,
}

impl CsvPartWriter {
    fn in_progress(&self) -> PathBuf {
        self.dir.join(format!(".{}.inprogress", self.prefix))
    }

    fn pending_path(&self, k: u64) -> PathBuf {
        self.dir.join(format!(".{}.chk-{k}.pending", self.prefix))
    }

    fn committed_path(&self, k: u64) -> PathBuf {
        self.dir.join(format!("{}-{k:020}.csv", self.prefix))
    }

    /// After a restart: commits what the restored checkpoint covers, deletes the rest.
    fn recover(&self, restored: Option<CheckpointId>) -> Result<()> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let hidden = format!(".{}.", self.prefix);
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
                Some(k) if restored.is_some_and(|r| k <= r.0) => {
                    let to = self.committed_path(k);
                    fs::rename(&path, &to).map_err(|e| io_error(&to, e))?;
                }
                _ => fs::remove_file(&path).map_err(|e| io_error(&path, e))?,
            }
        }
        Ok(())
    }

    /// Ends the in-progress part: flushed, fsynced, renamed to `to`.
    fn close_current(&mut self, to: &Path) -> Result<bool> {
        let Some(w) = self.current.take() else {
            return Ok(false);
        };
        let from = self.in_progress();
        let f = w
            .into_inner()
            .map_err(|e| io_error(&from, e.into_error()))?;
        f.sync_all().map_err(|e| io_error(&from, e))?;
        fs::rename(&from, to).map_err(|e| io_error(to, e))?;
        Ok(true)
    }

    /// Publishes every pending part covered by a completed checkpoint `<= newest`.
    fn commit_up_to(&mut self, newest: u64) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(k, _)| *k <= newest);
        self.pending = later;
        for (k, path) in ready {
            let to = self.committed_path(k);
            fs::rename(&path, &to).map_err(|e| io_error(&to, e))?;
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Sink for CsvPartWriter {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            let path = self.in_progress();
            let f = File::create(&path).map_err(|e| io_error(&path, e))?;
            let mut w = BufWriter::new(f);
            writeln!(w, "{}", self.header).map_err(|e| io_error(&path, e))?;
            self.current = Some(w);
        }
        let path = self.in_progress();
        let Some(w) = self.current.as_mut() else {
            return Ok(());
        };
        let mut line = String::new();
        for r in 0..batch.num_rows() {
            line.clear();
            for (i, c) in batch.columns().iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&array_value_to_string(c, r)?);
            }
            line.push('\n');
            w.write_all(line.as_bytes())
                .map_err(|e| io_error(&path, e))?;
        }
        Ok(())
    }

    fn on_checkpoint(&mut self, id: CheckpointId) -> Result<()> {
        let to = self.pending_path(id.0);
        if self.close_current(&to)? {
            self.pending.push((id.0, to));
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.commit_up_to(id.0)
    }

    fn finish(&mut self) -> Result<()> {
        if self.checkpointed {
            // The final checkpoint's barrier came last and its completion commits the
            // pending parts. Rows after it would be covered by no checkpoint: a restart
            // could neither commit nor reproduce them.
            if self.current.is_some() {
                return Err(OperatorError::Snapshot {
                    path: self.in_progress(),
                    reason: "rows arrived after the final checkpoint's barrier; they cannot be committed exactly once".into(),
                });
            }
            return Ok(());
        }
        // Without checkpoints, the end of input makes everything final.
        let to = self.dir.join(format!("{}-final.csv", self.prefix));
        self.close_current(&to)?;
        self.commit_up_to(u64::MAX)
    }
}
