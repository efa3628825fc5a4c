//! What every keyed window operator that keeps its windows in the state backend holds
//! (session, count and global windows): the key columns, the backend and its state, a
//! group table and accumulators for a batch's keys, the timers, the watermark, and the
//! scratch of key hashes. Built once by [`KeyedCore::open`]; snapshotted and restored
//! as one ([`crate::snapshot::backend_snapshots`]).

use sabot_core::Timestamp;
use sabot_state::{StateBackend, StateId};
use sabot_time::{TimerKey, TimerService};

use super::aggregate::{Accumulator, BoundAggregate};
use super::groups::GroupTable;
use crate::keys::KeyColumns;
use crate::{Result, TaskContext};

/// The shared part of a keyed window operator (see the module docs).
pub(crate) struct KeyedCore<K: TimerKey, N: Ord + std::hash::Hash> {
    pub(crate) keys: KeyColumns,
    pub(crate) backend: Box<dyn StateBackend>,
    /// The operator's one state (its layout is the operator's).
    pub(crate) state: StateId,
    /// A batch's keys, grouped.
    pub(crate) table: GroupTable,
    /// Per group of `table`, each aggregate's slots.
    pub(crate) accs: Vec<Accumulator>,
    pub(crate) timers: TimerService<K, N>,
    pub(crate) max_parallelism: usize,
    pub(crate) watermark: Timestamp,
    /// Scratch: the key hashes of a batch's rows.
    pub(crate) hashes: Vec<u64>,
}

impl<K: TimerKey, N: sabot_core::codec::Codec + Clone + Eq + std::hash::Hash + Ord>
    KeyedCore<K, N>
{
    /// Opens the backend of operator `operator` (as [`TaskContext::open_state`]) and
    /// registers its state `state` with layout `fingerprint`.
    pub(crate) fn open(
        ctx: &TaskContext,
        operator: &str,
        state: &str,
        fingerprint: &str,
        keys: KeyColumns,
        aggs: &[BoundAggregate],
    ) -> Result<Self> {
        let mut backend = ctx.open_state(operator)?;
        let state = backend.register(state, fingerprint)?;
        let table = super::group_table(&keys);
        Ok(KeyedCore {
            keys,
            backend,
            state,
            table,
            accs: aggs.iter().map(BoundAggregate::new_accumulator).collect(),
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            hashes: Vec::new(),
        })
    }

    /// Starts a snapshot of the backend, timers and watermark ([`Operator::snapshot_async`]).
    ///
    /// [`Operator::snapshot_async`]: crate::Operator::snapshot_async
    pub(crate) fn snapshot_async(
        &mut self,
        target: &crate::SnapshotTarget,
    ) -> Result<Option<crate::SnapshotWrite>> {
        crate::snapshot::backend_write_async(
            target,
            &mut self.backend,
            &self.timers,
            self.watermark,
        )
    }

    /// Restores what [`snapshot_async`](Self::snapshot_async) wrote.
    pub(crate) fn restore(&mut self, from: &[crate::SnapshotSource]) -> Result<()> {
        self.watermark = crate::snapshot::backend_read(from, &mut self.backend, &mut self.timers)?;
        Ok(())
    }
}
