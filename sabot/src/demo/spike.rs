//! A keyed operator that flags transactions far above their account's running average.

use std::collections::HashMap;
use std::sync::Arc;

use sabot_core::arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array};
use sabot_core::arrow::compute::kernels::cmp::{gt, lt_eq};
use sabot_core::arrow::compute::{
    SortColumn, concat_batches, filter_record_batch, lexsort_to_indices, min, take_record_batch,
};
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot_core::metrics::Counter;
use sabot_core::{CoreError, RecordBatch, SchemaRef, Timestamp, column_index};
use sabot_operators::{Operator, OperatorFactory, Output, Result, TaskContext};

/// Counter of transactions that arrived behind the watermark and were not scored.
pub const SPIKE_LATE_RECORDS: &str = "spike.late_records_dropped";

/// Flags a transaction whose amount exceeds `factor` times the average of the same
/// account's earlier transactions, once the account has at least `min_history` of them.
///
/// "Earlier" is in event time: rows are buffered until the watermark passes them, then
/// scored in `(ts, txn_id)` order, so the result does not depend on how the stream was
/// partitioned or interleaved. Must run on a stream keyed by `account`.
///
/// Output columns: `txn_id`, `account`, `merchant`, `amount`, `average` (of the earlier
/// transactions, in cents), `ts`.
#[derive(Clone, Debug)]
pub struct SpikeDetector {
    factor: f64,
    min_history: u64,
}

impl SpikeDetector {
    /// A detector for amounts above `factor` x the running average, after `min_history`
    /// transactions.
    pub fn new(factor: f64, min_history: u64) -> Self {
        SpikeDetector {
            factor,
            min_history,
        }
    }

    fn columns(input: &SchemaRef) -> Result<[usize; 5]> {
        let mut idx = [0; 5];
        for (slot, name) in idx
            .iter_mut()
            .zip(["txn_id", "account", "merchant", "amount", "ts"])
        {
            *slot = column_index(input, name)?;
            let t = input.field(*slot).data_type();
            if t != &DataType::Int64 {
                return Err(CoreError::InvalidColumnType {
                    column: name.into(),
                    expected: "Int64".into(),
                    actual: t.clone(),
                }
                .into());
            }
        }
        Ok(idx)
    }
}

impl OperatorFactory for SpikeDetector {
    fn name(&self) -> String {
        format!(
            "spike_detector(x{}, after {})",
            self.factor, self.min_history
        )
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Self::columns(input)?;
        Ok(Arc::new(Schema::new(vec![
            Field::new("txn_id", DataType::Int64, false),
            Field::new("account", DataType::Int64, false),
            Field::new("merchant", DataType::Int64, false),
            Field::new("amount", DataType::Int64, false),
            Field::new("average", DataType::Float64, false),
            Field::new("ts", DataType::Int64, false),
        ])))
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(SpikeOp {
            cols: Self::columns(input)?,
            schema: self.output_schema(input)?,
            factor: self.factor,
            min_history: self.min_history,
            history: HashMap::new(),
            pending: Vec::new(),
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(SPIKE_LATE_RECORDS),
        }))
    }
}

struct SpikeOp {
    /// txn_id, account, merchant, amount, ts.
    cols: [usize; 5],
    schema: SchemaRef,
    factor: f64,
    min_history: u64,
    /// Per account: (transactions seen, sum of their amounts).
    history: HashMap<i64, (u64, i128)>,
    /// Rows not yet behind the watermark, with each batch's smallest event time.
    pending: Vec<(RecordBatch, i64)>,
    watermark: Timestamp,
    late: Counter,
}

impl SpikeOp {
    fn ts_col(&self) -> usize {
        self.cols[4]
    }

    /// Scores every pending row with event time `<= wm`, in (ts, txn_id) order.
    fn score_until(&mut self, wm: i64, out: &mut Output) -> Result<()> {
        let ts = self.ts_col();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(_, lo)| *lo <= wm);
        self.pending = waiting;
        if ready.is_empty() {
            return Ok(());
        }
        let schema = ready[0].0.schema();
        let all = concat_batches(&schema, ready.iter().map(|(b, _)| b))?;
        let times = all.column(ts).as_primitive::<Int64Type>();
        let wm_scalar = Int64Array::new_scalar(wm);
        let now = filter_record_batch(&all, &lt_eq(times, &wm_scalar)?)?;
        let later = filter_record_batch(&all, &gt(times, &wm_scalar)?)?;
        if later.num_rows() > 0 {
            let lo = min(later.column(ts).as_primitive::<Int64Type>()).unwrap_or(i64::MAX);
            self.pending.push((later, lo));
        }
        let order = lexsort_to_indices(
            &[
                SortColumn {
                    values: now.column(ts).clone(),
                    options: None,
                },
                SortColumn {
                    values: now.column(self.cols[0]).clone(),
                    options: None,
                },
            ],
            None,
        )?;
        let now = take_record_batch(&now, &order)?;
        self.score(&now, out)
    }

    fn score(&mut self, batch: &RecordBatch, out: &mut Output) -> Result<()> {
        let col = |i: usize| batch.column(i).as_primitive::<Int64Type>().values();
        let [id, account, merchant, amount, ts] = self.cols.map(col);
        let mut hits: Vec<usize> = Vec::new();
        let mut averages: Vec<f64> = Vec::new();
        for row in 0..batch.num_rows() {
            let (n, sum) = self.history.entry(account[row]).or_insert((0, 0));
            let a = amount[row];
            if *n >= self.min_history {
                let avg = *sum as f64 / *n as f64;
                if a as f64 > self.factor * avg {
                    hits.push(row);
                    averages.push(avg);
                }
            }
            *n += 1;
            *sum += i128::from(a);
        }
        if hits.is_empty() {
            return Ok(());
        }
        let pick = |v: &[i64]| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(hits.iter().map(|&r| v[r])))
        };
        out.batch(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                pick(id),
                pick(account),
                pick(merchant),
                pick(amount),
                Arc::new(Float64Array::from(averages)),
                pick(ts),
            ],
        )?);
        Ok(())
    }
}

impl Operator for SpikeOp {
    fn on_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let times = batch.column(self.ts_col()).as_primitive::<Int64Type>();
        let wm = self.watermark.millis();
        let late = lt_eq(times, &Int64Array::new_scalar(wm))?;
        let late_count = late.true_count();
        let batch = if late_count > 0 {
            self.late.add(late_count as u64);
            filter_record_batch(&batch, &gt(times, &Int64Array::new_scalar(wm))?)?
        } else {
            batch
        };
        if batch.num_rows() > 0 {
            let lo =
                min(batch.column(self.ts_col()).as_primitive::<Int64Type>()).unwrap_or(i64::MAX);
            self.pending.push((batch, lo));
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.watermark {
            self.watermark = wm;
            self.score_until(wm.millis(), out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.score_until(i64::MAX, out)
    }
}
