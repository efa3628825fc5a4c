//! The sending side: one Flight `DoPut` stream per channel, paced by the receiver's
//! credits.

use sabot_core::ErrorChain;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use sabot_core::{Message, SchemaRef};
use tokio::sync::{OnceCell, Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::wire::{FrameEncoder, Reply};
use super::{CONNECTION_WINDOW, ChannelId, FlightConfig, MAX_HTTP2_FRAME, Runtime, STREAM_WINDOW};
use crate::queue::{self, SpscSender};
use crate::{Result, ShuffleError};

/// Sends channels to one peer worker. Cheap to clone; all channels to the peer share one
/// HTTP/2 connection, made on first use (retried until
/// [`FlightConfig::connect_timeout`], so peers may start in any order).
#[derive(Clone, Debug)]
pub struct ShuffleClient {
    runtime: Arc<Runtime>,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    peer: SocketAddr,
    config: FlightConfig,
    connection: OnceCell<Channel>,
}

impl ShuffleClient {
    /// A client for `peer` with a network runtime of its own.
    pub fn connect(peer: SocketAddr, config: FlightConfig) -> Result<ShuffleClient> {
        let runtime = Runtime::new(config.threads).map_err(|e| ShuffleError::Connect {
            peer: peer.to_string(),
            timeout: Duration::ZERO,
            reason: format!("cannot start the network runtime: {e}"),
        })?;
        Ok(ShuffleClient::with_runtime(peer, Arc::new(runtime), config))
    }

    pub(super) fn with_runtime(
        peer: SocketAddr,
        runtime: Arc<Runtime>,
        config: FlightConfig,
    ) -> ShuffleClient {
        ShuffleClient {
            runtime,
            inner: Arc::new(Inner {
                peer,
                config,
                connection: OnceCell::new(),
            }),
        }
    }

    /// The peer this client sends to.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Opens `channel`, whose batches have `schema`. Sending starts at once; errors
    /// (peer unreachable, refused, gone) come back from the sender's next call.
    pub fn open(&self, channel: ChannelId, schema: SchemaRef) -> RemoteSender {
        let (tx, rx) = queue::spsc::<Message>(self.inner.config.send_queue);
        let (done, outcome) = oneshot::channel();
        let inner = self.inner.clone();
        self.runtime.handle().spawn(async move {
            let result = inner.run(channel, schema, rx).await;
            if let Err(e) = &result {
                tracing::warn!(%channel, peer = %inner.peer, error = %ErrorChain(&e), "shuffle channel failed");
            }
            let _ = done.send(result);
        });
        RemoteSender {
            channel,
            tx: Some(tx),
            outcome: Some(outcome),
            result: None,
        }
    }
}

impl ShuffleClient {
    /// Sends a control message to the peer (its [`ShuffleServer::on_control`] handler)
    /// and waits for it to be taken; retries while the peer is not up or has no handler
    /// yet, until [`FlightConfig::connect_timeout`]. Blocks: call it outside the network
    /// runtime.
    ///
    /// [`ShuffleServer::on_control`]: super::ShuffleServer::on_control
    pub fn control(&self, message: &[u8]) -> Result<()> {
        let inner = self.inner.clone();
        let mut body = inner.config.session.to_le_bytes().to_vec();
        body.extend_from_slice(message);
        let body = bytes::Bytes::from(body);
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.handle().spawn(async move {
            let _ = tx.send(inner.control(body).await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(ShuffleError::Connect {
                peer: self.inner.peer.to_string(),
                timeout: self.inner.config.connect_timeout,
                reason: "the network runtime stopped".into(),
            })
        })
    }
}

impl Inner {
    async fn control(&self, body: bytes::Bytes) -> Result<()> {
        let timeout = self.config.connect_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let fail = |reason: String| ShuffleError::Connect {
            peer: self.peer.to_string(),
            timeout,
            reason,
        };
        let connection = self.connection().await?;
        let mut flight = FlightServiceClient::new(connection);
        loop {
            let action = arrow_flight::Action {
                r#type: super::server::CONTROL_ACTION.into(),
                body: body.clone(),
            };
            match flight.do_action(action).await {
                Ok(_) => return Ok(()),
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(s) => return Err(fail(format!("control message refused: {}", s.message()))),
            }
        }
    }

    fn lost(&self, channel: ChannelId, reason: String) -> ShuffleError {
        ShuffleError::PeerLost {
            peer: self.peer.to_string(),
            channel,
            reason,
        }
    }

    /// The shared connection, retried until the connect timeout.
    async fn connection(&self) -> Result<Channel> {
        self.connection
            .get_or_try_init(|| async {
                let timeout = self.config.connect_timeout;
                let deadline = tokio::time::Instant::now() + timeout;
                let endpoint = Endpoint::from_shared(format!("http://{}", self.peer))
                    .map_err(|e| e.to_string())
                    .map(|e| {
                        e.initial_stream_window_size(STREAM_WINDOW)
                            .initial_connection_window_size(CONNECTION_WINDOW)
                            .max_frame_size(MAX_HTTP2_FRAME)
                            .tcp_nodelay(true)
                            .connect_timeout(Duration::from_secs(5))
                    });
                let endpoint = endpoint.map_err(|reason| ShuffleError::Connect {
                    peer: self.peer.to_string(),
                    timeout,
                    reason,
                })?;
                loop {
                    match endpoint.connect().await {
                        Ok(c) => return Ok(c),
                        Err(e) if tokio::time::Instant::now() >= deadline => {
                            return Err(ShuffleError::Connect {
                                peer: self.peer.to_string(),
                                timeout,
                                reason: error_chain(&e),
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
            .await
            .cloned()
    }

    /// Runs one channel until its end of stream is acknowledged.
    async fn run(
        &self,
        channel: ChannelId,
        schema: SchemaRef,
        mut messages: queue::SpscReceiver<Message>,
    ) -> Result<()> {
        let connection = self.connection().await?;
        let mut flight = FlightServiceClient::new(connection)
            .max_decoding_message_size(self.config.max_frame_bytes)
            .max_encoding_message_size(self.config.max_frame_bytes);
        let mut encoder = FrameEncoder::for_session(self.config.session);
        let (frames_tx, frames_rx) = mpsc::channel::<FlightData>(2);
        // The first frame (channel id and schema) needs no credit.
        let _ = frames_tx.send(encoder.open(channel, &schema)).await;
        let mut replies = flight
            .do_put(ReceiverStream::new(frames_rx))
            .await
            .map_err(|s| self.lost(channel, status_text(&s)))?
            .into_inner();

        let credits = Arc::new(Semaphore::new(0));
        let granted = credits.clone();
        let mut reader = tokio::spawn(async move {
            let outcome = loop {
                match replies.message().await {
                    Ok(Some(r)) => match Reply::from_bytes(&r.app_metadata) {
                        Ok(Reply::Credit(n)) => granted.add_permits(n as usize),
                        Ok(Reply::Done) => break Ok(()),
                        Err(e) => break Err(e.to_string()),
                    },
                    Ok(None) => break Err("the receiver ended the channel early".to_string()),
                    Err(s) => break Err(status_text(&s)),
                }
            };
            // Wakes a sender waiting for credit: the channel is over either way.
            granted.close();
            outcome
        });
        let reader_failed = |r: std::result::Result<std::result::Result<(), String>, _>| match r {
            Ok(Ok(())) => "the receiver finished before the end of stream".to_string(),
            Ok(Err(reason)) => reason,
            Err(e) => format!("the reply reader failed: {e}"),
        };

        let mut frames = Vec::new();
        loop {
            let next = tokio::select! {
                m = messages.pop_async() => m,
                r = &mut reader => return Err(self.lost(channel, reader_failed(r))),
            };
            // The sending subtask went away without an end of stream: end the stream
            // without one, and the receiver reports the upstream as lost.
            let Some(msg) = next else { return Ok(()) };
            let end = matches!(msg, Message::EndOfStream);
            encoder.encode(&msg, &mut frames)?;
            drop(msg);
            for frame in frames.drain(..) {
                let Ok(permit) = credits.acquire().await else {
                    return Err(self.lost(channel, reader_failed((&mut reader).await)));
                };
                permit.forget();
                if frames_tx.send(frame).await.is_err() {
                    return Err(self.lost(channel, reader_failed((&mut reader).await)));
                }
            }
            if end {
                break;
            }
        }
        drop(frames_tx);
        match reader.await {
            Ok(Ok(())) => Ok(()),
            other => Err(self.lost(channel, reader_failed(other))),
        }
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}

/// The sending end of one channel to a peer worker.
///
/// [`send`](RemoteSender::send) blocks while the channel is out of credit and its small
/// queue is full (backpressure from the remote subtask). Send
/// [`Message::EndOfStream`] and call [`finish`](RemoteSender::finish) to wait until the
/// peer has everything; dropping the sender without that ends the stream early, and the
/// receiving subtask reports its upstream as lost.
#[derive(Debug)]
pub struct RemoteSender {
    channel: ChannelId,
    tx: Option<SpscSender<Message>>,
    outcome: Option<oneshot::Receiver<Result<()>>>,
    result: Option<std::result::Result<(), String>>,
}

impl RemoteSender {
    /// The channel this sender feeds.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Sends `msg`, blocking while the channel is full. Not for async code: use
    /// [`send_async`](RemoteSender::send_async) there.
    pub fn send(&mut self, msg: Message) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(ShuffleError::Finished {
                channel: self.channel,
            });
        };
        match tx.push(msg) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.wait_blocking()),
        }
    }

    /// Sends `msg` from async code, waiting while the channel is full.
    pub async fn send_async(&mut self, msg: Message) -> Result<()> {
        let Some(tx) = &mut self.tx else {
            return Err(ShuffleError::Finished {
                channel: self.channel,
            });
        };
        match tx.push_async(msg).await {
            Ok(()) => Ok(()),
            Err(_) => {
                self.tx = None;
                match self.outcome.take() {
                    Some(o) => Err(outcome_error(self.channel, o.await)),
                    None => Err(ShuffleError::Finished {
                        channel: self.channel,
                    }),
                }
            }
        }
    }

    /// Waits until the peer acknowledged the end of stream (or for the channel's error).
    pub fn finish(mut self) -> Result<()> {
        self.tx = None;
        match self.outcome.take() {
            Some(o) => o
                .blocking_recv()
                .unwrap_or_else(|_| Err(gone(self.channel))),
            None => match self.result.take() {
                Some(Ok(())) | None => Ok(()),
                Some(Err(reason)) => Err(ShuffleError::PeerLost {
                    peer: String::new(),
                    channel: self.channel,
                    reason,
                }),
            },
        }
    }

    /// Like [`finish`](RemoteSender::finish), from async code.
    pub async fn finish_async(mut self) -> Result<()> {
        self.tx = None;
        match self.outcome.take() {
            Some(o) => o.await.unwrap_or_else(|_| Err(gone(self.channel))),
            None => Ok(()),
        }
    }

    /// The channel task ended (its queue closed): waits for its result and returns the
    /// error to report.
    fn wait_blocking(&mut self) -> ShuffleError {
        self.tx = None;
        match self.outcome.take() {
            Some(o) => outcome_error(self.channel, o.blocking_recv()),
            None => ShuffleError::Finished {
                channel: self.channel,
            },
        }
    }
}

fn gone(channel: ChannelId) -> ShuffleError {
    ShuffleError::PeerLost {
        peer: String::new(),
        channel,
        reason: "the network runtime stopped".into(),
    }
}

fn outcome_error(
    channel: ChannelId,
    r: std::result::Result<Result<()>, oneshot::error::RecvError>,
) -> ShuffleError {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => ShuffleError::Finished { channel },
        Err(_) => gone(channel),
    }
}
