//! The checkpoint coordinator against a model, over random ticks, acknowledgements and
//! declines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use sabot_checkpoint::{AbortCause, CheckpointCoordinator, Command, CoordinatorConfig};
use sabot_core::CheckpointId;

#[derive(Clone, Debug)]
enum Op {
    /// Time moves forward by this many ms, then a tick.
    Tick(u16),
    /// A task acknowledges the n-th newest triggered checkpoint.
    Ack(usize, usize),
    /// A task declines the n-th newest triggered checkpoint.
    Decline(usize, usize),
}

fn op(tasks: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u16..400).prop_map(Op::Tick),
        6 => (0..tasks, 0usize..3).prop_map(|(t, n)| Op::Ack(t, n)),
        1 => (0..tasks, 0usize..3).prop_map(|(t, n)| Op::Decline(t, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn coordinator_matches_the_model(
        (tasks, ops) in (1usize..4).prop_flat_map(|t| (Just(t), prop::collection::vec(op(t), 0..120))),
        interval in 1u64..300,
        timeout in 50u64..1000,
        max_concurrent in 1usize..4,
        retain in 1usize..4,
        restored in prop::option::of(1u64..50),
    ) {
        let config = CoordinatorConfig::every(Duration::from_millis(interval))
            .with_timeout(Duration::from_millis(timeout))
            .with_max_concurrent(max_concurrent)
            .with_retain(retain);
        let restored: Vec<CheckpointId> = restored.map(CheckpointId).into_iter().collect();
        let mut c = CheckpointCoordinator::new(tasks, config, &restored);

        // The model.
        let mut now = 0i64;
        let mut triggered: Vec<(CheckpointId, i64)> = Vec::new();
        let mut in_flight: BTreeMap<CheckpointId, (i64, BTreeSet<usize>)> = BTreeMap::new();
        let mut decided: BTreeSet<CheckpointId> = BTreeSet::new();
        let mut retained: Vec<CheckpointId> = restored.clone();
        let mut last_trigger: Option<i64> = None;

        for op in ops {
            match op {
                Op::Tick(dt) => { now += i64::from(dt); c.tick(now); }
                Op::Ack(task, n) => {
                    if let Some((id, _)) = triggered.iter().rev().nth(n).copied() {
                        let twice = in_flight.get(&id).is_some_and(|(_, acks)| acks.contains(&task));
                        let r = c.acknowledge(task, id);
                        prop_assert_eq!(r.is_err(), twice, "ack {} of {}: {:?}", task, id, r);
                        if let Some((_, acks)) = in_flight.get_mut(&id) { acks.insert(task); }
                    }
                }
                Op::Decline(task, n) => {
                    if let Some((id, _)) = triggered.iter().rev().nth(n).copied() {
                        c.decline(task, id, "test").unwrap();
                    }
                }
            }
            while let Some(cmd) = c.next_command() {
                match cmd {
                    Command::Trigger(b) => {
                        prop_assert!(in_flight.len() < max_concurrent, "more than {} in flight", max_concurrent);
                        if let Some(t) = last_trigger {
                            prop_assert!(now - t >= interval as i64, "triggered {} ms after the last", now - t);
                        }
                        if let Some(&(prev, _)) = triggered.last() {
                            prop_assert!(b.id > prev);
                        }
                        prop_assert!(restored.iter().all(|r| b.id > *r), "ids continue after the restored checkpoint");
                        prop_assert_eq!(b.triggered_at.millis(), now);
                        last_trigger = Some(now);
                        triggered.push((b.id, now));
                        in_flight.insert(b.id, (now, BTreeSet::new()));
                    }
                    Command::Complete(id) => {
                        let (_, acks) = in_flight.remove(&id).expect("completes only a checkpoint in flight");
                        prop_assert_eq!(acks.len(), tasks, "{} completed without every ack", id);
                        prop_assert!(decided.insert(id));
                        retained.push(id);
                    }
                    Command::Abort(id, cause) => {
                        let (at, acks) = in_flight.remove(&id).expect("aborts only a checkpoint in flight");
                        prop_assert!(decided.insert(id));
                        match cause {
                            AbortCause::Timeout => prop_assert!(now - at >= timeout as i64),
                            AbortCause::Subsumed => prop_assert!(retained.last().is_some_and(|l| *l > id)),
                            AbortCause::Declined { .. } => {}
                        }
                        prop_assert!(acks.len() < tasks);
                    }
                    Command::Discard(id) => {
                        prop_assert_eq!(retained.first().copied(), Some(id), "discards the oldest only");
                        retained.remove(0);
                        prop_assert_eq!(retained.len(), retain, "keeps exactly the last {} after a discard", retain);
                    }
                }
            }
            // Nothing in flight may be past its timeout after a tick.
            if matches!(op, Op::Tick(_)) {
                prop_assert!(in_flight.values().all(|(at, _)| now - at < timeout as i64));
            }
            prop_assert_eq!(c.in_flight(), in_flight.len());
            prop_assert_eq!(c.latest_completed(), retained.last().copied());
        }
    }
}

#[test]
fn every_checkpoint_completes_when_every_task_acknowledges() {
    let mut c =
        CheckpointCoordinator::new(2, CoordinatorConfig::every(Duration::from_millis(100)), &[]);
    let mut completed = Vec::new();
    for step in 0..10 {
        c.tick(step * 100);
        while let Some(cmd) = c.next_command() {
            match cmd {
                Command::Trigger(b) => {
                    c.acknowledge(0, b.id).unwrap();
                    c.acknowledge(1, b.id).unwrap();
                }
                Command::Complete(id) => completed.push(id.0),
                Command::Discard(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(completed, (1..=10).collect::<Vec<_>>());
    assert!(c.acknowledge(5, CheckpointId(3)).is_err(), "unknown task");
}

#[test]
fn trigger_asap_ignores_the_interval_but_not_the_concurrency_limit() {
    let mut c =
        CheckpointCoordinator::new(2, CoordinatorConfig::every(Duration::from_secs(60)), &[]);
    c.tick(0);
    let Some(Command::Trigger(first)) = c.next_command() else {
        panic!("the first tick triggers");
    };
    c.trigger_asap();
    c.tick(1);
    assert_eq!(c.next_command(), None, "one checkpoint in flight at most");
    c.acknowledge(0, first.id).unwrap();
    c.acknowledge(1, first.id).unwrap();
    assert_eq!(c.next_command(), Some(Command::Complete(first.id)));
    c.tick(2);
    assert!(
        matches!(c.next_command(), Some(Command::Trigger(b)) if b.id.0 == first.id.0 + 1),
        "triggered 2 ms after the last one, with a 60 s interval"
    );
    c.tick(3);
    assert_eq!(c.next_command(), None, "only once");
}

#[test]
fn unacknowledged_by_lists_what_a_task_still_owes() {
    let mut c =
        CheckpointCoordinator::new(2, CoordinatorConfig::every(Duration::from_millis(1)), &[]);
    c.tick(0);
    let Some(Command::Trigger(b)) = c.next_command() else {
        panic!("triggered");
    };
    assert_eq!(c.unacknowledged_by(0), vec![b.id]);
    c.acknowledge(0, b.id).unwrap();
    assert!(c.unacknowledged_by(0).is_empty());
    assert_eq!(c.unacknowledged_by(1), vec![b.id]);
}
