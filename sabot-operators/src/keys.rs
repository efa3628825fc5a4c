//! The key columns of a keyed operator's input: hashed as the exchange hashes them, and
//! in the form keyed state stores them (8 bytes little-endian for a single `Int64`
//! column, Arrow's row format otherwise).

use sabot_core::arrow::array::{ArrayRef, AsArray, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Int64Type};
use sabot_core::arrow::row::{RowConverter, Rows, SortField};
use sabot_core::key::hash_columns;
use sabot_core::{RecordBatch, SchemaRef};

use crate::Result;

/// Extracts and hashes the key columns of batches of one schema.
pub(crate) struct KeyColumns {
    idx: Vec<usize>,
    int64: bool,
    converter: RowConverter,
}

/// The keys of one batch.
pub(crate) enum BatchKeys {
    /// A single `Int64` key column: compared and stored as integers.
    Int64(Int64Array),
    /// Anything else, in Arrow's row format.
    Rows(Rows),
}

impl KeyColumns {
    /// For key columns `idx` of `input` (already checked as key columns).
    pub(crate) fn new(input: &SchemaRef, idx: Vec<usize>) -> Result<Self> {
        let int64 = idx.len() == 1 && input.field(idx[0]).data_type() == &DataType::Int64;
        let converter = RowConverter::new(
            idx.iter()
                .map(|&i| SortField::new(input.field(i).data_type().clone()))
                .collect(),
        )?;
        Ok(KeyColumns {
            idx,
            int64,
            converter,
        })
    }

    /// Whether the key is a single `Int64` column.
    pub(crate) fn is_int64(&self) -> bool {
        self.int64
    }

    /// The row converter of the key columns.
    pub(crate) fn converter(&self) -> &RowConverter {
        &self.converter
    }

    /// The keys of `batch`, with each row's key hash written into `hashes`.
    pub(crate) fn of(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<BatchKeys> {
        let cols: Vec<ArrayRef> = self.idx.iter().map(|&i| batch.column(i).clone()).collect();
        hash_columns(&cols, hashes)?;
        Ok(if self.int64 {
            BatchKeys::Int64(cols[0].as_primitive::<Int64Type>().clone())
        } else {
            BatchKeys::Rows(self.converter.convert_columns(&cols)?)
        })
    }
}

impl BatchKeys {
    /// Appends row `row`'s key in its stored form.
    #[inline]
    pub(crate) fn write(&self, row: usize, out: &mut Vec<u8>) {
        match self {
            BatchKeys::Int64(k) => out.extend_from_slice(&k.value(row).to_le_bytes()),
            BatchKeys::Rows(r) => out.extend_from_slice(r.row(row).as_ref()),
        }
    }
}
