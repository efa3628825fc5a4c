//! Timer registration and firing against a plain `BinaryHeap` of the same timers, in two
//! workloads: streaming (timers for the current windows, fired as the watermark moves on,
//! as a window operator does) and random (every timer registered, then all fired).

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use sabot::core::Timestamp;
use sabot::core::random::SplitMix64;
use sabot::time::TimerService;

const TIMERS: usize = 1 << 18;
/// Timers registered per window before the watermark moves past it.
const PER_WINDOW: usize = 256;

/// (timestamp, key, namespace) triples.
type Timers = Vec<(i64, i64, i64)>;

fn streaming() -> Timers {
    let mut r = SplitMix64::new(3, 0);
    (0..TIMERS)
        .map(|i| {
            // Mostly the current window, sometimes the next one (out-of-order data).
            let window = (i / PER_WINDOW) as i64 + i64::from(r.below(8) == 0);
            (window * 1_000 + 999, r.below(50_000) as i64, window * 1_000)
        })
        .collect()
}

fn random() -> Timers {
    let mut r = SplitMix64::new(4, 0);
    (0..TIMERS)
        .map(|_| {
            let window = r.below(1_000) as i64;
            (window * 1_000 + 999, r.below(50_000) as i64, window * 1_000)
        })
        .collect()
}

/// Registers `timers` in order; every `fire_every` timers (and at the end) moves the
/// watermark to the previous window's end and fires what is due.
fn run_sabot(timers: &Timers, fire_every: usize) -> u64 {
    let mut s: TimerService<i64, i64> = TimerService::new(128);
    let mut fired = 0u64;
    for (i, &(ts, key, ns)) in timers.iter().enumerate() {
        s.register_event_time_timer(key, ns, Timestamp::from_millis(ts));
        if (i + 1) % fire_every == 0 {
            s.advance_watermark(Timestamp::from_millis(ts - 1_000));
            while let Some(t) = s.next_event_timer() {
                fired += black_box(t.key) as u64 & 1;
            }
        }
    }
    s.advance_watermark(Timestamp::MAX);
    while let Some(t) = s.next_event_timer() {
        fired += black_box(t.key) as u64 & 1;
    }
    fired
}

/// The same with a plain min-heap (no de-duplication, no deletion).
fn run_heap(timers: &Timers, fire_every: usize) -> u64 {
    let mut heap = BinaryHeap::new();
    let mut fired = 0u64;
    for (i, &t) in timers.iter().enumerate() {
        heap.push(Reverse(t));
        if (i + 1) % fire_every == 0 {
            let wm = t.0 - 1_000;
            while heap.peek().is_some_and(|Reverse(top)| top.0 <= wm) {
                if let Some(Reverse(top)) = heap.pop() {
                    fired += black_box(top.1) as u64 & 1;
                }
            }
        }
    }
    while let Some(Reverse(t)) = heap.pop() {
        fired += black_box(t.1) as u64 & 1;
    }
    fired
}

fn pair(g: &mut BenchmarkGroup<'_, WallTime>, timers: &Timers, fire_every: usize) {
    g.throughput(Throughput::Elements(timers.len() as u64));
    g.bench_function("sabot_timer_service", |b| {
        b.iter(|| run_sabot(timers, fire_every))
    });
    g.bench_function("baseline_binary_heap", |b| {
        b.iter(|| run_heap(timers, fire_every))
    });
}

fn bench(c: &mut Criterion) {
    let s = streaming();
    let mut g = c.benchmark_group("timers_streaming");
    pair(&mut g, &s, PER_WINDOW);
    g.finish();

    let r = random();
    let mut g = c.benchmark_group("timers_random_all_then_fire");
    pair(&mut g, &r, usize::MAX);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
