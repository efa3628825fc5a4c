//! Tumbling and sliding windows: one operator ([`PaneWindowOp`]) over a pane store.
//!
//! A window of `size` starts every `slide` (tumbling: `slide == size`); rows are
//! aggregated once into the *pane* of one slide they fall in, and a window is the
//! combination of its `size / slide` panes. The operator owns what every pane window
//! does alike: it binds the keys, time column and aggregates, buckets a batch's rows by
//! pane, sends rows too late for every window to the [`LATE_DATA`] side output and counts
//! them, keeps the watermark and the window bounds (when a window fires, when its
//! allowed lateness ends), paces early firing, and snapshots the watermark. Where the
//! panes live is the store's ([`PaneStore`]), chosen by the state backend's kind:
//! - [`MemoryPanes`](super::panes::MemoryPanes): hash tables of accumulators inside the
//!   operator (the backend holds only snapshots);
//! - [`BackendPanes`](super::backend_panes::BackendPanes): the state backend (RocksDB),
//!   fired by timers per key group, for state larger than memory.
//!
//! [`LATE_DATA`]: super::LATE_DATA

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::arrow::datatypes::Schema;
use sabot_core::metrics::Counter;
use sabot_core::{RecordBatch, SchemaRef, Timestamp, duration_millis};

use super::aggregate::{Accumulator, Aggregate, BoundAggregate, RowSel};
use super::{LATE_RECORDS, LATE_RECORDS_DROPPED};
use crate::keys::{BatchKeys, KeyColumns};
use crate::{Operator, OperatorError, Output, Result, SnapshotWrite, TaskContext};

/// What a tumbling or sliding window factory holds: everything but its name.
#[derive(Clone, Debug)]
pub(super) struct PaneWindowSpec {
    pub(super) keys: Vec<String>,
    pub(super) time_column: Option<String>,
    pub(super) size: Duration,
    /// A new window every `slide` (a divisor of `size`; `size` for tumbling windows).
    pub(super) slide: Duration,
    pub(super) allowed_lateness: Duration,
    pub(super) aggregates: Vec<Aggregate>,
    /// Early firing: every this much processing time, windows not yet fired emit their
    /// current results for the keys updated since.
    pub(super) early: Option<Duration>,
}

impl PaneWindowSpec {
    /// Resolves the spec against `input`; `invalid` makes the factory's plan error.
    pub(super) fn bind(
        &self,
        input: &SchemaRef,
        invalid: impl Fn(String) -> OperatorError,
    ) -> Result<Bound> {
        let Some(time_column) = &self.time_column else {
            return Err(invalid(
                "the stream has no event time: call with_watermarks(..) before windowing".into(),
            ));
        };
        let size_ms = duration_millis(self.size);
        if size_ms <= 0 {
            return Err(invalid(format!(
                "window size must be at least 1 ms, got {:?}",
                self.size
            )));
        }
        let slide_ms = duration_millis(self.slide);
        if slide_ms <= 0 || size_ms % slide_ms != 0 {
            return Err(invalid(format!(
                "the slide must be at least 1 ms and divide the window size: size {:?}, slide {:?}",
                self.size, self.slide
            )));
        }
        let (
            time_idx,
            super::KeyedOutput {
                key_idx,
                aggs,
                fields,
            },
        ) = super::time_window_output(input, time_column, &self.keys, &self.aggregates, invalid)?;
        Ok(Bound {
            key_idx,
            time_idx,
            size_ms,
            slide_ms,
            lateness_ms: duration_millis(self.allowed_lateness).max(0),
            early_ms: self.early.map_or(0, |d| duration_millis(d).max(1)),
            aggs,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The operator for `input`, its panes in memory or in the backend by the state
    /// backend's kind.
    pub(super) fn create(
        &self,
        input: &SchemaRef,
        ctx: &TaskContext,
        invalid: impl Fn(String) -> OperatorError,
    ) -> Result<Box<dyn Operator>> {
        let bound = self.bind(input, invalid)?;
        let keys = KeyColumns::new(input, bound.key_idx.clone())?;
        // The stored layout: key columns' types and each aggregate's slot. Restoring
        // state written with other keys or aggregates is a clear error.
        let panes = if bound.slide_ms < bound.size_ms {
            format!("/panes={}ms", bound.slide_ms)
        } else {
            String::new()
        };
        let fingerprint =
            super::state_fingerprint("window-acc", &panes, input, &bound.key_idx, &bound.aggs);
        let state_name = format!("window-{}", self.keys.join("-"));
        let core = WindowCore {
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(LATE_RECORDS),
            dropped: ctx.metrics.counter(LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            next_early: i64::MIN,
            keys,
            bound,
        };
        if ctx.state.is_in_memory() {
            let store = super::panes::MemoryPanes::new(&core, ctx, state_name, fingerprint);
            Ok(Box::new(PaneWindowOp { core, store }))
        } else {
            let store =
                super::backend_panes::BackendPanes::open(&core, ctx, &state_name, &fingerprint)?;
            Ok(Box::new(PaneWindowOp { core, store }))
        }
    }
}

/// A pane window resolved against its input.
#[derive(Clone)]
pub(super) struct Bound {
    pub(super) key_idx: Vec<usize>,
    pub(super) time_idx: usize,
    pub(super) size_ms: i64,
    /// Panes (and window starts) every `slide_ms`; `== size_ms` for tumbling windows.
    pub(super) slide_ms: i64,
    pub(super) lateness_ms: i64,
    /// Early firing interval in ms (0: none).
    pub(super) early_ms: i64,
    pub(super) aggs: Vec<BoundAggregate>,
    pub(super) schema: SchemaRef,
}

/// What a batch brings to each of its panes.
#[derive(Clone, Copy)]
pub(super) struct BatchInput<'a> {
    pub(super) keys: &'a BatchKeys,
    /// The rows' key hashes.
    pub(super) hashes: &'a [u64],
    /// Each aggregate's input column.
    pub(super) values: &'a [Option<ArrayRef>],
    /// The rows' event times.
    pub(super) times: &'a [i64],
}

/// The part of a pane window its store reads: bounds, keys, watermark (see the module
/// docs).
pub(super) struct WindowCore {
    pub(super) bound: Bound,
    /// The key columns (a single `Int64` key is grouped as integers, no row format).
    pub(super) keys: KeyColumns,
    pub(super) watermark: Timestamp,
    late: Counter,
    dropped: Counter,
    /// Scratch: the key hashes of a batch's rows.
    hashes: Vec<u64>,
    next_early: i64,
}

impl WindowCore {
    /// Whether windows slide (panes shorter than windows).
    #[inline]
    pub(super) fn sliding(&self) -> bool {
        self.bound.slide_ms < self.bound.size_ms
    }

    /// The window's last millisecond: when it fires.
    #[inline]
    pub(super) fn fire_time(&self, start: i64) -> i64 {
        start.saturating_add(self.bound.size_ms - 1)
    }

    /// When the window's state is dropped: after the allowed lateness.
    #[inline]
    pub(super) fn cleanup_time(&self, start: i64) -> i64 {
        self.fire_time(start).saturating_add(self.bound.lateness_ms)
    }

    /// The watermark has passed time `t`.
    #[inline]
    pub(super) fn passed(&self, t: i64) -> bool {
        Timestamp::from_millis(t) <= self.watermark
    }

    /// The window is due (its firing time is behind the watermark).
    #[inline]
    pub(super) fn is_due(&self, start: i64) -> bool {
        self.passed(self.fire_time(start))
    }

    /// Too late even for allowed lateness: the window is gone, or as good as gone. For
    /// a pane: its last window (which starts at the pane) is.
    #[inline]
    pub(super) fn is_too_late(&self, start: i64) -> bool {
        self.passed(self.cleanup_time(start))
    }

    /// Some window containing pane `pane` has fired already.
    #[inline]
    pub(super) fn partly_late(&self, pane: i64) -> bool {
        self.passed(pane.saturating_add(self.bound.slide_ms - 1))
    }

    /// The windows holding pane `pane`, oldest first.
    pub(super) fn windows_of(&self, pane: i64) -> impl Iterator<Item = i64> + use<> {
        let (size, slide) = (self.bound.size_ms, self.bound.slide_ms);
        let first = pane.saturating_sub(size - slide);
        (0..size / slide).map(move |i| first.saturating_add(i * slide))
    }

    /// The windows holding pane `pane` that fired and whose allowed lateness has not
    /// passed: a late update of the pane re-emits their results for the keys it touched.
    pub(super) fn kept_fired_windows(&self, pane: i64) -> impl Iterator<Item = i64> + '_ {
        self.windows_of(pane)
            .filter(|&w| self.is_due(w) && !self.is_too_late(w))
    }

    /// The first window containing pane `pane` that has not fired (its start); the pane
    /// itself for tumbling windows. The pane must not be too late.
    pub(super) fn first_open_window(&self, pane: i64) -> i64 {
        let (size, slide) = (self.bound.size_ms, self.bound.slide_ms);
        let first = pane.saturating_sub(size - slide);
        if self.watermark == Timestamp::MIN {
            return first;
        }
        // The smallest window start `s` with `s + size - 1 > watermark`.
        let need = self
            .watermark
            .millis()
            .saturating_sub(size)
            .saturating_add(2);
        let aligned = need.saturating_sub(need.rem_euclid(slide));
        let s = if aligned < need {
            aligned.saturating_add(slide)
        } else {
            aligned
        };
        first.max(s)
    }

    /// A fresh set of the aggregates' accumulators.
    pub(super) fn new_accs(&self) -> Vec<Accumulator> {
        self.bound
            .aggs
            .iter()
            .map(BoundAggregate::new_accumulator)
            .collect()
    }

    /// The output batch of window `start`: `cols` (the key columns), then the window
    /// bounds and the aggregates of `accs` (the slots `sel`, or every slot in order).
    pub(super) fn result(
        &self,
        start: i64,
        mut cols: Vec<ArrayRef>,
        accs: &[Accumulator],
        sel: Option<&[u32]>,
    ) -> Result<RecordBatch> {
        let n = cols.first().map_or(0, |c| c.len());
        cols.push(Arc::new(Int64Array::from_value(start, n)));
        cols.push(Arc::new(Int64Array::from_value(
            start.saturating_add(self.bound.size_ms),
            n,
        )));
        for a in accs {
            cols.push(a.finish(sel)?);
        }
        Ok(RecordBatch::try_new(self.bound.schema.clone(), cols)?)
    }
}

/// Where a pane window's panes live (see the module docs). Every method gets the
/// window's [`WindowCore`]: its bounds, keys and current watermark.
pub(super) trait PaneStore: Send {
    /// Folds the rows `rows` of a batch (`input`) into pane `pane`, which is not too
    /// late. Registers what firing the pane's windows needs; re-emits the touched keys'
    /// results in each fired window still kept for allowed lateness
    /// ([`WindowCore::kept_fired_windows`]); marks the keys for early firing.
    fn update(
        &mut self,
        core: &WindowCore,
        pane: i64,
        rows: RowSel<'_>,
        input: &BatchInput<'_>,
        out: &mut Output,
    ) -> Result<()>;

    /// The watermark moved from `old` to `core.watermark`: emits every window whose last
    /// millisecond it passed, in window order, and drops the panes no window needs any
    /// more (their last window's allowed lateness passed).
    fn fire(&mut self, core: &WindowCore, old: Timestamp, out: &mut Output) -> Result<()>;

    /// Early firing: each window not fired yet emits its current results for the keys
    /// updated in its panes since the previous early firing.
    fn fire_early(&mut self, core: &WindowCore, out: &mut Output) -> Result<()>;

    /// Starts a snapshot of the panes and the watermark ([`Operator::snapshot_async`]).
    fn snapshot_async(
        &mut self,
        core: &WindowCore,
        target: &crate::SnapshotTarget,
    ) -> Result<Option<SnapshotWrite>>;

    /// Restores what [`snapshot_async`](Self::snapshot_async) wrote; returns the
    /// watermark.
    fn restore(&mut self, core: &WindowCore, from: &[crate::SnapshotSource]) -> Result<Timestamp>;
}

/// A tumbling or sliding window over its panes (see the module docs).
pub(super) struct PaneWindowOp<S> {
    core: WindowCore,
    store: S,
}

impl<S: PaneStore> Operator for PaneWindowOp<S> {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let core = &mut self.core;
        let times = super::non_null_times(&batch, core.bound.time_idx)?;
        let mut hashes = std::mem::take(&mut core.hashes);
        let keys = core.keys.of(&batch, &mut hashes)?;
        let values = core
            .bound
            .aggs
            .iter()
            .map(|a| a.values(batch.columns()))
            .collect::<Result<Vec<_>>>()?;
        let ts = times.values();
        // Usually a whole batch falls in one pane; otherwise rows are bucketed by pane.
        // A pane is too late once its last window (starting at the pane) is cleaned up.
        let (buckets, too_late) =
            super::bucket_by_pane(ts, core.bound.slide_ms, |p| core.is_too_late(p));
        super::send_too_late(&batch, too_late, (&core.late, &core.dropped), out)?;
        let input = BatchInput {
            keys: &keys,
            hashes: &hashes,
            values: &values,
            times: ts,
        };
        for (pane, rows) in buckets {
            let rows = match &rows {
                None => RowSel::All,
                Some(rows) => RowSel::Some(rows),
            };
            // Late for at least one of its windows (for tumbling windows: its window).
            if core.partly_late(pane) {
                core.late.add(match rows {
                    RowSel::All => ts.len(),
                    RowSel::Some(rows) => rows.len(),
                } as u64);
            }
            self.store.update(core, pane, rows, &input, out)?;
        }
        core.hashes = hashes;
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.core.watermark {
            let old = std::mem::replace(&mut self.core.watermark, wm);
            self.store.fire(&self.core, old, out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        let core = &mut self.core;
        if core.bound.early_ms > 0 && now_ms >= core.next_early {
            if core.next_early != i64::MIN {
                self.store.fire_early(core, out)?;
            }
            core.next_early = now_ms.saturating_add(core.bound.early_ms);
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        // Every window fires.
        let old = std::mem::replace(&mut self.core.watermark, Timestamp::MAX);
        self.store.fire(&self.core, old, out)
    }

    fn snapshot(&mut self, target: &crate::SnapshotTarget) -> Result<()> {
        SnapshotWrite::finish(self.snapshot_async(target)?)
    }

    fn snapshot_async(&mut self, target: &crate::SnapshotTarget) -> Result<Option<SnapshotWrite>> {
        self.store.snapshot_async(&self.core, target)
    }

    fn restore(&mut self, from: &[crate::SnapshotSource]) -> Result<()> {
        self.core.watermark = self.store.restore(&self.core, from)?;
        Ok(())
    }
}

/// The builder methods and the [`OperatorFactory`](crate::OperatorFactory) of a
/// tumbling or sliding window factory (a struct with a `spec: PaneWindowSpec`), named
/// by `$name` applied to the spec.
macro_rules! pane_window_factory {
    ($factory:ident, $name:expr) => {
        impl $factory {
            /// Early firing (Flink SQL's `table.exec.emit.early-fire`): every `interval`
            /// of processing time, each window that has not fired yet emits its current
            /// results for the keys updated in its panes since the previous early
            /// firing; the window's final results still come when the watermark passes
            /// its end (later rows for a key and window supersede earlier ones). Which
            /// keys are due for an early firing is not part of checkpoints: after a
            /// restore, early firings resume with the next update.
            pub fn with_early_firing(mut self, interval: std::time::Duration) -> Self {
                self.spec.early = Some(interval);
                self
            }

            /// Keeps windows open for late updates for `lateness` after they fire.
            pub fn with_allowed_lateness(mut self, lateness: std::time::Duration) -> Self {
                self.spec.allowed_lateness = lateness;
                self
            }

            fn invalid(&self, reason: String) -> crate::OperatorError {
                crate::OperatorError::invalid_plan(crate::OperatorFactory::name(self), reason)
            }
        }

        impl crate::OperatorFactory for $factory {
            fn name(&self) -> String {
                let name: fn(&super::pane_window::PaneWindowSpec) -> String = $name;
                name(&self.spec)
            }

            fn output_schema(
                &self,
                input: &sabot_core::SchemaRef,
            ) -> crate::Result<sabot_core::SchemaRef> {
                Ok(self.spec.bind(input, |r| self.invalid(r))?.schema)
            }

            fn side_outputs(
                &self,
                input: &sabot_core::SchemaRef,
            ) -> crate::Result<Vec<(&'static str, sabot_core::SchemaRef)>> {
                Ok(vec![(super::LATE_DATA, input.clone())])
            }

            fn create(
                &self,
                input: &sabot_core::SchemaRef,
                ctx: &crate::TaskContext,
            ) -> crate::Result<Box<dyn crate::Operator>> {
                self.spec.create(input, ctx, |r| self.invalid(r))
            }
        }
    };
}
pub(super) use pane_window_factory;
