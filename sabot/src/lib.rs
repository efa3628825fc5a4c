//! Sabot: a stream processor with Flink's guarantees on Arrow columnar batches.
//!
//! This facade re-exports the component crates and adds the user-facing APIs:
//! [`StreamEnv`] and [`Stream`] (jobs as chains of calls, as Flink's DataStream) and
//! Faust-style Kafka agents ([`app::App`]). The `sabot` command, the fraud demo job and
//! Nexmark live in their own crates (`sabot-cli`, `sabot-nexmark`).
//!
//! ```
//! use std::time::Duration;
//! use sabot::{Aggregate, StreamEnv, TumblingWindow};
//! use sabot_test_kit::{keyed_batches, keyed_schema};
//! use sabot::operators::VecSource;
//!
//! let env = StreamEnv::new();
//! env.set_parallelism(2);
//! let totals = env
//!     .source(VecSource::new(keyed_schema(), keyed_batches(7, 10_000, 1_000, 100, 1, 50)))
//!     .with_watermarks("ts", Duration::from_millis(50))
//!     .key_by(&["key"])
//!     .window(TumblingWindow::of(Duration::from_secs(1)))
//!     .aggregate([Aggregate::sum("value").alias("total")])
//!     .collect();
//! let result = env.execute().unwrap();
//! assert_eq!(result.metric(sabot::runtime::SOURCE_RECORDS), 10_000);
//! assert!(totals.num_rows() > 0);
//! ```
//!
//! # Crate topology
//!
//! | module | crate | layer | what |
//! |---|---|---|---|
//! | [`core`] | `sabot-core` | L0 | messages, timestamps, key groups, errors, Arrow |
//! | [`time`] | `sabot-time` | L1 | watermark generation and tracking |
//! | [`state`] | `sabot-state` | L1 | state backends: memory, RocksDB; typed keyed state |
//! | [`checkpoint`] | `sabot-checkpoint` | L1 | barrier alignment, the checkpoint coordinator, checkpoint storage |
//! | [`shuffle`] | `sabot-shuffle` | L1 | queues, partitioners, the Arrow Flight exchange |
//! | [`operators`] | `sabot-operators` | L2 | operator contracts, maps, filters, windows |
//! | [`runtime`] | `sabot-runtime` | L3 | job graphs, chained tasks, threads |
//! | [`kafka`] | `sabot-kafka` | L3 | Kafka source and sink (exactly-once), codecs, test broker |
//!
//! A crate depends only on crates below it.
//!
//! # Features
//!
//! All on by default; a library user who needs none can turn them off
//! (`default-features = false`) and build no C++ and no network stack:
//!
//! - `rocksdb`: the RocksDB state backend ([`state::StateConfig::rocksdb`]);
//! - `kafka`: [`kafka`] sources, sinks and codecs, and Faust-style agents ([`app`]);
//! - `flight`: jobs split over worker processes ([`runtime::Cluster`]), exchanging data
//!   over Arrow Flight (`shuffle::flight`; tonic, tokio);
//! - `cluster`: [`cluster::main`] gives any job binary the roles `run`, `coordinator`
//!   and `worker` (the control plane of `sabot-cluster`; implies `flight`).

#[doc(inline)]
pub use sabot_checkpoint as checkpoint;
#[doc(inline)]
pub use sabot_core as core;
#[cfg(feature = "kafka")]
#[doc(inline)]
pub use sabot_kafka as kafka;
#[doc(inline)]
pub use sabot_operators as operators;
#[doc(inline)]
pub use sabot_runtime as runtime;
#[doc(inline)]
pub use sabot_shuffle as shuffle;
#[doc(inline)]
pub use sabot_state as state;
#[doc(inline)]
pub use sabot_time as time;

#[cfg(feature = "kafka")]
pub mod app;
#[cfg(feature = "cluster")]
pub mod cluster;
mod error;
mod stream;

pub use error::Error;
pub use sabot_core::arrow;
pub use sabot_operators::{Aggregate, AggregateFunction, JoinType, Trigger};
pub use sabot_runtime::{JobConfig, JobResult};
pub use stream::{
    CountWindow, GlobalWindow, JoinedStreams, KeyedStream, SessionWindow, SlidingWindow, Stream,
    StreamEnv, TumblingWindow, WindowedStream, Windows,
};

/// Result alias of the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;
