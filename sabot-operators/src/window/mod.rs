//! Event-time windows.

mod aggregate;
mod count;
mod global;
mod groups;
mod panes;
mod session;
mod tumbling;

pub use aggregate::{AggKind, Aggregate, AggregateFunction};
pub use count::{COUNT_WINDOW_STATE, CountWindowFactory, WINDOW_INDEX};
pub use global::{GLOBAL_WINDOW_STATE, GlobalWindowFactory, Trigger};
pub use session::{SESSION_WINDOW_STATE, SessionWindowFactory};
pub use tumbling::{
    LATE_DATA, LATE_RECORDS, LATE_RECORDS_DROPPED, TumblingWindowFactory, WINDOW_END, WINDOW_START,
    WINDOW_STATE,
};

use sabot_core::arrow::datatypes::Field;
use sabot_core::key::check_key_field;
use sabot_core::{SchemaRef, column_index};

use crate::Result;
use aggregate::BoundAggregate;

/// A keyed window's output columns, resolved against its input.
pub(crate) struct KeyedOutput {
    /// The key columns' indices in the input.
    pub(crate) key_idx: Vec<usize>,
    pub(crate) aggs: Vec<BoundAggregate>,
    pub(crate) fields: Vec<Field>,
}

/// The key columns' types and each aggregate's slot layout: what a window's stored state
/// depends on (restoring state written with other keys or aggregates is a clear error).
pub(crate) fn state_fingerprint(
    kind: &str,
    extra: &str,
    input: &SchemaRef,
    key_idx: &[usize],
    aggs: &[BoundAggregate],
) -> String {
    format!(
        "{kind}/1{extra}/keys={:?}/aggs={}",
        key_idx
            .iter()
            .map(|&i| input.field(i).data_type().to_string())
            .collect::<Vec<_>>(),
        aggs.iter()
            .map(BoundAggregate::layout)
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// An empty group table for `keys` (integers for a single `Int64` key column).
pub(crate) fn group_table(keys: &crate::keys::KeyColumns) -> groups::GroupTable {
    if keys.is_int64() {
        groups::GroupTable::for_int64()
    } else {
        groups::GroupTable::for_rows(keys.converter())
    }
}

/// The event times of a window's input batch, which must have none null (sources drop or
/// reject null event times; reaching a window is a plan error).
pub(crate) fn non_null_times(
    batch: &sabot_core::RecordBatch,
    time_idx: usize,
) -> Result<sabot_core::arrow::array::Int64Array> {
    use sabot_core::arrow::array::Array;
    let times = crate::time_column::event_times(batch.column(time_idx))?;
    if times.null_count() > 0 {
        let field = batch.schema().field(time_idx).clone();
        return Err(sabot_core::CoreError::InvalidColumnType {
            column: field.name().clone(),
            expected: "non-null event times".into(),
            actual: field.data_type().clone(),
        }
        .into());
    }
    Ok(times)
}

/// A keyed window's output: the key columns, then `window` (its own columns), then one
/// column per aggregate. No key columns, no aggregates, or an output name used twice is
/// `invalid`'s error.
pub(crate) fn keyed_output(
    input: &SchemaRef,
    keys: &[String],
    window: Vec<Field>,
    aggregates: &[Aggregate],
    time: Option<usize>,
    invalid: impl Fn(String) -> crate::OperatorError,
) -> Result<KeyedOutput> {
    if keys.is_empty() {
        return Err(invalid(
            "a keyed window needs at least one key column".into(),
        ));
    }
    if aggregates.is_empty() {
        return Err(invalid("a window needs at least one aggregate".into()));
    }
    let mut key_idx = Vec::with_capacity(keys.len());
    let mut fields: Vec<Field> = Vec::new();
    for k in keys {
        let i = column_index(input, k)?;
        check_key_field(input.field(i))?;
        key_idx.push(i);
        fields.push(input.field(i).clone());
    }
    fields.extend(window);
    let aggs = aggregates
        .iter()
        .map(|a| a.bind(input, time))
        .collect::<Result<Vec<_>>>()?;
    fields.extend(aggs.iter().map(|a| a.field.clone()));
    let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(format!(
            "output column `{}` appears twice: give the aggregate an alias",
            w[0]
        )));
    }
    Ok(KeyedOutput {
        key_idx,
        aggs,
        fields,
    })
}
