//! `sabot worker`: the demo split over two processes on loopback, exchanging data over
//! Arrow Flight, gives the alerts of one process; a worker killed with `kill -9` makes
//! the other fail with a clear error instead of hanging.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEMO: &[&str] = &[
    "--events",
    "300000",
    "--parallelism",
    "3",
    "--accounts",
    "3000",
    "--threshold",
    "300",
    "--no-progress",
    "--show",
    "0",
];

fn sabot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sabot"))
}

fn free_addrs(n: usize) -> String {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn worker(workers: &str, index: usize, extra: &[&str]) -> Child {
    sabot()
        .args([
            "worker",
            "--workers",
            workers,
            "--index",
            &index.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sabot binary runs")
}

/// Waits for a child, killing it (and failing) after `limit`.
fn wait(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("a worker hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The data rows of every CSV file in `dir` whose name starts with `prefix`, sorted.
fn csv_rows(dir: &Path, prefix: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
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
fn two_worker_processes_give_the_alerts_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let split = dir.path().join("split");
    let o = sabot()
        .arg("demo")
        .args(DEMO)
        .arg("--output")
        .arg(&single)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let workers = free_addrs(2);
    let out = split.to_str().unwrap();
    let children: Vec<Child> = (0..2)
        .map(|i| worker(&workers, i, &[DEMO, &["--output", out]].concat()))
        .collect();
    for c in children {
        let o = wait(c, Duration::from_secs(120));
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("worker"), "{}", text(&o));
    }
    for kind in ["window-alerts", "spike-alerts"] {
        let want = csv_rows(&single, kind);
        assert!(!want.is_empty(), "no {kind} in the single-process run");
        assert_eq!(csv_rows(&split, kind), want, "{kind} differ");
    }
    // Each worker wrote its own share.
    assert!(split.join("window-alerts-0.csv").exists());
    assert!(split.join("window-alerts-1.csv").exists());
}

#[test]
fn killing_one_worker_makes_the_other_fail_with_a_clear_error() {
    let workers = free_addrs(2);
    let long = [
        "--events",
        "500000000",
        "--parallelism",
        "2",
        "--no-progress",
        "--connect-timeout",
        "10",
    ];
    let survivor = worker(&workers, 0, &long);
    let mut victim = worker(&workers, 1, &long);
    // Let them connect and exchange data for a while.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(victim.try_wait().unwrap().is_none(), "worker 1 ended early");
    // SIGKILL: no chance to close anything cleanly.
    victim.kill().unwrap();
    let _ = victim.wait();
    let o = wait(survivor, Duration::from_secs(60));
    assert!(!o.status.success(), "the survivor must fail: {}", text(&o));
    let t = text(&o);
    assert!(t.contains("went away"), "no clear peer-lost error: {t}");
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn bad_worker_arguments_are_clear_errors() {
    let o = sabot()
        .args(["worker", "--workers", "127.0.0.1:1", "--index", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--index 1 is not a position in --workers"),
        "{}",
        text(&o)
    );

    let o = sabot()
        .args(["worker", "--workers", "localhost-no-port", "--index", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--workers"), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}
