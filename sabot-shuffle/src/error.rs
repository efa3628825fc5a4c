use std::time::Duration;

use sabot_core::CoreError;
use sabot_core::arrow::error::ArrowError;

use crate::channel::ChannelId;

/// Result alias for `sabot-shuffle`.
pub type Result<T, E = ShuffleError> = std::result::Result<T, E>;

/// Errors raised by `sabot-shuffle`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShuffleError {
    /// Hashing keys or validating columns failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// An Arrow kernel failed while splitting a batch.
    #[error("arrow error while partitioning")]
    Arrow(#[from] ArrowError),
    /// A network frame that is not valid. Frames come from another process: untrusted.
    #[error("malformed shuffle message{}: {reason}", on_channel(.channel))]
    Malformed {
        /// The channel it arrived on, once known.
        channel: Option<ChannelId>,
        /// What is wrong with it.
        reason: String,
    },
    /// The other side of a network channel went away before the end of its stream (its
    /// process died, or the connection broke).
    #[error("shuffle peer {peer} went away ({channel}): {reason}")]
    PeerLost {
        /// The peer's address.
        peer: String,
        /// The channel that broke.
        channel: ChannelId,
        /// What the transport said.
        reason: String,
    },
    /// A peer could not be reached in time.
    #[error("cannot reach shuffle peer {peer} within {timeout:?}: {reason}")]
    Connect {
        /// The peer's address.
        peer: String,
        /// How long we tried.
        timeout: Duration,
        /// The last connection error.
        reason: String,
    },
    /// A subtask waited for an upstream subtask on another worker that never connected.
    #[error("no upstream subtask connected for {channel} within {timeout:?}")]
    NoUpstream {
        /// The channel nobody opened.
        channel: ChannelId,
        /// How long the receiver waited.
        timeout: Duration,
    },
    /// The shuffle server could not start.
    #[error("cannot start the shuffle server on {addr}: {reason}")]
    Server {
        /// The address it was to listen on.
        addr: String,
        /// Why it could not.
        reason: String,
    },
    /// The sending side of a channel was used after its end of stream.
    #[error("{channel} already sent its end of stream")]
    Finished {
        /// The channel.
        channel: ChannelId,
    },
}

fn on_channel(channel: &Option<ChannelId>) -> String {
    channel.map(|c| format!(" on {c}")).unwrap_or_default()
}
