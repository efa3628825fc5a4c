//! Stateless operators: map, filter, projection, and watermark assignment.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{Array, BooleanArray};
use sabot_core::arrow::compute::{filter_record_batch, max};
use sabot_core::{RecordBatch, SchemaRef, Timestamp, column_index};
use sabot_time::BoundedOutOfOrderness;

use crate::time_column::{check_time_field, event_times};
use crate::{BoxError, Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

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
        }
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
        }))
    }
}

struct MapOp {
    name: String,
    schema: SchemaRef,
    f: Arc<MapFn>,
}

impl Operator for MapOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let result = (self.f)(batch).map_err(|e| OperatorError::user(&self.name, e))?;
        let actual = result.schema();
        if !Arc::ptr_eq(&actual, &self.schema) && actual.fields() != self.schema.fields() {
            return Err(OperatorError::SchemaMismatch {
                operator: self.name.clone(),
                expected: self.schema.clone(),
                actual,
            });
        }
        out.batch(result);
        Ok(())
    }
}

/// `filter`: keeps the rows for which a predicate, computed over the whole batch with Arrow
/// kernels, is `true`.
#[derive(Clone)]
pub struct FilterFactory {
    name: String,
    predicate: Arc<PredicateFn>,
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
        }
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
        }))
    }
}

struct FilterOp {
    name: String,
    predicate: Arc<PredicateFn>,
}

impl Operator for FilterOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
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
            out.batch(batch);
        } else {
            out.batch(filter_record_batch(&batch, &mask)?);
        }
        Ok(())
    }
}

/// `select`: keeps the named columns, in the given order.
#[derive(Clone, Debug)]
pub struct ProjectFactory {
    columns: Vec<String>,
}

impl ProjectFactory {
    /// A projection onto `columns`.
    pub fn new(columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ProjectFactory {
            columns: columns.into_iter().map(Into::into).collect(),
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
}

impl OperatorFactory for ProjectFactory {
    fn name(&self) -> String {
        format!("select({})", self.columns.join(", "))
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(Arc::new(input.project(&self.indices(input)?)?))
    }

    fn create(&self, input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(ProjectOp {
            indices: self.indices(input)?,
        }))
    }
}

struct ProjectOp {
    indices: Vec<usize>,
}

impl Operator for ProjectOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        out.batch(batch.project(&self.indices)?);
        Ok(())
    }
}

/// Assigns event time from a column and emits bounded-out-of-orderness watermarks after
/// every batch (per source subtask, i.e. per partition).
#[derive(Clone, Debug)]
pub struct WatermarkFactory {
    time_column: String,
    bound: Duration,
}

impl WatermarkFactory {
    /// Watermarks trailing the largest value of `time_column` by `bound`.
    pub fn bounded_out_of_orderness(time_column: impl Into<String>, bound: Duration) -> Self {
        WatermarkFactory {
            time_column: time_column.into(),
            bound,
        }
    }
}

impl OperatorFactory for WatermarkFactory {
    fn name(&self) -> String {
        format!("watermarks({}, {:?})", self.time_column, self.bound)
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let i = column_index(input, &self.time_column)?;
        check_time_field(input.field(i))?;
        Ok(input.clone())
    }

    fn create(&self, input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        self.output_schema(input)?;
        Ok(Box::new(WatermarkOp {
            column: column_index(input, &self.time_column)?,
            generator: BoundedOutOfOrderness::new(self.bound),
        }))
    }
}

struct WatermarkOp {
    column: usize,
    generator: BoundedOutOfOrderness,
}

impl Operator for WatermarkOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let times = event_times(batch.column(self.column))?;
        let wm = max(&times).and_then(|m| self.generator.observe(m));
        out.batch(batch);
        if let Some(wm) = wm {
            out.watermark(wm);
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        // Only end of input (MAX) passes from upstream: this operator owns event time here.
        if wm == Timestamp::MAX {
            out.watermark(wm);
        }
        Ok(())
    }
}
