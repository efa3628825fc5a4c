//! One subtask: its input loop and its chain of operators.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::network::RemoteSender;
use sabot_core::metrics::{Counter, Histogram};
use sabot_core::{CheckpointBarrier, CheckpointId, Message, Timestamp};
use sabot_operators::{Operator, Output, Sink, SourceFactory, SourcePoll, TaskContext};
use sabot_shuffle::Delivery;
use sabot_shuffle::queue::{FanInReceiver, FanInSender};
use sabot_shuffle::{BroadcastPartitioner, HashPartitioner, RoundRobinPartitioner};
use sabot_time::{SharedWatermark, WatermarkTracker};

use sabot_checkpoint::{Aligned, BarrierAligner, Control, Inbox, Input};

use crate::checkpointing::TaskCheckpoints;
use crate::{Result, RuntimeError};

/// A message tagged with the index of the upstream subtask that sent it, or the error
/// that ended a network channel.
pub(crate) type Envelope = Delivery;

/// Where an exchange sends one downstream subtask's share.
pub(crate) enum Target {
    /// A subtask of this process: its input queue.
    Local(FanInSender<Envelope>),
    /// A subtask of another worker: a network channel (taken when it is finished).
    Remote(Option<RemoteSender>),
}

/// How long a source that reported idle waits before asking again.
const IDLE_BACKOFF: Duration = Duration::from_millis(1);

/// The tree of chained nodes a subtask pushes messages through.
pub(crate) enum ChainNode {
    Operator {
        op: Box<dyn Operator>,
        /// Where its snapshots go, and the name of its folder in a checkpoint.
        ckpt: Option<(TaskCheckpoints, String)>,
        out: Output,
        children: Vec<ChainNode>,
        /// Side outputs by tag: they get the operator's side batches and its control
        /// messages (watermarks, idleness, end of stream).
        sides: Vec<(String, Vec<ChainNode>)>,
    },
    Sink {
        sink: Box<dyn Sink>,
        records: Counter,
        latency: Histogram,
    },
    Exchange(ExchangeWriter),
}

impl ChainNode {
    pub(crate) fn push(&mut self, msg: Message) -> Result<()> {
        self.push_from(0, msg)
    }

    /// Pushes a message that came from input `input` (a two-input operator's second
    /// input is 1; everything else is 0).
    pub(crate) fn push_from(&mut self, input: usize, msg: Message) -> Result<()> {
        match self {
            ChainNode::Operator {
                op,
                ckpt,
                out,
                children,
                sides,
            } => {
                let end = matches!(msg, Message::EndOfStream);
                match msg {
                    Message::Data(b) => op.on_batch_from(input, b, out)?,
                    Message::Watermark(wm) => op.on_watermark(wm, out)?,
                    Message::EndOfStream => op.on_end(out)?,
                    Message::Barrier(b) => {
                        // Everything before the barrier is in the operator: snapshot it,
                        // then pass the barrier on.
                        if let Some((c, name)) = ckpt {
                            let target = c.target(b.id, name);
                            let w = op.snapshot_async(&target)?;
                            // Written (and its files recorded) on the snapshot thread;
                            // the task acknowledges the checkpoint after that.
                            c.snapshot(b.id, w, target);
                        }
                        out.message(Message::Barrier(b));
                    }
                    other => out.message(other),
                }
                route(out, children, sides)?;
                if end {
                    push_all(children, Message::EndOfStream)?;
                    for (_, side) in sides.iter_mut() {
                        push_all(side, Message::EndOfStream)?;
                    }
                }
                Ok(())
            }
            ChainNode::Sink {
                sink,
                records,
                latency,
            } => {
                match msg {
                    Message::Data(b) => {
                        records.add(b.num_rows() as u64);
                        sink.write(b)?;
                    }
                    Message::Watermark(wm) => sink.on_watermark(wm)?,
                    Message::EndOfStream => sink.finish()?,
                    Message::Barrier(b) => sink.on_checkpoint(b.id)?,
                    Message::LatencyMarker(at) => {
                        let age = sabot_core::wall_clock_micros().saturating_sub(at);
                        latency.record(age.max(0) as u64);
                    }
                    _ => {}
                }
                Ok(())
            }
            ChainNode::Exchange(w) => w.push(msg),
        }
    }

    /// Processing time moved to `now`: every operator in the chain gets a tick.
    pub(crate) fn tick(&mut self, now: i64) -> Result<()> {
        if let ChainNode::Operator {
            op,
            out,
            children,
            sides,
            ..
        } = self
        {
            op.on_tick(now, out)?;
            route(out, children, sides)?;
            for c in children.iter_mut() {
                c.tick(now)?;
            }
            for (_, side) in sides.iter_mut() {
                for c in side.iter_mut() {
                    c.tick(now)?;
                }
            }
        }
        Ok(())
    }
}

/// Checkpoint `id` completed: every sink in the chain may commit what it covers.
pub(crate) fn notify_complete(nodes: &mut [ChainNode], id: CheckpointId) -> Result<()> {
    for n in nodes.iter_mut() {
        match n {
            ChainNode::Operator {
                children, sides, ..
            } => {
                notify_complete(children, id)?;
                for (_, side) in sides.iter_mut() {
                    notify_complete(side, id)?;
                }
            }
            ChainNode::Sink { sink, .. } => sink.notify_checkpoint_complete(id)?,
            ChainNode::Exchange(_) => {}
        }
    }
    Ok(())
}

/// What a task made of the coordinator's messages: completed checkpoints are passed on
/// to the chain's sinks at once; the end of the protocol (the final checkpoint complete
/// or aborted, or the job cancelled) is kept for [`Controls::await_final`].
struct Controls {
    notified: Option<CheckpointId>,
    /// Set once the protocol is over for this task.
    outcome: Option<Result<CheckpointId>>,
}

impl Controls {
    fn new() -> Self {
        Controls {
            notified: None,
            outcome: None,
        }
    }

    /// Handles one message; returns a barrier to inject (`true`: the final one) or a
    /// newly completed checkpoint (for a source to hear of).
    fn handle(&mut self, c: Control, chain: &mut [ChainNode]) -> Result<Handled> {
        Ok(match c {
            Control::Barrier { barrier, last } => Handled::Barrier(barrier, last),
            Control::Completed { id, last } => {
                if last {
                    self.outcome.get_or_insert(Ok(id));
                }
                if self.notified.is_none_or(|n| id > n) {
                    self.notified = Some(id);
                    notify_complete(chain, id)?;
                    Handled::Completed(id)
                } else {
                    Handled::Nothing
                }
            }
            Control::FinalAborted(reason) => {
                self.outcome
                    .get_or_insert(Err(RuntimeError::FinalCheckpoint { reason }));
                Handled::Nothing
            }
            _ => {
                // Cancel (and whatever a newer coordinator may add): stop.
                self.outcome.get_or_insert(Err(RuntimeError::Cancelled));
                Handled::Nothing
            }
        })
    }

    /// Handles every message waiting in the inbox (a task with work does not block);
    /// barriers are ignored (they reach this task in its input).
    fn drain(&mut self, inbox: &Inbox, chain: &mut [ChainNode]) -> Result<()> {
        while let Some(c) = inbox.try_take() {
            self.handle(c, chain)?;
        }
        Ok(())
    }

    /// After the task's input ended: waits for the final checkpoint's completion (every
    /// sink has committed by then), or its abort, or the job's failure.
    fn await_final(mut self, inbox: &Inbox, chain: &mut [ChainNode]) -> Result<CheckpointId> {
        loop {
            if let Some(outcome) = self.outcome.take() {
                return outcome;
            }
            let c = inbox.take();
            self.handle(c, chain)?;
        }
    }
}

/// What [`Controls::handle`] made of a message.
enum Handled {
    Barrier(CheckpointBarrier, bool),
    Completed(CheckpointId),
    Nothing,
}

/// Sends what an operator emitted: main messages to its children, side batches to the
/// side output of their tag, control messages to the side outputs as well.
fn route(
    out: &mut Output,
    children: &mut [ChainNode],
    sides: &mut [(String, Vec<ChainNode>)],
) -> Result<()> {
    for m in out.drain() {
        if m.is_control() {
            for (_, side) in sides.iter_mut() {
                push_all(side, m.clone())?;
            }
        }
        push_all(children, m)?;
    }
    for (tag, batch) in out.drain_side() {
        for (_, side) in sides.iter_mut().filter(|(t, _)| t == tag) {
            push_all(side, Message::Data(batch.clone()))?;
        }
    }
    Ok(())
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

fn tick_all(nodes: &mut [ChainNode], now: i64) -> Result<()> {
    nodes.iter_mut().try_for_each(|n| n.tick(now))
}

pub(crate) enum Partitioner {
    Hash(Box<HashPartitioner>),
    RoundRobin(RoundRobinPartitioner),
    Broadcast(BroadcastPartitioner),
}

/// The upstream end of an exchange: partitions batches and broadcasts control messages.
pub(crate) struct ExchangeWriter {
    /// What this subtask's messages are tagged with downstream: its index, plus the
    /// parallelism times the input's index where the reader reads two exchanges.
    pub(crate) me: usize,
    pub(crate) partitioner: Partitioner,
    pub(crate) targets: Vec<Target>,
}

impl ExchangeWriter {
    fn send(&mut self, target: usize, msg: Message) -> Result<()> {
        match &mut self.targets[target] {
            Target::Local(tx) => tx
                .push((self.me, Ok(msg)))
                .map_err(|_| RuntimeError::DownstreamClosed { target }),
            Target::Remote(Some(tx)) => Ok(tx.send(msg)?),
            Target::Remote(None) => Err(RuntimeError::DownstreamClosed { target }),
        }
    }

    /// After the end of stream: waits until every remote subtask has received it.
    fn finish_remote(&mut self) -> Result<()> {
        for t in &mut self.targets {
            if let Target::Remote(tx) = t
                && let Some(tx) = tx.take()
            {
                tx.finish()?;
            }
        }
        Ok(())
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
                Partitioner::Broadcast(b) => {
                    for (t, copy) in b.partition(&batch) {
                        self.send(t, Message::Data(copy))?;
                    }
                    Ok(())
                }
            },
            Message::LatencyMarker(at) => {
                // One target, as Flink does (a marker per target would multiply them);
                // the microseconds spread markers over the targets.
                let t = at.rem_euclid(self.targets.len().max(1) as i64) as usize;
                self.send(t, Message::LatencyMarker(at))
            }
            control => {
                let end = matches!(control, Message::EndOfStream);
                for t in 0..self.targets.len() {
                    self.send(t, control.clone())?;
                }
                if end {
                    self.finish_remote()?;
                }
                Ok(())
            }
        }
    }
}

/// Calls ticks at most every `interval` of real time, passing the job clock's time.
pub(crate) struct Ticker {
    ctx: TaskContext,
    interval: Duration,
    last: Instant,
}

impl Ticker {
    pub(crate) fn new(ctx: &TaskContext, interval: Duration) -> Self {
        Ticker {
            ctx: ctx.clone(),
            interval,
            last: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> i64 {
        self.ctx.clock.now_ms()
    }

    /// How long until the next tick is due (at least a millisecond).
    pub(crate) fn until_next(&self) -> Duration {
        self.interval
            .saturating_sub(self.last.elapsed())
            .max(Duration::from_millis(1))
    }

    /// Ticks the chain if the interval passed.
    fn maybe_tick(&mut self, chain: &mut [ChainNode]) -> Result<()> {
        if self.last.elapsed() >= self.interval {
            self.last = Instant::now();
            tick_all(chain, self.now())?;
        }
        Ok(())
    }
}

/// A source subtask's part in checkpoints: where its position goes, and the position
/// to continue from.
pub(crate) struct SourceCheckpoints {
    pub(crate) ckpt: TaskCheckpoints,
    pub(crate) name: String,
    /// Every source subtask's position in the checkpoint to continue from.
    pub(crate) restore: Option<Vec<Vec<u8>>>,
}

/// Runs a source subtask: polls the source and pushes what it says through the chain.
/// With checkpoints, injects each triggered barrier between two batches, after writing
/// the source's position.
pub(crate) fn run_source(
    factory: &Arc<dyn SourceFactory>,
    ctx: &TaskContext,
    chain: &mut [ChainNode],
    records: &Counter,
    ticker: &mut Ticker,
    checkpoints: Option<SourceCheckpoints>,
) -> Result<()> {
    let mut source = factory.create(ctx)?;
    if let Some(positions) = checkpoints.as_ref().and_then(|c| c.restore.as_deref()) {
        source.restore(positions)?;
    }
    let mut controls = Controls::new();
    // The first batch gets a marker, then one every interval.
    let mut last_marker: Option<Instant> = None;
    // Writes the source's position into checkpoint `b`, then sends the barrier on.
    let inject = |b: CheckpointBarrier,
                  c: &SourceCheckpoints,
                  source: &mut Box<dyn sabot_operators::Source>,
                  chain: &mut [ChainNode]|
     -> Result<()> {
        source.on_barrier(b.id)?;
        let position = source
            .position()?
            .ok_or_else(|| RuntimeError::InvalidGraph {
                reason: format!("source `{}` cannot be checkpointed", factory.name()),
            })?;
        c.ckpt.put(b.id, &c.name, &position)?;
        push_all(chain, Message::Barrier(b))?;
        c.ckpt.ack(b.id);
        Ok(())
    };
    // Acts on one message of the coordinator; returns whether it was the final barrier.
    let on_control = |ctl: Control,
                      c: &SourceCheckpoints,
                      controls: &mut Controls,
                      source: &mut Box<dyn sabot_operators::Source>,
                      chain: &mut [ChainNode]|
     -> Result<bool> {
        match controls.handle(ctl, chain)? {
            Handled::Barrier(b, last) => {
                inject(b, c, source, chain)?;
                Ok(last)
            }
            Handled::Completed(id) => {
                source.notify_checkpoint_complete(id)?;
                Ok(false)
            }
            // Cancelled, or the final checkpoint failed: stop with why.
            Handled::Nothing => match controls.outcome.take() {
                Some(Err(e)) => Err(e),
                other => {
                    controls.outcome = other;
                    Ok(false)
                }
            },
        }
    };
    loop {
        if let Some(c) = &checkpoints {
            while let Some(ctl) = c.ckpt.inbox().try_take() {
                on_control(ctl, c, &mut controls, &mut source, chain)?;
            }
        }
        match source.poll_next()? {
            SourcePoll::Batch(b) => {
                records.add(b.num_rows() as u64);
                // Stamped before the batch goes down the chain, sent after it: the
                // marker's age at a sink covers this batch's way through the job.
                let marker = last_marker
                    .is_none_or(|t| t.elapsed() >= crate::LATENCY_MARKER_INTERVAL)
                    .then(sabot_core::wall_clock_micros);
                push_all(chain, Message::Data(b))?;
                if let Some(at) = marker {
                    last_marker = Some(Instant::now());
                    push_all(chain, Message::LatencyMarker(at))?;
                }
            }
            // Nothing to read: wait a moment, woken at once by a message of the
            // coordinator.
            SourcePoll::Idle => match &checkpoints {
                Some(c) => {
                    if let Some(ctl) = c.ckpt.inbox().take_timeout(IDLE_BACKOFF) {
                        on_control(ctl, c, &mut controls, &mut source, chain)?;
                    }
                }
                None => std::thread::sleep(IDLE_BACKOFF),
            },
            SourcePoll::Watermark(wm) => push_all(chain, Message::Watermark(wm))?,
            SourcePoll::MarkIdle => push_all(chain, Message::Idle)?,
            SourcePoll::End => break,
            _ => {
                return Err(RuntimeError::InvalidGraph {
                    reason: "source returned an unknown poll result".into(),
                });
            }
        }
        ticker.maybe_tick(chain)?;
    }
    // Event time ends: every window and event-time timer fires now, so all the output
    // is produced before the final checkpoint's barrier.
    push_all(chain, Message::Watermark(Timestamp::MAX))?;
    let Some(c) = &checkpoints else {
        return push_all(chain, Message::EndOfStream);
    };
    // Keep taking part in checkpoints until the final one (see `Signals`), waiting on
    // the inbox between ticks.
    c.ckpt.source_ended();
    loop {
        if let Some(ctl) = c.ckpt.inbox().take_timeout(ticker.until_next())
            && on_control(ctl, c, &mut controls, &mut source, chain)?
        {
            break;
        }
        ticker.maybe_tick(chain)?;
    }
    push_all(chain, Message::EndOfStream)?;
    // Every output is committed with the final checkpoint.
    controls.await_final(c.ckpt.inbox(), chain).map(|_| ())
}

/// Runs the downstream end of an exchange: combines the upstream watermarks and pushes
/// data through the chain until every upstream subtask ended.
pub(crate) fn run_exchange_input(
    input: FanInReceiver<Envelope>,
    parallelism: usize,
    inputs: usize,
    chain: &mut [ChainNode],
    ticker: &mut Ticker,
    published: &SharedWatermark,
    checkpoints: Option<TaskCheckpoints>,
) -> Result<()> {
    // A two-input task reads `parallelism` channels of each input: the watermark is
    // the smallest over all of them.
    let upstreams = parallelism * inputs;
    let mut tracker = WatermarkTracker::new(upstreams);
    tracker.start(ticker.now());
    let mut idle = false;
    // With checkpoints, messages pass the barrier aligner first; what it releases is
    // handled below, in its order.
    let mut aligner = checkpoints
        .as_ref()
        .map(|c| BarrierAligner::new(upstreams, c.mode, c.max_buffered));
    let mut ready: std::collections::VecDeque<(usize, Message)> = Default::default();
    let mut controls = Controls::new();
    loop {
        if let Some(c) = &checkpoints {
            controls.drain(c.inbox(), chain)?;
            if let Some(Err(_)) = &controls.outcome {
                return controls.await_final(c.inbox(), chain).map(|_| ());
            }
        }
        if ready.is_empty() {
            let msg = match input.pop_timeout(ticker.interval) {
                Ok(Some(m)) => Some(m),
                Ok(None) => return Err(RuntimeError::UpstreamLost),
                Err(()) => None,
            };
            if let Some((from, msg)) = msg {
                let msg = msg?;
                match (&mut aligner, &checkpoints) {
                    (Some(a), Some(c)) => {
                        a.push(
                            from,
                            match msg {
                                Message::Barrier(b) => Input::Barrier(b),
                                Message::EndOfStream => Input::EndOfStream,
                                m => Input::Message(m),
                            },
                        )?;
                        while let Some(action) = a.next_action() {
                            match action {
                                Aligned::Message(i, m) => ready.push_back((i, m)),
                                Aligned::EndOfStream(i) => {
                                    ready.push_back((i, Message::EndOfStream))
                                }
                                Aligned::Checkpoint(b) => {
                                    // The barrier's place in the stream: after everything
                                    // released so far.
                                    ready.push_back((usize::MAX, Message::Barrier(b)))
                                }
                                Aligned::Aborted(id, reason) => {
                                    c.decline(id, format!("{reason:?}"))
                                }
                            }
                        }
                    }
                    _ => ready.push_back((from, msg)),
                }
            }
        }
        if let Some((from, msg)) = ready.pop_front() {
            if let (usize::MAX, Message::Barrier(b)) = (from, &msg) {
                let id = b.id;
                push_all(chain, msg)?;
                if let Some(c) = &checkpoints {
                    c.ack(id);
                }
                continue;
            }
            let now = ticker.now();
            let advanced = match msg {
                Message::Data(b) => {
                    let wm = tracker.on_data(from, now)?;
                    match from / parallelism.max(1) {
                        0 => push_all(chain, Message::Data(b))?,
                        i => {
                            for n in chain.iter_mut() {
                                n.push_from(i, Message::Data(b.clone()))?;
                            }
                        }
                    }
                    wm
                }
                Message::Watermark(wm) => tracker.on_watermark(from, wm, now)?,
                Message::Idle => tracker.on_idle(from)?,
                Message::EndOfStream => tracker.on_end_of_stream(from)?,
                other => {
                    // Without checkpoints in this job, nothing aligns barriers.
                    push_all(chain, other)?;
                    None
                }
            };
            if let Some(wm) = advanced {
                published.publish(wm);
                push_all(chain, Message::Watermark(wm))?;
            }
            if tracker.all_ended() {
                push_all(chain, Message::EndOfStream)?;
                // Every output is committed with the final checkpoint.
                return match &checkpoints {
                    Some(c) => controls.await_final(c.inbox(), chain).map(|_| ()),
                    None => Ok(()),
                };
            }
            // Tell downstream when every input went quiet, so it does not wait for us.
            let now_idle = tracker.is_idle();
            if now_idle && !idle {
                push_all(chain, Message::Idle)?;
            }
            idle = now_idle;
        }
        ticker.maybe_tick(chain)?;
    }
}
