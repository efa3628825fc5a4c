//! Snapshot of 1 GiB of memory state (keys and values of 100 bytes): time, bytes written
//! and throughput, against writing the same bytes with one `fs::write` + fsync.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::core::{KeyGroup, KeyGroupRange};
use sabot::state::{MemoryBackend, StateBackend};

/// State size: SABOT_SNAPSHOT_MB (default 1024).
fn state_bytes() -> usize {
    std::env::var("SABOT_SNAPSHOT_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
        << 20
}

fn bench(c: &mut Criterion) {
    let all = KeyGroupRange::for_subtask(128, 1, 0);
    let mut b = MemoryBackend::new(128, all);
    let s = b.register("blob", "bytes").expect("register");
    let value = [7u8; 100];
    let entries = state_bytes() / 112;
    for i in 0..entries as u64 {
        let key = i.to_le_bytes();
        b.put(s, KeyGroup((i % 128) as u16), &key, b"", &value)
            .expect("put");
    }
    let dir = std::env::temp_dir().join("sabot-bench-snapshot");
    let info = b.snapshot(&dir, all).expect("snapshot");
    eprintln!(
        "state_snapshot: {} entries, {} bytes written per snapshot",
        entries, info.bytes
    );
    let raw = vec![1u8; info.bytes as usize];

    let mut g = c.benchmark_group("memory_state_snapshot");
    g.throughput(Throughput::Bytes(info.bytes));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("sabot_memory_snapshot", |bench| {
        bench.iter(|| black_box(b.snapshot(&dir, all).expect("snapshot").bytes))
    });
    g.bench_function("baseline_write_and_fsync_same_bytes", |bench| {
        let path = dir.join("raw.bin");
        bench.iter(|| {
            let mut f = File::create(&path).expect("create");
            f.write_all(&raw).expect("write");
            f.sync_all().expect("fsync");
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
