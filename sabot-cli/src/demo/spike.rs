//! A keyed operator that flags transactions far above their account's running average.

use std::sync::Arc;

use hashbrown::HashMap;
use sabot_core::arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, UInt32Array};
use sabot_core::arrow::compute::kernels::cmp::gt;
use sabot_core::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot_core::codec::{Codec, CodecError, frame, unframe};
use sabot_core::metrics::Counter;
use sabot_core::{CoreError, RecordBatch, SchemaRef, Timestamp, column_index};
use sabot_operators::{Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

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
            key_groups: ctx.key_groups(),
            max_parallelism: ctx.max_parallelism,
        }))
    }
}

/// Columns of the pending rows (projected to what scoring reads).
const ID: usize = 0;
const ACCOUNT: usize = 1;
const TS: usize = 4;
const PENDING_COLS: [usize; 5] = [0, 1, 2, 3, 4];

struct SpikeOp {
    /// txn_id, account, merchant, amount, ts in the input.
    cols: [usize; 5],
    schema: SchemaRef,
    factor: f64,
    min_history: u64,
    /// Per account: (transactions seen, sum of their amounts in cents, saturating).
    history: HashMap<i64, (u64, i64)>,
    /// Rows not yet behind the watermark (projected to txn_id, account, merchant,
    /// amount, ts), in batches each sorted by (ts, txn_id).
    pending: Vec<RecordBatch>,
    watermark: Timestamp,
    late: Counter,
    key_groups: sabot_core::KeyGroupRange,
    max_parallelism: usize,
}

impl SpikeOp {
    /// `batch` sorted by (ts, txn_id): both Int64, so a direct sort of row indices by a
    /// pair of integers (no per-comparison dynamic dispatch), then one `take`.
    fn sorted(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let ts = batch.column(TS).as_primitive::<Int64Type>().values();
        let id = batch.column(ID).as_primitive::<Int64Type>().values();
        if ts
            .windows(2)
            .zip(id.windows(2))
            .all(|(t, i)| (t[0], i[0]) <= (t[1], i[1]))
        {
            return Ok(batch.clone());
        }
        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_unstable_by_key(|&r| (ts[r as usize], id[r as usize]));
        Ok(take_record_batch(batch, &UInt32Array::from(order))?)
    }

    /// Scores every pending row with event time `<= wm`, in (ts, txn_id) order. Pending
    /// batches are each sorted, so the ready rows of each are a prefix: a zero-copy slice.
    fn score_until(&mut self, wm: i64, out: &mut Output) -> Result<()> {
        let ts = TS;
        let mut ready = Vec::new();
        for batch in std::mem::take(&mut self.pending) {
            let times = batch.column(ts).as_primitive::<Int64Type>().values();
            let cut = times.partition_point(|&t| t <= wm);
            if cut > 0 {
                ready.push(batch.slice(0, cut));
            }
            if cut < batch.num_rows() {
                self.pending.push(batch.slice(cut, batch.num_rows() - cut));
            }
        }
        let now = match ready.len() {
            0 => return Ok(()),
            1 => ready.swap_remove(0),
            _ => self.sorted(&concat_batches(&ready[0].schema(), &ready)?)?,
        };
        self.score(&now, out)
    }

    fn score(&mut self, batch: &RecordBatch, out: &mut Output) -> Result<()> {
        let col = |i: usize| batch.column(i).as_primitive::<Int64Type>().values();
        let [id, account, merchant, amount, ts] = PENDING_COLS.map(col);
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
            *sum = sum.saturating_add(a);
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
        let batch = batch.project(&self.cols)?;
        let times = batch.column(TS).as_primitive::<Int64Type>();
        let wm = self.watermark.millis();
        let late_count = times.values().iter().filter(|&&t| t <= wm).count();
        let batch = if late_count > 0 {
            self.late.add(late_count as u64);
            filter_record_batch(&batch, &gt(times, &Int64Array::new_scalar(wm))?)?
        } else {
            batch
        };
        if batch.num_rows() > 0 {
            let sorted = self.sorted(&batch)?;
            self.pending.push(sorted);
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

    fn snapshot(&mut self, target: &sabot_operators::SnapshotTarget) -> Result<()> {
        // A frame `SBSP`, version 1: watermark, history (account, count, sum) sorted by
        // account, the pending rows (five i64 columns).
        let mut b = Vec::new();
        self.watermark.millis().encode(&mut b);
        let mut history: Vec<_> = self.history.iter().collect();
        history.sort_unstable_by_key(|(a, _)| **a);
        (history.len() as u64).encode(&mut b);
        for (account, (n, sum)) in history {
            (*account, (*n, *sum)).encode(&mut b);
        }
        let rows: usize = self.pending.iter().map(RecordBatch::num_rows).sum();
        (rows as u64).encode(&mut b);
        for c in PENDING_COLS {
            for batch in &self.pending {
                for v in batch.column(c).as_primitive::<Int64Type>().values() {
                    v.encode(&mut b);
                }
            }
        }
        target.write(SPIKE_FILE, &frame(SPIKE_MAGIC, 1, &b))?;
        Ok(())
    }

    fn restore(&mut self, from: &[sabot_operators::SnapshotSource]) -> Result<()> {
        let mut watermark = Timestamp::MAX;
        let mut pending: Vec<Vec<i64>> = vec![Vec::new(); 5];
        for source in from {
            let bad = |e: CodecError| OperatorError::Snapshot {
                path: source.location(SPIKE_FILE),
                reason: e.reason,
            };
            let bytes = source.read(SPIKE_FILE)?;
            let (_, mut body) =
                unframe(&bytes, SPIKE_MAGIC, 1..=1, "spike detector snapshot").map_err(bad)?;
            let body = &mut body;
            watermark = watermark.min(Timestamp::from_millis(i64::decode(body).map_err(bad)?));
            let n = u64::decode(body).map_err(bad)?;
            for _ in 0..n {
                let (account, (count, sum)) = <(i64, (u64, i64))>::decode(body).map_err(bad)?;
                if self.owns(account) {
                    self.history.insert(account, (count, sum));
                }
            }
            let rows = u64::decode(body).map_err(bad)? as usize;
            let mut cols: Vec<Vec<i64>> = Vec::with_capacity(5);
            for _ in PENDING_COLS {
                let mut col = Vec::with_capacity(rows.min(1 << 20));
                for _ in 0..rows {
                    col.push(i64::decode(body).map_err(bad)?);
                }
                cols.push(col);
            }
            if !body.is_empty() {
                return Err(bad(CodecError::new(format!(
                    "{} bytes after the pending rows",
                    body.len()
                ))));
            }
            let keep: Vec<usize> = (0..rows).filter(|&r| self.owns(cols[ACCOUNT][r])).collect();
            for (to, from) in pending.iter_mut().zip(&cols) {
                to.extend(keep.iter().map(|&r| from[r]));
            }
        }
        if !from.is_empty() {
            self.watermark = watermark;
        }
        if !pending[0].is_empty() {
            let fields: Vec<Field> = ["txn_id", "account", "merchant", "amount", "ts"]
                .iter()
                .map(|n| Field::new(*n, DataType::Int64, false))
                .collect();
            let columns: Vec<ArrayRef> = pending
                .into_iter()
                .map(|c| Arc::new(Int64Array::from(c)) as ArrayRef)
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            let sorted = self.sorted(&batch)?;
            self.pending.push(sorted);
        }
        Ok(())
    }
}

/// The spike detector's snapshot file's format.
const SPIKE_MAGIC: &[u8; 4] = b"SBSP";

/// The spike detector's snapshot file.
const SPIKE_FILE: &str = "spike.sbsp";

impl SpikeOp {
    /// Whether `account` is in this subtask's key groups (after a rescale, snapshots hold
    /// other subtasks' accounts too).
    fn owns(&self, account: i64) -> bool {
        let kg =
            sabot_core::KeyGroup::of_hash(sabot_core::key::hash_i64(account), self.max_parallelism);
        self.key_groups.contains(kg)
    }
}
