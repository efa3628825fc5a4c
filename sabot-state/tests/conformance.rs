//! One suite for every `StateBackend`: each test runs against each backend.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sabot_core::{KeyGroup, KeyGroupRange};
use sabot_state::{EntryKey, MemoryBackend, StateBackend, StateError};

const MAX_P: usize = 128;

fn all() -> KeyGroupRange {
    KeyGroupRange::for_subtask(MAX_P, 1, 0)
}

fn get<B: StateBackend>(
    b: &B,
    s: sabot_state::StateId,
    kg: u16,
    k: &[u8],
    ns: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    b.get(s, KeyGroup(kg), k, ns, &mut out)
        .unwrap()
        .then_some(out)
}

/// Where snapshots go: tmpfs when there is one (fsync is cheap there).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

macro_rules! conformance_inner {
    ($module:ident, $make:expr, $make_p:expr, $cases:expr) => {
        mod $module {
            use super::*;

            fn backend(range: KeyGroupRange) -> impl StateBackend {
                ($make)(range)
            }

            #[test]
            fn put_get_delete_merge() {
                let mut b = backend(all());
                let s = b.register("s", "v1").unwrap();
                assert_eq!(get(&b, s, 3, b"k", b""), None);
                b.put(s, KeyGroup(3), b"k", b"", b"one").unwrap();
                b.put(s, KeyGroup(3), b"k", b"ns", b"two").unwrap();
                assert_eq!(get(&b, s, 3, b"k", b"").as_deref(), Some(&b"one"[..]));
                assert_eq!(get(&b, s, 3, b"k", b"ns").as_deref(), Some(&b"two"[..]));
                assert_eq!(get(&b, s, 4, b"k", b""), None, "key groups are separate");
                b.put(s, KeyGroup(3), b"k", b"", b"uno").unwrap();
                assert_eq!(get(&b, s, 3, b"k", b"").as_deref(), Some(&b"uno"[..]));
                assert!(b.delete(s, KeyGroup(3), b"k", b"").unwrap());
                assert!(!b.delete(s, KeyGroup(3), b"k", b"").unwrap());
                assert_eq!(get(&b, s, 3, b"k", b""), None);
                b.merge(s, KeyGroup(3), b"list", b"", b"a").unwrap();
                b.merge(s, KeyGroup(3), b"list", b"", b"bc").unwrap();
                assert_eq!(get(&b, s, 3, b"list", b"").as_deref(), Some(&b"abc"[..]));
                // (key, namespace) pairs do not run into each other.
                b.put(s, KeyGroup(3), b"ab", b"c", b"1").unwrap();
                b.put(s, KeyGroup(3), b"a", b"bc", b"2").unwrap();
                assert_eq!(get(&b, s, 3, b"ab", b"c").as_deref(), Some(&b"1"[..]));
                assert_eq!(get(&b, s, 3, b"a", b"bc").as_deref(), Some(&b"2"[..]));
            }

            #[test]
            fn states_are_separate_and_registration_is_idempotent() {
                let mut b = backend(all());
                let a = b.register("a", "v1").unwrap();
                let c = b.register("c", "v1").unwrap();
                assert_ne!(a, c);
                assert_eq!(b.register("a", "v1").unwrap(), a);
                b.put(a, KeyGroup(0), b"k", b"", b"x").unwrap();
                assert_eq!(get(&b, c, 0, b"k", b""), None);
                assert!(matches!(
                    b.register("a", "v2"),
                    Err(StateError::SerializerMismatch { .. })
                ));
            }

            #[test]
            fn key_group_outside_the_range_is_an_error() {
                let mut b = backend(KeyGroupRange::for_subtask(MAX_P, 2, 0));
                let s = b.register("s", "v1").unwrap();
                let err = b.put(s, KeyGroup(100), b"k", b"", b"v").unwrap_err();
                assert!(matches!(err, StateError::KeyGroupOutOfRange { key_group: 100, .. }), "{err}");
            }

            #[test]
            fn scans_visit_in_byte_order_and_stop_when_asked() {
                let mut b = backend(all());
                let s = b.register("s", "v1").unwrap();
                for ns in [&b"b2"[..], b"a1", b"b1", b"c"] {
                    b.put(s, KeyGroup(7), b"k", ns, ns).unwrap();
                }
                b.put(s, KeyGroup(7), b"other", b"b0", b"x").unwrap();
                let mut seen = Vec::new();
                b.scan(s, KeyGroup(7), b"k", b"b", &mut |ns, v| {
                    assert_eq!(ns, v);
                    seen.push(ns.to_vec());
                    true
                })
                .unwrap();
                assert_eq!(seen, [b"b1".to_vec(), b"b2".to_vec()]);
                let mut first = Vec::new();
                b.scan(s, KeyGroup(7), b"k", b"", &mut |ns, _| {
                    first.push(ns.to_vec());
                    false
                })
                .unwrap();
                assert_eq!(first, [b"a1".to_vec()]);
                let mut group = Vec::new();
                b.scan_key_group(s, KeyGroup(7), &mut |k, ns, _| {
                    group.push((k.to_vec(), ns.to_vec()));
                    true
                })
                .unwrap();
                assert_eq!(group.len(), 5);
                assert!(group.windows(2).all(|w| w[0] <= w[1]));
            }

            #[test]
            fn snapshot_and_restore_round_trip() {
                let dir = scratch_dir();
                let mut b = backend(all());
                let s = b.register("s", "v1").unwrap();
                let t = b.register("t", "v9").unwrap();
                for i in 0..500u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    b.put(s, KeyGroup(kg), &i.to_le_bytes(), b"n", &(i * 2).to_le_bytes()).unwrap();
                    b.merge(t, KeyGroup(kg), &i.to_le_bytes(), b"", b"xy").unwrap();
                }
                let info = b.snapshot(dir.path(), all()).unwrap();
                if let Some(n) = info.entries {
                    assert_eq!(n, 1000);
                }
                assert!(info.bytes > 0 && info.files.iter().all(|f| f.exists()));
                let mut r = backend(all());
                r.restore(&[dir.path().to_owned()]).unwrap();
                let s2 = r.register("s", "v1").unwrap();
                let t2 = r.register("t", "v9").unwrap();
                for i in 0..500u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    assert_eq!(get(&r, s2, kg, &i.to_le_bytes(), b"n"), Some((i * 2).to_le_bytes().to_vec()));
                    assert_eq!(get(&r, t2, kg, &i.to_le_bytes(), b"").as_deref(), Some(&b"xy"[..]));
                }
            }

            #[test]
            fn async_snapshot_holds_the_state_as_it_was_when_it_began() {
                let dir = scratch_dir();
                let mut b = backend(all());
                let s = b.register("s", "v1").unwrap();
                for i in 0..300u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    b.put(s, KeyGroup(kg), &i.to_le_bytes(), b"", b"before").unwrap();
                }
                let pending = b.snapshot_async(dir.path(), all()).unwrap();
                // The job goes on while the snapshot is written (on another thread).
                for i in 0..300u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    if i % 2 == 0 {
                        b.put(s, KeyGroup(kg), &i.to_le_bytes(), b"", b"after").unwrap();
                    } else {
                        b.delete(s, KeyGroup(kg), &i.to_le_bytes(), b"").unwrap();
                    }
                    b.put(s, KeyGroup(kg), &(1000 + i).to_le_bytes(), b"", b"new").unwrap();
                }
                std::thread::spawn(move || pending.finish().unwrap()).join().unwrap();
                let mut r = backend(all());
                r.restore(&[dir.path().to_owned()]).unwrap();
                let s2 = r.register("s", "v1").unwrap();
                for i in 0..300u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    assert_eq!(get(&r, s2, kg, &i.to_le_bytes(), b"").as_deref(), Some(&b"before"[..]));
                    assert_eq!(get(&r, s2, kg, &(1000 + i).to_le_bytes(), b""), None);
                    // The live backend kept its own changes.
                    let now = get(&b, s, kg, &i.to_le_bytes(), b"");
                    assert_eq!(now.as_deref(), (i % 2 == 0).then_some(&b"after"[..]));
                }
            }

            #[test]
            fn a_restored_backend_changing_leaves_its_snapshot_intact() {
                let dir = scratch_dir();
                let second = scratch_dir();
                let mut b = backend(all());
                let s = b.register("s", "v1").unwrap();
                for i in 0..2_000u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    b.put(s, KeyGroup(kg), &i.to_le_bytes(), b"", b"original").unwrap();
                }
                b.snapshot(dir.path(), all()).unwrap();
                // Restored, then changed everywhere and snapshotted again (which flushes).
                let mut r = backend(all());
                let s2 = r.register("s", "v1").unwrap();
                r.restore(&[dir.path().to_owned()]).unwrap();
                for i in 0..2_000u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    r.put(s2, KeyGroup(kg), &i.to_le_bytes(), b"", b"changed").unwrap();
                }
                r.snapshot(second.path(), all()).unwrap();
                drop(r);
                // The first snapshot still restores what it recorded.
                let mut again = backend(all());
                let s3 = again.register("s", "v1").unwrap();
                again.restore(&[dir.path().to_owned()]).unwrap();
                for i in 0..2_000u32 {
                    let kg = (i % MAX_P as u32) as u16;
                    assert_eq!(get(&again, s3, kg, &i.to_le_bytes(), b"").as_deref(), Some(&b"original"[..]));
                }
            }

            #[test]
            fn a_restore_keeps_only_its_own_key_groups() {
                let (first, second) = (scratch_dir(), scratch_dir());
                let max_p = 10;
                let whole = KeyGroupRange::for_subtask(max_p, 1, 0);
                let mut b = ($make_p)(max_p, whole);
                let s = b.register("s", "v1").unwrap();
                for kg in 0..10u16 {
                    b.put(s, KeyGroup(kg), b"k", b"", &[kg as u8]).unwrap();
                }
                b.snapshot(first.path(), whole).unwrap();
                // Subtask 0 of 2 takes key groups 0..5, then snapshots them.
                let half = KeyGroupRange::for_subtask(max_p, 2, 0);
                let mut h = ($make_p)(max_p, half);
                h.restore(&[first.path().to_owned()]).unwrap();
                h.snapshot(second.path(), half).unwrap();
                // Its snapshot holds its own key groups and nothing of the others.
                let mut w = ($make_p)(max_p, whole);
                w.restore(&[second.path().to_owned()]).unwrap();
                let s = w.register("s", "v1").unwrap();
                for kg in 0..10u16 {
                    let want = (kg < 5).then(|| vec![kg as u8]);
                    assert_eq!(get(&w, s, kg, b"k", b""), want, "key group {kg}");
                }
            }

            #[test]
            fn ten_key_groups_restore_split_two_by_five() {
                let max_p = 10;
                let dir = scratch_dir();
                let whole = KeyGroupRange::for_subtask(max_p, 1, 0);
                let mut b = ($make_p)(max_p, whole);
                let s = b.register("s", "v1").unwrap();
                for kg in 0..10u16 {
                    for k in 0..20u8 {
                        b.put(s, KeyGroup(kg), &[k], b"", &[kg as u8, k]).unwrap();
                    }
                }
                b.snapshot(dir.path(), whole).unwrap();
                for sub in 0..2 {
                    let range = KeyGroupRange::for_subtask(max_p, 2, sub);
                    assert_eq!(range.len(), 5);
                    let mut r = ($make_p)(max_p, range);
                    r.restore(&[dir.path().to_owned()]).unwrap();
                    let s = r.register("s", "v1").unwrap();
                    for kg in range.start..range.end {
                        for k in 0..20u8 {
                            assert_eq!(get(&r, s, kg, &[k], b""), Some(vec![kg as u8, k]));
                        }
                    }
                    // Only its own key groups.
                    let other = if sub == 0 { 7 } else { 2 };
                    assert!(r.get(s, KeyGroup(other), &[0], b"", &mut Vec::new()).is_err());
                }
                // And back: two snapshots of 5 restore into one backend of 10.
                let halves: Vec<PathBuf> = (0..2)
                    .map(|sub| {
                        let range = KeyGroupRange::for_subtask(max_p, 2, sub);
                        let mut r = ($make_p)(max_p, range);
                        r.restore(&[dir.path().to_owned()]).unwrap();
                        let d = dir.path().join(format!("half-{sub}"));
                        r.snapshot(&d, range).unwrap();
                        d
                    })
                    .collect();
                let mut merged = ($make_p)(max_p, whole);
                merged.restore(&halves).unwrap();
                let s = merged.register("s", "v1").unwrap();
                for kg in 0..10u16 {
                    assert_eq!(get(&merged, s, kg, &[19], b""), Some(vec![kg as u8, 19]));
                }
            }

            #[test]
            fn restore_with_a_changed_serializer_is_a_clear_error() {
                let dir = scratch_dir();
                let mut b = backend(all());
                let s = b.register("counts", "u64/postcard/1").unwrap();
                b.put(s, KeyGroup(1), b"k", b"", b"v").unwrap();
                b.snapshot(dir.path(), all()).unwrap();
                let mut r = backend(all());
                r.register("counts", "String/postcard/1").unwrap();
                let err = r.restore(&[dir.path().to_owned()]).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains("counts") && msg.contains("u64/postcard/1") && msg.contains("String/postcard/1"), "{msg}");
                // Registering with the wrong layout after a restore fails the same way.
                let mut r = backend(all());
                r.restore(&[dir.path().to_owned()]).unwrap();
                assert!(matches!(r.register("counts", "i32"), Err(StateError::SerializerMismatch { .. })));
            }

            #[test]
            fn damaged_or_missing_snapshots_are_errors_naming_the_path() {
                let dir = scratch_dir();
                let mut b = backend(all());
                let s = b.register("s", "v1").unwrap();
                for i in 0..50u8 {
                    b.put(s, KeyGroup(u16::from(i)), &[i], b"", &[i; 10]).unwrap();
                }
                let info = b.snapshot(dir.path(), all()).unwrap();
                let file = info.files[0].clone();
                let good = std::fs::read(&file).unwrap();
                let restore = |bytes: &[u8]| {
                    std::fs::write(&file, bytes).unwrap();
                    backend(all()).restore(&[dir.path().to_owned()])
                };
                for cut in [0, 3, good.len() / 2, good.len() - 1] {
                    let err = restore(&good[..cut]).unwrap_err();
                    assert!(matches!(err, StateError::Corrupt { .. }), "cut {cut}: {err}");
                    assert!(err.to_string().contains(&file.display().to_string()));
                }
                for i in [0, 10, good.len() / 2, good.len() - 2] {
                    let mut bad = good.clone();
                    bad[i] ^= 0x40;
                    assert!(restore(&bad).is_err(), "flipped byte {i} went unnoticed");
                }
                let missing = dir.path().join("nope");
                let err = backend(all()).restore(std::slice::from_ref(&missing)).unwrap_err();
                assert!(matches!(err, StateError::Io { .. }) && err.to_string().contains("nope"), "{err}");
                assert!(matches!(backend(all()).restore(&[]), Err(StateError::NothingToRestore)));
            }

            #[derive(Clone, Debug)]
            enum Op {
                // The last flag: through the prepared-entry methods (`EntryKey`) instead
                // of the plain ones; the two must address the same entries.
                Put(u8, u8, u8, u8, bool),
                Get(u8, u8, u8, bool),
                Delete(u8, u8, u8, bool),
                Merge(u8, u8, u8, u8, bool),
                /// Read-modify-write: appends the byte (through `update`/`update_entry`).
                Update(u8, u8, u8, u8, bool),
                Scan(u8, u8),
                Snapshot,
                Restore,
                Crash,
            }

            fn op() -> impl Strategy<Value = Op> {
                prop_oneof![
                    6 => (0u8..4, 0u8..6, 0u8..3, any::<u8>(), any::<bool>()).prop_map(|(g, k, n, v, e)| Op::Put(g, k, n, v, e)),
                    4 => (0u8..4, 0u8..6, 0u8..3, any::<bool>()).prop_map(|(g, k, n, e)| Op::Get(g, k, n, e)),
                    2 => (0u8..4, 0u8..6, 0u8..3, any::<bool>()).prop_map(|(g, k, n, e)| Op::Delete(g, k, n, e)),
                    3 => (0u8..4, 0u8..6, 0u8..3, any::<u8>(), any::<bool>()).prop_map(|(g, k, n, v, e)| Op::Merge(g, k, n, v, e)),
                    2 => (0u8..4, 0u8..6, 0u8..3, any::<u8>(), any::<bool>()).prop_map(|(g, k, n, v, e)| Op::Update(g, k, n, v, e)),
                    2 => (0u8..4, 0u8..6).prop_map(|(g, k)| Op::Scan(g, k)),
                    1 => Just(Op::Snapshot),
                    1 => Just(Op::Restore),
                    1 => Just(Op::Crash),
                ]
            }

            type Model = std::collections::BTreeMap<(u8, u8, u8), Vec<u8>>;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(
                    std::env::var("SABOT_STATE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or($cases)
                ))]

                /// Random operations against a `BTreeMap`; "crash" drops the backend and
                /// restores the last snapshot, as recovery does.
                #[test]
                fn backend_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..40)) {
                    let dir = scratch_dir();
                    let mut b = backend(all());
                    let mut s = b.register("s", "v1").unwrap();
                    let mut model = Model::new();
                    let mut snapshot: Option<Model> = None;
                    let mut out = Vec::new();
                    for op in ops {
                        match op {
                            Op::Put(g, k, n, v, via_entry) => {
                                let kg = KeyGroup(g.into());
                                if via_entry {
                                    b.put_entry(s, kg, &EntryKey::new(&[k], &[n]), &[v]).unwrap();
                                } else {
                                    b.put(s, kg, &[k], &[n], &[v]).unwrap();
                                }
                                model.insert((g, k, n), vec![v]);
                            }
                            Op::Get(g, k, n, via_entry) => {
                                let kg = KeyGroup(g.into());
                                let e = EntryKey::new(&[k], &[n]);
                                b.prefetch_entry(s, kg, &e);
                                let found = if via_entry {
                                    b.get_entry(s, kg, &e, &mut out).unwrap()
                                } else {
                                    b.get(s, kg, &[k], &[n], &mut out).unwrap()
                                };
                                prop_assert_eq!(found.then(|| out.clone()), model.get(&(g, k, n)).cloned());
                            }
                            Op::Delete(g, k, n, via_entry) => {
                                let kg = KeyGroup(g.into());
                                let existed = if via_entry {
                                    b.delete_entry(s, kg, &EntryKey::new(&[k], &[n])).unwrap()
                                } else {
                                    b.delete(s, kg, &[k], &[n]).unwrap()
                                };
                                prop_assert_eq!(existed, model.remove(&(g, k, n)).is_some());
                            }
                            Op::Merge(g, k, n, v, via_entry) => {
                                let kg = KeyGroup(g.into());
                                if via_entry {
                                    b.merge_entry(s, kg, &EntryKey::new(&[k], &[n]), &[v]).unwrap();
                                } else {
                                    b.merge(s, kg, &[k], &[n], &[v]).unwrap();
                                }
                                model.entry((g, k, n)).or_default().push(v);
                            }
                            Op::Update(g, k, n, v, via_entry) => {
                                let kg = KeyGroup(g.into());
                                let before = model.get(&(g, k, n)).cloned();
                                let mut f = |old: Option<&[u8]>, new: &mut Vec<u8>| {
                                    assert_eq!(old.map(<[u8]>::to_vec), before);
                                    new.extend_from_slice(old.unwrap_or_default());
                                    new.push(v);
                                    Ok(())
                                };
                                if via_entry {
                                    b.update_entry(s, kg, &EntryKey::new(&[k], &[n]), &mut f).unwrap();
                                } else {
                                    b.update(s, kg, &[k], &[n], &mut f).unwrap();
                                }
                                model.entry((g, k, n)).or_default().push(v);
                            }
                            Op::Scan(g, k) => {
                                let mut seen = Vec::new();
                                b.scan(s, KeyGroup(g.into()), &[k], &[], &mut |ns, v| {
                                    seen.push((ns[0], v.to_vec()));
                                    true
                                }).unwrap();
                                let expected: Vec<(u8, Vec<u8>)> = model
                                    .range((g, k, 0)..=(g, k, u8::MAX))
                                    .map(|((_, _, n), v)| (*n, v.clone()))
                                    .collect();
                                prop_assert_eq!(seen, expected);
                            }
                            Op::Snapshot => {
                                b.snapshot(dir.path(), all()).unwrap();
                                snapshot = Some(model.clone());
                            }
                            Op::Restore | Op::Crash => {
                                let Some(snap) = &snapshot else { continue };
                                if matches!(op, Op::Crash) {
                                    drop(b);
                                    b = backend(all());
                                } else {
                                    // Restore over live state replaces its key groups.
                                    b = backend(all());
                                }
                                b.restore(&[dir.path().to_owned()]).unwrap();
                                s = b.register("s", "v1").unwrap();
                                model = snap.clone();
                            }
                        }
                    }
                }
            }
        }
    };
}

fn memory(range: KeyGroupRange) -> MemoryBackend {
    MemoryBackend::new(MAX_P, range)
}

fn memory_p(max_p: usize, range: KeyGroupRange) -> MemoryBackend {
    MemoryBackend::new(max_p, range)
}

macro_rules! conformance_with {
    ($module:ident, $make:expr, $make_p:expr, $cases:expr) => {
        conformance_inner!($module, $make, $make_p, $cases);
    };
}

conformance_with!(memory_backend, memory, memory_p, 10_000);

/// The memory backend with ordered scan indexes (what joins and session windows ask for).
fn memory_indexed(range: KeyGroupRange) -> MemoryBackend {
    memory(range).with_scan_indexes()
}

fn memory_indexed_p(max_p: usize, range: KeyGroupRange) -> MemoryBackend {
    memory_p(max_p, range).with_scan_indexes()
}

conformance_with!(
    memory_backend_indexed,
    memory_indexed,
    memory_indexed_p,
    2_000
);

#[cfg(feature = "rocksdb")]
fn rocks_with(
    config: sabot_state::RocksDbConfig,
    max_p: usize,
    range: KeyGroupRange,
) -> sabot_state::RocksDbBackend {
    // Its own folder, removed when the backend is dropped.
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    sabot_state::RocksDbBackend::open_temporary(&parent, "sabot-conformance-", config, max_p, range)
        .unwrap()
}

/// RocksDB as configured by default: the small snapshots here are restored by copying.
#[cfg(feature = "rocksdb")]
fn rocks_p(max_p: usize, range: KeyGroupRange) -> sabot_state::RocksDbBackend {
    rocks_with(sabot_state::RocksDbConfig::default(), max_p, range)
}

#[cfg(feature = "rocksdb")]
fn rocks(range: KeyGroupRange) -> sabot_state::RocksDbBackend {
    rocks_p(MAX_P, range)
}

/// RocksDB restoring every snapshot by linking its files (the path of large states).
#[cfg(feature = "rocksdb")]
fn rocks_linked_p(max_p: usize, range: KeyGroupRange) -> sabot_state::RocksDbBackend {
    rocks_with(
        sabot_state::RocksDbConfig::default().with_link_restore_bytes(0),
        max_p,
        range,
    )
}

#[cfg(feature = "rocksdb")]
fn rocks_linked(range: KeyGroupRange) -> sabot_state::RocksDbBackend {
    rocks_linked_p(MAX_P, range)
}

#[cfg(feature = "rocksdb")]
conformance_with!(rocksdb_backend, rocks, rocks_p, 10_000);

// Reopening a database per restore costs more than copying these tiny states: fewer
// cases, the same operations.
#[cfg(feature = "rocksdb")]
conformance_with!(rocksdb_linked_restore, rocks_linked, rocks_linked_p, 1_000);

#[test]
fn memory_snapshot_is_copy_on_write() {
    let dir = scratch_dir();
    let mut b = memory(all());
    let s = b.register("s", "v1").unwrap();
    b.put(s, KeyGroup(1), b"k", b"", b"before").unwrap();
    let snap = b.begin_snapshot(all());
    // Processing goes on while the snapshot is written (on another thread here).
    b.put(s, KeyGroup(1), b"k", b"", b"after").unwrap();
    b.put(s, KeyGroup(2), b"new", b"", b"x").unwrap();
    std::thread::spawn(move || snap.write(dir.path()).map(|_| dir))
        .join()
        .unwrap()
        .map(|dir| {
            let mut r = memory(all());
            r.restore(&[dir.path().to_owned()]).unwrap();
            let s = r.register("s", "v1").unwrap();
            assert_eq!(get(&r, s, 1, b"k", b"").as_deref(), Some(&b"before"[..]));
            assert_eq!(get(&r, s, 2, b"new", b""), None);
        })
        .unwrap();
    assert_eq!(get(&b, s, 1, b"k", b"").as_deref(), Some(&b"after"[..]));
}

/// A full disk while a snapshot is written: an error naming the file, and no snapshot
/// published (the previous one, if any, stays). `/dev/full` fails every write with
/// ENOSPC; the snapshot's temporary file is made a link to it.
#[cfg(target_os = "linux")]
#[test]
fn full_disk_during_snapshot_is_an_error_and_publishes_nothing() {
    let dir = scratch_dir();
    let mut b = memory(all());
    let s = b.register("s", "v1").unwrap();
    b.put(s, KeyGroup(3), b"k", b"", &[7u8; 4096]).unwrap();
    b.snapshot(dir.path(), all()).unwrap();
    let published = std::fs::read(dir.path().join(sabot_state::snapshot::SNAPSHOT_FILE)).unwrap();

    b.put(s, KeyGroup(3), b"k2", b"", &[8u8; 4096]).unwrap();
    let tmp = dir
        .path()
        .join(format!("{}.tmp", sabot_state::snapshot::SNAPSHOT_FILE));
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let err = sabot_core::ErrorChain(&b.snapshot(dir.path(), all()).unwrap_err()).to_string();
    assert!(
        err.contains("state.sbst.tmp") && err.contains("No space left"),
        "{err}"
    );
    // The published snapshot is the previous one, intact and restorable.
    let now = std::fs::read(dir.path().join(sabot_state::snapshot::SNAPSHOT_FILE)).unwrap();
    assert_eq!(now, published);
    let mut r = memory(all());
    r.restore(&[dir.path().to_owned()]).unwrap();
    let s = r.register("s", "v1").unwrap();
    assert!(get(&r, s, 3, b"k", b"").is_some());
    assert!(get(&r, s, 3, b"k2", b"").is_none());
}
