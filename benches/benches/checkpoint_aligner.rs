//! Barrier alignment: a task with 8 inputs aligns 1,000 checkpoints, each barrier
//! followed by a message that the exactly-once aligner holds until the checkpoint is
//! aligned. Next to it, the same number of plain messages through the aligner (no
//! barrier): the difference is what alignment costs. Throughput counts barriers
//! (one per input per checkpoint).

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::checkpoint::{BarrierAligner, CheckpointingMode, Input};
use sabot::core::{CheckpointBarrier, CheckpointId, Timestamp};

const INPUTS: usize = 8;
const CHECKPOINTS: u64 = 1_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("barrier_alignment_8_inputs");
    g.throughput(Throughput::Elements(CHECKPOINTS * INPUTS as u64));
    g.bench_function("sabot_exactly_once_aligner", |b| {
        b.iter(|| {
            let mut a = BarrierAligner::<u64>::new(INPUTS, CheckpointingMode::ExactlyOnce, 1 << 20);
            let mut done = 0u64;
            for id in 1..=CHECKPOINTS {
                let barrier = CheckpointBarrier {
                    id: CheckpointId(id),
                    triggered_at: Timestamp::from_millis(id as i64),
                };
                for i in 0..INPUTS {
                    a.push(i, Input::Barrier(barrier)).expect("in order");
                    a.push(i, Input::Message(id)).expect("open input");
                }
                while let Some(x) = a.next_action() {
                    done +=
                        black_box(matches!(x, sabot::checkpoint::Aligned::Checkpoint(_))) as u64;
                }
            }
            assert_eq!(done, CHECKPOINTS);
        })
    });
    g.bench_function("baseline_messages_only", |b| {
        b.iter(|| {
            let mut a = BarrierAligner::<u64>::new(INPUTS, CheckpointingMode::ExactlyOnce, 1 << 20);
            let mut n = 0u64;
            for id in 1..=CHECKPOINTS {
                for i in 0..INPUTS {
                    a.push(i, Input::Message(id)).expect("open input");
                    a.push(i, Input::Message(id)).expect("open input");
                }
                while let Some(x) = a.next_action() {
                    n += black_box(matches!(x, sabot::checkpoint::Aligned::Message(..))) as u64;
                }
            }
            assert_eq!(n, CHECKPOINTS * 2 * INPUTS as u64);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
