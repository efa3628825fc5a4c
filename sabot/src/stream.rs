//! The `Stream` API: jobs written as chains of calls, in the style of Flink's DataStream.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{ArrayRef, BooleanArray};
use sabot_core::arrow::datatypes::DataType;
use sabot_core::{BadRecordPolicy, RecordBatch, SchemaRef};
use sabot_operators::{
    Aggregate, BoxError, CollectSink, Collected, CountWindowFactory, FilterFactory, FlatMapFactory,
    GlobalWindowFactory, JoinFactory, JoinType, KeyedProcessFactory, KeyedProcessFunction,
    LATE_DATA, LookupJoinFactory, MapFactory, OperatorFactory, ProjectFactory,
    SessionWindowFactory, SinkFactory, SlidingWindowFactory, SourceFactory, Trigger,
    TumblingWindowFactory, TwoInputOperatorFactory, WatermarkFactory, WithColumnFactory,
};
use sabot_runtime::{Job, JobConfig, JobGraph, JobResult, NodeId, Partitioning};
use sabot_state::StateConfig;
use sabot_time::Clock;

use crate::Result;

/// Where a job is assembled: sources come from here, and `execute` runs the job.
///
/// ```
/// use std::time::Duration;
/// use sabot::{Aggregate, StreamEnv, TumblingWindow};
/// use sabot_test_kit::{keyed_batches, keyed_schema};
/// use sabot::operators::VecSource;
///
/// let env = StreamEnv::new();
/// env.set_parallelism(2);
/// let counts = env
///     .source(VecSource::new(keyed_schema(), keyed_batches(1, 1_000, 100, 10, 1, 0)))
///     .with_watermarks("ts", Duration::ZERO)
///     .key_by(&["key"])
///     .window(TumblingWindow::of(Duration::from_millis(100)))
///     .aggregate([Aggregate::count(), Aggregate::sum("value").alias("total")])
///     .collect();
/// env.execute().unwrap();
/// assert_eq!(counts.num_rows(), 10 * 10); // 10 keys x 10 windows
/// ```
#[derive(Clone)]
pub struct StreamEnv {
    graph: Rc<RefCell<JobGraph>>,
}

impl Default for StreamEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StreamEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamEnv")
            .field("config", self.graph.borrow().config())
            .finish_non_exhaustive()
    }
}

impl StreamEnv {
    /// An environment with default settings (parallelism 1).
    pub fn new() -> Self {
        Self::with_config(JobConfig::default())
    }

    /// An environment with the given settings.
    pub fn with_config(config: JobConfig) -> Self {
        StreamEnv {
            graph: Rc::new(RefCell::new(JobGraph::new(config))),
        }
    }

    /// Subtasks per operator (validated when the job is built: 0 is an error).
    pub fn set_parallelism(&self, parallelism: usize) -> &Self {
        self.graph.borrow_mut().config_mut().parallelism = parallelism;
        self
    }

    /// The number of key groups (default 128).
    pub fn set_max_parallelism(&self, max_parallelism: usize) -> &Self {
        self.graph.borrow_mut().config_mut().max_parallelism = max_parallelism;
        self
    }

    /// Batches each exchange queue holds per upstream subtask before producers block.
    pub fn set_queue_capacity(&self, batches: usize) -> &Self {
        self.graph.borrow_mut().config_mut().queue_capacity = batches;
        self
    }

    /// What sources and operators do with records they cannot process (default: fail).
    pub fn set_bad_record_policy(&self, policy: BadRecordPolicy) -> &Self {
        self.graph.borrow_mut().config_mut().bad_records = policy;
        self
    }

    /// Processing time for the job (default: the system clock; tests can pass a
    /// [`ManualClock`](crate::time::ManualClock)).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) -> &Self {
        self.graph.borrow_mut().config_mut().clock = clock;
        self
    }

    /// Where stateful operators keep their state (default: memory).
    pub fn set_state(&self, state: StateConfig) -> &Self {
        self.graph.borrow_mut().config_mut().state = state;
        self
    }

    /// Runs the job as one worker of a job split over several processes (see
    /// [`Cluster`](sabot_runtime::Cluster)).
    pub fn set_cluster(&self, cluster: sabot_runtime::Cluster) -> &Self {
        self.graph.borrow_mut().config_mut().cluster = Some(cluster);
        self
    }

    /// Takes checkpoints, and continues from the newest complete one in their folder
    /// (see [`CheckpointSettings`](sabot_runtime::CheckpointSettings)).
    pub fn set_checkpoints(&self, checkpoints: sabot_runtime::CheckpointSettings) -> &Self {
        self.graph.borrow_mut().config_mut().checkpoints = Some(checkpoints);
        self
    }

    /// The job's name, for logs.
    pub fn set_name(&self, name: impl Into<String>) -> &Self {
        self.graph.borrow_mut().config_mut().name = name.into();
        self
    }

    /// The current settings.
    pub fn config(&self) -> JobConfig {
        self.graph.borrow().config().clone()
    }

    /// A stream read from `source`.
    pub fn source(&self, source: impl SourceFactory + 'static) -> Stream {
        let time_column = source.time_column();
        let node = self.graph.borrow_mut().add_source(Arc::new(source));
        Stream {
            graph: self.graph.clone(),
            node,
            time_column,
        }
    }

    /// Validates the job built so far (every error in the job's definition shows here).
    pub fn build(&self) -> Result<Job> {
        Ok(self.graph.borrow().clone().build()?)
    }

    /// Builds and runs the job to completion.
    pub fn execute(&self) -> Result<JobResult> {
        Ok(self.build()?.run()?)
    }
}

/// A stream of record batches, all of one schema.
#[derive(Clone)]
pub struct Stream {
    graph: Rc<RefCell<JobGraph>>,
    node: NodeId,
    time_column: Option<String>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("node", &self.node)
            .field("time_column", &self.time_column)
            .finish_non_exhaustive()
    }
}

impl Stream {
    fn then(&self, factory: impl OperatorFactory + 'static, time_column: Option<String>) -> Stream {
        let node = self
            .graph
            .borrow_mut()
            .add_operator(self.node, Arc::new(factory));
        Stream {
            graph: self.graph.clone(),
            node,
            time_column,
        }
    }

    /// The event-time column, once [`Stream::with_watermarks`] named one.
    pub fn time_column(&self) -> Option<&str> {
        self.time_column.as_deref()
    }

    /// Applies `f` to every batch; the output keeps the input's schema.
    pub fn map(
        self,
        f: impl Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync + 'static,
    ) -> Stream {
        let t = self.time_column.clone();
        self.then(MapFactory::new("map", f), t)
    }

    /// Applies `f` to every batch; the output has schema `schema` (checked per batch).
    pub fn map_to(
        self,
        schema: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync + 'static,
    ) -> Stream {
        let t = self
            .time_column
            .clone()
            .filter(|c| schema.index_of(c).is_ok());
        self.then(MapFactory::with_schema("map", schema, f), t)
    }

    /// Keeps the rows for which `predicate` (computed on the whole batch, typically with
    /// Arrow's comparison kernels) is `true`.
    pub fn filter(
        self,
        predicate: impl Fn(&RecordBatch) -> Result<BooleanArray, BoxError> + Send + Sync + 'static,
    ) -> Stream {
        let t = self.time_column.clone();
        self.then(FilterFactory::new("filter", predicate), t)
    }

    /// Turns every batch into zero or more batches of schema `schema` (checked per
    /// batch; empty ones are dropped): Flink's `flatMap`, a batch at a time.
    pub fn flat_map(
        self,
        schema: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<Vec<RecordBatch>, BoxError> + Send + Sync + 'static,
    ) -> Stream {
        let t = self
            .time_column
            .clone()
            .filter(|c| schema.index_of(c).is_ok());
        self.then(FlatMapFactory::new("flat_map", schema, f), t)
    }

    /// Adds column `name` of type `data_type` computed from each whole batch (typically
    /// an Arrow kernel over its columns), or replaces the column of that name.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sabot::arrow::array::{Array, Int64Array};
    /// use sabot::arrow::compute::kernels::numeric::mul;
    /// use sabot::arrow::datatypes::DataType;
    /// use sabot::operators::VecSource;
    /// use sabot_test_kit::{keyed_batches, keyed_schema};
    ///
    /// let env = sabot::StreamEnv::new();
    /// let doubled = env
    ///     .source(VecSource::new(keyed_schema(), keyed_batches(1, 10, 10, 2, 1, 0)))
    ///     .with_column("double", DataType::Int64, |b| {
    ///         Ok(mul(b.column_by_name("value").unwrap(), &Int64Array::new_scalar(2))?)
    ///     })
    ///     .collect();
    /// env.execute().unwrap();
    /// let b = &doubled.batches()[0];
    /// assert_eq!(b.schema().field(3).name(), "double");
    /// ```
    pub fn with_column(
        self,
        name: &str,
        data_type: DataType,
        f: impl Fn(&RecordBatch) -> Result<ArrayRef, BoxError> + Send + Sync + 'static,
    ) -> Stream {
        let t = self.time_column.clone();
        self.then(WithColumnFactory::new(name, data_type, f), t)
    }

    /// Keeps the named columns, in this order.
    pub fn select(self, columns: &[&str]) -> Stream {
        let t = self
            .time_column
            .clone()
            .filter(|c| columns.contains(&c.as_str()));
        self.then(ProjectFactory::new(columns.iter().copied()), t)
    }

    /// Keeps the first column of each pair, named as the second (SQL's `SELECT a AS b`);
    /// event time follows its column under its new name.
    pub fn select_as(self, columns: &[(&str, &str)]) -> Stream {
        let t = self.time_column.as_deref().and_then(|t| {
            columns
                .iter()
                .find(|(c, _)| *c == t)
                .map(|(_, n)| (*n).to_owned())
        });
        self.then(ProjectFactory::renamed(columns), t)
    }

    /// Declares `time_column` (Int64 ms or Timestamp(ms)) as event time, with watermarks
    /// trailing the largest time seen per source subtask by `max_out_of_orderness`.
    pub fn with_watermarks(self, time_column: &str, max_out_of_orderness: Duration) -> Stream {
        self.with_event_time(WatermarkFactory::bounded_out_of_orderness(
            time_column,
            max_out_of_orderness,
        ))
    }

    /// Declares event time with full control over watermark generation: strategy
    /// (bounded out-of-orderness, monotonic, punctuated), emit interval and idle timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::operators::{VecSource, WatermarkFactory};
    /// use sabot::time::WatermarkStrategy;
    /// use sabot_test_kit::{keyed_batches, keyed_schema};
    ///
    /// let env = sabot::StreamEnv::new();
    /// let events = env
    ///     .source(VecSource::new(keyed_schema(), keyed_batches(1, 10, 10, 2, 1, 0)))
    ///     .with_event_time(
    ///         WatermarkFactory::new("ts", WatermarkStrategy::Monotonic)
    ///             .emit_every(Duration::from_millis(200))
    ///             .idle_timeout(Duration::from_secs(10)),
    ///     );
    /// assert_eq!(events.time_column(), Some("ts"));
    /// ```
    pub fn with_event_time(self, watermarks: WatermarkFactory) -> Stream {
        let column = watermarks.time_column().to_owned();
        self.then(watermarks, Some(column))
    }

    /// The side output `tag` of the operator that produced this stream (for example
    /// [`LATE_DATA`] of a window). Unknown tags are an error when the job is built.
    pub fn side_output(&self, tag: &str) -> Stream {
        let node = self.graph.borrow_mut().add_side_output(self.node, tag);
        Stream {
            graph: self.graph.clone(),
            node,
            time_column: None,
        }
    }

    /// The records a window dropped as too late (beyond its allowed lateness), unchanged.
    pub fn late_data(&self) -> Stream {
        self.side_output(LATE_DATA)
    }

    /// Adds a custom operator. Event time stays the same column: an operator that drops it
    /// must be followed by [`Stream::with_watermarks`] before windows.
    pub fn process(self, factory: impl OperatorFactory + 'static) -> Stream {
        let t = self.time_column.clone();
        self.then(factory, t)
    }

    /// Redistributes batches round robin over the downstream subtasks.
    pub fn rebalance(self) -> Stream {
        let node = self
            .graph
            .borrow_mut()
            .add_exchange(self.node, Partitioning::RoundRobin);
        Stream { node, ..self }
    }

    /// Sends every batch to every downstream subtask (for a small stream that each
    /// subtask needs whole, such as rules or a dimension table; Flink's `broadcast`).
    pub fn broadcast(self) -> Stream {
        let node = self
            .graph
            .borrow_mut()
            .add_exchange(self.node, Partitioning::Broadcast);
        Stream { node, ..self }
    }

    /// Partitions the stream by key: all rows of a key go to the same subtask.
    pub fn key_by(self, keys: &[&str]) -> KeyedStream {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let node = self
            .graph
            .borrow_mut()
            .add_exchange(self.node, Partitioning::Hash(keys.clone()));
        KeyedStream {
            stream: Stream { node, ..self },
            keys,
        }
    }

    /// Writes the stream to `sink`.
    pub fn sink(self, sink: impl SinkFactory + 'static) {
        self.graph.borrow_mut().add_sink(self.node, Arc::new(sink));
    }

    /// Collects the stream in memory; read it after the job ran.
    pub fn collect(self) -> Collected {
        let (sink, collected) = CollectSink::new();
        self.sink(sink);
        collected
    }
}

/// A stream partitioned by key, from [`Stream::key_by`].
#[derive(Clone, Debug)]
pub struct KeyedStream {
    stream: Stream,
    keys: Vec<String>,
}

impl KeyedStream {
    /// The key columns.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Groups the stream into windows per key: event-time [`TumblingWindow`],
    /// [`SlidingWindow`] or [`SessionWindow`], [`CountWindow`], or a [`GlobalWindow`]
    /// with a trigger (allowed lateness applies to tumbling and sliding windows).
    pub fn window(self, window: impl Into<Windows>) -> WindowedStream {
        WindowedStream {
            keyed: self,
            window: window.into(),
            allowed_lateness: Duration::ZERO,
            early_firing: None,
        }
    }

    /// The partitioned stream, to continue with unkeyed operations.
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// Writes the partitioned stream to `sink`.
    pub fn sink(self, sink: impl SinkFactory + 'static) {
        self.stream.sink(sink);
    }

    /// Collects the partitioned stream in memory.
    pub fn collect(self) -> Collected {
        self.stream.collect()
    }

    /// Adds a custom keyed operator: each subtask sees every row of the keys it owns.
    pub fn process(self, factory: impl OperatorFactory + 'static) -> Stream {
        self.stream.process(factory)
    }

    /// Runs a [`KeyedProcessFunction`] per record, with keyed state in the job's backend
    /// and per-key timers; `make` builds one instance per subtask, and `output` is the
    /// schema of the rows it writes.
    pub fn process_fn<F: KeyedProcessFunction + 'static>(
        self,
        name: &str,
        output: SchemaRef,
        make: impl Fn() -> F + Send + Sync + 'static,
    ) -> Stream {
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        // Event time stays the same column if the output has it.
        let t = self
            .stream
            .time_column
            .clone()
            .filter(|c| output.index_of(c).is_ok());
        let factory = KeyedProcessFactory::new(name, &keys, output, make);
        self.stream.then(factory, t)
    }
}

impl KeyedStream {
    /// Joins this stream (the left input) with `other` (the right input) where their key
    /// columns are equal (pairwise, of the same types); then say how with
    /// [`JoinedStreams::interval`] or [`JoinedStreams::window`]. Both streams must come
    /// from the same [`StreamEnv`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::StreamEnv;
    /// use sabot::operators::VecSource;
    /// use sabot_test_kit::int64_batch;
    ///
    /// let env = StreamEnv::new();
    /// let bids = int64_batch(&[("auction", vec![1, 2, 1]), ("price", vec![5, 6, 7]), ("ts", vec![10, 20, 90])]);
    /// let auctions = int64_batch(&[("auction", vec![1, 2]), ("opened", vec![0, 15])]);
    /// let bids = env.source(VecSource::new(bids.schema(), vec![bids]))
    ///     .with_watermarks("ts", Duration::ZERO).key_by(&["auction"]);
    /// let auctions = env.source(VecSource::new(auctions.schema(), vec![auctions]))
    ///     .with_watermarks("opened", Duration::ZERO).key_by(&["auction"]);
    /// // Bids placed within 50 ms after their auction opened.
    /// let early = bids.join(auctions).interval(-50, 0).collect();
    /// env.execute().unwrap();
    /// assert_eq!(early.num_rows(), 2); // the bids at 10 and 20; not the one at 90
    /// ```
    pub fn join(self, other: KeyedStream) -> JoinedStreams {
        assert!(
            Rc::ptr_eq(&self.stream.graph, &other.stream.graph),
            "KeyedStream::join: both streams must come from the same StreamEnv"
        );
        JoinedStreams {
            left: self,
            right: other,
            join_type: JoinType::Inner,
            unique: [false; 2],
        }
    }
}

/// Two keyed streams to join, from [`KeyedStream::join`].
#[derive(Clone, Debug)]
pub struct JoinedStreams {
    left: KeyedStream,
    right: KeyedStream,
    join_type: JoinType,
    unique: [bool; 2],
}

impl JoinedStreams {
    /// A left outer join: left rows that match nothing are emitted too, with nulls in the
    /// right columns, once no partner can arrive any more (default: inner join).
    pub fn left_outer(mut self) -> Self {
        self.join_type = JoinType::LeftOuter;
        self
    }

    /// Declares the left input's key unique: each key comes at most once, as a primary
    /// key does. Right rows whose key's left row is held then join it and are not kept
    /// in state (no other partner can come): for the many side of a one-to-many join,
    /// such as bids on their auction. A second left row with the key of one still held
    /// fails the job, naming it. Interval, window and regular joins.
    pub fn left_key_unique(mut self) -> Self {
        self.unique[0] = true;
        self
    }

    /// Declares the right input's key unique (see [`Self::left_key_unique`]): left rows
    /// whose key's right row is held are not kept (an inner join's; a left outer join
    /// keeps its left rows).
    pub fn right_key_unique(mut self) -> Self {
        self.unique[1] = true;
        self
    }

    fn add(self, factory: impl TwoInputOperatorFactory + 'static) -> Stream {
        let time_column = self.left.stream.time_column.clone();
        let graph = self.left.stream.graph.clone();
        let node = graph.borrow_mut().add_two_input(
            self.left.stream.node,
            self.right.stream.node,
            Arc::new(factory),
        );
        Stream {
            graph,
            node,
            time_column,
        }
    }

    fn key_refs(keys: &[String]) -> Vec<&str> {
        keys.iter().map(String::as_str).collect()
    }

    /// An interval join on event time: a right row joins a left row of the same key when
    /// `right.ts` is in `[left.ts + lower_ms, left.ts + upper_ms]` (Flink's
    /// `intervalJoin(..).between(lower, upper)`). Output: the left columns, then the
    /// right ones (see [`JoinFactory`](sabot_operators::JoinFactory)); event time
    /// stays the left input's.
    pub fn interval(self, lower_ms: i64, upper_ms: i64) -> Stream {
        let factory = JoinFactory::interval_ms(
            &Self::key_refs(&self.left.keys),
            &Self::key_refs(&self.right.keys),
            "",
            "",
            lower_ms,
            upper_ms,
        )
        .with_time_columns(
            self.left.stream.time_column(),
            self.right.stream.time_column(),
        )
        .with_join_type(self.join_type)
        .with_unique_keys(self.unique[0], self.unique[1]);
        self.add(factory)
    }

    /// A regular join: every pair of rows of equal key, whatever their times, each side
    /// kept in state for `ttl` of processing time after it arrived (`None`: for ever,
    /// for inputs over a bounded key space). A left outer regular join is a changelog:
    /// an `op` column says `+I` or `-D` (a left row emitted with nulls is retracted when
    /// its first partner comes).
    pub fn regular(self, ttl: Option<Duration>) -> Stream {
        let mut factory = JoinFactory::regular(
            &Self::key_refs(&self.left.keys),
            &Self::key_refs(&self.right.keys),
        )
        .with_join_type(self.join_type)
        .with_unique_keys(self.unique[0], self.unique[1]);
        if let Some(ttl) = ttl {
            factory = factory.with_ttl(ttl, false);
        }
        self.add(factory)
    }

    /// [`JoinedStreams::regular`] with each row kept until the watermark passes its
    /// event time plus `ttl` (deterministic, unlike a processing-time TTL).
    pub fn regular_with_event_time_ttl(self, ttl: Duration) -> Stream {
        let factory = JoinFactory::regular(
            &Self::key_refs(&self.left.keys),
            &Self::key_refs(&self.right.keys),
        )
        .with_ttl(ttl, true)
        .with_time_columns(
            self.left.stream.time_column(),
            self.right.stream.time_column(),
        )
        .with_join_type(self.join_type)
        .with_unique_keys(self.unique[0], self.unique[1]);
        self.add(factory)
    }

    /// A lookup join in processing time: the right input is a table's changelog (each
    /// row upserts its key's version, or deletes it where `op_column` says `-D` or
    /// `-U`), and each left row joins its key's current version when it arrives.
    pub fn lookup(self, op_column: Option<&str>) -> Stream {
        let mut factory = LookupJoinFactory::new(
            &Self::key_refs(&self.left.keys),
            &Self::key_refs(&self.right.keys),
        )
        .with_join_type(self.join_type);
        if let Some(op) = op_column {
            factory = factory.with_op_column(op);
        }
        self.add(factory)
    }

    /// A lookup join in event time (Flink's temporal table join): each left row joins
    /// its key's version current at the left row's event time (the right input's event
    /// time is the version time), once the watermark has passed it.
    pub fn temporal(self, op_column: Option<&str>) -> Stream {
        let mut factory = LookupJoinFactory::new(
            &Self::key_refs(&self.left.keys),
            &Self::key_refs(&self.right.keys),
        )
        .event_time(
            self.left.stream.time_column(),
            self.right.stream.time_column(),
        )
        .with_join_type(self.join_type);
        if let Some(op) = op_column {
            factory = factory.with_op_column(op);
        }
        self.add(factory)
    }

    /// A window join: rows of the same key in the same tumbling event-time window join;
    /// the output adds the window's `window_start` and `window_end`.
    pub fn window(self, window: TumblingWindow) -> Stream {
        let factory = JoinFactory::window(
            &Self::key_refs(&self.left.keys),
            &Self::key_refs(&self.right.keys),
            "",
            "",
            window.size,
        )
        .with_time_columns(
            self.left.stream.time_column(),
            self.right.stream.time_column(),
        )
        .with_join_type(self.join_type)
        .with_unique_keys(self.unique[0], self.unique[1]);
        self.add(factory)
    }
}

/// Tumbling (fixed, non-overlapping) event-time windows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TumblingWindow {
    size: Duration,
}

impl TumblingWindow {
    /// Windows of `size`, aligned to the epoch.
    pub fn of(size: Duration) -> Self {
        TumblingWindow { size }
    }
}

/// Sliding event-time windows: a window of `size` every `slide` (which must divide
/// `size`), aligned to the epoch. Each record is aggregated once, into its pane of
/// length `slide`; a window combines its `size / slide` panes when it fires.
///
/// ```
/// use std::time::Duration;
/// use sabot::{Aggregate, SlidingWindow, StreamEnv};
/// use sabot::operators::VecSource;
/// use sabot_test_kit::{keyed_batches, keyed_schema};
///
/// let env = StreamEnv::new();
/// let per_minute_every_10s = env
///     .source(VecSource::new(keyed_schema(), keyed_batches(1, 1_000, 100, 3, 100, 0)))
///     .with_watermarks("ts", Duration::ZERO)
///     .key_by(&["key"])
///     .window(SlidingWindow::of(Duration::from_secs(60), Duration::from_secs(10)))
///     .aggregate([Aggregate::count()])
///     .collect();
/// env.execute().unwrap();
/// let rows: usize = per_minute_every_10s.batches().iter().map(|b| b.num_rows()).sum();
/// // 100 s of events, 3 keys, one window every 10 s covering each instant 6 times.
/// assert!(rows > 3 * 10);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindow {
    size: Duration,
    slide: Duration,
}

impl SlidingWindow {
    /// Windows of `size` starting every `slide`.
    pub fn of(size: Duration, slide: Duration) -> Self {
        SlidingWindow { size, slide }
    }
}

/// Count windows: every `size` records of a key, in arrival order, make one window
/// (Flink's `countWindow`). Output: the key columns, `window_index` (0, 1, ... per key)
/// and the aggregates; a key's unfinished window is not emitted at the end of input.
#[derive(Clone, Copy, Debug)]
pub struct CountWindow {
    size: u64,
}

impl CountWindow {
    /// Windows of `size` records per key.
    pub fn of(size: u64) -> Self {
        CountWindow { size }
    }
}

/// Session windows: a key's records less than `gap` apart (in event time) form one
/// window, which closes `gap` after its last record; sessions merge as records bridge
/// them, across batches and watermarks.
///
/// ```
/// use std::time::Duration;
/// use sabot::{Aggregate, SessionWindow, StreamEnv};
/// use sabot::operators::VecSource;
/// use sabot_test_kit::int64_batch;
///
/// let env = StreamEnv::new();
/// let clicks = int64_batch(&[("user", vec![1, 1, 1, 2]), ("ts", vec![0, 20, 100, 5])]);
/// let sessions = env
///     .source(VecSource::new(clicks.schema(), vec![clicks]))
///     .with_watermarks("ts", Duration::ZERO)
///     .key_by(&["user"])
///     .window(SessionWindow::with_gap(Duration::from_millis(30)))
///     .aggregate([Aggregate::count()])
///     .collect();
/// env.execute().unwrap();
/// assert_eq!(sessions.num_rows(), 3); // user 1: [0, 50) and [100, 130); user 2: [5, 35)
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SessionWindow {
    gap: Duration,
}

impl SessionWindow {
    /// Sessions that close after `gap` without records.
    pub fn with_gap(gap: Duration) -> Self {
        SessionWindow { gap }
    }
}

impl From<SessionWindow> for Windows {
    fn from(w: SessionWindow) -> Self {
        Windows::Session(w)
    }
}

/// A global window per key, emitted by a [`Trigger`]: every `n` records, or
/// periodically in event or processing time (Flink's `GlobalWindows` with a trigger).
///
/// ```
/// use std::time::Duration;
/// use sabot::{Aggregate, GlobalWindow, StreamEnv, Trigger};
/// use sabot::operators::VecSource;
/// use sabot_test_kit::int64_batch;
///
/// let env = StreamEnv::new();
/// let events = int64_batch(&[("user", vec![1, 1, 1, 1, 2]), ("amount", vec![1, 2, 3, 4, 5])]);
/// let every_two = env
///     .source(VecSource::new(events.schema(), vec![events]))
///     .key_by(&["user"])
///     .window(GlobalWindow::with_trigger(Trigger::Count(2)))
///     .aggregate([Aggregate::sum("amount")])
///     .collect();
/// env.execute().unwrap();
/// assert_eq!(every_two.num_rows(), 2); // user 1 after 2 and after 4 records
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GlobalWindow {
    trigger: Trigger,
    purge: bool,
}

impl GlobalWindow {
    /// A global window per key, firing on `trigger`, accumulating: each firing emits the
    /// aggregate over all of the key's records so far.
    pub fn with_trigger(trigger: Trigger) -> Self {
        GlobalWindow {
            trigger,
            purge: false,
        }
    }

    /// Each firing emits the aggregate since the key's previous firing, and clears it.
    pub fn purging(mut self) -> Self {
        self.purge = true;
        self
    }
}

impl From<GlobalWindow> for Windows {
    fn from(w: GlobalWindow) -> Self {
        Windows::Global(w)
    }
}

/// The window kinds [`KeyedStream::window`] takes.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Windows {
    /// Fixed, non-overlapping windows.
    Tumbling(TumblingWindow),
    /// Overlapping windows, one every slide.
    Sliding(SlidingWindow),
    /// Windows of a number of records.
    Count(CountWindow),
    /// Windows of activity separated by gaps.
    Session(SessionWindow),
    /// One window per key, emitted by a trigger.
    Global(GlobalWindow),
}

impl From<CountWindow> for Windows {
    fn from(w: CountWindow) -> Self {
        Windows::Count(w)
    }
}

impl From<TumblingWindow> for Windows {
    fn from(w: TumblingWindow) -> Self {
        Windows::Tumbling(w)
    }
}

impl From<SlidingWindow> for Windows {
    fn from(w: SlidingWindow) -> Self {
        Windows::Sliding(w)
    }
}

/// A keyed stream grouped into windows, from [`KeyedStream::window`].
#[derive(Clone, Debug)]
pub struct WindowedStream {
    keyed: KeyedStream,
    window: Windows,
    allowed_lateness: Duration,
    early_firing: Option<Duration>,
}

impl WindowedStream {
    /// Keeps windows open for `lateness` after they fire: late records update them and
    /// the updated rows are emitted again. Later records go to
    /// [`Stream::late_data`].
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness;
        self
    }

    /// Tumbling and sliding windows: every `interval` of processing time, each window
    /// that has not closed yet emits its current results for the keys updated since
    /// (Flink SQL's early fire); the final results come when it closes. Other windows
    /// reject it when the job is built.
    pub fn early_firing(mut self, interval: Duration) -> Self {
        self.early_firing = Some(interval);
        self
    }

    /// One row per key and window when the window closes: the key columns,
    /// `window_start`, `window_end` and one column per aggregate.
    pub fn aggregate(self, aggregates: impl IntoIterator<Item = Aggregate>) -> Stream {
        let KeyedStream { stream, keys } = self.keyed;
        let (size, slide) = match self.window {
            Windows::Tumbling(w) => (w.size, None),
            Windows::Sliding(w) => (w.size, Some(w.slide)),
            Windows::Global(w) => {
                let mut factory =
                    GlobalWindowFactory::new(keys, w.trigger, aggregates.into_iter().collect())
                        .with_time_column(stream.time_column.clone());
                if self.early_firing.is_some() {
                    factory = factory.with_early_firing();
                }
                if w.purge {
                    factory = factory.purging();
                }
                return stream.then(factory, None);
            }
            Windows::Session(w) => {
                let factory = SessionWindowFactory::new(
                    keys,
                    stream.time_column.clone(),
                    w.gap,
                    aggregates.into_iter().collect(),
                )
                .with_allowed_lateness(self.allowed_lateness);
                let factory = if self.early_firing.is_some() {
                    factory.with_early_firing()
                } else {
                    factory
                };
                return stream.then(factory, None);
            }
            Windows::Count(w) => {
                let mut factory =
                    CountWindowFactory::new(keys, w.size, aggregates.into_iter().collect());
                if self.early_firing.is_some() {
                    factory = factory.with_early_firing();
                }
                return stream.then(factory, None);
            }
        };
        let aggregates = aggregates.into_iter().collect();
        let time = stream.time_column.clone();
        match slide {
            None => {
                let mut factory = TumblingWindowFactory::new(keys, time, size, aggregates)
                    .with_allowed_lateness(self.allowed_lateness);
                if let Some(interval) = self.early_firing {
                    factory = factory.with_early_firing(interval);
                }
                stream.then(factory, None)
            }
            Some(slide) => {
                let mut factory = SlidingWindowFactory::new(keys, time, size, slide, aggregates)
                    .with_allowed_lateness(self.allowed_lateness);
                if let Some(interval) = self.early_firing {
                    factory = factory.with_early_firing(interval);
                }
                stream.then(factory, None)
            }
        }
    }
}
