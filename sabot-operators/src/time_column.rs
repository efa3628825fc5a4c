//! Reading event time from a column.

use sabot_core::CoreError;
use sabot_core::arrow::array::{ArrayRef, AsArray, Int64Array};
use sabot_core::arrow::datatypes::{
    DataType, Field, Int64Type, TimeUnit, TimestampMillisecondType,
};

use crate::Result;

/// Checks that `field` can hold event time: `Int64` milliseconds or `Timestamp(ms)`.
pub(crate) fn check_time_field(field: &Field) -> Result<()> {
    match field.data_type() {
        DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _) => Ok(()),
        other => Err(CoreError::InvalidColumnType {
            column: field.name().clone(),
            expected: "Int64 milliseconds or Timestamp(Millisecond) for event time".into(),
            actual: other.clone(),
        }
        .into()),
    }
}

/// The column's values as `Int64` milliseconds (zero-copy).
pub(crate) fn event_times(col: &ArrayRef) -> Result<Int64Array> {
    match col.data_type() {
        DataType::Int64 => Ok(col.as_primitive::<Int64Type>().clone()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Ok(col
            .as_primitive::<TimestampMillisecondType>()
            .reinterpret_cast::<Int64Type>()),
        other => Err(CoreError::InvalidColumnType {
            column: "<event time>".into(),
            expected: "Int64 milliseconds or Timestamp(Millisecond) for event time".into(),
            actual: other.clone(),
        }
        .into()),
    }
}
