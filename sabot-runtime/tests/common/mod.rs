//! What the checkpoint tests share: a two-phase-commit sink recording what it commits
//! across runs, fault injection at chosen points, and the windowed job they run.

#![allow(dead_code)] // each test file uses its own part

pub mod memory_store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sabot_checkpoint::storage::{CheckpointStorage, Store};
use sabot_core::{CheckpointId, RecordBatch, SchemaRef};
use sabot_operators::{
    Aggregate, MapFactory, Operator, OperatorError, OperatorFactory, Output, Sink, SinkFactory,
    TaskContext, TumblingWindowFactory, VecSource, WatermarkFactory,
};
use sabot_runtime::{CheckpointSettings, JobConfig, JobGraph, JobResult, Partitioning};
use sabot_state::StateConfig;
use sabot_test_kit::row_strings;
use sabot_test_kit::{keyed_batches, keyed_schema};

/// What a two-phase-commit sink has committed over every run of a job, and what it holds
/// pre-committed by checkpoint (as the CSV sink does with files).
#[derive(Clone, Debug, Default)]
pub struct Epochs(Arc<Mutex<Ledger>>);

#[derive(Debug, Default)]
struct Ledger {
    pending: BTreeMap<u64, Vec<String>>,
    committed: Vec<String>,
}

impl Epochs {
    /// Every committed row, sorted.
    pub fn committed(&self) -> Vec<String> {
        let mut rows = self.0.lock().unwrap().committed.clone();
        rows.sort();
        rows
    }

    /// Rows pre-committed but not (yet) committed.
    pub fn pending(&self) -> usize {
        self.0.lock().unwrap().pending.values().map(Vec::len).sum()
    }

    /// A run starts from checkpoint `restored`: what it covers is committed (the crash
    /// came between completion and commit), the rest is produced again by the replay.
    fn recover(&self, restored: Option<CheckpointId>) {
        let mut l = self.0.lock().unwrap();
        let pending = std::mem::take(&mut l.pending);
        for (id, mut rows) in pending {
            if restored.is_some_and(|r| id <= r.0) {
                l.committed.append(&mut rows);
            }
        }
    }
}

#[derive(Debug)]
pub struct EpochSink(pub Epochs);

struct EpochWriter {
    epochs: Epochs,
    rows: Vec<String>,
    checkpointed: bool,
}

impl SinkFactory for EpochSink {
    fn name(&self) -> String {
        "epoch_sink".into()
    }
    fn create(&self, _: &SchemaRef, ctx: &TaskContext) -> sabot_operators::Result<Box<dyn Sink>> {
        self.0.recover(ctx.restored_from);
        Ok(Box::new(EpochWriter {
            epochs: self.0.clone(),
            rows: Vec::new(),
            checkpointed: ctx.checkpoint_dir.is_some(),
        }))
    }
}

impl Sink for EpochWriter {
    fn write(&mut self, b: RecordBatch) -> sabot_operators::Result<()> {
        self.rows.extend(row_strings(&b));
        Ok(())
    }
    fn on_checkpoint(&mut self, id: CheckpointId) -> sabot_operators::Result<()> {
        let mut l = self.epochs.0.lock().unwrap();
        l.pending.entry(id.0).or_default().append(&mut self.rows);
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> sabot_operators::Result<()> {
        let mut l = self.epochs.0.lock().unwrap();
        let later = l.pending.split_off(&(id.0 + 1));
        let done = std::mem::replace(&mut l.pending, later);
        for (_, mut rows) in done {
            l.committed.append(&mut rows);
        }
        Ok(())
    }
    fn finish(&mut self) -> sabot_operators::Result<()> {
        if self.checkpointed {
            assert!(
                self.rows.is_empty(),
                "{} rows after the final checkpoint",
                self.rows.len()
            );
        } else {
            let mut l = self.epochs.0.lock().unwrap();
            l.committed.append(&mut self.rows);
        }
        Ok(())
    }
}

/// Where a run fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nowhere.
    Never,
    /// While processing the `n`-th batch (counted over the job's source subtasks).
    Processing(usize),
    /// While taking the `n`-th operator snapshot (a source subtask's share of a
    /// checkpoint), after writing part of it.
    Snapshot(usize),
    /// While restoring from a checkpoint.
    Restore,
    /// While processing, at the first batch from the `n`-th on after a checkpoint
    /// completed in these checkpoints (so the restart has something to continue from).
    AfterCheckpoint(Checkpoints, usize),
}

/// A job's checkpoints, for a [`Fault`] to look at.
#[derive(Clone, Debug)]
pub struct Checkpoints(pub CheckpointStorage);

impl PartialEq for Checkpoints {
    fn eq(&self, other: &Self) -> bool {
        self.0.root() == other.0.root()
    }
}

impl Eq for Checkpoints {}

impl From<PathBuf> for Checkpoints {
    fn from(dir: PathBuf) -> Self {
        Checkpoints(CheckpointStorage::open(dir).unwrap())
    }
}

impl From<Arc<dyn Store>> for Checkpoints {
    fn from(store: Arc<dyn Store>) -> Self {
        Checkpoints(CheckpointStorage::new(store))
    }
}

/// A fault to inject once.
#[derive(Debug)]
pub struct Chaos {
    pub fault: Fault,
    fired: AtomicBool,
    batches: AtomicUsize,
    snapshots: AtomicUsize,
}

impl Chaos {
    pub fn new(fault: Fault) -> Arc<Self> {
        Arc::new(Chaos {
            fault,
            fired: AtomicBool::new(false),
            batches: AtomicUsize::new(0),
            snapshots: AtomicUsize::new(0),
        })
    }

    /// Whether the fault happened.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    fn fire(&self, at: Fault) -> sabot_operators::Result<()> {
        if self.fault == at && !self.fired.swap(true, Ordering::SeqCst) {
            return Err(OperatorError::Snapshot {
                path: std::path::PathBuf::from("chaos"),
                reason: format!("injected failure ({at:?})"),
            });
        }
        Ok(())
    }
}

/// A pass-through operator that fails where its [`Chaos`] says. Its snapshot writes a
/// file, so that restores call it.
#[derive(Debug)]
pub struct ChaosFactory(pub Arc<Chaos>);

struct ChaosOp(Arc<Chaos>);

impl OperatorFactory for ChaosFactory {
    fn name(&self) -> String {
        "chaos".into()
    }
    fn output_schema(&self, input: &SchemaRef) -> sabot_operators::Result<SchemaRef> {
        Ok(input.clone())
    }
    fn create(&self, _: &SchemaRef, _: &TaskContext) -> sabot_operators::Result<Box<dyn Operator>> {
        Ok(Box::new(ChaosOp(self.0.clone())))
    }
}

impl Operator for ChaosOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> sabot_operators::Result<()> {
        let n = self.0.batches.fetch_add(1, Ordering::SeqCst);
        match &self.0.fault {
            Fault::Processing(at) if n >= *at => self.0.fire(Fault::Processing(*at))?,
            Fault::AfterCheckpoint(checkpoints, at)
                if n >= *at
                    && !self.0.fired()
                    && checkpoints.0.completed().is_ok_and(|c| !c.is_empty()) =>
            {
                self.0.fire(self.0.fault.clone())?
            }
            _ => {}
        }
        out.batch(batch);
        Ok(())
    }

    fn snapshot(
        &mut self,
        target: &sabot_operators::SnapshotTarget,
    ) -> sabot_operators::Result<()> {
        target.write("chaos", b"chaos")?;
        let n = self.0.snapshots.fetch_add(1, Ordering::SeqCst);
        if let Fault::Snapshot(at) = self.0.fault
            && n >= at
        {
            self.0.fire(Fault::Snapshot(at))?;
        }
        Ok(())
    }

    fn restore(
        &mut self,
        _from: &[sabot_operators::SnapshotSource],
    ) -> sabot_operators::Result<()> {
        self.0.fire(Fault::Restore)
    }
}

/// The job the checkpoint tests run.
#[derive(Clone, Debug)]
pub struct Setup {
    pub rows: usize,
    pub parallelism: usize,
    pub state: StateConfig,
    pub interval: Duration,
    /// One more (stateless) operator before the exchange: a changed graph.
    pub extra_operator: bool,
    /// Checkpoints into this store rather than the folder.
    pub store: Option<Arc<dyn Store>>,
}

impl Setup {
    pub fn new(rows: usize, parallelism: usize, state: StateConfig) -> Self {
        Setup {
            rows,
            parallelism,
            state,
            interval: Duration::from_millis(15),
            extra_operator: false,
            store: None,
        }
    }

    /// source -> watermarks -> (slow on one source subtask) -> chaos -> key_by -> 50 ms
    /// windows -> sink, with checkpoints into `dir` if given.
    pub fn job(
        &self,
        dir: Option<&std::path::Path>,
        chaos: Option<Arc<Chaos>>,
        epochs: &Epochs,
    ) -> JobGraph {
        let mut c = JobConfig::default();
        c.parallelism = self.parallelism;
        c.queue_capacity = 2;
        c.state = self.state.clone();
        c.checkpoints = dir.map(|d| {
            let s = CheckpointSettings::new(d, self.interval);
            match &self.store {
                Some(store) => s.with_store(store.clone()),
                None => s,
            }
        });
        let mut g = JobGraph::new(c);
        let src = g.add_source(Arc::new(VecSource::new(
            keyed_schema(),
            keyed_batches(5, self.rows, 500, 2_000, 1, 30),
        )));
        let wm = g.add_operator(
            src,
            Arc::new(WatermarkFactory::bounded_out_of_orderness(
                "ts",
                Duration::from_millis(40),
            )),
        );
        let slow = g.add_operator(
            wm,
            Arc::new(MapFactory::new("slow", move |b| {
                // Batch i goes to source subtask i % 2 (500 rows, 1 ms apart): subtask 0
                // is slow, so subtask 1's barriers arrive first and its later records
                // wait behind them (what exactly-once alignment is for).
                let first_ts = b
                    .column(2)
                    .as_any()
                    .downcast_ref::<sabot_core::arrow::array::Int64Array>()
                    .map_or(0, |a| a.value(0));
                if ((first_ts + 250) / 500) % 2 == 0 {
                    std::thread::sleep(Duration::from_micros(700));
                }
                Ok(b)
            })),
        );
        // Always there, so that every run of a test has the same graph.
        let chaos = chaos.unwrap_or_else(|| Chaos::new(Fault::Never));
        let mut chaos = g.add_operator(slow, Arc::new(ChaosFactory(chaos)));
        if self.extra_operator {
            chaos = g.add_operator(chaos, Arc::new(MapFactory::new("extra", Ok)));
        }
        let keyed = g.add_exchange(chaos, Partitioning::Hash(vec!["key".into()]));
        let win = g.add_operator(
            keyed,
            Arc::new(TumblingWindowFactory::new(
                vec!["key".into()],
                Some("ts".into()),
                Duration::from_millis(50),
                vec![Aggregate::count(), Aggregate::sum("value")],
            )),
        );
        g.add_sink(win, Arc::new(EpochSink(epochs.clone())));
        g
    }

    /// The output of a run without checkpoints or faults.
    pub fn reference(&self) -> Vec<String> {
        let epochs = Epochs::default();
        run(self.job(None, None, &epochs)).unwrap();
        epochs.committed()
    }
}

pub fn run(g: JobGraph) -> sabot_runtime::Result<JobResult> {
    g.build()?.run()
}
