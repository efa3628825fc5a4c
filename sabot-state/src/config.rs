//! Which backend a job keeps its state in, and where.

use std::path::PathBuf;

use sabot_core::KeyGroupRange;

use crate::{MemoryBackend, Result, StateBackend};

/// The kind of state backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// Hash maps in memory ([`MemoryBackend`]): fastest; state must fit in memory.
    #[default]
    Memory,
    /// RocksDB on local disk ([`RocksDbBackend`](crate::RocksDbBackend)): state larger
    /// than memory, incremental snapshots.
    #[cfg(feature = "rocksdb")]
    RocksDb(crate::RocksDbConfig),
}

/// How a job's stateful operators keep their state: the backend, and for on-disk
/// backends the folder of their working files.
///
/// ```
/// use sabot_core::KeyGroupRange;
/// use sabot_state::{StateBackend, StateConfig};
///
/// let config = StateConfig::memory();
/// assert_eq!(config.name(), "memory");
/// let all = KeyGroupRange::for_subtask(128, 1, 0);
/// let backend = config.open("window-1", 0, 128, all).unwrap();
/// assert_eq!(backend.key_groups(), all);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateConfig {
    /// The backend.
    pub backend: BackendKind,
    /// Parent folder of on-disk backends' working files (default: the system's temporary
    /// folder). Each operator subtask gets its own subfolder, removed when it finishes.
    pub working_dir: Option<PathBuf>,
}

impl StateConfig {
    /// State in memory.
    pub fn memory() -> Self {
        StateConfig::default()
    }

    /// State in RocksDB with `config`.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb(config: crate::RocksDbConfig) -> Self {
        StateConfig {
            backend: BackendKind::RocksDb(config),
            working_dir: None,
        }
    }

    /// Keeps on-disk backends' working files under `dir`.
    pub fn with_working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Whether state is kept in memory ([`BackendKind::Memory`]): operators that keep
    /// their own in-memory structures then (window panes, join rows) choose by this.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.backend, BackendKind::Memory)
    }

    /// The backend's name (`memory`, `rocksdb`), for messages and operator names; code
    /// that chooses by backend matches [`BackendKind`] (or [`is_in_memory`]).
    ///
    /// [`is_in_memory`]: StateConfig::is_in_memory
    pub fn name(&self) -> &'static str {
        match self.backend {
            BackendKind::Memory => "memory",
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb(_) => "rocksdb",
        }
    }

    /// Opens an empty backend for subtask `subtask` of the operator named `operator`,
    /// holding key groups `range` of `max_parallelism`.
    pub fn open(
        &self,
        operator: &str,
        subtask: usize,
        max_parallelism: usize,
        range: KeyGroupRange,
    ) -> Result<Box<dyn StateBackend>> {
        #[cfg(not(feature = "rocksdb"))]
        let _ = (operator, subtask);
        match &self.backend {
            BackendKind::Memory => Ok(Box::new(MemoryBackend::new(max_parallelism, range))),
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb(config) => {
                let parent = self
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("sabot-state"));
                // A readable, file-system-safe folder name: the operator and subtask.
                let name: String = operator
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .take(40)
                    .collect();
                Ok(Box::new(crate::RocksDbBackend::open_temporary(
                    &parent,
                    &format!("{name}-{subtask}-"),
                    config.clone(),
                    max_parallelism,
                    range,
                )?))
            }
        }
    }
}
