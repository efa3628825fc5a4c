//! What joins share: rows in Arrow's row format (how they are stored in state), the
//! stored entry layout, and building output batches from pairs of stored rows.
//!
//! A stored row is an entry of the side's state: key = the join key (8 bytes LE for a
//! single `Int64` key, Arrow's row format otherwise), namespace = the row's event time
//! (8 bytes, big-endian with the sign bit flipped, so that byte order is time order)
//! (or its arrival time, under a processing-time TTL) followed by the whole row in Arrow's
//! row format, value = how many times that row arrived (u32 LE) and how many of those
//! have matched nothing yet (u32 LE; outer joins emit or retract that many outer rows).
//! Identical rows share one entry: the join emits them as often as they arrived.

use std::sync::Arc;

use sabot_core::arrow::array::{ArrayRef, Int64Array, StringArray, UInt32Array, new_null_array};
use sabot_core::arrow::compute::take;
use sabot_core::arrow::row::{RowConverter, Rows, SortField};
use sabot_core::{RecordBatch, SchemaRef};

use crate::Result;

/// The event-time prefix of a namespace: byte order is time order.
#[inline]
pub(crate) fn time_key(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// The event time of a namespace written with [`time_key`], and the row after it.
#[inline]
pub(crate) fn split_namespace(ns: &[u8]) -> Option<(i64, &[u8])> {
    let (t, row) = ns.split_at_checked(8)?;
    let t = u64::from_be_bytes(t.try_into().ok()?) ^ (1 << 63);
    Some((t as i64, row))
}

/// A stored entry's value: (count, unmatched).
#[inline]
pub(crate) fn entry(value: &[u8]) -> Option<(u32, u32)> {
    let count = u32::from_le_bytes(value.get(..4)?.try_into().ok()?);
    let unmatched = u32::from_le_bytes(value.get(4..8)?.try_into().ok()?);
    Some((count, unmatched))
}

/// Writes an entry's value.
#[inline]
pub(crate) fn write_entry(out: &mut Vec<u8>, count: u32, unmatched: u32) {
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&unmatched.to_le_bytes());
}

/// A state entry that is not what a join writes: the state is corrupt or foreign.
pub(crate) fn bad_entry(operator: &str, what: &str) -> crate::OperatorError {
    crate::OperatorError::Snapshot {
        path: std::path::PathBuf::from(format!("<state of {operator}>")),
        reason: format!("malformed join entry: {what}"),
    }
}

/// Converts one input's rows to and from Arrow's row format.
pub(crate) struct SideRows {
    converter: RowConverter,
}

impl SideRows {
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self> {
        let converter = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(SideRows { converter })
    }

    /// Every row of `batch`.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Rows> {
        Ok(self.converter.convert_columns(batch.columns())?)
    }

    /// Columns of the rows `rows` (each from [`encode`](Self::encode)).
    pub(crate) fn decode<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        Ok(self.converter.convert_rows(rows.map(|r| parser.parse(r)))?)
    }
}

/// Output rows of a join being gathered: left row bytes, right row bytes or none (an
/// outer row), and optional extra `Int64` columns (window bounds).
pub(crate) struct Pairs {
    left: Vec<u8>,
    left_ends: Vec<usize>,
    right: Vec<u8>,
    right_ends: Vec<usize>,
    /// Per output row: the index of its right row, or `None`.
    right_of: Vec<Option<u32>>,
    extra: Vec<Vec<i64>>,
    /// Per output row, whether it retracts an earlier one; `None`: an append-only output.
    retract: Option<Vec<bool>>,
}

impl Pairs {
    pub(crate) fn new(extra_columns: usize, changelog: bool) -> Self {
        Pairs {
            left: Vec::new(),
            left_ends: Vec::new(),
            right: Vec::new(),
            right_ends: Vec::new(),
            right_of: Vec::new(),
            extra: vec![Vec::new(); extra_columns],
            retract: changelog.then(Vec::new),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.right_of.is_empty()
    }

    /// Adds a right row for later [`push`](Self::push)es; returns its index.
    pub(crate) fn add_right(&mut self, row: &[u8]) -> u32 {
        self.right.extend_from_slice(row);
        self.right_ends.push(self.right.len());
        (self.right_ends.len() - 1) as u32
    }

    /// Adds `times` output rows of `left` with right row `right` (from
    /// [`add_right`](Self::add_right)) or nulls, and these extra column values.
    pub(crate) fn push(
        &mut self,
        left: &[u8],
        right: Option<u32>,
        extra: &[i64],
        times: u32,
        retract: bool,
    ) {
        for _ in 0..times {
            if let Some(r) = &mut self.retract {
                r.push(retract);
            }
            self.left.extend_from_slice(left);
            self.left_ends.push(self.left.len());
            self.right_of.push(right);
            for (col, v) in self.extra.iter_mut().zip(extra) {
                col.push(*v);
            }
        }
    }

    fn slices<'a>(bytes: &'a [u8], ends: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
        ends.iter().scan(0, move |start, &end| {
            let s = &bytes[*start..end];
            *start = end;
            Some(s)
        })
    }

    /// The output batch (empty pairs give `None`); the pairs are cleared.
    pub(crate) fn finish(
        &mut self,
        left: &SideRows,
        right: &SideRows,
        right_out: &[usize],
        schema: &SchemaRef,
    ) -> Result<Option<RecordBatch>> {
        if self.is_empty() {
            // Right rows added for pairs that never came.
            self.clear();
            return Ok(None);
        }
        let mut cols = left.decode(Self::slices(&self.left, &self.left_ends))?;
        let right_cols = if self.right_ends.is_empty() {
            None
        } else {
            Some(right.decode(Self::slices(&self.right, &self.right_ends))?)
        };
        let idx = UInt32Array::from(self.right_of.clone());
        let n = self.right_of.len();
        for &i in right_out {
            let field = schema.field(cols.len());
            cols.push(match &right_cols {
                Some(rc) => take(rc[i].as_ref(), &idx, None)?,
                None => new_null_array(field.data_type(), n),
            });
        }
        for extra in &mut self.extra {
            cols.push(Arc::new(Int64Array::from(std::mem::take(extra))));
        }
        if let Some(r) = &mut self.retract {
            cols.push(Arc::new(StringArray::from_iter_values(
                r.drain(..).map(|r| if r { "-D" } else { "+I" }),
            )));
        }
        self.clear();
        Ok(Some(RecordBatch::try_new(schema.clone(), cols)?))
    }

    /// Forgets every row, keeping the buffers.
    fn clear(&mut self) {
        self.left.clear();
        self.left_ends.clear();
        self.right.clear();
        self.right_ends.clear();
        self.right_of.clear();
        self.extra.iter_mut().for_each(Vec::clear);
        if let Some(r) = &mut self.retract {
            r.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sabot_core::arrow::datatypes::{DataType, Field, Schema};

    use super::{Pairs, SideRows};

    /// Pairs kept between batches start each batch empty, also after a batch whose right
    /// rows found no partner (no output, nothing left behind to grow or to misnumber).
    #[test]
    fn a_batch_without_pairs_leaves_nothing_behind() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let rows = SideRows::new(&schema).unwrap();
        let mut pairs = Pairs::new(0, false);
        pairs.add_right(&[1, 2, 3]);
        assert!(pairs.finish(&rows, &rows, &[], &schema).unwrap().is_none());
        assert!(pairs.right.is_empty() && pairs.right_ends.is_empty());
        assert_eq!(pairs.add_right(&[4]), 0);
    }
}
