//! Keyed tumbling event-time windows with vectorized aggregates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{ArrayRef, AsArray, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot_core::arrow::row::{RowConverter, Rows, SortField};
use sabot_core::key::{check_key_field, hash_columns};
use sabot_core::metrics::Counter;
use sabot_core::{CoreError, RecordBatch, SchemaRef, Timestamp, column_index, duration_millis};

use super::aggregate::{Accumulator, Aggregate, BoundAggregate, RowSel};
use super::groups::GroupTable;
use crate::time_column::{check_time_field, event_times, has_nulls};
use crate::{Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

/// Name of the window start column in a window's output (ms, inclusive).
pub const WINDOW_START: &str = "window_start";
/// Name of the window end column in a window's output (ms, exclusive).
pub const WINDOW_END: &str = "window_end";
/// Counter of records dropped because their window had already fired.
pub const LATE_RECORDS_DROPPED: &str = "window.late_records_dropped";

/// A keyed tumbling event-time window aggregate.
///
/// Rows are assigned to windows `[start, start + size)` with `start = ts - ts mod size`.
/// A window fires when the watermark reaches its last millisecond (`end - 1`), as in
/// Flink, emitting one row per key: the key columns, [`WINDOW_START`], [`WINDOW_END`] and
/// one column per aggregate. Records whose window already fired are late: they are dropped
/// and counted in [`LATE_RECORDS_DROPPED`]. End of input fires every open window.
#[derive(Clone, Debug)]
pub struct TumblingWindowFactory {
    keys: Vec<String>,
    time_column: Option<String>,
    size: Duration,
    aggregates: Vec<Aggregate>,
}

impl TumblingWindowFactory {
    /// Windows of `size` over `time_column` (the stream's event time; `None` is a build
    /// error), grouped by `keys`, computing `aggregates`.
    pub fn new(
        keys: Vec<String>,
        time_column: Option<String>,
        size: Duration,
        aggregates: Vec<Aggregate>,
    ) -> Self {
        TumblingWindowFactory {
            keys,
            time_column,
            size,
            aggregates,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::InvalidPlan {
            operator: self.name(),
            reason: reason.into(),
        }
    }

    fn bind(&self, input: &SchemaRef) -> Result<Bound> {
        let Some(time_column) = &self.time_column else {
            return Err(self.invalid(
                "the stream has no event time: call with_watermarks(..) before windowing",
            ));
        };
        let size_ms = duration_millis(self.size);
        if size_ms <= 0 {
            return Err(self.invalid(format!(
                "window size must be at least 1 ms, got {:?}",
                self.size
            )));
        }
        if self.keys.is_empty() {
            return Err(self.invalid("a keyed window needs at least one key column"));
        }
        if self.aggregates.is_empty() {
            return Err(self.invalid("a window needs at least one aggregate"));
        }
        let time_idx = column_index(input, time_column)?;
        check_time_field(input.field(time_idx))?;
        let mut key_idx = Vec::with_capacity(self.keys.len());
        let mut fields: Vec<Field> = Vec::new();
        for k in &self.keys {
            let i = column_index(input, k)?;
            check_key_field(input.field(i))?;
            key_idx.push(i);
            fields.push(input.field(i).clone());
        }
        fields.push(Field::new(WINDOW_START, DataType::Int64, false));
        fields.push(Field::new(WINDOW_END, DataType::Int64, false));
        let aggs = self
            .aggregates
            .iter()
            .map(|a| a.bind(input))
            .collect::<Result<Vec<_>>>()?;
        fields.extend(aggs.iter().map(|a| a.field.clone()));
        let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(self.invalid(format!(
                "output column `{}` appears twice: give the aggregate an alias",
                w[0]
            )));
        }
        Ok(Bound {
            key_idx,
            time_idx,
            size_ms,
            aggs,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

struct Bound {
    key_idx: Vec<usize>,
    time_idx: usize,
    size_ms: i64,
    aggs: Vec<BoundAggregate>,
    schema: SchemaRef,
}

impl OperatorFactory for TumblingWindowFactory {
    fn name(&self) -> String {
        format!("tumbling_window({:?}, keys={:?})", self.size, self.keys)
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.bind(input)?.schema)
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        let b = self.bind(input)?;
        let sort_fields = b
            .key_idx
            .iter()
            .map(|&i| SortField::new(input.field(i).data_type().clone()))
            .collect();
        let int64_key =
            b.key_idx.len() == 1 && input.field(b.key_idx[0]).data_type() == &DataType::Int64;
        Ok(Box::new(TumblingWindowOp {
            converter: RowConverter::new(sort_fields)?,
            int64_key,
            bound: b,
            windows: BTreeMap::new(),
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            groups: Vec::new(),
        }))
    }
}

/// The key columns of one batch, in the form the group tables take.
enum Keys {
    Int64(Int64Array),
    Rows(Rows),
}

struct WindowState {
    groups: GroupTable,
    accs: Vec<Accumulator>,
}

struct TumblingWindowOp {
    bound: Bound,
    converter: RowConverter,
    /// One `Int64` key column: groups keyed by the integer, no row conversion.
    int64_key: bool,
    /// Open windows by start.
    windows: BTreeMap<i64, WindowState>,
    watermark: Timestamp,
    late: Counter,
    hashes: Vec<u64>,
    groups: Vec<u32>,
}

impl TumblingWindowOp {
    #[inline]
    fn window_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.bound.size_ms)
    }

    /// A window is late once the watermark reached its last millisecond.
    #[inline]
    fn is_late(&self, start: i64) -> bool {
        Timestamp::from_millis(start.saturating_add(self.bound.size_ms - 1)) <= self.watermark
    }

    fn fire_until(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if Timestamp::from_millis(start.saturating_add(self.bound.size_ms - 1)) > wm {
                break;
            }
            let state = entry.remove();
            out.batch(self.emit(start, &state)?);
        }
        Ok(())
    }

    fn emit(&self, start: i64, w: &WindowState) -> Result<RecordBatch> {
        let n = w.groups.len();
        let mut cols: Vec<ArrayRef> = w.groups.key_columns(&self.converter)?;
        cols.push(Arc::new(Int64Array::from_value(start, n)));
        cols.push(Arc::new(Int64Array::from_value(
            start.saturating_add(self.bound.size_ms),
            n,
        )));
        cols.extend(w.accs.iter().map(Accumulator::finish));
        Ok(RecordBatch::try_new(self.bound.schema.clone(), cols)?)
    }
}

impl Operator for TumblingWindowOp {
    fn on_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = event_times(batch.column(self.bound.time_idx))?;
        if has_nulls(&times) {
            return Err(CoreError::InvalidColumnType {
                column: batch.schema().field(self.bound.time_idx).name().clone(),
                expected: "non-null event times".into(),
                actual: batch
                    .schema()
                    .field(self.bound.time_idx)
                    .data_type()
                    .clone(),
            }
            .into());
        }
        let key_cols: Vec<ArrayRef> = self
            .bound
            .key_idx
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        hash_columns(&key_cols, &mut self.hashes)?;
        let keys = if self.int64_key {
            Keys::Int64(key_cols[0].as_primitive::<Int64Type>().clone())
        } else {
            Keys::Rows(self.converter.convert_columns(&key_cols)?)
        };
        let values = self
            .bound
            .aggs
            .iter()
            .map(|a| a.values(batch.columns()))
            .collect::<Result<Vec<_>>>()?;

        // Usually a whole batch falls in one window; otherwise bucket rows by window.
        let ts = times.values();
        let (lo, hi) = ts
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        let (first, last) = (self.window_start(lo), self.window_start(hi));
        let buckets: Vec<(i64, Option<Vec<u32>>)> = if first == last {
            if self.is_late(first) {
                self.late.add(ts.len() as u64);
                return Ok(());
            }
            vec![(first, None)]
        } else {
            let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            let mut late = 0u64;
            for (row, &t) in ts.iter().enumerate() {
                let start = self.window_start(t);
                if self.is_late(start) {
                    late += 1;
                } else {
                    by_window.entry(start).or_default().push(row as u32);
                }
            }
            self.late.add(late);
            by_window.into_iter().map(|(s, r)| (s, Some(r))).collect()
        };

        for (start, sel) in buckets {
            let converter = &self.converter;
            let aggs = &self.bound.aggs;
            let w = self.windows.entry(start).or_insert_with(|| WindowState {
                groups: match keys {
                    Keys::Int64(_) => GroupTable::for_int64(),
                    Keys::Rows(_) => GroupTable::for_rows(converter),
                },
                accs: aggs.iter().map(BoundAggregate::new_accumulator).collect(),
            });
            self.groups.clear();
            let hashes = &self.hashes;
            let groups = &mut self.groups;
            let mut group_of = |r: usize| match &keys {
                Keys::Int64(k) => w.groups.find_or_insert_i64(hashes[r], k.value(r)),
                Keys::Rows(k) => w.groups.find_or_insert_row(hashes[r], k.row(r)),
            };
            let sel = match &sel {
                None => {
                    groups.extend((0..hashes.len()).map(&mut group_of));
                    RowSel::All
                }
                Some(sel) => {
                    groups.extend(sel.iter().map(|&r| group_of(r as usize)));
                    RowSel::Some(sel)
                }
            };
            for (acc, v) in w.accs.iter_mut().zip(&values) {
                acc.resize(w.groups.len());
                acc.update(v.as_ref(), sel, &self.groups);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.watermark {
            self.watermark = wm;
            self.fire_until(wm, out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.fire_until(Timestamp::MAX, out)
    }
}
