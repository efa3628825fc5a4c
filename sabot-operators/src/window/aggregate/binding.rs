//! An aggregate bound to an input schema: its column, type and output field.

use std::sync::Arc;

use sabot_core::arrow::array::{Array, ArrayRef};
use sabot_core::arrow::compute::cast;
use sabot_core::arrow::datatypes::{DataType, Field};

use super::*;
use crate::Result;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Numeric {
    I64,
    F64,
}

/// An aggregate resolved against an input schema.
#[derive(Clone, Debug)]
pub(crate) struct BoundAggregate {
    pub(crate) kind: AggKind,
    pub(crate) input: Option<usize>,
    /// Whether the input column may hold nulls.
    pub(crate) input_nullable: bool,
    pub(crate) numeric: Numeric,
    pub(crate) field: Field,
    pub(crate) user: Option<Arc<dyn AggregateFunction>>,
}

impl BoundAggregate {
    /// The input column of `batch_columns`, cast to the accumulator's type once per batch.
    pub(crate) fn values(&self, columns: &[ArrayRef]) -> Result<Option<ArrayRef>> {
        let Some(i) = self.input else {
            return Ok(None);
        };
        let col = &columns[i];
        if matches!(
            self.kind,
            AggKind::Count | AggKind::CountDistinct | AggKind::User
        ) {
            return Ok(Some(col.clone()));
        }
        let target = match self.numeric {
            Numeric::I64 => DataType::Int64,
            Numeric::F64 => DataType::Float64,
        };
        if col.data_type() == &target {
            Ok(Some(col.clone()))
        } else {
            Ok(Some(cast(col, &target)?))
        }
    }

    /// The stored form's name in state fingerprints, e.g. `sum:i64`.
    pub(crate) fn layout(&self) -> String {
        let kind = match self.kind {
            AggKind::Count => return "count".into(),
            AggKind::CountDistinct => return "count_distinct".into(),
            AggKind::User => {
                return format!("user:{}", self.user.as_ref().map_or("?", |u| u.name()));
            }
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
            AggKind::First => "first",
            AggKind::Last => "last",
        };
        let t = match self.numeric {
            Numeric::I64 => "i64",
            Numeric::F64 => "f64",
        };
        format!("{kind}:{t}")
    }

    pub(crate) fn new_accumulator(&self) -> Accumulator {
        match (self.kind, self.numeric) {
            (AggKind::Count, _) => Accumulator::Count(Vec::new()),
            (AggKind::CountDistinct, _) => Accumulator::Distinct(Vec::new()),
            (AggKind::User, _) => match &self.user {
                Some(f) => Accumulator::User(f.clone(), Vec::new()),
                None => Accumulator::Count(Vec::new()),
            },
            (AggKind::First | AggKind::Last, Numeric::I64) => {
                Accumulator::PickI64(NumAcc::new(self.kind), Vec::new())
            }
            (AggKind::First | AggKind::Last, Numeric::F64) => {
                Accumulator::PickF64(NumAcc::new(self.kind), Vec::new())
            }
            (AggKind::Avg, Numeric::I64) => {
                Accumulator::AvgI64(NumAcc::new(AggKind::Sum), Vec::new())
            }
            (AggKind::Avg, Numeric::F64) => {
                Accumulator::AvgF64(NumAcc::new(AggKind::Sum), Vec::new())
            }
            (kind, Numeric::I64) => Accumulator::I64(NumAcc::new(kind)),
            (kind, Numeric::F64) => Accumulator::F64(NumAcc::new(kind)),
        }
    }
}
