//! Random get and put of 100-byte values over 10M keys: Sabot's RocksDB state backend
//! against RocksDB's raw API on a database with the same settings, in the same run.
//! The raw baseline stores the same key bytes (key group, key length, key), loaded in
//! the same order, so both databases have the same shape and the difference is the cost
//! of the state layer itself.
//!
//! `SABOT_ROCKS_KEYS` sets the number of keys (default 10,000,000); `SABOT_BENCH_DIR` the
//! parent folder of the two databases (default: the system's temporary folder).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rocksdb::{BlockBasedOptions, Cache, DB, DBCompressionType, Options, WriteBatch, WriteOptions};
use sabot::core::key::hash_i64;
use sabot::core::random::SplitMix64;
use sabot::core::{KeyGroup, KeyGroupRange};
use sabot::state::{RocksDbBackend, RocksDbConfig, StateBackend};

const MAX_P: usize = 128;
const OPS: usize = 10_000;

fn keys() -> u64 {
    sabot_benches::env_u64("SABOT_ROCKS_KEYS", 10_000_000)
}

/// The raw database, tuned as `RocksDbConfig::default()` tunes Sabot's column families.
fn raw_db(path: &std::path::Path, config: &RocksDbConfig) -> DB {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.increase_parallelism(config.background_jobs);
    o.set_write_buffer_size(config.write_buffer_size);
    o.set_compression_type(DBCompressionType::Lz4);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(config.block_cache_size).expect("cache"));
    table.set_bloom_filter(10.0, false);
    o.set_block_based_table_factory(&table);
    DB::open(&o, path).expect("open raw database")
}

fn bench(c: &mut Criterion) {
    let n = keys();
    let parent: PathBuf = std::env::var_os("SABOT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent).expect("bench folder");
    let config = RocksDbConfig::default();
    let all = KeyGroupRange::for_subtask(MAX_P, 1, 0);
    let mut sabot =
        RocksDbBackend::open(&dir.path().join("sabot"), config.clone(), MAX_P, all).expect("open");
    let state = sabot.register("values", "bytes").expect("register");
    let raw = raw_db(&dir.path().join("raw"), &config);
    let mut no_wal = WriteOptions::default();
    no_wal.disable_wal(true);

    let value = [0x5au8; 100];
    let kg = |k: i64| KeyGroup::of_hash(hash_i64(k), MAX_P);
    // The bytes Sabot's backend stores for key `k` (see `RocksDbBackend`).
    let raw_key = |k: i64| {
        let mut b = [0u8; 14];
        b[..2].copy_from_slice(&kg(k).0.to_be_bytes());
        b[2..6].copy_from_slice(&8u32.to_le_bytes());
        b[6..].copy_from_slice(&k.to_le_bytes());
        b
    };
    eprintln!("state_rocksdb: loading {n} keys into each database");
    let mut batch = WriteBatch::default();
    for k in 0..n as i64 {
        sabot
            .put(state, kg(k), &k.to_le_bytes(), b"", &value)
            .expect("load");
        batch.put(raw_key(k), value);
        if batch.len() == 10_000 {
            raw.write_opt(std::mem::take(&mut batch), &no_wal)
                .expect("load raw");
        }
    }
    raw.write_opt(batch, &no_wal).expect("load raw");
    // Measure both databases at rest: no flush or compaction running or pending.
    let busy = |v: Option<u64>| v.unwrap_or(0) > 0;
    loop {
        let props = [
            "rocksdb.num-running-compactions",
            "rocksdb.compaction-pending",
            "rocksdb.num-running-flushes",
            "rocksdb.mem-table-flush-pending",
        ];
        let sabot_busy = props
            .iter()
            .any(|p| busy(sabot.property(state, p).expect("property")));
        let raw_busy = props
            .iter()
            .any(|p| busy(raw.property_int_value(*p).expect("property")));
        if !sabot_busy && !raw_busy {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let mut r = SplitMix64::new(21, 0);
    let picks: Vec<i64> = (0..OPS).map(|_| r.below(n) as i64).collect();

    let mut g = c.benchmark_group(format!("rocksdb_random_get_{}k_keys", n / 1000));
    g.throughput(Throughput::Elements(OPS as u64));
    let mut out = Vec::new();
    g.bench_function("sabot_rocksdb_backend", |b| {
        b.iter(|| {
            for &k in &picks {
                let found = sabot
                    .get(state, kg(k), &k.to_le_bytes(), b"", &mut out)
                    .expect("get");
                black_box((found, &out));
            }
        })
    });
    g.bench_function("baseline_raw_rocksdb", |b| {
        b.iter(|| {
            for &k in &picks {
                // Copied out, as the backend's `get` does.
                out.clear();
                let found = match raw.get_pinned(raw_key(k)).expect("get") {
                    Some(v) => {
                        out.extend_from_slice(&v);
                        true
                    }
                    None => false,
                };
                black_box((found, &out));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("rocksdb_random_put_{}k_keys", n / 1000));
    g.throughput(Throughput::Elements(OPS as u64));
    g.bench_function("sabot_rocksdb_backend", |b| {
        b.iter(|| {
            for &k in &picks {
                sabot
                    .put(state, kg(k), &k.to_le_bytes(), b"", &value)
                    .expect("put");
            }
        })
    });
    g.bench_function("baseline_raw_rocksdb", |b| {
        b.iter(|| {
            for &k in &picks {
                raw.put_opt(raw_key(k), value, &no_wal).expect("put");
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
