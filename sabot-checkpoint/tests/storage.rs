//! Local checkpoint storage: a checkpoint exists only once its manifest is published;
//! a failure at any step of writing one leaves the previous one as the latest, intact.

use std::collections::BTreeMap;

use sabot_checkpoint::storage::{Io, Listed, LocalStorage, Manifest};
use sabot_core::CheckpointId;

fn meta(offset: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("source.offset".to_string(), offset.to_string()),
        (
            "note with spaces".to_string(),
            "a value\nwith a newline and 100%".to_string(),
        ),
    ])
}

/// Writes checkpoint `id` with two files and a nested folder, and publishes it.
fn write_checkpoint(storage: &LocalStorage, id: u64) -> sabot_checkpoint::Result<Manifest> {
    let mut w = storage.begin(CheckpointId(id))?;
    w.write("task-0/state.sbst", &vec![id as u8; 10_000])?;
    w.write("task-1/state.sbst", format!("checkpoint {id}").as_bytes())?;
    std::fs::create_dir_all(w.dir().join("rocks"))
        .and_then(|()| std::fs::write(w.dir().join("rocks/000012.sst"), b"sst bytes"))
        .unwrap();
    w.add("rocks")?;
    w.commit(1_700_000_000_000 + id as i64, meta(id * 10))
}

#[test]
fn a_published_checkpoint_lists_verifies_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    let m = write_checkpoint(&storage, 7).unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.bytes(), 10_000 + 12 + 9);
    let back = storage.manifest(CheckpointId(7)).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.meta, meta(70));
    storage.verify(&back).unwrap();
    assert_eq!(storage.latest().unwrap(), Some(m));
}

#[test]
fn a_failure_at_any_step_never_yields_an_incomplete_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clean = LocalStorage::open(dir.path()).unwrap();
    let first = write_checkpoint(&clean, 1).unwrap();

    // Count the steps of writing one checkpoint, then fail each one in turn.
    let counter = Io::fail_at(usize::MAX);
    write_checkpoint(
        &LocalStorage::with_io(dir.path(), counter.clone()).unwrap(),
        2,
    )
    .unwrap();
    let steps = counter.steps();
    assert!(steps >= 15, "only {steps} steps counted");
    clean.discard(CheckpointId(2)).unwrap();

    for step in 0..steps {
        let faulty = LocalStorage::with_io(dir.path(), Io::fail_at(step)).unwrap();
        let r = write_checkpoint(&faulty, 2);
        assert!(r.is_err(), "step {step} of {steps} did not fail");
        assert!(r.unwrap_err().to_string().contains("injected failure"));
        // What a restarted job sees: a checkpoint is complete only if its manifest was
        // published, which happens after every file is on disk, as the last rename; the
        // only step after it is the folder's fsync. Whatever is complete verifies.
        let published = clean
            .completed()
            .unwrap()
            .iter()
            .any(|m| m.id == CheckpointId(2));
        assert!(
            !published || step == steps - 1,
            "checkpoint 2 published despite a failure at step {step} of {steps}"
        );
        for m in clean.completed().unwrap() {
            clean.verify(&m).unwrap();
        }
        let latest = clean.latest().unwrap().unwrap();
        if published {
            assert_eq!(latest.id, CheckpointId(2));
        } else {
            assert_eq!(latest, first, "after a failure at step {step}");
        }
        clean.discard(CheckpointId(2)).unwrap();
    }
    // And without a failure, 2 becomes the latest.
    write_checkpoint(&clean, 2).unwrap();
    assert_eq!(clean.latest().unwrap().unwrap().id, CheckpointId(2));
}

#[test]
fn damaged_checkpoints_are_skipped_and_damaged_manifests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    write_checkpoint(&storage, 1).unwrap();
    write_checkpoint(&storage, 2).unwrap();

    // A file of the newest checkpoint changes on disk: verification fails, the
    // previous one is used.
    std::fs::write(
        storage.dir(CheckpointId(2)).join("task-1/state.sbst"),
        b"tampered",
    )
    .unwrap();
    let e = storage
        .verify(&storage.manifest(CheckpointId(2)).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("task-1/state.sbst"), "{e}");
    assert_eq!(storage.latest().unwrap().unwrap().id, CheckpointId(1));

    // A cut-off manifest: incomplete, with the reason.
    let path = storage.dir(CheckpointId(1)).join("_manifest");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    match &storage.list().unwrap()[0] {
        Listed::Incomplete { id, reason } => {
            assert_eq!(*id, CheckpointId(1));
            assert!(reason.contains("_manifest"), "{reason}");
        }
        other => panic!("a cut-off manifest listed as {other:?}"),
    }
    assert_eq!(
        storage.latest().unwrap(),
        None,
        "no intact checkpoint is left"
    );

    // Manifests from elsewhere: each damage is an error, never a panic.
    let p = std::path::Path::new("m");
    for bad in [
        &b""[..],
        b"\xff\xfe",
        b"sabot-checkpoint 1\nchecksum 00000000\n",
        b"hello\n",
    ] {
        assert!(Manifest::decode(bad, p).is_err());
    }
}

#[test]
fn a_manifest_may_not_point_outside_its_folder() {
    let text = "sabot-checkpoint 1\nid 1\ncreated_ms 0\nfile 00000000 0 ../../etc/passwd\n";
    let crc = crc32fast::hash(text.as_bytes());
    let manifest = format!("{text}checksum {crc:08x}\n");
    let e = Manifest::decode(manifest.as_bytes(), std::path::Path::new("m")).unwrap_err();
    assert!(
        e.to_string().contains("inside the checkpoint folder"),
        "{e}"
    );
}
