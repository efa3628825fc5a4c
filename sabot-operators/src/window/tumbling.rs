//! Keyed tumbling event-time windows with vectorized aggregates, fired by timers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array};
use sabot_core::arrow::compute::take_record_batch;
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot_core::arrow::row::{RowConverter, Rows, SortField};
use sabot_core::key::{KeyGroup, check_key_field, hash_columns};
use sabot_core::metrics::Counter;
use sabot_core::{CoreError, RecordBatch, SchemaRef, Timestamp, column_index, duration_millis};
use sabot_time::TimerService;

use super::aggregate::{Accumulator, Aggregate, BoundAggregate, RowSel};
use super::groups::GroupTable;
use crate::time_column::{check_time_field, event_times};
use crate::{Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

/// Name of the window start column in a window's output (ms, inclusive).
pub const WINDOW_START: &str = "window_start";
/// Name of the window end column in a window's output (ms, exclusive).
pub const WINDOW_END: &str = "window_end";
/// Tag of the side output that receives records too late for their window.
pub const LATE_DATA: &str = "late-data";
/// Counter of records that arrived after their window was due (end - 1 <= watermark),
/// whether or not allowed lateness still admitted them.
pub const LATE_RECORDS: &str = "window.late_records";
/// Counter of late records beyond the allowed lateness: in no window, sent to
/// [`LATE_DATA`].
pub const LATE_RECORDS_DROPPED: &str = "window.late_records_dropped";

/// A keyed tumbling event-time window aggregate.
///
/// Rows are assigned to windows `[start, start + size)` with `start = ts - ts mod size`.
/// Each window registers event-time timers (per key group, so they can move with their
/// keys on rescale) at its last millisecond `end - 1`, as in Flink; when the watermark
/// reaches it the window fires, emitting one row per key: the key columns,
/// [`WINDOW_START`], [`WINDOW_END`] and one column per aggregate.
///
/// With allowed lateness `L`, a fired window keeps its state until the watermark reaches
/// `end - 1 + L`; a record arriving for it meanwhile updates it, and the updated rows of
/// the keys it touched are emitted again (later rows for a key and window supersede
/// earlier ones). Records later than that are counted ([`LATE_RECORDS_DROPPED`]) and go
/// to the [`LATE_DATA`] side output, unchanged. End of input fires every open window.
#[derive(Clone, Debug)]
pub struct TumblingWindowFactory {
    keys: Vec<String>,
    time_column: Option<String>,
    size: Duration,
    allowed_lateness: Duration,
    aggregates: Vec<Aggregate>,
}

impl TumblingWindowFactory {
    /// Windows of `size` over `time_column` (the stream's event time; `None` is a build
    /// error), grouped by `keys`, computing `aggregates`, with no allowed lateness.
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
            allowed_lateness: Duration::ZERO,
            aggregates,
        }
    }

    /// Keeps windows open for late updates for `lateness` after they fire.
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness;
        self
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
            lateness_ms: duration_millis(self.allowed_lateness).max(0),
            aggs,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

struct Bound {
    key_idx: Vec<usize>,
    time_idx: usize,
    size_ms: i64,
    lateness_ms: i64,
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

    fn side_outputs(&self, input: &SchemaRef) -> Result<Vec<(&'static str, SchemaRef)>> {
        Ok(vec![(LATE_DATA, input.clone())])
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
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(LATE_RECORDS),
            dropped: ctx.metrics.counter(LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            groups: Vec::new(),
            seen_key_groups: Vec::new(),
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
    /// Whether the window's main firing happened (later firings are late updates).
    fired: bool,
}

/// The timer namespace: a window start, and whether the timer is its cleanup.
type WindowTimer = (i64, bool);

struct TumblingWindowOp {
    bound: Bound,
    converter: RowConverter,
    /// One `Int64` key column: groups keyed by the integer, no row conversion.
    int64_key: bool,
    /// Open windows by start.
    windows: BTreeMap<i64, WindowState>,
    /// Firing and cleanup timers per (key group, window).
    timers: TimerService<KeyGroup, WindowTimer>,
    max_parallelism: usize,
    watermark: Timestamp,
    late: Counter,
    dropped: Counter,
    hashes: Vec<u64>,
    groups: Vec<u32>,
    /// Scratch: one bit per key group, to register each window's timers once per batch.
    seen_key_groups: Vec<u64>,
}

impl TumblingWindowOp {
    #[inline]
    fn window_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.bound.size_ms)
    }

    /// The window's last millisecond: when it fires.
    #[inline]
    fn fire_time(&self, start: i64) -> i64 {
        start.saturating_add(self.bound.size_ms - 1)
    }

    /// When the window's state is dropped: after the allowed lateness.
    #[inline]
    fn cleanup_time(&self, start: i64) -> i64 {
        self.fire_time(start).saturating_add(self.bound.lateness_ms)
    }

    /// The window is due (its firing time is behind the watermark).
    #[inline]
    fn is_due(&self, start: i64) -> bool {
        Timestamp::from_millis(self.fire_time(start)) <= self.watermark
    }

    /// Too late even for allowed lateness: the window is gone, or as good as gone.
    #[inline]
    fn is_too_late(&self, start: i64) -> bool {
        Timestamp::from_millis(self.cleanup_time(start)) <= self.watermark
    }

    /// Emits the rows of `groups` (all groups if `None`) of window `start`.
    fn emit(
        &self,
        start: i64,
        w: &WindowState,
        groups: Option<&[u32]>,
        out: &mut Output,
    ) -> Result<()> {
        let mut cols: Vec<ArrayRef> = w.groups.key_columns(&self.converter, groups)?;
        let n = cols.first().map_or(0, |c| c.len());
        cols.push(Arc::new(Int64Array::from_value(start, n)));
        cols.push(Arc::new(Int64Array::from_value(
            start.saturating_add(self.bound.size_ms),
            n,
        )));
        cols.extend(w.accs.iter().map(|a| a.finish(groups)));
        out.batch(RecordBatch::try_new(self.bound.schema.clone(), cols)?);
        Ok(())
    }

    /// Fires every timer due at the current watermark.
    fn fire_due(&mut self, out: &mut Output) -> Result<()> {
        self.timers.advance_watermark(self.watermark);
        while let Some(t) = self.timers.next_event_timer() {
            let (start, cleanup) = t.namespace;
            if cleanup {
                self.windows.remove(&start);
                continue;
            }
            let Some(w) = self.windows.get(&start) else {
                continue;
            };
            if !w.fired {
                self.emit(start, w, None, out)?;
                if self.bound.lateness_ms == 0 {
                    self.windows.remove(&start);
                } else if let Some(w) = self.windows.get_mut(&start) {
                    w.fired = true;
                }
            }
        }
        Ok(())
    }

    /// Registers the timers of window `start` for the key groups of `rows`.
    fn register_timers(&mut self, start: i64, rows: RowSel<'_>) {
        let words = self.max_parallelism.div_ceil(64);
        self.seen_key_groups.clear();
        self.seen_key_groups.resize(words, 0);
        let (fire, cleanup) = (self.fire_time(start), self.cleanup_time(start));
        let mut register = |h: u64| {
            let kg = KeyGroup::of_hash(h, self.max_parallelism);
            let (word, bit) = (usize::from(kg.0) / 64, usize::from(kg.0) % 64);
            if self.seen_key_groups[word] & (1 << bit) == 0 {
                self.seen_key_groups[word] |= 1 << bit;
                self.timers.register_event_time_timer(
                    kg,
                    (start, false),
                    Timestamp::from_millis(fire),
                );
                if cleanup != fire {
                    self.timers.register_event_time_timer(
                        kg,
                        (start, true),
                        Timestamp::from_millis(cleanup),
                    );
                }
            }
        };
        match rows {
            RowSel::All => self.hashes.iter().for_each(|&h| register(h)),
            RowSel::Some(sel) => sel.iter().for_each(|&r| register(self.hashes[r as usize])),
        }
    }
}

impl Operator for TumblingWindowOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = event_times(batch.column(self.bound.time_idx))?;
        if times.null_count() > 0 {
            // Sources drop or reject null event times; reaching here is a plan error.
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
        let mut too_late: Vec<u32> = Vec::new();
        let buckets: Vec<(i64, Option<Vec<u32>>)> = if first == last && !self.is_too_late(first) {
            vec![(first, None)]
        } else {
            let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            for (row, &t) in ts.iter().enumerate() {
                let start = self.window_start(t);
                if self.is_too_late(start) {
                    too_late.push(row as u32);
                } else {
                    by_window.entry(start).or_default().push(row as u32);
                }
            }
            by_window.into_iter().map(|(s, r)| (s, Some(r))).collect()
        };
        if !too_late.is_empty() {
            self.late.add(too_late.len() as u64);
            self.dropped.add(too_late.len() as u64);
            out.side(
                LATE_DATA,
                take_record_batch(&batch, &UInt32Array::from(too_late))?,
            );
        }

        for (start, sel) in buckets {
            let sel = match &sel {
                None => RowSel::All,
                Some(rows) => RowSel::Some(rows),
            };
            let due = self.is_due(start);
            if due {
                self.late.add(match sel {
                    RowSel::All => ts.len(),
                    RowSel::Some(rows) => rows.len(),
                } as u64);
            }
            // Timers are de-duplicated: registering per batch covers key groups that join
            // a window later.
            self.register_timers(start, sel);
            let converter = &self.converter;
            let aggs = &self.bound.aggs;
            let w = self.windows.entry(start).or_insert_with(|| WindowState {
                groups: match keys {
                    Keys::Int64(_) => GroupTable::for_int64(),
                    Keys::Rows(_) => GroupTable::for_rows(converter),
                },
                accs: aggs.iter().map(BoundAggregate::new_accumulator).collect(),
                fired: false,
            });
            self.groups.clear();
            let hashes = &self.hashes;
            let groups = &mut self.groups;
            let mut group_of = |r: usize| match &keys {
                Keys::Int64(k) => w.groups.find_or_insert_i64(hashes[r], k.value(r)),
                Keys::Rows(k) => w.groups.find_or_insert_row(hashes[r], k.row(r)),
            };
            match sel {
                RowSel::All => groups.extend((0..hashes.len()).map(&mut group_of)),
                RowSel::Some(rows) => groups.extend(rows.iter().map(|&r| group_of(r as usize))),
            }
            for (acc, v) in w.accs.iter_mut().zip(&values) {
                acc.resize(w.groups.len());
                acc.update(v.as_ref(), sel, &self.groups);
            }
            if due {
                // A late update of a window that already fired (or is past due): emit the
                // touched keys' new results now, as Flink's event-time trigger does.
                w.fired = true;
                let mut touched = self.groups.clone();
                touched.sort_unstable();
                touched.dedup();
                let w = &self.windows[&start];
                self.emit(start, w, Some(&touched), out)?;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.watermark {
            self.watermark = wm;
            self.fire_due(out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = Timestamp::MAX;
        self.fire_due(out)?;
        // Windows without timers cannot exist, but never lose one.
        for (start, w) in std::mem::take(&mut self.windows) {
            if !w.fired {
                self.emit(start, &w, None, out)?;
            }
        }
        Ok(())
    }
}
