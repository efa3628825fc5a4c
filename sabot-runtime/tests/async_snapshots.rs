//! Asynchronous snapshots: an operator's deferred snapshot writing runs while its task
//! goes on processing, the checkpoint completes only after the writing, and a failed
//! write declines that checkpoint without failing the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sabot_checkpoint::storage::CheckpointStorage;
use sabot_core::{CheckpointId, RecordBatch, SchemaRef};
use sabot_operators::{
    CollectSink, MapFactory, Operator, OperatorError, OperatorFactory, Output, SnapshotWrite,
    TaskContext, VecSource,
};
use sabot_runtime::{CheckpointSettings, JobConfig, JobGraph, Partitioning};
use sabot_test_kit::{keyed_batches, keyed_schema};

/// What the probe operator's snapshots do.
#[derive(Debug, Default)]
struct Probe {
    /// Batches the operator has processed.
    processed: AtomicUsize,
    /// The first snapshot's write saw the operator process batches while it ran.
    overlapped: AtomicBool,
    /// Snapshots taken.
    snapshots: AtomicUsize,
    /// The first snapshot's write fails.
    fail_first: bool,
    /// The first snapshot's write finished.
    first_written: AtomicBool,
    /// Writes of snapshots taken after the final watermark (the end of input) fail.
    fail_after_end: bool,
    /// The final watermark passed.
    ended: AtomicBool,
}

#[derive(Debug)]
struct ProbeFactory(Arc<Probe>);

struct ProbeOp(Arc<Probe>);

impl OperatorFactory for ProbeFactory {
    fn name(&self) -> String {
        "probe".into()
    }
    fn output_schema(&self, input: &SchemaRef) -> sabot_operators::Result<SchemaRef> {
        Ok(input.clone())
    }
    fn create(&self, _: &SchemaRef, _: &TaskContext) -> sabot_operators::Result<Box<dyn Operator>> {
        Ok(Box::new(ProbeOp(self.0.clone())))
    }
}

impl Operator for ProbeOp {
    fn on_watermark(
        &mut self,
        wm: sabot_core::Timestamp,
        out: &mut Output,
    ) -> sabot_operators::Result<()> {
        if wm == sabot_core::Timestamp::MAX {
            self.0.ended.store(true, Ordering::SeqCst);
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> sabot_operators::Result<()> {
        self.0.processed.fetch_add(1, Ordering::SeqCst);
        out.batch(batch);
        Ok(())
    }

    fn snapshot_async(
        &mut self,
        target: &sabot_operators::SnapshotTarget,
    ) -> sabot_operators::Result<Option<SnapshotWrite>> {
        let n = self.0.snapshots.fetch_add(1, Ordering::SeqCst);
        let probe = self.0.clone();
        let target = target.clone();
        let dir = target.location("");
        let at = probe.processed.load(Ordering::SeqCst);
        let after_end = probe.ended.load(Ordering::SeqCst);
        Ok(Some(SnapshotWrite::new(move || {
            if probe.fail_after_end && after_end {
                return Err(failed(
                    &dir,
                    "injected failure after the end of input".into(),
                ));
            }
            if n == 0 {
                // Wait (up to 5 s) for the task to process 20 more batches: it can only
                // if this write does not hold it up.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if probe.processed.load(Ordering::SeqCst) >= at + 20 {
                        probe.overlapped.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                probe.first_written.store(true, Ordering::SeqCst);
                if probe.fail_first {
                    return Err(failed(&dir, "injected snapshot write failure".into()));
                }
            }
            target.write("probe", b"ok")?;
            Ok(())
        })))
    }
}

fn failed(path: &std::path::Path, reason: String) -> OperatorError {
    OperatorError::Snapshot {
        path: path.to_path_buf(),
        reason,
    }
}

fn run(probe: Arc<Probe>, dir: &std::path::Path) -> sabot_runtime::JobResult {
    let (r, rows) = try_run(probe, dir);
    assert_eq!(rows, 400_000);
    r.unwrap()
}

/// Runs the job; returns its result and the rows the sink received.
fn try_run(
    probe: Arc<Probe>,
    dir: &std::path::Path,
) -> (sabot_runtime::Result<sabot_runtime::JobResult>, usize) {
    let mut c = JobConfig::default();
    c.parallelism = 1;
    c.checkpoints = Some(CheckpointSettings::new(dir, Duration::from_millis(20)));
    let mut g = JobGraph::new(c);
    let src = g.add_source(Arc::new(VecSource::new(
        keyed_schema(),
        keyed_batches(3, 400_000, 500, 100, 1, 0),
    )));
    // Slow enough for a few checkpoints to happen while data flows.
    let slow = g.add_operator(
        src,
        Arc::new(MapFactory::new("slow", |b| {
            std::thread::sleep(Duration::from_micros(300));
            Ok(b)
        })),
    );
    let ex = g.add_exchange(slow, Partitioning::Hash(vec!["key".into()]));
    let p = g.add_operator(ex, Arc::new(ProbeFactory(probe)));
    let (sink, collected) = CollectSink::new();
    g.add_sink(p, Arc::new(sink));
    let r = g.build().unwrap().run();
    let rows: usize = collected.batches().iter().map(|b| b.num_rows()).sum();
    (r, rows)
}

#[test]
fn processing_goes_on_while_a_snapshot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(Probe::default());
    let r = run(probe.clone(), dir.path());
    assert!(
        probe.overlapped.load(Ordering::SeqCst),
        "the task stood still while its snapshot was written"
    );
    assert!(
        r.checkpoints.contains(&CheckpointId(1)),
        "{:?}",
        r.checkpoints
    );
    // Complete checkpoints hold what the deferred writes wrote.
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    for m in storage.completed().unwrap() {
        assert!(
            m.files.iter().any(|f| f.path.ends_with("probe")),
            "checkpoint {} lacks the operator's file: {:?}",
            m.id,
            m.files
        );
    }
}

#[test]
fn a_failed_snapshot_write_declines_its_checkpoint_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(Probe {
        fail_first: true,
        ..Probe::default()
    });
    let r = run(probe.clone(), dir.path());
    assert!(probe.first_written.load(Ordering::SeqCst));
    assert!(
        !r.checkpoints.contains(&CheckpointId(1)),
        "{:?}",
        r.checkpoints
    );
    assert!(!r.checkpoints.is_empty(), "later checkpoints complete");
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    assert!(
        storage
            .completed()
            .unwrap()
            .iter()
            .all(|m| m.id != CheckpointId(1))
    );
}

#[test]
fn a_failed_final_checkpoint_fails_the_job_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(Probe {
        fail_after_end: true,
        ..Probe::default()
    });
    // A watchdog: waiting forever for the final checkpoint fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || tx.send(try_run(probe, &path).0.map(|r| r.checkpoints)));
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the job hung when its final checkpoint failed");
    let e = sabot_core::ErrorChain(&r.unwrap_err()).to_string();
    assert!(e.contains("final checkpoint"), "{e}");
    assert!(e.contains("injected failure after the end of input"), "{e}");
    assert!(e.contains("run the job again"), "{e}");
}
