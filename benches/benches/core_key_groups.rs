//! Key-group hashing of Arrow key columns against a plain per-row loop with std's hasher.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hash::{BuildHasher, Hash, RandomState};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::arrow::array::{ArrayRef, Int64Array, StringArray};
use sabot_core::key::{DEFAULT_MAX_PARALLELISM, key_groups};
use sabot_core::random::SplitMix64;

const ROWS: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let mut r = SplitMix64::new(1, 0);
    let ints: Vec<i64> = (0..ROWS).map(|_| r.below(1_000_000) as i64).collect();
    let strs: Vec<String> = ints.iter().map(|i| format!("account-{i}")).collect();
    let int_col: ArrayRef = Arc::new(Int64Array::from(ints.clone()));
    let str_col: ArrayRef = Arc::new(StringArray::from_iter_values(strs.iter()));
    let std_hasher = RandomState::new();

    group(c, "key_groups_int64", &int_col, &ints, &std_hasher);
    group(c, "key_groups_utf8", &str_col, &strs, &std_hasher);
}

/// Sabot's vectorized key groups of `col` vs a per-row std-hasher loop over `values`
/// (the same keys).
fn group<T: Hash>(
    c: &mut Criterion,
    name: &str,
    col: &ArrayRef,
    values: &[T],
    std_hasher: &RandomState,
) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("sabot_vectorized", |b| {
        let (mut h, mut kg) = (Vec::new(), Vec::new());
        b.iter(|| {
            key_groups(
                black_box(std::slice::from_ref(col)),
                DEFAULT_MAX_PARALLELISM,
                &mut h,
                &mut kg,
            )
            .expect("supported key type");
            black_box(&kg);
        })
    });
    g.bench_function("baseline_std_hasher_loop", |b| {
        let mut kg = Vec::with_capacity(values.len());
        b.iter(|| {
            kg.clear();
            kg.extend(
                black_box(values)
                    .iter()
                    .map(|k| (std_hasher.hash_one(k) % DEFAULT_MAX_PARALLELISM as u64) as u16),
            );
            black_box(&kg);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
