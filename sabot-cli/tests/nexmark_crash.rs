//! `kill -9` of a checkpointed `sabot nexmark run` (q5, hot items: a sliding window and a
//! keyed process function), twice at random moments after a checkpoint, each time
//! restarted on the same folders: the committed results equal those of a run that never
//! crashed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sabot::checkpoint::storage::CheckpointStorage;

const RUN: &[&str] = &[
    "nexmark",
    "run",
    "--query",
    "q5",
    "--events",
    "1500000",
    "--rate",
    "20000",
    "--parallelism",
    "2",
    "--no-progress",
];

fn sabot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sabot"))
}

fn committed(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "csv") {
            let text = std::fs::read_to_string(&path).unwrap();
            rows.extend(text.lines().skip(1).map(str::to_owned));
        }
    }
    rows.sort();
    rows
}

#[test]
fn kill_9_twice_then_finish_gives_the_fault_free_results() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let o = sabot()
        .args(RUN)
        .arg("--output")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = committed(&reference);
    assert!(!want.is_empty());

    let (out, ckpt) = (dir.path().join("out"), dir.path().join("ckpt"));
    let run = || {
        sabot()
            .args(RUN)
            .arg("--output")
            .arg(&out)
            .arg("--checkpoint-dir")
            .arg(&ckpt)
            .args(["--checkpoint-interval", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let latest = || {
        CheckpointStorage::open(&ckpt)
            .ok()
            .and_then(|s| s.latest().ok().flatten())
            .map(|m| m.id)
    };
    let seed = sabot_test_kit::seed_from_env("SABOT_CRASH_SEED");
    let mut rng = sabot::core::random::SplitMix64::new(seed, 0);
    let mut kills = 0;
    for _ in 0..2 {
        let before = latest();
        let mut child = run();
        let deadline = Instant::now() + Duration::from_secs(120);
        while latest() == before && child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "no checkpoint completed in 120 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = rng.next_u64() % 150;
        println!("killed {delay} ms after checkpoint {:?}", latest());
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 1, "every run ended before it was killed");
    let last = run().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&last.stdout);
    assert!(
        last.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(text.contains("Continued from checkpoint"), "{text}");
    let got = committed(&out);
    assert_eq!(got.len(), want.len(), "results lost or duplicated");
    assert_eq!(got, want);
}
