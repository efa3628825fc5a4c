//! The coordinator and workers over real loopback gRPC, with attempts as threads: a job
//! that finishes, one whose first attempt fails and is restarted, a worker of another
//! job refused with the difference named, and garbage and half-open connections on the
//! coordinator's port leaving the job unharmed.

#![cfg(feature = "service")]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sabot_cluster::service::{
    Attempts, Coordinator, CoordinatorConfig, Reporter, WorkerConfig, WorkerError, run_worker,
};
use sabot_cluster::{Attempt, Deployment, Fingerprint, JobState, MasterConfig, RestartStrategy};

/// Attempts that end after `run_for`, failing the first `fail_first` of them.
struct FakeAttempts {
    run_for: Duration,
    log: Arc<Mutex<Vec<String>>>,
    fail_attempts_below: u64,
}

impl Attempts for FakeAttempts {
    fn deploy(&mut self, index: usize, deployment: Deployment, reporter: Reporter) {
        let attempt = deployment.attempt;
        self.log.lock().unwrap().push(format!(
            "deploy {} index {index} of {} subtasks {:?}",
            attempt.0,
            deployment.workers.len(),
            deployment.owners
        ));
        let (run_for, fail) = (self.run_for, attempt.0 < self.fail_attempts_below);
        std::thread::spawn(move || {
            std::thread::sleep(run_for);
            if fail {
                reporter.failed(attempt, "disk full");
            } else {
                reporter.finished(attempt);
            }
        });
    }

    fn cancel(&mut self, attempt: Attempt) {
        self.log
            .lock()
            .unwrap()
            .push(format!("cancel {}", attempt.0));
    }

    fn cancel_all(&mut self) {}
}

fn fingerprint() -> Fingerprint {
    Fingerprint::new()
        .with("graph", "g")
        .with("parallelism", "2")
}

fn coordinator(parallelism: usize) -> Coordinator {
    let mut master = MasterConfig::new(parallelism);
    master.restart = RestartStrategy::fixed_delay(2, Duration::from_millis(100));
    master.heartbeat_timeout = Duration::from_secs(2);
    let mut config = CoordinatorConfig::new(master, fingerprint());
    config.heartbeat_interval = Duration::from_millis(200);
    config.register_timeout = Duration::from_millis(500);
    Coordinator::start("127.0.0.1:0".parse().unwrap(), config).unwrap()
}

fn worker(
    coordinator: SocketAddr,
    name: &str,
    fingerprint: Fingerprint,
    attempts: FakeAttempts,
) -> std::thread::JoinHandle<Result<(), WorkerError>> {
    let config = WorkerConfig {
        coordinator,
        name: name.into(),
        slots: 1,
        data_addr: "127.0.0.1:9".parse().unwrap(),
        fingerprint,
        reconnect_timeout: Duration::from_secs(1),
    };
    std::thread::spawn(move || run_worker(config, attempts))
}

#[test]
fn two_workers_run_a_job_to_its_end_and_a_failed_attempt_is_restarted() {
    let c = coordinator(2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let fake = |fail_below| FakeAttempts {
        run_for: Duration::from_millis(300),
        log: log.clone(),
        fail_attempts_below: fail_below,
    };
    let _a = worker(c.local_addr(), "a", fingerprint(), fake(2));
    let _b = worker(c.local_addr(), "b", fingerprint(), fake(0));
    assert_eq!(c.wait(Duration::from_secs(20)), JobState::Finished);
    let status = c.status();
    assert_eq!(status.restarts, 1, "{status:?}");
    assert_eq!(status.attempt, Some(Attempt(2)));
    assert!(
        status
            .failure
            .as_deref()
            .unwrap_or("")
            .contains("disk full"),
        "{status:?}"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("deploy 1")).count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("deploy 2")).count(),
        2,
        "{log:?}"
    );
    assert!(log.iter().any(|l| l == "cancel 1"), "{log:?}");
}

#[test]
fn a_worker_of_another_job_is_refused_naming_the_difference_and_garbage_is_survived() {
    let c = coordinator(1);
    // Garbage, then a half-open connection that never speaks.
    let mut garbage = TcpStream::connect(c.local_addr()).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13garbage")
        .unwrap();
    let _half_open = TcpStream::connect(c.local_addr()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let other = worker(
        c.local_addr(),
        "other",
        fingerprint().with("parallelism", "8"),
        FakeAttempts {
            run_for: Duration::ZERO,
            log: log.clone(),
            fail_attempts_below: 0,
        },
    );
    let e = other.join().unwrap().unwrap_err().to_string();
    assert!(
        e.contains("refused this worker: worker `other` runs another job than the coordinator: parallelism: coordinator 2, worker 8"),
        "{e}"
    );
    assert_eq!(c.status().state, JobState::Created);
    let _good = worker(
        c.local_addr(),
        "good",
        fingerprint(),
        FakeAttempts {
            run_for: Duration::from_millis(50),
            log: log.clone(),
            fail_attempts_below: 0,
        },
    );
    assert_eq!(c.wait(Duration::from_secs(20)), JobState::Finished);
}
