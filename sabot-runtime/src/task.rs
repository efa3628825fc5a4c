//! One subtask: its input loop and its chain of operators.

use std::sync::Arc;
use std::time::Duration;

use sabot_core::metrics::Counter;
use sabot_core::{Message, Timestamp};
use sabot_operators::{Operator, Output, Sink, SourceFactory, SourcePoll, TaskContext};
use sabot_shuffle::queue::{Receiver, Sender};
use sabot_shuffle::{HashPartitioner, RoundRobinPartitioner};
use sabot_time::WatermarkTracker;

use crate::{Result, RuntimeError};

/// A message tagged with the index of the upstream subtask that sent it.
pub(crate) type Envelope = (usize, Message);

/// How long a source that reported idle waits before asking again.
const IDLE_BACKOFF: Duration = Duration::from_millis(1);

/// The tree of chained nodes a subtask pushes messages through.
pub(crate) enum ChainNode {
    Operator {
        op: Box<dyn Operator>,
        out: Output,
        children: Vec<ChainNode>,
    },
    Sink {
        sink: Box<dyn Sink>,
        records: Counter,
    },
    Exchange(ExchangeWriter),
}

impl ChainNode {
    pub(crate) fn push(&mut self, msg: Message) -> Result<()> {
        match self {
            ChainNode::Operator { op, out, children } => {
                let end = matches!(msg, Message::EndOfStream);
                match msg {
                    Message::Data(b) => op.on_batch(b, out)?,
                    Message::Watermark(wm) => op.on_watermark(wm, out)?,
                    Message::EndOfStream => op.on_end(out)?,
                    other => out.message(other),
                }
                for m in out.drain() {
                    push_all(children, m)?;
                }
                if end {
                    push_all(children, Message::EndOfStream)?;
                }
                Ok(())
            }
            ChainNode::Sink { sink, records } => {
                match msg {
                    Message::Data(b) => {
                        records.add(b.num_rows() as u64);
                        sink.write(b)?;
                    }
                    Message::Watermark(wm) => sink.on_watermark(wm)?,
                    Message::EndOfStream => sink.finish()?,
                    _ => {}
                }
                Ok(())
            }
            ChainNode::Exchange(w) => w.push(msg),
        }
    }
}

/// Pushes `msg` into every node of `nodes` (cloning batches is cheap: columns are shared).
pub(crate) fn push_all(nodes: &mut [ChainNode], msg: Message) -> Result<()> {
    if let [only] = nodes {
        return only.push(msg);
    }
    for n in nodes.iter_mut() {
        n.push(msg.clone())?;
    }
    Ok(())
}

pub(crate) enum Partitioner {
    Hash(Box<HashPartitioner>),
    RoundRobin(RoundRobinPartitioner),
}

/// The upstream end of an exchange: partitions batches and broadcasts control messages.
pub(crate) struct ExchangeWriter {
    pub(crate) me: usize,
    pub(crate) partitioner: Partitioner,
    pub(crate) targets: Vec<Sender<Envelope>>,
}

impl ExchangeWriter {
    fn send(&self, target: usize, msg: Message) -> Result<()> {
        self.targets[target]
            .push((self.me, msg))
            .map_err(|_| RuntimeError::DownstreamClosed { target })
    }

    fn push(&mut self, msg: Message) -> Result<()> {
        match msg {
            Message::Data(batch) => match &mut self.partitioner {
                Partitioner::Hash(p) => {
                    for (t, part) in p.partition(&batch)? {
                        self.send(t, Message::Data(part))?;
                    }
                    Ok(())
                }
                Partitioner::RoundRobin(rr) => {
                    let t = rr.next_target();
                    self.send(t, Message::Data(batch))
                }
            },
            control => {
                for t in 0..self.targets.len() {
                    self.send(t, control.clone())?;
                }
                Ok(())
            }
        }
    }
}

/// Runs a source subtask: polls the source and pushes what it says through the chain.
pub(crate) fn run_source(
    factory: &Arc<dyn SourceFactory>,
    ctx: &TaskContext,
    chain: &mut [ChainNode],
    records: &Counter,
) -> Result<()> {
    let mut source = factory.create(ctx)?;
    let mut idle = false;
    loop {
        match source.poll_next()? {
            SourcePoll::Batch(b) => {
                idle = false;
                records.add(b.num_rows() as u64);
                push_all(chain, Message::Data(b))?;
            }
            SourcePoll::Idle => {
                if !idle {
                    push_all(chain, Message::Idle)?;
                    idle = true;
                }
                std::thread::sleep(IDLE_BACKOFF);
            }
            SourcePoll::End => break,
            _ => {
                return Err(RuntimeError::InvalidGraph {
                    reason: "source returned an unknown poll result".into(),
                });
            }
        }
    }
    push_all(chain, Message::Watermark(Timestamp::MAX))?;
    push_all(chain, Message::EndOfStream)
}

/// Runs the downstream end of an exchange: combines the upstream watermarks and pushes
/// data through the chain until every upstream subtask ended.
pub(crate) fn run_exchange_input(
    input: Receiver<Envelope>,
    upstreams: usize,
    chain: &mut [ChainNode],
) -> Result<()> {
    let mut tracker = WatermarkTracker::new(upstreams);
    let mut idle = false;
    loop {
        let Some((from, msg)) = input.pop() else {
            return Err(RuntimeError::UpstreamLost);
        };
        let advanced = match msg {
            Message::Data(b) => {
                let wm = tracker.on_data(from)?;
                push_all(chain, Message::Data(b))?;
                wm
            }
            Message::Watermark(wm) => tracker.on_watermark(from, wm)?,
            Message::Idle => tracker.on_idle(from)?,
            Message::EndOfStream => tracker.on_end_of_stream(from)?,
            other => {
                // Barriers pass through until checkpointing aligns them (issue 6).
                push_all(chain, other)?;
                None
            }
        };
        if let Some(wm) = advanced {
            push_all(chain, Message::Watermark(wm))?;
        }
        if tracker.all_ended() {
            return push_all(chain, Message::EndOfStream);
        }
        // Tell downstream when every input went quiet, so it does not wait for us.
        let now_idle = tracker.is_idle();
        if now_idle && !idle {
            push_all(chain, Message::Idle)?;
        }
        idle = now_idle;
    }
}
