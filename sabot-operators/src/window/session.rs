//! Keyed session windows: a key's records closer than a gap form one window.

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::Int64Array;
use sabot_core::arrow::datatypes::Schema;
use sabot_core::key::KeyGroup;
use sabot_core::metrics::Counter;
use sabot_core::{RecordBatch, SchemaRef, Timestamp, duration_millis};
use sabot_state::{StateBackend, StateError};

use super::aggregate::{Aggregate, BoundAggregate, RowSel, encode_set, merge_value, slot_sets};
use super::keyed::KeyedCore;
use super::{LATE_DATA, LATE_RECORDS, LATE_RECORDS_DROPPED};
use crate::keys::KeyColumns;
use crate::{Operator, OperatorError, OperatorFactory, Output, Result, TaskContext};

/// Name of the session windows' state in the state backend (and in snapshots).
pub const SESSION_WINDOW_STATE: &str = "session-window";

/// Keyed event-time session windows (Flink's `EventTimeSessionWindows.withGap`): each
/// record opens a window `[ts, ts + gap)`, and a key's windows that overlap or touch
/// merge, across batches and across watermarks. A session is emitted when the watermark
/// passes its end, as one row: the key columns, [`WINDOW_START`] (the first record's
/// time), [`WINDOW_END`] (the last record's time plus the gap) and the aggregates.
///
/// Records are aggregated column by column into per-batch partial sessions first, then
/// merged with the key's stored sessions (in the job's state backend, one entry per open
/// session). The watermark moves between batches, so a batch's records count as
/// arriving together: a record is late when the session it forms with the batch's other
/// records of its key and the stored sessions has already ended at the watermark (Flink,
/// merging one record at a time, may call a record late that a later record of the same
/// batch would have bridged). Late records go to [`LATE_DATA`] and are counted.
#[derive(Clone, Debug)]
pub struct SessionWindowFactory {
    keys: Vec<String>,
    time_column: Option<String>,
    gap: Duration,
    aggregates: Vec<Aggregate>,
    allowed_lateness: Duration,
    /// Early firing was asked for (not supported here: a build error).
    early: bool,
}

impl SessionWindowFactory {
    /// Sessions of `keys` with inactivity `gap` over `time_column` (the stream's event
    /// time; `None` is a build error), computing `aggregates`.
    pub fn new(
        keys: Vec<String>,
        time_column: Option<String>,
        gap: Duration,
        aggregates: Vec<Aggregate>,
    ) -> Self {
        SessionWindowFactory {
            keys,
            time_column,
            gap,
            aggregates,
            allowed_lateness: Duration::ZERO,
            early: false,
        }
    }

    /// Early firing applies to tumbling and sliding windows: asking for it here is a
    /// build error.
    pub fn with_early_firing(mut self) -> Self {
        self.early = true;
        self
    }

    /// Keeps sessions open for late updates: not supported for session windows yet (a
    /// build error when not zero, rather than silently dropping the records).
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness;
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
        let Some(time_column) = &self.time_column else {
            return Err(self.invalid(
                "the stream has no event time: call with_watermarks(..) before windowing",
            ));
        };
        let gap = duration_millis(self.gap);
        if gap <= 0 {
            return Err(self.invalid("the session gap must be at least 1 ms"));
        }
        if !self.allowed_lateness.is_zero() {
            return Err(self.invalid("allowed lateness is not supported with session windows yet"));
        }
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
            gap,
            aggs,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

struct Bound {
    key_idx: Vec<usize>,
    time_idx: usize,
    gap: i64,
    aggs: Vec<BoundAggregate>,
    schema: SchemaRef,
}

impl OperatorFactory for SessionWindowFactory {
    fn name(&self) -> String {
        format!("session_window(gap {:?}, keys={:?})", self.gap, self.keys)
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
        let fingerprint = super::state_fingerprint("session-acc", "", input, &b.key_idx, &b.aggs);
        let mut core = KeyedCore::open(
            ctx,
            &format!("session-{}", self.keys.join("-")),
            SESSION_WINDOW_STATE,
            &fingerprint,
            keys,
            &b.aggs,
        )?;
        core.backend.index_for_scans(core.state)?;
        Ok(Box::new(SessionWindowOp {
            core,
            bound: b,
            late: ctx.metrics.counter(LATE_RECORDS),
            dropped: ctx.metrics.counter(LATE_RECORDS_DROPPED),
        }))
    }
}

struct SessionWindowOp {
    /// Its state: per key group, key bytes (the state key) and session start (the
    /// namespace, 8 bytes big-endian with the sign flipped: byte order is time order):
    /// the session's end (i64 LE) and the aggregates' slots. Its timers: per (key
    /// group, key bytes), the session's start, due at the session's last millisecond.
    core: KeyedCore<(KeyGroup, Vec<u8>), i64>,
    bound: Bound,
    late: Counter,
    dropped: Counter,
}

fn start_key(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn start_of(ns: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(ns.try_into().ok()?) ^ (1 << 63)) as i64)
}

fn bad_value(reason: String) -> StateError {
    StateError::BadValue {
        state: SESSION_WINDOW_STATE.into(),
        reason,
    }
}

/// One interval being merged: a stored session or a partial session of this batch.
#[derive(Clone, Copy, Debug)]
struct Part {
    start: i64,
    end: i64,
    /// The partial session's slot, or `None` for a stored session.
    slot: Option<u32>,
}

impl SessionWindowOp {
    /// Merges slot `from` into slot `into` (both partial sessions of this batch).
    fn merge_slots(&mut self, into: usize, from: usize) -> Result<()> {
        let mut bytes = Vec::new();
        encode_set(&self.core.accs, from, &mut bytes);
        if !merge_value(&mut self.core.accs, into, &bytes) {
            return Err(bad_value("malformed aggregates".into()).into());
        }
        Ok(())
    }

    /// Emits every session the watermark has passed.
    fn fire_due(&mut self, out: &mut Output) -> Result<()> {
        self.core.timers.advance_watermark(self.core.watermark);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut values: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        let mut buf = Vec::new();
        while let Some(t) = self.core.timers.next_event_timer() {
            let ((kg, key), start) = (t.key, t.namespace);
            let ns = start_key(start);
            if !self
                .core
                .backend
                .get(self.core.state, kg, &key, &ns, &mut buf)?
            {
                continue;
            }
            let (Some(end), slots) = (
                buf.get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_le_bytes),
                buf.get(8..).unwrap_or_default(),
            ) else {
                return Err(bad_value(format!("{} bytes, not a session", buf.len())).into());
            };
            if slot_sets(&self.core.accs, slots) != Some(1) {
                return Err(bad_value(format!(
                    "{} bytes of aggregates, not one slot set",
                    slots.len()
                ))
                .into());
            }
            values.extend_from_slice(slots);
            ends.push(values.len());
            bounds.push((start, end));
            keys.push(key.clone());
            self.core.backend.delete(self.core.state, kg, &key, &ns)?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let n = keys.len();
        for a in &mut self.core.accs {
            a.reset(n);
        }
        let mut from = 0;
        for (g, &end) in ends.iter().enumerate() {
            if !merge_value(&mut self.core.accs, g, &values[from..end]) {
                return Err(bad_value("malformed aggregates".into()).into());
            }
            from = end;
        }
        let mut cols = super::global::decode_keys(&self.core.keys, &keys)?;
        cols.push(Arc::new(Int64Array::from_iter_values(
            bounds.iter().map(|b| b.0),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            bounds.iter().map(|b| b.1),
        )));
        for a in &self.core.accs {
            cols.push(a.finish(None)?);
        }
        out.batch(RecordBatch::try_new(self.bound.schema.clone(), cols)?);
        Ok(())
    }
}

/// The rows `0..keys.len()` ordered by (key, time), for keys numbered `0..groups`: a
/// counting sort by key (keeping arrival order), then a sort by time of any key's run
/// that is not in time order already (a stream's rows mostly are).
fn order_by_key_and_time(keys: &[u32], groups: usize, ts: &[i64]) -> Vec<u32> {
    let mut start = vec![0u32; groups + 1];
    for &g in keys {
        start[g as usize + 1] += 1;
    }
    for g in 0..groups {
        start[g + 1] += start[g];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; keys.len()];
    for (r, &g) in keys.iter().enumerate() {
        let at = &mut next[g as usize];
        order[*at as usize] = r as u32;
        *at += 1;
    }
    for g in 0..groups {
        let run = &mut order[start[g] as usize..start[g + 1] as usize];
        if !run
            .windows(2)
            .all(|w| ts[w[0] as usize] <= ts[w[1] as usize])
        {
            run.sort_unstable_by_key(|&r| ts[r as usize]);
        }
    }
    order
}

impl Operator for SessionWindowOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let times = super::non_null_times(&batch, self.bound.time_idx)?;
        let ts = times.values();
        let gap = self.bound.gap;
        let keys = self.core.keys.of(&batch, &mut self.core.hashes)?;
        self.core.table.clear();
        let mut key_of_row = Vec::with_capacity(rows);
        self.core
            .table
            .groups_of(&keys, &self.core.hashes, RowSel::All, &mut key_of_row);

        // Partial sessions of this batch: rows sorted by (key, time), cut where the next
        // row is more than the gap after the session's end.
        let order = order_by_key_and_time(&key_of_row, self.core.table.len(), ts);
        let mut slot_of_row = vec![0u32; rows];
        // Per slot: key, start, end.
        let mut slots: Vec<(u32, i64, i64)> = Vec::new();
        for &r in &order {
            let (g, t) = (key_of_row[r as usize], ts[r as usize]);
            match slots.last_mut() {
                Some((sg, _, end)) if *sg == g && t <= *end => {
                    *end = (*end).max(t.saturating_add(gap));
                }
                _ => slots.push((g, t, t.saturating_add(gap))),
            }
            slot_of_row[r as usize] = (slots.len() - 1) as u32;
        }
        let values = self
            .bound
            .aggs
            .iter()
            .map(|a| a.values(batch.columns()))
            .collect::<Result<Vec<_>>>()?;
        for (acc, v) in self.core.accs.iter_mut().zip(&values) {
            acc.reset(slots.len());
            acc.update(v.as_ref(), Some(ts), RowSel::All, &slot_of_row)?;
        }

        // Per key: merge the partial sessions with the stored ones.
        let wm = self.core.watermark.millis();
        let mut late_slots = vec![false; slots.len()];
        let mut key = Vec::new();
        let mut value = Vec::new();
        let mut first = 0;
        while first < slots.len() {
            let g = slots[first].0;
            let last = first + slots[first..].iter().take_while(|s| s.0 == g).count();
            let kg = KeyGroup::of_hash(self.core.table.hash(g as usize), self.core.max_parallelism);
            key.clear();
            self.core.table.key_bytes(g as usize, &mut key);
            let mut parts: Vec<Part> = (first..last)
                .map(|s| Part {
                    start: slots[s].1,
                    end: slots[s].2,
                    slot: Some(s as u32),
                })
                .collect();
            let mut stored: Vec<(i64, i64, Vec<u8>)> = Vec::new();
            let mut bad = None;
            self.core
                .backend
                .scan(self.core.state, kg, &key, b"", &mut |ns, v| match (
                    start_of(ns),
                    v.get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(i64::from_le_bytes),
                ) {
                    (Some(start), Some(end)) if slot_sets(&self.core.accs, &v[8..]) == Some(1) => {
                        stored.push((start, end, v[8..].to_vec()));
                        true
                    }
                    _ => {
                        bad = Some(v.len());
                        false
                    }
                })?;
            if let Some(len) = bad {
                return Err(bad_value(format!("a session of {len} bytes")).into());
            }
            parts.extend(stored.iter().map(|&(start, end, _)| Part {
                start,
                end,
                slot: None,
            }));
            parts.sort_unstable_by_key(|p| (p.start, p.end));
            // Sweep: runs of intersecting (or touching) intervals merge.
            let mut i = 0;
            while i < parts.len() {
                let mut end = parts[i].end;
                let mut j = i + 1;
                while j < parts.len() && parts[j].start <= end {
                    end = end.max(parts[j].end);
                    j += 1;
                }
                let run = &parts[i..j];
                let start = run[0].start;
                let new_slots: Vec<u32> = run.iter().filter_map(|p| p.slot).collect();
                i = j;
                let Some(&into) = new_slots.first() else {
                    continue; // stored sessions only: unchanged
                };
                if end.saturating_sub(1) <= wm {
                    // Ended at the watermark already (a stored session never has: it
                    // would have fired): its records are late.
                    for &s in &new_slots {
                        late_slots[s as usize] = true;
                    }
                    continue;
                }
                for &s in &new_slots[1..] {
                    self.merge_slots(into as usize, s as usize)?;
                }
                for p in run.iter().filter(|p| p.slot.is_none()) {
                    let (_, _, bytes) = stored
                        .iter()
                        .find(|s| s.0 == p.start && s.1 == p.end)
                        .ok_or_else(|| bad_value("a stored session vanished".into()))?;
                    if !merge_value(&mut self.core.accs, into as usize, bytes) {
                        return Err(bad_value("malformed aggregates".into()).into());
                    }
                    // The merged session is written under its start below: a stored
                    // session that starts there is overwritten, not deleted first.
                    if p.start != start {
                        self.core
                            .backend
                            .delete(self.core.state, kg, &key, &start_key(p.start))?;
                    }
                    self.core.timers.delete_event_time_timer(
                        (kg, key.clone()),
                        p.start,
                        Timestamp::from_millis(p.end - 1),
                    );
                }
                value.clear();
                value.extend_from_slice(&end.to_le_bytes());
                encode_set(&self.core.accs, into as usize, &mut value);
                self.core
                    .backend
                    .put(self.core.state, kg, &key, &start_key(start), &value)?;
                self.core.timers.register_event_time_timer(
                    (kg, key.clone()),
                    start,
                    Timestamp::from_millis(end - 1),
                );
            }
            first = last;
        }
        let late: Vec<u32> = (0..rows as u32)
            .filter(|&r| late_slots[slot_of_row[r as usize] as usize])
            .collect();
        super::send_too_late(&batch, late, (&self.late, &self.dropped), out)
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.core.watermark {
            self.core.watermark = wm;
            self.fire_due(out)?;
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.core.watermark = Timestamp::MAX;
        self.fire_due(out)
    }

    crate::snapshot::backend_snapshots!(core);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The counting sort gives the same (key, time) sequence as a plain sort.
        #[test]
        fn order_by_key_and_time_matches_a_sort(
            rows in proptest::collection::vec((0u32..20, -50i64..50), 0..300),
            sorted_times in any::<bool>(),
        ) {
            let mut rows = rows;
            if sorted_times {
                rows.sort_by_key(|r| r.1);
            }
            let keys: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let ts: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let order = super::order_by_key_and_time(&keys, 20, &ts);
            let got: Vec<(u32, i64)> = order.iter().map(|&r| rows[r as usize]).collect();
            let mut want = rows.clone();
            want.sort();
            prop_assert_eq!(got, want);
            let mut seen = order.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..rows.len() as u32).collect::<Vec<_>>());
        }
    }
}
