//! Restoring a memory backend from a snapshot built from fuzz input: tables, key groups and
//! entries of the fuzzer's choosing (keys well-formed or not, names repeated, indexes out of
//! range), written in the snapshot format with valid checksums so that the bytes reach the
//! restore. Then everything restored is read back: the restore is an error, or every
//! entry it kept is seen by a key-group scan and read back by its key and namespace
//! (nothing restored out of reach); never a panic.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use sabot_core::{KeyGroup, KeyGroupRange};
use sabot_state::{MemoryBackend, StateBackend, snapshot};

/// One snapshot folder per fuzzing process, rewritten for every input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sabot-fuzz-restore-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the fuzz snapshot folder");
        d
    })
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn small(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    u.bytes(n).map(<[u8]>::to_vec)
}

/// A snapshot file (version 2) from fuzz input, checksums included.
fn snapshot_bytes(u: &mut Unstructured<'_>) -> Result<(usize, Vec<u8>)> {
    let max_p = usize::from(u.int_in_range(1u16..=16)?);
    let mut body = b"SBST\x02".to_vec();
    body.extend_from_slice(&(max_p as u32).to_le_bytes());
    let n_tables = u.int_in_range(0u32..=3)?;
    body.extend_from_slice(&n_tables.to_le_bytes());
    for _ in 0..n_tables {
        bytes(
            &mut body,
            [b"a".as_slice(), b"b"][usize::from(u.arbitrary::<bool>()?)],
        );
        bytes(
            &mut body,
            [b"u64".as_slice(), b"str"][usize::from(u.arbitrary::<bool>()?)],
        );
    }
    let n_groups = u.int_in_range(0u32..=4)?;
    body.extend_from_slice(&n_groups.to_le_bytes());
    for _ in 0..n_groups {
        let kg = u.int_in_range(0..=max_p as u16)?;
        let table = u.int_in_range(0..=n_tables)?;
        let n_entries = u.int_in_range(0u32..=8)?;
        let mut payload = Vec::new();
        for _ in 0..n_entries {
            let key = if u.arbitrary()? {
                // A well-formed composite: key length, key, namespace.
                let (k, ns) = (small(u, 6)?, small(u, 6)?);
                let mut c = (k.len() as u32).to_le_bytes().to_vec();
                c.extend_from_slice(&k);
                c.extend_from_slice(&ns);
                c
            } else {
                small(u, 12)?
            };
            bytes(&mut payload, &key);
            bytes(&mut payload, &small(u, 8)?);
        }
        body.extend_from_slice(&kg.to_le_bytes());
        body.extend_from_slice(&table.to_le_bytes());
        body.extend_from_slice(&n_entries.to_le_bytes());
        body.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        body.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        body.extend_from_slice(&payload);
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    Ok((max_p, body))
}

fuzz_target!(|data: &[u8]| {
    let Ok((max_p, file)) = snapshot_bytes(&mut Unstructured::new(data)) else {
        return;
    };
    let Ok(summary) = snapshot::inspect(&file, dir()) else {
        return;
    };
    std::fs::write(dir().join(snapshot::SNAPSHOT_FILE), &file).expect("write the snapshot");
    let mut backend =
        MemoryBackend::new(max_p, KeyGroupRange::for_subtask(max_p, 1, 0)).with_scan_indexes();
    if backend.restore(std::slice::from_ref(dir())).is_err() {
        return;
    }
    let mut groups: Vec<(u16, &String)> =
        summary.groups.iter().map(|(kg, n, _)| (*kg, n)).collect();
    groups.sort();
    groups.dedup();
    let mut scanned = 0;
    for (kg, name) in groups {
        let fingerprint = summary
            .states
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .expect("a group's state is listed");
        let id = backend
            .register(name, &fingerprint)
            .expect("a restored state registers again");
        let mut seen = Vec::new();
        backend
            .scan_key_group(id, KeyGroup(kg), &mut |k, ns, v| {
                seen.push((k.to_vec(), ns.to_vec(), v.to_vec()));
                true
            })
            .expect("scan a restored key group");
        scanned += seen.len();
        for (k, ns, v) in seen {
            let mut out = Vec::new();
            let found = backend
                .get(id, KeyGroup(kg), &k, &ns, &mut out)
                .expect("get a restored entry");
            assert!(
                found,
                "a scanned entry is not found by its key and namespace"
            );
            assert_eq!(out, v);
        }
    }
    assert_eq!(scanned, backend.len(), "restored entries that no scan sees");
});
