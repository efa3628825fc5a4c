//! Stateless operators: map, filter, projection, and watermark assignment.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{Array, BooleanArray};
use sabot_core::arrow::compute::{filter_record_batch, is_not_null};
use sabot_core::metrics::Counter;
use sabot_core::{BadRecordPolicy, Message, RecordBatch, SchemaRef, Timestamp, column_index};
use sabot_time::{WatermarkGenerator, WatermarkStrategy, WatermarkTracker};

use crate::time_column::{check_time_field, event_times};
use crate::{
    BoxError, Morsels, Operator, OperatorError, OperatorFactory, Output, Result, TaskContext,
};

/// A user function from batch to batch.
pub type MapFn = dyn Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync;

/// A user predicate: one boolean per row; rows with `true` are kept (null drops the row).
pub type PredicateFn = dyn Fn(&RecordBatch) -> Result<BooleanArray, BoxError> + Send + Sync;

/// `map`: applies a function to every batch. The output schema is declared up front (or
/// equals the input's), and every produced batch is checked against it.
#[derive(Clone)]
pub struct MapFactory {
    name: String,
    schema: Option<SchemaRef>,
    f: Arc<MapFn>,
    morsels: Option<Morsels>,
}

impl MapFactory {
    /// A map whose output has the input's schema.
    pub fn new(
        name: impl Into<String>,
        f: impl Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync + 'static,
    ) -> Self {
        MapFactory {
            name: name.into(),
            schema: None,
            f: Arc::new(f),
            morsels: None,
        }
    }

    /// Splits large batches into morsels mapped on several threads (see [`Morsels`]);
    /// the output batches keep the input's row order.
    pub fn with_morsels(mut self, morsels: Morsels) -> Self {
        self.morsels = Some(morsels);
        self
    }

    /// A map whose output has schema `schema`.
    pub fn with_schema(
        name: impl Into<String>,
        schema: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync + 'static,
    ) -> Self {
        MapFactory {
            name: name.into(),
            schema: Some(schema),
            f: Arc::new(f),
            morsels: None,
        }
    }
}

impl fmt::Debug for MapFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapFactory")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl OperatorFactory for MapFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.schema.clone().unwrap_or_else(|| input.clone()))
    }

    fn create(&self, input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(MapOp {
            name: self.name.clone(),
            schema: self.output_schema(input)?,
            f: self.f.clone(),
            morsels: self.morsels,
        }))
    }
}

struct MapOp {
    name: String,
    schema: SchemaRef,
    f: Arc<MapFn>,
    morsels: Option<Morsels>,
}

impl MapOp {
    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let result = (self.f)(batch).map_err(|e| OperatorError::user(&self.name, e))?;
        let actual = result.schema();
        if !Arc::ptr_eq(&actual, &self.schema) && actual.fields() != self.schema.fields() {
            return Err(OperatorError::SchemaMismatch {
                operator: self.name.clone(),
                expected: self.schema.clone(),
                actual,
            });
        }
        Ok(result)
    }
}

impl Operator for MapOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        match self.morsels {
            Some(m) => {
                for b in m.run(&batch, |b| self.apply(b))? {
                    out.batch(b);
                }
            }
            None => out.batch(self.apply(batch)?),
        }
        Ok(())
    }
}

/// `filter`: keeps the rows for which a predicate, computed over the whole batch with Arrow
/// kernels, is `true`.
#[derive(Clone)]
pub struct FilterFactory {
    name: String,
    predicate: Arc<PredicateFn>,
    morsels: Option<Morsels>,
}

impl FilterFactory {
    /// A filter with the given predicate.
    pub fn new(
        name: impl Into<String>,
        predicate: impl Fn(&RecordBatch) -> Result<BooleanArray, BoxError> + Send + Sync + 'static,
    ) -> Self {
        FilterFactory {
            name: name.into(),
            predicate: Arc::new(predicate),
            morsels: None,
        }
    }

    /// Splits large batches into morsels filtered on several threads (see [`Morsels`]);
    /// the kept rows stay in order.
    pub fn with_morsels(mut self, morsels: Morsels) -> Self {
        self.morsels = Some(morsels);
        self
    }
}

impl fmt::Debug for FilterFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterFactory")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl OperatorFactory for FilterFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }

    fn create(&self, _input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(FilterOp {
            name: self.name.clone(),
            predicate: self.predicate.clone(),
            morsels: self.morsels,
        }))
    }
}

struct FilterOp {
    name: String,
    predicate: Arc<PredicateFn>,
    morsels: Option<Morsels>,
}

impl Operator for FilterOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        match self.morsels {
            Some(m) => {
                for b in m.run(&batch, |b| self.apply(b))? {
                    if b.num_rows() > 0 {
                        out.batch(b);
                    }
                }
            }
            None => out.batch(self.apply(batch)?),
        }
        Ok(())
    }
}

impl FilterOp {
    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let mask = (self.predicate)(&batch).map_err(|e| OperatorError::user(&self.name, e))?;
        if mask.len() != batch.num_rows() {
            return Err(OperatorError::InvalidPlan {
                operator: self.name.clone(),
                reason: format!(
                    "predicate returned {} values for a batch of {} rows",
                    mask.len(),
                    batch.num_rows()
                ),
            });
        }
        if mask.null_count() == 0 && mask.true_count() == batch.num_rows() {
            Ok(batch)
        } else {
            Ok(filter_record_batch(&batch, &mask)?)
        }
    }
}

/// `select`: keeps the named columns, in the given order, optionally under new names.
#[derive(Clone, Debug)]
pub struct ProjectFactory {
    columns: Vec<String>,
    /// The output names (the input names where `None`).
    names: Option<Vec<String>>,
}

impl ProjectFactory {
    /// A projection onto `columns`.
    pub fn new(columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ProjectFactory {
            columns: columns.into_iter().map(Into::into).collect(),
            names: None,
        }
    }

    /// A projection onto the first of each pair, named as the second (SQL's
    /// `SELECT a AS b`).
    pub fn renamed(columns: &[(&str, &str)]) -> Self {
        ProjectFactory {
            columns: columns.iter().map(|(c, _)| (*c).to_owned()).collect(),
            names: Some(columns.iter().map(|(_, n)| (*n).to_owned()).collect()),
        }
    }

    fn indices(&self, input: &SchemaRef) -> Result<Vec<usize>> {
        if self.columns.is_empty() {
            return Err(OperatorError::InvalidPlan {
                operator: self.name(),
                reason: "select needs at least one column".into(),
            });
        }
        self.columns
            .iter()
            .map(|c| Ok(column_index(input, c)?))
            .collect()
    }

    fn schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let projected = input.project(&self.indices(input)?)?;
        let Some(names) = &self.names else {
            return Ok(Arc::new(projected));
        };
        let fields: Vec<_> = projected
            .fields()
            .iter()
            .zip(names)
            .map(|(f, n)| f.as_ref().clone().with_name(n.clone()))
            .collect();
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(OperatorError::InvalidPlan {
                operator: self.name(),
                reason: format!("output column `{}` appears twice", w[0]),
            });
        }
        Ok(Arc::new(sabot_core::arrow::datatypes::Schema::new(fields)))
    }
}

impl OperatorFactory for ProjectFactory {
    fn name(&self) -> String {
        match &self.names {
            None => format!("select({})", self.columns.join(", ")),
            Some(names) => format!(
                "select({})",
                self.columns
                    .iter()
                    .zip(names)
                    .map(|(c, n)| if c == n {
                        c.clone()
                    } else {
                        format!("{c} as {n}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        self.schema(input)
    }

    fn create(&self, input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(ProjectOp {
            indices: self.indices(input)?,
            schema: self
                .names
                .is_some()
                .then(|| self.schema(input))
                .transpose()?,
        }))
    }
}

struct ProjectOp {
    indices: Vec<usize>,
    /// The renamed output schema, if renaming.
    schema: Option<SchemaRef>,
}

impl Operator for ProjectOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let projected = batch.project(&self.indices)?;
        out.batch(match &self.schema {
            None => projected,
            Some(s) => RecordBatch::try_new(s.clone(), projected.columns().to_vec())?,
        });
        Ok(())
    }
}

/// Counter of records dropped because their event time was null (policy `Drop`).
pub const NULL_EVENT_TIME_DROPPED: &str = "watermarks.null_event_time_dropped";

/// Assigns event time from a column and generates the watermarks of each source partition
/// (one per source subtask), chained right after the source.
///
/// Watermarks follow a [`WatermarkStrategy`], emitted after every batch or at most every
/// `emit_every`. With an idle timeout, a partition that produced no data for that long is
/// declared idle (an idle marker goes downstream, so it stops holding back the
/// watermark) until it produces data again. Null event times follow the job's
/// [`BadRecordPolicy`]: fail naming the row, or drop and count
/// ([`NULL_EVENT_TIME_DROPPED`]).
#[derive(Clone, Debug)]
pub struct WatermarkFactory {
    time_column: String,
    strategy: WatermarkStrategy,
    emit_every: Option<Duration>,
    idle_timeout: Option<Duration>,
}

impl WatermarkFactory {
    /// Event time from `time_column`, watermarks by `strategy`, after every batch, no
    /// idle timeout.
    pub fn new(time_column: impl Into<String>, strategy: WatermarkStrategy) -> Self {
        WatermarkFactory {
            time_column: time_column.into(),
            strategy,
            emit_every: None,
            idle_timeout: None,
        }
    }

    /// Watermarks trailing the largest value of `time_column` by `bound`.
    pub fn bounded_out_of_orderness(time_column: impl Into<String>, bound: Duration) -> Self {
        Self::new(
            time_column,
            WatermarkStrategy::bounded_out_of_orderness(bound),
        )
    }

    /// Emits watermarks at most every `interval` of processing time.
    pub fn emit_every(mut self, interval: Duration) -> Self {
        self.emit_every = Some(interval);
        self
    }

    /// Declares a partition idle after `timeout` without data.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The event-time column.
    pub fn time_column(&self) -> &str {
        &self.time_column
    }
}

impl OperatorFactory for WatermarkFactory {
    fn name(&self) -> String {
        format!("watermarks({}, {:?})", self.time_column, self.strategy)
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let i = column_index(input, &self.time_column)?;
        check_time_field(input.field(i))?;
        Ok(input.clone())
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        self.output_schema(input)?;
        let mut partition = WatermarkTracker::new(1);
        if let Some(t) = self.idle_timeout {
            partition = partition.with_idle_timeout(t);
        }
        partition.start(ctx.clock.now_ms());
        Ok(Box::new(WatermarkOp {
            column: column_index(input, &self.time_column)?,
            column_name: self.time_column.clone(),
            generator: WatermarkGenerator::new(self.strategy.clone(), self.emit_every),
            partition,
            idle_announced: false,
            ctx: ctx.clone(),
            dropped: ctx.metrics.counter(NULL_EVENT_TIME_DROPPED),
            batches: 0,
        }))
    }
}

struct WatermarkOp {
    column: usize,
    column_name: String,
    generator: WatermarkGenerator,
    /// The partition's activity and watermark (one input: this subtask's partition).
    partition: WatermarkTracker,
    idle_announced: bool,
    ctx: TaskContext,
    dropped: Counter,
    batches: u64,
}

impl WatermarkOp {
    fn emit(&mut self, wm: Option<Timestamp>, now: i64, out: &mut Output) -> Result<()> {
        if let Some(wm) = wm
            && let Some(w) = self.partition.on_watermark(0, wm, now)?
        {
            out.watermark(w);
        }
        Ok(())
    }
}

impl Operator for WatermarkOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.batches += 1;
        let now = self.ctx.clock.now_ms();
        let mut times = event_times(batch.column(self.column))?;
        let mut batch = batch;
        if times.null_count() > 0 {
            match self.ctx.bad_records {
                BadRecordPolicy::Drop => {
                    let valid = is_not_null(&times)?;
                    self.dropped.add(times.null_count() as u64);
                    batch = filter_record_batch(&batch, &valid)?;
                    times = event_times(batch.column(self.column))?;
                }
                _ => {
                    let row = (0..times.len()).find(|&i| times.is_null(i)).unwrap_or(0);
                    return Err(OperatorError::BadRecord {
                        reason: format!("null event time in column `{}`", self.column_name),
                        position: format!(
                            "row {row} of batch {} of source subtask {}",
                            self.batches - 1,
                            self.ctx.subtask
                        ),
                    });
                }
            }
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.partition.on_data(0, now)?;
        self.idle_announced = false;
        let wm = self.generator.on_batch(&batch, times.values(), now);
        out.batch(batch);
        self.emit(wm, now, out)
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        // Only end of input (MAX) passes from upstream: this operator owns event time here.
        if wm == Timestamp::MAX {
            out.watermark(wm);
        }
        Ok(())
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        let wm = self.generator.on_tick(now_ms);
        self.emit(wm, now_ms, out)?;
        self.partition.on_tick(now_ms);
        if self.partition.is_idle() && !self.idle_announced {
            self.idle_announced = true;
            out.message(Message::Idle);
        }
        Ok(())
    }
}
