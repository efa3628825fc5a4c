//! Keyed tumbling event-time windows with vectorized aggregates (a
//! [`PaneWindowOp`](super::pane_window) whose panes are its windows).

use std::time::Duration;

use sabot_core::SchemaRef;

use super::aggregate::Aggregate;
use super::pane_window::PaneWindowSpec;
use crate::{Operator, OperatorError, OperatorFactory, Result, TaskContext};

/// Name of the window start column in a window's output (ms, inclusive).
pub const WINDOW_START: &str = "window_start";
/// Name of the window end column in a window's output (ms, exclusive).
pub const WINDOW_END: &str = "window_end";
/// Tag of the side output that receives records too late for their window.
pub const LATE_DATA: &str = "late-data";
/// Counter of records that arrived after their window was due (end - 1 <= watermark),
/// whether or not allowed lateness still admitted them.
pub const LATE_RECORDS: &str = "window.late_records";
/// Name of the window's state in the state backend (and in snapshots).
pub const WINDOW_STATE: &str = "window-aggregates";
/// Counter of late records beyond the allowed lateness: in no window, sent to
/// [`LATE_DATA`].
pub const LATE_RECORDS_DROPPED: &str = "window.late_records_dropped";

/// A keyed tumbling event-time window aggregate.
///
/// Rows are assigned to windows `[start, start + size)` with `start = ts - ts mod size`.
/// A window fires when the watermark reaches its last millisecond `end - 1`, as in
/// Flink, emitting one row per key: the key columns, [`WINDOW_START`], [`WINDOW_END`]
/// and one column per aggregate. On a RocksDB backend each window registers event-time
/// timers per key group (so they move with their keys on rescale); on memory state the
/// windows are hash tables of accumulators in the operator.
///
/// With allowed lateness `L`, a fired window keeps its state until the watermark reaches
/// `end - 1 + L`; a record arriving for it meanwhile updates it, and the updated rows of
/// the keys it touched are emitted again (later rows for a key and window supersede
/// earlier ones). Records later than that are counted ([`LATE_RECORDS_DROPPED`]) and go
/// to the [`LATE_DATA`] side output, unchanged. End of input fires every open window.
#[derive(Clone, Debug)]
pub struct TumblingWindowFactory {
    spec: PaneWindowSpec,
}

impl TumblingWindowFactory {
    /// Windows of `size` over `time_column` (the stream's event time; `None` is a build
    /// error), grouped by `keys`, computing `aggregates`, with no allowed lateness.
    pub fn new(
        keys: Vec<String>,
        time_column: Option<String>,
        size: Duration,
        aggregates: Vec<Aggregate>,
    ) -> Self {
        TumblingWindowFactory {
            spec: PaneWindowSpec {
                keys,
                time_column,
                size,
                slide: size,
                allowed_lateness: Duration::ZERO,
                aggregates,
                early: None,
            },
        }
    }

    /// Early firing (Flink SQL's `table.exec.emit.early-fire`): every `interval` of
    /// processing time, each window that has not fired yet emits its current results for
    /// the keys updated since the previous early firing; the window's final results
    /// still come when the watermark passes its end (later rows for a key and window
    /// supersede earlier ones). Which keys are due for an early firing is not part of
    /// checkpoints: after a restore, early firings resume with the next update.
    pub fn with_early_firing(mut self, interval: Duration) -> Self {
        self.spec.early = Some(interval);
        self
    }

    /// Keeps windows open for late updates for `lateness` after they fire.
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.spec.allowed_lateness = lateness;
        self
    }

    fn invalid(&self, reason: String) -> OperatorError {
        OperatorError::invalid_plan(self.name(), reason)
    }
}

impl OperatorFactory for TumblingWindowFactory {
    fn name(&self) -> String {
        format!(
            "tumbling_window({:?}, keys={:?})",
            self.spec.size, self.spec.keys
        )
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.spec.bind(input, |r| self.invalid(r))?.schema)
    }

    fn side_outputs(&self, input: &SchemaRef) -> Result<Vec<(&'static str, SchemaRef)>> {
        Ok(vec![(LATE_DATA, input.clone())])
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        self.spec.create(input, ctx, |r| self.invalid(r))
    }
}
