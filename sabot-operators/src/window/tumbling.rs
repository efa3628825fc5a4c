//! Keyed tumbling event-time windows with vectorized aggregates (a
//! [`PaneWindowOp`](super::pane_window) whose panes are its windows).

use std::time::Duration;

use super::aggregate::Aggregate;
use super::pane_window::PaneWindowSpec;

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
}

super::pane_window::pane_window_factory!(TumblingWindowFactory, |spec| format!(
    "tumbling_window({:?}, keys={:?})",
    spec.size, spec.keys
));
