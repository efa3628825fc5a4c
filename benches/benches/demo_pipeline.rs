//! The demo job (generator included) against the same rules as a single-threaded plain
//! loop over the same generated batches.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::StreamEnv;
use sabot_benches::plain_fraud_baseline;
use sabot_cli::demo::{FraudRules, GeneratorConfig, TransactionGenerator, fraud_job};

const EVENTS: u64 = 1_000_000;

fn generator() -> TransactionGenerator {
    let mut c = GeneratorConfig::default();
    c.events = EVENTS;
    TransactionGenerator::new(c).expect("valid generator settings")
}

fn run_sabot(parallelism: usize, rules: &FraudRules) -> (usize, usize) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let out = fraud_job(&env, generator(), rules).expect("demo job builds");
    env.execute().expect("demo job runs");
    (out.window_alerts.num_rows(), out.spike_alerts.num_rows())
}

fn bench(c: &mut Criterion) {
    let rules = FraudRules::default();
    // Same answers before timing anything.
    let base = plain_fraud_baseline(&generator(), &rules);
    assert_eq!(
        run_sabot(1, &rules),
        (base.window_alerts, base.spike_alerts)
    );

    let mut g = c.benchmark_group("demo_pipeline");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("sabot_p1", |b| b.iter(|| black_box(run_sabot(1, &rules))));
    g.bench_function("sabot_p2", |b| b.iter(|| black_box(run_sabot(2, &rules))));
    g.bench_function("baseline_plain_loop", |b| {
        let gen_ = generator();
        b.iter(|| black_box(plain_fraud_baseline(&gen_, &rules)))
    });
    g.bench_function("generator_only", |b| {
        let gen_ = generator();
        b.iter(|| black_box(gen_.all_batches().expect("generate").len()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
