//! What checkpoints cost a running job: the demo job (generator, windows in the memory
//! backend, the spike detector, alerts to the transactional CSV sink) at parallelism 2,
//! with checkpoints every second, next to the same job without checkpoints in the same
//! run. Every iteration starts on fresh output and checkpoint folders. Issue 6's target:
//! the checkpointed job keeps at least 90% of the throughput.
//!
//! `SABOT_BENCH_EVENTS` sets the transactions per run (default 10M, about 4 s here).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::StreamEnv;
use sabot::runtime::CheckpointSettings;
use sabot_cli::demo::{FraudRules, GeneratorConfig, TransactionGenerator, fraud_job_with_output};

fn events() -> u64 {
    sabot_benches::env_u64("SABOT_BENCH_EVENTS", 10_000_000)
}

/// One run; returns its wall-clock time and the checkpoints it completed.
fn run(interval: Option<Duration>) -> (Duration, usize) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut c = GeneratorConfig::default();
    c.events = events();
    let generator = TransactionGenerator::new(c).expect("valid generator settings");
    let env = StreamEnv::new();
    env.set_parallelism(2);
    if let Some(every) = interval {
        env.set_checkpoints(CheckpointSettings::new(dir.path().join("ckpt"), every));
    }
    let rules = FraudRules::default();
    fraud_job_with_output(&env, generator, &rules, Some(&dir.path().join("out")))
        .expect("demo job builds");
    let started = Instant::now();
    let result = env.execute().expect("demo job runs");
    (started.elapsed(), result.checkpoints.len())
}

fn bench(c: &mut Criterion) {
    let (_, n) = run(Some(Duration::from_secs(1)));
    eprintln!("checkpoints per run with a 1 s interval: {n}");
    let mut g = c.benchmark_group("checkpoint_overhead_demo_p2");
    g.throughput(Throughput::Elements(events()));
    for (name, interval) in [
        ("no_checkpoints", None),
        ("checkpoints_every_1s", Some(Duration::from_secs(1))),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(interval).0).sum())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(40));
    targets = bench
}
criterion_main!(benches);
