//! Nexmark. The generator alone: bids built as Arrow batches (all 7 columns, strings
//! included) from `SABOT_NEXMARK_EVENTS` events (default 2M; 46 of every 50 are bids),
//! next to a plain loop drawing the same random numbers into four Int64 columns (no
//! strings, no Beam arithmetic), in the same run. Issue 8's target: at least 30M bids/s
//! on one core.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::core::random::SplitMix64;
use sabot::nexmark::{CHUNK_EVENTS, EventKind, Generator, NexmarkConfig};

fn generate(g: &Generator, events: u64) -> usize {
    let mut rows = 0;
    let mut start = 0;
    while start < events {
        rows += g
            .batch(EventKind::Bid, start..start + CHUNK_EVENTS)
            .num_rows();
        start += CHUNK_EVENTS;
    }
    rows
}

fn plain_loop(events: u64) -> usize {
    let mut cols = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut rows = 0;
    let mut start = 0;
    while start < events {
        cols.iter_mut().for_each(Vec::clear);
        for n in start..(start + CHUNK_EVENTS).min(events) {
            if n % 50 < 4 {
                continue;
            }
            let mut r = SplitMix64::new(0, n);
            for c in cols.iter_mut() {
                c.push(r.next_u64() as i64);
            }
        }
        rows += cols[0].len();
        start += CHUNK_EVENTS;
    }
    rows
}

fn bench(c: &mut Criterion) {
    let events = sabot_benches::env_u64("SABOT_NEXMARK_EVENTS", 2_000_000);
    let g = Generator::new(NexmarkConfig::new(events, 0, 10_000_000));
    let bids = generate(&g, events) as u64;
    let mut group = c.benchmark_group(format!("nexmark_generator_{}k_events", events / 1000));
    group.throughput(Throughput::Elements(bids));
    group.bench_function("bids", |b| b.iter(|| generate(&g, events)));
    group.bench_function("plain_loop_4_int_columns", |b| {
        b.iter(|| plain_loop(events))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
