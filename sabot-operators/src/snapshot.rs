//! The files a stateful operator writes into its snapshot folder.
//!
//! - `state/`: the keyed state backend's snapshot of the operator's key groups
//!   ([`StateBackend::snapshot`](sabot_state::StateBackend::snapshot));
//! - `timers.sbtm`: its timers, by key group ([`TimerService::snapshot`]);
//! - `operator.sbop`: `SBOP`, version 1 (u8), the operator's watermark (i64 LE), a CRC-32
//!   of the preceding bytes (u32 LE).
//!
//! Restoring after a rescale reads several such folders: the backend and the timers keep
//! the key groups of the new subtask's range, and the watermark is the smallest of the
//! restored ones (no subtask may consider data late that another still accepted).

use std::path::{Path, PathBuf};

use sabot_core::{KeyGroupRange, Timestamp};
use sabot_time::{TimerCodec, TimerKey, TimerService};

use sabot_state::PendingSnapshot;

use crate::{OperatorError, Result, SnapshotWrite};

const STATE_DIR: &str = "state";
const TIMERS_FILE: &str = "timers.sbtm";
const OPERATOR_FILE: &str = "operator.sbop";
const MAGIC: &[u8; 4] = b"SBOP";
const VERSION: u8 = 1;

fn io_error(path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::Snapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Snapshots a keyed operator into `dir` in two phases: the state snapshot begins now
/// (through `state`, given its folder) and the timers and watermark are taken now; the
/// returned work writes the files (state, timers, watermark), on any thread.
pub(crate) fn write_async<K, N>(
    dir: &Path,
    state: impl FnOnce(&Path) -> Result<PendingSnapshot>,
    timers: &TimerService<K, N>,
    watermark: Timestamp,
) -> Result<SnapshotWrite>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let pending = state(&dir.join(STATE_DIR))?;
    let timer_bytes = timers.snapshot();
    let dir = dir.to_path_buf();
    Ok(SnapshotWrite::new(move || {
        pending.finish()?;
        let path = dir.join(TIMERS_FILE);
        std::fs::write(&path, timer_bytes).map_err(|e| io_error(&path, e))?;
        let mut op = Vec::with_capacity(17);
        op.extend_from_slice(MAGIC);
        op.push(VERSION);
        op.extend_from_slice(&watermark.millis().to_le_bytes());
        op.extend_from_slice(&crc32fast::hash(&op).to_le_bytes());
        let path = dir.join(OPERATOR_FILE);
        std::fs::write(&path, op).map_err(|e| io_error(&path, e))
    }))
}

/// Restores what [`write_async`] wrote into `dirs` (the state through `state`, given its
/// folders), keeping the key groups of `range`; returns the watermark to continue from.
pub(crate) fn read<K, N>(
    dirs: &[PathBuf],
    state: impl FnOnce(&[PathBuf]) -> Result<()>,
    timers: &mut TimerService<K, N>,
    range: KeyGroupRange,
) -> Result<Timestamp>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    if dirs.is_empty() {
        return Ok(Timestamp::MIN);
    }
    let state_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.join(STATE_DIR)).collect();
    state(&state_dirs)?;
    let mut watermark = Timestamp::MAX;
    for dir in dirs {
        let path = dir.join(TIMERS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        timers
            .restore(&bytes, range)
            .map_err(|e| OperatorError::Snapshot {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let path = dir.join(OPERATOR_FILE);
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        let bad = |reason: &str| OperatorError::Snapshot {
            path: path.clone(),
            reason: reason.into(),
        };
        if bytes.len() != 17 || &bytes[..4] != MAGIC {
            return Err(bad("not an operator snapshot"));
        }
        if bytes[4] != VERSION {
            return Err(bad(&format!("unsupported version {}", bytes[4])));
        }
        let crc = u32::from_le_bytes([bytes[13], bytes[14], bytes[15], bytes[16]]);
        if crc32fast::hash(&bytes[..13]) != crc {
            return Err(bad("checksum mismatch"));
        }
        let mut wm = [0u8; 8];
        wm.copy_from_slice(&bytes[5..13]);
        watermark = watermark.min(Timestamp::from_millis(i64::from_le_bytes(wm)));
    }
    Ok(watermark)
}

/// [`write_async`] for an operator whose state is one backend.
pub(crate) fn backend_write_async<K, N>(
    dir: &Path,
    backend: &mut Box<dyn sabot_state::StateBackend>,
    timers: &TimerService<K, N>,
    watermark: Timestamp,
) -> Result<Option<SnapshotWrite>>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    let state = |d: &Path| {
        let range = backend.key_groups();
        backend.snapshot_async(d, range).map_err(Into::into)
    };
    write_async(dir, state, timers, watermark).map(Some)
}

/// [`read`] for an operator whose state is one backend.
pub(crate) fn backend_read<K, N>(
    dirs: &[PathBuf],
    backend: &mut Box<dyn sabot_state::StateBackend>,
    timers: &mut TimerService<K, N>,
) -> Result<Timestamp>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    let range = backend.key_groups();
    let state = |d: &[PathBuf]| backend.restore(d).map_err(Into::into);
    read(dirs, state, timers, range)
}
