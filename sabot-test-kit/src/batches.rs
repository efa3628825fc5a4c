//! Seeded batches and helpers for tests and benches.

use std::sync::Arc;

use sabot_core::arrow::array::{ArrayRef, Int64Array};
use sabot_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot_core::arrow::record_batch::RecordBatch;

use sabot_core::random::SplitMix64;

/// Schema of [`keyed_batches`]: `key`, `value`, `ts`, all non-null `Int64`.
pub fn keyed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

/// `rows` records in batches of `batch_size`: row `i` has a key in `[0, keys)`, a value in
/// `[0, 1000)`, and event time `i * ts_step` ms minus a jitter in `[0, jitter)`.
pub fn keyed_batches(
    seed: u64,
    rows: usize,
    batch_size: usize,
    keys: u64,
    ts_step: i64,
    jitter: u64,
) -> Vec<RecordBatch> {
    let schema = keyed_schema();
    let batch_size = batch_size.max(1);
    (0..rows)
        .step_by(batch_size)
        .map(|start| {
            let end = (start + batch_size).min(rows);
            let mut k = Vec::with_capacity(end - start);
            let mut v = Vec::with_capacity(end - start);
            let mut t = Vec::with_capacity(end - start);
            for i in start..end {
                let mut r = SplitMix64::new(seed, i as u64);
                k.push(r.below(keys.max(1)) as i64);
                v.push(r.below(1000) as i64);
                t.push(i as i64 * ts_step - r.below(jitter.max(1)) as i64);
            }
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(Int64Array::from(v)),
                Arc::new(Int64Array::from(t)),
            ];
            RecordBatch::try_new(schema.clone(), cols).expect("schema matches columns")
        })
        .collect()
}

/// A batch of non-null `Int64` columns, named as given.
///
/// # Panics
/// If the columns differ in length (a bug in the calling test).
pub fn int64_batch(columns: &[(&str, Vec<i64>)]) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, _)| Field::new(*n, DataType::Int64, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, v)| Arc::new(Int64Array::from(v.clone())) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("columns of equal length")
}

/// The seed of a randomized test: the environment variable `var` if set (to reproduce a
/// run), else one drawn from the clock. Printed either way, as `var=<seed>`, so a failing
/// run says how to reproduce it.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("{var}={seed}");
    seed
}

/// Every row of `batch` as text, cells as Arrow displays them, joined by commas (for
/// comparing outputs as multisets of rows).
///
/// # Panics
/// If a column cannot be displayed (a test helper).
pub fn row_strings(batch: &RecordBatch) -> Vec<String> {
    (0..batch.num_rows())
        .map(|r| {
            batch
                .columns()
                .iter()
                .map(|c| {
                    sabot_core::arrow::util::display::array_value_to_string(c, r)
                        .expect("a displayable column")
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}
