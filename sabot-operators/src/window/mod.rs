//! Event-time windows.

mod aggregate;
mod count;
mod groups;
mod tumbling;

pub use aggregate::{AggKind, Aggregate};
pub use count::{COUNT_WINDOW_STATE, CountWindowFactory, WINDOW_INDEX};
pub use tumbling::{
    LATE_DATA, LATE_RECORDS, LATE_RECORDS_DROPPED, TumblingWindowFactory, WINDOW_END, WINDOW_START,
    WINDOW_STATE,
};
