//! The Sabot executor: turns a [`JobGraph`] into subtasks on threads and runs them.
//!
//! - [`JobGraph`]: sources, operators, exchanges ([`Partitioning`]) and sinks.
//! - [`JobGraph::build`] validates everything (schemas, columns, key types, parallelism)
//!   and gives a [`Job`]; [`Job::start`] runs it, [`JobHandle::join`] waits for it.
//!
//! Operators between two exchanges are chained into one task, so a filter after a map
//! costs no queue hop. Each exchange splits batches by key group (or round robin) into
//! bounded queues, one per downstream subtask: a full queue blocks the producer, which is
//! the backpressure. Downstream subtasks combine the watermarks of all their upstream
//! subtasks with a [`sabot_time::WatermarkTracker`]. End of stream drains every queue and
//! fires every open window. A failing subtask stops the whole job, and the job reports
//! the error that caused it.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sabot_test_kit::{keyed_batches, keyed_schema};
//! use sabot_operators::{Aggregate, CollectSink, TumblingWindowFactory, VecSource, WatermarkFactory};
//! use sabot_runtime::{JobConfig, JobGraph, Partitioning};
//!
//! let mut config = JobConfig::default();
//! config.parallelism = 2;
//! let mut g = JobGraph::new(config);
//! let src = g.add_source(Arc::new(VecSource::new(keyed_schema(), keyed_batches(7, 1000, 100, 10, 1, 5))));
//! let wm = g.add_operator(src, Arc::new(WatermarkFactory::bounded_out_of_orderness("ts", Duration::from_millis(5))));
//! let keyed = g.add_exchange(wm, Partitioning::Hash(vec!["key".into()]));
//! let win = g.add_operator(keyed, Arc::new(TumblingWindowFactory::new(
//!     vec!["key".into()], Some("ts".into()), Duration::from_millis(100), vec![Aggregate::count()],
//! )));
//! let (sink, out) = CollectSink::new();
//! g.add_sink(win, Arc::new(sink));
//! let result = g.build().unwrap().run().unwrap();
//! assert_eq!(result.metric(sabot_runtime::SOURCE_RECORDS), 1000);
//! assert!(out.num_rows() > 0);
//! ```

mod checkpointing;
mod error;
mod graph;
mod job;
mod network;
mod task;

pub use checkpointing::CheckpointSettings;
pub use error::{Result, RuntimeError};
pub use graph::{Cluster, JobConfig, JobGraph, NodeId, Partitioning};
pub use job::{
    Job, JobHandle, JobResult, LATENCY_MARKER_INTERVAL, SINK_LATENCY_US, SINK_RECORDS,
    SOURCE_RECORDS,
};
