//! The timer service against a `BTreeSet` model: exactly-once, ordered firing, never
//! before the watermark; snapshots restore (also split by key group) to the same firings.

use std::collections::BTreeSet;

use proptest::prelude::*;
use sabot_core::{KeyGroupRange, Timestamp};
use sabot_time::{TimeDomain, TimeError, Timer, TimerService};

const MAX_P: usize = 128;

type Service = TimerService<i64, (i64, bool)>;

#[derive(Clone, Debug)]
enum Op {
    Register(TimeDomain, i64, i64, i64),
    Delete(TimeDomain, i64, i64, i64),
    /// Advance both clocks by this much.
    Advance(i64),
}

fn domain() -> impl Strategy<Value = TimeDomain> {
    prop_oneof![
        Just(TimeDomain::EventTime),
        Just(TimeDomain::ProcessingTime)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (domain(), 0i64..6, 0i64..3, 0i64..200).prop_map(|(d, k, n, t)| Op::Register(d, k, n, t)),
        2 => (domain(), 0i64..6, 0i64..3, 0i64..200).prop_map(|(d, k, n, t)| Op::Delete(d, k, n, t)),
        2 => (0i64..60).prop_map(Op::Advance),
    ]
}

type Fired = Vec<(TimeDomain, i64, i64, i64)>;

/// Applies `ops`, returning what fired, in order.
fn run(s: &mut Service, clock: &mut i64, ops: &[Op]) -> Fired {
    let mut fired = Vec::new();
    for op in ops {
        match *op {
            Op::Register(TimeDomain::EventTime, k, n, t) => {
                s.register_event_time_timer(k, (n, false), Timestamp::from_millis(t));
            }
            Op::Register(TimeDomain::ProcessingTime, k, n, t) => {
                s.register_processing_time_timer(k, (n, true), Timestamp::from_millis(t));
            }
            Op::Delete(TimeDomain::EventTime, k, n, t) => {
                s.delete_event_time_timer(k, (n, false), Timestamp::from_millis(t));
            }
            Op::Delete(TimeDomain::ProcessingTime, k, n, t) => {
                s.delete_processing_time_timer(k, (n, true), Timestamp::from_millis(t));
            }
            Op::Advance(d) => {
                *clock += d;
                let now = Timestamp::from_millis(*clock);
                s.advance_watermark(now);
                while let Some(t) = s.next_event_timer() {
                    assert!(t.timestamp <= now, "fired before the watermark reached it");
                    fired.push((
                        TimeDomain::EventTime,
                        t.timestamp.millis(),
                        t.key,
                        t.namespace.0,
                    ));
                }
                s.advance_processing_time(now);
                while let Some(t) = s.next_processing_timer() {
                    assert!(t.timestamp <= now);
                    fired.push((
                        TimeDomain::ProcessingTime,
                        t.timestamp.millis(),
                        t.key,
                        t.namespace.0,
                    ));
                }
            }
        }
    }
    fired
}

fn model(ops: &[Op]) -> Fired {
    let mut pending: [BTreeSet<(i64, i64, i64)>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let idx = |d: TimeDomain| usize::from(d == TimeDomain::ProcessingTime);
    let mut clock = 0;
    let mut fired = Vec::new();
    for op in ops {
        match *op {
            Op::Register(d, k, n, t) => {
                pending[idx(d)].insert((t, k, n));
            }
            Op::Delete(d, k, n, t) => {
                pending[idx(d)].remove(&(t, k, n));
            }
            Op::Advance(dt) => {
                clock += dt;
                for d in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
                    while let Some(&first) = pending[idx(d)].first() {
                        if first.0 > clock {
                            break;
                        }
                        pending[idx(d)].pop_first();
                        fired.push((d, first.0, first.1, first.2));
                    }
                }
            }
        }
    }
    fired
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn timers_fire_exactly_once_in_order(ops in proptest::collection::vec(op(), 0..200)) {
        let mut s = Service::new(MAX_P);
        let mut clock = 0;
        let fired = run(&mut s, &mut clock, &ops);
        prop_assert_eq!(fired, model(&ops));
    }

    #[test]
    fn snapshot_restore_continue_gives_the_same_firings(
        ops in proptest::collection::vec(op(), 0..200),
        cut in 0usize..200,
    ) {
        let cut = cut.min(ops.len());
        let (before, after) = ops.split_at(cut);
        let mut plain = Service::new(MAX_P);
        let mut clock = 0;
        run(&mut plain, &mut clock, before);
        let snapshot = plain.snapshot();
        let clock_at_cut = clock;
        let expected = run(&mut plain, &mut clock, after);

        // Restored whole.
        let mut restored = Service::new(MAX_P);
        restored.restore(&snapshot, KeyGroupRange::for_subtask(MAX_P, 1, 0)).unwrap();
        let mut c = clock_at_cut;
        restored.advance_watermark(Timestamp::from_millis(c));
        restored.advance_processing_time(Timestamp::from_millis(c));
        prop_assert_eq!(&run(&mut restored, &mut c, after), &expected);

        // Restored split over 3 subtasks: each gets only its key groups, together all.
        let mut union = Vec::new();
        let mut total = 0;
        for i in 0..3 {
            let mut part = Service::new(MAX_P);
            let range = KeyGroupRange::for_subtask(MAX_P, 3, i);
            part.restore(&snapshot, range).unwrap();
            total += part.len(TimeDomain::EventTime) + part.len(TimeDomain::ProcessingTime);
            let mut c = clock_at_cut;
            part.advance_watermark(Timestamp::from_millis(c));
            part.advance_processing_time(Timestamp::from_millis(c));
            // Replay only the suffix operations on keys this subtask owns.
            let mine: Vec<Op> = after.iter().filter(|o| match o {
                Op::Register(_, k, _, _) | Op::Delete(_, k, _, _) => range.contains(sabot_time::TimerKey::key_group(k, MAX_P)),
                Op::Advance(_) => true,
            }).cloned().collect();
            union.extend(run(&mut part, &mut c, &mine));
        }
        let mut restored_whole = Service::new(MAX_P);
        restored_whole.restore(&snapshot, KeyGroupRange::for_subtask(MAX_P, 1, 0)).unwrap();
        prop_assert_eq!(total, restored_whole.len(TimeDomain::EventTime) + restored_whole.len(TimeDomain::ProcessingTime));
        union.sort();
        let mut exp = expected.clone();
        exp.sort();
        prop_assert_eq!(union, exp);
    }

    #[test]
    fn damaged_snapshots_are_errors_not_panics(
        ops in proptest::collection::vec(op(), 0..60),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut s = Service::new(MAX_P);
        let mut clock = 0;
        run(&mut s, &mut clock, &ops);
        let snap = s.snapshot();
        let all = KeyGroupRange::for_subtask(MAX_P, 1, 0);
        let truncated = &snap[..cut.index(snap.len())];
        prop_assert!(Service::new(MAX_P).restore(truncated, all).is_err());
        let mut flipped = snap.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= byte | 1;
        let _ = Service::new(MAX_P).restore(&flipped, all); // may or may not decode; never panics
    }
}

/// What handling a fired event-time timer does: derived from the timer, so model and
/// service react alike. Registers a follow-up for some keys, deletes one for others.
fn reaction(ts: i64, key: i64, ns: i64) -> Option<(bool, i64, i64, i64)> {
    match (ts + key + ns) % 4 {
        0 => Some((true, (key + 1) % 6, ns, ts + (key % 3) - 1)),
        1 => Some((false, (key + 2) % 6, ns, ts + 5)),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn timers_registered_while_firing_match_the_model(
        regs in proptest::collection::vec((0i64..6, 0i64..3, 0i64..100), 0..120),
        steps in proptest::collection::vec(0i64..40, 1..8),
    ) {
        let mut s: TimerService<i64, i64> = TimerService::new(MAX_P);
        let mut model: BTreeSet<(i64, i64, i64)> = BTreeSet::new();
        for &(k, n, t) in &regs {
            s.register_event_time_timer(k, n, Timestamp::from_millis(t));
            model.insert((t, k, n));
        }
        let mut clock = 0;
        for step in steps {
            clock += step;
            s.advance_watermark(Timestamp::from_millis(clock));
            let mut fired = Vec::new();
            while let Some(t) = s.next_event_timer() {
                let (ts, k, n) = (t.timestamp.millis(), t.key, t.namespace);
                fired.push((ts, k, n));
                if let Some((register, k2, n2, t2)) = reaction(ts, k, n) {
                    if register {
                        s.register_event_time_timer(k2, n2, Timestamp::from_millis(t2));
                    } else {
                        s.delete_event_time_timer(k2, n2, Timestamp::from_millis(t2));
                    }
                }
            }
            let mut expected = Vec::new();
            while let Some(&first) = model.first() {
                if first.0 > clock {
                    break;
                }
                model.pop_first();
                expected.push(first);
                let (ts, k, n) = first;
                if let Some((register, k2, n2, t2)) = reaction(ts, k, n) {
                    if register {
                        model.insert((t2, k2, n2));
                    } else {
                        model.remove(&(t2, k2, n2));
                    }
                }
            }
            prop_assert_eq!(fired, expected);
            prop_assert_eq!(s.len(TimeDomain::EventTime), model.len());
        }
    }
}

#[test]
fn timers_registered_while_firing_fire_in_the_same_round_when_due() {
    let mut s: TimerService<i64, ()> = TimerService::new(MAX_P);
    s.register_event_time_timer(1, (), Timestamp::from_millis(10));
    s.advance_watermark(Timestamp::from_millis(100));
    let mut fired: Vec<Timer<i64, ()>> = Vec::new();
    while let Some(t) = s.next_event_timer() {
        if t.key == 1 {
            s.register_event_time_timer(2, (), Timestamp::from_millis(50));
            s.register_event_time_timer(3, (), Timestamp::from_millis(500));
        }
        fired.push(t);
    }
    assert_eq!(fired.iter().map(|t| t.key).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(s.len(TimeDomain::EventTime), 1);
}

#[test]
fn snapshot_with_other_max_parallelism_is_rejected() {
    let mut s: TimerService<i64, ()> = TimerService::new(64);
    s.register_event_time_timer(1, (), Timestamp::from_millis(10));
    let err = TimerService::<i64, ()>::new(128)
        .restore(&s.snapshot(), KeyGroupRange::for_subtask(128, 1, 0))
        .unwrap_err();
    assert!(matches!(
        err,
        TimeError::MaxParallelismMismatch {
            snapshot: 64,
            expected: 128
        }
    ));
}

#[test]
fn snapshots_of_the_same_timers_are_the_same_bytes() {
    let mut a: TimerService<i64, i64> = TimerService::new(MAX_P);
    let mut b: TimerService<i64, i64> = TimerService::new(MAX_P);
    for k in 0..50 {
        a.register_event_time_timer(k, k % 3, Timestamp::from_millis(k * 7));
    }
    for k in (0..50).rev() {
        b.register_event_time_timer(k, k % 3, Timestamp::from_millis(k * 7));
    }
    assert_eq!(a.snapshot(), b.snapshot());
}
