//! Checkpoints in a running job: a job that fails after a completed checkpoint and is
//! started again on the same folder continues from it, and its committed output equals
//! the output of a run without failure (no loss, no duplicate), with memory and RocksDB
//! state, in exactly-once mode.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sabot_checkpoint::storage::LocalStorage;
use sabot_core::arrow::util::display::array_value_to_string;
use sabot_core::test_util::{keyed_batches, keyed_schema};
use sabot_core::{CheckpointId, RecordBatch, SchemaRef};
use sabot_operators::{
    Aggregate, MapFactory, Sink, SinkFactory, TaskContext, TumblingWindowFactory, VecSource,
    WatermarkFactory,
};
use sabot_runtime::{CheckpointSettings, JobConfig, JobGraph, JobResult, Partitioning};
use sabot_state::{RocksDbConfig, StateConfig};

/// Rows by the checkpoint that covers them (rows after the last checkpoint, at the end
/// of input, under `u64::MAX`): what a two-phase-commit sink would publish.
#[derive(Clone, Debug, Default)]
struct Epochs(Arc<Mutex<BTreeMap<u64, Vec<String>>>>);

impl Epochs {
    /// The rows a restart from `restored` keeps: those of checkpoints up to it.
    fn committed_up_to(&self, restored: CheckpointId) -> Vec<String> {
        let e = self.0.lock().unwrap();
        e.range(..=restored.0)
            .flat_map(|(_, r)| r.clone())
            .collect()
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().values().flatten().cloned().collect()
    }
}

#[derive(Debug)]
struct EpochSink(Epochs);

struct EpochWriter {
    epochs: Epochs,
    pending: Vec<String>,
}

impl SinkFactory for EpochSink {
    fn name(&self) -> String {
        "epoch_sink".into()
    }
    fn create(&self, _: &SchemaRef, _: &TaskContext) -> sabot_operators::Result<Box<dyn Sink>> {
        Ok(Box::new(EpochWriter {
            epochs: self.0.clone(),
            pending: Vec::new(),
        }))
    }
}

impl Sink for EpochWriter {
    fn write(&mut self, b: RecordBatch) -> sabot_operators::Result<()> {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, r).unwrap())
                .collect();
            self.pending.push(cells.join(","));
        }
        Ok(())
    }
    fn on_checkpoint(&mut self, id: CheckpointId) -> sabot_operators::Result<()> {
        let mut e = self.epochs.0.lock().unwrap();
        e.entry(id.0).or_default().append(&mut self.pending);
        Ok(())
    }
    fn finish(&mut self) -> sabot_operators::Result<()> {
        let mut e = self.epochs.0.lock().unwrap();
        e.entry(u64::MAX).or_default().append(&mut self.pending);
        Ok(())
    }
}

/// source -> watermarks -> (may fail) -> key_by -> 50 ms windows -> sink.
fn job(
    dir: Option<&std::path::Path>,
    state: &StateConfig,
    fail: Option<Arc<AtomicBool>>,
    parallelism: usize,
) -> (JobGraph, Epochs) {
    let mut c = JobConfig::default();
    c.parallelism = parallelism;
    c.queue_capacity = 2;
    c.state = state.clone();
    c.checkpoints = dir.map(|d| CheckpointSettings::new(d, Duration::from_millis(15)));
    let mut g = JobGraph::new(c);
    let src = g.add_source(Arc::new(VecSource::new(
        keyed_schema(),
        keyed_batches(5, 240_000, 500, 2_000, 1, 30),
    )));
    let wm = g.add_operator(
        src,
        Arc::new(WatermarkFactory::bounded_out_of_orderness(
            "ts",
            Duration::from_millis(40),
        )),
    );
    // Slows the job down enough for checkpoints to happen, and fails once on request,
    // only after a checkpoint completed (so the restart has something to continue from).
    let seen = Arc::new(AtomicUsize::new(0));
    let ckpt_dir = dir.map(|d| d.to_path_buf());
    let gate = g.add_operator(
        wm,
        Arc::new(MapFactory::new("gate", move |b| {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            // Batch i goes to source subtask i % 2 (500 rows, 1 ms apart): subtask 0 is
            // slow, so subtask 1's barriers arrive first and its later records wait
            // behind them (what exactly-once alignment is for).
            let first_ts = b
                .column(2)
                .as_any()
                .downcast_ref::<sabot_core::arrow::array::Int64Array>()
                .map_or(0, |a| a.value(0));
            if ((first_ts + 250) / 500) % 2 == 0 {
                std::thread::sleep(Duration::from_micros(700));
            }
            if let (Some(flag), Some(d)) = (&fail, &ckpt_dir)
                && n > 200
                && flag.load(Ordering::SeqCst)
                && !LocalStorage::open(d)?.completed()?.is_empty()
            {
                flag.store(false, Ordering::SeqCst);
                return Err("injected failure".into());
            }
            Ok(b)
        })),
    );
    let keyed = g.add_exchange(gate, Partitioning::Hash(vec!["key".into()]));
    let win = g.add_operator(
        keyed,
        Arc::new(TumblingWindowFactory::new(
            vec!["key".into()],
            Some("ts".into()),
            Duration::from_millis(50),
            vec![Aggregate::count(), Aggregate::sum("value")],
        )),
    );
    let epochs = Epochs::default();
    g.add_sink(win, Arc::new(EpochSink(epochs.clone())));
    (g, epochs)
}

fn run(g: JobGraph) -> sabot_runtime::Result<JobResult> {
    g.build()?.run()
}

/// Runs the job at `from` until it fails after a checkpoint, then again at `to` on the
/// same folder; the committed output must equal a run without failure.
fn crash_and_resume(state: StateConfig, from: usize, to: usize) {
    let (g, reference) = job(None, &state, None, 2);
    run(g).unwrap();
    let mut expected = reference.all();
    expected.sort();
    assert!(expected.len() > 5_000, "{} windows", expected.len());

    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let (g, first) = job(Some(dir.path()), &state, Some(fail.clone()), from);
    let e = run(g).unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert!(!fail.load(Ordering::SeqCst), "the failure was not injected");

    let (g, second) = job(Some(dir.path()), &state, None, to);
    let result = run(g).unwrap();
    let restored = result.restored_from.expect("the second run restores");
    let mut got = first.committed_up_to(restored);
    got.extend(second.all());
    got.sort();
    assert_eq!(got.len(), expected.len(), "rows lost or duplicated");
    assert_eq!(got, expected);
    // Old checkpoints were pruned to the last three.
    assert!(
        LocalStorage::open(dir.path())
            .unwrap()
            .completed()
            .unwrap()
            .len()
            <= 3
    );
}

#[test]
fn a_failed_job_resumes_from_its_checkpoint_with_memory_state() {
    crash_and_resume(StateConfig::memory(), 2, 2);
}

#[test]
fn a_failed_job_resumes_from_its_checkpoint_with_rocksdb_state() {
    let work = tempfile::tempdir().unwrap();
    let state = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(work.path());
    crash_and_resume(state, 2, 2);
}

#[test]
fn a_failed_job_resumes_at_a_higher_parallelism() {
    crash_and_resume(StateConfig::memory(), 2, 3);
}

#[test]
fn a_failed_job_resumes_at_a_lower_parallelism() {
    let work = tempfile::tempdir().unwrap();
    let state = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(work.path());
    crash_and_resume(state, 4, 2);
}

#[test]
fn a_changed_max_parallelism_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _) = job(Some(dir.path()), &StateConfig::memory(), None, 2);
    let r = run(g).unwrap();
    assert!(!r.checkpoints.is_empty(), "no checkpoint completed");
    let (mut g, _) = job(Some(dir.path()), &StateConfig::memory(), None, 2);
    g.config_mut().max_parallelism = 64;
    let e = g.build().and_then(|j| j.start()).unwrap_err();
    assert!(e.to_string().contains("max parallelism"), "{e}");
}

#[test]
fn a_job_ends_with_a_final_checkpoint_covering_all_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let (g, epochs) = job(Some(dir.path()), &StateConfig::memory(), None, 2);
    let result = run(g).unwrap();
    let last = *result.checkpoints.last().expect("a final checkpoint");
    let all = epochs.all();
    assert!(all.len() > 5_000, "{} windows", all.len());
    assert_eq!(
        epochs.committed_up_to(last).len(),
        all.len(),
        "rows after the last completed checkpoint"
    );
    let newest = LocalStorage::open(dir.path())
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    assert_eq!(newest.id, last);

    // Started again on the folder, the finished job continues from its final checkpoint:
    // its sources are at their end, and nothing is produced twice.
    let (g, again) = job(Some(dir.path()), &StateConfig::memory(), None, 2);
    let result = run(g).unwrap();
    assert_eq!(result.restored_from, Some(last));
    assert!(again.all().is_empty(), "{} rows again", again.all().len());
}
