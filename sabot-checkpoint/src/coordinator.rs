//! The checkpoint coordinator: when to trigger, when a checkpoint is complete, what to
//! abort and which old checkpoints to delete.
//!
//! A pure state machine, like Flink's `CheckpointCoordinator` without the I/O: the job
//! calls [`CheckpointCoordinator::tick`] with the time, reports acknowledgements and
//! declines from its tasks, and carries out the [`Command`]s it takes from
//! [`CheckpointCoordinator::next_command`] (inject barriers at the sources, publish a
//! manifest, delete a folder).
//!
//! - A checkpoint is triggered every [`CoordinatorConfig::interval`], while fewer than
//!   [`CoordinatorConfig::max_concurrent`] are in flight.
//! - It completes when every task acknowledged it. Older checkpoints still in flight are
//!   then aborted (the newer one subsumes them).
//! - It is aborted when a task declines it or when it is older than
//!   [`CoordinatorConfig::timeout`].
//! - The last [`CoordinatorConfig::retain`] completed checkpoints are kept; an older one
//!   is discarded only once a newer one completed, so a completed checkpoint always
//!   exists after the first.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use sabot_core::{CheckpointBarrier, CheckpointId, Timestamp};

use crate::{CheckpointError, Result};

/// When and how often to checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorConfig {
    /// Time between two triggers (default 10 s).
    pub interval: Duration,
    /// A checkpoint not complete after this long is aborted (default 10 min).
    pub timeout: Duration,
    /// Checkpoints in flight at once (default 1).
    pub max_concurrent: usize,
    /// Completed checkpoints kept (default 3, at least 1).
    pub retain: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(600),
            max_concurrent: 1,
            retain: 3,
        }
    }
}

impl CoordinatorConfig {
    /// Every `interval`, otherwise the defaults.
    pub fn every(interval: Duration) -> Self {
        CoordinatorConfig {
            interval,
            ..CoordinatorConfig::default()
        }
    }

    /// Sets [`CoordinatorConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`CoordinatorConfig::max_concurrent`] (at least 1).
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// Sets [`CoordinatorConfig::retain`] (at least 1).
    pub fn with_retain(mut self, n: usize) -> Self {
        self.retain = n.max(1);
        self
    }
}

/// What the job must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a checkpoint: inject this barrier at every source.
    Trigger(CheckpointBarrier),
    /// Every task acknowledged: publish the checkpoint (its manifest).
    Complete(CheckpointId),
    /// Give the checkpoint up: delete whatever its tasks wrote.
    Abort(CheckpointId, AbortCause),
    /// A completed checkpoint no longer retained: delete it.
    Discard(CheckpointId),
}

/// Why a checkpoint was aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// It took longer than the timeout.
    Timeout,
    /// A task could not take its part.
    Declined {
        /// The task.
        task: usize,
        /// Its reason.
        reason: String,
    },
    /// A newer checkpoint completed first.
    Subsumed,
}

#[derive(Debug)]
struct Pending {
    triggered_at: i64,
    acked: Vec<bool>,
    missing: usize,
}

/// Decides checkpoints for a job whose `tasks` tasks each acknowledge every checkpoint.
#[derive(Debug)]
pub struct CheckpointCoordinator {
    config: CoordinatorConfig,
    tasks: usize,
    next_id: u64,
    pending: BTreeMap<CheckpointId, Pending>,
    completed: VecDeque<CheckpointId>,
    last_trigger: Option<i64>,
    out: VecDeque<Command>,
}

impl CheckpointCoordinator {
    /// A coordinator for `tasks` acknowledging tasks. `completed` are the checkpoints
    /// already complete (oldest first; say the one restored from): ids continue after
    /// them, and they count towards [`CoordinatorConfig::retain`].
    pub fn new(tasks: usize, config: CoordinatorConfig, completed: &[CheckpointId]) -> Self {
        CheckpointCoordinator {
            next_id: completed.iter().map(|c| c.0 + 1).max().unwrap_or(1),
            completed: completed.iter().copied().collect(),
            config,
            tasks,
            pending: BTreeMap::new(),
            last_trigger: None,
            out: VecDeque::new(),
        }
    }

    /// Checkpoints in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The newest completed checkpoint.
    pub fn latest_completed(&self) -> Option<CheckpointId> {
        self.completed.back().copied()
    }

    /// Time moved to `now_ms`: aborts timed-out checkpoints and triggers one if due.
    pub fn tick(&mut self, now_ms: i64) {
        let timeout = self.config.timeout.as_millis() as i64;
        let expired: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.triggered_at) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.pending.remove(&id);
            self.out.push_back(Command::Abort(id, AbortCause::Timeout));
        }
        let due = self
            .last_trigger
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.config.interval.as_millis() as i64);
        if due && self.pending.len() < self.config.max_concurrent.max(1) {
            let id = CheckpointId(self.next_id);
            self.next_id += 1;
            self.last_trigger = Some(now_ms);
            self.pending.insert(
                id,
                Pending {
                    triggered_at: now_ms,
                    acked: vec![false; self.tasks],
                    missing: self.tasks,
                },
            );
            self.out.push_back(Command::Trigger(CheckpointBarrier {
                id,
                triggered_at: Timestamp::from_millis(now_ms),
            }));
            if self.tasks == 0 {
                self.complete(id);
            }
        }
    }

    /// Makes the next [`tick`](Self::tick) trigger a checkpoint whatever the interval, as
    /// soon as fewer than [`CoordinatorConfig::max_concurrent`] are in flight (the final
    /// checkpoint at the end of input).
    pub fn trigger_asap(&mut self) {
        self.last_trigger = None;
    }

    /// The checkpoints in flight that `task` has not acknowledged (oldest first): those a
    /// task that has ended can no longer take part in.
    pub fn unacknowledged_by(&self, task: usize) -> Vec<CheckpointId> {
        self.pending
            .iter()
            .filter(|(_, p)| !p.acked.get(task).copied().unwrap_or(true))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Task `task` finished its part of checkpoint `id`. Acknowledgements of checkpoints
    /// no longer in flight (aborted, subsumed) are ignored; a task acknowledging twice,
    /// or a task the job does not have, is an error.
    pub fn acknowledge(&mut self, task: usize, id: CheckpointId) -> Result<()> {
        let tasks = self.tasks;
        let Some(p) = self.pending.get_mut(&id) else {
            return self.check_task(task);
        };
        let slot = p
            .acked
            .get_mut(task)
            .ok_or_else(|| CheckpointError::Protocol {
                reason: format!("acknowledgement from task {task}, but the job has {tasks} tasks"),
            })?;
        if *slot {
            return Err(CheckpointError::Protocol {
                reason: format!("task {task} acknowledged {id} twice"),
            });
        }
        *slot = true;
        p.missing -= 1;
        if p.missing == 0 {
            self.complete(id);
        }
        Ok(())
    }

    /// Task `task` cannot take its part of checkpoint `id`: the checkpoint is aborted.
    pub fn decline(
        &mut self,
        task: usize,
        id: CheckpointId,
        reason: impl Into<String>,
    ) -> Result<()> {
        self.check_task(task)?;
        if self.pending.remove(&id).is_some() {
            self.out.push_back(Command::Abort(
                id,
                AbortCause::Declined {
                    task,
                    reason: reason.into(),
                },
            ));
        }
        Ok(())
    }

    /// The next thing to do, if any.
    pub fn next_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    fn check_task(&self, task: usize) -> Result<()> {
        if task >= self.tasks {
            return Err(CheckpointError::Protocol {
                reason: format!(
                    "message from task {task}, but the job has {} tasks",
                    self.tasks
                ),
            });
        }
        Ok(())
    }

    fn complete(&mut self, id: CheckpointId) {
        self.pending.remove(&id);
        self.out.push_back(Command::Complete(id));
        let older: Vec<CheckpointId> = self.pending.range(..id).map(|(i, _)| *i).collect();
        for old in older {
            self.pending.remove(&old);
            self.out
                .push_back(Command::Abort(old, AbortCause::Subsumed));
        }
        self.completed.push_back(id);
        while self.completed.len() > self.config.retain.max(1) {
            if let Some(old) = self.completed.pop_front() {
                self.out.push_back(Command::Discard(old));
            }
        }
    }
}
