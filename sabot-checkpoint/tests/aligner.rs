//! The barrier aligner against what each input sent: random inputs, barrier sets,
//! ends of stream, interleavings, modes and buffer bounds.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sabot_checkpoint::{
    AbortReason, Aligned, BarrierAligner, CheckpointError, CheckpointingMode, Input,
};
use sabot_core::{CheckpointBarrier, CheckpointId, Timestamp};

fn barrier(id: u64) -> CheckpointBarrier {
    CheckpointBarrier {
        id: CheckpointId(id),
        triggered_at: Timestamp::from_millis(id as i64 * 100),
    }
}

/// One input's script: messages (unique numbers), barriers in increasing order, and an
/// end of stream unless it sends every barrier (an input that does neither would hold
/// the others back forever, as it should).
#[derive(Clone, Debug)]
enum Step {
    Msg(u32),
    Barrier(u64),
    End,
}

fn script(input: usize, all_barriers: bool) -> impl Strategy<Value = Vec<Step>> {
    (
        prop::collection::vec(0u8..4, 0..24),
        prop::collection::btree_set(1u64..6, 0..5),
    )
        .prop_map(move |(gaps, ids)| {
            let ids: Vec<u64> = if all_barriers {
                (1..=4).collect()
            } else {
                ids.into_iter().collect()
            };
            let mut steps = Vec::new();
            let mut ids = ids.into_iter();
            for (next, g) in ((input as u32) << 16..).zip(gaps) {
                if g == 0
                    && let Some(id) = ids.next()
                {
                    steps.push(Step::Barrier(id));
                }
                steps.push(Step::Msg(next));
            }
            steps.extend(ids.map(Step::Barrier));
            if !all_barriers {
                steps.push(Step::End);
            }
            steps
        })
}

#[derive(Debug)]
struct Case {
    scripts: Vec<Vec<Step>>,
    schedule: Vec<usize>,
    exactly_once: bool,
    max_buffered: usize,
    all_barriers: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..4,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(usize::MAX), 0usize..6],
    )
        .prop_flat_map(|(n, exactly_once, all_barriers, max_buffered)| {
            let scripts: Vec<_> = (0..n).map(|i| script(i, all_barriers)).collect();
            (
                scripts,
                prop::collection::vec(0..n, 0..200),
                Just(exactly_once),
                Just(max_buffered),
                Just(all_barriers),
            )
        })
        .prop_map(
            |(scripts, schedule, exactly_once, max_buffered, all_barriers)| Case {
                scripts,
                schedule,
                exactly_once,
                max_buffered,
                all_barriers,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn aligner_keeps_order_and_snapshots_exactly_what_came_before_the_barriers(c in case()) {
        let n = c.scripts.len();
        let mode = if c.exactly_once { CheckpointingMode::ExactlyOnce } else { CheckpointingMode::AtLeastOnce };
        let mut aligner = BarrierAligner::<u32>::new(n, mode, c.max_buffered);
        // Feed the inputs in the scheduled order, then whatever is left, round robin.
        let mut pos = vec![0usize; n];
        let mut order: Vec<usize> = c.schedule.clone();
        let total: usize = c.scripts.iter().map(Vec::len).sum();
        order.extend((0..total * n).map(|i| i % n));
        let mut out = Vec::new();
        for i in order {
            let Some(step) = c.scripts[i].get(pos[i]) else { continue };
            pos[i] += 1;
            let what = match step {
                Step::Msg(m) => Input::Message(*m),
                Step::Barrier(id) => Input::Barrier(barrier(*id)),
                Step::End => Input::EndOfStream,
            };
            aligner.push(i, what).unwrap();
            prop_assert!(c.max_buffered == usize::MAX || aligner.held() <= c.max_buffered);
            while let Some(a) = aligner.next_action() {
                out.push(a);
            }
        }

        // Every message once, in each input's order; its end after its messages.
        let mut delivered: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut ended = vec![false; n];
        for a in &out {
            match a {
                Aligned::Message(i, m) => {
                    prop_assert!(!ended[*i], "message after the end of input {}", i);
                    delivered[*i].push(*m);
                }
                Aligned::EndOfStream(i) => ended[*i] = true,
                _ => {}
            }
        }
        for i in 0..n {
            let sent: Vec<u32> = c.scripts[i].iter().filter_map(|s| match s { Step::Msg(m) => Some(*m), _ => None }).collect();
            prop_assert_eq!(&delivered[i], &sent, "input {} delivered out of order or not at all", i);
            let has_end = matches!(c.scripts[i].last(), Some(Step::End));
            prop_assert_eq!(ended[i], has_end);
        }

        // Each checkpoint: everything before its barrier on every input came first; in
        // exactly-once mode nothing after it did.
        let mut seen_ids = BTreeSet::new();
        let mut done: BTreeMap<u64, &str> = BTreeMap::new();
        for (k, a) in out.iter().enumerate() {
            let (id, what) = match a {
                Aligned::Checkpoint(b) => (b.id.0, "checkpoint"),
                Aligned::Aborted(id, _) => (id.0, "aborted"),
                _ => continue,
            };
            prop_assert!(done.insert(id, what).is_none(), "checkpoint {} decided twice", id);
            if what == "aborted" {
                continue;
            }
            prop_assert!(seen_ids.iter().all(|&s| s < id), "checkpoints must increase");
            seen_ids.insert(id);
            let before: Vec<usize> = (0..n).map(|i| out[..k].iter().filter(|a| matches!(a, Aligned::Message(j, _) if *j == i)).count()).collect();
            for (i, script) in c.scripts.iter().enumerate() {
                let cut = script.iter().position(|s| matches!(s, Step::Barrier(b) if *b == id));
                let msgs_before = script[..cut.unwrap_or(script.len())].iter().filter(|s| matches!(s, Step::Msg(_))).count();
                match cut {
                    Some(_) => {
                        prop_assert!(before[i] >= msgs_before, "checkpoint {} taken before input {}'s records ahead of the barrier", id, i);
                        if c.exactly_once {
                            prop_assert_eq!(before[i], msgs_before, "checkpoint {} includes input {}'s records after the barrier", id, i);
                        }
                    }
                    None => {
                        // The input never sent this barrier: it must have ended first.
                        prop_assert!(ended_before(&out[..k], i), "checkpoint {} without input {}'s barrier", id, i);
                    }
                }
            }
        }
        // Liveness: every input sends every barrier, nothing bounds the buffer: in
        // exactly-once mode, every checkpoint completes once all inputs are through.
        if c.exactly_once && c.all_barriers && c.max_buffered == usize::MAX {
            let completed: Vec<u64> = done.iter().filter(|(_, w)| **w == "checkpoint").map(|(id, _)| *id).collect();
            prop_assert_eq!(completed, vec![1, 2, 3, 4]);
        }
        prop_assert_eq!(aligner.held(), 0);
    }
}

fn ended_before(out: &[Aligned<u32>], input: usize) -> bool {
    out.iter()
        .any(|a| matches!(a, Aligned::EndOfStream(i) if *i == input))
}

fn drain(a: &mut BarrierAligner<u32>) -> Vec<Aligned<u32>> {
    std::iter::from_fn(|| a.next_action()).collect()
}

#[test]
fn a_newer_barrier_aborts_the_alignment_in_progress_and_releases_what_it_held() {
    let mut a = BarrierAligner::new(2, CheckpointingMode::ExactlyOnce, 100);
    a.push(0, Input::Barrier(barrier(1))).unwrap();
    a.push(0, Input::Message(7)).unwrap();
    assert_eq!(a.held(), 1);
    a.push(1, Input::Barrier(barrier(2))).unwrap();
    assert_eq!(
        drain(&mut a),
        vec![
            Aligned::Aborted(CheckpointId(1), AbortReason::Subsumed),
            Aligned::Message(0, 7)
        ]
    );
    assert_eq!(a.aligning(), Some(CheckpointId(2)));
    a.push(0, Input::Barrier(barrier(2))).unwrap();
    assert_eq!(drain(&mut a), vec![Aligned::Checkpoint(barrier(2))]);
}

#[test]
fn a_full_buffer_aborts_the_checkpoint_instead_of_growing() {
    let mut a = BarrierAligner::new(2, CheckpointingMode::ExactlyOnce, 2);
    a.push(0, Input::Barrier(barrier(1))).unwrap();
    for m in 0..3 {
        a.push(0, Input::Message(m)).unwrap();
    }
    assert_eq!(
        drain(&mut a),
        vec![
            Aligned::Aborted(CheckpointId(1), AbortReason::BufferFull),
            Aligned::Message(0, 0),
            Aligned::Message(0, 1),
            Aligned::Message(0, 2)
        ]
    );
    // The late barrier of the aborted checkpoint is ignored; the next one aligns.
    a.push(1, Input::Barrier(barrier(1))).unwrap();
    assert!(drain(&mut a).is_empty());
    a.push(1, Input::Barrier(barrier(2))).unwrap();
    a.push(0, Input::Barrier(barrier(2))).unwrap();
    assert_eq!(drain(&mut a), vec![Aligned::Checkpoint(barrier(2))]);
}

#[test]
fn an_input_that_ends_no_longer_holds_back_the_checkpoint() {
    let mut a = BarrierAligner::new(3, CheckpointingMode::ExactlyOnce, 10);
    a.push(0, Input::Barrier(barrier(1))).unwrap();
    a.push(1, Input::EndOfStream).unwrap();
    a.push(2, Input::Message(5)).unwrap();
    a.push(2, Input::EndOfStream).unwrap();
    assert_eq!(
        drain(&mut a),
        vec![
            Aligned::EndOfStream(1),
            Aligned::Message(2, 5),
            Aligned::EndOfStream(2),
            Aligned::Checkpoint(barrier(1))
        ]
    );
}

#[test]
fn broken_barrier_sequences_are_errors_not_panics() {
    let mut a = BarrierAligner::<u32>::new(2, CheckpointingMode::ExactlyOnce, 10);
    a.push(0, Input::Barrier(barrier(3))).unwrap();
    let e = a.push(0, Input::Barrier(barrier(3))).unwrap_err();
    assert!(e.to_string().contains("a second barrier for chk-3"), "{e}");
    let e = a.push(0, Input::Barrier(barrier(2))).unwrap_err();
    assert!(e.to_string().contains("barriers must increase"), "{e}");
    a.push(1, Input::EndOfStream).unwrap();
    let e = a.push(1, Input::Message(1)).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Barrier { input: 1, .. }),
        "{e}"
    );
    assert!(a.push(2, Input::Message(1)).is_err());
}
