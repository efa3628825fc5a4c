//! Joins that keep both sides in keyed state: the interval join and the window join
//! (bounded by event time), and the regular join (bounded by a time to live, if any).

use std::time::Duration;

use sabot_core::arrow::array::Array;
use sabot_core::arrow::datatypes::{DataType, Field};
use sabot_core::key::KeyGroup;
use sabot_core::metrics::Counter;
use sabot_core::{RecordBatch, SchemaRef, Timestamp, column_index, duration_millis};
use sabot_time::{TimeDomain, TimerService};

use super::rows::{Pairs, SideRows};
use super::store::{Found, Key, RowStore, StateNames};
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

/// The column of a changelog output (a regular left outer join): `+I` for a row
/// inserted, `-D` for an earlier row retracted.
pub const CHANGELOG_OP: &str = "op";

/// Which rows of the other side a row can join.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Bound {
    /// `right.ts` in `[left.ts + lower, left.ts + upper]`.
    Interval { lower: i64, upper: i64 },
    /// The same tumbling window `[start, start + size)`.
    Window { size: i64 },
    /// Any time (a regular join): a row stays `ttl` after its event time (`Event`) or its
    /// arrival (`Processing`), or for ever.
    Regular(Ttl),
}

/// How long a regular join keeps a row.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Ttl {
    Forever,
    Event(i64),
    Processing(i64),
}

impl Bound {
    /// The event times of right rows a left row at `ts` joins (inclusive).
    fn right_range(self, ts: i64) -> (i64, i64) {
        match self {
            Bound::Interval { lower, upper } => {
                (ts.saturating_add(lower), ts.saturating_add(upper))
            }
            Bound::Window { size } => window_range(ts, size),
            Bound::Regular(_) => (i64::MIN, i64::MAX),
        }
    }

    /// When a row stored at time `ts` (its event time, or its arrival under a
    /// processing-time TTL) on side `right` can be deleted: the watermark reached the
    /// last time a partner may have, or its time to live ran out.
    fn expiry(self, right: bool, ts: i64) -> i64 {
        match self {
            Bound::Regular(Ttl::Forever) => i64::MAX,
            Bound::Regular(Ttl::Event(ttl) | Ttl::Processing(ttl)) => ts.saturating_add(ttl),
            _ if right => self.left_range(ts).1,
            _ => self.right_range(ts).1,
        }
    }

    /// Whether rows are bounded by event time (late ones are dropped, and outer rows
    /// come once no partner can arrive).
    fn is_time_bounded(self) -> bool {
        !matches!(self, Bound::Regular(_))
    }

    /// The event times of left rows a right row at `ts` joins (inclusive).
    fn left_range(self, ts: i64) -> (i64, i64) {
        match self {
            Bound::Interval { lower, upper } => {
                (ts.saturating_sub(upper), ts.saturating_sub(lower))
            }
            Bound::Window { size } => window_range(ts, size),
            Bound::Regular(_) => (i64::MIN, i64::MAX),
        }
    }

    /// The extra output columns' values for a pair whose left row is at `ts`: the
    /// window's start and end (only a window join has these columns; the output takes
    /// as many values as it has extra columns). No allocation: this runs per pair.
    #[inline]
    fn extra(self, ts: i64) -> [i64; 2] {
        match self {
            Bound::Interval { .. } | Bound::Regular(_) => [0, 0],
            Bound::Window { size } => {
                let (start, last) = window_range(ts, size);
                [start, last.saturating_add(1)]
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
/// use sabot_test_kit::int64_batch;
/// use sabot_operators::{TaskContext, JoinFactory, TwoInputOperatorFactory, Output};
///
/// let bids = int64_batch(&[("auction", vec![1, 2]), ("ts", vec![10, 20])]);
/// let auctions = int64_batch(&[("id", vec![1]), ("opened", vec![5])]);
/// let join = JoinFactory::interval(
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
pub struct JoinFactory {
    left_keys: Vec<String>,
    right_keys: Vec<String>,
    left_time: Option<String>,
    right_time: Option<String>,
    bound: Bound,
    join_type: JoinType,
    /// Per side: whether each key comes at most once (see [`Self::with_unique_keys`]).
    unique: [bool; 2],
}

impl JoinFactory {
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
        JoinFactory {
            left_keys: left_keys.iter().map(|k| (*k).to_owned()).collect(),
            right_keys: right_keys.iter().map(|k| (*k).to_owned()).collect(),
            left_time: Some(left_time.to_owned()),
            right_time: Some(right_time.to_owned()),
            bound: Bound::Interval { lower, upper },
            join_type: JoinType::Inner,
            unique: [false; 2],
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
        JoinFactory {
            left_keys: left_keys.iter().map(|k| (*k).to_owned()).collect(),
            right_keys: right_keys.iter().map(|k| (*k).to_owned()).collect(),
            left_time: Some(left_time.to_owned()),
            right_time: Some(right_time.to_owned()),
            bound: Bound::Window {
                size: duration_millis(size),
            },
            join_type: JoinType::Inner,
            unique: [false; 2],
        }
    }

    /// A regular join: every pair of rows of equal key, whenever they arrive, each row
    /// kept in state for ever (see [`with_ttl`](Self::with_ttl)). No event time needed.
    /// A left outer regular join emits a left row with nulls at once when nothing
    /// matches, and retracts it when a partner comes: its output has a
    /// [`CHANGELOG_OP`] column, `+I` (insert) or `-D` (delete), as Flink's changelog.
    pub fn regular(left_keys: &[&str], right_keys: &[&str]) -> Self {
        JoinFactory {
            left_keys: left_keys.iter().map(|k| (*k).to_owned()).collect(),
            right_keys: right_keys.iter().map(|k| (*k).to_owned()).collect(),
            left_time: None,
            right_time: None,
            bound: Bound::Regular(Ttl::Forever),
            join_type: JoinType::Inner,
            unique: [false; 2],
        }
    }

    /// A regular join's state time to live: each row is dropped `ttl` after it arrived,
    /// in processing time (Flink's `table.exec.state.ttl`), or `ttl` after its event
    /// time once the watermark passes that (`event_time`: set the time columns with
    /// [`with_time_columns`](Self::with_time_columns)). Expired rows join nothing
    /// more, even before they are deleted.
    pub fn with_ttl(mut self, ttl: Duration, event_time: bool) -> Self {
        let ms = duration_millis(ttl);
        self.bound = Bound::Regular(if event_time {
            Ttl::Event(ms)
        } else {
            Ttl::Processing(ms)
        });
        self
    }

    /// Sets the event-time columns; `None` says that input has no event time (a build
    /// error naming it: how the `Stream` API reports a join before `with_watermarks`).
    pub fn with_time_columns(mut self, left: Option<&str>, right: Option<&str>) -> Self {
        self.left_time = left.map(str::to_owned);
        self.right_time = right.map(str::to_owned);
        self
    }

    /// Declares that each key comes at most once on the left (`left`) or the right
    /// (`right`) input, as a primary key does (an auction's id, a person's id). A row of
    /// the other input whose key's one row is already held then joins it and is not kept:
    /// no other partner can come. This keeps the many side of a one-to-many join out of
    /// state (Nexmark's bids on their auction) and saves storing and expiring it. A
    /// second row with the key of a row still held on a unique side is an error naming
    /// it (a broken promise would otherwise lose matches); once the first is deleted, a
    /// repeat is not detected. A left outer join still keeps its left rows.
    pub fn with_unique_keys(mut self, left: bool, right: bool) -> Self {
        self.unique = [left, right];
        self
    }

    /// Emits what [`JoinType`] says (default: inner).
    pub fn with_join_type(mut self, join_type: JoinType) -> Self {
        self.join_type = join_type;
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::invalid_plan(self.name(), reason)
    }

    /// Whether the rows' event times are read.
    fn needs_time(&self) -> bool {
        !matches!(
            self.bound,
            Bound::Regular(Ttl::Forever | Ttl::Processing(_))
        )
    }

    fn bind(
        &self,
        left: &SchemaRef,
        right: &SchemaRef,
    ) -> Result<(JoinColumns, Option<usize>, Option<usize>)> {
        let extra = match self.bound {
            Bound::Regular(Ttl::Event(ttl) | Ttl::Processing(ttl)) if ttl <= 0 => {
                return Err(self.invalid("the state time to live must be at least 1 ms"));
            }
            Bound::Regular(_) if self.join_type == JoinType::LeftOuter => {
                vec![Field::new(CHANGELOG_OP, DataType::Utf8, false)]
            }
            Bound::Regular(_) => Vec::new(),
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
        if !self.needs_time() {
            return Ok((cols, None, None));
        }
        let lt = column_index(left, &time(&self.left_time, "left")?)?;
        let rt = column_index(right, &time(&self.right_time, "right")?)?;
        check_time_field(left.field(lt))?;
        check_time_field(right.field(rt))?;
        Ok((cols, Some(lt), Some(rt)))
    }
}

impl TwoInputOperatorFactory for JoinFactory {
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
            Bound::Regular(ttl) => format!(
                "{kind}join({:?} = {:?}{})",
                self.left_keys,
                self.right_keys,
                match ttl {
                    Ttl::Forever => String::new(),
                    Ttl::Event(ms) => format!(", ttl {ms}ms event time"),
                    Ttl::Processing(ms) => format!(", ttl {ms}ms processing time"),
                }
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
        let names = StateNames {
            ctx: ctx.clone(),
            operator: format!(
                "join-{}-{}",
                self.left_keys.join("-"),
                self.right_keys.join("-")
            ),
            fingerprints: [
                side_fingerprint("join-left", left, &cols.left_keys),
                side_fingerprint("join-right", right, &cols.right_keys),
            ],
        };
        // Memory state and rows bounded by the watermark: the rows live in hash tables
        // in the operator, written to a backend only for snapshots (the same layout
        // either way). A regular join's rows live for ever or for a time to live: its
        // state can grow large, and the backend's copy-on-write snapshots do not copy
        // it at every checkpoint.
        let store = if ctx.state.is_in_memory() && self.bound.is_time_bounded() {
            RowStore::memory(names)
        } else {
            let (backend, states) = names.open()?;
            RowStore::Backend {
                backend,
                states,
                ns: Vec::new(),
            }
        };
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
                Bound::Interval { .. } | Bound::Regular(_) => 0,
                Bound::Window { .. } => 2,
            },
            changelog: matches!(self.bound, Bound::Regular(_))
                && self.join_type == JoinType::LeftOuter,
            clock: ctx.clock.clone(),
            cols,
            name,
            bound: self.bound,
            outer: self.join_type == JoinType::LeftOuter,
            unique: self.unique,
            store,
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(JOIN_LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            key: Vec::new(),
            pairs: None,
        }))
    }
}

/// One input of a join.
struct Side {
    keys: KeyColumns,
    rows: SideRows,
    /// The event-time column, where the join reads event time.
    time: Option<usize>,
}

/// Cleanup timers: per (key group, key), namespace = whether it is the right side.
type Timers = TimerService<(KeyGroup, Key), bool>;

struct TimeJoinOp {
    sides: [Side; 2],
    cols: JoinColumns,
    extra_columns: usize,
    name: String,
    bound: Bound,
    outer: bool,
    /// Per side: whether each key comes at most once.
    unique: [bool; 2],
    /// A regular left outer join emits its outer rows at once and retracts them when a
    /// partner comes: the output has the [`CHANGELOG_OP`] column.
    changelog: bool,
    /// Stored rows of the left and the right input.
    store: RowStore,
    timers: Timers,
    max_parallelism: usize,
    watermark: Timestamp,
    clock: std::sync::Arc<dyn sabot_time::Clock>,
    late: Counter,
    hashes: Vec<u64>,
    key: Vec<u8>,
    /// The output pairs' buffers, kept between batches (see [`Self::take_pairs`]).
    pairs: Option<Pairs>,
}

impl TimeJoinOp {
    /// Rows whose expiry is at or before this are gone (not yet deleted, but invisible).
    fn cutoff(&self) -> i64 {
        match self.bound {
            Bound::Regular(Ttl::Processing(_)) => self.clock.now_ms(),
            Bound::Regular(Ttl::Event(_)) => self.watermark.millis(),
            // Partners of a row that is not late are never expired.
            _ => i64::MIN,
        }
    }

    fn on_side(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let right = input == 1;
        let mut pairs = self.take_pairs();
        let side = &self.sides[input];
        let times = side
            .time
            .map(|t| event_times(batch.column(t)))
            .transpose()?;
        let keys = side.keys.of(&batch, &mut self.hashes)?;
        let rows = side.rows.encode(&batch)?;
        let bound = self.bound;
        let (outer, changelog) = (self.outer, self.changelog);
        let cutoff = self.cutoff();
        let now = self.clock.now_ms();
        for row in 0..batch.num_rows() {
            let ts = match &times {
                Some(t) if t.is_null(row) => {
                    return Err(OperatorError::BadRecord {
                        reason: format!(
                            "null event time in column `{}` of the {} input",
                            batch.schema().field(side.time.unwrap_or(0)).name(),
                            if right { "right" } else { "left" }
                        ),
                        position: format!("row {row} of a batch in `{}`", self.name),
                    });
                }
                Some(t) => t.value(row),
                None => 0,
            };
            if bound.is_time_bounded() && Timestamp::from_millis(ts) <= self.watermark {
                self.late.add(1);
                continue;
            }
            // The time a row is stored under: its event time, or its arrival for a
            // processing-time TTL.
            let stored = match bound {
                Bound::Regular(Ttl::Processing(_)) => now,
                _ => ts,
            };
            let kg = KeyGroup::of_hash(self.hashes[row], self.max_parallelism);
            self.key.clear();
            keys.write(row, &mut self.key);
            let me = rows.row(row);
            let me = me.as_ref();
            let range = if right {
                bound.left_range(ts)
            } else {
                bound.right_range(ts)
            };
            // Probe the other side's rows of this key, in time order.
            let mut matched = false;
            let my_index = right.then(|| pairs.add_right(me));
            let partner_held = self.store.probe(
                &self.name,
                1 - input,
                kg,
                &self.key,
                range,
                &mut |p: Found<'_>| {
                    if bound.expiry(!right, p.ts) <= cutoff {
                        return false;
                    }
                    matched = true;
                    if right {
                        if changelog && p.unmatched > 0 {
                            // The left row's outer rows were emitted: retract them.
                            pairs.push(p.row, None, &[], p.unmatched, true);
                        }
                        pairs.push(p.row, my_index, &bound.extra(p.ts), p.count, false);
                        // A left outer join remembers which left rows found a partner.
                        outer && p.unmatched > 0
                    } else {
                        let r = pairs.add_right(p.row);
                        pairs.push(me, Some(r), &bound.extra(ts), p.count, false);
                        false
                    }
                },
            )?;
            let unmatched = u32::from(outer && !right && !matched);
            if changelog && unmatched > 0 {
                pairs.push(me, None, &[], 1, false);
            }
            let expiry = bound.expiry(right, stored);
            if expiry <= cutoff {
                // Already past its time to live: joined, not kept.
                continue;
            }
            // The other side's one row of this key is held: no other partner can come
            // (a left outer join keeps its left rows, to emit them if unmatched).
            if partner_held && self.unique[1 - input] && (right || !outer) {
                continue;
            }
            if self.unique[input] && self.store.has_rows(&self.name, input, kg, &self.key)? {
                return Err(OperatorError::BadRecord {
                    reason: format!(
                        "a second row for a key declared unique on the {} input, while its \
                         first row is held",
                        if right { "right" } else { "left" }
                    ),
                    position: format!("row {row} of a batch in `{}`", self.name),
                });
            }
            // Keep the row for partners still to come.
            let needs_timer = self
                .store
                .add(&self.name, input, kg, &self.key, stored, me, unmatched)?;
            if needs_timer && expiry != i64::MAX {
                let timer = (kg, Key::new(&self.key));
                register_expiry(&mut self.timers, bound, timer, right, expiry);
            }
        }
        self.emit(pairs, out)
    }

    /// The pairs being built, empty: last batch's, whose buffers have grown to a batch's
    /// output already (a fresh one after an error).
    fn take_pairs(&mut self) -> Pairs {
        self.pairs
            .take()
            .unwrap_or_else(|| Pairs::new(self.extra_columns, self.changelog))
    }

    /// Emits the pairs as one batch, and keeps them (cleared) for the next.
    fn emit(&mut self, mut pairs: Pairs, out: &mut Output) -> Result<()> {
        if let Some(b) = pairs.finish(
            &self.sides[0].rows,
            &self.sides[1].rows,
            &self.cols.right_out,
            &self.cols.schema,
        )? {
            out.batch(b);
        }
        self.pairs = Some(pairs);
        Ok(())
    }

    /// Deletes the rows whose time is up (`domain`'s timers due at `cutoff`); a
    /// time-bounded left outer join emits the left ones that matched nothing.
    fn expire(&mut self, domain: TimeDomain, cutoff: i64, out: &mut Output) -> Result<()> {
        let mut pairs = self.take_pairs();
        loop {
            let next = match domain {
                TimeDomain::EventTime => self.timers.next_event_timer(),
                _ => self.timers.next_processing_timer(),
            };
            let Some(t) = next else { break };
            let right = t.namespace;
            let (kg, key) = t.key;
            let bound = self.bound;
            let emit_outer = self.outer && !right && bound.is_time_bounded();
            // Expiry grows with the stored time: the rest is still joinable.
            let next = self.store.expire(
                &self.name,
                usize::from(right),
                kg,
                key.as_slice(),
                &|ts| bound.expiry(right, ts) <= cutoff,
                &mut |ts, row, unmatched| {
                    if emit_outer {
                        pairs.push(row, None, &bound.extra(ts), unmatched, false);
                    }
                },
            )?;
            // The key's rows left in the operator: a timer for the earliest (later than
            // `cutoff`, as every row expiring by then is gone).
            if let Some(ts) = next {
                register_expiry(
                    &mut self.timers,
                    bound,
                    (kg, key),
                    right,
                    bound.expiry(right, ts),
                );
            }
        }
        self.emit(pairs, out)
    }
}

/// A timer at `expiry` for rows of one side (`right`) under `key`, in `bound`'s time
/// domain.
fn register_expiry(
    timers: &mut Timers,
    bound: Bound,
    key: (KeyGroup, Key),
    right: bool,
    expiry: i64,
) {
    let at = Timestamp::from_millis(expiry);
    if matches!(bound, Bound::Regular(Ttl::Processing(_))) {
        timers.register_processing_time_timer(key, right, at);
    } else {
        timers.register_event_time_timer(key, right, at);
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
            self.timers.advance_watermark(wm);
            self.expire(TimeDomain::EventTime, wm.millis(), out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        if matches!(self.bound, Bound::Regular(Ttl::Processing(_))) {
            self.timers
                .advance_processing_time(Timestamp::from_millis(now_ms));
            self.expire(TimeDomain::ProcessingTime, now_ms, out)?;
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        // End of input is the final watermark: every time-bounded row expires. A
        // regular join's rows stay in state (a rerun restores them).
        self.watermark = Timestamp::MAX;
        self.timers.advance_watermark(Timestamp::MAX);
        self.expire(TimeDomain::EventTime, i64::MAX, out)
    }

    fn snapshot(&mut self, target: &crate::SnapshotTarget) -> Result<()> {
        SnapshotWrite::finish(self.snapshot_async(target)?)
    }

    fn snapshot_async(&mut self, target: &crate::SnapshotTarget) -> Result<Option<SnapshotWrite>> {
        self.store
            .snapshot_async(&self.name, target, &self.timers, self.watermark)
    }

    fn restore(&mut self, from: &[crate::SnapshotSource]) -> Result<()> {
        self.watermark = self.store.restore(&self.name, from, &mut self.timers)?;
        Ok(())
    }
}
