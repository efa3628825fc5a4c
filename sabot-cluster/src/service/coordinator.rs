//! The coordinator process's service: the [`JobMaster`] behind an Arrow Flight
//! endpoint.
//!
//! Each worker holds one `DoExchange` stream open: its messages ([`ToCoordinator`]) go up
//! in the frames' `app_metadata`, the coordinator's ([`ToWorker`]) come down the same
//! way. The stream's life is the worker's membership: a stream that ends or breaks is a
//! lost worker. The first message must be a registration, within
//! [`CoordinatorConfig::register_timeout`]; anything malformed ends that stream with an
//! error naming the peer and the fault, and leaves the job alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use sabot_core::CheckpointId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::master::{Command, Fingerprint, JobMaster, JobState, JobStatus, MasterConfig, WorkerId};
use crate::protocol::{ToCoordinator, ToWorker};

/// The coordinator's settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// The job master's settings.
    pub master: MasterConfig,
    /// The job's fingerprint: workers must present the same.
    pub fingerprint: Fingerprint,
    /// The newest complete checkpoint in storage when the coordinator starts.
    pub latest_checkpoint: Option<CheckpointId>,
    /// How often workers send heartbeats (default 1 s; the master's timeout should be
    /// several of these).
    pub heartbeat_interval: Duration,
    /// A connection that has not registered after this long is closed (default 10 s).
    pub register_timeout: Duration,
}

impl CoordinatorConfig {
    /// A job of `fingerprint` with the master's settings `master`.
    pub fn new(master: MasterConfig, fingerprint: Fingerprint) -> Self {
        CoordinatorConfig {
            master,
            fingerprint,
            latest_checkpoint: None,
            heartbeat_interval: Duration::from_secs(1),
            register_timeout: Duration::from_secs(10),
        }
    }
}

/// An error starting the coordinator.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the coordinator on {addr}")]
pub struct StartError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

struct Shared {
    master: JobMaster,
    outboxes: HashMap<WorkerId, mpsc::UnboundedSender<ToWorker>>,
}

struct State {
    shared: Mutex<Shared>,
    started: Instant,
    heartbeat_ms: u64,
    register_timeout: Duration,
    /// The job's state, published after every event.
    state: watch::Sender<JobState>,
}

impl State {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the master half-updated in a way
        // that matters more than stopping: keep serving.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a worker whose messages go into `tx` (first: that it is registered),
    /// in one step with the commands this causes (its deployment, when its slots
    /// complete the job's).
    fn register(
        &self,
        reg: crate::master::Registration,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> Result<WorkerId, crate::master::Refusal> {
        let now = self.now_ms();
        let mut shared = self.lock();
        let before = shared.master.state();
        // Commands for others first (a restarted process replacing its old self).
        let id = shared.master.register(reg, now, wall_ms())?;
        let _ = tx.send(ToWorker::Registered {
            id,
            heartbeat_ms: self.heartbeat_ms,
        });
        shared.outboxes.insert(id, tx);
        while let Some(c) = shared.master.next_command() {
            route(&mut shared, c);
        }
        let after = shared.master.state();
        drop(shared);
        if after != before {
            tracing::info!(state = %after, "job state");
        }
        self.state.send_replace(after);
        Ok(id)
    }

    /// Runs `f` on the master, then carries out its commands and publishes the state.
    fn with_master<T>(&self, f: impl FnOnce(&mut JobMaster, i64) -> T) -> T {
        let now = self.now_ms();
        let mut shared = self.lock();
        let before = shared.master.state();
        let out = f(&mut shared.master, now);
        while let Some(c) = shared.master.next_command() {
            route(&mut shared, c);
        }
        let after = shared.master.state();
        if after.is_terminal() && !before.is_terminal() {
            let status = shared.master.status(now);
            let reason = match &status.failure {
                Some(f) if after != JobState::Finished => format!("the job {after}: {f}"),
                _ => format!("the job {after}"),
            };
            for tx in shared.outboxes.values() {
                let _ = tx.send(ToWorker::JobOver {
                    finished: after == JobState::Finished,
                    reason: reason.clone(),
                });
            }
        }
        if after != before {
            let status = shared.master.status(now);
            tracing::info!(
                state = %after,
                attempt = ?status.attempt.map(|a| a.0),
                restarts = status.restarts,
                slots = ?status.slots,
                failure = status.failure.as_deref().unwrap_or(""),
                "job state"
            );
        }
        drop(shared);
        self.state.send_replace(after);
        out
    }
}

fn route(shared: &mut Shared, c: Command) {
    match c {
        Command::Deploy {
            worker,
            index,
            deployment,
        } => {
            tracing::info!(%worker, attempt = deployment.attempt.0, index, "deploy");
            if let Some(tx) = shared.outboxes.get(&worker) {
                let _ = tx.send(ToWorker::Deploy {
                    index: index as u32,
                    deployment: (*deployment).clone(),
                });
            }
        }
        Command::Cancel { worker, attempt } => {
            tracing::info!(%worker, attempt = attempt.0, "cancel");
            if let Some(tx) = shared.outboxes.get(&worker) {
                let _ = tx.send(ToWorker::Cancel { attempt });
            }
        }
        Command::Forget { worker, reason } => {
            tracing::warn!(%worker, reason, "worker forgotten");
            // Dropping the sender ends the worker's stream after this message.
            if let Some(tx) = shared.outboxes.remove(&worker) {
                let _ = tx.send(ToWorker::Forget { reason });
            }
        }
    }
}

/// A running coordinator (see the module docs). Dropping it stops the service.
pub struct Coordinator {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    state: Arc<State>,
    states: watch::Receiver<JobState>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("addr", &self.addr)
            .finish()
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Coordinator {
    /// Listens on `addr` (port 0: a free port, see [`local_addr`](Self::local_addr)).
    pub fn start(addr: SocketAddr, config: CoordinatorConfig) -> Result<Coordinator, StartError> {
        let fail = |source| StartError { addr, source };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sabot-coordinator")
            .enable_all()
            .build()
            .map_err(fail)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(fail)?;
        let local = listener.local_addr().map_err(fail)?;
        let master = JobMaster::new(
            config.master.clone(),
            config.fingerprint.clone(),
            config.latest_checkpoint,
            0,
        );
        let (state_tx, states) = watch::channel(master.state());
        let state = Arc::new(State {
            shared: Mutex::new(Shared {
                master,
                outboxes: HashMap::new(),
            }),
            started: Instant::now(),
            heartbeat_ms: u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(1000),
            register_timeout: config.register_timeout,
            state: state_tx,
        });
        let service = Service {
            state: state.clone(),
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let server =
            tonic::transport::Server::builder().add_service(FlightServiceServer::new(service));
        runtime.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(10)));
            let stop = async {
                let _ = stop.await;
            };
            if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %sabot_core::ErrorChain(&e), "coordinator service stopped");
            }
        });
        // Time: heartbeat timeouts, restart delays, the wait for slots.
        let ticker = state.clone();
        runtime.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            loop {
                every.tick().await;
                ticker.with_master(|m, now| m.tick(now));
            }
        });
        tracing::info!(addr = %local, "coordinator listening");
        Ok(Coordinator {
            runtime: Some(runtime),
            addr: local,
            state,
            states,
            shutdown: Some(shutdown),
        })
    }

    /// The address the coordinator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        let now = self.state.now_ms();
        self.state.lock().master.status(now)
    }

    /// Records a completed checkpoint: later attempts continue from it.
    pub fn checkpoint_completed(&self, id: CheckpointId) {
        self.state.with_master(|m, _| m.checkpoint_completed(id));
    }

    /// Cancels the job.
    pub fn cancel(&self) {
        self.state.with_master(|m, now| m.cancel_job(now));
    }

    /// Waits until the job finished, failed or was cancelled, or `timeout` passed;
    /// returns its state then.
    pub fn wait(&self, timeout: Duration) -> JobState {
        let mut states = self.states.clone();
        let Some(rt) = &self.runtime else {
            return *states.borrow();
        };
        rt.block_on(async {
            let _ = tokio::time::timeout(timeout, states.wait_for(|s| s.is_terminal())).await;
        });
        *states.borrow()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

struct Service {
    state: Arc<State>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn frame(m: &ToWorker) -> FlightData {
    FlightData {
        app_metadata: m.encode().into(),
        ..Default::default()
    }
}

/// The next message of a worker's stream: `None` at its end.
async fn next_message(frames: &mut Streaming<FlightData>) -> Result<Option<ToCoordinator>, String> {
    match frames.message().await {
        Ok(Some(f)) => ToCoordinator::decode(&f.app_metadata)
            .map(Some)
            .map_err(|e| sabot_core::ErrorChain(&e).to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("stream error: {}", e.message())),
    }
}

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
        let mut frames = request.into_inner();
        let first = tokio::time::timeout(self.state.register_timeout, next_message(&mut frames))
            .await
            .map_err(|_| {
                tracing::warn!(%peer, "no registration in time");
                Status::deadline_exceeded("no registration in time")
            })?;
        let reg = match first {
            Ok(Some(ToCoordinator::Register(reg))) => reg,
            Ok(Some(other)) => {
                tracing::warn!(%peer, message = ?other, "first message is not a registration");
                return Err(Status::invalid_argument(
                    "the first message must be a registration",
                ));
            }
            Ok(None) => return Err(Status::invalid_argument("empty stream")),
            Err(e) => {
                tracing::warn!(%peer, error = e, "bad registration");
                return Err(Status::invalid_argument(e));
            }
        };
        let name = reg.name.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let registered = self.state.register(reg, tx);
        let id = match registered {
            Ok(id) => id,
            Err(refusal) => {
                tracing::warn!(%peer, worker = name, reason = %refusal, "registration refused");
                let refused = frame(&ToWorker::Refused {
                    reason: refusal.to_string(),
                });
                return Ok(Response::new(Box::pin(futures::stream::once(async move {
                    Ok(refused)
                }))));
            }
        };
        tracing::info!(%peer, worker = name, %id, "worker registered");
        let state = self.state.clone();
        tokio::spawn(async move {
            let reason = loop {
                match next_message(&mut frames).await {
                    Ok(Some(m)) => {
                        let now_known = state.with_master(|master, now| match m {
                            ToCoordinator::Heartbeat => master.heartbeat(id, now).is_ok(),
                            ToCoordinator::TaskFailed { attempt, reason } => {
                                master.task_failed(id, attempt, &reason, now);
                                true
                            }
                            ToCoordinator::Finished { attempt } => {
                                master.worker_finished(id, attempt);
                                true
                            }
                            ToCoordinator::Cancelled { attempt } => {
                                master.cancelled(id, attempt, now);
                                true
                            }
                            ToCoordinator::Register(_) => false,
                        });
                        if !now_known {
                            break "sent a message after it was forgotten, or registered twice on one stream".to_string();
                        }
                    }
                    Ok(None) => break "its control stream ended".to_string(),
                    Err(e) => break e,
                }
            };
            if state.lock().master.state().is_terminal() {
                tracing::info!(worker = name, %id, reason, "worker gone after the job's end");
            } else {
                tracing::warn!(worker = name, %id, reason, "worker connection lost");
            }
            state.with_master(|m, now| m.worker_lost(id, &reason, now));
            state.lock().outboxes.remove(&id);
        });
        let out = UnboundedReceiverStream::new(rx).map(|m| Ok(frame(&m)));
        Ok(Response::new(Box::pin(out)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented(
            "the coordinator speaks DoExchange only",
        ))
    }
}
