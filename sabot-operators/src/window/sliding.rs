//! Keyed sliding event-time windows: a window of `size` every `slide`, computed from
//! panes of one slide (a [`PaneWindowOp`](super::pane_window) whose windows combine
//! `size / slide` panes).

use std::time::Duration;

use sabot_core::SchemaRef;

use super::LATE_DATA;
use super::aggregate::Aggregate;
use super::pane_window::PaneWindowSpec;
use crate::{Operator, OperatorError, OperatorFactory, Result, TaskContext};

/// A keyed sliding event-time window aggregate (Flink's `SlidingEventTimeWindows`,
/// aligned to the epoch): a window of `size` starts every `slide` (which must divide
/// `size`), so each record is in `size / slide` windows. Output rows, firing, allowed
/// lateness and early firing are those of a
/// [`TumblingWindowFactory`](super::TumblingWindowFactory).
///
/// Records are aggregated once, into the *pane* of length `slide` they fall in; a
/// window firing combines the stored aggregates of its panes per key, so a record's
/// contribution is computed once however many windows it is in (Arroyo's sliding
/// windows). On memory state, windows whose aggregates can be taken back (counts,
/// integer sums, averages) are computed incrementally: the previous window's, plus the
/// newest pane, less the oldest. A pane is dropped when the last window containing it
/// fires (or, with allowed lateness, when that window's lateness has passed). A record
/// arriving after some of its windows fired still counts in the later ones, and with
/// allowed lateness updates the fired ones still kept (their new results for the
/// record's key are emitted at once); one after all of them goes to [`LATE_DATA`].
#[derive(Clone, Debug)]
pub struct SlidingWindowFactory {
    spec: PaneWindowSpec,
}

impl SlidingWindowFactory {
    /// Windows of `size` every `slide` over `time_column` (the stream's event time;
    /// `None` is a build error), grouped by `keys`, computing `aggregates`, with no
    /// allowed lateness. A slide of 0 or one that does not divide `size` is a build
    /// error; a slide equal to `size` makes tumbling windows.
    pub fn new(
        keys: Vec<String>,
        time_column: Option<String>,
        size: Duration,
        slide: Duration,
        aggregates: Vec<Aggregate>,
    ) -> Self {
        SlidingWindowFactory {
            spec: PaneWindowSpec {
                keys,
                time_column,
                size,
                slide,
                allowed_lateness: Duration::ZERO,
                aggregates,
                early: None,
            },
        }
    }

    /// Early firing, as [`TumblingWindowFactory::with_early_firing`]: every `interval` of
    /// processing time, each window not fired yet emits its current results for the
    /// keys updated in its panes since the previous early firing.
    ///
    /// [`TumblingWindowFactory::with_early_firing`]: super::TumblingWindowFactory::with_early_firing
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

impl OperatorFactory for SlidingWindowFactory {
    fn name(&self) -> String {
        format!(
            "sliding_window({:?} every {:?}, keys={:?})",
            self.spec.size, self.spec.slide, self.spec.keys
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
