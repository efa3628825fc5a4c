//! The job master against its invariants, over random interleavings of registrations
//! (good, duplicate, restarted, of another job, without slots), heartbeats, time, task
//! failures (current and stale), confirmed cancellations, lost workers, finished workers,
//! checkpoints and cancellation of the job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sabot_cluster::{
    Attempt, Command, Deployment, Fingerprint, JobMaster, JobState, MasterConfig, Refusal,
    Registration, RestartStrategy, WorkerId,
};
use sabot_core::CheckpointId;

#[derive(Clone, Debug)]
enum Op {
    Register {
        name: u8,
        restarted: bool,
        slots: usize,
        other_job: bool,
    },
    Heartbeat(u8),
    HeartbeatAll,
    Advance(i64),
    TaskFailed {
        worker: u8,
        stale: bool,
    },
    Finished(u8),
    ConfirmCancel(u8),
    Lost(u8),
    Checkpoint,
    CancelJob,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, any::<bool>(), prop_oneof![Just(0usize), 1usize..4], prop::bool::weighted(0.1))
            .prop_map(|(name, restarted, slots, other_job)| Op::Register { name, restarted, slots, other_job }),
        3 => (0u8..8).prop_map(Op::Heartbeat),
        4 => Just(Op::HeartbeatAll),
        4 => prop_oneof![0i64..3_000, 3_000i64..40_000].prop_map(Op::Advance),
        2 => (0u8..8, any::<bool>()).prop_map(|(worker, stale)| Op::TaskFailed { worker, stale }),
        3 => (0u8..8).prop_map(Op::Finished),
        4 => (0u8..8).prop_map(Op::ConfirmCancel),
        1 => (0u8..8).prop_map(Op::Lost),
        1 => Just(Op::Checkpoint),
        1 => prop::bool::weighted(0.05).prop_map(|c| if c { Op::CancelJob } else { Op::HeartbeatAll }),
    ]
}

fn fingerprint() -> Fingerprint {
    Fingerprint::new()
        .with("graph", "g1")
        .with("parallelism", "3")
}

/// What the harness knows from the commands it received and the calls it made.
#[derive(Default)]
struct Shadow {
    /// Registered workers and their slots (until forgotten).
    live: BTreeMap<WorkerId, usize>,
    /// Worker names and instances of the live workers.
    names: BTreeMap<u8, (WorkerId, u64)>,
    deployments: Vec<Arc<Deployment>>,
    /// (attempt, worker) deployed and neither confirmed cancelled nor forgotten.
    unconfirmed: BTreeSet<(Attempt, WorkerId)>,
    /// Cancels received and not yet confirmed.
    cancels: Vec<(WorkerId, Attempt)>,
    /// Workers that reported the current attempt finished.
    finished: BTreeSet<(Attempt, WorkerId)>,
    latest_checkpoint: Option<CheckpointId>,
    forgotten: BTreeSet<WorkerId>,
}

fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[i as usize % items.len()])
}

fn check_deployment(d: &Deployment, shadow: &Shadow, parallelism: usize) {
    assert_eq!(d.owners.len(), parallelism, "every subtask placed once");
    let ids: BTreeSet<WorkerId> = d.workers.iter().map(|(w, _)| *w).collect();
    assert_eq!(ids.len(), d.workers.len(), "no worker twice");
    for (i, (w, _)) in d.workers.iter().enumerate() {
        let slots = *shadow
            .live
            .get(w)
            .unwrap_or_else(|| panic!("{w} deployed but not registered"));
        let used = d.owners.iter().filter(|&&o| o == i).count();
        assert!(used >= 1, "{w} in the deployment without subtasks");
        assert!(used <= slots, "{w}: {used} subtasks on {slots} slots");
    }
    assert_eq!(
        d.restore, shadow.latest_checkpoint,
        "restores the newest checkpoint"
    );
}

fn drain(master: &mut JobMaster, shadow: &mut Shadow, parallelism: usize, state_before: JobState) {
    let mut new_deploys: BTreeMap<Attempt, Vec<(WorkerId, usize)>> = BTreeMap::new();
    while let Some(c) = master.next_command() {
        match c {
            Command::Deploy {
                worker,
                index,
                deployment,
            } => {
                assert!(
                    !state_before.is_terminal(),
                    "deploy after the job ended ({state_before})"
                );
                let a = deployment.attempt;
                if shadow.deployments.last().is_none_or(|d| d.attempt != a) {
                    if let Some(prev) = shadow.deployments.last() {
                        assert!(a > prev.attempt, "attempts grow");
                    }
                    let before: Vec<_> =
                        shadow.unconfirmed.iter().filter(|(p, _)| *p < a).collect();
                    assert!(
                        before.is_empty(),
                        "{a} deployed while older attempts still run on {before:?}"
                    );
                    check_deployment(&deployment, shadow, parallelism);
                    shadow.deployments.push(deployment.clone());
                }
                assert_eq!(deployment.workers[index].0, worker);
                new_deploys.entry(a).or_default().push((worker, index));
                shadow.unconfirmed.insert((a, worker));
            }
            Command::Cancel { worker, attempt } => {
                assert!(
                    !state_before.is_terminal(),
                    "cancel after the job ended ({state_before})"
                );
                shadow.cancels.push((worker, attempt));
            }
            Command::Forget { worker, .. } => {
                shadow.live.remove(&worker);
                shadow.names.retain(|_, (w, _)| *w != worker);
                shadow.unconfirmed.retain(|(_, w)| *w != worker);
                shadow.cancels.retain(|(w, _)| *w != worker);
                shadow.forgotten.insert(worker);
            }
        }
    }
    for (a, got) in new_deploys {
        let d = shadow.deployments.iter().find(|d| d.attempt == a).unwrap();
        assert_eq!(got.len(), d.workers.len(), "one deploy per worker of {a}");
    }
}

fn run(ops: Vec<Op>, attempts: u32) -> Result<(), TestCaseError> {
    const P: usize = 3;
    let mut config = MasterConfig::new(P);
    config.heartbeat_timeout = Duration::from_secs(10);
    config.cancel_timeout = Duration::from_secs(5);
    config.slot_timeout = Duration::from_secs(60);
    config.restart = RestartStrategy::fixed_delay(attempts, Duration::from_millis(500));
    let mut master = JobMaster::new(config, fingerprint(), None, 0);
    let mut shadow = Shadow::default();
    let mut now = 0i64;
    let mut instance = 1u64;
    let mut reports = 0u64;
    for op in ops {
        let before = master.state();
        let ids: Vec<WorkerId> = shadow.live.keys().copied().collect();
        match op {
            Op::Register {
                name,
                restarted,
                slots,
                other_job,
            } => {
                let same = shadow.names.get(&name).copied();
                let inst = match same {
                    Some((_, i)) if !restarted => i,
                    _ => {
                        instance += 1;
                        instance
                    }
                };
                let fp = if other_job {
                    fingerprint().with("graph", "g2")
                } else {
                    fingerprint()
                };
                let reg = Registration {
                    name: format!("w{name}"),
                    instance: inst,
                    data_addr: ([127, 0, 0, 1], 7000 + u16::from(name)).into(),
                    slots,
                    fingerprint: fp,
                    wall_clock_ms: 1_000_000,
                };
                match master.register(reg, now, 1_000_000) {
                    Ok(id) => {
                        prop_assert!(!other_job && slots > 0);
                        prop_assert!(
                            same.is_none_or(|(_, i)| i != inst),
                            "a duplicate was accepted"
                        );
                        shadow.live.insert(id, slots);
                        shadow.names.insert(name, (id, inst));
                    }
                    Err(Refusal::Fingerprint { differences, .. }) => {
                        prop_assert!(other_job);
                        prop_assert_eq!(differences.len(), 1);
                        prop_assert_eq!(&differences[0].name, "graph");
                    }
                    Err(Refusal::NoSlots { .. }) => prop_assert_eq!(slots, 0),
                    Err(Refusal::AlreadyRegistered { id, .. }) => {
                        prop_assert_eq!(same, Some((id, inst)));
                    }
                    Err(Refusal::JobOver { .. }) => prop_assert!(before.is_terminal()),
                    Err(e) => prop_assert!(false, "unexpected refusal: {e}"),
                }
            }
            Op::Heartbeat(i) => {
                if let Some(w) = pick(&ids, i) {
                    master.heartbeat(w, now).unwrap();
                }
                // Forgotten workers are told to register again.
                if let Some(&w) = shadow.forgotten.iter().next() {
                    prop_assert!(master.heartbeat(w, now).is_err());
                }
            }
            Op::HeartbeatAll => {
                for &w in &ids {
                    master.heartbeat(w, now).unwrap();
                }
            }
            Op::Advance(ms) => {
                now += ms;
                master.tick(now);
            }
            Op::TaskFailed { worker, stale } => {
                let running = master.running_attempt();
                if let (Some(w), Some(a)) = (pick(&ids, worker), running) {
                    if stale {
                        let old = Attempt(a.0.saturating_sub(1));
                        master.task_failed(w, old, "stale", now);
                        if old != a {
                            prop_assert_eq!(
                                master.state(),
                                before,
                                "a stale report changed the job"
                            );
                        }
                    } else {
                        master.task_failed(w, a, "boom", now);
                        prop_assert_ne!(master.state(), JobState::Running);
                    }
                }
            }
            Op::Finished(i) => {
                if let Some(d) = shadow.deployments.last().cloned() {
                    let (w, _) = d.workers[i as usize % d.workers.len()];
                    master.worker_finished(w, d.attempt);
                    shadow.finished.insert((d.attempt, w));
                }
            }
            Op::ConfirmCancel(i) => {
                if !shadow.cancels.is_empty() {
                    let (w, a) = shadow.cancels.remove(i as usize % shadow.cancels.len());
                    master.cancelled(w, a, now);
                    shadow.unconfirmed.remove(&(a, w));
                }
            }
            Op::Lost(i) => {
                if let Some(w) = pick(&ids, i) {
                    master.worker_lost(w, "cut off", now);
                }
            }
            Op::Checkpoint => {
                if master.running_attempt().is_some() {
                    reports += 1;
                    let id = CheckpointId(reports);
                    master.checkpoint_completed(id);
                    shadow.latest_checkpoint = Some(id);
                }
            }
            Op::CancelJob => master.cancel_job(now),
        }
        drain(&mut master, &mut shadow, P, before);
        let state = master.state();
        if before.is_terminal() {
            prop_assert_eq!(state, before, "a terminal state changed");
        }
        if state == JobState::Finished && !before.is_terminal() {
            let d = shadow.deployments.last().unwrap();
            for (w, _) in &d.workers {
                prop_assert!(
                    shadow.finished.contains(&(d.attempt, *w)),
                    "finished without {w} finishing {}",
                    d.attempt
                );
            }
        }
        prop_assert!(
            shadow.deployments.len() <= attempts as usize + 1,
            "{} deployments with {attempts} restarts allowed",
            shadow.deployments.len()
        );
        if state == JobState::Running {
            prop_assert_eq!(
                master.running_attempt(),
                shadow.deployments.last().map(|d| d.attempt)
            );
        }
        let status = master.status(now);
        prop_assert_eq!(status.state, state);
        prop_assert_eq!(status.workers.len(), shadow.live.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_master_keeps_its_invariants(
        ops in prop::collection::vec(op(), 0..120),
        attempts in 0u32..4,
    ) {
        run(ops, attempts)?;
    }
}

fn reg(name: &str, slots: usize, instance: u64) -> Registration {
    Registration {
        name: name.into(),
        instance,
        data_addr: ([127, 0, 0, 1], 7000).into(),
        slots,
        fingerprint: fingerprint(),
        wall_clock_ms: 0,
    }
}

fn commands(m: &mut JobMaster) -> Vec<Command> {
    std::iter::from_fn(|| m.next_command()).collect()
}

/// A lost worker: the attempt is cancelled on the others, restarted after the delay
/// from the newest checkpoint once a replacement registers, and the old attempt's
/// reports are ignored.
#[test]
fn a_lost_worker_restarts_the_job_from_the_newest_checkpoint_on_a_replacement() {
    let mut config = MasterConfig::new(3);
    config.restart = RestartStrategy::fixed_delay(1, Duration::from_secs(2));
    let mut m = JobMaster::new(config, fingerprint(), Some(CheckpointId(4)), 0);
    let a = m.register(reg("a", 2, 1), 0, 0).unwrap();
    let b = m.register(reg("b", 1, 1), 0, 0).unwrap();
    assert_eq!(m.state(), JobState::Running);
    let deploys = commands(&mut m);
    let Command::Deploy { deployment, .. } = &deploys[0] else {
        panic!("{deploys:?}")
    };
    assert_eq!(deployment.attempt, Attempt(1));
    assert_eq!(deployment.restore, Some(CheckpointId(4)));
    // Each subtask on the worker with the most free slots left: a, then a (tied with b,
    // the lower id), then b.
    assert_eq!(deployment.owners, vec![0, 0, 1]);
    m.checkpoint_completed(CheckpointId(5));

    m.heartbeat(a, 9_000).unwrap();
    m.tick(10_001);
    assert_eq!(m.state(), JobState::Cancelling);
    assert_eq!(
        commands(&mut m),
        vec![
            Command::Forget {
                worker: b,
                reason: "no heartbeat for over 10000 ms".into()
            },
            Command::Cancel {
                worker: a,
                attempt: Attempt(1)
            },
        ]
    );
    m.cancelled(a, Attempt(1), 10_100);
    assert_eq!(m.state(), JobState::Restarting);
    m.tick(12_100);
    assert_eq!(m.state(), JobState::WaitingForSlots, "2 slots of 3");
    let status = m.status(12_100);
    assert_eq!(status.slots, (2, 3));
    assert!(status.failure.unwrap().contains("no heartbeat"));
    let c = m.register(reg("c", 1, 1), 13_000, 0).unwrap();
    assert_eq!(m.state(), JobState::Running);
    let deploys = commands(&mut m);
    assert_eq!(deploys.len(), 2);
    let Command::Deploy { deployment, .. } = &deploys[0] else {
        panic!("{deploys:?}")
    };
    assert_eq!(deployment.attempt, Attempt(2));
    assert_eq!(deployment.restore, Some(CheckpointId(5)));
    assert_eq!(
        deployment
            .workers
            .iter()
            .map(|(w, _)| *w)
            .collect::<Vec<_>>(),
        vec![a, c]
    );
    // A zombie report of attempt 1 changes nothing.
    m.task_failed(a, Attempt(1), "late", 13_100);
    assert_eq!(m.state(), JobState::Running);
    m.worker_finished(a, Attempt(1));
    m.worker_finished(c, Attempt(2));
    assert_eq!(m.state(), JobState::Running);
    m.worker_finished(a, Attempt(2));
    assert_eq!(m.state(), JobState::Finished);
}

/// Failures beyond the restart strategy fail the job, naming the cause; a job that
/// waits too long for slots fails, naming the slots.
#[test]
fn the_job_fails_clearly_when_restarts_or_slots_run_out() {
    let mut config = MasterConfig::new(1);
    config.restart = RestartStrategy::fixed_delay(1, Duration::ZERO);
    let mut m = JobMaster::new(config.clone(), fingerprint(), None, 0);
    let a = m.register(reg("a", 1, 1), 0, 0).unwrap();
    m.task_failed(a, Attempt(1), "disk full", 1);
    m.cancelled(a, Attempt(1), 2);
    assert_eq!(m.state(), JobState::Running, "restarted at once");
    m.task_failed(a, Attempt(2), "disk full again", 3);
    m.cancelled(a, Attempt(2), 4);
    assert_eq!(m.state(), JobState::Failed);
    let failure = m.status(4).failure.unwrap();
    assert!(failure.contains("disk full again"), "{failure}");
    assert!(failure.contains("no more restarts (1 so far)"), "{failure}");
    assert!(matches!(
        m.register(reg("b", 1, 1), 5, 0),
        Err(Refusal::JobOver {
            state: JobState::Failed
        })
    ));

    let mut m = JobMaster::new(config, fingerprint(), None, 0);
    m.tick(300_001);
    assert_eq!(m.state(), JobState::Failed);
    let failure = m.status(300_001).failure.unwrap();
    assert_eq!(failure, "waited over 300 s for 1 slots; 0 registered");
}

/// Refusals name what is wrong: each fingerprint difference, the duplicate, the clock.
#[test]
fn refusals_name_the_difference() {
    let mut m = JobMaster::new(MasterConfig::new(2), fingerprint(), None, 0);
    let mut other = reg("x", 1, 1);
    other.fingerprint = Fingerprint::new()
        .with("graph", "g1")
        .with("parallelism", "4")
        .with("state", "rocksdb");
    let e = m.register(other, 0, 0).unwrap_err().to_string();
    assert_eq!(
        e,
        "worker `x` runs another job than the coordinator: parallelism: coordinator 3, \
         worker 4; state: coordinator (none), worker rocksdb"
    );
    let a = m.register(reg("a", 1, 7), 0, 0).unwrap();
    let e = m.register(reg("a", 1, 7), 0, 0).unwrap_err().to_string();
    assert_eq!(e, format!("worker `a` is already registered as {a}"));
    let mut skewed = reg("s", 1, 1);
    skewed.wall_clock_ms = 3_600_000;
    let e = m.register(skewed, 0, 0).unwrap_err().to_string();
    assert!(e.contains("clock is 3600000 ms off"), "{e}");
    // A restarted process of the same name replaces the old one.
    let a2 = m.register(reg("a", 1, 8), 0, 0).unwrap();
    assert_ne!(a, a2);
    assert!(m.heartbeat(a, 1).is_err());
}
