//! Keyed sliding event-time windows: a window of `size` every `slide`, computed from
//! panes of one slide (a [`PaneWindowOp`](super::pane_window) whose windows combine
//! `size / slide` panes).

use std::time::Duration;

use super::aggregate::Aggregate;
use super::pane_window::PaneWindowSpec;

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
}

super::pane_window::pane_window_factory!(SlidingWindowFactory, |spec| format!(
    "sliding_window({:?} every {:?}, keys={:?})",
    spec.size, spec.slide, spec.keys
));
