//! Local checkpoint storage: a checkpoint exists only once its manifest is published;
//! a failure at any step of writing one leaves the previous one as the latest, intact.

use std::collections::BTreeMap;

use sabot_checkpoint::storage::{CheckpointStorage, Io, Listed, Manifest};
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
fn write_checkpoint(storage: &CheckpointStorage, id: u64) -> sabot_checkpoint::Result<Manifest> {
    let mut w = storage.begin(CheckpointId(id))?;
    w.write("task-0/state.sbst", &vec![id as u8; 10_000])?;
    w.write("task-1/state.sbst", format!("checkpoint {id}").as_bytes())?;
    let rocks = w.stage("rocks")?;
    std::fs::write(rocks.join("000012.sst"), b"sst bytes").unwrap();
    w.add("rocks")?;
    w.commit(1_700_000_000_000 + id as i64, meta(id * 10))
}

#[test]
fn a_published_checkpoint_lists_verifies_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let m = write_checkpoint(&storage, 7).unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.bytes(), 10_000 + 12 + 9);
    let back = storage.manifest(CheckpointId(7)).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.meta, meta(70));
    storage.verify(&back).unwrap();
    assert_eq!(storage.latest().unwrap(), Some(m));
}

/// Steps of writing a checkpoint after its manifest is renamed into place: the folder's
/// fsync, then `_latest` (create, write, fsync, rename) and the root's fsync.
const STEPS_AFTER_PUBLISHING: usize = 6;

#[test]
fn a_failure_at_any_step_never_yields_an_incomplete_checkpoint() {
    // Count the steps of writing one checkpoint, then fail each one in turn.
    let counter = Io::fail_at(usize::MAX);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(&CheckpointStorage::open(dir.path()).unwrap(), 1).unwrap();
    write_checkpoint(
        &CheckpointStorage::with_io(dir.path(), counter.clone()).unwrap(),
        2,
    )
    .unwrap();
    let steps = counter.steps();
    assert!(steps >= 20, "only {steps} steps counted");

    for step in 0..steps {
        let dir = tempfile::tempdir().unwrap();
        let clean = CheckpointStorage::open(dir.path()).unwrap();
        let first = write_checkpoint(&clean, 1).unwrap();
        let faulty = CheckpointStorage::with_io(dir.path(), Io::fail_at(step)).unwrap();
        let r = write_checkpoint(&faulty, 2);
        assert!(r.is_err(), "step {step} of {steps} did not fail");
        assert!(sabot_test_kit::error_chain(&r.unwrap_err()).contains("injected failure"));
        // What a restarted job sees: a checkpoint is complete only if its manifest was
        // published, which happens after every file is on disk, as the last rename of
        // the folder; only the folder's fsync and `_latest` come after it. Whatever is
        // complete verifies.
        let published = clean
            .completed()
            .unwrap()
            .iter()
            .any(|m| m.id == CheckpointId(2));
        assert!(
            !published || step >= steps - STEPS_AFTER_PUBLISHING,
            "checkpoint 2 published despite a failure at step {step} of {steps}"
        );
        for m in clean.completed().unwrap() {
            clean.verify(&m).unwrap();
        }
        let latest = clean.latest().unwrap().unwrap();
        if published {
            assert_eq!(latest.id, CheckpointId(2), "after a failure at step {step}");
        } else {
            assert_eq!(latest, first, "after a failure at step {step}");
        }
    }
}

/// Damages one file of checkpoint 2 (of 1 and 2) in `how`, and returns the storage.
fn damaged(how: impl FnOnce(&CheckpointStorage)) -> (tempfile::TempDir, CheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    write_checkpoint(&storage, 1).unwrap();
    write_checkpoint(&storage, 2).unwrap();
    how(&storage);
    (dir, storage)
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_newest_checkpoint_is_an_error_naming_the_file_never_an_older_checkpoint() {
    let file = |s: &CheckpointStorage, name: &str| s.dir(CheckpointId(2)).join(name);
    let root = |s: &CheckpointStorage, name: &str| s.root().join(name);
    type Damage = Box<dyn Fn(&CheckpointStorage)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a flipped byte in a task file",
            Box::new(move |s| flip_byte(&file(s, "task-0/state.sbst"), 5_000)),
            "task-0/state.sbst",
        ),
        (
            "a truncated task file",
            Box::new(move |s| std::fs::write(file(s, "task-1/state.sbst"), b"checkpoint").unwrap()),
            "task-1/state.sbst",
        ),
        (
            "a missing file in a nested folder",
            Box::new(move |s| std::fs::remove_file(file(s, "rocks/000012.sst")).unwrap()),
            "rocks/000012.sst",
        ),
        (
            "a truncated manifest",
            Box::new(move |s| {
                let p = file(s, "_manifest");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            "_manifest",
        ),
        (
            "an altered manifest",
            Box::new(move |s| flip_byte(&file(s, "_manifest"), 30)),
            "_manifest",
        ),
        (
            "an empty manifest",
            Box::new(move |s| std::fs::write(file(s, "_manifest"), b"").unwrap()),
            "_manifest",
        ),
        (
            "a missing manifest",
            Box::new(move |s| std::fs::remove_file(file(s, "_manifest")).unwrap()),
            "_manifest",
        ),
        (
            "a missing checkpoint folder",
            Box::new(move |s| std::fs::remove_dir_all(s.dir(CheckpointId(2))).unwrap()),
            "_manifest",
        ),
        (
            "a damaged _latest",
            Box::new(move |s| flip_byte(&root(s, "_latest"), 28)),
            "_latest",
        ),
        (
            "a cut-off _latest",
            Box::new(move |s| {
                std::fs::write(root(s, "_latest"), b"sabot-checkpoint-latest 1\n").unwrap()
            }),
            "_latest",
        ),
    ];
    for (what, how, names) in cases {
        let (_dir, storage) = damaged(how);
        let e = storage.latest().expect_err(what);
        let chain = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|c| c.to_string())
                .unwrap_or_default()
        );
        assert!(chain.contains(names), "{what}: {chain}");
        match &e {
            sabot_checkpoint::CheckpointError::Damaged {
                checkpoint, older, ..
            } => {
                assert_eq!(*checkpoint, CheckpointId(2), "{what}");
                assert_eq!(*older, Some(CheckpointId(1)), "{what}");
                assert!(chain.contains("--restore-from 1"), "{what}: {chain}");
            }
            // A damaged `_latest` is reported as itself: which checkpoint it named is
            // unknown.
            sabot_checkpoint::CheckpointError::BadManifest { path, .. } => {
                assert!(path.ends_with("_latest"), "{what}: {e}")
            }
            other => panic!("{what}: {other:?}"),
        }
        // The user's explicit choice works, and the damaged one is not discarded.
        assert_eq!(
            storage.restore_from(CheckpointId(1)).unwrap().id,
            CheckpointId(1)
        );
    }
}

#[test]
fn a_checkpoint_whose_pointer_update_was_lost_is_still_the_newest() {
    // A crash between the manifest's rename and `_latest`'s: the folder says 2.
    let (_dir, storage) = damaged(|s| {
        let mut text = "sabot-checkpoint-latest 1\nid 1\n".to_string();
        text.push_str(&format!(
            "checksum {:08x}\n",
            crc32fast::hash(text.as_bytes())
        ));
        std::fs::write(s.root().join("_latest"), text).unwrap();
    });
    assert_eq!(storage.latest().unwrap().unwrap().id, CheckpointId(2));
    // And an unpublished folder above it (no manifest: a crash while writing) is not.
    std::fs::create_dir_all(storage.dir(CheckpointId(3)).join("task-0")).unwrap();
    assert_eq!(storage.latest().unwrap().unwrap().id, CheckpointId(2));
}

#[test]
fn the_newest_checkpoint_is_never_discarded() {
    let (_dir, storage) = damaged(|_| {});
    let e = storage.discard(CheckpointId(2)).unwrap_err();
    assert!(e.to_string().contains("newest"), "{e}");
    storage.discard(CheckpointId(1)).unwrap();
    assert_eq!(storage.latest().unwrap().unwrap().id, CheckpointId(2));
}

#[test]
fn a_second_process_on_the_folder_is_refused_until_the_first_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let held = storage.lock().unwrap();
    // flock locks belong to the open file: a second open in this process conflicts as a
    // second process's would.
    let e = CheckpointStorage::open(dir.path())
        .unwrap()
        .lock()
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("in use by another process"), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    drop(held);
    storage.lock().unwrap();
}

#[test]
fn damaged_manifests_are_listed_as_incomplete_with_the_reason() {
    let (_dir, storage) = damaged(|s| {
        let path = s.dir(CheckpointId(1)).join("_manifest");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    });
    match &storage.list().unwrap()[0] {
        Listed::Incomplete { id, reason } => {
            assert_eq!(*id, CheckpointId(1));
            assert!(reason.contains("_manifest"), "{reason}");
        }
        other => panic!("a cut-off manifest listed as {other:?}"),
    }
    // An older damaged checkpoint does not matter: the newest is intact.
    assert_eq!(storage.latest().unwrap().unwrap().id, CheckpointId(2));

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
