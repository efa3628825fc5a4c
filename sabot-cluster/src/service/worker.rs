//! The worker process's side of the control plane: it registers with the coordinator,
//! sends heartbeats, runs the attempts it is given through an [`Attempts`]
//! implementation (for example [`ProcessAttempts`]: one child process per attempt), and
//! reports how they end.
//!
//! When the coordinator goes away, the worker cancels what it runs and registers again
//! as soon as a coordinator answers (for up to [`WorkerConfig::reconnect_timeout`]); a
//! coordinator that forgets it (a lost heartbeat, say) gets a fresh registration too.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::master::{Attempt, Deployment, Fingerprint, Registration, WorkerId};
use crate::protocol::{ToCoordinator, ToWorker};

/// A worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's address.
    pub coordinator: SocketAddr,
    /// The worker's name (unique in the cluster).
    pub name: String,
    /// Subtask slots it offers.
    pub slots: usize,
    /// Where its attempts' data plane listens.
    pub data_addr: SocketAddr,
    /// Its job's fingerprint.
    pub fingerprint: Fingerprint,
    /// How long to keep trying to reach a coordinator (at start, and after losing it).
    pub reconnect_timeout: Duration,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The coordinator refused the registration.
    #[error("the coordinator at {coordinator} refused this worker: {reason}")]
    Refused {
        /// The coordinator.
        coordinator: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// No coordinator answered in time.
    #[error("no coordinator answered at {coordinator} for {waited:?}: {last}")]
    Unreachable {
        /// The coordinator.
        coordinator: SocketAddr,
        /// How long the worker tried.
        waited: Duration,
        /// The last error.
        last: String,
    },
    /// The job failed or was cancelled (a finished job ends the worker without error).
    #[error("{reason}")]
    JobEnded {
        /// The job's end, as the coordinator put it.
        reason: String,
    },
    /// The worker's runtime could not start.
    #[error("cannot start the worker's runtime")]
    Runtime(#[source] std::io::Error),
}

/// Sends how an attempt ended to the coordinator.
#[derive(Clone, Debug)]
pub struct Reporter(mpsc::UnboundedSender<Report>);

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum Report {
    Finished(Attempt),
    Failed(Attempt, String),
}

impl Reporter {
    /// Every subtask of `attempt` on this worker ended with its input.
    pub fn finished(&self, attempt: Attempt) {
        let _ = self.0.send(Report::Finished(attempt));
    }

    /// A subtask of `attempt` failed with `reason`.
    pub fn failed(&self, attempt: Attempt, reason: impl Into<String>) {
        let _ = self.0.send(Report::Failed(attempt, reason.into()));
    }
}

/// Runs a worker's part of the attempts.
pub trait Attempts: Send {
    /// Starts part `index` of `deployment`, without waiting for it; reports its end
    /// through `reporter`.
    fn deploy(&mut self, index: usize, deployment: Deployment, reporter: Reporter);

    /// Stops attempt `attempt`'s subtasks (if it runs here) and returns once they are
    /// stopped.
    fn cancel(&mut self, attempt: Attempt);

    /// Stops whatever runs (the coordinator is gone).
    fn cancel_all(&mut self);
}

fn instance() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why a session with the coordinator ended.
enum SessionEnd {
    /// The connection is gone (or never came): try again.
    Lost(String),
    /// The coordinator forgot this worker: register again at once.
    Forgotten(String),
    /// The job ended.
    JobOver { finished: bool, reason: String },
}

/// Runs a worker until its coordinator refuses it or stays away longer than
/// [`WorkerConfig::reconnect_timeout`]. Blocks.
pub fn run_worker(config: WorkerConfig, mut attempts: impl Attempts) -> Result<(), WorkerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sabot-worker")
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;
    let instance = instance();
    let mut lost_since = Instant::now();
    loop {
        match runtime.block_on(session(&config, instance, &mut attempts)) {
            Ok(SessionEnd::Forgotten(reason)) => {
                tracing::warn!(
                    reason,
                    "the coordinator forgot this worker: registering again"
                );
                attempts.cancel_all();
                lost_since = Instant::now();
            }
            Ok(SessionEnd::JobOver { finished, reason }) => {
                attempts.cancel_all();
                tracing::info!(reason, "the job is over");
                return if finished {
                    Ok(())
                } else {
                    Err(WorkerError::JobEnded { reason })
                };
            }
            Ok(SessionEnd::Lost(reason)) => {
                attempts.cancel_all();
                if lost_since.elapsed() > config.reconnect_timeout {
                    return Err(WorkerError::Unreachable {
                        coordinator: config.coordinator,
                        waited: lost_since.elapsed(),
                        last: reason,
                    });
                }
                tracing::debug!(reason, "coordinator not reachable: retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                attempts.cancel_all();
                return Err(e);
            }
        }
    }
}

/// One registration: connects, registers, then serves until the connection ends.
async fn session(
    config: &WorkerConfig,
    instance: u64,
    attempts: &mut impl Attempts,
) -> Result<SessionEnd, WorkerError> {
    let endpoint =
        match tonic::transport::Endpoint::from_shared(format!("http://{}", config.coordinator)) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10)),
            Err(e) => return Ok(SessionEnd::Lost(sabot_core::ErrorChain(&e).to_string())),
        };
    let mut client = match endpoint.connect().await {
        Ok(c) => FlightServiceClient::new(c),
        Err(e) => return Ok(SessionEnd::Lost(sabot_core::ErrorChain(&e).to_string())),
    };
    let (up, up_rx) = mpsc::unbounded_channel::<ToCoordinator>();
    let _ = up.send(ToCoordinator::Register(Registration {
        name: config.name.clone(),
        instance,
        data_addr: config.data_addr,
        slots: config.slots,
        fingerprint: config.fingerprint.clone(),
        wall_clock_ms: wall_ms(),
    }));
    let outgoing = UnboundedReceiverStream::new(up_rx).map(|m| FlightData {
        app_metadata: m.encode().into(),
        ..Default::default()
    });
    let mut incoming = match client.do_exchange(outgoing).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            return Ok(SessionEnd::Lost(format!(
                "exchange refused: {}",
                e.message()
            )));
        }
    };
    let decode = |f: Result<Option<FlightData>, tonic::Status>| match f {
        Ok(Some(f)) => ToWorker::decode(&f.app_metadata)
            .map(Some)
            .map_err(|e| sabot_core::ErrorChain(&e).to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("stream error: {}", e.message())),
    };
    let (id, heartbeat) = match decode(incoming.message().await) {
        Ok(Some(ToWorker::Registered { id, heartbeat_ms })) => {
            (id, Duration::from_millis(heartbeat_ms.max(10)))
        }
        Ok(Some(ToWorker::Refused { reason })) => {
            return Err(WorkerError::Refused {
                coordinator: config.coordinator,
                reason,
            });
        }
        Ok(Some(other)) => {
            return Ok(SessionEnd::Lost(format!(
                "the coordinator answered the registration with {other:?}"
            )));
        }
        Ok(None) => return Ok(SessionEnd::Lost("the coordinator closed the stream".into())),
        Err(e) => return Ok(SessionEnd::Lost(e)),
    };
    tracing::info!(worker = config.name, id = %WorkerId(id.0), coordinator = %config.coordinator, "registered");
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let reporter = Reporter(report_tx);
    let mut beat = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            m = incoming.message() => match decode(m) {
                Ok(Some(ToWorker::Deploy { index, deployment })) => {
                    tracing::info!(attempt = deployment.attempt.0, index, "deploying");
                    attempts.deploy(index as usize, deployment, reporter.clone());
                }
                Ok(Some(ToWorker::Cancel { attempt })) => {
                    tracing::info!(attempt = attempt.0, "cancelling");
                    tokio::task::block_in_place(|| attempts.cancel(attempt));
                    let _ = up.send(ToCoordinator::Cancelled { attempt });
                }
                Ok(Some(ToWorker::Forget { reason })) => return Ok(SessionEnd::Forgotten(reason)),
                Ok(Some(ToWorker::JobOver { finished, reason })) => {
                    return Ok(SessionEnd::JobOver { finished, reason });
                }
                Ok(Some(other)) => {
                    return Ok(SessionEnd::Lost(format!("unexpected message {other:?}")));
                }
                Ok(None) => return Ok(SessionEnd::Lost("the coordinator closed the stream".into())),
                Err(e) => return Ok(SessionEnd::Lost(e)),
            },
            _ = beat.tick() => {
                let _ = up.send(ToCoordinator::Heartbeat);
            }
            Some(r) = reports.recv() => {
                let m = match r {
                    Report::Finished(attempt) => ToCoordinator::Finished { attempt },
                    Report::Failed(attempt, reason) => ToCoordinator::TaskFailed { attempt, reason },
                };
                let _ = up.send(m);
            }
        }
    }
}
