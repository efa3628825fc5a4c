//! Typed keyed state over every backend: each primitive, namespaces, TTL in both time
//! domains, snapshot and restore.

use std::time::Duration;

use sabot_core::KeyGroupRange;
use sabot_state::{
    AggregateFunction, KeyedState, MemoryBackend, StateBackend, StateDescriptor, StateError, Ttl,
};

const MAX_P: usize = 128;

fn all() -> KeyGroupRange {
    KeyGroupRange::for_subtask(MAX_P, 1, 0)
}

struct Avg;

impl AggregateFunction for Avg {
    type In = i64;
    type Acc = (i64, u64);
    type Out = f64;
    fn create(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, acc: (i64, u64), v: i64) -> (i64, u64) {
        (acc.0 + v, acc.1 + 1)
    }
    fn result(&self, acc: &(i64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
}

macro_rules! keyed_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            fn state() -> KeyedState<impl StateBackend> {
                KeyedState::new(($make)(all()), MAX_P)
            }

            #[test]
            fn value_state_per_key_and_namespace() {
                let mut st = state();
                let v = st.value_state::<String>(StateDescriptor::new("v")).unwrap();
                st.set_current_key_i64(1);
                assert_eq!(v.get(&mut st).unwrap(), None);
                v.update(&mut st, &"one".to_owned()).unwrap();
                st.set_current_key_i64(2);
                assert_eq!(v.get(&mut st).unwrap(), None);
                v.update(&mut st, &"two".to_owned()).unwrap();
                st.set_namespace(b"window-1");
                assert_eq!(v.get(&mut st).unwrap(), None, "namespaces are separate");
                // The namespace stays while the key changes.
                v.update(&mut st, &"two in window-1".to_owned()).unwrap();
                st.set_current_key_i64(1);
                assert_eq!(v.get(&mut st).unwrap(), None);
                st.set_current_key_i64(2);
                assert_eq!(v.get(&mut st).unwrap().as_deref(), Some("two in window-1"));
                st.set_namespace(b"");
                assert_eq!(v.get(&mut st).unwrap().as_deref(), Some("two"));
                st.set_current_key_i64(1);
                assert_eq!(v.get(&mut st).unwrap().as_deref(), Some("one"));
                v.clear(&mut st).unwrap();
                assert_eq!(v.get(&mut st).unwrap(), None);
            }

            /// Values of every size (encoded on the stack or in the heap buffer, held in a
            /// slot or on the heap), keys long and short, with and without TTL.
            #[test]
            fn values_and_keys_of_every_size_round_trip() {
                let mut st = state();
                let v = st.value_state::<String>(StateDescriptor::new("v")).unwrap();
                let t = st
                    .value_state::<String>(
                        StateDescriptor::new("t")
                            .with_ttl(Ttl::event_time(Duration::from_secs(60))),
                    )
                    .unwrap();
                let sizes = [
                    0, 1, 7, 8, 15, 16, 21, 22, 23, 55, 56, 63, 64, 65, 200, 5000,
                ];
                for &n in &sizes {
                    let key = vec![b'k'; n];
                    st.set_current_key(sabot_core::KeyGroup((n % MAX_P) as u16), &key);
                    v.update(&mut st, &"x".repeat(n)).unwrap();
                    t.update(&mut st, &"y".repeat(n)).unwrap();
                }
                for &n in sizes.iter().rev() {
                    let key = vec![b'k'; n];
                    st.set_current_key(sabot_core::KeyGroup((n % MAX_P) as u16), &key);
                    assert_eq!(v.get(&mut st).unwrap(), Some("x".repeat(n)), "value of {n}");
                    assert_eq!(
                        t.get(&mut st).unwrap(),
                        Some("y".repeat(n)),
                        "TTL value of {n}"
                    );
                    // Shrink and grow in place.
                    v.update(&mut st, &"z".repeat(n / 2)).unwrap();
                    assert_eq!(v.get(&mut st).unwrap(), Some("z".repeat(n / 2)));
                    v.update(&mut st, &"w".repeat(2 * n)).unwrap();
                    assert_eq!(v.get(&mut st).unwrap(), Some("w".repeat(2 * n)));
                }
            }

            #[test]
            fn list_state_appends_and_replaces() {
                let mut st = state();
                let l = st
                    .list_state::<(u32, String)>(StateDescriptor::new("l"))
                    .unwrap();
                st.set_current_key(sabot_core::KeyGroup(9), b"k");
                assert!(l.get(&mut st).unwrap().is_empty());
                l.add(&mut st, &(1, "a".into())).unwrap();
                l.add(&mut st, &(2, "b".into())).unwrap();
                assert_eq!(l.get(&mut st).unwrap(), [(1, "a".into()), (2, "b".into())]);
                l.update(&mut st, &[(3, "c".into())]).unwrap();
                assert_eq!(l.get(&mut st).unwrap(), [(3, "c".to_owned())]);
                l.clear(&mut st).unwrap();
                assert!(l.get(&mut st).unwrap().is_empty());
            }

            #[test]
            fn map_state_entries_in_key_order() {
                let mut st = state();
                let m = st
                    .map_state::<u8, String>(StateDescriptor::new("m"))
                    .unwrap();
                st.set_current_key_i64(7);
                for (k, v) in [(3u8, "c"), (1, "a"), (2, "b")] {
                    m.put(&mut st, &k, &v.to_owned()).unwrap();
                }
                assert_eq!(m.get(&mut st, &2).unwrap().as_deref(), Some("b"));
                assert!(m.remove(&mut st, &2).unwrap());
                assert!(!m.remove(&mut st, &2).unwrap());
                assert_eq!(
                    m.entries(&mut st).unwrap(),
                    [(1, "a".to_owned()), (3, "c".to_owned())]
                );
                st.set_namespace(b"other");
                assert!(m.entries(&mut st).unwrap().is_empty());
            }

            #[test]
            fn reducing_and_aggregating_state() {
                let mut st = state();
                let max = st
                    .reducing_state::<i64>(StateDescriptor::new("max"), |a, b| a.max(b))
                    .unwrap();
                let avg = st
                    .aggregating_state(StateDescriptor::new("avg"), Avg)
                    .unwrap();
                st.set_current_key_i64(5);
                for x in [3, 9, 6] {
                    max.add(&mut st, x).unwrap();
                    avg.add(&mut st, x).unwrap();
                }
                assert_eq!(max.get(&mut st).unwrap(), Some(9));
                assert_eq!(avg.get(&mut st).unwrap(), Some(6.0));
                avg.clear(&mut st).unwrap();
                assert_eq!(avg.get(&mut st).unwrap(), None);
            }

            #[test]
            fn event_time_ttl_hides_then_cleans_up() {
                let mut st = state();
                let v = st
                    .value_state::<u64>(
                        StateDescriptor::new("v")
                            .with_ttl(Ttl::event_time(Duration::from_millis(100))),
                    )
                    .unwrap();
                let l = st
                    .list_state::<u64>(
                        StateDescriptor::new("l")
                            .with_ttl(Ttl::event_time(Duration::from_millis(100))),
                    )
                    .unwrap();
                st.set_event_time(0);
                st.set_current_key_i64(1);
                v.update(&mut st, &10).unwrap();
                l.add(&mut st, &1).unwrap();
                st.set_current_key_i64(2);
                v.update(&mut st, &20).unwrap();
                st.set_event_time(50);
                l.add(&mut st, &2).unwrap();
                st.set_current_key_i64(1);
                l.add(&mut st, &3).unwrap(); // expires at 150
                st.set_event_time(99);
                assert_eq!(v.get(&mut st).unwrap(), Some(10));
                st.set_event_time(100);
                assert_eq!(
                    v.get(&mut st).unwrap(),
                    None,
                    "expired entries are invisible"
                );
                assert_eq!(
                    l.get(&mut st).unwrap(),
                    [3],
                    "list elements expire one by one"
                );
                // Key 2's value (expired, never read) and key 1's first element go in cleanup.
                let removed = st.cleanup_expired().unwrap();
                assert_eq!(removed, 2);
                st.set_current_key_i64(2);
                assert_eq!(v.get(&mut st).unwrap(), None);
                assert_eq!(l.get(&mut st).unwrap(), [2]);
            }

            #[test]
            fn processing_time_ttl_and_snapshots_drop_expired_entries() {
                let dir = tempfile::tempdir().unwrap();
                let mut st = state();
                let desc = StateDescriptor::new("p")
                    .with_ttl(Ttl::processing_time(Duration::from_secs(1)));
                let v = st.value_state::<u32>(desc.clone()).unwrap();
                st.set_processing_time(1_000);
                st.set_current_key_i64(1);
                v.update(&mut st, &1).unwrap();
                st.set_processing_time(1_500);
                st.set_current_key_i64(2);
                v.update(&mut st, &2).unwrap();
                st.set_processing_time(2_000);
                let info = st.snapshot(dir.path()).unwrap();
                if let Some(n) = info.entries {
                    assert_eq!(n, 1, "the expired entry is not written");
                }
                // Cleanup ran before the snapshot: one entry is left in the backend.
                let mut left = 0;
                for kg in 0..MAX_P as u16 {
                    st.backend()
                        .scan_key_group(v.id(), sabot_core::KeyGroup(kg), &mut |_, _, _| {
                            left += 1;
                            true
                        })
                        .unwrap();
                }
                assert_eq!(left, 1);
                let mut r = state();
                r.restore(&[dir.path().to_owned()]).unwrap();
                let v = r.value_state::<u32>(desc).unwrap();
                r.set_processing_time(2_000);
                r.set_current_key_i64(1);
                assert_eq!(v.get(&mut r).unwrap(), None);
                r.set_current_key_i64(2);
                assert_eq!(v.get(&mut r).unwrap(), Some(2));
            }

            #[test]
            fn typed_state_survives_snapshot_and_restore() {
                let dir = tempfile::tempdir().unwrap();
                let mut st = state();
                let v = st
                    .value_state::<(String, i64)>(StateDescriptor::new("v"))
                    .unwrap();
                let m = st
                    .map_state::<String, u32>(StateDescriptor::new("m"))
                    .unwrap();
                for k in 0..300i64 {
                    st.set_current_key_i64(k);
                    v.update(&mut st, &(format!("k{k}"), -k)).unwrap();
                    m.put(&mut st, &"x".to_owned(), &(k as u32)).unwrap();
                }
                st.snapshot(dir.path()).unwrap();
                let mut r = state();
                r.restore(&[dir.path().to_owned()]).unwrap();
                let v = r
                    .value_state::<(String, i64)>(StateDescriptor::new("v"))
                    .unwrap();
                let m = r
                    .map_state::<String, u32>(StateDescriptor::new("m"))
                    .unwrap();
                for k in 0..300i64 {
                    r.set_current_key_i64(k);
                    assert_eq!(v.get(&mut r).unwrap(), Some((format!("k{k}"), -k)));
                    assert_eq!(m.get(&mut r, &"x".to_owned()).unwrap(), Some(k as u32));
                }
            }

            #[test]
            fn restoring_with_another_value_type_is_a_clear_error() {
                let dir = tempfile::tempdir().unwrap();
                let mut st = state();
                let v = st
                    .value_state::<u64>(StateDescriptor::new("count"))
                    .unwrap();
                st.set_current_key_i64(1);
                v.update(&mut st, &1).unwrap();
                st.snapshot(dir.path()).unwrap();
                let mut r = state();
                r.restore(&[dir.path().to_owned()]).unwrap();
                let err = r
                    .value_state::<String>(StateDescriptor::new("count"))
                    .unwrap_err();
                assert!(
                    matches!(err, StateError::SerializerMismatch { .. }),
                    "{err}"
                );
                assert!(
                    err.to_string().contains("u64") && err.to_string().contains("String"),
                    "{err}"
                );
            }
        }
    };
}

keyed_suite!(memory, |range| MemoryBackend::new(MAX_P, range));

#[cfg(feature = "rocksdb")]
keyed_suite!(rocksdb, |range| {
    // Its own folder under the system's temporary folder, removed on drop.
    sabot_state::RocksDbBackend::open_temporary(
        &std::env::temp_dir(),
        "sabot-keyed-",
        sabot_state::RocksDbConfig::default(),
        MAX_P,
        range,
    )
    .unwrap()
});
