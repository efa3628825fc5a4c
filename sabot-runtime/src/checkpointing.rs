//! Checkpoints in a running job: the coordinator thread, the messages it sends the tasks
//! (each task's [`Inbox`]), and what tasks report back.
//!
//! Files in a checkpoint's folder (see `sabot_checkpoint::storage` for the folder):
//! `source-<node>-<subtask>.pos` (a source subtask's position) and
//! `op-<node>-<subtask>/` (an operator subtask's snapshot). The manifest's metadata holds
//! `job`, `parallelism` and `max_parallelism`.

use sabot_core::ErrorChain;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sabot_checkpoint::storage::{
    CheckpointStorage, CheckpointWriter, ChecksumCache, FileEntry, Manifest, SnapshotTarget, Store,
};
use sabot_core::codec::{Codec, CodecError};

use crate::network::{ControlSender, Network};
use sabot_checkpoint::{
    CheckpointCoordinator, CheckpointingMode, Command, Control, CoordinatorConfig, Inbox,
};
use sabot_core::CheckpointId;
use sabot_operators::SnapshotWrite;
use sabot_time::Clock;

use crate::{Result, RuntimeError};

/// Checkpointing settings of a job.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckpointSettings {
    /// The checkpoint folder. A job started on a folder that holds a complete checkpoint
    /// continues from the newest one. Sinks keep their own files here too (staged
    /// output, transaction logs), also when the checkpoints go to another
    /// [`store`](CheckpointSettings::store).
    pub dir: PathBuf,
    /// Where the checkpoints are written, if not into `dir` (a [`LocalStore`] on `dir`,
    /// the default): any [`Store`], as object storage.
    ///
    /// [`LocalStore`]: sabot_checkpoint::storage::LocalStore
    pub store: Option<Arc<dyn Store>>,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Exactly-once (aligned barriers, the default) or at-least-once.
    pub mode: CheckpointingMode,
    /// Completed checkpoints kept (default 3).
    pub retain: usize,
    /// A checkpoint not complete after this long is aborted (default 10 min).
    pub timeout: Duration,
    /// Messages a task holds back while aligning barriers before it gives the
    /// checkpoint up (default 10,000).
    pub max_buffered: usize,
    /// Continue from this checkpoint instead of the newest one (default: none). For a
    /// user's explicit choice after the newest checkpoint was found damaged: output
    /// committed after this checkpoint is not rolled back (the transactional file sink
    /// refuses to start while it holds such output).
    pub restore_from: Option<CheckpointId>,
}

impl CheckpointSettings {
    /// Exactly-once checkpoints into `dir` every `interval`.
    pub fn new(dir: impl Into<PathBuf>, interval: Duration) -> Self {
        CheckpointSettings {
            dir: dir.into(),
            store: None,
            interval,
            mode: CheckpointingMode::ExactlyOnce,
            retain: 3,
            timeout: Duration::from_secs(600),
            max_buffered: 10_000,
            restore_from: None,
        }
    }

    /// Continues from checkpoint `id` instead of the newest one (see
    /// [`restore_from`](CheckpointSettings::restore_from)).
    pub fn with_restore_from(mut self, id: CheckpointId) -> Self {
        self.restore_from = Some(id);
        self
    }

    /// Writes the checkpoints into `store` instead of the folder.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The job's checkpoint storage: the [`store`](CheckpointSettings::store), or the
    /// folder.
    pub fn storage(&self) -> sabot_checkpoint::Result<CheckpointStorage> {
        match &self.store {
            Some(store) => Ok(CheckpointStorage::new(store.clone())),
            None => CheckpointStorage::open(&self.dir),
        }
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: CheckpointingMode) -> Self {
        self.mode = mode;
        self
    }
}

/// What a task tells the coordinator.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The task's part of the checkpoint is written: these files.
    Ack(usize, CheckpointId, Vec<FileEntry>),
    Decline(usize, CheckpointId, String),
    Finished(usize),
    /// A source subtask reached the end of its input (once per subtask).
    SourceEnded,
}

impl Codec for Report {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Report::Ack(task, id, entries) => {
                out.push(1);
                (*task as u64).encode(out);
                id.0.encode(out);
                (entries.len() as u32).encode(out);
                entries.iter().for_each(|e| e.encode(out));
            }
            Report::Decline(task, id, reason) => {
                out.push(2);
                (*task as u64).encode(out);
                id.0.encode(out);
                reason.encode(out);
            }
            Report::Finished(task) => {
                out.push(3);
                (*task as u64).encode(out);
            }
            Report::SourceEnded => out.push(4),
        }
    }

    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        let task = |input: &mut &[u8]| -> std::result::Result<usize, CodecError> {
            usize::try_from(u64::decode(input)?)
                .map_err(|_| CodecError::new("task number too large"))
        };
        Ok(match u8::decode(input)? {
            1 => {
                let (t, id) = (task(input)?, CheckpointId(u64::decode(input)?));
                let n = u32::decode(input)? as usize;
                // Each entry takes at least 16 bytes: garbage cannot make us allocate more
                // than the input.
                if n.saturating_mul(16) > input.len() {
                    return Err(CodecError::new(format!(
                        "{n} file entries announced, {} bytes left",
                        input.len()
                    )));
                }
                let entries = (0..n)
                    .map(|_| FileEntry::decode(input))
                    .collect::<std::result::Result<_, _>>()?;
                Report::Ack(t, id, entries)
            }
            2 => Report::Decline(
                task(input)?,
                CheckpointId(u64::decode(input)?),
                String::decode(input)?,
            ),
            3 => Report::Finished(task(input)?),
            4 => Report::SourceEnded,
            t => {
                return Err(CodecError::new(format!(
                    "unknown checkpoint report (tag {t})"
                )));
            }
        })
    }
}

/// A checkpoint message between workers: a task's report (to the worker that runs the
/// coordinator) or a control (from it).
const REPORT: u8 = b'R';
const CONTROL: u8 = b'C';

/// How the checkpoints of a job split over processes travel: worker 0 runs the
/// coordinator; the others send it their tasks' reports and take its controls, over
/// the network's control messages.
pub(crate) struct Placement<'a> {
    pub(crate) network: &'a Network,
    /// This worker.
    pub(crate) me: usize,
    /// Every worker.
    pub(crate) workers: usize,
    /// Which of the job's tasks run here.
    pub(crate) local: Vec<bool>,
}

/// What the coordinator and the tasks share: every task's inbox, and whether the job
/// failed (for the snapshot thread, which then writes nothing more).
///
/// The end of input (as Flink's final checkpoint, FLIP-147): a source subtask whose
/// input ended reports it and keeps injecting barriers; once every source subtask has,
/// the coordinator triggers a *final* checkpoint (its barrier message says so), after
/// which the sources send end of stream. Tasks wait for that checkpoint's completion
/// message before they end, and only then do sinks commit the last of their output, so
/// everything a job ever commits is covered by a completed checkpoint: a run restarted
/// on the folder after any crash, even one during the end of input, neither loses nor
/// repeats output.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Task `t`'s inbox.
    inboxes: Vec<Arc<Inbox>>,
    /// Whether task `t` runs in this process (controls go only to those).
    local: Vec<bool>,
    /// The other workers, on the worker that runs the coordinator: its controls go to
    /// their tasks too.
    peers: Vec<ControlSender>,
    /// A subtask failed: tasks waiting on the protocol stop.
    job_failed: AtomicBool,
}

impl Signals {
    fn new(tasks: usize, local: Option<Vec<bool>>, peers: Vec<ControlSender>) -> Self {
        Signals {
            inboxes: (0..tasks).map(|_| Arc::new(Inbox::new())).collect(),
            local: local.unwrap_or_else(|| vec![true; tasks]),
            peers,
            job_failed: AtomicBool::new(false),
        }
    }

    /// Sends `c` to every task of the job.
    fn broadcast(&self, c: &Control) {
        // The other workers first: this worker's tasks may end (and stop its network)
        // as soon as they see a final completion.
        if !self.peers.is_empty() {
            let mut bytes = vec![CONTROL];
            c.encode(&mut bytes);
            for peer in &self.peers {
                if let Err(e) = peer.send(&bytes) {
                    tracing::warn!(error = %ErrorChain(&e), "a worker did not take a checkpoint control");
                }
            }
        }
        self.post_local(c);
    }

    /// Sends `c` to the tasks of this process.
    fn post_local(&self, c: &Control) {
        for (inbox, _) in self.inboxes.iter().zip(&self.local).filter(|(_, l)| **l) {
            inbox.post(c.clone());
        }
    }

    /// A subtask failed: every task is told to stop (once).
    pub(crate) fn fail_job(&self) {
        if !self.job_failed.swap(true, Ordering::AcqRel) {
            self.broadcast(&Control::Cancel);
        }
    }

    pub(crate) fn job_failed(&self) -> bool {
        self.job_failed.load(Ordering::Acquire)
    }
}

/// Work for the snapshot thread, done in the order the tasks sent it, so a task's
/// acknowledgement of a checkpoint follows the writing of its snapshots.
enum WriterJob {
    /// An operator's snapshot (task, checkpoint, its deferred part if any, its target):
    /// once written, its files are recorded for the acknowledgement.
    Snapshot(usize, CheckpointId, Option<SnapshotWrite>, SnapshotTarget),
    /// A file the task wrote itself (a source's position).
    File(usize, CheckpointId, FileEntry),
    /// The task's part of the checkpoint is done once its writes are.
    Ack(usize, CheckpointId),
    /// The task ended.
    Finished(usize),
}

/// The snapshot thread: writes what operators deferred (their asynchronous snapshot
/// phase) while their tasks go on processing, records the files each task wrote, then
/// acknowledges for the task with those files (so completing the checkpoint reads
/// nothing again), or declines the checkpoint if a write failed.
fn run_writer(jobs: Receiver<WriterJob>, reports: Sender<Report>, signals: Arc<Signals>) {
    // Checkpoints with a failed write: every acknowledgement of one becomes a decline.
    let mut failed: BTreeMap<CheckpointId, String> = BTreeMap::new();
    let mut files: BTreeMap<(usize, CheckpointId), Vec<FileEntry>> = BTreeMap::new();
    let mut cache = ChecksumCache::default();
    for job in jobs {
        match job {
            WriterJob::Snapshot(task, id, w, target) => {
                if signals.job_failed() {
                    // Nothing will complete: the job is stopping.
                    continue;
                }
                let written = w.map_or(Ok(()), |w| w.run().map_err(|e| ErrorChain(&e).to_string()));
                let recorded = written.and_then(|()| {
                    target
                        .finish(&mut cache)
                        .map_err(|e| ErrorChain(&e).to_string())
                });
                match recorded {
                    Ok(entries) => files.entry((task, id)).or_default().extend(entries),
                    Err(e) => {
                        tracing::warn!(checkpoint = %id, task, error = %e, "asynchronous snapshot failed");
                        failed.insert(id, e);
                    }
                }
            }
            WriterJob::File(task, id, entry) => files.entry((task, id)).or_default().push(entry),
            WriterJob::Ack(task, id) => {
                let entries = files.remove(&(task, id)).unwrap_or_default();
                let r = if signals.job_failed() {
                    Report::Decline(task, id, "the job failed".into())
                } else if let Some(reason) = failed.get(&id) {
                    Report::Decline(task, id, reason.clone())
                } else {
                    Report::Ack(task, id, entries)
                };
                let _ = reports.send(r);
            }
            WriterJob::Finished(task) => {
                let _ = reports.send(Report::Finished(task));
            }
        }
    }
}

/// A task's handle on checkpointing.
#[derive(Clone, Debug)]
pub(crate) struct TaskCheckpoints {
    pub(crate) storage: CheckpointStorage,
    pub(crate) signals: Arc<Signals>,
    pub(crate) mode: CheckpointingMode,
    pub(crate) max_buffered: usize,
    reports: Sender<Report>,
    writer: Sender<WriterJob>,
    pub(crate) task: usize,
}

impl std::fmt::Debug for WriterJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterJob::Snapshot(t, id, _, target) => {
                write!(f, "Snapshot({t}, {id}, {})", target.location("").display())
            }
            WriterJob::File(t, id, e) => write!(f, "File({t}, {id}, {})", e.path),
            WriterJob::Ack(t, id) => write!(f, "Ack({t}, {id})"),
            WriterJob::Finished(t) => write!(f, "Finished({t})"),
        }
    }
}

impl TaskCheckpoints {
    pub(crate) fn for_task(&self, task: usize) -> TaskCheckpoints {
        TaskCheckpoints {
            task,
            ..self.clone()
        }
    }

    /// Where an operator's snapshot `folder` of checkpoint `id` goes.
    pub(crate) fn target(&self, id: CheckpointId, folder: &str) -> SnapshotTarget {
        self.storage.snapshot_target(id, folder)
    }

    /// Hands an operator's snapshot for `id` (its deferred part, if any, and its
    /// target) to the snapshot thread.
    pub(crate) fn snapshot(
        &self,
        id: CheckpointId,
        w: Option<SnapshotWrite>,
        target: SnapshotTarget,
    ) {
        let _ = self
            .writer
            .send(WriterJob::Snapshot(self.task, id, w, target));
    }

    /// Writes file `name` of checkpoint `id` (a source's position) and records it.
    pub(crate) fn put(&self, id: CheckpointId, name: &str, bytes: &[u8]) -> Result<()> {
        let entry = self.storage.put(id, name, bytes)?;
        let _ = self.writer.send(WriterJob::File(self.task, id, entry));
        Ok(())
    }

    /// The task's part of `id` is done once what it handed to the snapshot thread is.
    pub(crate) fn ack(&self, id: CheckpointId) {
        let _ = self.writer.send(WriterJob::Ack(self.task, id));
    }

    pub(crate) fn decline(&self, id: CheckpointId, reason: String) {
        let _ = self.reports.send(Report::Decline(self.task, id, reason));
    }

    pub(crate) fn finished(&self) {
        let _ = self.writer.send(WriterJob::Finished(self.task));
    }

    /// The task's inbox: barriers to inject (sources), completions, cancellation.
    pub(crate) fn inbox(&self) -> &Inbox {
        &self.signals.inboxes[self.task]
    }

    /// A source subtask's input ended.
    pub(crate) fn source_ended(&self) {
        let _ = self.reports.send(Report::SourceEnded);
    }
}

/// On a worker without the coordinator: sends its tasks' reports to worker 0 until
/// stopped (after the tasks ended) or every sender is gone.
fn forward_reports(rx: &Receiver<Report>, leader: &ControlSender, stop: &AtomicBool) -> Result<()> {
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => {
                let mut bytes = vec![REPORT];
                r.encode(&mut bytes);
                if let Err(e) = leader.send(&bytes) {
                    tracing::warn!(error = %ErrorChain(&e), report = ?r, "the coordinator's worker did not take a checkpoint report");
                }
            }
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Acquire) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// The running coordinator: a thread deciding checkpoints.
#[derive(Debug)]
pub(crate) struct CoordinatorThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    /// Ends once every task has (they hold its queue).
    writer: Option<JoinHandle<()>>,
    completed: Arc<Mutex<Vec<CheckpointId>>>,
}

impl CoordinatorThread {
    /// Starts deciding checkpoints for `tasks` tasks; returns the handle tasks use.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        settings: &CheckpointSettings,
        storage: CheckpointStorage,
        tasks: usize,
        sources: usize,
        restored: Option<&Manifest>,
        clock: Arc<dyn Clock>,
        meta: BTreeMap<String, String>,
        placement: Option<Placement<'_>>,
    ) -> Result<(CoordinatorThread, TaskCheckpoints)> {
        let (reports, rx) = std::sync::mpsc::channel();
        let peers = match &placement {
            Some(pl) if pl.me == 0 => (1..pl.workers)
                .map(|w| pl.network.control_to(w))
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        let signals = Arc::new(Signals::new(
            tasks,
            placement.as_ref().map(|p| p.local.clone()),
            peers,
        ));
        let config = CoordinatorConfig::every(settings.interval)
            .with_timeout(settings.timeout)
            .with_retain(settings.retain);
        let mut done: Vec<CheckpointId> = storage.completed()?.iter().map(|m| m.id).collect();
        // New checkpoints are numbered past every published one, a damaged one too: the
        // newest published checkpoint must stay the newest id.
        done.extend(storage.newest_published()?);
        done.sort();
        done.dedup();
        let coordinator = CheckpointCoordinator::new(tasks, config, &done);
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(Mutex::new(Vec::new()));
        let (writer, jobs) = std::sync::mpsc::channel();
        let writer_thread = {
            let (reports, signals) = (reports.clone(), signals.clone());
            std::thread::Builder::new()
                .name("sabot-snapshots".into())
                .spawn(move || run_writer(jobs, reports, signals))
                .map_err(|source| RuntimeError::Spawn {
                    task: "snapshot writer".into(),
                    source,
                })?
        };
        let handle = TaskCheckpoints {
            storage: storage.clone(),
            signals: signals.clone(),
            mode: settings.mode,
            max_buffered: settings.max_buffered,
            reports: reports.clone(),
            writer,
            task: 0,
        };
        match &placement {
            Some(pl) if pl.me == 0 => {
                // The other workers' reports join this worker's.
                pl.network.on_control(Arc::new(move |m: &[u8]| {
                    let Some((&REPORT, mut body)) = m.split_first() else {
                        return Err("not a checkpoint report".to_string());
                    };
                    let r = Report::decode(&mut body).map_err(|e| e.to_string())?;
                    reports
                        .send(r)
                        .map_err(|_| "the checkpoint coordinator stopped".to_string())
                }));
            }
            Some(pl) => {
                // Worker 0 runs the coordinator: its controls come in, this worker's
                // reports go out.
                let local = signals.clone();
                pl.network.on_control(Arc::new(move |m: &[u8]| {
                    let Some((&CONTROL, mut body)) = m.split_first() else {
                        return Err("not a checkpoint control".to_string());
                    };
                    let c = Control::decode(&mut body).map_err(|e| e.to_string())?;
                    local.post_local(&c);
                    Ok(())
                }));
                let leader = pl.network.control_to(0)?;
                let stop = Arc::new(AtomicBool::new(false));
                let until = stop.clone();
                let thread = std::thread::Builder::new()
                    .name("sabot-checkpoint-reports".into())
                    .spawn(move || forward_reports(&rx, &leader, &until))
                    .map_err(|source| RuntimeError::Spawn {
                        task: "checkpoint reports".into(),
                        source,
                    })?;
                return Ok((
                    CoordinatorThread {
                        stop,
                        thread: Some(thread),
                        writer: Some(writer_thread),
                        completed: Arc::new(Mutex::new(Vec::new())),
                    },
                    handle,
                ));
            }
            None => drop(reports),
        }
        if let Some(m) = restored {
            tracing::info!(checkpoint = %m.id, "restored from checkpoint");
        }
        let failed = signals.clone();
        let run = Loop {
            coordinator,
            storage,
            signals,
            rx,
            stop: stop.clone(),
            tasks,
            finished: 0,
            writers: BTreeMap::new(),
            aborted: Vec::new(),
            clock,
            meta,
            sources,
            sources_ended: 0,
            final_id: None,
            tick: (settings.interval / 10)
                .clamp(Duration::from_millis(1), Duration::from_millis(50)),
            completed: completed.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sabot-checkpoints".into())
            .spawn(move || {
                let r = run.run();
                if let Err(e) = &r {
                    // Tasks waiting for the final checkpoint must not wait forever.
                    tracing::error!(error = %ErrorChain(&e), "checkpoint coordinator failed");
                    failed.fail_job();
                }
                r
            })
            .map_err(|source| RuntimeError::Spawn {
                task: "checkpoint coordinator".into(),
                source,
            })?;
        Ok((
            CoordinatorThread {
                stop,
                thread: Some(thread),
                writer: Some(writer_thread),
                completed,
            },
            handle,
        ))
    }

    /// Stops the coordinator (after the tasks ended) and returns the checkpoints it
    /// completed, or its error.
    pub(crate) fn stop(mut self) -> Result<Vec<CheckpointId>> {
        // The tasks have ended: the snapshot thread finishes what they handed it.
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            return Err(RuntimeError::Panicked {
                task: "snapshot writer".into(),
                message: "panicked".into(),
            });
        }
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(_) => {
                    return Err(RuntimeError::Panicked {
                        task: "checkpoint coordinator".into(),
                        message: "panicked".into(),
                    });
                }
            }
        }
        Ok(std::mem::take(
            &mut *self.completed.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl Drop for CoordinatorThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Loop {
    coordinator: CheckpointCoordinator,
    storage: CheckpointStorage,
    signals: Arc<Signals>,
    rx: Receiver<Report>,
    stop: Arc<AtomicBool>,
    tasks: usize,
    finished: usize,
    writers: BTreeMap<CheckpointId, CheckpointWriter>,
    /// Aborted checkpoints whose folders tasks may still be writing into: deleted once a
    /// newer checkpoint completed (every task is past them then) or at the end.
    aborted: Vec<CheckpointId>,
    clock: Arc<dyn Clock>,
    meta: BTreeMap<String, String>,
    /// Source subtasks of the job, and how many reported the end of their input: once
    /// all have, the next checkpoint triggered is the final one.
    sources: usize,
    sources_ended: usize,
    /// The final checkpoint, once triggered.
    final_id: Option<CheckpointId>,
    tick: Duration,
    completed: Arc<Mutex<Vec<CheckpointId>>>,
}

impl Loop {
    fn run(mut self) -> Result<()> {
        while !self.stop.load(Ordering::Acquire) && self.finished < self.tasks {
            match self.rx.recv_timeout(self.tick) {
                Ok(r) => self.report(r)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Once a task has ended it can take part in no new checkpoint (it ends after
            // the final checkpoint, or because the job failed): no new one starts. Nor
            // after the final checkpoint was triggered: tasks end once it completes, and
            // a later one could only be declined.
            if self.finished == 0 && self.final_id.is_none() {
                self.coordinator.tick(self.clock.now_ms());
            }
            self.commands()?;
        }
        // The tasks have stopped: whatever is still in flight will not complete.
        let left: Vec<CheckpointId> = std::mem::take(&mut self.writers).into_keys().collect();
        for id in left.into_iter().chain(std::mem::take(&mut self.aborted)) {
            self.discard(id);
        }
        Ok(())
    }

    /// Deletes a checkpoint folder; a failure leaves garbage, not a broken job.
    fn discard(&self, id: CheckpointId) {
        if let Err(e) = self.storage.discard(id) {
            tracing::warn!(checkpoint = %id, error = %ErrorChain(&e), "could not delete a checkpoint folder");
        }
    }

    fn report(&mut self, r: Report) -> Result<()> {
        match r {
            Report::Ack(task, id, entries) => {
                self.coordinator.acknowledge(task, id)?;
                if let Some(w) = self.writers.get_mut(&id) {
                    w.record(entries);
                }
            }
            Report::Decline(task, id, reason) => self.coordinator.decline(task, id, reason)?,
            Report::SourceEnded => {
                self.sources_ended += 1;
                if self.sources_ended == self.sources {
                    self.coordinator.trigger_asap();
                }
            }
            Report::Finished(task) => {
                tracing::debug!(task, "task finished: no new checkpoints");
                self.finished += 1;
                // It acknowledges nothing any more: what it still owes cannot complete.
                for id in self.coordinator.unacknowledged_by(task) {
                    self.coordinator.decline(task, id, "a task finished")?;
                }
            }
        }
        Ok(())
    }

    fn commands(&mut self) -> Result<()> {
        while let Some(cmd) = self.coordinator.next_command() {
            match cmd {
                Command::Trigger(b) => {
                    // The folder exists before any task writes into it.
                    self.writers.insert(b.id, self.storage.begin(b.id)?);
                    let last = self.final_id.is_none() && self.sources_ended >= self.sources;
                    if last {
                        self.final_id = Some(b.id);
                        tracing::debug!(checkpoint = %b.id, "final checkpoint triggered");
                    }
                    // Sources inject it; other tasks get it in their input and ignore
                    // the message.
                    self.signals
                        .broadcast(&Control::Barrier { barrier: b, last });
                    tracing::debug!(checkpoint = %b.id, "checkpoint triggered");
                }
                Command::Complete(id) => {
                    if let Some(w) = self.writers.remove(&id) {
                        // Every file is in the tasks' acknowledgements: nothing is read.
                        let m = w.commit(self.clock.now_ms(), self.meta.clone())?;
                        tracing::info!(checkpoint = %id, files = m.files.len(), bytes = m.bytes(), "checkpoint complete");
                        self.completed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(id);
                        self.signals.broadcast(&Control::Completed {
                            id,
                            last: self.final_id == Some(id),
                        });
                        // Every task passed this barrier: none writes into older folders.
                        let (old, newer): (Vec<_>, Vec<_>) =
                            self.aborted.drain(..).partition(|a| *a < id);
                        self.aborted = newer;
                        for a in old {
                            self.discard(a);
                        }
                    }
                }
                Command::Abort(id, cause) => {
                    tracing::info!(checkpoint = %id, ?cause, "checkpoint aborted");
                    // Only the final checkpoint's own abort fails the end of the job (one
                    // triggered before it, or still in flight, does not).
                    if self.final_id == Some(id) {
                        self.signals.broadcast(&Control::FinalAborted(format!(
                            "final checkpoint {id} aborted: {cause:?}"
                        )));
                    }
                    self.writers.remove(&id);
                    self.aborted.push(id);
                }
                Command::Discard(id) => self.discard(id),
            }
        }
        Ok(())
    }
}
