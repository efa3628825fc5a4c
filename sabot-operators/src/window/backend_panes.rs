//! The pane store of tumbling and sliding windows on a state backend (RocksDB): panes
//! live in the backend, per key group, pane start (the state key, [`window_key`]) and
//! group key (the namespace), as the aggregates' slots; windows fire by event-time
//! timers per key group, so that they move with their keys on rescale.

use std::collections::BTreeMap;
use std::sync::Arc;

use sabot_core::RecordBatch;
use sabot_core::Timestamp;
use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::key::KeyGroup;
use sabot_state::{StateBackend, StateError, StateId};
use sabot_time::TimerService;

use super::WINDOW_STATE;
use super::aggregate::{Accumulator, RowSel, merge_value, slot_sets};
use super::groups::GroupTable;
use super::pane_window::{BatchInput, PaneStore, WindowCore};
use crate::{Output, Result, SnapshotWrite, TaskContext};

/// The timer namespace: a window start, and whether the timer is its cleanup.
pub(super) type WindowTimer = (i64, bool);

/// A window start as the state key of its entries: big-endian with the sign bit flipped,
/// so byte order is time order (and a window is one contiguous range in RocksDB).
pub(super) fn window_key(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

/// A malformed stored pane.
pub(super) fn bad_value(reason: String) -> StateError {
    StateError::BadValue {
        state: WINDOW_STATE.into(),
        reason,
    }
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

/// Panes in the state backend (see the module docs).
pub(super) struct BackendPanes {
    /// Pane contents: per key group, pane (the state key, [`window_key`]) and group key
    /// (the namespace), the aggregates' slots.
    backend: Box<dyn StateBackend>,
    state: StateId,
    /// Scratch for one batch: its distinct keys in one pane, their partial aggregates.
    table: GroupTable,
    accs: Vec<Accumulator>,
    /// Firing and cleanup timers per (key group, window).
    timers: TimerService<KeyGroup, WindowTimer>,
    max_parallelism: usize,
    groups: Vec<u32>,
    /// Scratch: one bit per key group, to register each window's timers once per batch.
    seen_key_groups: Vec<u64>,
    firing: Firing,
    /// Early firing: per pane, the keys updated since the last early firing.
    dirty: BTreeMap<i64, hashbrown::HashSet<(KeyGroup, Vec<u8>)>>,
}

impl BackendPanes {
    /// Opens the backend `state_name` with the window's state of layout `fingerprint`.
    pub(super) fn open(
        core: &WindowCore,
        ctx: &TaskContext,
        state_name: &str,
        fingerprint: &str,
    ) -> Result<Self> {
        let mut backend = ctx.open_state(state_name)?;
        let state = backend.register(WINDOW_STATE, fingerprint)?;
        Ok(BackendPanes {
            backend,
            state,
            table: super::group_table(&core.keys),
            accs: core.new_accs(),
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            groups: Vec::new(),
            seen_key_groups: Vec::new(),
            firing: Firing::default(),
            dirty: BTreeMap::new(),
        })
    }

    /// Fires every timer due at the current watermark.
    fn fire_due(&mut self, core: &WindowCore, out: &mut Output) -> Result<()> {
        self.timers.advance_watermark(core.watermark);
        while let Some(t) = self.timers.next_event_timer() {
            let (start, cleanup) = t.namespace;
            if self.firing.start.is_some_and(|s| s != start) {
                self.emit_firing(core, out)?;
            }
            if core.sliding() && !cleanup {
                self.gather_panes(core, t.key, start)?;
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
            if cleanup || core.bound.lateness_ms == 0 {
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
        self.emit_firing(core, out)
    }

    /// Sliding windows: gathers window `start` of key group `kg` from its panes, drops
    /// the oldest pane (this was its last window) and registers the key group's next
    /// window if a later pane holds anything.
    fn gather_panes(&mut self, core: &WindowCore, kg: KeyGroup, start: i64) -> Result<()> {
        let (lo, hi) = (
            window_key(start),
            window_key(start.saturating_add(core.bound.size_ms)),
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
        if core.bound.lateness_ms == 0 {
            let mut from = 0;
            for end in oldest_ends {
                self.backend
                    .delete(self.state, kg, &lo, &oldest[from..end])?;
                from = end;
            }
        }
        if later {
            let next = start.saturating_add(core.bound.slide_ms);
            self.timers.register_event_time_timer(
                kg,
                (next, false),
                Timestamp::from_millis(core.fire_time(next)),
            );
        }
        self.firing.start = Some(start);
        Ok(())
    }

    /// Emits the window gathered in `firing`, if any.
    fn emit_firing(&mut self, core: &WindowCore, out: &mut Output) -> Result<()> {
        let Some(start) = self.firing.start else {
            self.firing.clear();
            return Ok(());
        };
        let entries = self.firing.len();
        // Tumbling: one entry per key. Sliding: one per key and pane, combined per key.
        let (firsts, group_of): (Vec<usize>, Vec<usize>) = if core.sliding() {
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
        let keys: Vec<ArrayRef> = if core.keys.is_int64() {
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
            let parser = core.keys.converter().parser();
            core.keys
                .converter()
                .convert_rows(firsts.iter().map(|&i| parser.parse(self.firing.key(i))))?
        };
        let mut accs = core.new_accs();
        accs.iter_mut().for_each(|a| a.reset(n));
        for (i, &g) in group_of.iter().enumerate() {
            if !merge_value(&mut accs, g, self.firing.value(i)) {
                return Err(bad_value(format!("window {start}: malformed aggregates")).into());
            }
        }
        let batch = core.result(start, keys, &accs, None)?;
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
    fn window_results(
        &self,
        core: &WindowCore,
        w: i64,
        keys: &[(KeyGroup, Vec<u8>)],
    ) -> Result<RecordBatch> {
        let (size, slide) = (core.bound.size_ms, core.bound.slide_ms);
        let mut accs = core.new_accs();
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
        let cols = super::global::decode_keys(&core.keys, &stored)?;
        core.result(w, cols, &accs, None)
    }

    /// Sliding windows with allowed lateness: pane `pane` was just updated for the keys
    /// of `table`; every window holding it that fired and is not cleaned up yet emits
    /// those keys' new results.
    fn emit_late_panes(&mut self, core: &WindowCore, pane: i64, out: &mut Output) -> Result<()> {
        let keys = self.table_keys();
        for w in core.kept_fired_windows(pane) {
            out.batch(self.window_results(core, w, &keys)?);
        }
        Ok(())
    }

    /// Early firing: every window not fired yet that holds a pane updated since the last
    /// early firing emits the updated keys' current results.
    fn fire_early_windows(&mut self, core: &WindowCore, out: &mut Output) -> Result<()> {
        // Per window: the keys updated in any of its panes.
        let mut windows: BTreeMap<i64, hashbrown::HashSet<(KeyGroup, Vec<u8>)>> = BTreeMap::new();
        for (pane, keys) in std::mem::take(&mut self.dirty) {
            for w in core.windows_of(pane).filter(|&w| !core.is_due(w)) {
                windows.entry(w).or_default().extend(keys.iter().cloned());
            }
        }
        for (w, keys) in windows {
            let mut keys: Vec<(KeyGroup, Vec<u8>)> = keys.into_iter().collect();
            keys.sort_unstable();
            out.batch(self.window_results(core, w, &keys)?);
        }
        Ok(())
    }

    /// Registers the timers of window `start` for the key groups of `rows`: the firing
    /// (unless the window is already due: late updates emit at once) and the cleanup.
    fn register_timers(
        &mut self,
        core: &WindowCore,
        start: i64,
        rows: RowSel<'_>,
        hashes: &[u64],
        due: bool,
    ) {
        let words = self.max_parallelism.div_ceil(64);
        self.seen_key_groups.clear();
        self.seen_key_groups.resize(words, 0);
        // The pane's first window that has not fired (the pane's own for tumbling).
        let window = core.first_open_window(start);
        let (fire, cleanup) = (core.fire_time(window), core.cleanup_time(start));
        // A cleanup timer is needed when the allowed lateness keeps the window past its
        // own firing (compared with the window's own firing time: for a late update,
        // `window` may be a later one).
        // Sliding: `start` is a pane, whose last window starts at it; its cleanup drops
        // the pane (without lateness, its last window's firing does).
        let needs_cleanup = cleanup != core.fire_time(start);
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
            RowSel::All => hashes.iter().for_each(|&h| register(h)),
            RowSel::Some(sel) => sel.iter().for_each(|&r| register(hashes[r as usize])),
        }
    }

    /// Folds the rows `sel` of one window into its state: aggregates the batch per key
    /// first (vectorized), then one read-modify-write per distinct key. If the window is
    /// due (a late update), emits the touched keys' new results.
    fn update_window(
        &mut self,
        core: &WindowCore,
        start: i64,
        sel: RowSel<'_>,
        input: &BatchInput<'_>,
        due: bool,
        out: &mut Output,
    ) -> Result<()> {
        let BatchInput {
            keys,
            hashes,
            values,
            times,
        } = *input;
        self.table.clear();
        self.groups.clear();
        self.table.groups_of(keys, hashes, sel, &mut self.groups);
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
        if core.bound.early_ms > 0 && !core.is_due(start) {
            let keys = self.table_keys();
            self.dirty.entry(start).or_default().extend(keys);
        }
        if due {
            // A late update of a window that already fired: emit the touched keys' new
            // results now, as Flink's event-time trigger does.
            let keys = self.table.key_columns(core.keys.converter(), None)?;
            out.batch(core.result(start, keys, &self.accs, None)?);
        }
        Ok(())
    }
}

impl PaneStore for BackendPanes {
    fn update(
        &mut self,
        core: &WindowCore,
        pane: i64,
        rows: RowSel<'_>,
        input: &BatchInput<'_>,
        out: &mut Output,
    ) -> Result<()> {
        let due = core.is_due(pane);
        // Timers are de-duplicated: registering per batch covers key groups that join
        // a window later.
        self.register_timers(core, pane, rows, input.hashes, due);
        let sliding = core.sliding();
        self.update_window(core, pane, rows, input, due && !sliding, out)?;
        if sliding && core.bound.lateness_ms > 0 && core.partly_late(pane) {
            self.emit_late_panes(core, pane, out)?;
        }
        Ok(())
    }

    fn fire(&mut self, core: &WindowCore, _old: Timestamp, out: &mut Output) -> Result<()> {
        self.fire_due(core, out)
    }

    fn fire_early(&mut self, core: &WindowCore, out: &mut Output) -> Result<()> {
        self.fire_early_windows(core, out)
    }

    fn snapshot_async(
        &mut self,
        core: &WindowCore,
        target: &crate::SnapshotTarget,
    ) -> Result<Option<SnapshotWrite>> {
        crate::snapshot::backend_write_async(
            target,
            &mut self.backend,
            &self.timers,
            core.watermark,
        )
    }

    fn restore(&mut self, _core: &WindowCore, from: &[crate::SnapshotSource]) -> Result<Timestamp> {
        crate::snapshot::backend_read(from, &mut self.backend, &mut self.timers)
    }
}
