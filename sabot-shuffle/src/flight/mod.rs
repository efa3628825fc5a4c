//! The network exchange: batches and control messages between worker processes over
//! Arrow Flight (gRPC over HTTP/2, with tonic).
//!
//! Every worker runs one [`ShuffleServer`]. A downstream subtask that has upstream
//! subtasks on other workers [registers](ShuffleServer::register) one channel per remote
//! upstream subtask, handing over the [`FanInSender`](crate::queue::FanInSender) of its
//! input queue; an upstream subtask [opens](ShuffleClient::open) a [`RemoteSender`] per
//! remote downstream subtask and sends [`Message`](sabot_core::Message)s into it. Each
//! channel is one Flight `DoPut` stream; [`wire`] documents the frames.
//!
//! - Flow control is by credits: the receiver grants [`FlightConfig::initial_credits`]
//!   frames and one more per frame it has put into the subtask's bounded queue, so a
//!   stalled receiver stops the sender after that many frames, and the sender's
//!   [`RemoteSender::send`] blocks once its own small queue is full.
//! - Watermarks, barriers, idleness and the end of stream travel in the same stream as
//!   the batches, in order.
//! - A peer that goes away is an error on both sides: the sender's next `send` (or
//!   `finish`) returns [`ShuffleError::PeerLost`](crate::ShuffleError::PeerLost), and the
//!   receiving subtask gets the error in its queue instead of waiting forever.
//! - Every frame is decoded as untrusted input ([`wire::FrameDecoder`]); a malformed one
//!   fails that channel with [`ShuffleError::Malformed`](crate::ShuffleError::Malformed).
//!
//! ```
//! use std::sync::Arc;
//! use sabot_core::Message;
//! use sabot_core::arrow::array::Int64Array;
//! use sabot_core::arrow::datatypes::{DataType, Field, Schema};
//! use sabot_core::arrow::record_batch::RecordBatch;
//! use sabot_shuffle::flight::{ChannelId, FlightConfig, ShuffleServer};
//! use sabot_shuffle::queue;
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
//! let server = ShuffleServer::start("127.0.0.1:0".parse().unwrap(), FlightConfig::default()).unwrap();
//! let (mut senders, rx) = queue::fan_in(1, 4);
//! let channel = ChannelId::new(1, 0, 0);
//! server.register(channel, schema.clone(), senders.remove(0));
//!
//! let client = server.client(server.local_addr());
//! let mut tx = client.open(channel, schema.clone());
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
//! tx.send(Message::Data(batch)).unwrap();
//! tx.send(Message::EndOfStream).unwrap();
//! tx.finish().unwrap();
//!
//! let (from, first) = rx.pop().unwrap();
//! assert_eq!((from, first.unwrap().num_rows()), (0, 3));
//! assert!(matches!(rx.pop().unwrap().1, Ok(Message::EndOfStream)));
//! ```

mod client;
mod server;
pub mod wire;

use std::time::Duration;

pub use client::{RemoteSender, ShuffleClient};
pub use server::{ControlHandler, ShuffleServer};
pub use wire::ChannelId;

pub use crate::Delivery;

/// Settings of the network exchange.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FlightConfig {
    /// Frames a sender may have in flight before the receiver grants more (default 8).
    pub initial_credits: u32,
    /// Messages a [`RemoteSender`] buffers before `send` blocks (default 4).
    pub send_queue: usize,
    /// How long to keep trying to reach a peer, and how long a registered channel waits
    /// for its upstream to connect (default 30 s).
    pub connect_timeout: Duration,
    /// The largest frame accepted or sent (default 256 MiB).
    pub max_frame_bytes: usize,
    /// Threads of the network runtime (default 2).
    pub threads: usize,
    /// The session (a cluster job's attempt) every channel belongs to: a server refuses
    /// a channel of another session, so a subtask left over from an earlier attempt
    /// cannot feed this one (default 0).
    pub session: u64,
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig {
            initial_credits: 8,
            send_queue: 4,
            connect_timeout: Duration::from_secs(30),
            max_frame_bytes: 256 << 20,
            threads: 2,
            session: 0,
        }
    }
}

impl FlightConfig {
    /// Sets [`FlightConfig::initial_credits`] (at least 1).
    pub fn with_initial_credits(mut self, credits: u32) -> Self {
        self.initial_credits = credits.max(1);
        self
    }

    /// Sets [`FlightConfig::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`FlightConfig::send_queue`] (at least 1).
    pub fn with_send_queue(mut self, messages: usize) -> Self {
        self.send_queue = messages.max(1);
        self
    }

    /// Sets [`FlightConfig::session`].
    pub fn with_session(mut self, session: u64) -> Self {
        self.session = session;
        self
    }

    /// Sets [`FlightConfig::threads`] (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }
}

/// HTTP/2 flow-control windows: large enough that credits, not HTTP/2, pace a channel.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
/// HTTP/2 DATA frames of up to 1 MiB: a batch crosses in a few frames, not hundreds.
const MAX_HTTP2_FRAME: u32 = 1 << 20;

/// A tokio runtime shut down in the background when dropped, so that dropping it from
/// any thread never blocks or panics.
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new(threads: usize) -> std::io::Result<Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("sabot-flight")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
