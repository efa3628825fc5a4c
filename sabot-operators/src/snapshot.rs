//! The files a stateful operator writes into its snapshot (a [`SnapshotTarget`]: its
//! folder in a checkpoint, in whatever store holds the checkpoints).
//!
//! - `state/`: the keyed state backend's snapshot of the operator's key groups
//!   ([`StateBackend::snapshot`](sabot_state::StateBackend::snapshot)), written into a
//!   staged local folder;
//! - `timers.sbtm`: its timers, by key group ([`TimerService::snapshot`]);
//! - `operator.sbop`: a [frame](sabot_core::codec) `SBOP`, version 1, whose body is the
//!   operator's watermark (i64).
//!
//! Restoring after a rescale reads several such folders: the backend and the timers keep
//! the key groups of the new subtask's range, and the watermark is the smallest of the
//! restored ones (no subtask may consider data late that another still accepted).

use std::path::{Path, PathBuf};

use sabot_checkpoint::storage::{SnapshotSource, SnapshotTarget};
use sabot_core::codec::{Codec, frame, unframe};
use sabot_core::{KeyGroupRange, Timestamp};
use sabot_time::{TimerKey, TimerService};

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
    N: Codec + Clone + Eq + std::hash::Hash + Ord,
{
    let pending = state(&target.stage(STATE_DIR)?)?;
    let timer_bytes = timers.snapshot();
    let target = target.clone();
    Ok(SnapshotWrite::new(move || {
        pending.finish()?;
        target.write(TIMERS_FILE, &timer_bytes)?;
        let mut body = Vec::with_capacity(8);
        watermark.millis().encode(&mut body);
        target.write(OPERATOR_FILE, &frame(MAGIC, VERSION, &body))?;
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
    N: Codec + Clone + Eq + std::hash::Hash + Ord,
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
                reason: sabot_core::ErrorChain(&e).to_string(),
            })?;
        let bytes = source.read(OPERATOR_FILE)?;
        let bad = |reason: String| OperatorError::Snapshot {
            path: source.location(OPERATOR_FILE),
            reason,
        };
        let (_, mut body) = unframe(&bytes, MAGIC, VERSION..=VERSION, "operator snapshot")
            .map_err(|e| bad(e.reason))?;
        let wm = i64::decode(&mut body).map_err(|e| bad(e.reason))?;
        if !body.is_empty() {
            return Err(bad(format!("{} bytes after the watermark", body.len())));
        }
        watermark = watermark.min(Timestamp::from_millis(wm));
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
    N: Codec + Clone + Eq + std::hash::Hash + Ord,
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
    N: Codec + Clone + Eq + std::hash::Hash + Ord,
{
    let range = backend.key_groups();
    let state = |d: &[PathBuf]| backend.restore(d).map_err(Into::into);
    read(from, state, timers, range)
}

/// The [`Operator`](crate::Operator) snapshot methods of a keyed operator whose whole
/// state is its `backend` (a `Box<dyn StateBackend>`), `timers` (a `TimerService`) and
/// `watermark` fields, or (`backend_snapshots!(core)`) a `KeyedCore` in field `core`:
/// written and restored through [`backend_write_async`] and [`backend_read`]. Used
/// inside the operator's `impl Operator` block.
macro_rules! backend_snapshots {
    () => {
        fn snapshot(&mut self, target: &crate::SnapshotTarget) -> crate::Result<()> {
            crate::SnapshotWrite::finish(self.snapshot_async(target)?)
        }

        fn snapshot_async(
            &mut self,
            target: &crate::SnapshotTarget,
        ) -> crate::Result<Option<crate::SnapshotWrite>> {
            crate::snapshot::backend_write_async(
                target,
                &mut self.backend,
                &self.timers,
                self.watermark,
            )
        }

        fn restore(&mut self, from: &[crate::SnapshotSource]) -> crate::Result<()> {
            self.watermark =
                crate::snapshot::backend_read(from, &mut self.backend, &mut self.timers)?;
            Ok(())
        }
    };
    // The state is a `KeyedCore` in field `$core`.
    ($core:ident) => {
        fn snapshot(&mut self, target: &crate::SnapshotTarget) -> crate::Result<()> {
            crate::SnapshotWrite::finish(self.snapshot_async(target)?)
        }

        fn snapshot_async(
            &mut self,
            target: &crate::SnapshotTarget,
        ) -> crate::Result<Option<crate::SnapshotWrite>> {
            self.$core.snapshot_async(target)
        }

        fn restore(&mut self, from: &[crate::SnapshotSource]) -> crate::Result<()> {
            self.$core.restore(from)
        }
    };
}
pub(crate) use backend_snapshots;
