//! The control-plane messages between the coordinator and its workers, and their bytes.
//!
//! Each message is one checksummed frame ([`sabot_core::codec::frame`], magic `SBCP`,
//! version 1) holding a tag byte and the message's fields. Every byte that arrives is
//! untrusted: [`ToCoordinator::decode`] and [`ToWorker::decode`] return an error that
//! says what is wrong for any input (fuzz target `cluster_messages`), and never
//! allocate more than the input's length.

use std::net::{IpAddr, SocketAddr};

use sabot_core::CheckpointId;
use sabot_core::codec::{Codec, CodecError, frame, unframe};

use crate::master::{Attempt, Deployment, Fingerprint, Registration, WorkerId};

const MAGIC: &[u8; 4] = b"SBCP";
const VERSION: u8 = 1;

/// What a worker tells the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToCoordinator {
    /// The first message of a connection.
    Register(Registration),
    /// The worker is alive.
    Heartbeat,
    /// A subtask of `attempt` failed.
    TaskFailed {
        /// The attempt.
        attempt: Attempt,
        /// The failure, as its error chain.
        reason: String,
    },
    /// Every subtask of `attempt` on the worker ended.
    Finished {
        /// The attempt.
        attempt: Attempt,
    },
    /// The subtasks of `attempt` are cancelled (or were not running).
    Cancelled {
        /// The attempt.
        attempt: Attempt,
    },
}

/// What the coordinator tells a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToWorker {
    /// The registration was accepted.
    Registered {
        /// The worker's id.
        id: WorkerId,
        /// How often to send heartbeats, in ms.
        heartbeat_ms: u64,
    },
    /// The registration was refused (the connection closes after it).
    Refused {
        /// Why.
        reason: String,
    },
    /// Run this worker's part (index `index`) of `deployment`.
    Deploy {
        /// The worker's index among the attempt's workers.
        index: u32,
        /// The attempt's placement.
        deployment: Deployment,
    },
    /// Cancel the subtasks of `attempt`.
    Cancel {
        /// The attempt.
        attempt: Attempt,
    },
    /// The worker is no longer part of the cluster (the connection closes after it).
    Forget {
        /// Why.
        reason: String,
    },
    /// The job ended (finished, failed or cancelled): the worker may stop.
    JobOver {
        /// Whether it finished (rather than failed or was cancelled).
        finished: bool,
        /// Its final state, and why it failed.
        reason: String,
    },
}

/// A control message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed control message: {0}")]
pub struct ProtocolError(#[source] pub CodecError);

impl From<CodecError> for ProtocolError {
    fn from(e: CodecError) -> Self {
        ProtocolError(e)
    }
}

type Result<T> = std::result::Result<T, ProtocolError>;

fn bad(reason: impl Into<String>) -> ProtocolError {
    ProtocolError(CodecError::new(reason))
}

/// A count of items of at least `min_bytes` each, checked against what is left (so
/// garbage cannot make us allocate more than the input).
fn count(input: &mut &[u8], min_bytes: usize, what: &str) -> Result<usize> {
    let n = u32::decode(input)? as usize;
    if n.saturating_mul(min_bytes.max(1)) > input.len() {
        return Err(bad(format!(
            "{n} {what} announced, but only {} bytes follow",
            input.len()
        )));
    }
    Ok(n)
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    addr.port().encode(out);
}

fn get_addr(input: &mut &[u8]) -> Result<SocketAddr> {
    let ip = match u8::decode(input)? {
        4 => {
            let b = sabot_core::codec::take(input, 4, "IPv4 address")?;
            IpAddr::from([b[0], b[1], b[2], b[3]])
        }
        6 => {
            let b = sabot_core::codec::take(input, 16, "IPv6 address")?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::from(a)
        }
        t => return Err(bad(format!("invalid address family {t}"))),
    };
    Ok(SocketAddr::new(ip, u16::decode(input)?))
}

fn put_fingerprint(out: &mut Vec<u8>, f: &Fingerprint) {
    let entries: Vec<(&str, &str)> = f.entries().collect();
    (entries.len() as u32).encode(out);
    for (k, v) in entries {
        k.to_string().encode(out);
        v.to_string().encode(out);
    }
}

fn get_fingerprint(input: &mut &[u8]) -> Result<Fingerprint> {
    let n = count(input, 8, "fingerprint entries")?;
    let mut f = Fingerprint::new();
    for _ in 0..n {
        let (k, v) = (String::decode(input)?, String::decode(input)?);
        f = f.with(k, v);
    }
    Ok(f)
}

fn put_deployment(out: &mut Vec<u8>, d: &Deployment) {
    d.attempt.0.encode(out);
    (d.workers.len() as u32).encode(out);
    for (w, addr) in &d.workers {
        w.0.encode(out);
        put_addr(out, addr);
    }
    (d.owners.len() as u32).encode(out);
    for &o in &d.owners {
        (o as u32).encode(out);
    }
    d.restore.map(|c| c.0).encode(out);
}

fn get_deployment(input: &mut &[u8]) -> Result<Deployment> {
    let attempt = Attempt(u64::decode(input)?);
    let n = count(input, 15, "workers")?;
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        workers.push((WorkerId(u64::decode(input)?), get_addr(input)?));
    }
    let n = count(input, 4, "subtasks")?;
    let mut owners = Vec::with_capacity(n);
    for s in 0..n {
        let o = u32::decode(input)? as usize;
        if o >= workers.len() {
            return Err(bad(format!(
                "subtask {s} placed on worker index {o} of {}",
                workers.len()
            )));
        }
        owners.push(o);
    }
    let restore = Option::<u64>::decode(input)?.map(CheckpointId);
    Ok(Deployment {
        attempt,
        workers,
        owners,
        restore,
    })
}

fn finish<T>(value: T, rest: &[u8]) -> Result<T> {
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(bad(format!("{} bytes after the message", rest.len())))
    }
}

impl ToCoordinator {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            ToCoordinator::Register(r) => {
                b.push(1);
                r.name.encode(&mut b);
                r.instance.encode(&mut b);
                put_addr(&mut b, &r.data_addr);
                (r.slots as u32).encode(&mut b);
                put_fingerprint(&mut b, &r.fingerprint);
                r.wall_clock_ms.encode(&mut b);
            }
            ToCoordinator::Heartbeat => b.push(2),
            ToCoordinator::TaskFailed { attempt, reason } => {
                b.push(3);
                attempt.0.encode(&mut b);
                reason.encode(&mut b);
            }
            ToCoordinator::Finished { attempt } => {
                b.push(4);
                attempt.0.encode(&mut b);
            }
            ToCoordinator::Cancelled { attempt } => {
                b.push(5);
                attempt.0.encode(&mut b);
            }
        }
        frame(MAGIC, VERSION, &b)
    }

    /// Decodes what [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, mut input) = unframe(bytes, MAGIC, VERSION..=VERSION, "control message")?;
        let input = &mut input;
        let m = match u8::decode(input)? {
            1 => ToCoordinator::Register(Registration {
                name: String::decode(input)?,
                instance: u64::decode(input)?,
                data_addr: get_addr(input)?,
                slots: u32::decode(input)? as usize,
                fingerprint: get_fingerprint(input)?,
                wall_clock_ms: i64::decode(input)?,
            }),
            2 => ToCoordinator::Heartbeat,
            3 => ToCoordinator::TaskFailed {
                attempt: Attempt(u64::decode(input)?),
                reason: String::decode(input)?,
            },
            4 => ToCoordinator::Finished {
                attempt: Attempt(u64::decode(input)?),
            },
            5 => ToCoordinator::Cancelled {
                attempt: Attempt(u64::decode(input)?),
            },
            t => return Err(bad(format!("unknown message to the coordinator (tag {t})"))),
        };
        finish(m, input)
    }
}

impl ToWorker {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            ToWorker::Registered { id, heartbeat_ms } => {
                b.push(1);
                id.0.encode(&mut b);
                heartbeat_ms.encode(&mut b);
            }
            ToWorker::Refused { reason } => {
                b.push(2);
                reason.encode(&mut b);
            }
            ToWorker::Deploy { index, deployment } => {
                b.push(3);
                index.encode(&mut b);
                put_deployment(&mut b, deployment);
            }
            ToWorker::Cancel { attempt } => {
                b.push(4);
                attempt.0.encode(&mut b);
            }
            ToWorker::Forget { reason } => {
                b.push(5);
                reason.encode(&mut b);
            }
            ToWorker::JobOver { finished, reason } => {
                b.push(6);
                finished.encode(&mut b);
                reason.encode(&mut b);
            }
        }
        frame(MAGIC, VERSION, &b)
    }

    /// Decodes what [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, mut input) = unframe(bytes, MAGIC, VERSION..=VERSION, "control message")?;
        let input = &mut input;
        let m = match u8::decode(input)? {
            1 => ToWorker::Registered {
                id: WorkerId(u64::decode(input)?),
                heartbeat_ms: u64::decode(input)?,
            },
            2 => ToWorker::Refused {
                reason: String::decode(input)?,
            },
            3 => {
                let index = u32::decode(input)?;
                let deployment = get_deployment(input)?;
                if index as usize >= deployment.workers.len() {
                    return Err(bad(format!(
                        "worker index {index} of {} workers",
                        deployment.workers.len()
                    )));
                }
                ToWorker::Deploy { index, deployment }
            }
            4 => ToWorker::Cancel {
                attempt: Attempt(u64::decode(input)?),
            },
            5 => ToWorker::Forget {
                reason: String::decode(input)?,
            },
            6 => ToWorker::JobOver {
                finished: bool::decode(input)?,
                reason: String::decode(input)?,
            },
            t => return Err(bad(format!("unknown message to a worker (tag {t})"))),
        };
        finish(m, input)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn to_coordinator() -> impl Strategy<Value = ToCoordinator> {
        prop_oneof![
            (
                ".{0,12}",
                any::<u64>(),
                addr(),
                0usize..64,
                prop::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
                any::<i64>()
            )
                .prop_map(|(name, instance, data_addr, slots, fp, wall_clock_ms)| {
                    let fingerprint = fp
                        .into_iter()
                        .fold(Fingerprint::new(), |f, (k, v)| f.with(k, v));
                    ToCoordinator::Register(Registration {
                        name,
                        instance,
                        data_addr,
                        slots,
                        fingerprint,
                        wall_clock_ms,
                    })
                }),
            Just(ToCoordinator::Heartbeat),
            (any::<u64>(), ".{0,20}").prop_map(|(a, reason)| ToCoordinator::TaskFailed {
                attempt: Attempt(a),
                reason
            }),
            any::<u64>().prop_map(|a| ToCoordinator::Finished {
                attempt: Attempt(a)
            }),
            any::<u64>().prop_map(|a| ToCoordinator::Cancelled {
                attempt: Attempt(a)
            }),
        ]
    }

    fn to_worker() -> impl Strategy<Value = ToWorker> {
        let deployment = (
            any::<u64>(),
            prop::collection::vec((any::<u64>(), addr()), 1..4),
            prop::collection::vec(any::<u32>(), 0..8),
            any::<Option<u64>>(),
        )
            .prop_map(|(a, workers, owners, restore)| {
                let n = workers.len();
                Deployment {
                    attempt: Attempt(a),
                    workers: workers.into_iter().map(|(w, s)| (WorkerId(w), s)).collect(),
                    owners: owners.into_iter().map(|o| o as usize % n).collect(),
                    restore: restore.map(CheckpointId),
                }
            });
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(id, heartbeat_ms)| ToWorker::Registered {
                id: WorkerId(id),
                heartbeat_ms
            }),
            ".{0,20}".prop_map(|reason| ToWorker::Refused { reason }),
            (any::<u32>(), deployment).prop_map(|(i, deployment)| ToWorker::Deploy {
                index: i % deployment.workers.len() as u32,
                deployment
            }),
            any::<u64>().prop_map(|a| ToWorker::Cancel {
                attempt: Attempt(a)
            }),
            ".{0,20}".prop_map(|reason| ToWorker::Forget { reason }),
            (any::<bool>(), ".{0,20}")
                .prop_map(|(finished, reason)| ToWorker::JobOver { finished, reason }),
        ]
    }

    proptest! {
        /// Every message round-trips; any changed, cut or lengthened byte is an error.
        #[test]
        fn messages_round_trip_and_damage_is_an_error(
            c in to_coordinator(),
            w in to_worker(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let bytes = c.encode();
            prop_assert_eq!(ToCoordinator::decode(&bytes).unwrap(), c);
            let mut damaged = bytes.clone();
            damaged[at.index(bytes.len())] ^= flip;
            prop_assert!(ToCoordinator::decode(&damaged).is_err());
            prop_assert!(ToCoordinator::decode(&bytes[..bytes.len() - 1]).is_err());

            let bytes = w.encode();
            prop_assert_eq!(ToWorker::decode(&bytes).unwrap(), w);
            let mut damaged = bytes.clone();
            damaged[at.index(bytes.len())] ^= flip;
            prop_assert!(ToWorker::decode(&damaged).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(ToWorker::decode(&longer).is_err());
        }
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = ToCoordinator::decode(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed control message: not a control message (it does not start with `SBCP`)"
        );
        // A frame whose body announces far more items than it holds.
        let mut b = vec![3u8, 0, 0, 0, 0];
        put_deployment(
            &mut b,
            &Deployment {
                attempt: Attempt(1),
                workers: vec![(WorkerId(1), ([127, 0, 0, 1], 1).into())],
                owners: vec![0],
                restore: None,
            },
        );
        b[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = ToWorker::decode(&frame(MAGIC, VERSION, &b)).unwrap_err();
        assert!(
            e.to_string().contains("4294967295 workers announced"),
            "{e}"
        );
    }
}
