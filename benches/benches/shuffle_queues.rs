//! Queue hand-over between two threads: ns per push+pop for Sabot's SPSC and MPSC queues
//! next to `crossbeam::channel::bounded` and `crossbeam::queue::ArrayQueue` (spinning on
//! full/empty, as it has no blocking) in the same run. 100,000 items per iteration,
//! capacity 1,024.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::shuffle::queue;

const ITEMS: u64 = 100_000;
const CAP: usize = 1024;

/// Runs `producer` on a new thread and sums what `next` takes until it returns `None`.
fn handover(
    producer: impl FnOnce() + Send + 'static,
    mut next: impl FnMut() -> Option<u64>,
) -> u64 {
    let t = std::thread::spawn(producer);
    let mut sum = 0;
    while let Some(v) = next() {
        sum += v;
    }
    t.join().expect("producer");
    sum
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_handover_100k");
    g.throughput(Throughput::Elements(ITEMS));
    g.bench_function("sabot_spsc", |b| {
        b.iter(|| {
            let (tx, rx) = queue::spsc::<u64>(CAP);
            let producer = move || (0..ITEMS).for_each(|i| tx.push(i).expect("receiver alive"));
            black_box(handover(producer, || rx.pop()))
        })
    });
    g.bench_function("sabot_mpsc_one_producer", |b| {
        b.iter(|| {
            let (tx, rx) = queue::bounded::<u64>(CAP);
            let producer = move || (0..ITEMS).for_each(|i| tx.push(i).expect("receiver alive"));
            black_box(handover(producer, || rx.pop()))
        })
    });
    g.bench_function("baseline_crossbeam_channel", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(CAP);
            let producer = move || (0..ITEMS).for_each(|i| tx.send(i).expect("receiver alive"));
            black_box(handover(producer, || rx.recv().ok()))
        })
    });
    g.bench_function("baseline_crossbeam_array_queue", |b| {
        b.iter(|| {
            let q = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(CAP));
            let p = q.clone();
            // No blocking: both sides spin on full and empty.
            let producer = move || {
                for i in 0..ITEMS {
                    let mut v = i;
                    while let Err(back) = p.push(v) {
                        v = back;
                        std::hint::spin_loop();
                    }
                }
            };
            let mut left = ITEMS;
            black_box(handover(producer, || {
                (left > 0).then(|| {
                    left -= 1;
                    loop {
                        if let Some(v) = q.pop() {
                            return v;
                        }
                        std::hint::spin_loop();
                    }
                })
            }))
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
