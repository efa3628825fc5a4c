//! Keyed tumbling event-time windows with vectorized aggregates, fired by timers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{Array, ArrayRef, Int64Array};
use sabot_core::arrow::datatypes::Schema;
use sabot_core::key::KeyGroup;
use sabot_core::metrics::Counter;
use sabot_core::{RecordBatch, SchemaRef, Timestamp, duration_millis};
use sabot_state::{StateBackend, StateError, StateId};
use sabot_time::TimerService;

use super::aggregate::{Accumulator, Aggregate, BoundAggregate, RowSel, merge_value, slot_sets};
use super::groups::GroupTable;
use crate::keys::{BatchKeys, KeyColumns};
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
/// Name of the window's state in the state backend (and in snapshots).
pub const WINDOW_STATE: &str = "window-aggregates";
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
    /// Sliding windows: a new window every `slide` (a divisor of `size`).
    slide: Option<Duration>,
    allowed_lateness: Duration,
    aggregates: Vec<Aggregate>,
    /// Early firing: every this much processing time, windows not yet fired emit their
    /// current results for the keys updated since.
    early: Option<Duration>,
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
            slide: None,
            allowed_lateness: Duration::ZERO,
            aggregates,
            early: None,
        }
    }

    /// Early firing (Flink SQL's `table.exec.emit.early-fire`): every `interval` of
    /// processing time, each window that has not fired yet emits its current results for
    /// the keys updated since the previous early firing; the window's final results
    /// still come when the watermark passes its end (later rows for a key and window
    /// supersede earlier ones). Which keys are due for an early firing is not part of
    /// checkpoints: after a restore, early firings resume with the next update.
    pub fn with_early_firing(mut self, interval: Duration) -> Self {
        self.early = Some(interval);
        self
    }

    /// Makes the windows slide: a window of `size` starts every `slide` (which must
    /// divide `size`), so each record is in `size / slide` windows (Flink's
    /// `SlidingEventTimeWindows`, aligned to the epoch).
    ///
    /// Records are aggregated once, into the *pane* of length `slide` they fall in; a
    /// window firing combines the stored aggregates of its `size / slide` panes per key,
    /// so a record's contribution is computed once however many windows it is in
    /// (Arroyo's sliding windows). A pane is dropped when the last window containing it
    /// fires (or, with allowed lateness, when that window's lateness has passed). A
    /// record arriving after some of its windows fired still counts in the later ones,
    /// and with allowed lateness updates the fired ones still kept (their new results
    /// for the record's key are emitted at once); one after all of them goes to
    /// [`LATE_DATA`].
    pub fn with_slide(mut self, slide: Duration) -> Self {
        self.slide = Some(slide);
        self
    }

    /// Keeps windows open for late updates for `lateness` after they fire.
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness;
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::invalid_plan(self.name(), reason)
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
        let slide_ms = match self.slide {
            None => size_ms,
            Some(slide) => {
                let slide_ms = duration_millis(slide);
                if slide_ms <= 0 || size_ms % slide_ms != 0 {
                    return Err(self.invalid(format!(
                        "the slide must be at least 1 ms and divide the window size: size {:?}, slide {slide:?}",
                        self.size
                    )));
                }
                slide_ms
            }
        };
        let (
            time_idx,
            super::KeyedOutput {
                key_idx,
                aggs,
                fields,
            },
        ) = super::time_window_output(input, time_column, &self.keys, &self.aggregates, |r| {
            self.invalid(r)
        })?;
        Ok(Bound {
            key_idx,
            time_idx,
            size_ms,
            slide_ms,
            lateness_ms: duration_millis(self.allowed_lateness).max(0),
            early_ms: self.early.map_or(0, |d| duration_millis(d).max(1)),
            aggs,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

#[derive(Clone)]
pub(super) struct Bound {
    pub(super) key_idx: Vec<usize>,
    pub(super) time_idx: usize,
    pub(super) size_ms: i64,
    /// Panes (and window starts) every `slide_ms`; `== size_ms` for tumbling windows.
    pub(super) slide_ms: i64,
    pub(super) lateness_ms: i64,
    /// Early firing interval in ms (0: none).
    pub(super) early_ms: i64,
    pub(super) aggs: Vec<BoundAggregate>,
    pub(super) schema: SchemaRef,
}

impl OperatorFactory for TumblingWindowFactory {
    fn name(&self) -> String {
        match self.slide {
            Some(slide) if slide != self.size => format!(
                "sliding_window({:?} every {slide:?}, keys={:?})",
                self.size, self.keys
            ),
            _ => format!("tumbling_window({:?}, keys={:?})", self.size, self.keys),
        }
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.bind(input)?.schema)
    }

    fn side_outputs(&self, input: &SchemaRef) -> Result<Vec<(&'static str, SchemaRef)>> {
        Ok(vec![(LATE_DATA, input.clone())])
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        let b = self.bind(input)?;
        let keys = KeyColumns::new(input, b.key_idx.clone())?;
        let mut backend = ctx.open_state(&format!("window-{}", self.keys.join("-")))?;
        // The stored layout: key columns' types and each aggregate's slot. Restoring
        // state written with other keys or aggregates is a clear error.
        let panes = if b.slide_ms < b.size_ms {
            format!("/panes={}ms", b.slide_ms)
        } else {
            String::new()
        };
        let fingerprint =
            super::state_fingerprint("window-acc", &panes, input, &b.key_idx, &b.aggs);
        // Memory state: the window's panes are hash tables of accumulators in the
        // operator itself, written to the backend only for snapshots.
        if ctx.state.is_in_memory() {
            return Ok(Box::new(super::panes::PaneWindowOp::new(
                keys,
                b,
                ctx,
                format!("window-{}", self.keys.join("-")),
                fingerprint,
            )));
        }
        let state = backend.register(WINDOW_STATE, &fingerprint)?;
        let table = super::group_table(&keys);
        let accs = b.aggs.iter().map(BoundAggregate::new_accumulator).collect();
        Ok(Box::new(TumblingWindowOp {
            keys,
            bound: b,
            backend,
            state,
            table,
            accs,
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(LATE_RECORDS),
            dropped: ctx.metrics.counter(LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            groups: Vec::new(),
            seen_key_groups: Vec::new(),
            firing: Firing::default(),
            dirty: BTreeMap::new(),
            next_early: i64::MIN,
        }))
    }
}

/// The timer namespace: a window start, and whether the timer is its cleanup.
type WindowTimer = (i64, bool);

/// A window start as the state key of its entries: big-endian with the sign bit flipped,
/// so byte order is time order (and a window is one contiguous range in RocksDB).
pub(super) fn window_key(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

/// The results of one window gathered while its timers fire (one timer per key group),
/// emitted as one batch.
#[derive(Default)]
struct Firing {
    start: Option<i64>,
    /// The keys' stored bytes, back to back; `key_ends[i]` ends the i-th.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    /// The stored values (one or more slot sets each), back to back.
    values: Vec<u8>,
    value_ends: Vec<usize>,
}

impl Firing {
    fn clear(&mut self) {
        self.start = None;
        self.truncate(0);
    }

    fn len(&self) -> usize {
        self.key_ends.len()
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.keys.extend_from_slice(key);
        self.key_ends.push(self.keys.len());
        self.values.extend_from_slice(value);
        self.value_ends.push(self.values.len());
    }

    /// Keeps the first `n` entries.
    fn truncate(&mut self, n: usize) {
        let end = |ends: &[usize]| if n == 0 { 0 } else { ends[n - 1] };
        self.keys.truncate(end(&self.key_ends));
        self.values.truncate(end(&self.value_ends));
        self.key_ends.truncate(n);
        self.value_ends.truncate(n);
    }

    fn key(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.key_ends[i - 1] };
        &self.keys[from..self.key_ends[i]]
    }

    fn value(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.value_ends[i - 1] };
        &self.values[from..self.value_ends[i]]
    }
}

/// What a batch brings to each of its windows.
#[derive(Clone, Copy)]
struct BatchInput<'a> {
    keys: &'a BatchKeys,
    /// Each aggregate's input column.
    values: &'a [Option<ArrayRef>],
    /// The rows' event times.
    times: &'a [i64],
}

struct TumblingWindowOp {
    bound: Bound,
    /// The key columns (a single `Int64` key is grouped as integers, no row format).
    keys: KeyColumns,
    /// Window contents, in the job's state backend: per key group, window (the state
    /// key, [`window_key`]) and group key (the namespace), the aggregates' slots.
    backend: Box<dyn StateBackend>,
    state: StateId,
    /// Scratch for one batch: its distinct keys in one window, their partial aggregates.
    table: GroupTable,
    accs: Vec<Accumulator>,
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
    firing: Firing,
    /// Early firing: per pane, the keys updated since the last early firing.
    dirty: BTreeMap<i64, hashbrown::HashSet<(KeyGroup, Vec<u8>)>>,
    next_early: i64,
}

pub(super) fn bad_value(reason: String) -> StateError {
    StateError::BadValue {
        state: WINDOW_STATE.into(),
        reason,
    }
}

impl TumblingWindowOp {
    /// Whether windows slide (panes shorter than windows).
    #[inline]
    fn sliding(&self) -> bool {
        self.bound.slide_ms < self.bound.size_ms
    }

    /// The first window containing pane `pane` that has not fired (its start); the pane
    /// itself for tumbling windows. The pane must not be too late.
    fn first_open_window(&self, pane: i64) -> i64 {
        let (size, slide) = (self.bound.size_ms, self.bound.slide_ms);
        let first = pane.saturating_sub(size - slide);
        if self.watermark == Timestamp::MIN {
            return first;
        }
        // The smallest window start `s` with `s + size - 1 > watermark`.
        let need = self
            .watermark
            .millis()
            .saturating_sub(size)
            .saturating_add(2);
        let aligned = need.saturating_sub(need.rem_euclid(slide));
        let s = if aligned < need {
            aligned.saturating_add(slide)
        } else {
            aligned
        };
        first.max(s)
    }

    /// Some window containing pane `pane` has fired already.
    #[inline]
    fn partly_late(&self, pane: i64) -> bool {
        Timestamp::from_millis(pane.saturating_add(self.bound.slide_ms - 1)) <= self.watermark
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

    /// The output batch of window `start`: `keys` columns, then the window bounds and
    /// the aggregates of `accs` (every slot, in order).
    fn result(
        &self,
        start: i64,
        mut cols: Vec<ArrayRef>,
        accs: &[Accumulator],
    ) -> Result<RecordBatch> {
        let n = cols.first().map_or(0, |c| c.len());
        cols.push(Arc::new(Int64Array::from_value(start, n)));
        cols.push(Arc::new(Int64Array::from_value(
            start.saturating_add(self.bound.size_ms),
            n,
        )));
        for a in accs {
            cols.push(a.finish(None)?);
        }
        Ok(RecordBatch::try_new(self.bound.schema.clone(), cols)?)
    }

    /// Fires every timer due at the current watermark.
    fn fire_due(&mut self, out: &mut Output) -> Result<()> {
        self.timers.advance_watermark(self.watermark);
        while let Some(t) = self.timers.next_event_timer() {
            let (start, cleanup) = t.namespace;
            if self.firing.start.is_some_and(|s| s != start) {
                self.emit_firing(out)?;
            }
            if self.sliding() && !cleanup {
                self.gather_panes(t.key, start)?;
                continue;
            }
            let wk = window_key(start);
            let first = self.firing.len();
            let (firing, accs) = (&mut self.firing, &self.accs);
            let mut bad = None;
            self.backend
                .scan(self.state, t.key, &wk, b"", &mut |ns, value| {
                    if slot_sets(accs, value).is_none_or(|n| n == 0) {
                        bad = Some(value.len());
                        return false;
                    }
                    firing.push(ns, value);
                    true
                })?;
            if let Some(len) = bad {
                return Err(bad_value(format!(
                    "window {start}: {len} bytes that are not whole aggregate slots"
                ))
                .into());
            }
            if cleanup || self.bound.lateness_ms == 0 {
                for i in first..self.firing.len() {
                    self.backend
                        .delete(self.state, t.key, &wk, self.firing.key(i))?;
                }
            }
            if cleanup {
                // Already emitted when the window fired: forget what was gathered.
                self.firing.truncate(first);
            } else {
                self.firing.start = Some(start);
            }
        }
        self.emit_firing(out)
    }

    /// Sliding windows: gathers window `start` of key group `kg` from its panes, drops
    /// the oldest pane (this was its last window) and registers the key group's next
    /// window if a later pane holds anything.
    fn gather_panes(&mut self, kg: KeyGroup, start: i64) -> Result<()> {
        let (lo, hi) = (
            window_key(start),
            window_key(start.saturating_add(self.bound.size_ms)),
        );
        let (firing, accs) = (&mut self.firing, &self.accs);
        // The oldest pane's keys, back to back: they are deleted after the scan.
        let mut oldest: Vec<u8> = Vec::new();
        let mut oldest_ends: Vec<usize> = Vec::new();
        let mut later = false;
        let mut bad = None;
        self.backend
            .scan_key_group(self.state, kg, &mut |pane, ns, value| {
                if pane >= hi.as_slice() {
                    return false;
                }
                if pane < lo.as_slice() {
                    return true;
                }
                if slot_sets(accs, value).is_none_or(|n| n == 0) {
                    bad = Some(value.len());
                    return false;
                }
                firing.push(ns, value);
                if pane == lo.as_slice() {
                    oldest.extend_from_slice(ns);
                    oldest_ends.push(oldest.len());
                } else {
                    later = true;
                }
                true
            })?;
        if let Some(len) = bad {
            return Err(bad_value(format!(
                "pane of window {start}: {len} bytes that are not whole aggregate slots"
            ))
            .into());
        }
        // This was the oldest pane's last window: drop it, unless allowed lateness keeps
        // it for late updates (its cleanup timer drops it then).
        if self.bound.lateness_ms == 0 {
            let mut from = 0;
            for end in oldest_ends {
                self.backend
                    .delete(self.state, kg, &lo, &oldest[from..end])?;
                from = end;
            }
        }
        if later {
            let next = start.saturating_add(self.bound.slide_ms);
            self.timers.register_event_time_timer(
                kg,
                (next, false),
                Timestamp::from_millis(self.fire_time(next)),
            );
        }
        self.firing.start = Some(start);
        Ok(())
    }

    /// Emits the window gathered in `firing`, if any.
    fn emit_firing(&mut self, out: &mut Output) -> Result<()> {
        let Some(start) = self.firing.start else {
            self.firing.clear();
            return Ok(());
        };
        let entries = self.firing.len();
        // Tumbling: one entry per key. Sliding: one per key and pane, combined per key.
        let (firsts, group_of): (Vec<usize>, Vec<usize>) = if self.sliding() {
            let mut index: hashbrown::HashMap<&[u8], usize> = hashbrown::HashMap::new();
            let mut firsts = Vec::new();
            let group_of = (0..entries)
                .map(|i| {
                    *index.entry(self.firing.key(i)).or_insert_with(|| {
                        firsts.push(i);
                        firsts.len() - 1
                    })
                })
                .collect();
            (firsts, group_of)
        } else {
            ((0..entries).collect(), (0..entries).collect())
        };
        let n = firsts.len();
        let keys: Vec<ArrayRef> = if self.keys.is_int64() {
            let mut ints = Vec::with_capacity(n);
            for &i in &firsts {
                let k = self.firing.key(i);
                let b = <[u8; 8]>::try_from(k).map_err(|_| {
                    bad_value(format!("window {start}: a {}-byte integer key", k.len()))
                })?;
                ints.push(i64::from_le_bytes(b));
            }
            vec![Arc::new(Int64Array::from(ints))]
        } else {
            let parser = self.keys.converter().parser();
            self.keys
                .converter()
                .convert_rows(firsts.iter().map(|&i| parser.parse(self.firing.key(i))))?
        };
        let mut accs: Vec<Accumulator> = self
            .bound
            .aggs
            .iter()
            .map(BoundAggregate::new_accumulator)
            .collect();
        accs.iter_mut().for_each(|a| a.reset(n));
        for (i, &g) in group_of.iter().enumerate() {
            if !merge_value(&mut accs, g, self.firing.value(i)) {
                return Err(bad_value(format!("window {start}: malformed aggregates")).into());
            }
        }
        let batch = self.result(start, keys, &accs)?;
        self.firing.clear();
        out.batch(batch);
        Ok(())
    }

    /// The keys of this batch's `table`, as stored.
    fn table_keys(&self) -> Vec<(KeyGroup, Vec<u8>)> {
        (0..self.table.len())
            .map(|g| {
                let mut key = Vec::new();
                self.table.key_bytes(g, &mut key);
                (
                    KeyGroup::of_hash(self.table.hash(g), self.max_parallelism),
                    key,
                )
            })
            .collect()
    }

    /// Window `w`'s current results for `keys` (combining its panes), read from state.
    fn window_results(&self, w: i64, keys: &[(KeyGroup, Vec<u8>)]) -> Result<RecordBatch> {
        let (size, slide) = (self.bound.size_ms, self.bound.slide_ms);
        let mut accs: Vec<Accumulator> = self
            .bound
            .aggs
            .iter()
            .map(BoundAggregate::new_accumulator)
            .collect();
        accs.iter_mut().for_each(|a| a.reset(keys.len()));
        let mut buf = Vec::new();
        for (g, (kg, key)) in keys.iter().enumerate() {
            let mut q = w;
            while q < w.saturating_add(size) {
                if self
                    .backend
                    .get(self.state, *kg, &window_key(q), key, &mut buf)?
                    && !merge_value(&mut accs, g, &buf)
                {
                    return Err(bad_value(format!("pane {q}: malformed aggregates")).into());
                }
                q = q.saturating_add(slide);
            }
        }
        let stored: Vec<Vec<u8>> = keys.iter().map(|(_, k)| k.clone()).collect();
        let cols = super::global::decode_keys(&self.keys, &stored)?;
        self.result(w, cols, &accs)
    }

    /// Sliding windows with allowed lateness: pane `pane` was just updated for the keys
    /// of `table`; every window holding it that fired and is not cleaned up yet emits
    /// those keys' new results.
    fn emit_late_panes(&mut self, pane: i64, out: &mut Output) -> Result<()> {
        let (size, slide) = (self.bound.size_ms, self.bound.slide_ms);
        let keys = self.table_keys();
        let mut w = pane.saturating_sub(size - slide);
        while w <= pane {
            if self.is_due(w) && !self.is_too_late(w) {
                out.batch(self.window_results(w, &keys)?);
            }
            w = w.saturating_add(slide);
        }
        Ok(())
    }

    /// Early firing: every window not fired yet that holds a pane updated since the last
    /// early firing emits the updated keys' current results.
    fn fire_early(&mut self, out: &mut Output) -> Result<()> {
        let (size, slide) = (self.bound.size_ms, self.bound.slide_ms);
        // Per window: the keys updated in any of its panes.
        let mut windows: BTreeMap<i64, hashbrown::HashSet<(KeyGroup, Vec<u8>)>> = BTreeMap::new();
        for (pane, keys) in std::mem::take(&mut self.dirty) {
            let mut w = pane.saturating_sub(size - slide);
            while w <= pane {
                if !self.is_due(w) {
                    windows.entry(w).or_default().extend(keys.iter().cloned());
                }
                w = w.saturating_add(slide);
            }
        }
        for (w, keys) in windows {
            let mut keys: Vec<(KeyGroup, Vec<u8>)> = keys.into_iter().collect();
            keys.sort_unstable();
            out.batch(self.window_results(w, &keys)?);
        }
        Ok(())
    }

    /// Registers the timers of window `start` for the key groups of `rows`: the firing
    /// (unless the window is already due: late updates emit at once) and the cleanup.
    fn register_timers(&mut self, start: i64, rows: RowSel<'_>, due: bool) {
        let words = self.max_parallelism.div_ceil(64);
        self.seen_key_groups.clear();
        self.seen_key_groups.resize(words, 0);
        // The pane's first window that has not fired (the pane's own for tumbling).
        let window = self.first_open_window(start);
        let (fire, cleanup) = (self.fire_time(window), self.cleanup_time(start));
        // A cleanup timer is needed when the allowed lateness keeps the window past its
        // own firing (compared with the window's own firing time: for a late update,
        // `window` may be a later one).
        // Sliding: `start` is a pane, whose last window starts at it; its cleanup drops
        // the pane (without lateness, its last window's firing does).
        let needs_cleanup = cleanup != self.fire_time(start);
        let mut register = |h: u64| {
            let kg = KeyGroup::of_hash(h, self.max_parallelism);
            let (word, bit) = (usize::from(kg.0) / 64, usize::from(kg.0) % 64);
            if self.seen_key_groups[word] & (1 << bit) == 0 {
                self.seen_key_groups[word] |= 1 << bit;
                if !due {
                    self.timers.register_event_time_timer(
                        kg,
                        (window, false),
                        Timestamp::from_millis(fire),
                    );
                }
                if needs_cleanup {
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

    /// Folds the rows `sel` of one window into its state: aggregates the batch per key
    /// first (vectorized), then one read-modify-write per distinct key. If the window is
    /// due (a late update), emits the touched keys' new results.
    fn update_window(
        &mut self,
        start: i64,
        sel: RowSel<'_>,
        input: &BatchInput<'_>,
        due: bool,
        out: &mut Output,
    ) -> Result<()> {
        let BatchInput {
            keys,
            values,
            times,
        } = *input;
        self.table.clear();
        self.groups.clear();
        self.table
            .groups_of(keys, &self.hashes, sel, &mut self.groups);
        let n = self.table.len();
        for (acc, v) in self.accs.iter_mut().zip(values) {
            acc.reset(n);
            acc.update(v.as_ref(), Some(times), sel, &self.groups)?;
        }
        let wk = window_key(start);
        // Where a blind write is cheap (RocksDB), the batch's partial aggregates are
        // appended with merge and combined when the window fires; elsewhere (and for a
        // late update, which must emit the combined result now) they are combined with
        // the stored ones in place.
        let blind = !due && self.backend.prefers_merge();
        let mut ns = Vec::new();
        let mut partial = Vec::new();
        for g in 0..n {
            let kg = KeyGroup::of_hash(self.table.hash(g), self.max_parallelism);
            ns.clear();
            self.table.key_bytes(g, &mut ns);
            if blind {
                partial.clear();
                self.accs.iter().for_each(|a| a.encode(g, &mut partial));
                self.backend.merge(self.state, kg, &wk, &ns, &partial)?;
                continue;
            }
            let accs = &mut self.accs;
            self.backend
                .update(self.state, kg, &wk, &ns, &mut |old, new| {
                    if let Some(old) = old
                        && !merge_value(accs, g, old)
                    {
                        return Err(bad_value(format!(
                            "window {start}: malformed aggregates ({} bytes)",
                            old.len()
                        )));
                    }
                    accs.iter().for_each(|a| a.encode(g, new));
                    Ok(())
                })?;
        }
        if self.bound.early_ms > 0 && !self.is_due(start) {
            let keys = self.table_keys();
            self.dirty.entry(start).or_default().extend(keys);
        }
        if due {
            // A late update of a window that already fired: emit the touched keys' new
            // results now, as Flink's event-time trigger does.
            let keys = self.table.key_columns(self.keys.converter(), None)?;
            out.batch(self.result(start, keys, &self.accs)?);
        }
        Ok(())
    }
}

impl Operator for TumblingWindowOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = super::non_null_times(&batch, self.bound.time_idx)?;
        let keys = self.keys.of(&batch, &mut self.hashes)?;
        let values = self
            .bound
            .aggs
            .iter()
            .map(|a| a.values(batch.columns()))
            .collect::<Result<Vec<_>>>()?;

        // Usually a whole batch falls in one window; otherwise bucket rows by window.
        let ts = times.values();
        let (buckets, too_late) =
            super::bucket_by_pane(ts, self.bound.slide_ms, |p| self.is_too_late(p));
        super::send_too_late(&batch, too_late, (&self.late, &self.dropped), out)?;

        for (start, sel) in buckets {
            let sel = match &sel {
                None => RowSel::All,
                Some(rows) => RowSel::Some(rows),
            };
            let due = self.is_due(start);
            // Late for at least one of its windows (for tumbling windows: its window).
            if self.partly_late(start) {
                self.late.add(match sel {
                    RowSel::All => ts.len(),
                    RowSel::Some(rows) => rows.len(),
                } as u64);
            }
            // Timers are de-duplicated: registering per batch covers key groups that join
            // a window later.
            self.register_timers(start, sel, due);
            let input = BatchInput {
                keys: &keys,
                values: &values,
                times: ts,
            };
            let sliding = self.sliding();
            self.update_window(start, sel, &input, due && !sliding, out)?;
            if sliding && self.bound.lateness_ms > 0 && self.partly_late(start) {
                self.emit_late_panes(start, out)?;
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

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        if self.bound.early_ms > 0 && now_ms >= self.next_early {
            if self.next_early != i64::MIN {
                self.fire_early(out)?;
            }
            self.next_early = now_ms.saturating_add(self.bound.early_ms);
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        // Every window has a firing timer per key group it holds: this fires them all.
        self.watermark = Timestamp::MAX;
        self.fire_due(out)
    }

    crate::snapshot::backend_snapshots!();
}
