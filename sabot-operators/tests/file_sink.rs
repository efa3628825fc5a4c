//! The transactional CSV sink's two-phase commit: nothing is visible before the
//! checkpoint covering it completes; a restart commits what the restored checkpoint
//! covers and drops the rest.

use std::path::Path;
use std::sync::Arc;

use sabot_checkpoint::storage::CheckpointStorage;
use sabot_core::CheckpointId;
use sabot_core::arrow::array::Int64Array;
use sabot_core::arrow::datatypes::{DataType, Field, Schema};
use sabot_core::arrow::record_batch::RecordBatch;
use sabot_core::metrics::Metrics;
use sabot_operators::{SinkFactory, TaskContext, TransactionalCsvSink};

fn batch(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
}

/// Visible (committed) rows, sorted.
fn visible(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            let text = std::fs::read_to_string(&p).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("v"), "header of {name}");
            rows.extend(lines.map(str::to_owned));
        }
    }
    rows.sort();
    rows
}

fn complete(storage: &CheckpointStorage, id: u64) {
    storage
        .begin(CheckpointId(id))
        .unwrap()
        .commit(0, Default::default())
        .unwrap();
}

#[test]
fn parts_become_visible_only_after_their_checkpoint_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (out, ck) = (dir.path().join("out"), dir.path().join("ck"));
    let storage = CheckpointStorage::open(&ck).unwrap();
    let factory = TransactionalCsvSink::new(&out, "t");
    let schema = batch(&[]).schema();
    let ctx = |restored: Option<u64>| {
        TaskContext::new(0, 1, 8, Metrics::new()).with_checkpoints(&ck, restored.map(CheckpointId))
    };

    let mut sink = factory.create(&schema, &ctx(None)).unwrap();
    sink.write(batch(&[1, 2])).unwrap();
    sink.on_checkpoint(CheckpointId(1)).unwrap();
    assert!(
        visible(&out).is_empty(),
        "visible before checkpoint 1 completed"
    );
    complete(&storage, 1);
    sink.write(batch(&[3])).unwrap();
    sink.on_checkpoint(CheckpointId(2)).unwrap();
    assert!(
        visible(&out).is_empty(),
        "visible before the sink heard of it"
    );
    sink.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    assert_eq!(
        visible(&out),
        ["1", "2"],
        "checkpoint 1 completed: its part is committed"
    );
    sink.write(batch(&[4])).unwrap();
    // Crash: the writer goes away with part 2 pending and 4 in progress.
    drop(sink);

    // A restart from checkpoint 1: part 2 and the in-progress rows are produced again by
    // the replay, so they are dropped here.
    let mut sink = factory.create(&schema, &ctx(Some(1))).unwrap();
    assert_eq!(visible(&out), ["1", "2"]);
    sink.write(batch(&[3, 4])).unwrap();
    // The end of input: the final checkpoint's barrier, the end, then its completion.
    sink.on_checkpoint(CheckpointId(3)).unwrap();
    sink.finish().unwrap();
    assert_eq!(
        visible(&out),
        ["1", "2"],
        "final checkpoint not complete yet"
    );
    sink.notify_checkpoint_complete(CheckpointId(3)).unwrap();
    assert_eq!(visible(&out), ["1", "2", "3", "4"]);
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with('.').then_some(n)
        })
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn a_restart_commits_the_parts_its_checkpoint_covers() {
    let dir = tempfile::tempdir().unwrap();
    let (out, ck) = (dir.path().join("out"), dir.path().join("ck"));
    let storage = CheckpointStorage::open(&ck).unwrap();
    let factory = TransactionalCsvSink::new(&out, "t");
    let schema = batch(&[]).schema();
    let ctx = |restored: Option<u64>| {
        TaskContext::new(0, 1, 8, Metrics::new()).with_checkpoints(&ck, restored.map(CheckpointId))
    };
    let mut sink = factory.create(&schema, &ctx(None)).unwrap();
    sink.write(batch(&[1])).unwrap();
    sink.on_checkpoint(CheckpointId(1)).unwrap();
    // Checkpoint 1 completes, but the process dies before the sink hears of it.
    complete(&storage, 1);
    drop(sink);
    assert!(visible(&out).is_empty());
    let _sink = factory.create(&schema, &ctx(Some(1))).unwrap();
    assert_eq!(visible(&out), ["1"]);
}

#[test]
fn rows_after_the_final_barrier_are_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (out, ck) = (dir.path().join("out"), dir.path().join("ck"));
    let factory = TransactionalCsvSink::new(&out, "t");
    let schema = batch(&[]).schema();
    let ctx = TaskContext::new(0, 1, 8, Metrics::new()).with_checkpoints(&ck, None);
    let mut sink = factory.create(&schema, &ctx).unwrap();
    sink.write(batch(&[1])).unwrap();
    sink.on_checkpoint(CheckpointId(1)).unwrap();
    sink.write(batch(&[2])).unwrap();
    let e = sink.finish().unwrap_err().to_string();
    assert!(e.contains("after the final checkpoint"), "{e}");
    assert!(e.contains(".t-0.inprogress"), "names the file: {e}");
}

#[test]
fn without_checkpoints_the_end_of_input_commits_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let factory = TransactionalCsvSink::new(&out, "t");
    let schema = batch(&[]).schema();
    let mut sink = factory
        .create(&schema, &TaskContext::new(0, 1, 8, Metrics::new()))
        .unwrap();
    sink.write(batch(&[5, 6])).unwrap();
    assert!(visible(&out).is_empty());
    sink.finish().unwrap();
    assert_eq!(visible(&out), ["5", "6"]);
}

#[test]
fn output_committed_after_the_restored_checkpoint_is_an_error_not_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (out, ck) = (dir.path().join("out"), dir.path().join("ck"));
    let factory = TransactionalCsvSink::new(&out, "t");
    let schema = batch(&[]).schema();
    let ctx = |subtask: usize, p: usize, restored: Option<u64>| {
        TaskContext::new(subtask, p, 8, Metrics::new())
            .with_checkpoints(&ck, restored.map(CheckpointId))
    };
    // Subtask 1 of 2 committed checkpoints 3 and 5.
    let mut sink = factory.create(&schema, &ctx(1, 2, None)).unwrap();
    for k in [3, 5] {
        sink.write(batch(&[k as i64])).unwrap();
        sink.on_checkpoint(CheckpointId(k)).unwrap();
        sink.notify_checkpoint_complete(CheckpointId(k)).unwrap();
    }
    drop(sink);
    // Continuing from 5 (or later) is fine, at any parallelism.
    factory.create(&schema, &ctx(0, 3, Some(5))).unwrap();
    // From 4, or from nothing, checkpoint 5's rows would be committed again.
    for (restored, says) in [(Some(4), "after checkpoint 4"), (None, "no checkpoint")] {
        let e = factory
            .create(&schema, &ctx(0, 1, restored))
            .err()
            .expect("output after the restored checkpoint");
        let text = e.to_string();
        assert!(text.contains("t-1-00000000000000000005.csv"), "{text}");
        assert!(text.contains("committed by checkpoint 5"), "{text}");
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(visible(&out), ["3", "5"], "nothing was touched");
    // Another sink's files in the same folder are not this sink's.
    TransactionalCsvSink::new(&out, "t-1")
        .create(&schema, &ctx(0, 1, None))
        .unwrap();
}
