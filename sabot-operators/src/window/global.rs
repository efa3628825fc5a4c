//! Keyed global windows: one window per key for all time, emitted by a trigger.

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::ArrayRef;
use sabot_core::arrow::datatypes::Schema;
use sabot_core::key::KeyGroup;
use sabot_core::{RecordBatch, SchemaRef, Timestamp, column_index, duration_millis};
use sabot_state::{StateBackend, StateError};
use sabot_time::TimeDomain;

use super::aggregate::{
    Accumulator, Aggregate, BoundAggregate, RowSel, encode_set, merge_value, slot_sets,
};
use super::keyed::KeyedCore;
use crate::keys::KeyColumns;
use crate::time_column::{check_time_field, event_times};
use crate::{Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

/// Name of the global windows' state in the state backend (and in snapshots).
pub const GLOBAL_WINDOW_STATE: &str = "global-window";

/// When a [`GlobalWindowFactory`] emits a key's aggregates.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// After every `n` records of the key (Flink's `CountTrigger`), in arrival order.
    Count(u64),
    /// Each time the watermark reaches a multiple of the interval, for every key with
    /// records since its last firing (Flink's `ContinuousEventTimeTrigger`, but a key
    /// without news does not fire again). The final watermark fires them once more.
    EventTime(Duration),
    /// Each time processing time reaches a multiple of the interval, for every key with
    /// records since its last firing (Flink's `ContinuousProcessingTimeTrigger`); the end
    /// of input fires them once more.
    ProcessingTime(Duration),
}

/// Keyed global windows with a [`Trigger`] (Flink's `GlobalWindows` with a trigger): each
/// key's records are aggregated for all time, and each firing emits one row per key: the
/// key columns and the aggregates. Accumulating (the default): each firing emits the
/// aggregate over all the key's records so far. Purging ([`purging`](Self::purging)):
/// each firing emits the aggregate since the key's previous firing and clears it (Flink's
/// `PurgingTrigger`). State lives in the job's backend, per key.
#[derive(Clone, Debug)]
pub struct GlobalWindowFactory {
    keys: Vec<String>,
    trigger: Trigger,
    purge: bool,
    aggregates: Vec<Aggregate>,
    time_column: Option<String>,
    /// Early firing was asked for (not supported here: a build error).
    early: bool,
}

impl GlobalWindowFactory {
    /// A global window per key of `keys`, firing on `trigger`, computing `aggregates`.
    pub fn new(keys: Vec<String>, trigger: Trigger, aggregates: Vec<Aggregate>) -> Self {
        GlobalWindowFactory {
            keys,
            trigger,
            purge: false,
            aggregates,
            time_column: None,
            early: false,
        }
    }

    /// Early firing applies to tumbling and sliding windows: asking for it here is a
    /// build error.
    pub fn with_early_firing(mut self) -> Self {
        self.early = true;
        self
    }

    /// Clears each key's aggregates when it fires.
    pub fn purging(mut self) -> Self {
        self.purge = true;
        self
    }

    /// The stream's event time (first and last need it).
    pub fn with_time_column(mut self, column: Option<String>) -> Self {
        self.time_column = column;
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::invalid_plan(self.name(), reason)
    }

    fn bind(&self, input: &SchemaRef) -> Result<Bound> {
        if self.early {
            return Err(self.invalid(
                "early firing applies to tumbling and sliding windows (use a trigger or a smaller window)",
            ));
        }
        let interval = match self.trigger {
            Trigger::Count(0) => return Err(self.invalid("a count trigger needs at least 1")),
            Trigger::Count(n) if n > i64::MAX as u64 => {
                return Err(self.invalid("a count trigger fires after at most 2^63 records"));
            }
            Trigger::Count(_) => 0,
            Trigger::EventTime(d) | Trigger::ProcessingTime(d) => {
                let ms = duration_millis(d);
                if ms <= 0 {
                    return Err(
                        self.invalid("a periodic trigger needs an interval of at least 1 ms")
                    );
                }
                ms
            }
        };
        let time_idx = match &self.time_column {
            Some(c) => {
                let i = column_index(input, c)?;
                check_time_field(input.field(i))?;
                Some(i)
            }
            None if matches!(self.trigger, Trigger::EventTime(_)) => {
                return Err(self.invalid(
                    "the stream has no event time: call with_watermarks(..) before an event-time trigger",
                ));
            }
            None => None,
        };
        let super::KeyedOutput {
            key_idx,
            aggs,
            fields,
        } = super::keyed_output(
            input,
            &self.keys,
            Vec::new(),
            &self.aggregates,
            time_idx,
            |r| self.invalid(r),
        )?;
        Ok(Bound {
            key_idx,
            time_idx,
            interval,
            aggs,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

struct Bound {
    key_idx: Vec<usize>,
    time_idx: Option<usize>,
    /// A periodic trigger's interval in ms.
    interval: i64,
    aggs: Vec<BoundAggregate>,
    schema: SchemaRef,
}

impl OperatorFactory for GlobalWindowFactory {
    fn name(&self) -> String {
        format!(
            "global_window({:?}{}, keys={:?})",
            self.trigger,
            if self.purge { ", purging" } else { "" },
            self.keys
        )
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.bind(input)?.schema)
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<Box<dyn Operator>> {
        let b = self.bind(input)?;
        let keys = KeyColumns::new(input, b.key_idx.clone())?;
        let fingerprint = super::state_fingerprint("global-acc", "", input, &b.key_idx, &b.aggs);
        let core = KeyedCore::open(
            ctx,
            &format!("global-{}", self.keys.join("-")),
            GLOBAL_WINDOW_STATE,
            &fingerprint,
            keys,
            &b.aggs,
        )?;
        Ok(Box::new(GlobalWindowOp {
            core,
            bound: b,
            trigger: self.trigger,
            purge: self.purge,
            clock: ctx.clock.clone(),
        }))
    }
}

struct GlobalWindowOp {
    /// Its state: per key group and key bytes (no namespace), records since the key's
    /// last firing (i64 LE), then its slot set (none right after a purge). Its timers:
    /// per (key group, key bytes), the key's next periodic firing.
    core: KeyedCore<(KeyGroup, Vec<u8>), ()>,
    bound: Bound,
    trigger: Trigger,
    purge: bool,
    clock: Arc<dyn sabot_time::Clock>,
}

fn bad_value(reason: String) -> StateError {
    StateError::BadValue {
        state: GLOBAL_WINDOW_STATE.into(),
        reason,
    }
}

/// A stored key: records since its last firing, and its slots.
fn split<'v>(accs: &[Accumulator], value: &'v [u8]) -> Result<(i64, &'v [u8])> {
    let pending = value
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| bad_value(format!("{} bytes, not a global window", value.len())))?;
    let slots = &value[8..];
    if !slots.is_empty() && slot_sets(accs, slots) != Some(1) {
        return Err(bad_value(format!(
            "{} bytes of aggregates, not one slot set",
            slots.len()
        ))
        .into());
    }
    Ok((pending, slots))
}

impl GlobalWindowOp {
    /// The next multiple of the interval after `t`.
    fn next_boundary(&self, t: i64) -> i64 {
        let i = self.bound.interval;
        (t.div_euclid(i) + 1).saturating_mul(i)
    }

    /// The output rows of groups `groups` of `accs` (keys from `table` order).
    fn emit(
        &self,
        keys: Vec<ArrayRef>,
        accs: &[Accumulator],
        groups: Option<&[u32]>,
        out: &mut Output,
    ) -> Result<()> {
        let mut cols = keys;
        for a in accs {
            cols.push(a.finish(groups)?);
        }
        out.batch(RecordBatch::try_new(self.bound.schema.clone(), cols)?);
        Ok(())
    }

    /// Count trigger: rows in arrival order per key; every `n`-th since the key's last
    /// firing fires it.
    fn on_batch_count(
        &mut self,
        n: i64,
        key_of_row: &[u32],
        values: &[Option<ArrayRef>],
        times: Option<&[i64]>,
        out: &mut Output,
    ) -> Result<()> {
        let keys = self.core.table.len();
        // Segments: a key's rows between two firings; segment `s` of key `g`.
        let mut pending = vec![0i64; keys];
        let mut stored: Vec<Option<Vec<u8>>> = vec![None; keys];
        let mut buf = Vec::new();
        let mut key = Vec::new();
        for g in 0..keys {
            let kg = KeyGroup::of_hash(self.core.table.hash(g), self.core.max_parallelism);
            key.clear();
            self.core.table.key_bytes(g, &mut key);
            if self
                .core
                .backend
                .get(self.core.state, kg, &key, b"", &mut buf)?
            {
                let (p, slots) = split(&self.core.accs, &buf)?;
                pending[g] = p;
                stored[g] = (!slots.is_empty()).then(|| slots.to_vec());
            }
        }
        let mut seg_of_row = Vec::with_capacity(key_of_row.len());
        let mut seg_key: Vec<u32> = Vec::new();
        let mut seg_fires: Vec<bool> = Vec::new();
        let mut current = vec![u32::MAX; keys];
        for &g in key_of_row {
            let g = g as usize;
            if current[g] == u32::MAX {
                current[g] = seg_key.len() as u32;
                seg_key.push(g as u32);
                seg_fires.push(false);
            }
            seg_of_row.push(current[g]);
            pending[g] += 1;
            if pending[g] == n {
                seg_fires[current[g] as usize] = true;
                current[g] = u32::MAX;
                pending[g] = 0;
            }
        }
        let segs = seg_key.len();
        for (acc, v) in self.core.accs.iter_mut().zip(values) {
            acc.reset(segs);
            acc.update(v.as_ref(), times, RowSel::All, &seg_of_row)?;
        }
        // Walk each key's segments in order with a running aggregate: the stored one,
        // then each segment; a firing segment emits the running aggregate (and, purging,
        // restarts it).
        let mut running: Vec<Option<Vec<u8>>> = stored;
        let mut fired_keys: Vec<u32> = Vec::new();
        let mut fired_sets: Vec<u8> = Vec::new();
        let mut fired_ends: Vec<usize> = Vec::new();
        let mut seg = Vec::new();
        for s in 0..segs {
            let g = seg_key[s] as usize;
            seg.clear();
            encode_set(&self.core.accs, s, &mut seg);
            let run = running[g].get_or_insert_with(Vec::new);
            run.extend_from_slice(&seg); // merged when read: slot sets append
            if seg_fires[s] {
                fired_keys.push(g as u32);
                fired_sets.extend_from_slice(run);
                fired_ends.push(fired_sets.len());
                if self.purge {
                    running[g] = None;
                } else {
                    // Keep it compact: combine into one slot set.
                    let combined = self.combine(run)?;
                    running[g] = Some(combined);
                }
            }
        }
        if !fired_keys.is_empty() {
            let mut accs: Vec<Accumulator> = self
                .bound
                .aggs
                .iter()
                .map(BoundAggregate::new_accumulator)
                .collect();
            accs.iter_mut().for_each(|a| a.reset(fired_keys.len()));
            let mut from = 0;
            for (i, &end) in fired_ends.iter().enumerate() {
                if !merge_value(&mut accs, i, &fired_sets[from..end]) {
                    return Err(bad_value("malformed aggregates".into()).into());
                }
                from = end;
            }
            let keys = self
                .core
                .table
                .key_columns(self.core.keys.converter(), Some(&fired_keys))?;
            self.emit(keys, &accs, None, out)?;
        }
        let mut value = Vec::new();
        for g in 0..keys {
            let kg = KeyGroup::of_hash(self.core.table.hash(g), self.core.max_parallelism);
            key.clear();
            self.core.table.key_bytes(g, &mut key);
            value.clear();
            value.extend_from_slice(&pending[g].to_le_bytes());
            if let Some(run) = &running[g] {
                let combined = self.combine(run)?;
                value.extend_from_slice(&combined);
            }
            if value.len() == 8 && pending[g] == 0 {
                self.core.backend.delete(self.core.state, kg, &key, b"")?;
            } else {
                self.core
                    .backend
                    .put(self.core.state, kg, &key, b"", &value)?;
            }
        }
        Ok(())
    }

    /// One slot set from several appended ones.
    fn combine(&self, sets: &[u8]) -> Result<Vec<u8>> {
        let mut accs: Vec<Accumulator> = self
            .bound
            .aggs
            .iter()
            .map(BoundAggregate::new_accumulator)
            .collect();
        accs.iter_mut().for_each(|a| a.reset(1));
        if !merge_value(&mut accs, 0, sets) {
            return Err(bad_value("malformed aggregates".into()).into());
        }
        let mut out = Vec::new();
        encode_set(&accs, 0, &mut out);
        Ok(out)
    }

    /// Periodic triggers: each key's batch aggregate folds into its stored one, and a
    /// key with news gets a timer for the next boundary.
    fn on_batch_periodic(
        &mut self,
        key_of_row: &[u32],
        values: &[Option<ArrayRef>],
        times: Option<&[i64]>,
    ) -> Result<()> {
        let keys = self.core.table.len();
        for (acc, v) in self.core.accs.iter_mut().zip(values) {
            acc.reset(keys);
            acc.update(v.as_ref(), times, RowSel::All, key_of_row)?;
        }
        let mut rows = vec![0i64; keys];
        for &g in key_of_row {
            rows[g as usize] += 1;
        }
        let (domain, now) = match self.trigger {
            Trigger::ProcessingTime(_) => (TimeDomain::ProcessingTime, self.clock.now_ms()),
            _ => (TimeDomain::EventTime, self.core.watermark.millis()),
        };
        let mut key = Vec::new();
        for (g, &added) in rows.iter().enumerate() {
            let kg = KeyGroup::of_hash(self.core.table.hash(g), self.core.max_parallelism);
            key.clear();
            self.core.table.key_bytes(g, &mut key);
            let accs = &mut self.core.accs;
            let mut was_pending = 0;
            self.core
                .backend
                .update(self.core.state, kg, &key, b"", &mut |old, new| {
                    let mut pending = 0;
                    if let Some(old) = old {
                        let (p, slots) = split(accs, old).map_err(|e| bad_value(e.to_string()))?;
                        pending = p;
                        if !slots.is_empty() && !merge_value(accs, g, slots) {
                            return Err(bad_value("malformed aggregates".into()));
                        }
                    }
                    was_pending = pending;
                    new.extend_from_slice(&(pending + added).to_le_bytes());
                    encode_set(accs, g, new);
                    Ok(())
                })?;
            if was_pending == 0 {
                let at = Timestamp::from_millis(self.next_boundary(now));
                match domain {
                    TimeDomain::ProcessingTime => {
                        self.core
                            .timers
                            .register_processing_time_timer((kg, key.clone()), (), at)
                    }
                    _ => self
                        .core
                        .timers
                        .register_event_time_timer((kg, key.clone()), (), at),
                };
            }
        }
        Ok(())
    }

    /// Fires the keys whose periodic timers are due (all of them at the end).
    fn fire(&mut self, domain: TimeDomain, out: &mut Output) -> Result<()> {
        let mut fired_keys: Vec<Vec<u8>> = Vec::new();
        let mut sets: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        let mut buf = Vec::new();
        loop {
            let t = match domain {
                TimeDomain::EventTime => self.core.timers.next_event_timer(),
                _ => self.core.timers.next_processing_timer(),
            };
            let Some(t) = t else { break };
            let (kg, key) = t.key;
            if !self
                .core
                .backend
                .get(self.core.state, kg, &key, b"", &mut buf)?
            {
                continue;
            }
            let (pending, slots) = split(&self.core.accs, &buf)?;
            if pending == 0 {
                continue;
            }
            sets.extend_from_slice(slots);
            ends.push(sets.len());
            if self.purge {
                self.core.backend.delete(self.core.state, kg, &key, b"")?;
            } else {
                let mut value = 0i64.to_le_bytes().to_vec();
                value.extend_from_slice(slots);
                self.core
                    .backend
                    .put(self.core.state, kg, &key, b"", &value)?;
            }
            fired_keys.push(key);
        }
        if fired_keys.is_empty() {
            return Ok(());
        }
        let n = fired_keys.len();
        let mut accs: Vec<Accumulator> = self
            .bound
            .aggs
            .iter()
            .map(BoundAggregate::new_accumulator)
            .collect();
        accs.iter_mut().for_each(|a| a.reset(n));
        let mut from = 0;
        for (g, &end) in ends.iter().enumerate() {
            if !merge_value(&mut accs, g, &sets[from..end]) {
                return Err(bad_value("malformed aggregates".into()).into());
            }
            from = end;
        }
        let keys = decode_keys(&self.core.keys, &fired_keys)?;
        self.emit(keys, &accs, None, out)
    }
}

/// Key columns from stored key bytes.
pub(super) fn decode_keys(keys: &KeyColumns, stored: &[Vec<u8>]) -> Result<Vec<ArrayRef>> {
    if keys.is_int64() {
        let ints = stored
            .iter()
            .map(|k| {
                <[u8; 8]>::try_from(k.as_slice())
                    .map(i64::from_le_bytes)
                    .map_err(|_| bad_value(format!("a {}-byte integer key", k.len())))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(vec![Arc::new(sabot_core::arrow::array::Int64Array::from(
            ints,
        ))])
    } else {
        let parser = keys.converter().parser();
        Ok(keys
            .converter()
            .convert_rows(stored.iter().map(|k| parser.parse(k)))?)
    }
}

impl Operator for GlobalWindowOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let times = self
            .bound
            .time_idx
            .map(|i| event_times(batch.column(i)))
            .transpose()?;
        let keys = self.core.keys.of(&batch, &mut self.core.hashes)?;
        self.core.table.clear();
        let mut key_of_row = Vec::with_capacity(rows);
        self.core
            .table
            .groups_of(&keys, &self.core.hashes, RowSel::All, &mut key_of_row);
        let values = self
            .bound
            .aggs
            .iter()
            .map(|a| a.values(batch.columns()))
            .collect::<Result<Vec<_>>>()?;
        let times = times.as_ref().map(|t| t.values().as_ref());
        match self.trigger {
            Trigger::Count(n) => self.on_batch_count(n as i64, &key_of_row, &values, times, out),
            _ => self.on_batch_periodic(&key_of_row, &values, times),
        }
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.core.watermark {
            self.core.watermark = wm;
            if matches!(self.trigger, Trigger::EventTime(_)) {
                self.core.timers.advance_watermark(wm);
                self.fire(TimeDomain::EventTime, out)?;
            }
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        if matches!(self.trigger, Trigger::ProcessingTime(_)) {
            self.core
                .timers
                .advance_processing_time(Timestamp::from_millis(now_ms));
            self.fire(TimeDomain::ProcessingTime, out)?;
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.core.watermark = Timestamp::MAX;
        match self.trigger {
            Trigger::EventTime(_) => {
                self.core.timers.advance_watermark(Timestamp::MAX);
                self.fire(TimeDomain::EventTime, out)
            }
            Trigger::ProcessingTime(_) => {
                self.core.timers.advance_processing_time(Timestamp::MAX);
                self.fire(TimeDomain::ProcessingTime, out)
            }
            _ => Ok(()),
        }
    }

    crate::snapshot::backend_snapshots!(core);
}
