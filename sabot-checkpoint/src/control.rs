//! What a running job's checkpoint coordinator tells its tasks, as messages: a barrier
//! to inject (sources), a checkpoint completed (sinks commit), the final checkpoint
//! aborted, the job cancelled.
//!
//! Each task has an [`Inbox`]. The coordinator [`post`](Inbox::post)s; a task that has
//! work takes what is there without blocking ([`try_take`](Inbox::try_take): one atomic
//! load when the inbox is empty), and a task with nothing to do waits on it
//! ([`take_timeout`](Inbox::take_timeout)), woken by the next message rather than
//! polling. Messages arrive in the order they were posted.

use std::collections::VecDeque;
use std::time::Duration;

use sabot_core::codec::{Codec, CodecError};
use sabot_core::{CheckpointBarrier, CheckpointId, Timestamp};

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering};

/// A message from the checkpoint coordinator to a task.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Inject this barrier (sent to source tasks). `last` marks the final checkpoint's:
    /// the source ends its stream after it.
    Barrier {
        /// The barrier.
        barrier: CheckpointBarrier,
        /// Whether it is the final checkpoint's barrier.
        last: bool,
    },
    /// The checkpoint completed: what it covers may be committed. `last` marks the final
    /// checkpoint's completion: the task may end.
    Completed {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether it is the final checkpoint.
        last: bool,
    },
    /// The final checkpoint was aborted (why): the job cannot end with its output
    /// committed.
    FinalAborted(String),
    /// The job failed elsewhere: stop.
    Cancel,
}

/// A control message's bytes, for tasks in another process than the checkpoint
/// coordinator (a tag byte, then the fields).
impl Codec for Control {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Control::Barrier { barrier, last } => {
                out.push(1);
                barrier.id.0.encode(out);
                barrier.triggered_at.millis().encode(out);
                last.encode(out);
            }
            Control::Completed { id, last } => {
                out.push(2);
                id.0.encode(out);
                last.encode(out);
            }
            Control::FinalAborted(why) => {
                out.push(3);
                why.encode(out);
            }
            Control::Cancel => out.push(4),
        }
    }

    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(match u8::decode(input)? {
            1 => Control::Barrier {
                barrier: CheckpointBarrier {
                    id: CheckpointId(u64::decode(input)?),
                    triggered_at: Timestamp::from_millis(i64::decode(input)?),
                },
                last: bool::decode(input)?,
            },
            2 => Control::Completed {
                id: CheckpointId(u64::decode(input)?),
                last: bool::decode(input)?,
            },
            3 => Control::FinalAborted(String::decode(input)?),
            4 => Control::Cancel,
            t => {
                return Err(CodecError::new(format!(
                    "unknown checkpoint control (tag {t})"
                )));
            }
        })
    }
}

/// One task's control messages. See the module docs.
#[derive(Debug)]
pub struct Inbox {
    queue: Mutex<VecDeque<Control>>,
    /// Messages in `queue`: an empty inbox is seen without taking the lock.
    len: AtomicUsize,
    ready: Condvar,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Inbox {
        Inbox {
            queue: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            ready: Condvar::new(),
        }
    }

    /// Adds a message and wakes the task if it waits.
    pub fn post(&self, c: Control) {
        let mut q = lock(&self.queue);
        q.push_back(c);
        self.len.store(q.len(), Ordering::Release);
        drop(q);
        self.ready.notify_one();
    }

    /// The oldest message, if any, without blocking.
    pub fn try_take(&self) -> Option<Control> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.queue);
        let c = q.pop_front();
        self.len.store(q.len(), Ordering::Release);
        c
    }

    /// The oldest message, waiting up to `timeout` for one.
    pub fn take_timeout(&self, timeout: Duration) -> Option<Control> {
        let mut q = lock(&self.queue);
        if q.is_empty() {
            q = match self.ready.wait_timeout(q, timeout) {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
        }
        let c = q.pop_front();
        self.len.store(q.len(), Ordering::Release);
        c
    }

    /// The oldest message, waiting for one as long as it takes.
    pub fn take(&self) -> Control {
        let mut q = lock(&self.queue);
        loop {
            if let Some(c) = q.pop_front() {
                self.len.store(q.len(), Ordering::Release);
                return c;
            }
            q = match self.ready.wait(q) {
                Ok(q) => q,
                Err(p) => p.into_inner(),
            };
        }
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(all(test, not(sabot_loom)))]
mod codec_tests {
    use proptest::prelude::*;
    use sabot_core::codec::Codec;
    use sabot_core::{CheckpointBarrier, CheckpointId, Timestamp};

    use super::Control;
    use crate::storage::FileEntry;

    fn control() -> impl Strategy<Value = Control> {
        prop_oneof![
            (any::<u64>(), any::<i64>(), any::<bool>()).prop_map(|(id, at, last)| {
                Control::Barrier {
                    barrier: CheckpointBarrier {
                        id: CheckpointId(id),
                        triggered_at: Timestamp::from_millis(at),
                    },
                    last,
                }
            }),
            (any::<u64>(), any::<bool>()).prop_map(|(id, last)| Control::Completed {
                id: CheckpointId(id),
                last
            }),
            ".{0,16}".prop_map(Control::FinalAborted),
            Just(Control::Cancel),
        ]
    }

    proptest! {
        /// Controls and file entries round-trip; a cut message is an error.
        #[test]
        fn controls_and_file_entries_round_trip(
            c in control(),
            path in ".{0,16}",
            len in any::<u64>(),
            crc32 in any::<u32>(),
        ) {
            let mut b = Vec::new();
            c.encode(&mut b);
            prop_assert_eq!(Control::decode(&mut b.as_slice()).unwrap(), c);
            prop_assert!(Control::decode(&mut &b[..b.len() - 1]).is_err() || b.len() == 1);
            let e = FileEntry { path, len, crc32 };
            let mut b = Vec::new();
            e.encode(&mut b);
            prop_assert_eq!(FileEntry::decode(&mut b.as_slice()).unwrap(), e);
            prop_assert!(FileEntry::decode(&mut &b[..b.len() - 1]).is_err());
        }
    }

    #[test]
    fn an_unknown_control_is_an_error() {
        let e = Control::decode(&mut [9u8].as_slice()).unwrap_err();
        assert_eq!(e.to_string(), "unknown checkpoint control (tag 9)");
    }
}

#[cfg(all(test, not(sabot_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use sabot_core::Timestamp;

    use super::*;

    fn barrier(id: u64) -> Control {
        Control::Barrier {
            barrier: CheckpointBarrier {
                id: CheckpointId(id),
                triggered_at: Timestamp::from_millis(0),
            },
            last: false,
        }
    }

    #[test]
    fn messages_arrive_in_order_and_an_empty_inbox_does_not_block_try_take() {
        let inbox = Inbox::new();
        assert_eq!(inbox.try_take(), None);
        inbox.post(barrier(1));
        inbox.post(Control::Completed {
            id: CheckpointId(1),
            last: false,
        });
        assert_eq!(inbox.try_take(), Some(barrier(1)));
        assert_eq!(
            inbox.take(),
            Control::Completed {
                id: CheckpointId(1),
                last: false
            }
        );
        assert_eq!(inbox.take_timeout(Duration::from_millis(1)), None);
    }

    #[test]
    fn a_waiting_task_wakes_when_a_message_is_posted_not_at_its_timeout() {
        let inbox = Arc::new(Inbox::new());
        let poster = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                inbox.post(Control::Cancel);
            })
        };
        let started = Instant::now();
        assert_eq!(
            inbox.take_timeout(Duration::from_secs(30)),
            Some(Control::Cancel)
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        poster.join().unwrap();
    }
}

#[cfg(all(test, sabot_loom))]
mod loom_tests {
    use loom::sync::Arc;

    use sabot_core::Timestamp;

    use super::*;

    /// The coordinator posts a barrier, the checkpoint's completion and the next
    /// barrier while the source alternates between taking without blocking and waiting:
    /// every message arrives once, in order, and a wait never misses a post (loom
    /// reports a deadlock if it did).
    #[test]
    fn posts_reach_a_task_in_order_without_a_lost_wake_up() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let b = |id| Control::Barrier {
                barrier: CheckpointBarrier {
                    id: CheckpointId(id),
                    triggered_at: Timestamp::from_millis(0),
                },
                last: id == 2,
            };
            let sent = vec![
                b(1),
                Control::Completed {
                    id: CheckpointId(1),
                    last: false,
                },
                b(2),
            ];
            let coordinator = {
                let (inbox, sent) = (inbox.clone(), sent.clone());
                loom::thread::spawn(move || {
                    for c in sent {
                        inbox.post(c);
                    }
                })
            };
            let mut got = Vec::new();
            while got.len() < 3 {
                match inbox.try_take() {
                    Some(c) => got.push(c),
                    None => got.push(inbox.take()),
                }
            }
            coordinator.join().unwrap();
            assert_eq!(got, sent);
            assert_eq!(inbox.try_take(), None);
        });
    }
}
