//! Tumbling and sliding windows on memory state: each pane is a hash table of
//! accumulators inside the operator, updated column by column; the backend only holds
//! snapshots.
//!
//! The same semantics as the backend-resident panes ([`super::backend_panes`]):
//! panes of one slide, windows fired when the watermark passes their last millisecond,
//! allowed lateness with re-emitted results, late records to the side output, early
//! firing. What differs is where the aggregates live: a batch's rows are mapped to their
//! pane's groups and aggregated in place, with no state access per key, and a window
//! fires straight from its pane's columns (tumbling) or by combining its panes
//! (sliding). A snapshot writes the panes into a fresh memory backend (the same layout as
//! the backend-resident window: per key group, pane start and key, the slot set) and
//! snapshots that; a restore reads them back, keeping this subtask's key groups.

use std::collections::{BTreeMap, BTreeSet};

use sabot_core::key::{KeyGroup, hash_columns};
use sabot_core::{RecordBatch, Timestamp};
use sabot_time::TimerService;

use super::WINDOW_STATE;
use super::aggregate::{
    Accumulator, RowSel, encode_set, merge_group, merge_mapped, merge_value, unmerge_mapped,
};
use super::backend_panes::{bad_value, window_key};
use super::groups::GroupTable;
use super::pane_window::{BatchInput, PaneStore, WindowCore};
use crate::{Output, Result, SnapshotWrite, TaskContext};

/// One pane: its keys and their accumulators.
struct Pane {
    table: GroupTable,
    accs: Vec<Accumulator>,
    /// Early firing: the groups updated since the last early firing.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// With a shared dictionary ([`Shared`]): each group's key's number there (which is
    /// also where the running aggregates keep that key).
    ids: Vec<u32>,
    /// With a shared dictionary, while rows still come to this pane in order: the group
    /// of each dictionary key (`EMPTY_GROUP` if none), so a row finds its group with one
    /// dictionary lookup and an index. Empty once the watermark passed the pane: later
    /// (late) rows use the pane's own index.
    slot_of: Vec<u32>,
}

/// Copies into `p`'s own key table the keys it holds only as numbers of `dict` (rows
/// add a pane's keys as dictionary numbers alone; snapshots, late rows and re-emitted
/// windows read the pane's keys).
fn sync_keys(p: &mut Pane, dict: &GroupTable) {
    for g in p.table.len()..p.ids.len() {
        p.table.push_from(dict, p.ids[g] as usize);
    }
}

impl Running {
    /// Room for keys numbered up to `n` of the dictionary.
    fn fit(&mut self, n: usize) {
        if self.present.len() < n {
            self.present.resize(n, 0);
            self.accs.iter_mut().for_each(|a| a.resize(n));
        }
    }
}

/// The running aggregates exist only with the shared dictionary (a bug otherwise).
fn no_dictionary() -> crate::OperatorError {
    bad_value("incremental sliding window without its key dictionary".into()).into()
}

/// One more pane holds dictionary key `id` if `new` (without a branch: the row loop
/// calls it for every row); `live` counts the keys some pane holds.
#[inline]
fn hold(refs: &mut [u32], live: &mut usize, id: u32, new: bool) {
    let r = &mut refs[id as usize];
    *r += u32::from(new);
    *live += usize::from(new && *r == 1);
}

/// A pane holding dictionary key `id` is gone.
#[inline]
fn release(refs: &mut [u32], live: &mut usize, id: u32) {
    let r = &mut refs[id as usize];
    *r -= 1;
    *live -= usize::from(*r == 0);
}

/// No group in a pane's [`Pane::slot_of`].
const EMPTY_GROUP: u32 = u32::MAX;

/// Sliding windows with invertible aggregates: one dictionary of the keys in any pane,
/// shared by the panes and the running aggregates. A row is one dictionary lookup (the
/// dictionary stays warm, as a tumbling window's table does), a pane is a list of
/// dictionary numbers with its accumulators, and adding or taking a pane out of the
/// running aggregates needs no lookup: they are indexed by dictionary number.
struct Shared {
    dict: GroupTable,
    /// Per dictionary key: how many panes hold it.
    refs: Vec<u32>,
    /// How many keys have `refs > 0`.
    live: usize,
    /// The dictionary numbers of the rows being added, reused.
    ids: Vec<u32>,
}

/// A pane read back from a snapshot: its keys and their slot sets, as stored.
type StoredPane = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The timers of the backend-resident window, written empty: this window fires from
/// its panes and the watermark.
type Timers = TimerService<KeyGroup, (i64, bool)>;

/// Panes in memory (see the module docs).
pub(super) struct MemoryPanes {
    ctx: TaskContext,
    /// The backend's name for snapshots, and the state's fingerprint.
    state_name: String,
    fingerprint: String,
    panes: BTreeMap<i64, Pane>,
    groups: Vec<u32>,
    /// Sliding windows with invertible aggregates: the next window to fire, less its
    /// newest pane (see [`Running`]).
    running: Option<Running>,
    /// The shared key dictionary (sliding windows with invertible aggregates).
    shared: Option<Shared>,
}

/// The incremental sliding window (for counts, integer sums and averages): window `w`'s
/// aggregates come from the previous window's by adding the newest pane and taking out
/// the oldest one, instead of combining all `size / slide` panes.
struct Running {
    /// The window these aggregates are for, once its newest pane is added: they hold
    /// panes `[start, start + size - slide)`.
    start: i64,
    accs: Vec<Accumulator>,
    /// Per key, numbered as in the shared dictionary (as `accs` are): how many of the
    /// held panes hold it (0: not in the window).
    present: Vec<u32>,
    /// How many keys have `present > 0`.
    live: usize,
}

impl MemoryPanes {
    pub(super) fn new(
        core: &WindowCore,
        ctx: &TaskContext,
        state_name: String,
        fingerprint: String,
    ) -> Self {
        let invertible = core.sliding()
            && core
                .bound
                .aggs
                .iter()
                .all(|a| a.new_accumulator().invertible(a.input_nullable));
        MemoryPanes {
            ctx: ctx.clone(),
            state_name,
            fingerprint,
            panes: BTreeMap::new(),
            groups: Vec::new(),
            running: None,
            shared: invertible.then(|| Shared {
                dict: super::group_table(&core.keys),
                refs: Vec::new(),
                live: 0,
                ids: Vec::new(),
            }),
        }
    }

    fn new_pane(core: &WindowCore) -> Pane {
        Pane {
            table: super::group_table(&core.keys),
            accs: core.new_accs(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            ids: Vec::new(),
            slot_of: Vec::new(),
        }
    }

    /// Window `w`'s results: for every key in its panes, or only for the keys of `only`.
    fn window_results(
        &mut self,
        core: &WindowCore,
        w: i64,
        only: Option<&GroupTable>,
    ) -> Result<Option<RecordBatch>> {
        self.sync_all_keys();
        let conv = core.keys.converter();
        if core.bound.slide_ms == core.bound.size_ms && only.is_none() {
            // Tumbling: the pane is the window.
            let Some(p) = self.panes.get(&w) else {
                return Ok(None);
            };
            if p.table.len() == 0 {
                return Ok(None);
            }
            let cols = p.table.key_columns(conv, None)?;
            return core.result(w, cols, &p.accs, None).map(Some);
        }
        let mut combined = match (only, self.panes.values().next()) {
            (Some(t), _) => {
                let mut c = t.empty_like();
                for g in 0..t.len() {
                    c.insert_from(t, g);
                }
                c
            }
            (None, Some(p)) => p.table.empty_like(),
            (None, None) => return Ok(None),
        };
        let mut accs = core.new_accs();
        let mut slots = combined.len();
        accs.iter_mut().for_each(|a| a.reset(slots));
        let mut q = w;
        while q < w.saturating_add(core.bound.size_ms) {
            if only.is_some()
                && let Some(p) = self.panes.get_mut(&q)
            {
                // Panes keyed through the shared dictionary index their own keys on
                // first need.
                p.table.ensure_index();
            }
            if let Some(p) = self.panes.get(&q) {
                if only.is_some() {
                    for h in 0..combined.len() {
                        if let Some(g) = p.table.find_from(&combined, h)
                            && !merge_group(&mut accs, h, &p.accs, g as usize)
                        {
                            return Err(bad_value(format!("pane {q}: malformed aggregates")).into());
                        }
                    }
                } else {
                    for g in 0..p.table.len() {
                        let h = combined.insert_from(&p.table, g) as usize;
                        if h >= slots {
                            slots = combined.len();
                            accs.iter_mut().for_each(|a| a.resize(slots));
                        }
                        if !merge_group(&mut accs, h, &p.accs, g) {
                            return Err(bad_value(format!("pane {q}: malformed aggregates")).into());
                        }
                    }
                }
            }
            q = q.saturating_add(core.bound.slide_ms);
        }
        if combined.len() == 0 {
            return Ok(None);
        }
        let cols = combined.key_columns(conv, None)?;
        core.result(w, cols, &accs, None).map(Some)
    }

    /// Adds (`add`) or takes out pane `pane` into the running aggregates: they are
    /// numbered as the shared dictionary, so the pane's numbers are where its groups go.
    fn apply_pane(&mut self, r: &mut Running, pane: i64, add: bool) -> Result<()> {
        let Some(p) = self.panes.get_mut(&pane) else {
            return Ok(());
        };
        let sh = self.shared.as_ref().ok_or_else(no_dictionary)?;
        r.fit(sh.dict.len());
        let map = &p.ids;
        let ok = if add {
            for &h in map {
                let n = &mut r.present[h as usize];
                r.live += usize::from(*n == 0);
                *n += 1;
            }
            merge_mapped(&mut r.accs, &p.accs, map)
        } else {
            for &h in map {
                let n = &mut r.present[h as usize];
                r.live -= usize::from(*n == 1);
                *n = n.saturating_sub(1);
            }
            unmerge_mapped(&mut r.accs, &p.accs, map)
        };
        if !ok {
            return Err(bad_value(format!("pane {pane}: aggregates of another layout")).into());
        }
        Ok(())
    }

    /// Sliding window `w`, incrementally: the running aggregates of its older panes (or
    /// rebuilt from them), plus its newest pane; then its oldest pane goes, for `w + slide`.
    fn window_incremental(&mut self, core: &WindowCore, w: i64) -> Result<Option<RecordBatch>> {
        let (size, slide) = (core.bound.size_ms, core.bound.slide_ms);
        let mut r = match self.running.take() {
            Some(r) if r.start == w => r,
            _ => {
                if self.panes.is_empty() {
                    return Ok(None);
                }
                let mut r = Running {
                    start: w,
                    accs: core.new_accs(),
                    present: Vec::new(),
                    live: 0,
                };
                let mut q = w;
                while q < w.saturating_add(size - slide) {
                    self.apply_pane(&mut r, q, true)?;
                    q = q.saturating_add(slide);
                }
                r
            }
        };
        self.apply_pane(&mut r, w.saturating_add(size - slide), true)?;
        let keys = &self.shared.as_ref().ok_or_else(no_dictionary)?.dict;
        r.fit(keys.len());
        // Every key of the dictionary in the window (the steady state): no list needed.
        let all_live = r.live == keys.len();
        let live: Vec<u32> = if all_live {
            Vec::new()
        } else {
            (0..r.present.len() as u32)
                .filter(|&h| r.present[h as usize] > 0)
                .collect()
        };
        let n_live = if all_live { keys.len() } else { live.len() };
        let batch = if n_live == 0 {
            None
        } else {
            // Every key still in the window (the steady state): copies, not gathers.
            let sel = (n_live < keys.len()).then_some(live.as_slice());
            let cols = keys.key_columns(core.keys.converter(), sel)?;
            Some(core.result(w, cols, &r.accs, sel)?)
        };
        self.apply_pane(&mut r, w, false)?;
        r.start = w.saturating_add(slide);
        // Keys that left the window stay numbered until the dictionary is compacted
        // (see `fire`), which drops these aggregates.
        self.running = Some(r);
        Ok(batch)
    }

    /// The watermark moved from `old` to the current one: fires the windows whose last
    /// millisecond it passed, then drops the panes whose last window's lateness passed.
    fn fire_windows(&mut self, core: &WindowCore, old: Timestamp, out: &mut Output) -> Result<()> {
        let (size, slide) = (core.bound.size_ms, core.bound.slide_ms);
        let mut due: BTreeSet<i64> = BTreeSet::new();
        // The windows whose last millisecond is in (old, new]: their starts are in
        // (old - size + 1, new - size + 1]. Usually a few: walk them; after a jump (the
        // first or the final watermark) walk the panes' windows instead.
        let (lo, hi) = (
            old.millis().saturating_sub(size - 1),
            core.watermark.millis().saturating_sub(size - 1),
        );
        let span = hi.saturating_sub(lo) / slide;
        let held = self.panes.len() as i64 * (size / slide);
        if span <= held {
            let mut w = lo.saturating_add(1);
            w = w.saturating_add((slide - w.rem_euclid(slide)) % slide);
            while w <= hi {
                // Any pane in [w, w + size)?
                if self.panes.range(w..w.saturating_add(size)).next().is_some() {
                    due.insert(w);
                }
                w = w.saturating_add(slide);
            }
        } else {
            for &p in self.panes.keys() {
                for w in core.windows_of(p) {
                    let t = Timestamp::from_millis(core.fire_time(w));
                    if t > old && t <= core.watermark {
                        due.insert(w);
                    }
                }
            }
        }
        for w in due {
            let batch = if self.shared.is_some() {
                self.window_incremental(core, w)?
            } else {
                self.window_results(core, w, None)?
            };
            if let Some(b) = batch {
                out.batch(b);
            }
        }
        // A pane's last window starts at the pane; panes are in time order.
        let gone: Vec<i64> = self
            .panes
            .keys()
            .copied()
            .take_while(|&p| core.passed(core.cleanup_time(p)))
            .collect();
        for p in gone {
            if let Some(p) = self.panes.remove(&p)
                && let Some(sh) = &mut self.shared
            {
                for &id in &p.ids {
                    release(&mut sh.refs, &mut sh.live, id);
                }
            }
        }
        if self.shared.is_some() {
            // Panes the watermark passed get rows only when late: they drop their
            // dictionary-sized map (late rows use the pane's own index).
            for (&start, p) in self.panes.iter_mut() {
                if !p.slot_of.is_empty()
                    && Timestamp::from_millis(start.saturating_add(slide - 1)) <= core.watermark
                {
                    p.slot_of = Vec::new();
                }
            }
            self.compact_dict();
        }
        Ok(())
    }

    /// Brings every pane's own key table up to date with its dictionary numbers.
    fn sync_all_keys(&mut self) {
        if let Some(sh) = &self.shared {
            for p in self.panes.values_mut() {
                sync_keys(p, &sh.dict);
            }
        }
    }

    /// Rebuilds the shared dictionary without the keys no pane holds, once they
    /// outnumber the others: renumbers the panes' keys and drops the running
    /// aggregates (rebuilt from the panes at the next firing).
    fn compact_dict(&mut self) {
        let Some(sh) = &mut self.shared else {
            return;
        };
        if sh.dict.len() - sh.live <= sh.live + 4096 {
            return;
        }
        let mut dict = sh.dict.empty_like();
        dict.reserve(sh.live);
        let mut renumber = vec![EMPTY_GROUP; sh.dict.len()];
        let mut refs = Vec::with_capacity(sh.live);
        for (id, &r) in sh.refs.iter().enumerate() {
            if r > 0 {
                renumber[id] = dict.insert_from(&sh.dict, id);
                refs.push(r);
            }
        }
        for p in self.panes.values_mut() {
            for id in &mut p.ids {
                *id = renumber[*id as usize];
            }
            if !p.slot_of.is_empty() {
                p.slot_of.clear();
                p.slot_of.resize(dict.len(), EMPTY_GROUP);
                for (g, &id) in p.ids.iter().enumerate() {
                    p.slot_of[id as usize] = g as u32;
                }
            }
        }
        sh.dict = dict;
        sh.refs = refs;
        self.running = None;
    }

    /// Early firing: windows not fired yet emit the keys updated in their panes.
    fn fire_early_windows(&mut self, core: &WindowCore, out: &mut Output) -> Result<()> {
        self.sync_all_keys();
        let mut windows: BTreeMap<i64, GroupTable> = BTreeMap::new();
        let dirty: Vec<i64> = self
            .panes
            .iter()
            .filter(|(_, p)| !p.dirty.is_empty())
            .map(|(&k, _)| k)
            .collect();
        for pane in dirty {
            let ws: Vec<i64> = core.windows_of(pane).filter(|&w| !core.is_due(w)).collect();
            let p = self
                .panes
                .get_mut(&pane)
                .ok_or_else(|| bad_value("a pane vanished".into()))?;
            for w in ws {
                let t = windows.entry(w).or_insert_with(|| p.table.empty_like());
                for &g in &p.dirty {
                    t.insert_from(&p.table, g as usize);
                }
            }
            for &g in &p.dirty {
                p.is_dirty[g as usize] = false;
            }
            p.dirty.clear();
        }
        for (w, keys) in windows {
            if let Some(b) = self.window_results(core, w, Some(&keys))? {
                out.batch(b);
            }
        }
        Ok(())
    }

    /// Folds rows `sel` of pane `pane` into it; with allowed lateness, re-emits the
    /// touched keys' results in the fired windows still kept.
    fn update_pane(
        &mut self,
        core: &WindowCore,
        pane: i64,
        sel: RowSel<'_>,
        input: &BatchInput<'_>,
        out: &mut Output,
    ) -> Result<()> {
        let BatchInput {
            keys,
            hashes,
            values,
            times,
        } = *input;
        if !self.panes.contains_key(&pane) {
            let mut p = Self::new_pane(core);
            // Panes of a stream tend to hold as many keys as the one before.
            if let Some(last) = self.panes.values().next_back() {
                if self.shared.is_some() {
                    p.ids.reserve(last.ids.len());
                } else {
                    p.table.reserve(last.table.len());
                }
            }
            self.panes.insert(pane, p);
        }
        // A late update of a pane the running aggregates hold: they are stale.
        if self.running.as_ref().is_some_and(|r| {
            pane >= r.start
                && pane
                    < r.start
                        .saturating_add(core.bound.size_ms - core.bound.slide_ms)
        }) {
            self.running = None;
        }
        // Rows still come to this pane in order until the watermark passes its end.
        let hot = !core.passed(pane.saturating_add(core.bound.slide_ms - 1));
        let p = self
            .panes
            .get_mut(&pane)
            .ok_or_else(|| bad_value("a pane vanished".into()))?;
        self.groups.clear();
        match &mut self.shared {
            Some(sh) => {
                // One dictionary lookup per row; the pane's group from its map by
                // dictionary number, or (a pane the watermark passed) its own index.
                sh.ids.clear();
                sh.dict.groups_of(keys, hashes, sel, &mut sh.ids);
                let n = sh.dict.len();
                if sh.refs.len() < n {
                    sh.refs.resize(n, 0);
                }
                if hot && p.slot_of.len() < n {
                    if p.slot_of.is_empty() {
                        // Turning hot again (after a compaction, say): map its keys.
                        p.slot_of.resize(n, EMPTY_GROUP);
                        for (g, &id) in p.ids.iter().enumerate() {
                            p.slot_of[id as usize] = g as u32;
                        }
                    } else {
                        p.slot_of.resize(n, EMPTY_GROUP);
                    }
                }
                if !p.slot_of.is_empty() {
                    // Without branches: about half the rows are a pane's first of their
                    // key, so a branch on it would be mispredicted half the time. The key
                    // itself is copied into the pane's table only when needed (see
                    // `sync_keys`).
                    // Locals and slices, so that nothing is reloaded per row.
                    let mut len = p.ids.len();
                    p.ids.resize(len + sh.ids.len(), 0);
                    self.groups.resize(sh.ids.len(), 0);
                    let (slot_of, ids, refs) =
                        (&mut p.slot_of[..], &mut p.ids[..], &mut sh.refs[..]);
                    let mut live = sh.live;
                    for (&id, group) in sh.ids.iter().zip(self.groups.iter_mut()) {
                        let slot = slot_of[id as usize];
                        let new = slot == EMPTY_GROUP;
                        let g = if new { len as u32 } else { slot };
                        slot_of[id as usize] = g;
                        ids[len] = id;
                        len += usize::from(new);
                        hold(refs, &mut live, id, new);
                        *group = g;
                    }
                    sh.live = live;
                    p.ids.truncate(len);
                } else {
                    sync_keys(p, &sh.dict);
                    for &id in &sh.ids {
                        let g = p.table.insert_from(&sh.dict, id as usize);
                        if g as usize == p.ids.len() {
                            p.ids.push(id);
                            hold(&mut sh.refs, &mut sh.live, id, true);
                        }
                        self.groups.push(g);
                    }
                }
            }
            None => p.table.groups_of(keys, hashes, sel, &mut self.groups),
        }
        let n = match self.shared {
            Some(_) => p.ids.len(),
            None => p.table.len(),
        };
        for (acc, v) in p.accs.iter_mut().zip(values) {
            acc.resize(n);
            acc.update(v.as_ref(), Some(times), sel, &self.groups)?;
        }
        let early = core.bound.early_ms > 0;
        let late_update = core.bound.lateness_ms > 0
            && Timestamp::from_millis(pane.saturating_add(core.bound.slide_ms - 1))
                <= core.watermark;
        if !early && !late_update {
            return Ok(());
        }
        // The distinct groups this batch touched.
        let mut touched: Vec<u32> = self.groups.clone();
        touched.sort_unstable();
        touched.dedup();
        if early {
            p.is_dirty.resize(n, false);
            for &g in &touched {
                if !p.is_dirty[g as usize] {
                    p.is_dirty[g as usize] = true;
                    p.dirty.push(g);
                }
            }
        }
        if late_update {
            if let Some(sh) = &self.shared {
                sync_keys(p, &sh.dict);
            }
            let mut keys = p.table.empty_like();
            for &g in &touched {
                keys.insert_from(&p.table, g as usize);
            }
            let ws: Vec<i64> = core.kept_fired_windows(pane).collect();
            for w in ws {
                if let Some(b) = self.window_results(core, w, Some(&keys))? {
                    out.batch(b);
                }
            }
        }
        Ok(())
    }

    /// A fresh memory backend holding the panes, for a snapshot.
    fn to_backend(&self) -> Result<Box<dyn sabot_state::StateBackend>> {
        let mut backend = self.ctx.open_state(&self.state_name)?;
        let state = backend.register(WINDOW_STATE, &self.fingerprint)?;
        let mut key = Vec::new();
        let mut value = Vec::new();
        for (&pane, p) in &self.panes {
            let wk = window_key(pane);
            for g in 0..p.table.len() {
                let kg = KeyGroup::of_hash(p.table.hash(g), self.ctx.max_parallelism);
                key.clear();
                p.table.key_bytes(g, &mut key);
                value.clear();
                encode_set(&p.accs, g, &mut value);
                backend.put(state, kg, &wk, &key, &value)?;
            }
        }
        Ok(backend)
    }
}

impl PaneStore for MemoryPanes {
    fn update(
        &mut self,
        core: &WindowCore,
        pane: i64,
        rows: RowSel<'_>,
        input: &BatchInput<'_>,
        out: &mut Output,
    ) -> Result<()> {
        self.update_pane(core, pane, rows, input, out)
    }

    fn fire(&mut self, core: &WindowCore, old: Timestamp, out: &mut Output) -> Result<()> {
        self.fire_windows(core, old, out)
    }

    fn fire_early(&mut self, core: &WindowCore, out: &mut Output) -> Result<()> {
        self.fire_early_windows(core, out)
    }

    fn snapshot_async(
        &mut self,
        core: &WindowCore,
        target: &crate::SnapshotTarget,
    ) -> Result<Option<SnapshotWrite>> {
        self.sync_all_keys();
        let mut backend = self.to_backend()?;
        let timers = Timers::new(self.ctx.max_parallelism);
        crate::snapshot::backend_write_async(target, &mut backend, &timers, core.watermark)
    }

    fn restore(&mut self, core: &WindowCore, from: &[crate::SnapshotSource]) -> Result<Timestamp> {
        let mut backend = self.ctx.open_state(&self.state_name)?;
        let state = backend.register(WINDOW_STATE, &self.fingerprint)?;
        let mut timers = Timers::new(self.ctx.max_parallelism);
        let watermark = crate::snapshot::backend_read(from, &mut backend, &mut timers)?;
        let mut hashes = Vec::new();
        self.panes.clear();
        self.running = None;
        if let Some(sh) = &mut self.shared {
            sh.dict.clear();
            sh.refs.clear();
            sh.live = 0;
        }
        // Every stored (pane, key, slot set), by pane.
        let mut by_pane: BTreeMap<i64, StoredPane> = BTreeMap::new();
        let range = backend.key_groups();
        let mut bad = None;
        for kg in range.start..range.end {
            backend.scan_key_group(state, KeyGroup(kg), &mut |pane, key, value| {
                match <[u8; 8]>::try_from(pane) {
                    Ok(b) => {
                        let p = (u64::from_be_bytes(b) ^ (1 << 63)) as i64;
                        let e = by_pane.entry(p).or_default();
                        e.0.push(key.to_vec());
                        e.1.push(value.to_vec());
                        true
                    }
                    Err(_) => {
                        bad = Some(pane.len());
                        false
                    }
                }
            })?;
        }
        if let Some(len) = bad {
            return Err(bad_value(format!("a {len}-byte pane key")).into());
        }
        for (pane, (keys, values)) in by_pane {
            let cols = super::global::decode_keys(&core.keys, &keys)?;
            hash_columns(&cols, &mut hashes)?;
            let mut p = Self::new_pane(core);
            let parser = core.keys.converter().parser();
            for (i, (key, value)) in keys.iter().zip(&values).enumerate() {
                let g = if core.keys.is_int64() {
                    let b = <[u8; 8]>::try_from(key.as_slice())
                        .map_err(|_| bad_value(format!("a {}-byte integer key", key.len())))?;
                    p.table.find_or_insert_i64(hashes[i], i64::from_le_bytes(b))
                } else {
                    p.table.find_or_insert_row(hashes[i], parser.parse(key))
                };
                p.accs.iter_mut().for_each(|a| a.resize(p.table.len()));
                if !merge_value(&mut p.accs, g as usize, value) {
                    return Err(bad_value(format!("pane {pane}: malformed aggregates")).into());
                }
            }
            if let Some(sh) = &mut self.shared {
                for g in 0..p.table.len() {
                    let id = sh.dict.insert_from(&p.table, g);
                    if sh.refs.len() <= id as usize {
                        sh.refs.resize(id as usize + 1, 0);
                    }
                    hold(&mut sh.refs, &mut sh.live, id, true);
                    p.ids.push(id);
                }
            }
            self.panes.insert(pane, p);
        }
        Ok(watermark)
    }
}
