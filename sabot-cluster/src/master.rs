//! The job master: the coordinator's decisions as a pure state machine.
//!
//! No sockets, threads or clocks: the coordinator's service feeds it what happens
//! (a worker registers, a heartbeat, a task failure, a cancelled attempt, the time) and
//! carries out the [`Command`]s it queues (deploy an attempt on a worker, cancel one,
//! forget a worker). That is what lets tests drive thousands of interleavings of
//! failures cheaply, as the checkpoint coordinator's.
//!
//! The job's life: [`JobState::Created`] (waiting for slots) → `Running` → on a failure
//! `Cancelling` (every subtask of the attempt is cancelled, with a bounded wait) →
//! `Restarting` (the restart strategy's delay) → `Running` again from the newest complete
//! checkpoint, or `WaitingForSlots` when too few slots are left, which fails the job after
//! a timeout. The end: `Finished`, `Failed` or `Cancelled`.
//!
//! Every deployment is a new [`Attempt`], numbered upwards; reports of an older attempt
//! are dropped, so a zombie subtask of attempt 3 cannot end, fail or finish attempt 4.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::CheckpointId;

use crate::restart::{RestartStrategy, RestartTracker};

/// A registered worker process (numbered by the master, upwards, never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

/// One deployment of the job (numbered upwards from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u64);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt {}", self.0)
    }
}

/// What every process of a job must agree on: the job graph and the job options, as
/// named values (a graph hash, the parallelism, the state backend, ...). The master
/// refuses a worker whose fingerprint differs, naming each difference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    /// An empty fingerprint.
    pub fn new() -> Self {
        Fingerprint::default()
    }

    /// Adds (or replaces) the value `value` of `name`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// The named values.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Where `theirs` differs from this one (a value missing on one side is `None`).
    pub fn differences(&self, theirs: &Fingerprint) -> Vec<Difference> {
        let names: BTreeSet<&String> = self.0.keys().chain(theirs.0.keys()).collect();
        names
            .into_iter()
            .filter_map(|name| {
                let (ours, other) = (self.0.get(name), theirs.0.get(name));
                (ours != other).then(|| Difference {
                    name: name.clone(),
                    ours: ours.cloned(),
                    theirs: other.cloned(),
                })
            })
            .collect()
    }
}

/// One value in which two fingerprints differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The value's name.
    pub name: String,
    /// The coordinator's value.
    pub ours: Option<String>,
    /// The worker's value.
    pub theirs: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        write!(
            f,
            "{}: coordinator {}, worker {}",
            self.name,
            show(&self.ours),
            show(&self.theirs)
        )
    }
}

/// A worker's registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The worker's name (its host and port unless given), unique among live workers.
    pub name: String,
    /// A number the process drew at start: the same name with another instance is a
    /// restarted process, which replaces the old one.
    pub instance: u64,
    /// Where its data plane (shuffle server) listens.
    pub data_addr: SocketAddr,
    /// Subtask slots it offers (each runs one subtask of every operator).
    pub slots: usize,
    /// Its job fingerprint.
    pub fingerprint: Fingerprint,
    /// Its wall clock when it registered, in ms since the epoch.
    pub wall_clock_ms: i64,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The worker built another job (graph or options).
    #[error("worker `{name}` runs another job than the coordinator: {}", list(.differences))]
    Fingerprint {
        /// The worker's name.
        name: String,
        /// Each value that differs.
        differences: Vec<Difference>,
    },
    /// The same process registered twice.
    #[error("worker `{name}` is already registered as {id}")]
    AlreadyRegistered {
        /// The worker's name.
        name: String,
        /// Its id.
        id: WorkerId,
    },
    /// It offers no slot.
    #[error("worker `{name}` offers no slots")]
    NoSlots {
        /// The worker's name.
        name: String,
    },
    /// Its wall clock is too far from the coordinator's.
    #[error(
        "worker `{name}`'s clock is {skew_ms} ms off the coordinator's (at most {limit_ms} ms): fix its time (NTP)"
    )]
    ClockSkew {
        /// The worker's name.
        name: String,
        /// How far its clock is off.
        skew_ms: i64,
        /// How far it may be.
        limit_ms: i64,
    },
    /// The job ended.
    #[error("the job is over ({state})")]
    JobOver {
        /// The job's final state.
        state: JobState,
    },
}

fn list(d: &[Difference]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A report from a worker the master does not know (it was forgotten: it must register
/// again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not registered (it was declared lost or replaced): register again")]
pub struct UnknownWorker(pub WorkerId);

/// The master's settings.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Subtasks per operator: the slots the job needs.
    pub parallelism: usize,
    /// A worker not heard from for this long is lost.
    pub heartbeat_timeout: Duration,
    /// A job waiting this long for enough slots fails.
    pub slot_timeout: Duration,
    /// Workers that have not confirmed a cancellation after this long are lost.
    pub cancel_timeout: Duration,
    /// A worker whose wall clock is further off than this is refused.
    pub max_clock_skew: Duration,
    /// Restarts after failures.
    pub restart: RestartStrategy,
}

impl MasterConfig {
    /// A job of `parallelism` subtasks per operator: heartbeat timeout 10 s, slot
    /// timeout 5 min, cancel timeout 30 s, clock skew 1 min, fixed-delay restarts (3,
    /// every 2 s).
    pub fn new(parallelism: usize) -> Self {
        MasterConfig {
            parallelism,
            heartbeat_timeout: Duration::from_secs(10),
            slot_timeout: Duration::from_secs(300),
            cancel_timeout: Duration::from_secs(30),
            max_clock_skew: Duration::from_secs(60),
            restart: RestartStrategy::fixed_delay(3, Duration::from_secs(2)),
        }
    }
}

/// What one attempt runs where: the same for every worker of the attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The attempt.
    pub attempt: Attempt,
    /// The attempt's workers, in worker-index order, with their data-plane addresses.
    pub workers: Vec<(WorkerId, SocketAddr)>,
    /// Subtask `s` of every operator runs on worker index `owners[s]`.
    pub owners: Vec<usize>,
    /// The checkpoint to continue from (`None`: from the start, or whatever the
    /// checkpoint storage holds when the attempt is the first).
    pub restore: Option<CheckpointId>,
}

/// What the master asks its service to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start `deployment` on `worker` (its index in `deployment.workers` is `index`).
    Deploy {
        /// The worker.
        worker: WorkerId,
        /// Its index among the attempt's workers.
        index: usize,
        /// The attempt's placement.
        deployment: Arc<Deployment>,
    },
    /// Cancel every subtask of `attempt` on `worker`; it confirms with
    /// [`JobMaster::cancelled`].
    Cancel {
        /// The worker.
        worker: WorkerId,
        /// The attempt to cancel (a worker running another ignores it).
        attempt: Attempt,
    },
    /// The worker is no longer part of the cluster (lost, or replaced by a restarted
    /// process of the same name): close its connection.
    Forget {
        /// The worker.
        worker: WorkerId,
        /// Why, for its log.
        reason: String,
    },
}

/// The job's state, as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for enough slots for the first attempt.
    Created,
    /// An attempt runs.
    Running,
    /// A failure: the attempt's subtasks are being cancelled.
    Cancelling,
    /// Waiting for the restart strategy's delay.
    Restarting,
    /// After a failure, waiting for enough slots.
    WaitingForSlots,
    /// Every subtask ended with its input.
    Finished,
    /// Failed beyond the restart strategy, or waited too long for slots.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl JobState {
    /// Finished, failed or cancelled: nothing changes any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Created => "created",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Restarting => "restarting",
            JobState::WaitingForSlots => "waiting for slots",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        })
    }
}

/// A worker as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Its id.
    pub id: WorkerId,
    /// Its name.
    pub name: String,
    /// Its data-plane address.
    pub data_addr: SocketAddr,
    /// Slots it offers.
    pub slots: usize,
    /// Slots the current attempt uses.
    pub used: usize,
    /// Time since its last heartbeat (or registration).
    pub silent_for: Duration,
}

/// The job's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus {
    /// The job's state.
    pub state: JobState,
    /// The current (or last) attempt.
    pub attempt: Option<Attempt>,
    /// Restarts so far.
    pub restarts: u32,
    /// The registered workers.
    pub workers: Vec<WorkerStatus>,
    /// Slots registered and slots needed.
    pub slots: (usize, usize),
    /// The newest complete checkpoint.
    pub latest_checkpoint: Option<CheckpointId>,
    /// Why the job failed, or the last failure it restarted after.
    pub failure: Option<String>,
}

#[derive(Debug)]
struct Worker {
    reg: Registration,
    last_seen_ms: i64,
}

/// What to do once an attempt's subtasks are cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Restart (after a failure; the attempt had run this long).
    Restart { up_ms: i64 },
    /// End the job as cancelled (the user's request).
    Cancel,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for slots since then (`Created` for the first attempt).
    Waiting {
        since_ms: i64,
    },
    Running {
        deployment: Arc<Deployment>,
        finished: BTreeSet<WorkerId>,
        started_ms: i64,
    },
    Cancelling {
        attempt: Attempt,
        pending: BTreeSet<WorkerId>,
        deadline_ms: i64,
        then: Then,
    },
    Restarting {
        at_ms: i64,
    },
    Over(JobState),
}

/// The job master (see the module docs).
#[derive(Debug)]
pub struct JobMaster {
    config: MasterConfig,
    fingerprint: Fingerprint,
    workers: BTreeMap<WorkerId, Worker>,
    next_worker: u64,
    last_attempt: Option<Attempt>,
    phase: Phase,
    restarts: RestartTracker,
    latest_checkpoint: Option<CheckpointId>,
    failure: Option<String>,
    commands: VecDeque<Command>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JobMaster {
    /// A job of `fingerprint` that has not started, at time `now_ms` (a monotonic clock
    /// in ms); `latest_checkpoint` is the newest complete checkpoint in storage, if any.
    pub fn new(
        config: MasterConfig,
        fingerprint: Fingerprint,
        latest_checkpoint: Option<CheckpointId>,
        now_ms: i64,
    ) -> Self {
        JobMaster {
            restarts: RestartTracker::new(config.restart.clone()),
            config,
            fingerprint,
            workers: BTreeMap::new(),
            next_worker: 1,
            last_attempt: None,
            phase: Phase::Waiting { since_ms: now_ms },
            latest_checkpoint,
            failure: None,
            commands: VecDeque::new(),
        }
    }

    /// The next command to carry out.
    pub fn next_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The job's state.
    pub fn state(&self) -> JobState {
        match &self.phase {
            Phase::Waiting { .. } if self.last_attempt.is_none() => JobState::Created,
            Phase::Waiting { .. } => JobState::WaitingForSlots,
            Phase::Running { .. } => JobState::Running,
            Phase::Cancelling { .. } => JobState::Cancelling,
            Phase::Restarting { .. } => JobState::Restarting,
            Phase::Over(s) => *s,
        }
    }

    /// The attempt running now, if any.
    pub fn running_attempt(&self) -> Option<Attempt> {
        match &self.phase {
            Phase::Running { deployment, .. } => Some(deployment.attempt),
            _ => None,
        }
    }

    /// Registers a worker at `now_ms` when its wall clock reads `wall_ms` on the
    /// coordinator. A worker of the same name with another instance (a restarted
    /// process) replaces the old one, whose subtasks count as lost.
    pub fn register(
        &mut self,
        reg: Registration,
        now_ms: i64,
        wall_ms: i64,
    ) -> Result<WorkerId, Refusal> {
        if let Phase::Over(state) = self.phase {
            return Err(Refusal::JobOver { state });
        }
        let differences = self.fingerprint.differences(&reg.fingerprint);
        if !differences.is_empty() {
            return Err(Refusal::Fingerprint {
                name: reg.name,
                differences,
            });
        }
        if reg.slots == 0 {
            return Err(Refusal::NoSlots { name: reg.name });
        }
        let skew_ms = reg.wall_clock_ms.saturating_sub(wall_ms).saturating_abs();
        let limit_ms = millis(self.config.max_clock_skew);
        if skew_ms > limit_ms {
            return Err(Refusal::ClockSkew {
                name: reg.name,
                skew_ms,
                limit_ms,
            });
        }
        let same_name = self
            .workers
            .iter()
            .find(|(_, w)| w.reg.name == reg.name)
            .map(|(&id, w)| (id, w.reg.instance));
        if let Some((old, instance)) = same_name {
            if instance == reg.instance {
                return Err(Refusal::AlreadyRegistered {
                    name: reg.name,
                    id: old,
                });
            }
            self.worker_lost(
                old,
                "replaced by a restarted process of the same name",
                now_ms,
            );
        }
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                reg,
                last_seen_ms: now_ms,
            },
        );
        self.try_deploy(now_ms);
        Ok(id)
    }

    /// A heartbeat of `worker`.
    pub fn heartbeat(&mut self, worker: WorkerId, now_ms: i64) -> Result<(), UnknownWorker> {
        let w = self.workers.get_mut(&worker).ok_or(UnknownWorker(worker))?;
        w.last_seen_ms = w.last_seen_ms.max(now_ms);
        Ok(())
    }

    /// A subtask of `attempt` on `worker` failed.
    pub fn task_failed(&mut self, worker: WorkerId, attempt: Attempt, reason: &str, now_ms: i64) {
        if self.running_attempt() == Some(attempt) {
            self.fail_over(format!("{attempt} failed on {worker}: {reason}"), now_ms);
        }
    }

    /// Every subtask of `attempt` on `worker` ended (its input ended and its last
    /// checkpoint completed).
    pub fn worker_finished(&mut self, worker: WorkerId, attempt: Attempt) {
        let Phase::Running {
            deployment,
            finished,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if deployment.attempt != attempt || !deployment.workers.iter().any(|(w, _)| *w == worker) {
            return;
        }
        finished.insert(worker);
        if finished.len() == deployment.workers.len() {
            self.phase = Phase::Over(JobState::Finished);
        }
    }

    /// `worker` confirmed that `attempt`'s subtasks are cancelled.
    pub fn cancelled(&mut self, worker: WorkerId, attempt: Attempt, now_ms: i64) {
        if let Phase::Cancelling {
            attempt: a,
            pending,
            ..
        } = &mut self.phase
            && *a == attempt
        {
            pending.remove(&worker);
            if pending.is_empty() {
                self.after_cancel(now_ms);
            }
        }
    }

    /// `worker` is gone (its control connection or a data-plane peer was lost, or its
    /// heartbeats stopped): it is forgotten, and its subtasks count as failed.
    pub fn worker_lost(&mut self, worker: WorkerId, reason: &str, now_ms: i64) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        self.commands.push_back(Command::Forget {
            worker,
            reason: reason.to_string(),
        });
        match &mut self.phase {
            Phase::Running { deployment, .. }
                if deployment.workers.iter().any(|(id, _)| *id == worker) =>
            {
                let cause = format!("{worker} (`{}`) was lost: {reason}", w.reg.name);
                self.fail_over(cause, now_ms);
            }
            Phase::Cancelling { pending, .. } => {
                pending.remove(&worker);
                if pending.is_empty() {
                    self.after_cancel(now_ms);
                }
            }
            _ => {}
        }
    }

    /// A checkpoint completed: later attempts continue from it (or a newer one).
    pub fn checkpoint_completed(&mut self, id: CheckpointId) {
        self.latest_checkpoint = self.latest_checkpoint.max(Some(id));
    }

    /// The user cancels the job.
    pub fn cancel_job(&mut self, now_ms: i64) {
        match &self.phase {
            Phase::Running { deployment, .. } => {
                let deployment = deployment.clone();
                self.cancel_attempt(&deployment, Then::Cancel, now_ms);
            }
            Phase::Cancelling { .. } => {
                if let Phase::Cancelling { then, .. } = &mut self.phase {
                    *then = Then::Cancel;
                }
            }
            Phase::Waiting { .. } | Phase::Restarting { .. } => {
                self.phase = Phase::Over(JobState::Cancelled);
            }
            Phase::Over(_) => {}
        }
    }

    /// Time passes: lost heartbeats, cancellations that take too long, restart delays and
    /// the wait for slots.
    pub fn tick(&mut self, now_ms: i64) {
        let timeout = millis(self.config.heartbeat_timeout);
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now_ms.saturating_sub(w.last_seen_ms) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            let reason = format!("no heartbeat for over {} ms", timeout);
            self.worker_lost(id, &reason, now_ms);
        }
        match &self.phase {
            Phase::Cancelling {
                pending,
                deadline_ms,
                ..
            } if now_ms >= *deadline_ms => {
                // The workers that did not confirm are not trusted any more.
                let late: Vec<WorkerId> = pending.iter().copied().collect();
                for id in late {
                    self.worker_lost(id, "did not confirm the cancellation in time", now_ms);
                }
                if matches!(self.phase, Phase::Cancelling { .. }) {
                    self.after_cancel(now_ms);
                }
            }
            Phase::Restarting { at_ms } if now_ms >= *at_ms => {
                self.phase = Phase::Waiting { since_ms: now_ms };
                self.try_deploy(now_ms);
            }
            Phase::Waiting { since_ms }
                if now_ms.saturating_sub(*since_ms) > millis(self.config.slot_timeout) =>
            {
                let (have, need) = (self.free_slots(), self.config.parallelism);
                self.failure = Some(format!(
                    "waited over {} s for {need} slots; {have} registered",
                    self.config.slot_timeout.as_secs()
                ));
                self.phase = Phase::Over(JobState::Failed);
            }
            _ => self.try_deploy(now_ms),
        }
    }

    /// The job's status at `now_ms`.
    pub fn status(&self, now_ms: i64) -> JobStatus {
        let deployment = match &self.phase {
            Phase::Running { deployment, .. } => Some(deployment.clone()),
            _ => None,
        };
        let used = |id: WorkerId| {
            deployment.as_ref().map_or(0, |d| {
                let Some(i) = d.workers.iter().position(|(w, _)| *w == id) else {
                    return 0;
                };
                d.owners.iter().filter(|&&o| o == i).count()
            })
        };
        JobStatus {
            state: self.state(),
            attempt: self.last_attempt,
            restarts: self.restarts.total(),
            workers: self
                .workers
                .iter()
                .map(|(&id, w)| WorkerStatus {
                    id,
                    name: w.reg.name.clone(),
                    data_addr: w.reg.data_addr,
                    slots: w.reg.slots,
                    used: used(id),
                    silent_for: Duration::from_millis(
                        now_ms.saturating_sub(w.last_seen_ms).max(0) as u64
                    ),
                })
                .collect(),
            slots: (self.free_slots(), self.config.parallelism),
            latest_checkpoint: self.latest_checkpoint,
            failure: self.failure.clone(),
        }
    }

    fn free_slots(&self) -> usize {
        self.workers.values().map(|w| w.reg.slots).sum()
    }

    /// The attempt's subtasks fail: cancel them, then restart.
    fn fail_over(&mut self, cause: String, now_ms: i64) {
        let Phase::Running {
            deployment,
            started_ms,
            ..
        } = &self.phase
        else {
            return;
        };
        let (deployment, up_ms) = (deployment.clone(), now_ms.saturating_sub(*started_ms));
        self.failure = Some(cause);
        self.cancel_attempt(&deployment, Then::Restart { up_ms }, now_ms);
    }

    fn cancel_attempt(&mut self, deployment: &Deployment, then: Then, now_ms: i64) {
        let pending: BTreeSet<WorkerId> = deployment
            .workers
            .iter()
            .map(|(w, _)| *w)
            .filter(|w| self.workers.contains_key(w))
            .collect();
        for &worker in &pending {
            self.commands.push_back(Command::Cancel {
                worker,
                attempt: deployment.attempt,
            });
        }
        self.phase = Phase::Cancelling {
            attempt: deployment.attempt,
            pending,
            deadline_ms: now_ms.saturating_add(millis(self.config.cancel_timeout)),
            then,
        };
        if matches!(&self.phase, Phase::Cancelling { pending, .. } if pending.is_empty()) {
            self.after_cancel(now_ms);
        }
    }

    fn after_cancel(&mut self, now_ms: i64) {
        let Phase::Cancelling { then, .. } = self.phase else {
            return;
        };
        match then {
            Then::Cancel => self.phase = Phase::Over(JobState::Cancelled),
            Then::Restart { up_ms } => {
                match self
                    .restarts
                    .on_failure(Duration::from_millis(up_ms.max(0) as u64))
                {
                    Some(delay) => {
                        self.phase = Phase::Restarting {
                            at_ms: now_ms.saturating_add(millis(delay)),
                        };
                        if delay.is_zero() {
                            self.phase = Phase::Waiting { since_ms: now_ms };
                            self.try_deploy(now_ms);
                        }
                    }
                    None => {
                        let cause = self.failure.take().unwrap_or_default();
                        self.failure = Some(format!(
                            "{cause}; the restart strategy allows no more restarts ({} so far)",
                            self.restarts.total()
                        ));
                        self.phase = Phase::Over(JobState::Failed);
                    }
                }
            }
        }
    }

    /// Deploys the next attempt if the job waits for slots and has them.
    fn try_deploy(&mut self, now_ms: i64) {
        if !matches!(self.phase, Phase::Waiting { .. }) {
            return;
        }
        let need = self.config.parallelism;
        if need == 0 || self.free_slots() < need {
            return;
        }
        // Spread: each subtask on the worker with the most free slots left (the lowest
        // id among equals), so that load and the loss of one worker are spread too.
        let mut free: Vec<(WorkerId, SocketAddr, usize)> = self
            .workers
            .iter()
            .map(|(&id, w)| (id, w.reg.data_addr, w.reg.slots))
            .collect();
        let mut picks = Vec::with_capacity(need);
        for _ in 0..need {
            let Some(best) = (0..free.len()).max_by_key(|&i| (free[i].2, std::cmp::Reverse(i)))
            else {
                return;
            };
            free[best].2 -= 1;
            picks.push(free[best].0);
        }
        let mut used: Vec<WorkerId> = picks.clone();
        used.sort_unstable();
        used.dedup();
        let workers: Vec<(WorkerId, SocketAddr)> = used
            .iter()
            .map(|id| (*id, self.workers[id].reg.data_addr))
            .collect();
        let owners = picks
            .iter()
            .map(|p| used.binary_search(p).unwrap_or(0))
            .collect();
        let attempt = Attempt(self.last_attempt.map_or(1, |a| a.0 + 1));
        self.last_attempt = Some(attempt);
        let deployment = Arc::new(Deployment {
            attempt,
            workers,
            owners,
            restore: self.latest_checkpoint,
        });
        for (index, (worker, _)) in deployment.workers.iter().enumerate() {
            self.commands.push_back(Command::Deploy {
                worker: *worker,
                index,
                deployment: deployment.clone(),
            });
        }
        self.phase = Phase::Running {
            deployment,
            finished: BTreeSet::new(),
            started_ms: now_ms,
        };
    }
}
