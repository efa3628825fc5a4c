//! Hash join: the regular keyed join operator (memory state, driven directly, no
//! runtime) building on `SABOT_JOIN_BUILD` rows (default 200K, unique keys) and probing
//! with `SABOT_JOIN_PROBE` rows (default 2M, keys uniform over the build keys, so every
//! probe row matches once), next to a plain `hashbrown` build/probe loop producing the
//! same (probe row, build row) pairs, in the same run; and the join again with the build
//! side's key declared unique (probe rows that found their build row are not stored).
//! Issue 7's headline is 10M x 1M:
//! `SABOT_JOIN_BUILD=1000000 SABOT_JOIN_PROBE=10000000`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::arrow::array::{Int64Array, RecordBatch};
use sabot::arrow::datatypes::{DataType, Field, Schema};
use sabot::core::metrics::Metrics;
use sabot::core::random::SplitMix64;
use sabot::operators::{JoinFactory, Output, TaskContext, TwoInputOperatorFactory};

fn batches(rows: u64, keys: u64, unique: bool, value: &str) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new(value, DataType::Int64, false),
    ]));
    let mut r = SplitMix64::new(9, 0);
    (0..rows)
        .step_by(8192)
        .map(|start| {
            let end = (start + 8192).min(rows);
            let k: Int64Array = (start..end)
                .map(|i| {
                    if unique {
                        i as i64
                    } else {
                        r.below(keys) as i64
                    }
                })
                .collect();
            let v: Int64Array = (start..end).map(|i| i as i64).collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(v)]).expect("batch")
        })
        .collect()
}

/// `unique_build`: the build side's key is declared unique (a primary key), so probe rows
/// that found their build row are not stored.
fn sabot_join(build: &[RecordBatch], probe: &[RecordBatch], unique_build: bool) -> usize {
    let join = JoinFactory::regular(&["key"], &["key"]).with_unique_keys(false, unique_build);
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let mut op = join
        .create(&probe[0].schema(), &build[0].schema(), &ctx)
        .expect("join");
    let mut out = Output::new();
    let mut rows = 0;
    for b in build {
        op.on_batch_from(1, b.clone(), &mut out).expect("build");
    }
    for b in probe {
        op.on_batch_from(0, b.clone(), &mut out).expect("probe");
        for m in out.drain() {
            if let sabot::core::Message::Data(d) = m {
                rows += d.num_rows();
            }
        }
    }
    rows
}

fn hashbrown_join(build: &[RecordBatch], probe: &[RecordBatch]) -> usize {
    let col = |b: &RecordBatch| {
        b.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("keys")
            .clone()
    };
    let mut table: hashbrown::HashMap<i64, Vec<(u32, u32)>> = hashbrown::HashMap::new();
    for (bi, b) in build.iter().enumerate() {
        for (r, k) in col(b).values().iter().enumerate() {
            table.entry(*k).or_default().push((bi as u32, r as u32));
        }
    }
    let mut pairs: Vec<(u32, u32, u32)> = Vec::new();
    let mut rows = 0;
    for b in probe {
        pairs.clear();
        for (r, k) in col(b).values().iter().enumerate() {
            if let Some(m) = table.get(k) {
                pairs.extend(m.iter().map(|&(bi, br)| (r as u32, bi, br)));
            }
        }
        rows += pairs.len();
    }
    rows
}

fn bench(c: &mut Criterion) {
    let build_rows = sabot_benches::env_u64("SABOT_JOIN_BUILD", 200_000);
    let probe_rows = sabot_benches::env_u64("SABOT_JOIN_PROBE", 2_000_000);
    let build = batches(build_rows, build_rows, true, "b_value");
    let probe = batches(probe_rows, build_rows, false, "value");
    assert_eq!(sabot_join(&build, &probe, false), probe_rows as usize);
    assert_eq!(sabot_join(&build, &probe, true), probe_rows as usize);
    assert_eq!(hashbrown_join(&build, &probe), probe_rows as usize);
    let mut g = c.benchmark_group(format!(
        "hash_join_{}k_probe_x_{}k_build",
        probe_rows / 1000,
        build_rows / 1000
    ));
    g.throughput(Throughput::Elements(build_rows + probe_rows));
    g.bench_function("sabot_regular_join", |b| {
        b.iter(|| sabot_join(&build, &probe, false))
    });
    g.bench_function("sabot_regular_join_unique_build_key", |b| {
        b.iter(|| sabot_join(&build, &probe, true))
    });
    g.bench_function("hashbrown_build_probe", |b| {
        b.iter(|| hashbrown_join(&build, &probe))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
