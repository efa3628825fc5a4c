//! Keyed process functions: user code called per record with the record's keyed state
//! and timers, as Flink's `KeyedProcessFunction`.

use std::fmt;
use std::sync::Arc;

use sabot_core::arrow::array::ArrayRef;
use sabot_core::arrow::array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, make_builder,
};
use sabot_core::key::{KeyGroup, check_key_field};
use sabot_core::{RecordBatch, SchemaRef, Timestamp, column_index};
use sabot_state::{KeyedState, StateBackend};
use sabot_time::{Clock, TimeDomain, TimerService};

use crate::keys::KeyColumns;
use crate::{Operator, OperatorError, OperatorFactory, Output, Result, SnapshotWrite, TaskContext};

/// The keyed state a process function reads and writes, in the job's backend.
pub type ProcessState = KeyedState<Box<dyn StateBackend>>;

/// Timers of a process function: per (key group, key bytes); no namespace.
type Timers = TimerService<(KeyGroup, Vec<u8>), ()>;

/// What a process function sees while it handles a record or a timer: the current key,
/// its state, its timers, and the time.
pub struct KeyedContext<'a> {
    state: &'a mut ProcessState,
    timers: &'a mut Timers,
    kg: KeyGroup,
    key: &'a [u8],
    watermark: Timestamp,
    now: Timestamp,
}

impl fmt::Debug for KeyedContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedContext")
            .field("key_group", &self.kg)
            .field("key", &self.key)
            .field("watermark", &self.watermark)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl KeyedContext<'_> {
    /// The keyed state, with the current key set: state handles registered in
    /// [`KeyedProcessFunction::open`] read and write this key's values.
    pub fn state(&mut self) -> &mut ProcessState {
        self.state
    }

    /// The current key in its stored form: 8 bytes little-endian for a single `Int64`
    /// key column, else Arrow's row format of the key columns.
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// The current key as an integer, for a single `Int64` key column.
    pub fn key_i64(&self) -> Option<i64> {
        <[u8; 8]>::try_from(self.key).ok().map(i64::from_le_bytes)
    }

    /// The current key's key group.
    pub fn key_group(&self) -> KeyGroup {
        self.kg
    }

    /// The operator's current watermark (event time).
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// Calls [`KeyedProcessFunction::on_timer`] for this key when the watermark reaches
    /// `at` (once per key and time, however often registered).
    pub fn register_event_time_timer(&mut self, at: Timestamp) {
        self.timers
            .register_event_time_timer((self.kg, self.key.to_vec()), (), at);
    }

    /// Deletes this key's event-time timer at `at`, if any.
    pub fn delete_event_time_timer(&mut self, at: Timestamp) {
        self.timers
            .delete_event_time_timer((self.kg, self.key.to_vec()), (), at);
    }

    /// Calls [`KeyedProcessFunction::on_timer`] for this key when processing time reaches
    /// `at`.
    pub fn register_processing_time_timer(&mut self, at: Timestamp) {
        self.timers
            .register_processing_time_timer((self.kg, self.key.to_vec()), (), at);
    }

    /// Deletes this key's processing-time timer at `at`, if any.
    pub fn delete_processing_time_timer(&mut self, at: Timestamp) {
        self.timers
            .delete_processing_time_timer((self.kg, self.key.to_vec()), (), at);
    }
}

/// User logic over a keyed stream, one record at a time, with keyed state and timers.
///
/// Each subtask gets its own instance (from the factory's constructor); [`open`] runs
/// once, before any record, to register states. Records arrive with the context set to
/// their key; timers fire in time order with the context set to the key that registered
/// them. Event-time timers fire as the watermark passes them, and all of them at end of
/// input; processing-time timers fire on the job's clock.
///
/// [`open`]: KeyedProcessFunction::open
pub trait KeyedProcessFunction: Send {
    /// Registers the function's states (keep the handles in `self`).
    fn open(&mut self, state: &mut ProcessState) -> Result<()>;

    /// Handles row `row` of `batch`; emits output rows through `out`.
    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()>;

    /// A timer of the context's key fired (its time is `at`).
    fn on_timer(
        &mut self,
        at: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> Result<()> {
        let _ = (at, domain, ctx, out);
        Ok(())
    }
}

/// Output rows of a process function, built column by column: append one value to every
/// column per row. Rows are sent on as a batch after each input batch or timer round.
pub struct RowWriter {
    operator: Arc<str>,
    schema: SchemaRef,
    builders: Vec<Box<dyn ArrayBuilder>>,
}

impl fmt::Debug for RowWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowWriter")
            .field("schema", &self.schema)
            .field("rows", &self.rows())
            .finish()
    }
}

impl RowWriter {
    fn new(operator: Arc<str>, schema: SchemaRef) -> Self {
        let builders = Self::builders(&schema);
        RowWriter {
            operator,
            schema,
            builders,
        }
    }

    fn builders(schema: &SchemaRef) -> Vec<Box<dyn ArrayBuilder>> {
        schema
            .fields()
            .iter()
            .map(|f| make_builder(f.data_type(), 1024))
            .collect()
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The index of output column `name`.
    pub fn index(&self, name: &str) -> Result<usize> {
        Ok(column_index(&self.schema, name)?)
    }

    /// Rows written so far (the length of the first column).
    pub fn rows(&self) -> usize {
        self.builders.first().map_or(0, |b| b.len())
    }

    /// The builder of column `i`, as Arrow builder type `B` (e.g. `Int64Builder` for an
    /// `Int64` column): for nulls, and types without a shortcut here.
    pub fn column<B: ArrayBuilder>(&mut self, i: usize) -> Result<&mut B> {
        let n = self.builders.len();
        let Some(b) = self.builders.get_mut(i) else {
            return Err(OperatorError::user(
                self.operator.as_ref(),
                format!("output column {i} does not exist: the output has {n} columns"),
            ));
        };
        b.as_any_mut().downcast_mut::<B>().ok_or_else(|| {
            let f = self.schema.field(i);
            OperatorError::user(
                self.operator.as_ref(),
                format!(
                    "output column {i} (`{}`) is {}, not written with a {}",
                    f.name(),
                    f.data_type(),
                    short_type_name(std::any::type_name::<B>()),
                ),
            )
        })
    }

    /// Appends an integer to `Int64` column `i`.
    pub fn append_i64(&mut self, i: usize, v: i64) -> Result<()> {
        self.column::<Int64Builder>(i)?.append_value(v);
        Ok(())
    }

    /// Appends a float to `Float64` column `i`.
    pub fn append_f64(&mut self, i: usize, v: f64) -> Result<()> {
        self.column::<Float64Builder>(i)?.append_value(v);
        Ok(())
    }

    /// Appends a string to `Utf8` column `i`.
    pub fn append_str(&mut self, i: usize, v: &str) -> Result<()> {
        self.column::<StringBuilder>(i)?.append_value(v);
        Ok(())
    }

    /// Appends a boolean to `Boolean` column `i`.
    pub fn append_bool(&mut self, i: usize, v: bool) -> Result<()> {
        self.column::<BooleanBuilder>(i)?.append_value(v);
        Ok(())
    }

    /// Sends the rows written so far as one batch.
    fn flush(&mut self, out: &mut Output) -> Result<()> {
        if self.builders.iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let lens: Vec<usize> = cols.iter().map(|c| c.len()).collect();
        if lens.windows(2).any(|w| w[0] != w[1]) {
            return Err(OperatorError::user(
                self.operator.as_ref(),
                format!(
                    "output columns have unequal lengths {lens:?}: append one value to every \
                     column per row"
                ),
            ));
        }
        out.batch(RecordBatch::try_new(self.schema.clone(), cols)?);
        Ok(())
    }
}

/// `a::b::Builder<c::T>` as `Builder<T>`.
fn short_type_name(full: &str) -> String {
    let mut out = String::new();
    let mut path = String::new();
    for c in full.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            path.push(c);
        } else {
            out.push_str(path.rsplit("::").next().unwrap_or_default());
            path.clear();
            out.push(c);
        }
    }
    out.pop();
    out
}

type MakeFn = dyn Fn() -> Box<dyn KeyedProcessFunction> + Send + Sync;

/// Runs a [`KeyedProcessFunction`] on a stream keyed by `keys`.
///
/// ```
/// use std::sync::Arc;
/// use sabot_core::Timestamp;
/// use sabot_core::arrow::datatypes::{DataType, Field, Schema};
/// use sabot_core::RecordBatch;
/// use sabot_operators::{KeyedContext, KeyedProcessFactory, KeyedProcessFunction, ProcessState,
///     Result, RowWriter};
/// use sabot_state::{StateDescriptor, ValueState};
///
/// /// Emits each key's running count.
/// struct RunningCount { count: Option<ValueState<u64>> }
///
/// impl KeyedProcessFunction for RunningCount {
///     fn open(&mut self, state: &mut ProcessState) -> Result<()> {
///         self.count = Some(state.value_state(StateDescriptor::new("count"))?);
///         Ok(())
///     }
///     fn process_element(&mut self, _b: &RecordBatch, _row: usize,
///                        ctx: &mut KeyedContext<'_>, out: &mut RowWriter) -> Result<()> {
///         let count = self.count.as_ref().expect("opened");
///         let n = count.get(ctx.state())?.unwrap_or(0) + 1;
///         count.update(ctx.state(), &n)?;
///         out.append_i64(0, ctx.key_i64().unwrap_or_default())?;
///         out.append_i64(1, n as i64)?;
///         Ok(())
///     }
/// }
///
/// let output = Arc::new(Schema::new(vec![
///     Field::new("key", DataType::Int64, false),
///     Field::new("count", DataType::Int64, false),
/// ]));
/// let f = KeyedProcessFactory::new("running_count", &["key"], output,
///     || RunningCount { count: None });
/// ```
#[derive(Clone)]
pub struct KeyedProcessFactory {
    name: String,
    keys: Vec<String>,
    output: SchemaRef,
    make: Arc<MakeFn>,
}

impl fmt::Debug for KeyedProcessFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedProcessFactory")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl KeyedProcessFactory {
    /// A process function called `name` over a stream keyed by `keys`, emitting rows of
    /// schema `output`; `make` builds one function per subtask.
    pub fn new<F: KeyedProcessFunction + 'static>(
        name: impl Into<String>,
        keys: &[&str],
        output: SchemaRef,
        make: impl Fn() -> F + Send + Sync + 'static,
    ) -> Self {
        KeyedProcessFactory {
            name: name.into(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            output,
            make: Arc::new(move || Box::new(make())),
        }
    }

    fn key_columns(&self, input: &SchemaRef) -> Result<Vec<usize>> {
        if self.keys.is_empty() {
            return Err(OperatorError::InvalidPlan {
                operator: self.name(),
                reason: "a keyed process function needs at least one key column".into(),
            });
        }
        self.keys
            .iter()
            .map(|k| {
                let i = column_index(input, k)?;
                check_key_field(input.field(i))?;
                Ok(i)
            })
            .collect()
    }
}

impl OperatorFactory for KeyedProcessFactory {
    fn name(&self) -> String {
        format!("process({}, keys={:?})", self.name, self.keys)
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        self.key_columns(input)?;
        Ok(self.output.clone())
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        let keys = KeyColumns::new(input, self.key_columns(input)?)?;
        let backend = ctx.open_state(&format!("process-{}", self.name))?;
        let mut state = KeyedState::new(backend, ctx.max_parallelism);
        let mut function = (self.make)();
        function.open(&mut state)?;
        Ok(Box::new(KeyedProcessOp {
            function,
            state,
            timers: TimerService::new(ctx.max_parallelism),
            keys,
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            clock: ctx.clock.clone(),
            out: RowWriter::new(self.name.as_str().into(), self.output.clone()),
            hashes: Vec::new(),
            key: Vec::new(),
            ahead: Vec::new(),
        }))
    }
}

struct KeyedProcessOp {
    function: Box<dyn KeyedProcessFunction>,
    state: ProcessState,
    timers: Timers,
    keys: KeyColumns,
    max_parallelism: usize,
    watermark: Timestamp,
    clock: Arc<dyn Clock>,
    out: RowWriter,
    hashes: Vec<u64>,
    key: Vec<u8>,
    /// The key of the row [`PREFETCH_AHEAD`] rows on.
    ahead: Vec<u8>,
}

/// How many rows ahead the keyed process operator hints the state it will touch.
const PREFETCH_AHEAD: usize = 8;

impl KeyedProcessOp {
    /// Fires the due timers of `domain`, each with its key's context.
    fn fire(&mut self, domain: TimeDomain) -> Result<()> {
        let now = Timestamp::from_millis(self.clock.now_ms());
        loop {
            let t = match domain {
                TimeDomain::EventTime => self.timers.next_event_timer(),
                TimeDomain::ProcessingTime => self.timers.next_processing_timer(),
            };
            let Some(t) = t else { return Ok(()) };
            let (kg, key) = t.key;
            self.state.set_current_key(kg, &key);
            let mut ctx = KeyedContext {
                state: &mut self.state,
                timers: &mut self.timers,
                kg,
                key: &key,
                watermark: self.watermark,
                now,
            };
            self.function
                .on_timer(t.timestamp, domain, &mut ctx, &mut self.out)?;
        }
    }
}

impl Operator for KeyedProcessOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let keys = self.keys.of(&batch, &mut self.hashes)?;
        let now = Timestamp::from_millis(self.clock.now_ms());
        self.state.set_processing_time(now.millis());
        for row in 0..batch.num_rows() {
            // Hint the state of the key a few rows ahead: its memory loads overlap with
            // this row's work instead of stalling that row (state larger than the caches).
            if let Some(&hash) = self.hashes.get(row + PREFETCH_AHEAD) {
                self.ahead.clear();
                keys.write(row + PREFETCH_AHEAD, &mut self.ahead);
                let kg = KeyGroup::of_hash(hash, self.max_parallelism);
                self.state.prefetch_key(kg, &self.ahead);
            }
            let kg = KeyGroup::of_hash(self.hashes[row], self.max_parallelism);
            self.key.clear();
            keys.write(row, &mut self.key);
            self.state.set_current_key(kg, &self.key);
            let mut ctx = KeyedContext {
                state: &mut self.state,
                timers: &mut self.timers,
                kg,
                key: &self.key,
                watermark: self.watermark,
                now,
            };
            self.function
                .process_element(&batch, row, &mut ctx, &mut self.out)?;
        }
        self.out.flush(out)
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.watermark {
            self.watermark = wm;
            self.state.set_event_time(wm.millis());
            self.timers.advance_watermark(wm);
            self.fire(TimeDomain::EventTime)?;
            self.out.flush(out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        self.state.set_processing_time(now_ms);
        self.timers
            .advance_processing_time(Timestamp::from_millis(now_ms));
        self.fire(TimeDomain::ProcessingTime)?;
        self.out.flush(out)
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        // End of input is the final watermark: every event-time timer fires, as in Flink.
        self.watermark = Timestamp::MAX;
        self.state.set_event_time(i64::MAX);
        self.timers.advance_watermark(Timestamp::MAX);
        self.fire(TimeDomain::EventTime)?;
        self.out.flush(out)
    }

    fn snapshot(&mut self, target: &crate::SnapshotTarget) -> Result<()> {
        SnapshotWrite::finish(self.snapshot_async(target)?)
    }

    fn snapshot_async(&mut self, target: &crate::SnapshotTarget) -> Result<Option<SnapshotWrite>> {
        // The keyed state's snapshot also drops expired TTL entries.
        let state = &mut self.state;
        let write = |d: &std::path::Path| state.snapshot_async(d).map_err(Into::into);
        crate::snapshot::write_async(target, write, &self.timers, self.watermark).map(Some)
    }

    fn restore(&mut self, from: &[crate::SnapshotSource]) -> Result<()> {
        let range = self.state.key_groups();
        let state = &mut self.state;
        let read = |d: &[std::path::PathBuf]| state.restore(d).map_err(Into::into);
        let wm = crate::snapshot::read(from, read, &mut self.timers, range)?;
        if wm > Timestamp::MIN {
            self.watermark = wm;
            self.state.set_event_time(wm.millis());
            self.timers.advance_watermark(wm);
        }
        Ok(())
    }
}
