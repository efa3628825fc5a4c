//! Watermark tracker updates over 64 inputs against a naive recomputation of the minimum.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::core::Timestamp;
use sabot::time::WatermarkTracker;

const INPUTS: usize = 64;
const UPDATES: u64 = 1 << 16;

/// The baseline: what a tracker without a tree does, a scan over every input per update.
struct NaiveTracker {
    watermarks: Vec<i64>,
    combined: i64,
}

impl NaiveTracker {
    fn on_watermark(&mut self, input: usize, wm: i64) -> Option<i64> {
        self.watermarks[input] = self.watermarks[input].max(wm);
        let min = *self.watermarks.iter().min().expect("inputs");
        (min > self.combined).then(|| {
            self.combined = min;
            min
        })
    }
}

/// Input `u % 64` announces a watermark growing with `u`, with a stride so the input
/// holding the minimum changes, as when partitions progress unevenly.
fn update(u: u64) -> (usize, i64) {
    let input = ((u * 37) % INPUTS as u64) as usize;
    (input, (u * 10 + (u % 7)) as i64)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("watermark_tracker_64_inputs");
    g.throughput(Throughput::Elements(UPDATES));
    g.bench_function("sabot_tracker", |b| {
        b.iter(|| {
            let mut t = WatermarkTracker::new(INPUTS);
            for u in 0..UPDATES {
                let (i, wm) = update(u);
                black_box(
                    t.on_watermark(i, Timestamp::from_millis(wm), 0)
                        .expect("valid input"),
                );
            }
            t.current()
        })
    });
    g.bench_function("baseline_naive_min_scan", |b| {
        b.iter(|| {
            let mut t = NaiveTracker {
                watermarks: vec![i64::MIN; INPUTS],
                combined: i64::MIN,
            };
            for u in 0..UPDATES {
                let (i, wm) = update(u);
                black_box(t.on_watermark(i, wm));
            }
            t.combined
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
