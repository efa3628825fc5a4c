//! Injected failures at a random point — while processing, while taking a snapshot,
//! while restoring — in a keyed window job over 1M events with checkpoints every 200 ms,
//! with memory and RocksDB state: the job is started again on its checkpoint folder until
//! it finishes, and the committed output equals the output of a run without failure.
//!
//! Each test prints its seed; `SABOT_FAULT_SEED=<seed>` reproduces its fault points.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use sabot_core::random::SplitMix64;
use sabot_state::{RocksDbConfig, StateConfig};
use sabot_test_kit::seed_from_env;

use common::{Chaos, Epochs, Fault, Setup, run};

const EVENTS: usize = 1_000_000;

fn setup(state: StateConfig) -> Setup {
    Setup {
        interval: Duration::from_millis(200),
        ..Setup::new(EVENTS, 2, state)
    }
}

/// The fault-free output (the same for every backend).
fn expected() -> &'static Vec<String> {
    static OUT: OnceLock<Vec<String>> = OnceLock::new();
    OUT.get_or_init(|| setup(StateConfig::memory()).reference())
}

fn rng(test: &str) -> SplitMix64 {
    println!("{test}:");
    SplitMix64::new(seed_from_env("SABOT_FAULT_SEED"), 0)
}

/// Runs the job on one folder with the faults of `runs` in turn (one fault per run,
/// the last run fault-free) and checks the committed output.
fn run_until_done(state: StateConfig, dir: &tempfile::TempDir, faults: Vec<Fault>) {
    let setup = setup(state);
    let epochs = Epochs::default();
    let mut failures = 0;
    for fault in faults.into_iter().chain([Fault::Never]) {
        println!("run with fault {fault:?}");
        let chaos = Chaos::new(fault.clone());
        match run(setup.job(Some(dir.path()), Some(chaos.clone()), &epochs)) {
            Ok(r) => {
                assert!(!chaos.fired());
                println!("finished; restored from {:?}", r.restored_from);
                break;
            }
            Err(e) => {
                assert!(chaos.fired(), "failed without the fault: {e}");
                let e = sabot_core::ErrorChain(&e).to_string();
                assert!(e.contains("injected failure"), "{e}");
                failures += 1;
            }
        }
    }
    println!("{failures} failures");
    let got = epochs.committed();
    let want = expected();
    assert_eq!(got.len(), want.len(), "rows lost or duplicated");
    assert!(
        got == *want,
        "committed rows differ from the fault-free run"
    );
    assert_eq!(epochs.pending(), 0);
}

/// A failure while processing batch `n`, `n` random over the run.
fn processing(state: StateConfig, test: &str) {
    let n = rng(test).below(EVENTS as u64 / 500) as usize;
    let dir = tempfile::tempdir().unwrap();
    run_until_done(state, &dir, vec![Fault::Processing(n)]);
}

/// A failure while a source subtask writes its part of a snapshot, at a random one of
/// the first checkpoints; then, after the restart, another in processing.
fn snapshot(state: StateConfig, test: &str) {
    let mut r = rng(test);
    let n = r.below(16) as usize;
    let later = r.below(EVENTS as u64 / 500 / 2) as usize;
    let dir = tempfile::tempdir().unwrap();
    run_until_done(
        state,
        &dir,
        vec![Fault::Snapshot(n), Fault::Processing(later)],
    );
}

/// A failure in processing at a random point after a checkpoint completed, then one
/// while the next run restores from it.
fn restore(state: StateConfig, test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let n = rng(test).below(EVENTS as u64 / 500 / 2) as usize;
    let after = Fault::AfterCheckpoint(dir.path().to_path_buf().into(), n);
    run_until_done(state, &dir, vec![after, Fault::Restore]);
}

fn rocksdb(work: &tempfile::TempDir) -> StateConfig {
    StateConfig::rocksdb(RocksDbConfig::default()).with_working_dir(work.path())
}

#[test]
fn failure_while_processing_memory() {
    processing(StateConfig::memory(), "failure_while_processing_memory");
}

#[test]
fn failure_while_processing_rocksdb() {
    let work = tempfile::tempdir().unwrap();
    processing(rocksdb(&work), "failure_while_processing_rocksdb");
}

#[test]
fn failure_while_snapshotting_memory() {
    snapshot(StateConfig::memory(), "failure_while_snapshotting_memory");
}

#[test]
fn failure_while_snapshotting_rocksdb() {
    let work = tempfile::tempdir().unwrap();
    snapshot(rocksdb(&work), "failure_while_snapshotting_rocksdb");
}

#[test]
fn failure_while_restoring_memory() {
    restore(StateConfig::memory(), "failure_while_restoring_memory");
}

#[test]
fn failure_while_restoring_rocksdb() {
    let work = tempfile::tempdir().unwrap();
    restore(rocksdb(&work), "failure_while_restoring_rocksdb");
}
