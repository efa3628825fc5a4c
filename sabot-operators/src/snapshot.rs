//! The files a stateful operator writes into its snapshot (a [`SnapshotTarget`]: its
//! folder in a checkpoint, in whatever store holds the checkpoints).
//!
//! - `state/`: the keyed state backend's snapshot of the operator's key groups
//!   ([`StateBackend::snapshot`](sabot_state::StateBackend::snapshot)), written into a
//!   staged local folder;
//! - `timers.sbtm`: its timers, by key group ([`TimerService::snapshot`]);
//! - `operator.sbop`: `SBOP`, version 1 (u8), the operator's watermark (i64 LE), a CRC-32
//!   of the preceding bytes (u32 LE).
//!
//! Restoring after a rescale reads several such folders: the backend and the timers keep
//! the key groups of the new subtask's range, and the watermark is the smallest of the
//! restored ones (no subtask may consider data late that another still accepted).

use std::path::{Path, PathBuf};

use sabot_checkpoint::storage::{SnapshotSource, SnapshotTarget};
use sabot_core::{KeyGroupRange, Timestamp};
use sabot_time::{TimerCodec, TimerKey, TimerService};

use sabot_state::PendingSnapshot;

use crate::{OperatorError, Result, SnapshotWrite};

const STATE_DIR: &str = "state";
const TIMERS_FILE: &str = "timers.sbtm";
const OPERATOR_FILE: &str = "operator.sbop";
const MAGIC: &[u8; 4] = b"SBOP";
const VERSION: u8 = 1;

/// Snapshots a keyed operator into `target` in two phases: the state snapshot begins
/// now (through `state`, given its staged folder) and the timers and watermark are
/// taken now; the returned work writes the files (state, timers, watermark), on any
/// thread.
pub(crate) fn write_async<K, N>(
    target: &SnapshotTarget,
    state: impl FnOnce(&Path) -> Result<PendingSnapshot>,
    timers: &TimerService<K, N>,
    watermark: Timestamp,
) -> Result<SnapshotWrite>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    let pending = state(&target.stage(STATE_DIR)?)?;
    let timer_bytes = timers.snapshot();
    let target = target.clone();
    Ok(SnapshotWrite::new(move || {
        pending.finish()?;
        target.write(TIMERS_FILE, &timer_bytes)?;
        let mut op = Vec::with_capacity(17);
        op.extend_from_slice(MAGIC);
        op.push(VERSION);
        op.extend_from_slice(&watermark.millis().to_le_bytes());
        op.extend_from_slice(&crc32fast::hash(&op).to_le_bytes());
        target.write(OPERATOR_FILE, &op)?;
        Ok(())
    }))
}

/// Restores what [`write_async`] wrote into `from` (the state through `state`, given
/// its local folders), keeping the key groups of `range`; returns the watermark to
/// continue from.
pub(crate) fn read<K, N>(
    from: &[SnapshotSource],
    state: impl FnOnce(&[PathBuf]) -> Result<()>,
    timers: &mut TimerService<K, N>,
    range: KeyGroupRange,
) -> Result<Timestamp>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    if from.is_empty() {
        return Ok(Timestamp::MIN);
    }
    let state_dirs = from
        .iter()
        .map(|s| s.fetch(STATE_DIR))
        .collect::<std::result::Result<Vec<PathBuf>, _>>()?;
    state(&state_dirs)?;
    let mut watermark = Timestamp::MAX;
    for source in from {
        let bytes = source.read(TIMERS_FILE)?;
        timers
            .restore(&bytes, range)
            .map_err(|e| OperatorError::Snapshot {
                path: source.location(TIMERS_FILE),
                reason: e.to_string(),
            })?;
        let bytes = source.read(OPERATOR_FILE)?;
        let bad = |reason: &str| OperatorError::Snapshot {
            path: source.location(OPERATOR_FILE),
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
    target: &SnapshotTarget,
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
    write_async(target, state, timers, watermark).map(Some)
}

/// [`read`] for an operator whose state is one backend.
pub(crate) fn backend_read<K, N>(
    from: &[SnapshotSource],
    backend: &mut Box<dyn sabot_state::StateBackend>,
    timers: &mut TimerService<K, N>,
) -> Result<Timestamp>
where
    K: TimerKey,
    N: TimerCodec + Clone + Eq + std::hash::Hash + Ord,
{
    let range = backend.key_groups();
    let state = |d: &[PathBuf]| backend.restore(d).map_err(Into::into);
    read(from, state, timers, range)
}
