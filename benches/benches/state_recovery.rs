//! Recovery from a checkpoint of about 1 GB of RocksDB state (10M keys, 100 random
//! bytes each, loaded through the state backend): the time to restore a fresh backend
//! from the snapshot, at the same parallelism (the whole key-group range) and after a
//! rescale to half of it, next to RocksDB opening a hard-linked copy of the same
//! checkpoint with its raw API in the same run (the floor: what reopening the files
//! costs at all). Snapshot time and size are printed first.
//!
//! `SABOT_RECOVERY_KEYS` sets the number of keys (default 10,000,000); `SABOT_BENCH_DIR`
//! the parent folder (default: the system's temporary folder).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use sabot::core::key::hash_i64;
use sabot::core::random::SplitMix64;
use sabot::core::{KeyGroup, KeyGroupRange};
use sabot::state::{ROCKSDB_CHECKPOINT_DIR, RocksDbBackend, RocksDbConfig, StateBackend};

const MAX_P: usize = 128;

fn keys() -> u64 {
    sabot_benches::env_u64("SABOT_RECOVERY_KEYS", 10_000_000)
}

/// A fresh backend for `range` restored from `snapshot`; returns the time taken.
fn restore(parent: &Path, snapshot: &Path, range: KeyGroupRange) -> Duration {
    let started = Instant::now();
    let mut b =
        RocksDbBackend::open_temporary(parent, "restore", RocksDbConfig::default(), MAX_P, range)
            .expect("open");
    b.register("values", "bytes").expect("register");
    b.restore(&[snapshot.to_path_buf()]).expect("restore");
    let took = started.elapsed();
    drop(b);
    took
}

/// RocksDB's own floor: opening a hard-linked copy of the checkpoint.
fn raw_open(parent: &Path, checkpoint: &Path) -> Duration {
    let copy = tempfile::tempdir_in(parent).expect("folder");
    let started = Instant::now();
    for e in std::fs::read_dir(checkpoint).expect("read checkpoint") {
        let from = e.expect("entry").path();
        let to = copy.path().join(from.file_name().expect("name"));
        if from.extension().is_some_and(|x| x == "sst") {
            std::fs::hard_link(&from, &to).expect("link");
        } else {
            std::fs::copy(&from, &to).expect("copy");
        }
    }
    let mut o = Options::default();
    o.create_if_missing(false);
    let cfs = DB::list_cf(&o, copy.path()).expect("column families");
    let mut cf_opts = Options::default();
    cf_opts.set_merge_operator_associative("sabot-concat", |_, e, ops| {
        let mut v = e.map(<[u8]>::to_vec).unwrap_or_default();
        ops.iter().for_each(|o| v.extend_from_slice(o));
        Some(v)
    });
    let db = DB::open_cf_descriptors(
        &o,
        copy.path(),
        cfs.iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone())),
    )
    .expect("open");
    let took = started.elapsed();
    drop(db);
    took
}

fn bench(c: &mut Criterion) {
    let n = keys();
    let parent: PathBuf = std::env::var_os("SABOT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent).expect("bench folder");
    let all = KeyGroupRange::for_subtask(MAX_P, 1, 0);
    let mut b = RocksDbBackend::open(
        &dir.path().join("live"),
        RocksDbConfig::default(),
        MAX_P,
        all,
    )
    .expect("open");
    let state = b.register("values", "bytes").expect("register");
    eprintln!("state_recovery: loading {n} keys of 100 random bytes");
    let mut r = SplitMix64::new(3, 0);
    let mut value = [0u8; 104];
    let started = Instant::now();
    for k in 0..n as i64 {
        for chunk in value.chunks_mut(8) {
            chunk.copy_from_slice(&r.next_u64().to_le_bytes());
        }
        let kg = KeyGroup::of_hash(hash_i64(k), MAX_P);
        b.put(state, kg, &k.to_le_bytes(), b"", &value[..100])
            .expect("load");
    }
    eprintln!("state_recovery: loaded in {:.1?}", started.elapsed());
    let snap = dir.path().join("snapshot");
    let started = Instant::now();
    let info = b.snapshot(&snap, all).expect("snapshot");
    eprintln!(
        "state_recovery: snapshot of {n} keys: {:.2?}, {} bytes ({:.2} GiB) in {} files",
        started.elapsed(),
        info.bytes,
        info.bytes as f64 / (1u64 << 30) as f64,
        info.files.len()
    );
    drop(b);

    let mut g = c.benchmark_group(format!("rocksdb_recovery_{}k_keys", n / 1000));
    g.bench_function("sabot_restore_all_key_groups", |bch| {
        bch.iter_custom(|iters| (0..iters).map(|_| restore(dir.path(), &snap, all)).sum())
    });
    let half = KeyGroupRange::for_subtask(MAX_P, 2, 0);
    g.bench_function("sabot_restore_half_the_key_groups", |bch| {
        bch.iter_custom(|iters| (0..iters).map(|_| restore(dir.path(), &snap, half)).sum())
    });
    let checkpoint = snap.join(ROCKSDB_CHECKPOINT_DIR);
    g.bench_function("baseline_raw_rocksdb_open", |bch| {
        bch.iter_custom(|iters| (0..iters).map(|_| raw_open(dir.path(), &checkpoint)).sum())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
