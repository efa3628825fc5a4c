//! The name of one channel of an exchange.

use std::fmt;

use crate::{Result, ShuffleError};

/// The first four bytes of a channel descriptor: format name and version.
const MAGIC: &[u8; 4] = b"SBT1";

/// One channel of an exchange: from one upstream subtask to one downstream subtask.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    /// The exchange (its node id in the job graph).
    pub exchange: u32,
    /// The sending subtask.
    pub upstream: u32,
    /// The receiving subtask.
    pub downstream: u32,
}

impl ChannelId {
    /// A channel id.
    pub fn new(exchange: usize, upstream: usize, downstream: usize) -> ChannelId {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        ChannelId {
            exchange: n(exchange),
            upstream: n(upstream),
            downstream: n(downstream),
        }
    }

    /// The 16-byte descriptor command that names this channel on the wire.
    pub fn to_cmd(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(MAGIC);
        for v in [self.exchange, self.upstream, self.downstream] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parses a descriptor command written by [`ChannelId::to_cmd`].
    pub fn from_cmd(cmd: &[u8]) -> Result<ChannelId> {
        let malformed = |reason: String| ShuffleError::Malformed {
            channel: None,
            reason,
        };
        if cmd.len() != 16 || &cmd[..4] != MAGIC {
            return Err(malformed(format!(
                "the channel descriptor must be 16 bytes starting with SBT1, got {} bytes",
                cmd.len()
            )));
        }
        let word = |i: usize| u32::from_le_bytes([cmd[i], cmd[i + 1], cmd[i + 2], cmd[i + 3]]);
        Ok(ChannelId {
            exchange: word(4),
            upstream: word(8),
            downstream: word(12),
        })
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exchange {} subtask {} -> {}",
            self.exchange, self.upstream, self.downstream
        )
    }
}
