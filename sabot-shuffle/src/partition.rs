//! Splitting batches between downstream subtasks.

use sabot_core::arrow::array::{ArrayRef, UInt32Array};
use sabot_core::arrow::compute::take_record_batch;
use sabot_core::key::{KeyGroup, check_key_field, check_parallelism, hash_columns};
use sabot_core::{RecordBatch, SchemaRef, column_index};

use crate::Result;

/// Builds one batch per target from per-target row lists (Arrow's `take`), targets in
/// increasing order, skipping empty ones; a target that gets every row shares the batch.
fn split(batch: &RecordBatch, rows_by_target: &[Vec<u32>]) -> Result<Vec<(usize, RecordBatch)>> {
    let mut out = Vec::with_capacity(rows_by_target.len());
    for (t, rows) in rows_by_target.iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        if rows.len() == batch.num_rows() {
            out.push((t, batch.clone()));
            continue;
        }
        let idx = UInt32Array::from(rows.clone());
        out.push((t, take_record_batch(batch, &idx)?));
    }
    Ok(out)
}

/// Splits each batch by the key groups of its key columns: rows go to the subtask that
/// owns their key group. One input batch becomes at most one batch per target, built with
/// Arrow's `take` kernel.
///
/// ```
/// use sabot_test_kit::keyed_batches;
/// use sabot_shuffle::HashPartitioner;
///
/// let batch = &keyed_batches(1, 100, 100, 10, 1, 1)[0];
/// let mut p = HashPartitioner::new(&batch.schema(), &["key"], 128, 3).unwrap();
/// let parts = p.partition(batch).unwrap();
/// assert_eq!(parts.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 100);
/// ```
#[derive(Debug)]
pub struct HashPartitioner {
    key_indices: Vec<usize>,
    max_parallelism: usize,
    targets: usize,
    /// The target of each key group (a table: no division per row).
    target_of: Vec<u32>,
    hashes: Vec<u64>,
    rows_by_target: Vec<Vec<u32>>,
}

impl HashPartitioner {
    /// A partitioner on the named key columns of `schema`, over `targets` subtasks.
    ///
    /// Fails if a key column is missing or of an unsupported type, or if `targets` is not
    /// in `1..=max_parallelism`.
    pub fn new(
        schema: &SchemaRef,
        keys: &[&str],
        max_parallelism: usize,
        targets: usize,
    ) -> Result<Self> {
        check_parallelism(targets, max_parallelism)?;
        let key_indices = keys
            .iter()
            .map(|k| {
                let i = column_index(schema, k)?;
                check_key_field(schema.field(i))?;
                Ok(i)
            })
            .collect::<Result<Vec<_>>>()?;
        let target_of = (0..max_parallelism)
            .map(|kg| KeyGroup(kg as u16).subtask(max_parallelism, targets) as u32)
            .collect();
        Ok(HashPartitioner {
            key_indices,
            max_parallelism,
            targets,
            target_of,
            hashes: Vec::new(),
            rows_by_target: vec![Vec::new(); targets],
        })
    }

    /// Splits `batch` into `(target, rows for that target)` pairs, targets in increasing
    /// order, skipping targets that get no row. Row order within a target is kept.
    pub fn partition(&mut self, batch: &RecordBatch) -> Result<Vec<(usize, RecordBatch)>> {
        if self.targets == 1 {
            return Ok(vec![(0, batch.clone())]);
        }
        let cols: Vec<ArrayRef> = self
            .key_indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        hash_columns(&cols, &mut self.hashes)?;
        for rows in &mut self.rows_by_target {
            rows.clear();
        }
        for (row, &h) in self.hashes.iter().enumerate() {
            let kg = KeyGroup::of_hash(h, self.max_parallelism);
            let t = self.target_of[usize::from(kg.0)] as usize;
            self.rows_by_target[t].push(row as u32);
        }
        split(batch, &self.rows_by_target)
    }

    /// The number of downstream subtasks.
    pub fn targets(&self) -> usize {
        self.targets
    }
}

/// Sends every batch to every downstream subtask (the batch's buffers are shared, not
/// copied).
#[derive(Debug, Clone)]
pub struct BroadcastPartitioner {
    targets: usize,
}

impl BroadcastPartitioner {
    /// Broadcast to `targets` subtasks (at least 1).
    pub fn new(targets: usize) -> Self {
        BroadcastPartitioner {
            targets: targets.max(1),
        }
    }

    /// `(target, batch)` for every target, in increasing order.
    pub fn partition(&self, batch: &RecordBatch) -> Vec<(usize, RecordBatch)> {
        (0..self.targets).map(|t| (t, batch.clone())).collect()
    }
}

/// Sends whole batches to the downstream subtasks in turn.
#[derive(Debug, Clone)]
pub struct RoundRobinPartitioner {
    next: usize,
    targets: usize,
}

impl RoundRobinPartitioner {
    /// Round robin over `targets` subtasks, starting at `start % targets`.
    pub fn new(targets: usize, start: usize) -> Self {
        let targets = targets.max(1);
        RoundRobinPartitioner {
            next: start % targets,
            targets,
        }
    }

    /// The target of the next batch.
    pub fn next_target(&mut self) -> usize {
        let t = self.next;
        self.next = (self.next + 1) % self.targets;
        t
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sabot_core::arrow::array::{AsArray, Int64Array};
    use sabot_core::arrow::datatypes::Int64Type;
    use sabot_test_kit::{int64_batch, keyed_batches};

    use super::*;

    #[test]
    fn missing_key_column_is_a_build_error() {
        let b = int64_batch(&[("a", vec![1])]);
        let err = HashPartitioner::new(&b.schema(), &["nope"], 128, 2).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn zero_targets_is_a_build_error() {
        let b = int64_batch(&[("a", vec![1])]);
        assert!(HashPartitioner::new(&b.schema(), &["a"], 128, 0).is_err());
    }

    /// Every row of `batch` as (key, value, ts), sorted.
    fn rows_of<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> Vec<(i64, i64, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let c = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let (k, v, ts) = (c(0), c(1), c(2));
            out.extend((0..b.num_rows()).map(|i| (k.value(i), v.value(i), ts.value(i))));
        }
        out.sort_unstable();
        out
    }

    proptest! {
        #[test]
        fn broadcast_gives_every_target_every_row(
            seed in any::<u64>(), rows in 0usize..200, targets in 1usize..6,
        ) {
            let batches = keyed_batches(seed, rows, 200, 50, 1, 1);
            let Some(batch) = batches.first() else { return Ok(()); };
            let parts = BroadcastPartitioner::new(targets).partition(batch);
            prop_assert_eq!(parts.len(), targets);
            for (i, (t, b)) in parts.iter().enumerate() {
                prop_assert_eq!(i, *t);
                prop_assert_eq!(rows_of([b]), rows_of([batch]));
            }
        }

        #[test]
        fn every_row_lands_in_exactly_one_target_and_nothing_is_lost(
            seed in any::<u64>(), rows in 0usize..500, targets in 1usize..8,
        ) {
            let batches = keyed_batches(seed, rows, 500, 50, 1, 1);
            let Some(batch) = batches.first() else { return Ok(()); };
            let mut p = HashPartitioner::new(&batch.schema(), &["key"], 128, targets).unwrap();
            let parts = p.partition(batch).unwrap();
            let mut seen: Vec<(i64, i64, i64)> = Vec::new();
            let mut owner = std::collections::HashMap::new();
            for (t, b) in &parts {
                prop_assert!(*t < targets);
                let k = b.column(0).as_primitive::<Int64Type>();
                let v = b.column(1).as_primitive::<Int64Type>();
                let ts = b.column(2).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    // A key always goes to the same target.
                    prop_assert_eq!(*owner.entry(k.value(i)).or_insert(*t), *t);
                    seen.push((k.value(i), v.value(i), ts.value(i)));
                }
            }
            let col = |c: usize| batch.column(c).as_primitive::<Int64Type>().clone();
            let (k, v, ts): (Int64Array, Int64Array, Int64Array) = (col(0), col(1), col(2));
            let mut expected: Vec<_> = (0..batch.num_rows()).map(|i| (k.value(i), v.value(i), ts.value(i))).collect();
            expected.sort();
            seen.sort();
            prop_assert_eq!(seen, expected);
        }
    }
}
