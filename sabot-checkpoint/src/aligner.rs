//! Barrier alignment for a task with several inputs (Chandy-Lamport, as in Flink).
//!
//! A [`BarrierAligner`] is a pure state machine: the task feeds it what each input sends
//! ([`Input`]) and takes back what to do, in order ([`Aligned`], from [`BarrierAligner::next_action`]). It does no I/O and
//! never blocks.
//!
//! - [`CheckpointingMode::ExactlyOnce`]: after barrier `n` arrives on an input, that
//!   input is blocked: its later messages are held back until barrier `n` has arrived on
//!   every input that has not ended. Then [`Aligned::Checkpoint`] tells the task to take
//!   its snapshot (which therefore holds exactly what came before the barrier on every
//!   input), and the held messages follow, in their order. At most `max_buffered`
//!   messages are held: one more aborts the checkpoint ([`AbortReason::BufferFull`]) and
//!   releases everything, so memory stays bounded.
//! - [`CheckpointingMode::AtLeastOnce`]: nothing is held; the checkpoint triggers when
//!   the last input's barrier arrives (messages after an early barrier are already in
//!   the snapshot, and are replayed on recovery: at least once).
//!
//! A barrier for a newer checkpoint while an older one is aligning aborts the older one
//! ([`AbortReason::Subsumed`]) and releases what it held. An input that ends counts as
//! having delivered every barrier from then on. A barrier older than the last one seen,
//! or a second barrier for the same checkpoint on one input, is an error: it means a
//! broken upstream, not something to skip silently.

use std::collections::VecDeque;

use sabot_core::{CheckpointBarrier, CheckpointId};

use crate::{CheckpointError, Result};

/// How barriers are aligned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckpointingMode {
    /// Hold inputs that delivered the barrier until all have: exactly-once state.
    ExactlyOnce,
    /// Never hold: the checkpoint may include records after the barrier.
    AtLeastOnce,
}

/// What one input of the task delivered.
#[derive(Clone, Debug, PartialEq)]
pub enum Input<M> {
    /// A message that is not a barrier (a batch, a watermark, idleness).
    Message(M),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The input ended: it sends nothing more.
    EndOfStream,
}

/// What the task does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Aligned<M> {
    /// Process this message of this input now.
    Message(usize, M),
    /// Every input delivered this barrier: snapshot now, then forward the barrier.
    Checkpoint(CheckpointBarrier),
    /// This checkpoint will not complete at this task: tell the coordinator.
    Aborted(CheckpointId, AbortReason),
    /// This input ended.
    EndOfStream(usize),
}

/// Why an alignment was given up.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// A barrier of a newer checkpoint arrived first.
    Subsumed,
    /// Holding back more messages would pass the bound.
    BufferFull,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputState {
    /// Messages flow.
    Open,
    /// Delivered the barrier of the checkpoint being aligned (held in exactly-once).
    Arrived,
    /// Ended.
    Ended,
}

/// Aligns checkpoint barriers across the inputs of one task. See the module docs.
#[derive(Debug)]
pub struct BarrierAligner<M> {
    mode: CheckpointingMode,
    inputs: Vec<InputState>,
    /// The checkpoint being aligned.
    current: Option<CheckpointBarrier>,
    /// The newest checkpoint id seen on any input (aligned, completed or aborted).
    newest: Option<CheckpointId>,
    /// The newest checkpoint id each input delivered.
    last_on_input: Vec<Option<CheckpointId>>,
    held: VecDeque<(usize, Input<M>)>,
    max_buffered: usize,
    out: VecDeque<Aligned<M>>,
}

impl<M> BarrierAligner<M> {
    /// An aligner for `inputs` inputs, holding at most `max_buffered` messages.
    pub fn new(inputs: usize, mode: CheckpointingMode, max_buffered: usize) -> Self {
        BarrierAligner {
            mode,
            inputs: vec![InputState::Open; inputs],
            current: None,
            newest: None,
            last_on_input: vec![None; inputs],
            held: VecDeque::new(),
            max_buffered,
            out: VecDeque::new(),
        }
    }

    /// The checkpoint being aligned, if any.
    pub fn aligning(&self) -> Option<CheckpointId> {
        self.current.map(|b| b.id)
    }

    /// Messages held back right now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether every input ended (and everything was handed out).
    pub fn all_ended(&self) -> bool {
        self.inputs.iter().all(|s| *s == InputState::Ended) && self.held.is_empty()
    }

    /// Takes what `input` delivered. Afterwards, [`BarrierAligner::next_action`] yields
    /// what to do, in order. An error (a barrier out of order, input after the end) means
    /// the upstream is broken: the task should fail.
    pub fn push(&mut self, input: usize, what: Input<M>) -> Result<()> {
        let state = *self
            .inputs
            .get(input)
            .ok_or_else(|| CheckpointError::Barrier {
                input,
                reason: format!("no such input (the task has {})", self.inputs.len()),
            })?;
        if state == InputState::Ended {
            return Err(CheckpointError::Barrier {
                input,
                reason: "the input sent something after its end of stream".into(),
            });
        }
        if let Input::Barrier(b) = &what {
            self.check_order(input, b.id)?;
            self.last_on_input[input] = Some(b.id);
        }
        self.route(input, what);
        Ok(())
    }

    /// Holds or accepts an input's delivery (already checked).
    fn route(&mut self, input: usize, what: Input<M>) {
        if self.inputs[input] == InputState::Arrived && self.mode == CheckpointingMode::ExactlyOnce
        {
            if self.held.len() >= self.max_buffered {
                if let Some(current) = self.current {
                    self.abort(current.id, AbortReason::BufferFull, None);
                }
                return self.route(input, what);
            }
            self.held.push_back((input, what));
            return;
        }
        self.accept(input, what)
    }

    /// The next thing to do, if any.
    pub fn next_action(&mut self) -> Option<Aligned<M>> {
        self.out.pop_front()
    }

    fn check_order(&self, input: usize, id: CheckpointId) -> Result<()> {
        if let Some(last) = self.last_on_input[input]
            && id <= last
        {
            return Err(CheckpointError::Barrier {
                input,
                reason: if id == last {
                    format!("a second barrier for {id}")
                } else {
                    format!("barrier {id} after barrier {last}: barriers must increase")
                },
            });
        }
        Ok(())
    }

    /// Handles a delivery of an input that is not held.
    fn accept(&mut self, input: usize, what: Input<M>) {
        match what {
            Input::Message(m) => self.out.push_back(Aligned::Message(input, m)),
            Input::EndOfStream => {
                self.inputs[input] = InputState::Ended;
                self.out.push_back(Aligned::EndOfStream(input));
                self.maybe_complete();
            }
            Input::Barrier(b) => {
                match self.current {
                    Some(cur) if b.id == cur.id => {}
                    Some(cur) if b.id < cur.id => {
                        // An older checkpoint that was already given up at this task.
                        return;
                    }
                    Some(cur) => {
                        // The newer checkpoint is current before the held messages are
                        // replayed: a replayed barrier is judged against it.
                        self.abort(cur.id, AbortReason::Subsumed, Some(b));
                    }
                    None if self.newest.is_some_and(|n| b.id <= n) => {
                        // A checkpoint this task already aborted or completed.
                        return;
                    }
                    None => self.start(b),
                }
                if self.current.is_some_and(|c| c.id == b.id) {
                    self.inputs[input] = InputState::Arrived;
                    self.maybe_complete();
                }
            }
        }
    }

    fn start(&mut self, b: CheckpointBarrier) {
        self.current = Some(b);
        self.newest = Some(self.newest.map_or(b.id, |n| n.max(b.id)));
    }

    /// Completes the current alignment if every open input has its barrier.
    fn maybe_complete(&mut self) {
        let Some(cur) = self.current else { return };
        if self.inputs.contains(&InputState::Open) {
            return;
        }
        self.current = None;
        self.out.push_back(Aligned::Checkpoint(cur));
        self.release();
    }

    /// Gives up checkpoint `id`; `next` becomes the one being aligned.
    fn abort(&mut self, id: CheckpointId, reason: AbortReason, next: Option<CheckpointBarrier>) {
        self.current = None;
        if let Some(b) = next {
            self.start(b);
        }
        self.out.push_back(Aligned::Aborted(id, reason));
        self.release();
    }

    /// Reopens the inputs that were waiting and replays what they held, in order (a
    /// replayed barrier may start the next alignment, which holds again).
    fn release(&mut self) {
        for s in &mut self.inputs {
            if *s == InputState::Arrived {
                *s = InputState::Open;
            }
        }
        let held = std::mem::take(&mut self.held);
        for (input, what) in held {
            self.route(input, what);
        }
    }
}
