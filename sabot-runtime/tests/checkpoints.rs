//! Checkpoints in a running job: a job that fails after a completed checkpoint and is
//! started again on the same folder continues from it, and its committed output equals
//! the output of a run without failure (no loss, no duplicate), with memory and RocksDB
//! state, in exactly-once mode.

mod common;

use std::sync::Arc;

use sabot_checkpoint::storage::{CheckpointStorage, Store};
use sabot_state::{RocksDbConfig, StateConfig};

use common::memory_store::MemoryStore;
use common::{Chaos, Epochs, Fault, Setup, run};

/// Runs the job at `from` until it fails after a checkpoint, then again at `to` on the
/// same folder; the committed output must equal a run without failure.
fn crash_and_resume(state: StateConfig, from: usize, to: usize) {
    let setup = Setup::new(240_000, from, state);
    let expected = setup.reference();
    assert!(expected.len() > 5_000, "{} windows", expected.len());

    let dir = tempfile::tempdir().unwrap();
    let epochs = Epochs::default();
    let chaos = Chaos::new(Fault::AfterCheckpoint(dir.path().to_path_buf().into(), 0));
    let e = run(setup.job(Some(dir.path()), Some(chaos.clone()), &epochs)).unwrap_err();
    let e = sabot_test_kit::error_chain(&e);
    assert!(e.contains("injected failure"), "{e}");
    assert!(chaos.fired(), "the failure was not injected");

    let second = Setup {
        parallelism: to,
        ..setup
    };
    let result = run(second.job(Some(dir.path()), None, &epochs)).unwrap();
    assert!(result.restored_from.is_some(), "the second run restores");
    let got = epochs.committed();
    assert_eq!(got.len(), expected.len(), "rows lost or duplicated");
    assert_eq!(got, expected);
    assert_eq!(epochs.pending(), 0);
    // Old checkpoints were pruned to the last three.
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let completed = storage.completed().unwrap();
    assert!(completed.len() <= 3);
    // Each manifest, built from what the tasks acknowledged (nothing read again at
    // completion), lists exactly the files in its folder, and they verify.
    for m in &completed {
        let mut on_disk = files_under(&storage.dir(m.id), "");
        on_disk.retain(|f| f != "_manifest");
        let listed: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(listed, on_disk, "checkpoint {}", m.id);
        assert!(listed.iter().any(|f| f.starts_with("source-")));
        assert!(listed.iter().any(|f| f.starts_with("op-")));
        storage.verify(m).unwrap();
    }
}

/// Every file under `dir`, as `/`-separated paths below it, sorted.
fn files_under(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path(), &format!("{name}/")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
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

/// The checkpoints go through the storage interface only: a job checkpointing into a
/// store that keeps nothing on the local disk (every staged RocksDB file uploaded and
/// removed, every restore downloading) resumes exactly, at another parallelism too.
#[test]
fn a_failed_job_resumes_from_checkpoints_in_another_store() {
    for (from, to) in [(2, 2), (2, 3)] {
        let work = tempfile::tempdir().unwrap();
        let state = StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(work.path());
        let store = MemoryStore::new();
        let setup = Setup {
            store: Some(store.clone()),
            ..Setup::new(120_000, from, state)
        };
        let expected = setup.reference();
        let dir = tempfile::tempdir().unwrap();
        let epochs = Epochs::default();
        let as_store: Arc<dyn Store> = store.clone();
        let chaos = Chaos::new(Fault::AfterCheckpoint(as_store.into(), 0));
        let e = run(setup.job(Some(dir.path()), Some(chaos.clone()), &epochs)).unwrap_err();
        let e = sabot_test_kit::error_chain(&e);
        assert!(e.contains("injected failure"), "{e}");
        let second = Setup {
            parallelism: to,
            ..setup
        };
        let result = run(second.job(Some(dir.path()), None, &epochs)).unwrap();
        assert!(result.restored_from.is_some(), "the second run restores");
        assert_eq!(epochs.committed(), expected, "{from} -> {to}");
        // Nothing of the checkpoints is in the folder; the store holds them, RocksDB
        // files among them, and the restore downloaded them.
        let local: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("chk-") || n == "_latest")
            .collect();
        assert!(
            local.is_empty(),
            "checkpoint files on the local disk: {local:?}"
        );
        let names = store.names();
        assert!(names.iter().any(|n| n.ends_with(".sst")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("_manifest")));
        assert!(
            store
                .calls
                .lock()
                .unwrap()
                .get("fetch")
                .copied()
                .unwrap_or(0)
                > 0
        );
        let storage = CheckpointStorage::new(store.clone());
        for m in storage.completed().unwrap() {
            storage.verify(&m).unwrap();
        }
    }
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
    let setup = Setup::new(240_000, 2, StateConfig::memory());
    let r = run(setup.job(Some(dir.path()), None, &Epochs::default())).unwrap();
    assert!(!r.checkpoints.is_empty(), "no checkpoint completed");
    let mut g = setup.job(Some(dir.path()), None, &Epochs::default());
    g.config_mut().max_parallelism = 64;
    let e = g.build().and_then(|j| j.start()).unwrap_err();
    assert!(e.to_string().contains("max parallelism"), "{e}");
}

#[test]
fn a_job_ends_with_a_final_checkpoint_covering_all_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(240_000, 2, StateConfig::memory());
    let expected = setup.reference();
    let epochs = Epochs::default();
    let result = run(setup.job(Some(dir.path()), None, &epochs)).unwrap();
    let last = *result.checkpoints.last().expect("a final checkpoint");
    // Everything was committed by checkpoint completions: nothing is left pending and
    // nothing came after the final barrier (the sink checks that).
    assert_eq!(epochs.pending(), 0);
    assert_eq!(epochs.committed(), expected);
    let newest = CheckpointStorage::open(dir.path())
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    assert_eq!(newest.id, last);

    // Started again on the folder, the finished job continues from its final checkpoint:
    // its sources are at their end, and nothing is produced twice.
    let result = run(setup.job(Some(dir.path()), None, &epochs)).unwrap();
    assert_eq!(result.restored_from, Some(last));
    assert_eq!(epochs.committed(), expected, "a rerun changed the output");
}

/// With checkpoints every millisecond, periodic checkpoints keep coming while the final
/// one is in flight: none may be triggered after it, and the abort of one that was (or of
/// an earlier one) must not fail the end of the job.
#[test]
fn checkpoints_every_millisecond_end_cleanly() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup {
            interval: std::time::Duration::from_millis(1),
            ..Setup::new(20_000, 4, StateConfig::memory())
        };
        let epochs = Epochs::default();
        let r = run(setup.job(Some(dir.path()), None, &epochs));
        assert!(r.is_ok(), "round {round}: {:?}", r.err());
        assert_eq!(epochs.pending(), 0);
    }
}

#[test]
fn a_changed_job_graph_is_a_clear_error_not_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(20_000, 2, StateConfig::memory());
    let r = run(setup.job(Some(dir.path()), None, &Epochs::default())).unwrap();
    assert!(!r.checkpoints.is_empty());
    // The same job with one more operator before the window: the window's state would
    // be looked for under another node.
    let changed = Setup {
        extra_operator: true,
        ..setup
    };
    let g = changed.job(Some(dir.path()), None, &Epochs::default());
    let e = g.build().and_then(|j| j.start()).unwrap_err().to_string();
    assert!(e.contains("different job graph"), "{e}");
    assert!(
        e.contains("node 4 was `key_by(key)`, is now `extra`"),
        "{e}"
    );
}

#[test]
fn a_failing_checkpoint_folder_fails_the_job_instead_of_hanging_it() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    // The first checkpoint comes at once, the next 300 ms later: none is in flight
    // while the folder is swapped, so only the coordinator meets the broken folder.
    let setup = Setup {
        interval: std::time::Duration::from_millis(300),
        ..Setup::new(1_000_000, 2, StateConfig::memory())
    };
    let job = setup
        .job(Some(&ckpt), None, &Epochs::default())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while CheckpointStorage::open(&ckpt)
        .and_then(|s| s.completed())
        .map_or(true, |c| c.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The folder turns into a file: the next checkpoint cannot be begun.
    std::fs::rename(&ckpt, dir.path().join("moved")).unwrap();
    std::fs::write(&ckpt, b"not a folder").unwrap();
    // A watchdog: a hang fails the test instead of holding up the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(job.join()));
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the job hung after its checkpoint coordinator failed");
    let e = r.unwrap_err().to_string();
    assert!(e.contains(&ckpt.display().to_string()), "{e}");
}
