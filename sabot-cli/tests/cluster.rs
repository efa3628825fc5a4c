//! Cluster mode with real processes: a coordinator and worker processes run a Nexmark
//! query; a worker killed with SIGKILL while the job runs is noticed, the job is
//! cancelled and restarted on the workers left (a spare joins), and the output equals a
//! one-process run's, row for row. A worker of another job is refused, naming the
//! difference.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn sabot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sabot"))
}

/// The query's options, with output into `out`.
fn query(events: u64, out: &Path) -> Vec<String> {
    [
        "nexmark",
        "cluster",
        "--query",
        "q5",
        "--events",
        &events.to_string(),
        "--parallelism",
        "2",
        "--no-progress",
        "--output",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every data row of the CSV files in `dir`, sorted.
fn rows(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "csv") {
            let text = std::fs::read_to_string(&path).unwrap();
            rows.extend(text.lines().skip(1).map(str::to_string));
        }
    }
    rows.sort();
    rows
}

/// Whether a part file committed with a checkpoint in `dir` holds rows.
fn committed_rows(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".csv")
                && !name.starts_with('.')
                && std::fs::read_to_string(e.path()).is_ok_and(|t| t.lines().count() > 1)
        })
    })
}

/// Starts `sabot args...` with its standard error sent line by line into the returned
/// receiver (and echoed, prefixed with `tag`).
fn spawn(tag: &'static str, args: &[String]) -> (Child, mpsc::Receiver<String>) {
    let mut child = sabot()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a line of `rx` containing `text`.
fn wait_for(rx: &mpsc::Receiver<String>, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with `{text}` in {timeout:?}: {e}"),
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_worker_killed_mid_job_is_replaced_and_the_output_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (single, clustered) = (dir.path().join("single"), dir.path().join("cluster"));
    let events = 8_000_000;
    let mut args = query(events, &single);
    args.push("run".into());
    let status = sabot().args(&args).stderr(Stdio::null()).status().unwrap();
    assert!(status.success());
    let expected = rows(&single);
    assert!(expected.len() > 100, "{} rows", expected.len());

    let addr = format!("127.0.0.1:{}", free_port());
    let role = |extra: &[&str]| {
        let mut a = query(events, &clustered);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (mut coordinator, log) = spawn(
        "coordinator",
        &role(&[
            "coordinator",
            "--listen",
            &addr,
            "--restart-delay-ms",
            "200",
            "--heartbeat-timeout-ms",
            "2000",
        ]),
    );
    wait_for(&log, "listening on", Duration::from_secs(30));
    let worker = |name: &str| {
        role(&[
            "worker",
            "--coordinator",
            &addr,
            "--slots",
            "1",
            "--name",
            name,
        ])
    };
    let (mut w1, _) = spawn("w1", &worker("w1"));
    let (mut w2, _) = spawn("w2", &worker("w2"));
    wait_for(&log, "job running: attempt 1", Duration::from_secs(60));
    // A spare joins, then w1 dies while the job runs (it takes several seconds).
    let (mut w3, _) = spawn("w3", &worker("w3"));
    wait_for(&log, "w3 (worker 3", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    w1.kill().unwrap();
    let _ = w1.wait();
    let line = wait_for(
        &log,
        "job running: attempt 2, 1 restarts",
        Duration::from_secs(60),
    );
    assert!(!line.contains("w1 ("), "{line}");
    wait_for(
        &log,
        "job finished: attempt 2, 1 restarts",
        Duration::from_secs(120),
    );
    assert!(wait_exit(&mut coordinator, Duration::from_secs(30)).success());
    // The workers left end with the job.
    assert!(wait_exit(&mut w2, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w3, Duration::from_secs(30)).success());
    assert_eq!(rows(&clustered), expected);
}

/// The coordinator killed with SIGKILL while the job runs: the workers stop their
/// attempts and keep trying to register; a coordinator started again on the same address
/// runs the job to its end on them (from the start of its input: checkpoints across
/// processes are not there yet), and the output equals a one-process run's.
#[test]
fn a_killed_coordinator_started_again_runs_the_job_on_the_same_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (single, clustered) = (dir.path().join("single"), dir.path().join("cluster"));
    let events = 6_000_000;
    let mut args = query(events, &single);
    args.push("run".into());
    assert!(
        sabot()
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let expected = rows(&single);

    let addr = format!("127.0.0.1:{}", free_port());
    let role = |extra: &[&str]| {
        let mut a = query(events, &clustered);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let coordinator_args = role(&["coordinator", "--listen", &addr]);
    let (mut first, log) = spawn("coordinator-1", &coordinator_args);
    wait_for(&log, "listening on", Duration::from_secs(30));
    let worker = |name: &str| {
        role(&[
            "worker",
            "--coordinator",
            &addr,
            "--slots",
            "1",
            "--name",
            name,
        ])
    };
    let (mut w1, _) = spawn("w1", &worker("w1"));
    let (mut w2, _) = spawn("w2", &worker("w2"));
    wait_for(&log, "job running: attempt 1", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(800));
    first.kill().unwrap();
    let _ = first.wait();
    std::thread::sleep(Duration::from_millis(500));
    let (mut second, log) = spawn("coordinator-2", &coordinator_args);
    wait_for(&log, "job running: attempt 1", Duration::from_secs(60));
    wait_for(&log, "job finished", Duration::from_secs(120));
    assert!(wait_exit(&mut second, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w1, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w2, Duration::from_secs(30)).success());
    assert_eq!(rows(&clustered), expected);
}

/// Checkpoints across processes: the job checkpoints into a folder the workers share
/// (worker 0 of each attempt runs the checkpoint coordinator; the other sends its
/// reports over the network); a worker killed with SIGKILL mid-job makes the job restart
/// from the newest checkpoint, and the committed output (part files published with the
/// checkpoints) equals a one-process run's row for row: nothing lost, nothing twice.
#[test]
fn with_checkpoints_a_killed_worker_resumes_from_the_newest_checkpoint_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (single, clustered) = (dir.path().join("single"), dir.path().join("cluster"));
    let ckpt = dir.path().join("checkpoints");
    let events = 8_000_000;
    let mut args = query(events, &single);
    args.push("run".into());
    assert!(
        sabot()
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let expected = rows(&single);

    let addr = format!("127.0.0.1:{}", free_port());
    let role = |extra: &[&str]| {
        let mut a = query(events, &clustered);
        a.extend(
            [
                "--checkpoint-dir",
                &ckpt.display().to_string(),
                "--checkpoint-interval",
                "200",
            ]
            .map(String::from),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (mut coordinator, log) = spawn(
        "coordinator",
        &role(&[
            "coordinator",
            "--listen",
            &addr,
            "--restart-delay-ms",
            "200",
        ]),
    );
    wait_for(&log, "listening on", Duration::from_secs(30));
    let worker = |name: &str| {
        role(&[
            "worker",
            "--coordinator",
            &addr,
            "--slots",
            "1",
            "--name",
            name,
        ])
    };
    let (mut w1, _) = spawn("w1", &worker("w1"));
    let (mut w2, _) = spawn("w2", &worker("w2"));
    wait_for(&log, "job running: attempt 1", Duration::from_secs(60));
    let (mut w3, _) = spawn("w3", &worker("w3"));
    // Kill once a checkpoint committed some output: a restart that did not continue
    // from it would commit those rows a second time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !committed_rows(&clustered) {
        assert!(Instant::now() < deadline, "no output committed");
        std::thread::sleep(Duration::from_millis(20));
    }
    w1.kill().unwrap();
    let _ = w1.wait();
    wait_for(
        &log,
        "job running: attempt 2, 1 restarts",
        Duration::from_secs(60),
    );
    wait_for(
        &log,
        "job finished: attempt 2, 1 restarts",
        Duration::from_secs(180),
    );
    assert!(wait_exit(&mut coordinator, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w2, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w3, Duration::from_secs(30)).success());
    assert_eq!(rows(&clustered), expected);
}

/// Without restarts (`--restart-strategy none`), a lost worker fails the job: the
/// coordinator exits with an error naming the lost worker and the strategy, and the
/// worker left ends too.
#[test]
fn without_restarts_a_lost_worker_fails_the_job_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let role = |extra: &[&str]| {
        let mut a = query(8_000_000, dir.path());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (mut coordinator, log) = spawn(
        "coordinator",
        &role(&[
            "coordinator",
            "--listen",
            &addr,
            "--restart-strategy",
            "none",
        ]),
    );
    wait_for(&log, "listening on", Duration::from_secs(30));
    let worker = |name: &str| {
        role(&[
            "worker",
            "--coordinator",
            &addr,
            "--slots",
            "1",
            "--name",
            name,
        ])
    };
    let (mut w1, _) = spawn("w1", &worker("w1"));
    let (mut w2, _) = spawn("w2", &worker("w2"));
    wait_for(&log, "job running: attempt 1", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    w1.kill().unwrap();
    let _ = w1.wait();
    let line = wait_for(
        &log,
        "error: nexmark q5 in a cluster",
        Duration::from_secs(60),
    );
    assert!(line.contains("the job ended failed"), "{line}");
    assert!(line.contains("(`w1`) was lost"), "{line}");
    assert!(line.contains("no more restarts (0 so far)"), "{line}");
    assert!(!wait_exit(&mut coordinator, Duration::from_secs(30)).success());
    assert!(!wait_exit(&mut w2, Duration::from_secs(30)).success());
}

/// The demo in cluster mode: a coordinator and two workers write the same alerts as
/// `sabot demo` in one process.
#[test]
fn the_demo_on_two_workers_writes_the_alerts_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (single, clustered) = (dir.path().join("single"), dir.path().join("cluster"));
    let demo = |out: &Path| -> Vec<String> {
        [
            "demo",
            "--events",
            "300000",
            "--parallelism",
            "2",
            "--no-progress",
            "--output",
            &out.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let status = sabot()
        .args(demo(&single))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let expected = rows(&single);
    assert!(expected.len() > 10, "{} alerts", expected.len());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut coordinator_args = demo(&clustered);
    coordinator_args.extend(["coordinator".into(), "--listen".into(), addr.clone()]);
    let (mut coordinator, log) = spawn("coordinator", &coordinator_args);
    wait_for(&log, "listening on", Duration::from_secs(30));
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let mut a = demo(&clustered);
        a.extend(
            [
                "worker",
                "--coordinator",
                &addr,
                "--slots",
                "1",
                "--name",
                name,
            ]
            .map(String::from),
        );
        workers.push(spawn("worker", &a).0);
    }
    wait_for(&log, "job finished: attempt 1", Duration::from_secs(120));
    assert!(wait_exit(&mut coordinator, Duration::from_secs(30)).success());
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(30)).success());
    }
    assert_eq!(rows(&clustered), expected);
}

#[test]
fn a_worker_with_other_options_is_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = query(1000, dir.path());
    args.extend(["coordinator".into(), "--listen".into(), addr.clone()]);
    let (mut coordinator, log) = spawn("coordinator", &args);
    wait_for(&log, "listening on", Duration::from_secs(30));
    let mut other = query(1000, dir.path());
    let q = other.iter().position(|a| a == "q5").unwrap();
    other[q] = "q7".into();
    other.extend(["worker".into(), "--coordinator".into(), addr.clone()]);
    let out = sabot().args(&other).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused this worker"), "{err}");
    assert!(
        err.contains("job: coordinator nexmark-q5, worker nexmark-q7"),
        "{err}"
    );
    assert!(
        err.contains("node 2: coordinator select(auction, date_time), worker select("),
        "{err}"
    );
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}

/// Network namespaces for the workers (`ip netns`, root needed): worker `i` lives in
/// `sabot-w{i}`, reached from the root namespace (the coordinator's) over a veth pair
/// `10.77.{i}.1` (root side) – `10.77.{i}.2`, and the root namespace forwards between
/// them. Removed when dropped.
struct Namespaces {
    ids: Vec<u8>,
    forward_before: String,
}

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("ip {args}: {e}"));
    assert!(
        status.success(),
        "ip {args} failed: network namespaces need root"
    );
}

impl Namespaces {
    fn new(ids: &[u8]) -> Namespaces {
        let forward = "/proc/sys/net/ipv4/ip_forward";
        let forward_before = std::fs::read_to_string(forward).unwrap_or_default();
        let ns = Namespaces {
            ids: ids.to_vec(),
            forward_before,
        };
        ns.remove();
        std::fs::write(forward, "1").expect("enable IPv4 forwarding");
        for &i in ids {
            ip(&format!("netns add sabot-w{i}"));
            ip(&format!("link add sbt{i}a type veth peer name sbt{i}b"));
            ip(&format!("link set sbt{i}b netns sabot-w{i}"));
            ip(&format!("addr add 10.77.{i}.1/24 dev sbt{i}a"));
            ip(&format!("link set sbt{i}a up"));
            ip(&format!(
                "netns exec sabot-w{i} ip addr add 10.77.{i}.2/24 dev sbt{i}b"
            ));
            ip(&format!("netns exec sabot-w{i} ip link set sbt{i}b up"));
            ip(&format!("netns exec sabot-w{i} ip link set lo up"));
            ip(&format!(
                "netns exec sabot-w{i} ip route add default via 10.77.{i}.1"
            ));
        }
        ns
    }

    /// Cuts worker `i` off the network.
    fn cut(&self, i: u8) {
        ip(&format!("link set sbt{i}a down"));
    }

    fn remove(&self) {
        for &i in &self.ids {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("sbt{i}a")])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("sabot-w{i}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
        if !self.forward_before.is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forward_before.trim());
        }
    }
}

/// Workers in network namespaces; one is cut off (its link taken down) while the job
/// runs: the coordinator notices the missing heartbeats, restarts the job on the worker
/// left and a spare, and the output equals a one-process run's. The cut-off worker stops
/// its attempt and gives up after its reconnect timeout.
#[test]
fn a_worker_cut_off_the_network_is_replaced_and_the_output_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (single, clustered) = (dir.path().join("single"), dir.path().join("cluster"));
    let events = 8_000_000;
    let mut args = query(events, &single);
    args.push("run".into());
    assert!(
        sabot()
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let expected = rows(&single);

    let ns = Namespaces::new(&[1, 2, 3]);
    let port = free_port();
    let role = |extra: &[&str]| {
        let mut a = query(events, &clustered);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (mut coordinator, log) = spawn(
        "coordinator",
        &role(&[
            "coordinator",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--restart-delay-ms",
            "200",
            "--heartbeat-timeout-ms",
            "2000",
        ]),
    );
    wait_for(&log, "listening on", Duration::from_secs(30));
    let worker = |i: u8| -> (Child, mpsc::Receiver<String>) {
        let mut a = vec![
            "netns".to_string(),
            "exec".into(),
            format!("sabot-w{i}"),
            env!("CARGO_BIN_EXE_sabot").into(),
        ];
        a.extend(role(&[
            "worker",
            "--coordinator",
            &format!("10.77.{i}.1:{port}"),
            "--data",
            &format!("10.77.{i}.2:0"),
            "--slots",
            "1",
            "--name",
            &format!("w{i}"),
            "--reconnect-timeout-s",
            "5",
        ]));
        let mut child = Command::new("ip")
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[w{i}] {line}");
                let _ = tx.send(line);
            }
        });
        (child, rx)
    };
    let (mut w1, _) = worker(1);
    let (mut w2, _) = worker(2);
    wait_for(&log, "job running: attempt 1", Duration::from_secs(60));
    let (mut w3, _) = worker(3);
    wait_for(&log, "w3 (worker 3", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    ns.cut(1);
    let line = wait_for(
        &log,
        "job running: attempt 2, 1 restarts",
        Duration::from_secs(60),
    );
    assert!(!line.contains("w1 ("), "{line}");
    wait_for(
        &log,
        "job finished: attempt 2, 1 restarts",
        Duration::from_secs(120),
    );
    assert!(wait_exit(&mut coordinator, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w2, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut w3, Duration::from_secs(30)).success());
    // The cut-off worker gives up (its coordinator unreachable) rather than hanging.
    assert!(!wait_exit(&mut w1, Duration::from_secs(60)).success());
    assert_eq!(rows(&clustered), expected);
    drop(ns);
}
