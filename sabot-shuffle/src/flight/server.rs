//! The receiving side: a Flight server that hands each channel's messages to the queue
//! its subtask registered.

use sabot_core::ErrorChain;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::Stream;
use sabot_core::{Message, SchemaRef};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::wire::{FrameDecoder, Reply, same_fields};
use super::{
    CONNECTION_WINDOW, ChannelId, Delivery, FlightConfig, MAX_HTTP2_FRAME, Runtime, STREAM_WINDOW,
    ShuffleClient,
};
use crate::queue::FanInSender;
use crate::{Result, ShuffleError};

/// A channel a subtask waits on: the schema it expects and its input queue.
struct Registration {
    schema: SchemaRef,
    tx: FanInSender<Delivery>,
    /// The index deliveries are tagged with.
    tag: usize,
}

#[derive(Default)]
struct Registry {
    channels: Mutex<HashMap<ChannelId, Registration>>,
    changed: Notify,
}

impl Registry {
    fn take_now(&self, channel: ChannelId) -> Option<Registration> {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&channel)
    }

    /// Takes the registration of `channel`, waiting up to `timeout` for it to appear
    /// (a fast peer may connect before this worker has planned its subtasks).
    async fn take(&self, channel: ChannelId, timeout: Duration) -> Option<Registration> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = self.take_now(channel) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

/// One worker's receiving end of the network exchange: a Flight server on a TCP port.
///
/// Dropping it stops the server; channels in progress end with an error on both sides.
pub struct ShuffleServer {
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    registry: Arc<Registry>,
    /// Channels whose reply stream has not been sent to the end yet.
    open: Arc<AtomicUsize>,
    config: FlightConfig,
    shutdown: Option<oneshot::Sender<()>>,
    control: Arc<Mutex<Option<ControlHandler>>>,
}

impl std::fmt::Debug for ShuffleServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ShuffleServer {
    /// Listens on `addr` (port 0 picks a free port: see [`ShuffleServer::local_addr`])
    /// and serves on a runtime of its own.
    pub fn start(addr: SocketAddr, config: FlightConfig) -> Result<ShuffleServer> {
        let fail = |reason: String| ShuffleError::Server {
            addr: addr.to_string(),
            reason,
        };
        let runtime = Arc::new(Runtime::new(config.threads).map_err(|e| fail(e.to_string()))?);
        let listener = runtime
            .handle()
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| fail(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        let registry = Arc::new(Registry::default());
        let open = Arc::new(AtomicUsize::new(0));
        let control = Arc::new(Mutex::new(None));
        let service = Service {
            registry: registry.clone(),
            config: config.clone(),
            open: open.clone(),
            control: control.clone(),
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_HTTP2_FRAME)
            .add_service(
                FlightServiceServer::new(service)
                    .max_decoding_message_size(config.max_frame_bytes)
                    .max_encoding_message_size(config.max_frame_bytes),
            );
        runtime.handle().spawn(async move {
            // Accepted connections need these set here: the builder's settings only
            // apply to listeners it binds itself.
            let incoming = TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(10)));
            let stop = async {
                let _ = stop.await;
            };
            if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %ErrorChain(&e), "shuffle server stopped");
            }
        });
        tracing::info!(addr = %local, "shuffle server listening");
        Ok(ShuffleServer {
            runtime,
            addr: local,
            registry,
            open,
            config,
            control,
            shutdown: Some(shutdown),
        })
    }

    /// Hands the control messages peers send ([`ShuffleClient::control`]) to `handler`
    /// (replacing any before). Until a handler is set, peers are told to retry.
    pub fn on_control(&self, handler: ControlHandler) {
        *self.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delivers the messages of `channel` into `tx`, tagged with the upstream subtask's
    /// index. Batches must have `schema`'s fields. If no upstream opens the channel
    /// within [`FlightConfig::connect_timeout`], `tx` gets a
    /// [`ShuffleError::NoUpstream`].
    pub fn register(&self, channel: ChannelId, schema: SchemaRef, tx: FanInSender<Delivery>) {
        self.register_tagged(channel, schema, tx, channel.upstream as usize);
    }

    /// [`register`](Self::register), with deliveries tagged `tag` instead of the upstream
    /// subtask's index (a subtask reading several exchanges through one fan-in tells
    /// them apart by it).
    pub fn register_tagged(
        &self,
        channel: ChannelId,
        schema: SchemaRef,
        tx: FanInSender<Delivery>,
        tag: usize,
    ) {
        self.registry
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel, Registration { schema, tx, tag });
        self.registry.changed.notify_waiters();
        let registry = self.registry.clone();
        let timeout = self.config.connect_timeout;
        self.runtime.handle().spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(mut r) = registry.take_now(channel) {
                let error = ShuffleError::NoUpstream { channel, timeout };
                let _ = r.tx.push_async((r.tag, Err(error))).await;
            }
        });
    }

    /// Waits (up to `timeout`) until every channel's reply stream went out to its end,
    /// so that dropping the server right after its subtasks ended does not cut the last
    /// replies (a sender waits for them to know its peer has everything).
    pub fn drain(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.open.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // The transport writes what the reply streams handed over right after.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// A client for sending to `peer`, sharing this server's runtime.
    pub fn client(&self, peer: SocketAddr) -> ShuffleClient {
        ShuffleClient::with_runtime(peer, self.runtime.clone(), self.config.clone())
    }
}

impl Drop for ShuffleServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

struct Service {
    registry: Arc<Registry>,
    config: FlightConfig,
    open: Arc<AtomicUsize>,
    control: Arc<Mutex<Option<ControlHandler>>>,
}

/// Takes the control messages peers send this worker ([`ShuffleServer::on_control`]):
/// their bytes, as sent; an error is the sender's.
pub type ControlHandler = Arc<dyn Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync>;

/// The Flight action type of a control message.
pub(super) const CONTROL_ACTION: &str = "sabot.control";

/// A channel's reply stream, counted as open until the transport is done with it.
struct Replies {
    inner: UnboundedReceiverStream<std::result::Result<PutResult, Status>>,
    open: Arc<AtomicUsize>,
}

impl Stream for Replies {
    type Item = std::result::Result<PutResult, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

fn status(e: &ShuffleError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Moves one channel's frames into its subtask's queue, granting a credit per frame.
async fn receive(
    mut frames: Streaming<FlightData>,
    mut decoder: FrameDecoder,
    mut tx: FanInSender<Delivery>,
    upstream: usize,
    replies: mpsc::UnboundedSender<std::result::Result<PutResult, Status>>,
    peer: String,
    initial_credits: u32,
) {
    let channel = decoder.channel();
    let reply = |r: Reply| {
        let _ = replies.send(Ok(PutResult {
            app_metadata: r.to_bytes(),
        }));
    };
    // Credits are granted in batches of half the initial grant (at least one), not one
    // reply per frame: the sender, holding the rest, keeps sending meanwhile. When the
    // sender has run out, every frame it sent has arrived, so the batch is full.
    let batch = (initial_credits / 2).max(1);
    let mut owed = 0u32;
    let grant = |owed: &mut u32| {
        *owed += 1;
        if *owed >= batch {
            reply(Reply::Credit(*owed));
            *owed = 0;
        }
    };
    loop {
        let lost = |reason: String| ShuffleError::PeerLost {
            peer: peer.clone(),
            channel,
            reason,
        };
        let error = match frames.message().await {
            Ok(Some(frame)) => match decoder.decode(frame) {
                Ok(Some(msg)) => {
                    let end = matches!(msg, Message::EndOfStream);
                    if tx.push_async((upstream, Ok(msg))).await.is_err() {
                        let _ = replies.send(Err(Status::cancelled(format!(
                            "the receiving subtask of {channel} stopped"
                        ))));
                        return;
                    }
                    if end {
                        reply(Reply::Done);
                        return;
                    }
                    grant(&mut owed);
                    continue;
                }
                Ok(None) => {
                    grant(&mut owed);
                    continue;
                }
                Err(e) => {
                    let _ = replies.send(Err(status(&e)));
                    e
                }
            },
            Ok(None) => lost("the stream ended before its end-of-stream message".into()),
            Err(s) => lost(format!("{}: {}", s.code(), s.message())),
        };
        tracing::warn!(%channel, error = %ErrorChain(&error), "shuffle channel failed");
        let _ = tx.push_async((upstream, Err(error))).await;
        return;
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

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut frames = request.into_inner();
        let first = frames
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty shuffle stream"))?;
        let decoder = FrameDecoder::open(&first).map_err(|e| status(&e))?;
        let channel = decoder.channel();
        if decoder.session() != self.config.session {
            tracing::warn!(%peer, %channel, session = decoder.session(), this = self.config.session, "channel of another session refused");
            return Err(Status::failed_precondition(format!(
                "{channel} belongs to session {}, this worker runs session {}: a subtask of another attempt",
                decoder.session(),
                self.config.session
            )));
        }
        let Some(Registration {
            schema,
            mut tx,
            tag,
        }) = self
            .registry
            .take(channel, self.config.connect_timeout)
            .await
        else {
            return Err(Status::not_found(format!(
                "no subtask on this worker receives {channel}"
            )));
        };
        if !same_fields(&schema, decoder.schema()) {
            let e = ShuffleError::Malformed {
                channel: Some(channel),
                reason: format!(
                    "the sender's schema {:?} differs from the expected {:?}",
                    decoder.schema(),
                    schema
                ),
            };
            let s = status(&e);
            let _ = tx.push_async((tag, Err(e))).await;
            return Err(s);
        }
        let (replies, out) = mpsc::unbounded_channel();
        let _ = replies.send(Ok(PutResult {
            app_metadata: Reply::Credit(self.config.initial_credits).to_bytes(),
        }));
        tokio::spawn(receive(
            frames,
            decoder,
            tx,
            tag,
            replies,
            peer,
            self.config.initial_credits,
        ));
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Response::new(Box::pin(Replies {
            inner: UnboundedReceiverStream::new(out),
            open: self.open.clone(),
        })))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn do_get(
        &self,
        _: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != CONTROL_ACTION {
            return Err(Status::unimplemented(
                "the shuffle server accepts DoPut and control actions only",
            ));
        }
        let Some((session, body)) = action.body.split_first_chunk::<8>() else {
            return Err(Status::invalid_argument(
                "a control message without its session",
            ));
        };
        let session = u64::from_le_bytes(*session);
        if session != self.config.session {
            return Err(Status::failed_precondition(format!(
                "a control message of session {session}, this worker runs session {}",
                self.config.session
            )));
        }
        let handler = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(handler) = handler else {
            return Err(Status::unavailable("no control handler yet"));
        };
        handler(body).map_err(Status::invalid_argument)?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented(
            "the shuffle server only accepts DoPut",
        ))
    }
}
