//! Morsel-driven parallelism: `with_column` computing a costly per-row expression over
//! one batch of 1M rows, whole on one thread next to split into 32,768-row morsels on 2
//! threads, in the same run.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch};
use sabot::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot::core::metrics::Metrics;
use sabot::operators::{Morsels, OperatorFactory, Output, TaskContext, WithColumnFactory};

const ROWS: i64 = 1 << 20;

fn column() -> WithColumnFactory {
    WithColumnFactory::new("score", DataType::Float64, |b| {
        let v = b.column(0).as_primitive::<Int64Type>();
        // A few dozen floating-point operations per row.
        let out: Float64Array = v
            .values()
            .iter()
            .map(|&x| {
                let mut s = x as f64;
                for _ in 0..8 {
                    s = (s * 1.000_001 + 0.5).sqrt().ln_1p().exp();
                }
                s
            })
            .collect();
        Ok(Arc::new(out))
    })
}

fn bench(c: &mut Criterion) {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..ROWS))],
    )
    .expect("batch");
    let ctx = TaskContext::new(0, 1, 128, Metrics::new());
    let mut g = c.benchmark_group("with_column_1m_rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, f) in [
        ("whole_batch_one_thread", column()),
        ("morsels_2_threads", column().with_morsels(Morsels::new(2))),
    ] {
        let mut op = f.create(&schema, &ctx).expect("operator");
        let mut out = Output::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                op.on_batch(batch.clone(), &mut out).expect("batch");
                out.drain().count()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
