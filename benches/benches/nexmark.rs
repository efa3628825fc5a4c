//! Nexmark.
//!
//! - `nexmark_generator_*`: the generator alone, bids built as Arrow batches (all 7
//!   columns, strings included) from `SABOT_NEXMARK_EVENTS` events (default 2M; 46 of
//!   every 50 are bids), next to a plain loop drawing the same random numbers into four
//!   Int64 columns (no strings, no Beam arithmetic). Issue 8's target: 30M bids/s.
//! - `nexmark_queries_*_p1`: each query run as a job at parallelism 1 over
//!   `SABOT_NEXMARK_QUERY_EVENTS` events (default 1M, all kinds, generator included,
//!   results counted and dropped), throughput in events; `SABOT_NEXMARK_QUERIES` (e.g.
//!   `q0,q5`) picks queries. The baseline in the group: a job that only generates the
//!   bids of the same events and drops them.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::StreamEnv;
use sabot::core::random::SplitMix64;
use sabot::operators::{Sink, SinkFactory, TaskContext};
use sabot_nexmark::{CHUNK_EVENTS, EventKind, Generator, NexmarkConfig, NexmarkSource, Query};

/// Drops what it gets (the runtime counts the rows).
#[derive(Debug)]
struct Discard;

impl SinkFactory for Discard {
    fn name(&self) -> String {
        "discard".into()
    }
    fn create(
        &self,
        _: &sabot::arrow::datatypes::SchemaRef,
        _: &TaskContext,
    ) -> sabot::operators::Result<Box<dyn Sink>> {
        Ok(Box::new(Discard))
    }
}

impl Sink for Discard {
    fn write(&mut self, _: sabot::arrow::array::RecordBatch) -> sabot::operators::Result<()> {
        Ok(())
    }
}

fn run_query(q: Option<Query>, config: &NexmarkConfig) {
    let env = StreamEnv::new();
    env.set_parallelism(1);
    match q {
        Some(q) => q.build(&env, config).sink(Discard),
        None => env
            .source(NexmarkSource::new(config.clone(), EventKind::Bid))
            .sink(Discard),
    }
    env.execute().expect("query");
}

fn generate(g: &Generator, events: u64) -> usize {
    let mut rows = 0;
    let mut start = 0;
    while start < events {
        rows += g
            .batch(EventKind::Bid, start..start + CHUNK_EVENTS)
            .expect("bids")
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

    let events = sabot_benches::env_u64("SABOT_NEXMARK_QUERY_EVENTS", 1_000_000);
    let config = NexmarkConfig::new(events, 0, 10_000_000);
    let wanted = std::env::var("SABOT_NEXMARK_QUERIES").ok();
    let mut group = c.benchmark_group(format!("nexmark_queries_{}k_events_p1", events / 1000));
    group.throughput(Throughput::Elements(events));
    group.bench_function("generator_only_bids", |b| {
        b.iter(|| run_query(None, &config))
    });
    for q in Query::ALL {
        if wanted
            .as_deref()
            .is_some_and(|w| !w.split(',').any(|n| Query::parse(n) == Some(q)))
        {
            continue;
        }
        group.bench_function(q.name(), |b| b.iter(|| run_query(Some(q), &config)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
