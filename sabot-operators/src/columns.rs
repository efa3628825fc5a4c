//! Stateless operators that reshape batches: `flat_map` (zero or more output batches per
//! input batch) and `with_column` (a column computed from the batch by an Arrow kernel).

use std::fmt;
use std::sync::Arc;

use sabot_core::arrow::array::ArrayRef;
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::{RecordBatch, SchemaRef};

use crate::{
    BoxError, Morsels, Operator, OperatorError, OperatorFactory, Output, Result, TaskContext,
};

/// A user function from one batch to any number of batches of the declared schema.
pub type FlatMapFn = dyn Fn(RecordBatch) -> Result<Vec<RecordBatch>, BoxError> + Send + Sync;

/// A user function computing one column for every row of a batch.
pub type ColumnFn = dyn Fn(&RecordBatch) -> Result<ArrayRef, BoxError> + Send + Sync;

/// `flat_map`: each input batch becomes zero or more output batches (of any row counts)
/// of one declared schema, each checked against it; empty ones are dropped.
#[derive(Clone)]
pub struct FlatMapFactory {
    name: String,
    schema: SchemaRef,
    f: Arc<FlatMapFn>,
}

impl FlatMapFactory {
    /// A flat map producing batches of `schema`.
    pub fn new(
        name: impl Into<String>,
        schema: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<Vec<RecordBatch>, BoxError> + Send + Sync + 'static,
    ) -> Self {
        FlatMapFactory {
            name: name.into(),
            schema,
            f: Arc::new(f),
        }
    }
}

impl fmt::Debug for FlatMapFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlatMapFactory")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl OperatorFactory for FlatMapFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn output_schema(&self, _input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.schema.clone())
    }

    fn create(&self, _input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(FlatMapOp(self.clone())))
    }
}

struct FlatMapOp(FlatMapFactory);

impl Operator for FlatMapOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let f = &self.0;
        let batches = (f.f)(batch).map_err(|e| OperatorError::user(&f.name, e))?;
        for b in batches {
            let actual = b.schema();
            if !Arc::ptr_eq(&actual, &f.schema) && actual.fields() != f.schema.fields() {
                return Err(OperatorError::SchemaMismatch {
                    operator: f.name.clone(),
                    expected: f.schema.clone(),
                    actual,
                });
            }
            if b.num_rows() > 0 {
                out.batch(b);
            }
        }
        Ok(())
    }
}

/// `with_column`: adds column `name` of type `data_type`, computed from each whole batch
/// (an Arrow kernel over its columns), or replaces the column of that name. The result's
/// length and type are checked per batch.
#[derive(Clone)]
pub struct WithColumnFactory {
    name: String,
    data_type: DataType,
    nullable: bool,
    f: Arc<ColumnFn>,
    morsels: Option<Morsels>,
}

impl WithColumnFactory {
    /// A computed column `name` of `data_type` (nullable).
    pub fn new(
        name: impl Into<String>,
        data_type: DataType,
        f: impl Fn(&RecordBatch) -> Result<ArrayRef, BoxError> + Send + Sync + 'static,
    ) -> Self {
        WithColumnFactory {
            name: name.into(),
            data_type,
            nullable: true,
            f: Arc::new(f),
            morsels: None,
        }
    }

    /// Splits large batches into morsels computed on several threads (see [`Morsels`]);
    /// the output batches keep the input's row order.
    pub fn with_morsels(mut self, morsels: Morsels) -> Self {
        self.morsels = Some(morsels);
        self
    }

    fn op_name(&self) -> String {
        format!("with_column({})", self.name)
    }
}

impl fmt::Debug for WithColumnFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithColumnFactory")
            .field("name", &self.name)
            .field("data_type", &self.data_type)
            .finish_non_exhaustive()
    }
}

impl OperatorFactory for WithColumnFactory {
    fn name(&self) -> String {
        self.op_name()
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let field = Arc::new(Field::new(
            &self.name,
            self.data_type.clone(),
            self.nullable,
        ));
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        match input.index_of(&self.name) {
            Ok(i) => fields[i] = field,
            Err(_) => fields.push(field),
        }
        Ok(Arc::new(Schema::new_with_metadata(
            fields,
            input.metadata().clone(),
        )))
    }

    fn create(&self, input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WithColumnOp {
            schema: self.output_schema(input)?,
            replaces: input.index_of(&self.name).ok(),
            factory: self.clone(),
        }))
    }
}

struct WithColumnOp {
    factory: WithColumnFactory,
    schema: SchemaRef,
    replaces: Option<usize>,
}

impl Operator for WithColumnOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        match self.factory.morsels {
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

impl WithColumnOp {
    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let f = &self.factory;
        let column = (f.f)(&batch).map_err(|e| OperatorError::user(f.op_name(), e))?;
        let bad = |reason: String| OperatorError::InvalidPlan {
            operator: f.op_name(),
            reason,
        };
        if column.len() != batch.num_rows() {
            return Err(bad(format!(
                "computed {} values for a batch of {} rows",
                column.len(),
                batch.num_rows()
            )));
        }
        if column.data_type() != &f.data_type {
            return Err(bad(format!(
                "computed a {} column, declared {}",
                column.data_type(),
                f.data_type
            )));
        }
        let mut columns = batch.columns().to_vec();
        match self.replaces {
            Some(i) => columns[i] = column,
            None => columns.push(column),
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
