//! Event-time bounded joins: interval join and window join.

use std::time::Duration;

use sabot_core::arrow::array::Array;
use sabot_core::arrow::datatypes::{DataType, Field};
use sabot_core::key::KeyGroup;
use sabot_core::metrics::Counter;
use sabot_core::{RecordBatch, SchemaRef, Timestamp, column_index, duration_millis};
use sabot_state::{StateBackend, StateId};
use sabot_time::TimerService;

use super::rows::{Pairs, SideRows, bad_entry, entry, split_namespace, time_key, write_entry};
use super::{JoinColumns, JoinType, join_columns, side_fingerprint};
use crate::keys::KeyColumns;
use crate::time_column::{check_time_field, event_times};
use crate::{
    Operator, OperatorError, Output, Result, SnapshotWrite, TaskContext, TwoInputOperatorFactory,
    WINDOW_END, WINDOW_START,
};

/// Counter of rows a time-bounded join dropped because they came after the watermark had
/// passed their event time (their partners may be gone).
pub const JOIN_LATE_RECORDS_DROPPED: &str = "join.late_records_dropped";

/// Which rows of the other side a row can join.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Bound {
    /// `right.ts` in `[left.ts + lower, left.ts + upper]`.
    Interval { lower: i64, upper: i64 },
    /// The same tumbling window `[start, start + size)`.
    Window { size: i64 },
}

impl Bound {
    /// The event times of right rows a left row at `ts` joins (inclusive).
    fn right_range(self, ts: i64) -> (i64, i64) {
        match self {
            Bound::Interval { lower, upper } => {
                (ts.saturating_add(lower), ts.saturating_add(upper))
            }
            Bound::Window { size } => window_range(ts, size),
        }
    }

    /// The event times of left rows a right row at `ts` joins (inclusive).
    fn left_range(self, ts: i64) -> (i64, i64) {
        match self {
            Bound::Interval { lower, upper } => {
                (ts.saturating_sub(upper), ts.saturating_sub(lower))
            }
            Bound::Window { size } => window_range(ts, size),
        }
    }

    /// The extra output columns' values for a pair whose left row is at `ts`.
    fn extra(self, ts: i64) -> Vec<i64> {
        match self {
            Bound::Interval { .. } => Vec::new(),
            Bound::Window { size } => {
                let (start, last) = window_range(ts, size);
                vec![start, last.saturating_add(1)]
            }
        }
    }
}

/// The first and last millisecond of the window of `size` holding `ts`.
fn window_range(ts: i64, size: i64) -> (i64, i64) {
    let start = ts - ts.rem_euclid(size);
    (start, start.saturating_add(size - 1))
}

/// An event-time bounded join of two keyed streams: the interval join and the window
/// join, inner or left outer (see the [module docs](super)).
///
/// A row is kept in keyed state until the watermark passes the last event time a
/// partner may have; then it is deleted (and, in a left outer join, a left row that
/// matched nothing is emitted with nulls). A row whose event time is at or behind the
/// watermark when it arrives is dropped and counted ([`JOIN_LATE_RECORDS_DROPPED`]): its
/// partners may already be gone.
///
/// ```
/// use std::time::Duration;
/// use sabot_core::metrics::Metrics;
/// use sabot_core::{Message, Timestamp};
/// use sabot_core::test_util::int64_batch;
/// use sabot_operators::{TaskContext, TimeJoinFactory, TwoInputOperatorFactory, Output};
///
/// let bids = int64_batch(&[("auction", vec![1, 2]), ("ts", vec![10, 20])]);
/// let auctions = int64_batch(&[("id", vec![1]), ("opened", vec![5])]);
/// let join = TimeJoinFactory::interval(
///     &["auction"], &["id"], "ts", "opened",
///     Duration::from_millis(10), Duration::ZERO, true, // auction opened up to 10 ms before
/// );
/// let ctx = TaskContext::new(0, 1, 128, Metrics::new());
/// let mut op = join.create(&bids.schema(), &auctions.schema(), &ctx).unwrap();
/// let mut out = Output::new();
/// op.on_batch_from(0, bids, &mut out).unwrap();
/// op.on_batch_from(1, auctions, &mut out).unwrap();
/// let Some(Message::Data(pairs)) = out.drain().next() else { panic!() };
/// assert_eq!(pairs.num_rows(), 1); // bid on auction 1 at 10, auction opened at 5
/// ```
#[derive(Clone, Debug)]
pub struct TimeJoinFactory {
    left_keys: Vec<String>,
    right_keys: Vec<String>,
    left_time: Option<String>,
    right_time: Option<String>,
    bound: Bound,
    join_type: JoinType,
}

impl TimeJoinFactory {
    /// An interval join: a right row joins a left row of equal key when `right.ts` lies
    /// in `[left.ts - before, left.ts + after]` (`before_negative = true`), or in
    /// `[left.ts + before, left.ts + after]` (`false`): Flink's `between(lower, upper)`
    /// with `lower = -before` or `before`.
    pub fn interval(
        left_keys: &[&str],
        right_keys: &[&str],
        left_time: &str,
        right_time: &str,
        before: Duration,
        after: Duration,
        before_negative: bool,
    ) -> Self {
        let lower = duration_millis(before);
        Self::interval_ms(
            left_keys,
            right_keys,
            left_time,
            right_time,
            if before_negative { -lower } else { lower },
            duration_millis(after),
        )
    }

    /// An interval join with bounds in milliseconds: `right.ts` in `[left.ts + lower,
    /// left.ts + upper]` (`lower <= upper`, either may be negative).
    pub fn interval_ms(
        left_keys: &[&str],
        right_keys: &[&str],
        left_time: &str,
        right_time: &str,
        lower: i64,
        upper: i64,
    ) -> Self {
        TimeJoinFactory {
            left_keys: left_keys.iter().map(|k| (*k).to_owned()).collect(),
            right_keys: right_keys.iter().map(|k| (*k).to_owned()).collect(),
            left_time: Some(left_time.to_owned()),
            right_time: Some(right_time.to_owned()),
            bound: Bound::Interval { lower, upper },
            join_type: JoinType::Inner,
        }
    }

    /// A window join: rows of equal key in the same tumbling event-time window of `size`
    /// join; the output gets the window's [`WINDOW_START`] and [`WINDOW_END`] columns.
    pub fn window(
        left_keys: &[&str],
        right_keys: &[&str],
        left_time: &str,
        right_time: &str,
        size: Duration,
    ) -> Self {
        TimeJoinFactory {
            left_keys: left_keys.iter().map(|k| (*k).to_owned()).collect(),
            right_keys: right_keys.iter().map(|k| (*k).to_owned()).collect(),
            left_time: Some(left_time.to_owned()),
            right_time: Some(right_time.to_owned()),
            bound: Bound::Window {
                size: duration_millis(size),
            },
            join_type: JoinType::Inner,
        }
    }

    /// Sets the event-time columns; `None` says that input has no event time (a build
    /// error naming it: how the `Stream` API reports a join before `with_watermarks`).
    pub fn with_time_columns(mut self, left: Option<&str>, right: Option<&str>) -> Self {
        self.left_time = left.map(str::to_owned);
        self.right_time = right.map(str::to_owned);
        self
    }

    /// Emits what [`JoinType`] says (default: inner).
    pub fn with_join_type(mut self, join_type: JoinType) -> Self {
        self.join_type = join_type;
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::InvalidPlan {
            operator: self.name(),
            reason: reason.into(),
        }
    }

    fn bind(&self, left: &SchemaRef, right: &SchemaRef) -> Result<(JoinColumns, usize, usize)> {
        let extra = match self.bound {
            Bound::Interval { lower, upper } => {
                if lower > upper {
                    return Err(self.invalid(format!(
                        "the interval's lower bound {lower} ms is above its upper bound {upper} ms"
                    )));
                }
                Vec::new()
            }
            Bound::Window { size } => {
                if size <= 0 {
                    return Err(self.invalid("window size must be at least 1 ms"));
                }
                vec![
                    Field::new(WINDOW_START, DataType::Int64, false),
                    Field::new(WINDOW_END, DataType::Int64, false),
                ]
            }
        };
        let cols = join_columns(
            &self.name(),
            left,
            right,
            &self.left_keys,
            &self.right_keys,
            self.join_type,
            extra,
        )?;
        let time = |col: &Option<String>, side: &str| {
            col.clone().ok_or_else(|| {
                self.invalid(format!(
                    "the {side} input has no event time: call with_watermarks(..) before the join"
                ))
            })
        };
        let lt = column_index(left, &time(&self.left_time, "left")?)?;
        let rt = column_index(right, &time(&self.right_time, "right")?)?;
        check_time_field(left.field(lt))?;
        check_time_field(right.field(rt))?;
        Ok((cols, lt, rt))
    }
}

impl TwoInputOperatorFactory for TimeJoinFactory {
    fn name(&self) -> String {
        let kind = match self.join_type {
            JoinType::Inner => "",
            JoinType::LeftOuter => "left_outer_",
        };
        match self.bound {
            Bound::Interval { lower, upper } => format!(
                "{kind}interval_join({:?} = {:?}, {}ms..={}ms)",
                self.left_keys, self.right_keys, lower, upper
            ),
            Bound::Window { size } => format!(
                "{kind}window_join({:?} = {:?}, {}ms)",
                self.left_keys, self.right_keys, size
            ),
        }
    }

    fn output_schema(&self, left: &SchemaRef, right: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.bind(left, right)?.0.schema)
    }

    fn partition_keys(&self) -> Option<(Vec<String>, Vec<String>)> {
        Some((self.left_keys.clone(), self.right_keys.clone()))
    }

    fn create(
        &self,
        left: &SchemaRef,
        right: &SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Box<dyn Operator>> {
        let (cols, lt, rt) = self.bind(left, right)?;
        let name = self.name();
        let mut backend = ctx.open_state(&format!(
            "join-{}-{}",
            self.left_keys.join("-"),
            self.right_keys.join("-")
        ))?;
        let states = [
            backend.register(
                "join.left",
                &side_fingerprint("time-join-left", left, &cols.left_keys),
            )?,
            backend.register(
                "join.right",
                &side_fingerprint("time-join-right", right, &cols.right_keys),
            )?,
        ];
        Ok(Box::new(TimeJoinOp {
            sides: [
                Side {
                    keys: KeyColumns::new(left, cols.left_keys.clone())?,
                    rows: SideRows::new(left)?,
                    time: lt,
                },
                Side {
                    keys: KeyColumns::new(right, cols.right_keys.clone())?,
                    rows: SideRows::new(right)?,
                    time: rt,
                },
            ],
            extra_columns: match self.bound {
                Bound::Interval { .. } => 0,
                Bound::Window { .. } => 2,
            },
            cols,
            name,
            bound: self.bound,
            outer: self.join_type == JoinType::LeftOuter,
            backend,
            states,
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(JOIN_LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            key: Vec::new(),
            ns: Vec::new(),
        }))
    }
}

/// One input of a join.
struct Side {
    keys: KeyColumns,
    rows: SideRows,
    time: usize,
}

/// Cleanup timers: per (key group, key), namespace = whether it is the right side.
type Timers = TimerService<(KeyGroup, Vec<u8>), bool>;

struct TimeJoinOp {
    sides: [Side; 2],
    cols: JoinColumns,
    extra_columns: usize,
    name: String,
    bound: Bound,
    outer: bool,
    backend: Box<dyn StateBackend>,
    /// Stored rows of the left and the right input.
    states: [StateId; 2],
    timers: Timers,
    max_parallelism: usize,
    watermark: Timestamp,
    late: Counter,
    hashes: Vec<u64>,
    key: Vec<u8>,
    ns: Vec<u8>,
}

impl TimeJoinOp {
    /// The last event time a partner of a row at `ts` on side `right` may have: the row
    /// is deleted once the watermark reaches it.
    fn expiry(&self, right: bool, ts: i64) -> i64 {
        if right {
            self.bound.left_range(ts).1
        } else {
            self.bound.right_range(ts).1
        }
    }

    fn on_side(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let right = input == 1;
        let side = &self.sides[input];
        let times = event_times(batch.column(side.time))?;
        let keys = side.keys.of(&batch, &mut self.hashes)?;
        let rows = side.rows.encode(&batch)?;
        let mut pairs = Pairs::new(self.extra_columns);
        let (mine, other) = (self.states[input], self.states[1 - input]);
        let mut to_mark: Vec<Vec<u8>> = Vec::new();
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                return Err(OperatorError::BadRecord {
                    reason: format!(
                        "null event time in column `{}` of the {} input",
                        batch.schema().field(self.sides[input].time).name(),
                        if right { "right" } else { "left" }
                    ),
                    position: format!("row {row} of a batch in `{}`", self.name),
                });
            }
            let ts = times.value(row);
            if Timestamp::from_millis(ts) <= self.watermark {
                self.late.add(1);
                continue;
            }
            let kg = KeyGroup::of_hash(self.hashes[row], self.max_parallelism);
            self.key.clear();
            keys.write(row, &mut self.key);
            let me = rows.row(row);
            let me = me.as_ref();
            let (lo, hi) = if right {
                self.bound.left_range(ts)
            } else {
                self.bound.right_range(ts)
            };
            // Probe the other side's rows of this key, in time order.
            let mut matched = false;
            let mut bad = None;
            let bound = self.bound;
            let outer = self.outer;
            let my_index = (right).then(|| pairs.add_right(me));
            self.backend
                .scan(other, kg, &self.key, b"", &mut |ns, value| {
                    let (Some((t, partner)), Some((count, partner_matched))) =
                        (split_namespace(ns), entry(value))
                    else {
                        bad = Some("namespace or value too short");
                        return false;
                    };
                    if t > hi {
                        return false;
                    }
                    if t >= lo {
                        matched = true;
                        if right {
                            let extra = bound.extra(t);
                            pairs.push(partner, my_index, &extra, count);
                            if outer && !partner_matched {
                                to_mark.push(ns.to_vec());
                            }
                        } else {
                            let r = pairs.add_right(partner);
                            pairs.push(me, Some(r), &bound.extra(ts), count);
                        }
                    }
                    true
                })?;
            if let Some(what) = bad {
                return Err(bad_entry(&self.name, what));
            }
            // A left outer join remembers which left rows found a partner.
            for ns in to_mark.drain(..) {
                let mut err = None;
                self.backend
                    .update(other, kg, &self.key, &ns, &mut |old, new| {
                        match old.and_then(entry) {
                            Some((count, _)) => write_entry(new, count, true),
                            None => err = Some("a left row vanished while being matched"),
                        }
                        Ok(())
                    })?;
                if let Some(what) = err {
                    return Err(bad_entry(&self.name, what));
                }
            }
            // Keep the row for partners still to come, until the watermark passes.
            self.ns.clear();
            self.ns.extend_from_slice(&time_key(ts));
            self.ns.extend_from_slice(me);
            let mark = matched && !right;
            let mut err = None;
            self.backend
                .update(mine, kg, &self.key, &self.ns, &mut |old, new| {
                    let (count, was) = match old {
                        None => (0, false),
                        Some(v) => match entry(v) {
                            Some(e) => e,
                            None => {
                                err = Some("stored value too short");
                                (0, false)
                            }
                        },
                    };
                    write_entry(new, count.saturating_add(1), was || mark);
                    Ok(())
                })?;
            if let Some(what) = err {
                return Err(bad_entry(&self.name, what));
            }
            let at = Timestamp::from_millis(self.expiry(right, ts));
            self.timers
                .register_event_time_timer((kg, self.key.clone()), right, at);
        }
        self.emit(&mut pairs, out)
    }

    fn emit(&self, pairs: &mut Pairs, out: &mut Output) -> Result<()> {
        if let Some(b) = pairs.finish(
            &self.sides[0].rows,
            &self.sides[1].rows,
            &self.cols.right_out,
            &self.cols.schema,
        )? {
            out.batch(b);
        }
        Ok(())
    }

    /// Deletes the rows the watermark made unjoinable; a left outer join emits the left
    /// ones that matched nothing.
    fn expire(&mut self, out: &mut Output) -> Result<()> {
        self.timers.advance_watermark(self.watermark);
        let mut pairs = Pairs::new(self.extra_columns);
        let mut expired: Vec<Vec<u8>> = Vec::new();
        while let Some(t) = self.timers.next_event_timer() {
            let right = t.namespace;
            let (kg, key) = t.key;
            let state = self.states[usize::from(right)];
            let wm = self.watermark.millis();
            let (bound, outer) = (self.bound, self.outer);
            let mut bad = None;
            self.backend.scan(state, kg, &key, b"", &mut |ns, value| {
                let (Some((ts, row)), Some((count, matched))) = (split_namespace(ns), entry(value))
                else {
                    bad = Some("namespace or value too short");
                    return false;
                };
                let expiry = if right {
                    bound.left_range(ts).1
                } else {
                    bound.right_range(ts).1
                };
                // Expiry grows with time: the rest is still joinable.
                if expiry > wm {
                    return false;
                }
                if outer && !right && !matched {
                    pairs.push(row, None, &bound.extra(ts), count);
                }
                expired.push(ns.to_vec());
                true
            })?;
            if let Some(what) = bad {
                return Err(bad_entry(&self.name, what));
            }
            for ns in expired.drain(..) {
                self.backend.delete(state, kg, &key, &ns)?;
            }
        }
        self.emit(&mut pairs, out)
    }
}

impl Operator for TimeJoinOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.on_side(0, batch, out)
    }

    fn on_batch_from(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if input > 1 {
            return Err(OperatorError::InvalidPlan {
                operator: self.name.clone(),
                reason: format!("a join has two inputs, got a batch for input {input}"),
            });
        }
        self.on_side(input, batch, out)
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.watermark {
            self.watermark = wm;
            self.expire(out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = Timestamp::MAX;
        self.expire(out)
    }

    fn snapshot(&mut self, dir: &std::path::Path) -> Result<()> {
        SnapshotWrite::finish(self.snapshot_async(dir)?)
    }

    fn snapshot_async(&mut self, dir: &std::path::Path) -> Result<Option<SnapshotWrite>> {
        crate::snapshot::backend_write_async(dir, &mut self.backend, &self.timers, self.watermark)
    }

    fn restore(&mut self, dirs: &[std::path::PathBuf]) -> Result<()> {
        self.watermark = crate::snapshot::backend_read(dirs, &mut self.backend, &mut self.timers)?;
        Ok(())
    }
}
