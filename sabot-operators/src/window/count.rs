//! Keyed count windows: one result per key for every `size` records of that key.

use std::sync::Arc;

use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::key::KeyGroup;
use sabot_core::{RecordBatch, SchemaRef, Timestamp};
use sabot_state::{StateBackend, StateError};

use super::aggregate::{Aggregate, BoundAggregate, RowSel, merge_value, slot_sets};
use super::keyed::KeyedCore;
use crate::keys::KeyColumns;
use crate::{Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

/// Name of the output column numbering a key's count windows (0, 1, 2, ...).
pub const WINDOW_INDEX: &str = "window_index";
/// Name of the count windows' state in the state backend (and in snapshots).
pub const COUNT_WINDOW_STATE: &str = "count-window";

/// Keyed count windows (Flink's `countWindow(size)`): every `size` records of a key, in
/// the order the subtask receives them, make one window, emitted at once as one row —
/// the key columns, [`WINDOW_INDEX`] and one column per aggregate. A key's unfinished
/// window stays in the job's state backend (checkpointed and rescaled with its key
/// group); it is not emitted at the end of input, as in Flink.
///
/// Arrival order decides which records share a window: with several upstream subtasks
/// it is the order in which their batches happen to interleave.
#[derive(Clone, Debug)]
pub struct CountWindowFactory {
    keys: Vec<String>,
    size: u64,
    aggregates: Vec<Aggregate>,
    /// Early firing was asked for (not supported here: a build error).
    early: bool,
}

impl CountWindowFactory {
    /// Windows of `size` records per key of `keys`, computing `aggregates`.
    pub fn new(keys: Vec<String>, size: u64, aggregates: Vec<Aggregate>) -> Self {
        CountWindowFactory {
            keys,
            size,
            aggregates,
            early: false,
        }
    }

    /// Early firing applies to tumbling and sliding windows: asking for it here is a
    /// build error.
    pub fn with_early_firing(mut self) -> Self {
        self.early = true;
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::invalid_plan(self.name(), reason)
    }

    fn bind(&self, input: &SchemaRef) -> Result<(Vec<usize>, Vec<BoundAggregate>, SchemaRef)> {
        if self.early {
            return Err(self.invalid(
                "early firing applies to tumbling and sliding windows (use a trigger or a smaller window)",
            ));
        }
        if self.size == 0 || self.size > i64::MAX as u64 {
            return Err(self.invalid("a count window holds at least 1 record"));
        }
        let window = vec![Field::new(WINDOW_INDEX, DataType::Int64, false)];
        let super::KeyedOutput {
            key_idx,
            aggs,
            fields,
        } = super::keyed_output(input, &self.keys, window, &self.aggregates, None, |r| {
            self.invalid(r)
        })?;
        Ok((key_idx, aggs, Arc::new(Schema::new(fields))))
    }
}

impl OperatorFactory for CountWindowFactory {
    fn name(&self) -> String {
        format!("count_window({}, keys={:?})", self.size, self.keys)
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.bind(input)?.2)
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        let (key_idx, aggs, schema) = self.bind(input)?;
        let keys = KeyColumns::new(input, key_idx.clone())?;
        let operator = format!("count-window-{}", self.keys.join("-"));
        let fingerprint = format!(
            "count-window/1/size={}/keys={:?}/aggs={}",
            self.size,
            key_idx
                .iter()
                .map(|&i| input.field(i).data_type().to_string())
                .collect::<Vec<_>>(),
            aggs.iter()
                .map(BoundAggregate::layout)
                .collect::<Vec<_>>()
                .join(",")
        );
        let core = KeyedCore::open(
            ctx,
            &operator,
            COUNT_WINDOW_STATE,
            &fingerprint,
            keys,
            &aggs,
        )?;
        Ok(Box::new(CountWindowOp {
            size: self.size as i64,
            aggs,
            schema,
            core,
        }))
    }
}

struct CountWindowOp {
    size: i64,
    aggs: Vec<BoundAggregate>,
    schema: SchemaRef,
    /// Its state: per key group and key, its next window's index (i64 LE), the records
    /// already in that window (i64 LE) and, if any, their aggregates' slots. Count
    /// windows have no timers; the core's are kept for the common snapshot layout.
    core: KeyedCore<KeyGroup, (i64, bool)>,
}

fn bad_value(reason: String) -> StateError {
    StateError::BadValue {
        state: COUNT_WINDOW_STATE.into(),
        reason,
    }
}

/// No slot yet for a key in this batch.
const NONE: u32 = u32::MAX;

impl Operator for CountWindowOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self.core.keys.of(&batch, &mut self.core.hashes)?;
        self.core.table.clear();
        let mut key_of_row = Vec::with_capacity(rows);
        self.core
            .table
            .groups_of(&keys, &self.core.hashes, RowSel::All, &mut key_of_row);
        let n = self.core.table.len();

        // Each key's stored window: next index, records in it, their slots.
        let mut index = vec![0i64; n];
        let mut count = vec![0i64; n];
        // The stored slots of every key's open window, back to back (no allocation
        // per key), and where each key's are.
        let mut stored: Vec<u8> = Vec::new();
        let mut stored_at: Vec<Option<std::ops::Range<usize>>> = vec![None; n];
        let mut ns = Vec::new();
        let mut buf = Vec::new();
        for g in 0..n {
            let kg = KeyGroup::of_hash(self.core.table.hash(g), self.core.max_parallelism);
            ns.clear();
            self.core.table.key_bytes(g, &mut ns);
            if self
                .core
                .backend
                .get(self.core.state, kg, &ns, b"", &mut buf)?
            {
                let head = |at: usize| {
                    buf.get(at..at + 8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(i64::from_le_bytes)
                };
                let (Some(i), Some(c)) = (head(0), head(8)) else {
                    return Err(
                        bad_value(format!("{} bytes, not a count window", buf.len())).into(),
                    );
                };
                let slots = &buf[16..];
                if (c == 0) != slots.is_empty()
                    || (c > 0 && slot_sets(&self.core.accs, slots) != Some(1))
                {
                    return Err(bad_value(format!(
                        "{c} records with {} bytes of aggregates, not one slot set",
                        slots.len()
                    ))
                    .into());
                }
                index[g] = i;
                count[g] = c;
                if c > 0 {
                    stored_at[g] = Some(stored.len()..stored.len() + slots.len());
                    stored.extend_from_slice(slots);
                }
            }
        }

        // Rows to window slots, in arrival order: a key's slot completes at `size`.
        let mut slot_of_row = Vec::with_capacity(rows);
        let mut slot_key: Vec<u32> = Vec::new();
        let mut slot_index: Vec<i64> = Vec::new();
        let mut first_slot = vec![NONE; n];
        let mut current = vec![NONE; n];
        let mut complete: Vec<u32> = Vec::new();
        for &g in &key_of_row {
            let g = g as usize;
            if current[g] == NONE {
                current[g] = slot_key.len() as u32;
                slot_key.push(g as u32);
                slot_index.push(index[g]);
                if first_slot[g] == NONE {
                    first_slot[g] = current[g];
                }
            }
            slot_of_row.push(current[g]);
            count[g] += 1;
            if count[g] == self.size {
                complete.push(current[g]);
                current[g] = NONE;
                count[g] = 0;
                index[g] += 1;
            }
        }
        let slots = slot_key.len();
        let values = self
            .aggs
            .iter()
            .map(|a| a.values(batch.columns()))
            .collect::<Result<Vec<_>>>()?;
        for (acc, v) in self.core.accs.iter_mut().zip(&values) {
            acc.reset(slots);
            acc.update(v.as_ref(), None, RowSel::All, &slot_of_row)?;
        }
        // A key's records from earlier batches belong to its first slot here.
        for g in 0..n {
            if let Some(at) = stored_at[g].clone()
                && let s = &stored[at]
                && !merge_value(&mut self.core.accs, first_slot[g] as usize, s)
            {
                return Err(bad_value("malformed aggregates".into()).into());
            }
        }

        if !complete.is_empty() {
            let keys_of: Vec<u32> = complete.iter().map(|&s| slot_key[s as usize]).collect();
            let mut cols = self
                .core
                .table
                .key_columns(self.core.keys.converter(), Some(&keys_of))?;
            cols.push(Arc::new(Int64Array::from_iter_values(
                complete.iter().map(|&s| slot_index[s as usize]),
            )) as ArrayRef);
            for a in &self.core.accs {
                cols.push(a.finish(Some(&complete))?);
            }
            out.batch(RecordBatch::try_new(self.schema.clone(), cols)?);
        }

        // What stays open per key.
        let mut value = Vec::new();
        for g in 0..n {
            let kg = KeyGroup::of_hash(self.core.table.hash(g), self.core.max_parallelism);
            ns.clear();
            self.core.table.key_bytes(g, &mut ns);
            value.clear();
            value.extend_from_slice(&index[g].to_le_bytes());
            value.extend_from_slice(&count[g].to_le_bytes());
            if current[g] != NONE {
                let s = current[g] as usize;
                self.core.accs.iter().for_each(|a| a.encode(s, &mut value));
            }
            self.core
                .backend
                .put(self.core.state, kg, &ns, b"", &value)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        self.core.watermark = self.core.watermark.max(wm);
        out.watermark(wm);
        Ok(())
    }

    crate::snapshot::backend_snapshots!(core);
}
