//! LRU eviction of evictable states in a memory backend with a size bound: against a
//! model of least-recently-used order; other states are never evicted.

use proptest::prelude::*;
use sabot_core::{KeyGroup, KeyGroupRange};
use sabot_state::{KeyedState, MemoryBackend, StateBackend, StateDescriptor};

const MAX_P: usize = 16;

/// Bytes one cache entry counts for: composite key (4 + 1), 8-byte value, 64 overhead.
const ENTRY: usize = 4 + 1 + 8 + 64;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Get(u8),
    Delete(u8),
    Merge(u8),
    Keep(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        4 => (0u8..8).prop_map(Op::Get),
        1 => (0u8..8).prop_map(Op::Delete),
        1 => (0u8..8).prop_map(Op::Merge),
        2 => (0u8..8).prop_map(Op::Keep),
    ]
}

fn kg(k: u8) -> KeyGroup {
    KeyGroup(u16::from(k) % MAX_P as u16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn evicts_least_recently_used_entries_of_evictable_states_only(
        cap in 1usize..6,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let all = KeyGroupRange::for_subtask(MAX_P, 1, 0);
        let mut b = MemoryBackend::new(MAX_P, all).with_eviction_bound(cap * ENTRY);
        let cache = b.register("cache", "v").unwrap();
        let keep = b.register("keep", "v").unwrap();
        b.set_evictable(cache).unwrap();
        // Model: keys by recency, most recent last, with their values.
        let mut order: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut kept: Vec<u8> = Vec::new();
        let mut evicted = 0u64;
        let mut out = Vec::new();
        let value = |v: u8| vec![v; 8];
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    b.put(cache, kg(k), &[k], b"", &value(v)).unwrap();
                    order.retain(|(x, _)| *x != k);
                    order.push((k, value(v)));
                }
                Op::Get(k) => {
                    let found = b.get(cache, kg(k), &[k], b"", &mut out).unwrap();
                    let pos = order.iter().position(|(x, _)| *x == k);
                    prop_assert_eq!(found, pos.is_some(), "key {} present", k);
                    if let Some(i) = pos {
                        let e = order.remove(i);
                        prop_assert_eq!(&out, &e.1);
                        order.push(e);
                    }
                }
                Op::Delete(k) => {
                    let existed = b.delete(cache, kg(k), &[k], b"").unwrap();
                    let pos = order.iter().position(|(x, _)| *x == k);
                    prop_assert_eq!(existed, pos.is_some());
                    if let Some(i) = pos {
                        order.remove(i);
                    }
                }
                Op::Merge(k) => {
                    // Rewrite the whole value with update (one lookup): counts as a use.
                    b.update(cache, kg(k), &[k], b"", &mut |old, new| {
                        new.extend_from_slice(old.unwrap_or(&[0; 8]));
                        Ok(())
                    })
                    .unwrap();
                    let pos = order.iter().position(|(x, _)| *x == k);
                    let e = match pos {
                        Some(i) => order.remove(i),
                        None => (k, vec![0; 8]),
                    };
                    order.push(e);
                }
                Op::Keep(k) => {
                    b.put(keep, kg(k), &[k], b"", &[k; 100]).unwrap();
                    if !kept.contains(&k) {
                        kept.push(k);
                    }
                }
            }
            while order.len() > cap {
                order.remove(0);
                evicted += 1;
            }
            prop_assert_eq!(b.evictable_bytes(), order.len() * ENTRY);
        }
        prop_assert_eq!(b.evicted(), evicted);
        for (k, v) in &order {
            prop_assert!(b.get(cache, kg(*k), &[*k], b"", &mut out).unwrap());
            prop_assert_eq!(&out, v);
        }
        // The other state is over the bound by itself, and keeps every entry.
        for k in kept {
            prop_assert!(b.get(keep, kg(k), &[k], b"", &mut out).unwrap());
        }
    }
}

#[test]
fn evictable_value_state_forgets_cold_keys_and_plain_state_keeps_all() {
    let all = KeyGroupRange::for_subtask(128, 1, 0);
    let backend = MemoryBackend::new(128, all).with_eviction_bound(100 * 1024);
    let mut st = KeyedState::new(backend, 128);
    let cache = st
        .value_state::<u64>(StateDescriptor::new("lookups").evictable())
        .unwrap();
    let totals = st
        .value_state::<u64>(StateDescriptor::new("totals"))
        .unwrap();
    for k in 0..10_000i64 {
        st.set_current_key_i64(k);
        cache.update(&mut st, &(k as u64)).unwrap();
        totals.update(&mut st, &(k as u64)).unwrap();
        // Key 0 is read all along: it stays.
        st.set_current_key_i64(0);
        assert_eq!(cache.get(&mut st).unwrap(), Some(0));
    }
    let live = (0..10_000i64)
        .filter(|&k| {
            st.set_current_key_i64(k);
            cache.get(&mut st).unwrap().is_some()
        })
        .count();
    assert!(live > 100 && live < 2_000, "{live} cache entries live");
    st.set_current_key_i64(9_999);
    assert_eq!(cache.get(&mut st).unwrap(), Some(9_999), "the newest stays");
    st.set_current_key_i64(1);
    assert_eq!(cache.get(&mut st).unwrap(), None, "an old cold key is gone");
    for k in 0..10_000i64 {
        st.set_current_key_i64(k);
        assert_eq!(totals.get(&mut st).unwrap(), Some(k as u64));
    }
    assert!(st.backend().evicted() >= 8_000);
}
