//! Operators on Arrow batches for the Sabot stream processor.
//!
//! The contracts:
//! - [`Operator`] / [`OperatorFactory`]: one instance per subtask, called with one batch
//!   or watermark at a time, emitting into an [`Output`]. Factories validate their
//!   settings against the input schema when a job is built.
//! - [`Source`] / [`SourceFactory`] and [`Sink`] / [`SinkFactory`].
//!
//! The operators:
//! - stateless: [`MapFactory`], [`FilterFactory`] (an Arrow boolean predicate),
//!   [`ProjectFactory`], and [`WatermarkFactory`] (per-partition watermark generation
//!   with idleness and a bad-record policy for null event times);
//! - [`TumblingWindowFactory`] and [`SlidingWindowFactory`]: keyed tumbling and sliding
//!   event-time windows with vectorized aggregates ([`Aggregate`]), one operator over
//!   panes of one slide, with allowed lateness, early firing and a [`LATE_DATA`] side
//!   output; the panes live in the operator or in the job's state backend, by its kind
//!   ([`TaskContext::state`]: memory or RocksDB);
//! - [`KeyedProcessFactory`]: a user [`KeyedProcessFunction`] per record, with keyed
//!   state (value, list, map, reducing, aggregating; from `sabot-state`) and event- and
//!   processing-time timers per key;
//! - built-in [`VecSource`] and [`CollectSink`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sabot_core::metrics::Metrics;
//! use sabot_core::{Message, Timestamp};
//! use sabot_test_kit::int64_batch;
//! use sabot_operators::{Aggregate, OperatorFactory, Output, TaskContext, TumblingWindowFactory};
//!
//! let batch = int64_batch(&[("k", vec![1, 2, 1]), ("v", vec![10, 20, 30]), ("ts", vec![0, 5, 9])]);
//! let window = TumblingWindowFactory::new(
//!     vec!["k".into()], Some("ts".into()), Duration::from_millis(10),
//!     vec![Aggregate::sum("v").alias("total")],
//! );
//! let ctx = TaskContext::new(0, 1, 128, Metrics::new());
//! let mut op = window.create(&batch.schema(), &ctx).unwrap();
//! let mut out = Output::new();
//! op.on_batch(batch, &mut out).unwrap();
//! op.on_watermark(Timestamp::from_millis(9), &mut out).unwrap(); // fires [0, 10)
//! let Some(Message::Data(result)) = out.drain().next() else { panic!() };
//! assert_eq!(result.num_rows(), 2); // k=1: 40, k=2: 20
//! ```

mod builtin;
mod columns;
mod error;
mod file_sink;
mod join;
mod keys;
mod morsel;
mod process;
mod snapshot;
pub mod staging;
mod stateless;
mod time_column;
mod traits;
mod window;

pub use builtin::{ChunkCursor, CollectSink, Collected, VecSource};
pub use columns::{ColumnFn, FlatMapFactory, FlatMapFn, WithColumnFactory};
pub use error::{BoxError, OperatorError, Result};
pub use file_sink::TransactionalCsvSink;
pub use join::{CHANGELOG_OP, JOIN_LATE_RECORDS_DROPPED, JoinFactory, JoinType, LookupJoinFactory};
pub use morsel::Morsels;
pub use process::{
    KeyedContext, KeyedProcessFactory, KeyedProcessFunction, ProcessState, RowWriter,
};
pub use sabot_checkpoint::storage::{SnapshotSource, SnapshotTarget};
pub use staging::StagedFiles;
pub use stateless::{
    FilterFactory, MapFactory, MapFn, NULL_EVENT_TIME_DROPPED, PredicateFn, ProjectFactory,
    WatermarkFactory,
};
pub use traits::{
    Operator, OperatorFactory, Output, Sink, SinkFactory, SnapshotWrite, Source, SourceFactory,
    SourcePoll, TaskContext, TwoInputOperatorFactory,
};
pub use window::{
    AggKind, Aggregate, AggregateFunction, COUNT_WINDOW_STATE, CountWindowFactory,
    GLOBAL_WINDOW_STATE, GlobalWindowFactory, LATE_DATA, LATE_RECORDS, LATE_RECORDS_DROPPED,
    SESSION_WINDOW_STATE, SessionWindowFactory, SlidingWindowFactory, Trigger,
    TumblingWindowFactory, WINDOW_END, WINDOW_INDEX, WINDOW_START, WINDOW_STATE,
};
