//! `ValueState<u64>` get+put on the memory backend over 1M keys, key by key and with a
//! prefetch hint a few keys ahead, against a raw `hashbrown::HashMap<u64, u64>` doing the
//! same read-modify-write.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::core::KeyGroupRange;
use sabot::core::random::SplitMix64;
use sabot::state::{KeyedState, MemoryBackend, StateDescriptor};

const KEYS: u64 = 1 << 20;
const OPS: usize = 1 << 18;
/// How many keys ahead the prefetching loop hints.
const AHEAD: usize = 8;

fn bench(c: &mut Criterion) {
    let mut r = SplitMix64::new(9, 0);
    let keys: Vec<i64> = (0..OPS).map(|_| r.below(KEYS) as i64).collect();

    let backend = MemoryBackend::new(128, KeyGroupRange::for_subtask(128, 1, 0));
    let mut st = KeyedState::new(backend, 128);
    let count = st
        .value_state::<u64>(StateDescriptor::new("count"))
        .expect("register");
    for k in 0..KEYS as i64 {
        st.set_current_key_i64(k);
        count.update(&mut st, &0).expect("put");
    }
    let mut raw: hashbrown::HashMap<u64, u64> = (0..KEYS).map(|k| (k, 0)).collect();

    let mut g = c.benchmark_group("value_state_get_put_1m_keys");
    g.throughput(Throughput::Elements(OPS as u64));
    g.bench_function("sabot_value_state_memory", |b| {
        b.iter(|| {
            for &k in &keys {
                st.set_current_key_i64(k);
                let n = count.get(&mut st).expect("get").unwrap_or(0);
                count.update(&mut st, &(n + 1)).expect("put");
            }
            black_box(&st);
        })
    });
    // The same loop with a hint 8 keys ahead, as the keyed process operator gives while
    // it walks a batch: the memory loads of the keys ahead overlap.
    g.bench_function("sabot_value_state_memory_prefetch", |b| {
        b.iter(|| {
            for (i, &k) in keys.iter().enumerate() {
                if let Some(&ahead) = keys.get(i + AHEAD) {
                    st.prefetch_key_i64(ahead);
                }
                st.set_current_key_i64(k);
                let n = count.get(&mut st).expect("get").unwrap_or(0);
                count.update(&mut st, &(n + 1)).expect("put");
            }
            black_box(&st);
        })
    });
    g.bench_function("baseline_raw_hashbrown", |b| {
        b.iter(|| {
            for &k in &keys {
                let n = raw.get(&(k as u64)).copied().unwrap_or(0);
                raw.insert(k as u64, n + 1);
            }
            black_box(&raw);
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
