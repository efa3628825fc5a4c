//! Event-time windows.

mod aggregate;
mod backend_panes;
mod count;
mod global;
mod groups;
mod keyed;
mod pane_window;
mod panes;
mod session;
mod sliding;
mod tumbling;

pub use aggregate::{AggKind, Aggregate, AggregateFunction};
pub use count::{COUNT_WINDOW_STATE, CountWindowFactory, WINDOW_INDEX};
pub use global::{GLOBAL_WINDOW_STATE, GlobalWindowFactory, Trigger};
pub use session::{SESSION_WINDOW_STATE, SessionWindowFactory};
pub use sliding::SlidingWindowFactory;
pub use tumbling::{
    LATE_DATA, LATE_RECORDS, LATE_RECORDS_DROPPED, TumblingWindowFactory, WINDOW_END, WINDOW_START,
    WINDOW_STATE,
};

use sabot_core::arrow::datatypes::{DataType, Field};
use sabot_core::key::check_key_field;
use sabot_core::{SchemaRef, column_index};

use crate::time_column::check_time_field;

use crate::Result;
use aggregate::BoundAggregate;

/// A keyed window's output columns, resolved against its input.
pub(crate) struct KeyedOutput {
    /// The key columns' indices in the input.
    pub(crate) key_idx: Vec<usize>,
    pub(crate) aggs: Vec<BoundAggregate>,
    pub(crate) fields: Vec<Field>,
}

/// The key columns' types and each aggregate's slot layout: what a window's stored state
/// depends on (restoring state written with other keys or aggregates is a clear error).
pub(crate) fn state_fingerprint(
    kind: &str,
    extra: &str,
    input: &SchemaRef,
    key_idx: &[usize],
    aggs: &[BoundAggregate],
) -> String {
    format!(
        "{kind}/1{extra}/keys={:?}/aggs={}",
        key_idx
            .iter()
            .map(|&i| input.field(i).data_type().to_string())
            .collect::<Vec<_>>(),
        aggs.iter()
            .map(BoundAggregate::layout)
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// An empty group table for `keys` (integers for a single `Int64` key column).
pub(crate) fn group_table(keys: &crate::keys::KeyColumns) -> groups::GroupTable {
    if keys.is_int64() {
        groups::GroupTable::for_int64()
    } else {
        groups::GroupTable::for_rows(keys.converter())
    }
}

/// The event times of a window's input batch, which must have none null (sources drop or
/// reject null event times; reaching a window is a plan error).
pub(crate) fn non_null_times(
    batch: &sabot_core::RecordBatch,
    time_idx: usize,
) -> Result<sabot_core::arrow::array::Int64Array> {
    use sabot_core::arrow::array::Array;
    let times = crate::time_column::event_times(batch.column(time_idx))?;
    if times.null_count() > 0 {
        let field = batch.schema().field(time_idx).clone();
        return Err(sabot_core::CoreError::InvalidColumnType {
            column: field.name().clone(),
            expected: "non-null event times".into(),
            actual: field.data_type().clone(),
        }
        .into());
    }
    Ok(times)
}

/// A batch's rows by pane (`None`: every row, the usual case of a batch within one pane),
/// in pane order, and the rows too late for every window (`too_late(pane)`).
pub(crate) type Buckets = (Vec<(i64, Option<Vec<u32>>)>, Vec<u32>);

/// Buckets rows with event times `ts` into panes of `slide` ms (see [`Buckets`]).
pub(crate) fn bucket_by_pane(ts: &[i64], slide: i64, too_late: impl Fn(i64) -> bool) -> Buckets {
    // Saturating: the pane of a time within `slide` of `i64::MIN` starts below it.
    let pane_of = |t: i64| t.saturating_sub(t.rem_euclid(slide));
    if ts.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let (lo, hi) = ts
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let (first, last) = (pane_of(lo), pane_of(hi));
    if first == last && !too_late(first) {
        return (vec![(first, None)], Vec::new());
    }
    let mut late = Vec::new();
    let mut panes = PaneRows::default();
    // Rows come mostly in time order: the times of the row before's pane, and where its
    // rows go (`None`: too late), are checked first (no division per row).
    let mut current: Option<(i64, i64, Option<usize>)> = None;
    for (row, &t) in ts.iter().enumerate() {
        let slot = match current {
            Some((lo, hi, slot)) if lo <= t && t <= hi => slot,
            _ => {
                // `None`: the pane starts below `i64::MIN`; it is cut off there, and not
                // remembered (its times are not one slide from its saturated start).
                let start = t.checked_sub(t.rem_euclid(slide));
                let p = start.unwrap_or(i64::MIN);
                let slot = (!too_late(p)).then(|| panes.slot(p));
                current = start.map(|s| (s, s.saturating_add(slide - 1), slot));
                slot
            }
        };
        match slot {
            Some(i) => panes.rows[i].1.push(row as u32),
            None => late.push(row as u32),
        }
    }
    let mut panes = panes.rows;
    panes.sort_unstable_by_key(|(p, _)| *p);
    (panes.into_iter().map(|(p, r)| (p, Some(r))).collect(), late)
}

/// The rows of each pane a batch touches, in first-seen order.
#[derive(Default)]
struct PaneRows {
    rows: Vec<(i64, Vec<u32>)>,
    /// Where each pane is in `rows`, once there are too many to search.
    index: hashbrown::HashMap<i64, usize>,
}

impl PaneRows {
    /// Where pane `p`'s rows are, added if new.
    fn slot(&mut self, p: i64) -> usize {
        let found = if self.index.is_empty() {
            self.rows.iter().position(|(q, _)| *q == p)
        } else {
            self.index.get(&p).copied()
        };
        found.unwrap_or_else(|| {
            self.rows.push((p, Vec::new()));
            if self.rows.len() > PANES_SEARCHED {
                let all = self.rows.iter().enumerate().map(|(i, (q, _))| (*q, i));
                // Indexes every pane the first time, then each new one.
                self.index.extend(all.skip(self.index.len()));
            }
            self.rows.len() - 1
        })
    }
}

/// Up to this many panes in one batch are found by a linear search, more by a hash map.
const PANES_SEARCHED: usize = 8;

/// Counts rows `rows` of `batch` as late and dropped, and sends them to the
/// [`LATE_DATA`] side output.
pub(crate) fn send_too_late(
    batch: &sabot_core::RecordBatch,
    rows: Vec<u32>,
    counters: (&sabot_core::metrics::Counter, &sabot_core::metrics::Counter),
    out: &mut crate::Output,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    counters.0.add(rows.len() as u64);
    counters.1.add(rows.len() as u64);
    out.side(
        LATE_DATA,
        sabot_core::arrow::compute::take_record_batch(
            batch,
            &sabot_core::arrow::array::UInt32Array::from(rows),
        )?,
    );
    Ok(())
}

/// A keyed window's output: the key columns, then `window` (its own columns), then one
/// column per aggregate. No key columns, no aggregates, or an output name used twice is
/// `invalid`'s error.
/// [`keyed_output`] of a window over event time `time_column` with `window_start` and
/// `window_end` columns (tumbling, sliding and session windows); also returns the
/// time column's index.
pub(crate) fn time_window_output(
    input: &SchemaRef,
    time_column: &str,
    keys: &[String],
    aggregates: &[Aggregate],
    invalid: impl Fn(String) -> crate::OperatorError,
) -> Result<(usize, KeyedOutput)> {
    let time_idx = column_index(input, time_column)?;
    check_time_field(input.field(time_idx))?;
    let window = vec![
        Field::new(WINDOW_START, DataType::Int64, false),
        Field::new(WINDOW_END, DataType::Int64, false),
    ];
    let out = keyed_output(input, keys, window, aggregates, Some(time_idx), invalid)?;
    Ok((time_idx, out))
}

pub(crate) fn keyed_output(
    input: &SchemaRef,
    keys: &[String],
    window: Vec<Field>,
    aggregates: &[Aggregate],
    time: Option<usize>,
    invalid: impl Fn(String) -> crate::OperatorError,
) -> Result<KeyedOutput> {
    if keys.is_empty() {
        return Err(invalid(
            "a keyed window needs at least one key column".into(),
        ));
    }
    if aggregates.is_empty() {
        return Err(invalid("a window needs at least one aggregate".into()));
    }
    let mut key_idx = Vec::with_capacity(keys.len());
    let mut fields: Vec<Field> = Vec::new();
    for k in keys {
        let i = column_index(input, k)?;
        check_key_field(input.field(i))?;
        key_idx.push(i);
        fields.push(input.field(i).clone());
    }
    fields.extend(window);
    let aggs = aggregates
        .iter()
        .map(|a| a.bind(input, time))
        .collect::<Result<Vec<_>>>()?;
    fields.extend(aggs.iter().map(|a| a.field.clone()));
    let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(format!(
            "output column `{}` appears twice: give the aggregate an alias",
            w[0]
        )));
    }
    Ok(KeyedOutput {
        key_idx,
        aggs,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::bucket_by_pane;

    proptest! {
        /// Against a map from pane to rows, built row by row: the same panes in order,
        /// the same rows in each, the same late rows (times spread over up to 250 panes,
        /// so that both the searched and the indexed path run).
        #[test]
        fn rows_land_in_their_panes_in_order(
            ts in prop::collection::vec(
                prop_oneof![-50i64..200, i64::MIN..i64::MIN + 40, i64::MAX - 40..=i64::MAX],
                0..300,
            ),
            slide in 1i64..20,
            late_before in prop_oneof![-60i64..100, Just(i64::MIN)],
            sorted in any::<bool>(),
        ) {
            let mut ts = ts;
            if sorted {
                ts.sort_unstable();
            }
            let too_late = |p: i64| p < late_before;
            let (buckets, late) = bucket_by_pane(&ts, slide, too_late);
            let mut model: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            let mut model_late = Vec::new();
            for (row, &t) in ts.iter().enumerate() {
                let p = (i128::from(t) - i128::from(t.rem_euclid(slide))).max(i128::from(i64::MIN)) as i64;
                if too_late(p) {
                    model_late.push(row as u32);
                } else {
                    model.entry(p).or_default().push(row as u32);
                }
            }
            let got: Vec<(i64, Vec<u32>)> = buckets
                .into_iter()
                .map(|(p, rows)| (p, rows.unwrap_or_else(|| (0..ts.len() as u32).collect())))
                .collect();
            prop_assert_eq!(late, model_late);
            prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        }
    }
}
