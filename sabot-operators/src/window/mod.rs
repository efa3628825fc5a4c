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

/// A keyed window's output: the key columns, then `window` (its own columns), then one
/// column per aggregate. An output name used twice is `invalid`'s error.
pub(crate) fn keyed_output(
    input: &SchemaRef,
    keys: &[String],
    window: Vec<Field>,
    aggregates: &[Aggregate],
    time: Option<usize>,
    invalid: impl Fn(String) -> crate::OperatorError,
) -> Result<KeyedOutput> {
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
