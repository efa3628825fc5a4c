//! The operator, source and sink contracts.

use std::fmt::Debug;
use std::sync::Arc;

use sabot_checkpoint::storage::{SnapshotSource, SnapshotTarget};
use sabot_core::metrics::Metrics;
use sabot_core::{BadRecordPolicy, KeyGroupRange, Message, RecordBatch, SchemaRef, Timestamp};
use sabot_state::{StateBackend, StateConfig};
use sabot_time::{Clock, SystemClock};

use crate::OperatorError;
use crate::Result;

/// Where a subtask runs: its index, the parallelism of its operator, and the job's metrics.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TaskContext {
    /// This subtask's index, `0..parallelism`.
    pub subtask: usize,
    /// How many subtasks the operator has.
    pub parallelism: usize,
    /// The number of key groups.
    pub max_parallelism: usize,
    /// The job's counters.
    pub metrics: Metrics,
    /// Processing time.
    pub clock: Arc<dyn Clock>,
    /// What to do with records that cannot be processed.
    pub bad_records: BadRecordPolicy,
    /// Where stateful operators keep their state.
    pub state: StateConfig,
    /// The job's checkpoint folder, when it takes checkpoints (transactional sinks look
    /// there for completed checkpoints).
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// The checkpoint this run continued from.
    pub restored_from: Option<sabot_core::CheckpointId>,
}

impl TaskContext {
    /// A context for subtask `subtask` of `parallelism`.
    pub fn new(
        subtask: usize,
        parallelism: usize,
        max_parallelism: usize,
        metrics: Metrics,
    ) -> Self {
        TaskContext {
            subtask,
            parallelism,
            max_parallelism,
            metrics,
            clock: Arc::new(SystemClock),
            bad_records: BadRecordPolicy::Fail,
            state: StateConfig::memory(),
            checkpoint_dir: None,
            restored_from: None,
        }
    }

    /// This context in a job that checkpoints into `dir`, continuing from `restored`.
    pub fn with_checkpoints(
        mut self,
        dir: impl Into<std::path::PathBuf>,
        restored: Option<sabot_core::CheckpointId>,
    ) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self.restored_from = restored;
        self
    }

    /// This context with state kept as `state` says.
    pub fn with_state(mut self, state: StateConfig) -> Self {
        self.state = state;
        self
    }

    /// The key groups this subtask owns (those an exchange sends it).
    pub fn key_groups(&self) -> KeyGroupRange {
        KeyGroupRange::for_subtask(self.max_parallelism, self.parallelism, self.subtask)
    }

    /// Opens this subtask's state backend for `operator` (a name for its files), holding
    /// [`key_groups`](Self::key_groups).
    pub fn open_state(&self, operator: &str) -> Result<Box<dyn StateBackend>> {
        Ok(self.state.open(
            operator,
            self.subtask,
            self.max_parallelism,
            self.key_groups(),
        )?)
    }

    /// This context with processing time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// This context with bad-record policy `policy`.
    pub fn with_bad_records(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }
}

/// What an operator emits while handling one input message: messages on its main
/// output, and batches on named side outputs (such as late data).
#[derive(Debug, Default)]
pub struct Output {
    messages: Vec<Message>,
    side: Vec<(&'static str, RecordBatch)>,
}

impl Output {
    /// An empty output buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits a batch; empty batches are dropped.
    pub fn batch(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.messages.push(Message::Data(batch));
        }
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, wm: Timestamp) {
        self.messages.push(Message::Watermark(wm));
    }

    /// Emits any message.
    pub fn message(&mut self, msg: Message) {
        self.messages.push(msg);
    }

    /// Emits a batch on the side output `tag` (declared by the operator's factory in
    /// [`OperatorFactory::side_outputs`]); empty batches are dropped.
    pub fn side(&mut self, tag: &'static str, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.side.push((tag, batch));
        }
    }

    /// Takes everything emitted on the main output so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Message> {
        self.messages.drain(..)
    }

    /// Takes everything emitted on side outputs so far.
    pub fn drain_side(&mut self) -> std::vec::Drain<'_, (&'static str, RecordBatch)> {
        self.side.drain(..)
    }

    /// Whether nothing was emitted on any output.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.side.is_empty()
    }
}

/// A running operator instance: one per subtask.
///
/// The runtime calls it with one message at a time; everything it emits goes into `out`.
pub trait Operator: Send {
    /// Handles a batch of records.
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()>;

    /// Handles a batch from input `input` of a two-input operator (0: the first input,
    /// 1: the second; see [`TwoInputOperatorFactory`]). The default handles it as
    /// [`Operator::on_batch`], which is all a one-input operator ever gets.
    fn on_batch_from(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let _ = input;
        self.on_batch(batch, out)
    }

    /// Handles a watermark: fire what it completes, then pass it on (the default).
    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        out.watermark(wm);
        Ok(())
    }

    /// The input ended: emit what is left.
    fn on_end(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Processing time moved to `now_ms` (called periodically, also while no data flows):
    /// processing-time work such as idleness detection or timers.
    fn on_tick(&mut self, _now_ms: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// A checkpoint barrier passed: writes everything the operator needs to continue
    /// from this point into `target`, a snapshot of its own (files written whole and
    /// staged folders; the caller makes them durable and records them). Stateless
    /// operators write nothing (the default).
    fn snapshot(&mut self, _target: &SnapshotTarget) -> Result<()> {
        Ok(())
    }

    /// [`Operator::snapshot`] in two phases, as Flink's asynchronous snapshots: what must
    /// see the state as of the barrier runs now (cheap where the backend shares its state
    /// copy-on-write), and the returned [`SnapshotWrite`] writes the files on another
    /// thread while the operator goes on processing. `None`: everything is written
    /// already. The default runs [`Operator::snapshot`].
    fn snapshot_async(&mut self, target: &SnapshotTarget) -> Result<Option<SnapshotWrite>> {
        self.snapshot(target).map(|()| None)
    }

    /// Continues from snapshots written by [`Operator::snapshot`]: one per subtask
    /// snapshot that holds key groups of this subtask (one when the parallelism is
    /// unchanged, several after a rescale; each operator keeps the key groups of its own
    /// range). Called once, right after creation, before any input.
    fn restore(&mut self, _from: &[SnapshotSource]) -> Result<()> {
        Ok(())
    }
}

/// The deferred part of an operator's snapshot ([`Operator::snapshot_async`]): `Send`, so
/// the runtime runs it on a snapshot thread.
pub struct SnapshotWrite(Box<dyn FnOnce() -> Result<()> + Send>);

impl SnapshotWrite {
    /// Work that writes the rest of a snapshot.
    pub fn new(write: impl FnOnce() -> Result<()> + Send + 'static) -> Self {
        SnapshotWrite(Box::new(write))
    }

    /// Writes it.
    pub fn run(self) -> Result<()> {
        (self.0)()
    }

    /// Writes what [`Operator::snapshot_async`] left to write, if anything: how an
    /// operator that snapshots in two phases implements [`Operator::snapshot`].
    pub fn finish(write: Option<SnapshotWrite>) -> Result<()> {
        write.map_or(Ok(()), SnapshotWrite::run)
    }
}

impl Debug for SnapshotWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotWrite")
    }
}

/// Describes an operator in a job graph and creates its instances.
pub trait OperatorFactory: Send + Sync + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> String;

    /// The schema of the output for input schema `input`, validating the operator's
    /// settings against it (missing columns, wrong types) when the job is built.
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef>;

    /// Creates the instance for one subtask.
    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>>;

    /// The side outputs the operator may emit on, with their schemas (default: none).
    fn side_outputs(&self, _input: &SchemaRef) -> Result<Vec<(&'static str, SchemaRef)>> {
        Ok(Vec::new())
    }
}

/// Describes an operator with two inputs (a join) and creates its instances.
///
/// Its instances are [`Operator`]s that get their batches through
/// [`Operator::on_batch_from`] with the input's index, and one watermark: the smaller of
/// the two inputs' (as in Flink's two-input operators). Both inputs must be partitioned
/// the same way (both `key_by` on key columns of the same types), so that equal keys
/// meet in the same subtask.
pub trait TwoInputOperatorFactory: Send + Sync + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> String;

    /// The schema of the output for input schemas `left` and `right`, validating the
    /// operator's settings against them when the job is built.
    fn output_schema(&self, left: &SchemaRef, right: &SchemaRef) -> Result<SchemaRef>;

    /// The key columns each input must be partitioned by (`key_by`), in order, or
    /// `None` if the operator does not need co-partitioned inputs.
    fn partition_keys(&self) -> Option<(Vec<String>, Vec<String>)>;

    /// Creates the instance for one subtask.
    fn create(
        &self,
        left: &SchemaRef,
        right: &SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Box<dyn Operator>>;
}

/// What a source has to say when asked for more.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourcePoll {
    /// A batch of records.
    Batch(RecordBatch),
    /// Nothing now; ask again later. The source must not hold back watermarks meanwhile.
    Idle,
    /// Nothing more, ever.
    End,
    /// Event time in this source subtask reached the timestamp: a source that tracks event
    /// time itself (per Kafka partition, say) emits its combined watermark.
    Watermark(Timestamp),
    /// The subtask has nothing to read for a while (a source subtask without partitions,
    /// or whose partitions are all idle): downstream watermarks advance without it until
    /// it sends data or a watermark again.
    MarkIdle,
}

/// A running source instance: one per source subtask.
pub trait Source: Send {
    /// The next batch, an idle marker, or the end.
    fn poll_next(&mut self) -> Result<SourcePoll>;

    /// Checkpoint barrier `id` is about to be taken, right before [`Source::position`]:
    /// a source with side effects tied to checkpoints stages them under `id` here.
    /// Default: nothing.
    fn on_barrier(&mut self, _id: sabot_core::CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Where the source stands, for a checkpoint: bytes that [`Source::restore`]
    /// understands, taken between two batches. `None` (the default): the source cannot
    /// resume, and a checkpointed job fails instead of losing or repeating records.
    fn position(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Continues from the positions [`Source::position`] returned for a checkpoint: one
    /// per source subtask of the run that took it, maybe at another parallelism (each
    /// new subtask gets all of them and takes its share of what is left). Called once,
    /// before the first [`Source::poll_next`].
    fn restore(&mut self, _positions: &[Vec<u8>]) -> Result<()> {
        Err(OperatorError::InvalidPlan {
            operator: "source".into(),
            reason: "this source cannot resume from a checkpoint".into(),
        })
    }

    /// Checkpoint `id` completed (its manifest is published): a source that keeps side
    /// effects for checkpoints (a dead-letter transaction, offsets committed back to a
    /// consumer group) makes them final here. Skipped notifications are implied by later
    /// ones. Default: nothing.
    fn notify_checkpoint_complete(&mut self, _id: sabot_core::CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Describes a source and creates its per-subtask instances.
pub trait SourceFactory: Send + Sync + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> String;
    /// The schema of every batch the source emits.
    fn schema(&self) -> SchemaRef;
    /// Creates the instance for one subtask; it reads its share of the input.
    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Source>>;
    /// The event-time column, if the source emits watermarks itself
    /// ([`SourcePoll::Watermark`]); default: none (declare event time on the stream).
    fn time_column(&self) -> Option<String> {
        None
    }
}

/// A running sink instance: one per sink subtask.
pub trait Sink: Send {
    /// Writes a batch.
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// Observes a watermark (default: ignore).
    fn on_watermark(&mut self, _wm: Timestamp) -> Result<()> {
        Ok(())
    }
    /// The input ended; flush. In a checkpointed job the final checkpoint's barrier
    /// came just before (nothing is written after it), and its completion is announced
    /// afterwards with [`Sink::notify_checkpoint_complete`].
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// A checkpoint barrier reached the sink: everything written before it belongs to
    /// checkpoint `id` (a transactional sink pre-commits it here). Default: nothing.
    fn on_checkpoint(&mut self, _id: sabot_core::CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `id` completed (every task took its part and its manifest is
    /// published): a transactional sink commits what it pre-committed for checkpoints up
    /// to `id`. Called on the sink's own thread, soon after the completion; a
    /// notification may be skipped when a newer one comes first (so commit everything
    /// `<= id`). Default: nothing.
    fn notify_checkpoint_complete(&mut self, _id: sabot_core::CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Describes a sink and creates its per-subtask instances.
pub trait SinkFactory: Send + Sync + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> String;
    /// Checks that the sink accepts `input` (default: anything).
    fn check_schema(&self, _input: &SchemaRef) -> Result<()> {
        Ok(())
    }
    /// Creates the instance for one subtask.
    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Sink>>;
}
