//! Building a job graph into runnable subtasks, and running them.

use sabot_core::ErrorChain;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::network::{Channel, Network};
use sabot_checkpoint::{CheckpointLayout, GraphFingerprint, JobMeta};
use sabot_core::key::check_parallelism;
use sabot_core::metrics::Metrics;
use sabot_core::{CoreError, SchemaRef, Timestamp};
use sabot_operators::{Output, TaskContext, TwoInputOperatorFactory};
use sabot_shuffle::queue::{self, FanInReceiver};
use sabot_shuffle::{BroadcastPartitioner, HashPartitioner, RoundRobinPartitioner};
use sabot_time::SharedWatermark;

use crate::checkpointing::{CoordinatorThread, TaskCheckpoints};
use crate::graph::{JobConfig, JobGraph, NodeId, NodeKind, Partitioning};
use crate::task::{self, ChainNode, Envelope, ExchangeWriter, Partitioner, Target, Ticker};
use crate::{Result, RuntimeError};

/// The exchanges' senders not yet taken: `[exchange][downstream][upstream]`.
type Senders = BTreeMap<usize, Vec<Vec<Option<Target>>>>;
/// Per task reading exchanges (by head node): its fan-in per subtask (`None` where the
/// subtask runs on another worker).
type Receivers = BTreeMap<usize, Vec<Option<FanInReceiver<Envelope>>>>;

/// Takes upstream subtask `me`'s sender to every downstream subtask of `exchange`.
fn take_senders(senders: &mut Senders, exchange: usize, me: usize) -> Result<Vec<Target>> {
    let missing = || RuntimeError::InvalidGraph {
        reason: format!("exchange {exchange} reached twice from subtask {me}"),
    };
    senders
        .get_mut(&exchange)
        .ok_or_else(missing)?
        .iter_mut()
        .map(|per_upstream| per_upstream.get_mut(me).and_then(Option::take))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(missing)
}

/// Counter: records emitted by all sources.
pub const SOURCE_RECORDS: &str = "source.records";
/// Counter: records received by all sinks.
pub const SINK_RECORDS: &str = "sink.records";
/// Histogram: the age in microseconds of each latency marker when it reached a sink:
/// how long everything a source emitted before it took to get through the job (queues,
/// exchanges and operators; not the time rows wait in windows). Sources emit one after
/// a batch every [`LATENCY_MARKER_INTERVAL`].
pub const SINK_LATENCY_US: &str = "sink.latency_us";
/// How often a source subtask emits a latency marker (after its next batch).
pub const LATENCY_MARKER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// A validated job, ready to run: every schema is known and every operator accepted its
/// settings.
#[derive(Debug)]
pub struct Job {
    graph: JobGraph,
    /// Output schema of every node.
    schemas: Vec<SchemaRef>,
    children: Vec<Vec<NodeId>>,
}

impl JobGraph {
    /// Validates the graph and every operator's settings against the schemas flowing
    /// into it. Every configuration mistake (a missing column, a key of an unsupported
    /// type, a parallelism of 0, a job without sink) is reported here, before anything
    /// runs.
    pub fn build(self) -> Result<Job> {
        let c = &self.config;
        check_parallelism(c.parallelism, c.max_parallelism)?;
        if let Some(cluster) = &c.cluster {
            let workers = cluster.workers.len();
            let reason = if workers == 0 {
                Some("the worker list is empty".to_string())
            } else if cluster.me >= workers {
                Some(format!(
                    "this worker's index {} is not below the number of workers {workers}",
                    cluster.me
                ))
            } else if let Some(owners) = &cluster.owners {
                if owners.len() != c.parallelism {
                    Some(format!(
                        "{} subtasks placed for parallelism {}",
                        owners.len(),
                        c.parallelism
                    ))
                } else if let Some((s, w)) = owners.iter().enumerate().find(|(_, w)| **w >= workers)
                {
                    Some(format!("subtask {s} placed on worker {w} of {workers}"))
                } else {
                    (0..workers)
                        .find(|w| !owners.contains(w))
                        .map(|idle| format!("worker {idle} has no subtask"))
                }
            } else if c.parallelism < workers {
                Some(format!(
                    "parallelism {} leaves some of the {workers} workers without subtasks",
                    c.parallelism
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(CoreError::InvalidConfig {
                    name: "cluster".into(),
                    reason,
                }
                .into());
            }
        }
        if c.queue_capacity == 0 {
            return Err(CoreError::InvalidConfig {
                name: "queue_capacity".into(),
                reason: "must be at least 1".into(),
            }
            .into());
        }
        let mut schemas: Vec<SchemaRef> = Vec::with_capacity(self.nodes.len());
        let mut children = vec![Vec::new(); self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            let name = node.kind.name();
            let input = match node.input {
                Some(NodeId(i)) if i < id => {
                    children[i].push(NodeId(id));
                    Some(schemas[i].clone())
                }
                Some(NodeId(i)) => {
                    return Err(RuntimeError::InvalidGraph {
                        reason: format!("node `{name}` reads from unknown node {i}"),
                    });
                }
                None => None,
            };
            let schema = match (&node.kind, input) {
                (NodeKind::TwoInput(f), Some(left)) => {
                    let right = match node.input2 {
                        Some(NodeId(i)) if i < id => {
                            children[i].push(NodeId(id));
                            schemas[i].clone()
                        }
                        _ => {
                            return Err(RuntimeError::InvalidGraph {
                                reason: format!("`{name}` needs a second input"),
                            });
                        }
                    };
                    self.check_two_input(id, f.as_ref())?;
                    f.output_schema(&left, &right)
                        .map_err(|e| e.into_node(&name))?
                }
                (NodeKind::Source(f), None) => f.schema(),
                (NodeKind::Operator(f), Some(input)) => {
                    f.output_schema(&input).map_err(|e| e.into_node(&name))?
                }
                (NodeKind::Exchange(p), Some(input)) => {
                    if let Partitioning::Hash(keys) = p {
                        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                        HashPartitioner::new(&input, &keys, c.max_parallelism, c.parallelism)
                            .map_err(|e| RuntimeError::from(e).in_node(&name))?;
                    }
                    input
                }
                (NodeKind::SideOutput(tag), Some(_)) => {
                    let parent = node.input.map(|NodeId(i)| i).unwrap_or(0);
                    let NodeKind::Operator(f) = &self.nodes[parent].kind else {
                        return Err(RuntimeError::InvalidGraph {
                            reason: format!("`{name}` must read from an operator"),
                        });
                    };
                    let parent_input = self.nodes[parent]
                        .input
                        .map(|NodeId(i)| schemas[i].clone())
                        .ok_or_else(|| RuntimeError::InvalidGraph {
                            reason: format!("operator `{}` has no input", f.name()),
                        })?;
                    let declared = f
                        .side_outputs(&parent_input)
                        .map_err(|e| e.into_node(&name))?;
                    match declared.into_iter().find(|(t, _)| t == tag) {
                        Some((_, schema)) => schema,
                        None => {
                            return Err(RuntimeError::InvalidGraph {
                                reason: format!(
                                    "operator `{}` has no side output `{tag}`",
                                    f.name()
                                ),
                            });
                        }
                    }
                }
                (NodeKind::Sink(f), Some(input)) => {
                    f.check_schema(&input).map_err(|e| e.into_node(&name))?;
                    input
                }
                _ => {
                    return Err(RuntimeError::InvalidGraph {
                        reason: format!("node `{name}` has the wrong number of inputs"),
                    });
                }
            };
            schemas.push(schema);
        }
        // An exchange feeding a two-input operator feeds nothing else: its queues are
        // the operator's.
        for (id, node) in self.nodes.iter().enumerate() {
            if let NodeKind::TwoInput(_) = node.kind {
                for input in [node.input, node.input2].into_iter().flatten() {
                    if children[input.0].len() != 1 {
                        return Err(RuntimeError::InvalidGraph {
                            reason: format!(
                                "`{}` reads an exchange that also feeds other nodes: key the stream again for each of them",
                                self.nodes[id].kind.name()
                            ),
                        });
                    }
                }
            }
        }
        if !self
            .nodes
            .iter()
            .any(|n| matches!(n.kind, NodeKind::Sink(_)))
        {
            return Err(RuntimeError::InvalidGraph {
                reason: "the job has no sink: nothing would be written".into(),
            });
        }
        Ok(Job {
            graph: self,
            schemas,
            children,
        })
    }
}

impl JobGraph {
    /// Both inputs of two-input operator `id` are exchanges partitioned as it needs.
    fn check_two_input(&self, id: usize, f: &dyn TwoInputOperatorFactory) -> Result<()> {
        let node = &self.nodes[id];
        let wanted = f.partition_keys();
        for (side, input, keys) in [
            ("first", node.input, wanted.as_ref().map(|w| &w.0)),
            ("second", node.input2, wanted.as_ref().map(|w| &w.1)),
        ] {
            let Some(input) = input else { continue };
            let ok = match (&self.nodes[input.0].kind, keys) {
                (NodeKind::Exchange(Partitioning::Hash(k)), Some(keys)) => k == keys,
                (NodeKind::Exchange(_), None) => true,
                _ => false,
            };
            if !ok {
                return Err(RuntimeError::InvalidGraph {
                    reason: format!(
                        "the {side} input of `{}` must be an exchange{}",
                        f.name(),
                        keys.map(|k| format!(" partitioned by key_by({})", k.join(", ")))
                            .unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }
}

trait IntoNodeError {
    fn into_node(self, name: &str) -> RuntimeError;
}

impl IntoNodeError for sabot_operators::OperatorError {
    fn into_node(self, name: &str) -> RuntimeError {
        RuntimeError::from(self).in_node(name)
    }
}

/// What a finished job reports.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobResult {
    /// Wall-clock time from start to the last subtask's end.
    pub elapsed: Duration,
    /// Every counter of the job, by name.
    pub metrics: BTreeMap<String, u64>,
    /// Every histogram of the job (such as [`SINK_LATENCY_US`]), by name.
    pub histograms: BTreeMap<String, sabot_core::metrics::HistogramSnapshot>,
    /// The checkpoints this run completed.
    pub checkpoints: Vec<sabot_core::CheckpointId>,
    /// The checkpoint this run continued from.
    pub restored_from: Option<sabot_core::CheckpointId>,
}

impl JobResult {
    /// A counter's final value (0 if never created).
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics.get(name).copied().unwrap_or(0)
    }

    /// The `q`-quantile of the latency markers' age at the sinks, if any reached one.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        self.histograms
            .get(SINK_LATENCY_US)
            .and_then(|h| h.quantile(q))
            .map(Duration::from_micros)
    }
}

/// A running job.
#[derive(Debug)]
pub struct JobHandle {
    name: String,
    started: Instant,
    metrics: Metrics,
    watermarks: Vec<SharedWatermark>,
    threads: Vec<(String, JoinHandle<Result<()>>)>,
    /// Kept until every subtask ended: peers may still be sending to this worker.
    network: Option<Network>,
    coordinator: Option<CoordinatorThread>,
    restored_from: Option<sabot_core::CheckpointId>,
    /// The checkpoint folder's lock, held until the handle is dropped (after `join`).
    _folder_lock: Option<sabot_checkpoint::storage::StoreLock>,
}

impl JobHandle {
    /// The job's live counters (for progress display).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The job's event-time progress: the smallest watermark reached by the subtasks
    /// behind an exchange ([`Timestamp::MIN`] before any, or without exchanges).
    pub fn watermark(&self) -> Timestamp {
        self.watermarks
            .iter()
            .map(SharedWatermark::get)
            .min()
            .unwrap_or(Timestamp::MIN)
    }

    /// Whether every subtask has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// Waits for every subtask. If any failed, returns the error that caused the job to
    /// stop (not the follow-up errors of the subtasks it took down with it).
    pub fn join(mut self) -> Result<JobResult> {
        let network = self.network.take();
        let mut errors = Vec::new();
        for (task, t) in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(RuntimeError::Subtask {
                    task,
                    source: Box::new(e),
                }),
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    errors.push(RuntimeError::Panicked { task, message });
                }
            }
        }
        let elapsed = self.started.elapsed();
        if let Some(net) = &network
            && errors.is_empty()
        {
            // Peers wait for this worker's last replies to finish their channels (after
            // a failure nothing is worth waiting for: the peers fail too).
            net.drain(Duration::from_secs(5));
        }
        if let Some(net) = network {
            net.stop();
        }
        let checkpoints = match self.coordinator.take().map(CoordinatorThread::stop) {
            Some(Ok(done)) => done,
            Some(Err(e)) => {
                errors.push(e);
                Vec::new()
            }
            None => Vec::new(),
        };
        if let Some(i) = errors.iter().position(|e| !e.is_secondary()) {
            let e = errors.swap_remove(i);
            tracing::error!(job = %self.name, error = %ErrorChain(&e), "job failed");
            return Err(e);
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        tracing::info!(job = %self.name, ?elapsed, "job finished");
        Ok(JobResult {
            elapsed,
            metrics: self.metrics.snapshot(),
            histograms: self.metrics.histograms(),
            checkpoints,
            restored_from: self.restored_from,
        })
    }
}

/// Per-subtask wiring handed to its thread.
struct SubtaskPlan {
    name: String,
    ctx: TaskContext,
    input: SubtaskInput,
    chain: Vec<ChainNode>,
    checkpoints: Option<TaskCheckpoints>,
    /// A source's file name in a checkpoint and the positions to continue from.
    source: Option<(String, Option<Vec<Vec<u8>>>)>,
}

/// Starts a planned subtask on its own thread: its name, its thread, and the watermark
/// it publishes (a task reading exchanges).
fn spawn_subtask(
    plan: SubtaskPlan,
    records: sabot_core::metrics::Counter,
    tick_interval: Duration,
    p: usize,
) -> Result<(String, JoinHandle<Result<()>>, Option<SharedWatermark>)> {
    let SubtaskPlan {
        name,
        ctx,
        input,
        mut chain,
        checkpoints,
        source,
    } = plan;
    let published = SharedWatermark::new();
    let publishes = matches!(input, SubtaskInput::Exchange(..)).then(|| published.clone());
    let thread = std::thread::Builder::new()
        .name(format!("sabot-{name}"))
        .spawn(move || {
            tracing::debug!(task = %std::thread::current().name().unwrap_or(""), "subtask started");
            let mut ticker = Ticker::new(&ctx, tick_interval);
            let done = checkpoints.clone();
            let result = match input {
                SubtaskInput::Source(f) => {
                    let ck = checkpoints.zip(source).map(|(ckpt, (name, restore))| {
                        task::SourceCheckpoints {
                            ckpt,
                            name,
                            restore,
                        }
                    });
                    task::run_source(&f, &ctx, &mut chain, &records, &mut ticker, ck)
                }
                SubtaskInput::Exchange(rx, inputs) => task::run_exchange_input(
                    rx,
                    p,
                    inputs,
                    &mut chain,
                    &mut ticker,
                    &published,
                    checkpoints,
                ),
            };
            if let Some(c) = done {
                if result.is_err() {
                    c.signals.fail_job();
                }
                c.finished();
            }
            result
        })
        .map_err(|source| RuntimeError::Spawn {
            task: name.clone(),
            source,
        })?;
    Ok((name, thread, publishes))
}

/// A job's checkpointing once started: the coordinator, what chains need, the
/// checkpoint it continues from, and the folder's lock (held while the job runs).
struct Checkpointing {
    coordinator: CoordinatorThread,
    chain: ChainCheckpoints,
    restored_from: Option<sabot_core::CheckpointId>,
    /// `None` on a worker other than 0 of a job split over processes (worker 0 holds it).
    lock: Option<sabot_checkpoint::storage::StoreLock>,
}

/// What building a chain needs to know about checkpoints.
struct ChainCheckpoints {
    base: TaskCheckpoints,
    /// The storage, the checkpoint to continue from, and its parallelism.
    restore: Option<(
        sabot_checkpoint::storage::CheckpointStorage,
        sabot_checkpoint::storage::Manifest,
        usize,
    )>,
}

impl ChainCheckpoints {
    /// The snapshots operator `node`'s subtask `subtask` restores from: its own at the
    /// same parallelism, every old subtask's after a rescale (each keeps its key
    /// groups). An operator that had nothing to write has none.
    fn restore_from(
        &self,
        node: usize,
        subtask: usize,
        p: usize,
    ) -> Vec<sabot_operators::SnapshotSource> {
        let Some((storage, m, old_p)) = &self.restore else {
            return Vec::new();
        };
        let subtasks: Vec<usize> = if *old_p == p {
            vec![subtask]
        } else {
            (0..*old_p).collect()
        };
        subtasks
            .into_iter()
            .filter_map(|s| storage.snapshot_source(m, &CheckpointLayout::operator_dir(node, s)))
            .collect()
    }
}

enum SubtaskInput {
    Source(Arc<dyn sabot_operators::SourceFactory>),
    /// The fan-in over the task's exchanges, and how many exchanges it reads.
    Exchange(FanInReceiver<Envelope>, usize),
}

impl Job {
    /// The job's settings.
    pub fn config(&self) -> &JobConfig {
        &self.graph.config
    }

    /// What every process running this job must agree on, as named values: each node's
    /// operator, the parallelism, key groups, state backend, bad-record policy and
    /// checkpoint settings (a coordinator refuses a worker whose values differ, naming
    /// them).
    pub fn fingerprint(&self) -> Vec<(String, String)> {
        let c = &self.graph.config;
        let mut out: Vec<(String, String)> = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("node {i}"), n.kind.name()))
            .collect();
        out.push(("job".into(), c.name.clone()));
        out.push(("parallelism".into(), c.parallelism.to_string()));
        out.push(("max_parallelism".into(), c.max_parallelism.to_string()));
        out.push(("state".into(), c.state.name().into()));
        out.push(("bad_records".into(), format!("{:?}", c.bad_records)));
        out.push((
            "checkpoints".into(),
            c.checkpoints.as_ref().map_or_else(
                || "none".into(),
                |k| format!("{} every {:?}, {:?}", k.dir.display(), k.interval, k.mode),
            ),
        ));
        out
    }

    /// The output schema of a node.
    pub fn schema(&self, node: NodeId) -> Option<&SchemaRef> {
        self.schemas.get(node.0)
    }

    /// Runs the job to completion on this machine.
    pub fn run(self) -> Result<JobResult> {
        self.start()?.join()
    }

    /// Starts every subtask on its own thread and returns at once.
    pub fn start(self) -> Result<JobHandle> {
        let metrics = Metrics::new();
        let c = self.graph.config.clone();
        let network = c.cluster.as_ref().map(Network::start).transpose()?;
        let (mut senders, mut receivers) = self.wire_exchanges(network.as_ref())?;
        // Checkpoints: continue from the newest complete one, then take new ones.
        let checkpointing = c
            .checkpoints
            .as_ref()
            .map(|cs| self.start_checkpoints(cs, network.as_ref()))
            .transpose()?;
        let plans = self.plan_subtasks(
            &mut senders,
            &mut receivers,
            checkpointing.as_ref(),
            &metrics,
        )?;
        // Only the subtasks hold senders now: a queue closes when its producers end.
        drop(senders);

        tracing::info!(job = %c.name, parallelism = c.parallelism, subtasks = plans.len(), "job starting");
        let started = Instant::now();
        let source_records = metrics.counter(SOURCE_RECORDS);
        let mut threads = Vec::with_capacity(plans.len());
        let mut watermarks = Vec::new();
        for plan in plans {
            let (name, thread, published) =
                spawn_subtask(plan, source_records.clone(), c.tick_interval, c.parallelism)?;
            watermarks.extend(published);
            threads.push((name, thread));
        }
        let (coordinator, restored_from, folder_lock) = match checkpointing {
            Some(ck) => (Some(ck.coordinator), ck.restored_from, ck.lock),
            None => (None, None, None),
        };
        Ok(JobHandle {
            name: c.name,
            started,
            metrics,
            watermarks,
            threads,
            network,
            coordinator,
            restored_from,
            _folder_lock: folder_lock,
        })
    }

    /// The queues and network channels of every exchange: per (exchange, downstream
    /// subtask of this worker) a fan-in of one SPSC queue per upstream subtask (the
    /// queues of upstream subtasks on other workers fed by the shuffle server), per
    /// downstream subtask of another worker a network channel from each upstream subtask
    /// here. Returns `senders[exchange][downstream][upstream]` (each taken by its
    /// subtask) and each reading task's fan-ins.
    fn wire_exchanges(&self, network: Option<&Network>) -> Result<(Senders, Receivers)> {
        let c = &self.graph.config;
        let p = c.parallelism;
        let owner = |s: usize| c.cluster.as_ref().map_or(0, |cl| cl.owner(s));
        let me = c.cluster.as_ref().map_or(0, |cl| cl.me);
        let local = |s: usize| owner(s) == me;
        let mut senders: Senders = BTreeMap::new();
        let mut receivers: Receivers = BTreeMap::new();
        // Each task reading exchanges gets one fan-in per subtask over all of them: an
        // exchange's own task, or a two-input operator reading two (upstream channel
        // `u` of its `i`-th input is the fan-in's channel `i * p + u`).
        for (head, exchanges) in self.queue_heads() {
            for &ex in &exchanges {
                senders.insert(ex, Vec::with_capacity(p));
            }
            let mut inputs = Vec::with_capacity(p);
            for d in 0..p {
                if local(d) {
                    let (tx, rx) = queue::fan_in(exchanges.len() * p, c.queue_capacity);
                    let mut tx = tx.into_iter();
                    for &ex in &exchanges {
                        let mut row = Vec::with_capacity(p);
                        for (u, tx) in tx.by_ref().take(p).enumerate() {
                            if local(u) {
                                row.push(Some(Target::Local(tx)));
                            } else if let Some(net) = network {
                                let channel = Channel {
                                    exchange: ex,
                                    upstream: u,
                                    downstream: d,
                                };
                                net.receive(
                                    channel,
                                    self.schemas[ex].clone(),
                                    tx,
                                    self.exchange_tag(ex, u),
                                );
                                row.push(None);
                            }
                        }
                        senders.entry(ex).or_default().push(row);
                    }
                    inputs.push(Some(rx));
                } else if let Some(net) = network {
                    for &ex in &exchanges {
                        let mut row = Vec::with_capacity(p);
                        for u in 0..p {
                            let channel = Channel {
                                exchange: ex,
                                upstream: u,
                                downstream: d,
                            };
                            row.push(if local(u) {
                                let tx = net.send(owner(d), channel, self.schemas[ex].clone())?;
                                Some(Target::Remote(Some(tx)))
                            } else {
                                None
                            });
                        }
                        senders.entry(ex).or_default().push(row);
                    }
                    inputs.push(None);
                }
            }
            receivers.insert(head, inputs);
        }

        Ok((senders, receivers))
    }

    /// Opens the checkpoint folder (and holds it), finds the checkpoint to continue from
    /// and checks it belongs to this job, and starts the coordinator.
    fn start_checkpoints(
        &self,
        cs: &crate::CheckpointSettings,
        network: Option<&Network>,
    ) -> Result<Checkpointing> {
        let c = &self.graph.config;
        let p = c.parallelism;
        let mut restored_from = None;
        let storage = cs.storage()?;
        // One job per folder, for as long as it runs (split over processes: worker 0,
        // which runs the checkpoint coordinator, holds it).
        let me = c.cluster.as_ref().map_or(0, |cl| cl.me);
        let lock = match (&c.cluster, me) {
            (_, m) if m != 0 => None,
            (None, _) => Some(storage.lock()?),
            // A restarted attempt: the previous one's worker 0 may still be dying (its
            // worker was killed, the process sees that a moment later). Waits a little
            // for it; a holder that stays is refused as always.
            (Some(_), _) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match storage.lock() {
                        Ok(l) => break Some(l),
                        Err(sabot_checkpoint::CheckpointError::Locked { .. })
                            if Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        let latest = match cs.restore_from {
            Some(id) => Some(storage.restore_from(id)?),
            None => storage.latest()?,
        };
        // What this job records with its checkpoints, and checks of the one it
        // continues from: operator state is found by node, so a changed graph would
        // silently start some operators empty.
        let meta = JobMeta::new(
            c.name.clone(),
            p,
            c.max_parallelism,
            GraphFingerprint::new(self.graph.nodes.iter().map(|n| n.kind.name())),
        );
        let mut restore = None;
        if let Some(m) = &latest {
            let taken = JobMeta::from_manifest(m, &storage.root())?;
            meta.check_restorable(m.id, &taken, &storage.root())?;
            if taken.parallelism != p {
                tracing::info!(checkpoint = %m.id, from = taken.parallelism, to = p, "rescaling from checkpoint");
            }
            restore = Some((storage.clone(), m.clone(), taken.parallelism));
            restored_from = Some(m.id);
        }
        let heads = self
            .graph
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Source(_)))
            .count()
            + self.queue_heads().len();

        let sources = self
            .graph
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Source(_)))
            .count();
        // Split over processes: which tasks run here, numbered as `plan_subtasks` does
        // (sources and exchange readers in node order, subtasks in order).
        let placement = match (&c.cluster, network) {
            (Some(cl), Some(network)) => {
                let task_nodes = self.graph.nodes.iter().enumerate().filter(|(id, n)| {
                    matches!(n.kind, NodeKind::Source(_))
                        || self.queue_heads().iter().any(|(h, _)| h == id)
                });
                let local = task_nodes
                    .flat_map(|_| (0..p).map(|s| cl.owner(s) == cl.me))
                    .collect();
                Some(crate::checkpointing::Placement {
                    network,
                    me: cl.me,
                    workers: cl.workers.len(),
                    local,
                })
            }
            _ => None,
        };
        let (thread, base) = CoordinatorThread::start(
            cs,
            storage,
            heads * p,
            sources * p,
            latest.as_ref(),
            c.clock.clone(),
            meta.to_records(),
            placement,
        )?;
        Ok(Checkpointing {
            coordinator: thread,
            chain: ChainCheckpoints { base, restore },
            restored_from,
            lock,
        })
    }

    /// Every subtask of this worker, planned before any starts, so that a creation error
    /// starts no thread: its context, input, chain of operators and checkpoint handles.
    fn plan_subtasks(
        &self,
        senders: &mut Senders,
        receivers: &mut Receivers,
        checkpointing: Option<&Checkpointing>,
        metrics: &Metrics,
    ) -> Result<Vec<SubtaskPlan>> {
        let c = &self.graph.config;
        let p = c.parallelism;
        let owner = |s: usize| c.cluster.as_ref().map_or(0, |cl| cl.owner(s));
        let me = c.cluster.as_ref().map_or(0, |cl| cl.me);
        let local = |s: usize| owner(s) == me;
        let chain_ckpt = checkpointing.map(|ck| &ck.chain);
        let restored_from = checkpointing.and_then(|ck| ck.restored_from);
        let mut plans = Vec::new();
        // Tasks are numbered over the whole job (every worker numbers them alike), so
        // that a checkpoint's acknowledgements name them across processes.
        let mut task_no = 0usize;
        let queue_heads: BTreeMap<usize, usize> = self
            .queue_heads()
            .into_iter()
            .map(|(head, exchanges)| (head, exchanges.len()))
            .collect();
        for (id, node) in self.graph.nodes.iter().enumerate() {
            let head_rx = receivers.get_mut(&id);
            let (source, inputs) = match &node.kind {
                NodeKind::Source(f) => (Some(f.clone()), 0),
                _ => match queue_heads.get(&id) {
                    Some(&n) => (None, n),
                    None => continue,
                },
            };
            let mut head_rx = head_rx.map(std::mem::take).map(Vec::into_iter);
            for s in 0..p {
                let input_rx = head_rx.as_mut().and_then(Iterator::next).flatten();
                let task = task_no;
                task_no += 1;
                if !local(s) {
                    continue;
                }
                let mut ctx = TaskContext::new(s, p, c.max_parallelism, metrics.clone())
                    .with_clock(c.clock.clone())
                    .with_bad_records(c.bad_records)
                    .with_state(c.state.clone());
                if let Some(cs) = &c.checkpoints {
                    ctx = ctx.with_checkpoints(&cs.dir, restored_from);
                }
                // The chain's operators hand their snapshots over as this task.
                let task_ckpt = chain_ckpt.as_ref().map(|ck| ChainCheckpoints {
                    base: ck.base.for_task(task),
                    restore: ck.restore.clone(),
                });
                let chain = match &node.kind {
                    NodeKind::TwoInput(f) => {
                        let schema = |i: Option<NodeId>| i.map(|NodeId(i)| &self.schemas[i]);
                        let (Some(left), Some(right)) = (schema(node.input), schema(node.input2))
                        else {
                            unreachable!("checked by build")
                        };
                        f.create(left, right, &ctx)
                            .map_err(RuntimeError::from)
                            .and_then(|op| {
                                self.operator_node(
                                    NodeId(id),
                                    op,
                                    &ctx,
                                    senders,
                                    task_ckpt.as_ref(),
                                )
                            })
                            .map(|n| vec![n])
                    }
                    _ => self.build_chain(NodeId(id), &ctx, senders, task_ckpt.as_ref()),
                }
                .map_err(|e| e.in_node(node.kind.name()))?;
                let input = match (&source, input_rx) {
                    (Some(f), _) => SubtaskInput::Source(f.clone()),
                    (None, Some(rx)) => SubtaskInput::Exchange(rx, inputs),
                    (None, None) => unreachable!("an exchange has one queue per subtask"),
                };
                let source_ckpt = match (&source, chain_ckpt) {
                    (Some(_), Some(ck)) => {
                        let file = CheckpointLayout::source_position(id, s);
                        // Every old subtask's position: each new subtask takes its
                        // share of what is left (the parallelism may have changed).
                        let position = match &ck.restore {
                            Some((storage, m, old_p)) => Some(
                                (0..*old_p)
                                    .map(|old| {
                                        storage
                                            .get(m.id, &CheckpointLayout::source_position(id, old))
                                    })
                                    .collect::<std::result::Result<Vec<_>, _>>()?,
                            ),
                            None => None,
                        };
                        Some((file, position))
                    }
                    _ => None,
                };
                plans.push(SubtaskPlan {
                    name: format!("{}[{}/{}]", self.task_name(NodeId(id)), s, p),
                    ctx,
                    input,
                    chain,
                    checkpoints: chain_ckpt.as_ref().map(|ck| ck.base.for_task(task)),
                    source: source_ckpt,
                });
            }
        }
        Ok(plans)
    }

    /// A readable name for the task headed by `head`: the head and its chained operators.
    fn task_name(&self, head: NodeId) -> String {
        let mut names = vec![self.graph.nodes[head.0].kind.name()];
        let mut cur = head;
        while let [only] = self.children[cur.0].as_slice() {
            let kind = &self.graph.nodes[only.0].kind;
            if !matches!(kind, NodeKind::Operator(_)) {
                break;
            }
            names.push(kind.name());
            cur = *only;
        }
        names.join(" -> ")
    }

    /// The tasks that read exchanges, each with the exchanges it reads: every exchange
    /// not read by a two-input operator, and every two-input operator.
    fn queue_heads(&self) -> Vec<(usize, Vec<usize>)> {
        let nodes = &self.graph.nodes;
        let read_by_two_input = |ex: usize| {
            self.children[ex]
                .iter()
                .any(|c| matches!(nodes[c.0].kind, NodeKind::TwoInput(_)))
        };
        nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| match n.kind {
                NodeKind::Exchange(_) if !read_by_two_input(id) => Some((id, vec![id])),
                NodeKind::TwoInput(_) => Some((
                    id,
                    [n.input, n.input2]
                        .into_iter()
                        .flatten()
                        .map(|i| i.0)
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// What upstream subtask `u` of exchange `ex` tags its messages with: `u`, plus the
    /// parallelism where the exchange is a two-input operator's second input (one
    /// fan-in reads both).
    fn exchange_tag(&self, ex: usize, u: usize) -> usize {
        let second = self.children[ex].iter().any(|c| {
            let n = &self.graph.nodes[c.0];
            matches!(n.kind, NodeKind::TwoInput(_)) && n.input2 == Some(NodeId(ex))
        });
        if second {
            u + self.graph.config.parallelism
        } else {
            u
        }
    }

    /// Operator `id` with its side outputs and the chain below it, restored from the
    /// checkpoint to continue from.
    fn operator_node(
        &self,
        id: NodeId,
        mut op: Box<dyn sabot_operators::Operator>,
        ctx: &TaskContext,
        senders: &mut Senders,
        ckpt: Option<&ChainCheckpoints>,
    ) -> Result<ChainNode> {
        let kind = &self.graph.nodes[id.0].kind;
        let mut sides = Vec::new();
        for &side in &self.children[id.0] {
            if let NodeKind::SideOutput(tag) = &self.graph.nodes[side.0].kind {
                sides.push((tag.clone(), self.build_chain(side, ctx, senders, ckpt)?));
            }
        }
        if let Some(ck) = ckpt {
            let from = ck.restore_from(id.0, ctx.subtask, ctx.parallelism);
            if !from.is_empty() {
                op.restore(&from).map_err(|e| e.into_node(&kind.name()))?;
            }
        }
        Ok(ChainNode::Operator {
            op,
            ckpt: ckpt.map(|ck| {
                (
                    ck.base.clone(),
                    CheckpointLayout::operator_dir(id.0, ctx.subtask),
                )
            }),
            out: Output::new(),
            children: self.build_chain(id, ctx, senders, ckpt)?,
            sides,
        })
    }

    /// The chain below `node`, up to the next exchanges and sinks.
    fn build_chain(
        &self,
        node: NodeId,
        ctx: &TaskContext,
        senders: &mut Senders,
        ckpt: Option<&ChainCheckpoints>,
    ) -> Result<Vec<ChainNode>> {
        let c = &self.graph.config;
        let input = &self.schemas[node.0];
        self.children[node.0]
            .iter()
            .map(|&child| -> Result<Option<ChainNode>> {
                let kind = &self.graph.nodes[child.0].kind;
                Ok(Some(match kind {
                    NodeKind::Operator(f) => {
                        let op = f
                            .create(input, ctx)
                            .map_err(|e| e.into_node(&kind.name()))?;
                        self.operator_node(child, op, ctx, senders, ckpt)?
                    }
                    // Heads of their own tasks.
                    NodeKind::TwoInput(_) => return Ok(None),
                    // Built with the operator it belongs to.
                    NodeKind::SideOutput(_) => return Ok(None),
                    NodeKind::Sink(f) => ChainNode::Sink {
                        sink: f
                            .create(input, ctx)
                            .map_err(|e| e.into_node(&kind.name()))?,
                        records: ctx.metrics.counter(SINK_RECORDS),
                        latency: ctx.metrics.histogram(SINK_LATENCY_US),
                    },
                    NodeKind::Exchange(p) => ChainNode::Exchange(ExchangeWriter {
                        me: self.exchange_tag(child.0, ctx.subtask),
                        partitioner: match p {
                            Partitioning::Hash(keys) => {
                                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                                Partitioner::Hash(Box::new(HashPartitioner::new(
                                    input,
                                    &keys,
                                    c.max_parallelism,
                                    c.parallelism,
                                )?))
                            }
                            Partitioning::RoundRobin => Partitioner::RoundRobin(
                                RoundRobinPartitioner::new(c.parallelism, ctx.subtask),
                            ),
                            Partitioning::Broadcast => {
                                Partitioner::Broadcast(BroadcastPartitioner::new(c.parallelism))
                            }
                        },
                        targets: take_senders(senders, child.0, ctx.subtask)?,
                    }),
                    NodeKind::Source(_) => {
                        return Err(RuntimeError::InvalidGraph {
                            reason: "a source cannot have an input".into(),
                        });
                    }
                }))
            })
            .filter_map(Result::transpose)
            .collect()
    }
}
