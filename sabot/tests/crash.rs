//! `kill -9` of a checkpointed `sabot demo`, three times at different moments, each time
//! restarted on the same checkpoint folder: the committed output equals the output of a
//! run that never crashed (no alert lost, none duplicated).

use std::path::Path;

use sabot::checkpoint::storage::LocalStorage;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &[&str] = &[
    "demo",
    "--events",
    "600000",
    "--parallelism",
    "2",
    "--accounts",
    "5000",
    "--threshold",
    "300",
    "--no-progress",
    "--show",
    "0",
];

fn sabot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sabot"))
}

/// The data rows of the committed CSV files in `dir` whose name starts with `prefix`.
fn committed(dir: &Path, prefix: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".csv") {
            let text = std::fs::read_to_string(&path).unwrap();
            rows.extend(text.lines().skip(1).map(str::to_owned));
        }
    }
    rows.sort();
    rows
}

#[test]
fn kill_9_three_times_then_finish_gives_the_fault_free_output() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let o = sabot()
        .args(DEMO)
        .arg("--output")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let out = dir.path().join("out");
    let ckpt = dir.path().join("checkpoints");
    let run = || {
        sabot()
            .args(DEMO)
            .arg("--output")
            .arg(&out)
            .arg("--checkpoint-dir")
            .arg(&ckpt)
            .args(["--checkpoint-interval", "150"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    // Each run is killed at a random moment after it completed a checkpoint of its own
    // (so every run makes progress, whatever the machine's speed). The seed is printed:
    // a seed reproduces the moments.
    let seed = sabot::core::test_util::seed_from_env("SABOT_CRASH_SEED");
    let mut rng = sabot::core::random::SplitMix64::new(seed, 0);
    let latest = || {
        LocalStorage::open(&ckpt)
            .ok()
            .and_then(|s| s.latest().ok().flatten())
            .map(|m| m.id)
    };
    for _ in 0..3 {
        let before = latest();
        let mut child = run();
        let deadline = Instant::now() + Duration::from_secs(60);
        while latest() == before && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no checkpoint completed in 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = rng.next_u64() % 250;
        println!(
            "run {}: killed {delay} ms after checkpoint {:?}",
            kills + 1,
            latest()
        );
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    assert_eq!(kills, 3, "runs ended before they were killed");
    let last = run().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&last.stdout);
    assert!(
        last.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(text.contains("Continued from checkpoint"), "{text}");

    for kind in ["window-alerts", "spike-alerts"] {
        let want = committed(&reference, kind);
        assert!(!want.is_empty());
        let got = committed(&out, kind);
        assert_eq!(got.len(), want.len(), "{kind}: rows lost or duplicated");
        assert_eq!(got, want, "{kind} differ");
    }
    // The job is finished: started again on the same folder, it adds nothing.
    let again = run().wait_with_output().unwrap();
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("no new output rows"), "{text}");
    for kind in ["window-alerts", "spike-alerts"] {
        assert_eq!(
            committed(&out, kind),
            committed(&reference, kind),
            "{kind}: a rerun of the finished job changed the output"
        );
    }
    // Nothing half-written is visible: hidden files only.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".csv") || name.starts_with('.'), "{name}");
    }
}

#[test]
fn checkpoint_dir_without_output_is_a_clear_error() {
    let o = sabot()
        .args(["demo", "--events", "10", "--checkpoint-dir", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = String::from_utf8_lossy(&o.stderr);
    assert!(t.contains("--checkpoint-dir needs --output"), "{t}");
}
