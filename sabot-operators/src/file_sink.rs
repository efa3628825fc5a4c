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

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use sabot_core::arrow::util::display::array_value_to_string;
use sabot_core::{CheckpointId, RecordBatch, SchemaRef};

use crate::staging::{StagedFiles, io_error};
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

impl TransactionalCsvSink {
    /// Fencing: a committed file of this sink (any subtask, any parallelism) from a
    /// checkpoint newer than the one the job continues from means its rows would be
    /// produced and committed a second time: an error, not duplicates. It happens when
    /// the job was pointed at an older checkpoint, or at an empty checkpoint folder with
    /// an output folder of an earlier run.
    fn refuse_output_after(&self, restored: Option<CheckpointId>) -> Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.dir, e)),
        };
        let from = restored.map_or(0, |r| r.0);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(k) = self.committed_checkpoint(&name) else {
                continue;
            };
            if k > from {
                let since = match restored {
                    Some(r) => format!("checkpoint {}, which this run continues from", r.0),
                    None => "the start: this run continues from no checkpoint".into(),
                };
                return Err(OperatorError::Snapshot {
                    path: e.path(),
                    reason: format!(
                        "committed by checkpoint {k}, after {since}; its rows would be committed twice. Remove the files committed after that checkpoint, or use another output folder"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The checkpoint of a committed file of this sink: `<name>-<subtask>-<K>.csv`.
    fn committed_checkpoint(&self, file: &str) -> Option<u64> {
        let rest = file.strip_prefix(&self.name)?.strip_prefix('-')?;
        let (subtask, k) = rest.strip_suffix(".csv")?.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(subtask) && digits(k)).then(|| k.parse().ok())?
    }
}

impl SinkFactory for TransactionalCsvSink {
    fn name(&self) -> String {
        format!("csv_sink({})", self.name)
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Sink>> {
        let prefix = format!("{}-{}", self.name, ctx.subtask);
        let mut writer = CsvPartWriter {
            files: StagedFiles::new(&self.dir, prefix.clone())?,
            header: input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(","),
            prefix,
            checkpointed: ctx.checkpoint_dir.is_some(),
        };
        if writer.checkpointed {
            self.refuse_output_after(ctx.restored_from)?;
        }
        // After a restart: commit what the restored checkpoint covers (the rest is gone).
        let covered = writer.files.recover(ctx.restored_from)?;
        writer.commit(covered)?;
        Ok(Box::new(writer))
    }
}

struct CsvPartWriter {
    files: StagedFiles,
    header: String,
    prefix: String,
    /// Whether the job takes checkpoints (else the end of input commits everything).
    checkpointed: bool,
}

impl CsvPartWriter {
    fn committed_path(&self, k: u64) -> PathBuf {
        self.files
            .dir()
            .join(format!("{}-{k:020}.csv", self.prefix))
    }

    /// Publishes pre-committed parts: (checkpoint, hidden file).
    fn commit(&mut self, parts: Vec<(u64, PathBuf)>) -> Result<()> {
        for (k, path) in parts {
            let to = self.committed_path(k);
            fs::rename(&path, &to).map_err(|e| io_error(&to, e))?;
        }
        self.files.sync_dir();
        Ok(())
    }
}

impl Sink for CsvPartWriter {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = self.files.in_progress_path();
        let header = &self.header;
        let w = self.files.writer(|w| writeln!(w, "{header}"))?;
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
        self.files.stage(id)
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        let ready = self.files.take_ready(id);
        self.commit(ready)
    }

    fn finish(&mut self) -> Result<()> {
        if self.checkpointed {
            // The final checkpoint's barrier came last and its completion commits the
            // pending parts. Rows after it would be covered by no checkpoint: a restart
            // could neither commit nor reproduce them.
            if self.files.has_current() {
                return Err(OperatorError::Snapshot {
                    path: self.files.in_progress_path(),
                    reason: "rows arrived after the final checkpoint's barrier; they cannot be committed exactly once".into(),
                });
            }
            return Ok(());
        }
        // Without checkpoints, the end of input makes everything final.
        let to = self.files.dir().join(format!("{}-final.csv", self.prefix));
        self.files.close_current(&to)?;
        let ready = self.files.take_ready(CheckpointId(u64::MAX));
        self.commit(ready)
    }
}
