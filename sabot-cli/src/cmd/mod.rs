//! The commands, one module per group, and what they share: the job flags
//! ([`JobArgs`]), error printing and CPU time.

pub(crate) mod checkpoints;
pub(crate) mod demo;
pub(crate) mod kafka;
pub(crate) mod nexmark;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sabot::StreamEnv;
use sabot::runtime::CheckpointSettings;
use sabot::state::{RocksDbConfig, StateConfig};

/// The flags of every command that runs a job (`demo`, `worker`, `nexmark run`).
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// Subtasks per operator, each on its own thread (default: the number of cores; for
    /// `sabot worker`, the number of cores times the number of workers).
    #[arg(long)]
    pub parallelism: Option<usize>,

    /// Where stateful operators keep their state: in memory, or in RocksDB on disk.
    #[arg(long, value_enum, default_value_t = StateKind::Memory)]
    pub state: StateKind,

    /// Folder for RocksDB's working files (with --state rocksdb; default: the system's
    /// temporary folder). Each operator subtask gets a subfolder, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Write the results as CSV files into this folder. With --checkpoint-dir, part
    /// files committed with each checkpoint (`<name>-<subtask>-<checkpoint>.csv`):
    /// exactly once across crashes.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Take checkpoints into this folder; started on a folder that holds a complete
    /// checkpoint, the job continues from the newest one (same options; --parallelism
    /// may change). Needs --output.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Milliseconds between checkpoints.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval: u64,

    /// Continue from this checkpoint of --checkpoint-dir instead of the newest one. For
    /// when the newest checkpoint is damaged: remove the output committed after this
    /// checkpoint first (the file sink refuses to start while it is there).
    #[arg(long, value_name = "ID", requires = "checkpoint_dir")]
    pub restore_from: Option<u64>,

    /// Do not show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl JobArgs {
    /// --parallelism, or the cores times `workers`.
    pub fn parallelism(&self, workers: usize) -> usize {
        self.parallelism.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, usize::from) * workers
        })
    }

    /// The state backend of --state and --state-dir.
    pub fn state_config(&self) -> Result<StateConfig> {
        let state = match self.state {
            StateKind::Memory => StateConfig::memory(),
            StateKind::Rocksdb => StateConfig::rocksdb(RocksDbConfig::default()),
        };
        match &self.state_dir {
            Some(_) if self.state != StateKind::Rocksdb => {
                anyhow::bail!("--state-dir is for --state rocksdb (memory state has no files)")
            }
            Some(dir) => Ok(state.with_working_dir(dir)),
            None => Ok(state),
        }
    }

    /// Checkpoints of --checkpoint-dir, --checkpoint-interval and --restore-from.
    pub fn checkpoints(&self) -> Option<CheckpointSettings> {
        let dir = self.checkpoint_dir.as_ref()?;
        let settings =
            CheckpointSettings::new(dir, Duration::from_millis(self.checkpoint_interval));
        Some(match self.restore_from {
            Some(id) => settings.with_restore_from(sabot::core::CheckpointId(id)),
            None => settings,
        })
    }

    /// A job environment named `name` with these flags' parallelism (`workers` as in
    /// [`parallelism`](JobArgs::parallelism)) and state; checkpoints are the command's
    /// to set, since their rules differ.
    pub fn env(&self, name: impl Into<String>, workers: usize) -> Result<StreamEnv> {
        let env = StreamEnv::new();
        env.set_parallelism(self.parallelism(workers))
            .set_name(name)
            .set_state(self.state_config()?);
        Ok(env)
    }

    /// Creates the --output folder, if given.
    pub fn create_output(&self) -> Result<()> {
        if let Some(dir) = &self.output {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Writes `batch`'s rows as CSV lines, values as Arrow displays them.
pub(crate) fn write_csv_rows(
    out: &mut impl std::io::Write,
    batch: &sabot::arrow::array::RecordBatch,
) -> Result<()> {
    for r in 0..batch.num_rows() {
        let cells = batch
            .columns()
            .iter()
            .map(|c| sabot::arrow::util::display::array_value_to_string(c, r))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

/// The state backend to use.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StateKind {
    /// Hash maps in memory.
    Memory,
    /// RocksDB on local disk.
    Rocksdb,
}

/// CPU time (user + system) this process used so far.
#[cfg(unix)]
pub(crate) fn cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points
    // to enough initialized (zeroed) memory for one; we read it only on success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

#[cfg(not(unix))]
pub(crate) fn cpu_time() -> Option<Duration> {
    None
}
