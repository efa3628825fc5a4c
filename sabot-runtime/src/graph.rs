//! The logical job graph: sources, operators, exchanges and sinks.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sabot_core::BadRecordPolicy;
use sabot_core::key::DEFAULT_MAX_PARALLELISM;
use sabot_operators::{OperatorFactory, SinkFactory, SourceFactory, TwoInputOperatorFactory};
#[cfg(feature = "flight")]
use sabot_shuffle::flight::FlightConfig;
use sabot_state::StateConfig;
use sabot_time::{Clock, SystemClock};

/// A node of a [`JobGraph`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) usize);

/// How an exchange distributes batches over the downstream subtasks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Partitioning {
    /// By the key group of these key columns (`key_by`).
    Hash(Vec<String>),
    /// Whole batches, to each downstream subtask in turn (`rebalance`).
    RoundRobin,
    /// Every batch to every downstream subtask (`broadcast`).
    Broadcast,
}

#[derive(Clone)]
pub(crate) enum NodeKind {
    Source(Arc<dyn SourceFactory>),
    Operator(Arc<dyn OperatorFactory>),
    /// An operator reading two exchanges (its node's `input` and `input2`).
    TwoInput(Arc<dyn TwoInputOperatorFactory>),
    Exchange(Partitioning),
    /// The side output `tag` of the operator it reads from.
    SideOutput(String),
    Sink(Arc<dyn SinkFactory>),
}

impl NodeKind {
    pub(crate) fn name(&self) -> String {
        match self {
            NodeKind::Source(f) => f.name(),
            NodeKind::Operator(f) => f.name(),
            NodeKind::TwoInput(f) => f.name(),
            NodeKind::Exchange(Partitioning::Hash(k)) => format!("key_by({})", k.join(", ")),
            NodeKind::Exchange(Partitioning::RoundRobin) => "rebalance".into(),
            NodeKind::Exchange(Partitioning::Broadcast) => "broadcast".into(),
            NodeKind::SideOutput(tag) => format!("side_output({tag})"),
            NodeKind::Sink(f) => f.name(),
        }
    }
}

impl fmt::Debug for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) input: Option<NodeId>,
    /// The second input of a two-input operator.
    pub(crate) input2: Option<NodeId>,
}

/// Settings of a job.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobConfig {
    /// Processing time for every operator (a test can drive it with a
    /// [`ManualClock`](sabot_time::ManualClock)).
    pub clock: Arc<dyn Clock>,
    /// What sources and operators do with records they cannot process.
    pub bad_records: BadRecordPolicy,
    /// How often operators get [`on_tick`](sabot_operators::Operator::on_tick), also while
    /// no data flows.
    pub tick_interval: Duration,
    /// A name for logs.
    pub name: String,
    /// Subtasks per operator (each its own thread).
    pub parallelism: usize,
    /// The number of key groups (fixed for the life of the job's state).
    pub max_parallelism: usize,
    /// Batches each exchange queue holds before the producer blocks.
    pub queue_capacity: usize,
    /// Where stateful operators keep their state (default: memory).
    pub state: StateConfig,
    /// Run the job split over several worker processes (default: all in this one).
    pub cluster: Option<Cluster>,
    /// Take checkpoints, and continue from the newest one in their folder (default: no).
    pub checkpoints: Option<crate::CheckpointSettings>,
}

/// A job split over worker processes that exchange data over Arrow Flight (the `flight`
/// feature, on by default; without it such a job is refused when it starts).
///
/// Every worker runs the same job graph with the same [`JobConfig`] except
/// [`Cluster::me`]. Subtask `s` of every operator runs on worker `owners[s]` when
/// [`Cluster::owners`] is given (a coordinator's placement), otherwise on worker
/// `s % workers.len()`;
/// exchanges between subtasks of one worker use the in-process queues, the others go
/// through the workers' shuffle servers.
/// Each worker's sinks receive the output of its own subtasks.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Cluster {
    /// Every worker's shuffle address, in worker order (the same list on every worker).
    pub workers: Vec<SocketAddr>,
    /// This process's index in `workers`: its server listens on `workers[me]`.
    pub me: usize,
    /// Where each subtask runs (an index into `workers`, one per subtask); `None`:
    /// subtask `s` on worker `s % workers.len()`.
    pub owners: Option<Vec<usize>>,
    /// Network settings.
    #[cfg(feature = "flight")]
    pub flight: FlightConfig,
}

impl Cluster {
    /// Worker `me` of `workers`.
    pub fn new(workers: Vec<SocketAddr>, me: usize) -> Cluster {
        Cluster {
            workers,
            me,
            owners: None,
            #[cfg(feature = "flight")]
            flight: FlightConfig::default(),
        }
    }

    /// Sets the network settings.
    #[cfg(feature = "flight")]
    pub fn with_flight(mut self, flight: FlightConfig) -> Cluster {
        self.flight = flight;
        self
    }

    /// Places subtask `s` of every operator on worker `owners[s]` (one entry per
    /// subtask; checked when the job is built).
    pub fn with_owners(mut self, owners: Vec<usize>) -> Cluster {
        self.owners = Some(owners);
        self
    }

    /// The worker that runs subtask `subtask` of every operator.
    pub fn owner(&self, subtask: usize) -> usize {
        match &self.owners {
            Some(o) => o.get(subtask).copied().unwrap_or(0),
            None => subtask % self.workers.len().max(1),
        }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            clock: Arc::new(SystemClock),
            bad_records: BadRecordPolicy::Fail,
            tick_interval: Duration::from_millis(10),
            name: "sabot-job".into(),
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            queue_capacity: 8,
            state: StateConfig::memory(),
            cluster: None,
            checkpoints: None,
        }
    }
}

/// A job as a graph of nodes, each with at most one input. A node may feed several
/// downstream nodes (the stream is split: every batch goes to each of them).
///
/// Operators between two exchanges run chained in one task: no queue between them.
///
/// ```
/// use std::sync::Arc;
/// use sabot_test_kit::{keyed_batches, keyed_schema};
/// use sabot_operators::{CollectSink, VecSource};
/// use sabot_runtime::{JobConfig, JobGraph, Partitioning};
///
/// let mut g = JobGraph::new(JobConfig::default());
/// let src = g.add_source(Arc::new(VecSource::new(keyed_schema(), keyed_batches(1, 10, 5, 3, 1, 1))));
/// let ex = g.add_exchange(src, Partitioning::Hash(vec!["key".into()]));
/// let (sink, out) = CollectSink::new();
/// g.add_sink(ex, Arc::new(sink));
/// g.build().unwrap().run().unwrap();
/// assert_eq!(out.num_rows(), 10);
/// ```
#[derive(Clone, Debug)]
pub struct JobGraph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) config: JobConfig,
}

impl JobGraph {
    /// An empty graph.
    pub fn new(config: JobConfig) -> Self {
        JobGraph {
            nodes: Vec::new(),
            config,
        }
    }

    /// The job's settings.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// Changes the job's settings.
    pub fn config_mut(&mut self) -> &mut JobConfig {
        &mut self.config
    }

    fn add(&mut self, kind: NodeKind, input: Option<NodeId>) -> NodeId {
        self.nodes.push(Node {
            kind,
            input,
            input2: None,
        });
        NodeId(self.nodes.len() - 1)
    }

    /// Adds a source.
    pub fn add_source(&mut self, factory: Arc<dyn SourceFactory>) -> NodeId {
        self.add(NodeKind::Source(factory), None)
    }

    /// Adds an operator reading from `input`.
    pub fn add_operator(&mut self, input: NodeId, factory: Arc<dyn OperatorFactory>) -> NodeId {
        self.add(NodeKind::Operator(factory), Some(input))
    }

    /// Adds a two-input operator (a join) reading from `left` and `right`, which must
    /// both be exchanges read by nothing else (`key_by` on the keys the operator names
    /// in [`TwoInputOperatorFactory::partition_keys`]).
    pub fn add_two_input(
        &mut self,
        left: NodeId,
        right: NodeId,
        factory: Arc<dyn TwoInputOperatorFactory>,
    ) -> NodeId {
        let id = self.add(NodeKind::TwoInput(factory), Some(left));
        self.nodes[id.0].input2 = Some(right);
        id
    }

    /// Adds an exchange reading from `input`: its output is redistributed over the
    /// downstream subtasks.
    pub fn add_exchange(&mut self, input: NodeId, partitioning: Partitioning) -> NodeId {
        self.add(NodeKind::Exchange(partitioning), Some(input))
    }

    /// Adds the side output `tag` of operator `input` (for example its late data).
    pub fn add_side_output(&mut self, input: NodeId, tag: impl Into<String>) -> NodeId {
        self.add(NodeKind::SideOutput(tag.into()), Some(input))
    }

    /// Adds a sink reading from `input`.
    pub fn add_sink(&mut self, input: NodeId, factory: Arc<dyn SinkFactory>) -> NodeId {
        self.add(NodeKind::Sink(factory), Some(input))
    }
}
