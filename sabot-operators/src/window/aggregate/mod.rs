//! Aggregate functions: what a user asks for ([`Aggregate`], [`AggKind`],
//! [`AggregateFunction`]); its binding to an input schema (`binding`) and the
//! vectorized per-group accumulators (`accumulators`) are submodules.

mod accumulators;
mod binding;

pub(crate) use accumulators::*;
pub(crate) use binding::*;

use std::sync::Arc;

use sabot_core::arrow::array::ArrayRef;
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::{CoreError, column_index};

use crate::Result;

/// Which aggregate function.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggKind {
    /// Number of rows (or of non-null values of a column).
    Count,
    /// Sum of the non-null values (integers wrap around on overflow, as in Flink).
    Sum,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Mean of the non-null values, as Float64 (null when there are none). Integer
    /// inputs are summed exactly (wrapping i64) and divided once, at the end.
    Avg,
    /// Number of distinct non-null values: exact for integer and floating-point
    /// columns (by value), by 64-bit hash for other types.
    CountDistinct,
    /// The value of the row with the smallest event time (ties: the smallest value).
    First,
    /// The value of the row with the largest event time (ties: the largest value).
    Last,
    /// A user [`AggregateFunction`].
    User,
}

/// A user aggregate function over one input column, with accumulators as bytes (so
/// that they live in the state backend and checkpoints): Flink's `AggregateFunction`
/// (create, add, merge, get result), called a batch at a time.
///
/// ```
/// use std::sync::Arc;
/// use sabot_core::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
/// use sabot_core::arrow::datatypes::{DataType, Int64Type};
/// use sabot_operators::{Aggregate, AggregateFunction, BoxError};
///
/// /// Sum of squares.
/// #[derive(Debug)]
/// struct SumSq;
///
/// impl AggregateFunction for SumSq {
///     fn name(&self) -> &str { "sum_sq" }
///     fn output_type(&self, _input: &DataType) -> Result<DataType, BoxError> {
///         Ok(DataType::Int64)
///     }
///     fn create(&self, acc: &mut Vec<u8>) { acc.extend_from_slice(&0i64.to_le_bytes()) }
///     fn add(&self, acc: &mut Vec<u8>, values: &ArrayRef, rows: &[u32]) -> Result<(), BoxError> {
///         let v = values.as_primitive::<Int64Type>();
///         let mut s = i64::from_le_bytes(acc[..8].try_into()?);
///         for &r in rows { s += v.value(r as usize).pow(2); }
///         acc[..8].copy_from_slice(&s.to_le_bytes());
///         Ok(())
///     }
///     fn merge(&self, acc: &mut Vec<u8>, other: &[u8]) -> Result<(), BoxError> {
///         let s = i64::from_le_bytes(acc[..8].try_into()?) + i64::from_le_bytes(other.try_into()?);
///         acc[..8].copy_from_slice(&s.to_le_bytes());
///         Ok(())
///     }
///     fn result(&self, accs: &[&[u8]]) -> Result<ArrayRef, BoxError> {
///         Ok(Arc::new(accs.iter().map(|a| Ok(i64::from_le_bytes((*a).try_into()?)))
///             .collect::<Result<Int64Array, BoxError>>()?))
///     }
/// }
///
/// let agg = Aggregate::user("value", Arc::new(SumSq));
/// assert_eq!(agg.output_name(), "sum_sq_value");
/// ```
pub trait AggregateFunction: Send + Sync + std::fmt::Debug {
    /// The function's name: the default output column is `{name}_{column}`, and it is
    /// part of the state layout (renaming it makes old checkpoints unreadable).
    fn name(&self) -> &str;
    /// The output type for an input column of type `input` (an error rejects the input
    /// when the job is built).
    fn output_type(&self, input: &DataType) -> std::result::Result<DataType, crate::BoxError>;
    /// Writes an empty accumulator into `acc` (empty when called).
    fn create(&self, acc: &mut Vec<u8>);
    /// Adds rows `rows` of `values` (the input column of one batch) to `acc`.
    fn add(
        &self,
        acc: &mut Vec<u8>,
        values: &ArrayRef,
        rows: &[u32],
    ) -> std::result::Result<(), crate::BoxError>;
    /// Combines accumulator `other` into `acc`.
    fn merge(&self, acc: &mut Vec<u8>, other: &[u8]) -> std::result::Result<(), crate::BoxError>;
    /// The results of `accs`, one row each, of [`output_type`](Self::output_type).
    fn result(&self, accs: &[&[u8]]) -> std::result::Result<ArrayRef, crate::BoxError>;
}

/// A user function held by an [`Aggregate`]: equal when it is the same instance.
#[derive(Clone, Debug)]
struct UserFn(Arc<dyn AggregateFunction>);

impl PartialEq for UserFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for UserFn {}

/// One aggregate in a window: a function, its input column and its output name.
///
/// ```
/// use sabot_operators::Aggregate;
/// let total = Aggregate::sum("amount").alias("total");
/// assert_eq!(total.output_name(), "total");
/// assert_eq!(Aggregate::count().output_name(), "count");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    kind: AggKind,
    column: Option<String>,
    alias: Option<String>,
    user: Option<UserFn>,
}

impl Aggregate {
    /// `count(*)`: rows per group.
    pub fn count() -> Self {
        Aggregate {
            kind: AggKind::Count,
            column: None,
            alias: None,
            user: None,
        }
    }

    /// Non-null values of `column` per group.
    pub fn count_of(column: impl Into<String>) -> Self {
        Self::of(AggKind::Count, column)
    }

    /// Sum of `column`.
    pub fn sum(column: impl Into<String>) -> Self {
        Self::of(AggKind::Sum, column)
    }

    /// Minimum of `column`.
    pub fn min(column: impl Into<String>) -> Self {
        Self::of(AggKind::Min, column)
    }

    /// Maximum of `column`.
    pub fn max(column: impl Into<String>) -> Self {
        Self::of(AggKind::Max, column)
    }

    /// Mean of `column` (Float64).
    pub fn avg(column: impl Into<String>) -> Self {
        Self::of(AggKind::Avg, column)
    }

    /// Number of distinct non-null values of `column` (exact; see
    /// [`AggKind::CountDistinct`]). Its state holds every distinct value per group.
    pub fn count_distinct(column: impl Into<String>) -> Self {
        Self::of(AggKind::CountDistinct, column)
    }

    /// `column`'s value in the row with the smallest event time of the group (numeric
    /// columns; event-time windows only).
    pub fn first(column: impl Into<String>) -> Self {
        Self::of(AggKind::First, column)
    }

    /// `column`'s value in the row with the largest event time of the group (numeric
    /// columns; event-time windows only).
    pub fn last(column: impl Into<String>) -> Self {
        Self::of(AggKind::Last, column)
    }

    /// A user [`AggregateFunction`] over `column`.
    pub fn user(column: impl Into<String>, f: Arc<dyn AggregateFunction>) -> Self {
        Aggregate {
            user: Some(UserFn(f)),
            ..Self::of(AggKind::User, column)
        }
    }

    fn of(kind: AggKind, column: impl Into<String>) -> Self {
        Aggregate {
            kind,
            column: Some(column.into()),
            alias: None,
            user: None,
        }
    }

    /// Names the output column.
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.alias = Some(name.into());
        self
    }

    /// The output column's name: the alias, else `<fn>_<column>`, else `count`.
    pub fn output_name(&self) -> String {
        if let Some(a) = &self.alias {
            return a.clone();
        }
        let f = match self.kind {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
            AggKind::CountDistinct => "count_distinct",
            AggKind::First => "first",
            AggKind::Last => "last",
            AggKind::User => self.user.as_ref().map_or("user", |u| u.0.name()),
        };
        match &self.column {
            Some(c) => format!("{f}_{c}"),
            None => f.to_owned(),
        }
    }

    /// Resolves the input column against `schema`; `time` is the input's event-time
    /// column, where it has one (first and last need it).
    pub(crate) fn bind(&self, schema: &Schema, time: Option<usize>) -> Result<BoundAggregate> {
        let input = match &self.column {
            None => None,
            Some(c) => Some(column_index(schema, c)?),
        };
        let invalid = |reason: String| crate::OperatorError::InvalidPlan {
            operator: format!("aggregate `{}`", self.output_name()),
            reason,
        };
        if matches!(self.kind, AggKind::First | AggKind::Last) && time.is_none() {
            return Err(invalid(
                "first and last need event time: use them in event-time windows".into(),
            ));
        }
        let numeric = match input {
            None => Numeric::I64,
            Some(i) => {
                let f = schema.field(i);
                match (self.kind, f.data_type()) {
                    (AggKind::Count | AggKind::CountDistinct | AggKind::User, _) => Numeric::I64,
                    (_, t) if t.is_integer() => Numeric::I64,
                    (_, t) if t.is_floating() => Numeric::F64,
                    (_, t) => {
                        return Err(CoreError::InvalidColumnType {
                            column: f.name().clone(),
                            expected: "an integer or floating-point column".into(),
                            actual: t.clone(),
                        }
                        .into());
                    }
                }
            }
        };
        let data_type = match (self.kind, numeric) {
            (AggKind::User, _) => {
                let (Some(u), Some(i)) = (&self.user, input) else {
                    return Err(invalid(
                        "a user aggregate needs a function and a column".into(),
                    ));
                };
                u.0.output_type(schema.field(i).data_type())
                    .map_err(|e| invalid(format!("rejects its input: {e}")))?
            }
            (AggKind::Count | AggKind::CountDistinct, _) => DataType::Int64,
            (AggKind::Avg, _) | (_, Numeric::F64) => DataType::Float64,
            (_, Numeric::I64) => DataType::Int64,
        };
        let nullable = !matches!(self.kind, AggKind::Count | AggKind::CountDistinct);
        Ok(BoundAggregate {
            kind: self.kind,
            input,
            input_nullable: input.is_some_and(|i| schema.field(i).is_nullable()),
            numeric,
            field: Field::new(self.output_name(), data_type, nullable),
            user: self.user.as_ref().map(|u| u.0.clone()),
        })
    }
}
