//! Attempts as child processes: each deployment runs in a fresh process (the same binary,
//! given the deployment in [`DEPLOYMENT_ENV`]), so cancelling an attempt is killing a
//! process: bounded, and nothing of it is left in the worker. A child whose worker dies
//! (even by `kill -9`) sees its standard input end and exits
//! ([`exit_with_parent`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::worker::{Attempts, Reporter};
use crate::master::{Attempt, Deployment};
use crate::protocol::{ProtocolError, ToWorker};

/// The environment variable that hands a child process its deployment (the
/// [`ToWorker::Deploy`] message's bytes, in hex).
pub const DEPLOYMENT_ENV: &str = "SABOT_DEPLOYMENT";

/// Lines of a failed child's standard error kept for the failure's reason.
const REASON_LINES: usize = 12;

struct Running {
    attempt: Attempt,
    child: Arc<Mutex<Child>>,
    cancelled: Arc<AtomicBool>,
    waiter: JoinHandle<()>,
}

/// Runs each attempt as `program args...` with the deployment in [`DEPLOYMENT_ENV`].
pub struct ProcessAttempts {
    program: PathBuf,
    args: Vec<OsString>,
    running: Option<Running>,
}

impl std::fmt::Debug for ProcessAttempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessAttempts")
            .field("program", &self.program)
            .field("running", &self.running.as_ref().map(|r| r.attempt))
            .finish()
    }
}

impl ProcessAttempts {
    /// Attempts run as `program args...`.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = OsString>) -> Self {
        ProcessAttempts {
            program: program.into(),
            args: args.into_iter().collect(),
            running: None,
        }
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.cancelled.store(true, Ordering::SeqCst);
            if let Ok(mut c) = r.child.lock() {
                let _ = c.kill();
            }
            let _ = r.waiter.join();
            tracing::info!(attempt = r.attempt.0, "attempt stopped");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Attempts for ProcessAttempts {
    fn deploy(&mut self, index: usize, deployment: Deployment, reporter: Reporter) {
        self.stop();
        let attempt = deployment.attempt;
        let message = ToWorker::Deploy {
            index: index as u32,
            deployment,
        };
        let spawned = Command::new(&self.program)
            .args(&self.args)
            .env(DEPLOYMENT_ENV, hex(&message.encode()))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                reporter.failed(
                    attempt,
                    format!("cannot start {}: {e}", self.program.display()),
                );
                return;
            }
        };
        let stderr = child.stderr.take();
        let child = Arc::new(Mutex::new(child));
        let cancelled = Arc::new(AtomicBool::new(false));
        let (c, stop) = (child.clone(), cancelled.clone());
        let waiter = std::thread::spawn(move || {
            // The child's log goes on to ours; its last lines explain a failure.
            let tail = std::thread::spawn(move || {
                let mut last: std::collections::VecDeque<String> = Default::default();
                if let Some(err) = stderr {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        eprintln!("{line}");
                        if last.len() == REASON_LINES {
                            last.pop_front();
                        }
                        last.push_back(line);
                    }
                }
                last.into_iter().collect::<Vec<_>>().join("\n")
            });
            let status = loop {
                let polled = c.lock().map(|mut c| c.try_wait());
                match polled {
                    Ok(Ok(Some(status))) => break Ok(status),
                    Ok(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
                    Ok(Err(e)) => break Err(e.to_string()),
                    Err(_) => break Err("lost track of the child process".into()),
                }
            };
            let tail = tail.join().unwrap_or_default();
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match status {
                Ok(s) if s.success() => reporter.finished(attempt),
                Ok(s) => reporter.failed(
                    attempt,
                    format!("the attempt's process ended with {s}: {tail}"),
                ),
                Err(e) => reporter.failed(attempt, e),
            }
        });
        tracing::info!(attempt = attempt.0, "attempt started");
        self.running = Some(Running {
            attempt,
            child,
            cancelled,
            waiter,
        });
    }

    fn cancel(&mut self, attempt: Attempt) {
        if self.running.as_ref().is_some_and(|r| r.attempt == attempt) {
            self.stop();
        }
    }

    fn cancel_all(&mut self) {
        self.stop();
    }
}

impl Drop for ProcessAttempts {
    fn drop(&mut self) {
        self.stop();
    }
}

/// In a child process started by [`ProcessAttempts`]: its part of the deployment (its
/// index among the attempt's workers, and the deployment), or `None` outside one.
pub fn deployment_from_env() -> Option<Result<(usize, Deployment), ProtocolError>> {
    let value = std::env::var(DEPLOYMENT_ENV).ok()?;
    let Some(bytes) = unhex(&value) else {
        return Some(Err(ProtocolError(sabot_core::codec::CodecError::new(
            format!("{DEPLOYMENT_ENV} is not hexadecimal"),
        ))));
    };
    Some(match ToWorker::decode(&bytes) {
        Ok(ToWorker::Deploy { index, deployment }) => Ok((index as usize, deployment)),
        Ok(other) => Err(ProtocolError(sabot_core::codec::CodecError::new(format!(
            "{DEPLOYMENT_ENV} holds {other:?}, not a deployment"
        )))),
        Err(e) => Err(e),
    })
}

/// In a child process started by [`ProcessAttempts`]: exits (status 70) when the
/// worker that started it goes away, however it went (its standard input ends).
pub fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        tracing::warn!("the worker that started this attempt is gone: exiting");
        std::process::exit(70);
    });
}
