//! Hash partitioning of an 8,192-row batch into 8 outputs, next to a plain `take` of the
//! same rows into the same 8 outputs (row lists computed once, outside the loop): the
//! difference is the cost of hashing keys into key groups and sorting rows by target.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::arrow::array::UInt32Array;
use sabot::arrow::compute::take_record_batch;
use sabot::shuffle::HashPartitioner;
use sabot_test_kit::keyed_batches;

const ROWS: usize = 8_192;
const TARGETS: usize = 8;

fn bench(c: &mut Criterion) {
    let batch = keyed_batches(5, ROWS, ROWS, 100_000, 1, 1).remove(0);
    let mut p = HashPartitioner::new(&batch.schema(), &["key"], 128, TARGETS).expect("keys");
    let parts = p.partition(&batch).expect("partition");
    // The same rows per target, for the baseline: recovered from the partitioner's output
    // by the key column (keys are unique enough that a lookup finds the row).
    let mut owner = std::collections::HashMap::new();
    for (t, b) in &parts {
        let keys = b
            .column(0)
            .as_any()
            .downcast_ref::<sabot::arrow::array::Int64Array>();
        for k in keys.expect("Int64 keys").values() {
            owner.insert(*k, *t);
        }
    }
    let keys = batch
        .column(0)
        .as_any()
        .downcast_ref::<sabot::arrow::array::Int64Array>()
        .expect("Int64 keys");
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); TARGETS];
    for (i, k) in keys.values().iter().enumerate() {
        rows[owner[k]].push(i as u32);
    }
    let indices: Vec<UInt32Array> = rows.into_iter().map(UInt32Array::from).collect();

    let mut g = c.benchmark_group("hash_partition_8192_rows_8_targets");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("sabot_hash_partitioner", |b| {
        b.iter(|| black_box(p.partition(&batch).expect("partition")))
    });
    g.bench_function("baseline_take_precomputed_rows", |b| {
        b.iter(|| {
            let out: Vec<_> = indices
                .iter()
                .map(|idx| take_record_batch(&batch, idx).expect("take"))
                .collect();
            black_box(out)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
