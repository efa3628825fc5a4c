//! Joins of two keyed streams.
//!
//! - [`JoinFactory`]: joins that keep both sides in keyed state. The interval join (a
//!   right row joins a left row of the same key when `right.ts` lies in `[left.ts +
//!   lower, left.ts + upper]`) and the window join (both rows in the same tumbling
//!   window) keep rows only while a partner can still arrive: the watermark drops them.
//!   The regular join keeps them for ever or for a time to live.
//! - [`LookupJoinFactory`]: every left row looks up the right side's version of its key
//!   that was current at the left row's event time (or at its arrival): the right side is
//!   a table kept from a changelog.
//!
//! All of them: inner or left outer ([`JoinType`]), keys of the same types on both sides
//! (both inputs `key_by` them, so equal keys meet in one subtask), state in the job's
//! backend (memory or RocksDB), snapshots through it.
//!
//! Output columns: the left input's, then the right input's, with a right key column
//! left out where it has the same name as its left key column (as SQL's `USING`), and a
//! right column whose name the left side already has renamed to `{name}_right`. A left
//! outer join makes the right columns nullable.

mod lookup;
mod rows;
mod store;
mod stored;

pub use lookup::LookupJoinFactory;
pub use stored::{CHANGELOG_OP, JOIN_LATE_RECORDS_DROPPED, JoinFactory};

use std::sync::Arc;

use sabot_core::arrow::datatypes::{Field, Schema};
use sabot_core::key::check_key_field;
use sabot_core::{SchemaRef, column_index};

use crate::{OperatorError, Result};

/// Which rows a join emits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JoinType {
    /// Pairs of matching rows only.
    Inner,
    /// Pairs of matching rows, and each left row that matched nothing, with nulls for the
    /// right columns (emitted once no partner can come any more).
    LeftOuter,
}

/// A join's key and output columns, resolved against its inputs.
#[derive(Clone, Debug)]
pub(crate) struct JoinColumns {
    pub(crate) left_keys: Vec<usize>,
    pub(crate) right_keys: Vec<usize>,
    /// The right columns that appear in the output, by index in the right input.
    pub(crate) right_out: Vec<usize>,
    /// The output fields: left, kept right, then `extra`.
    pub(crate) schema: SchemaRef,
}

/// Resolves key columns and builds the output schema (see the module docs). `extra`
/// fields go last.
pub(crate) fn join_columns(
    operator: &str,
    left: &SchemaRef,
    right: &SchemaRef,
    left_keys: &[String],
    right_keys: &[String],
    join_type: JoinType,
    extra: Vec<Field>,
) -> Result<JoinColumns> {
    let invalid = |reason: String| OperatorError::InvalidPlan {
        operator: operator.to_owned(),
        reason,
    };
    if left_keys.is_empty() || left_keys.len() != right_keys.len() {
        return Err(invalid(format!(
            "a join needs the same number of key columns on both sides (at least one), got {left_keys:?} and {right_keys:?}"
        )));
    }
    let mut lk = Vec::with_capacity(left_keys.len());
    let mut rk = Vec::with_capacity(right_keys.len());
    for (l, r) in left_keys.iter().zip(right_keys) {
        let li = column_index(left, l)?;
        let ri = column_index(right, r)?;
        check_key_field(left.field(li))?;
        check_key_field(right.field(ri))?;
        let (lt, rt) = (left.field(li).data_type(), right.field(ri).data_type());
        if lt != rt {
            return Err(invalid(format!(
                "join key `{l}` is {lt} on the left but `{r}` is {rt} on the right: cast one so both have the same type (equal keys must hash alike)"
            )));
        }
        lk.push(li);
        rk.push(ri);
    }
    let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut right_out = Vec::new();
    for (i, f) in right.fields().iter().enumerate() {
        // A right key column named like its left key column holds the same values.
        if let Some(k) = rk.iter().position(|&r| r == i)
            && left.field(lk[k]).name() == f.name()
        {
            continue;
        }
        let mut f = f.as_ref().clone();
        if left.field_with_name(f.name()).is_ok() {
            let name = format!("{}_right", f.name());
            f = f.with_name(name);
        }
        if join_type == JoinType::LeftOuter {
            f = f.with_nullable(true);
        }
        fields.push(f);
        right_out.push(i);
    }
    fields.extend(extra);
    let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(format!(
            "output column `{}` appears twice: rename a column before the join",
            w[0]
        )));
    }
    Ok(JoinColumns {
        left_keys: lk,
        right_keys: rk,
        right_out,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// The fingerprint of one side's stored rows: its column types.
pub(crate) fn side_fingerprint(kind: &str, schema: &SchemaRef, keys: &[usize]) -> String {
    format!(
        "{kind}/1/keys={:?}/row={:?}",
        keys.iter()
            .map(|&i| schema.field(i).data_type().to_string())
            .collect::<Vec<_>>(),
        schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect::<Vec<_>>()
    )
}
