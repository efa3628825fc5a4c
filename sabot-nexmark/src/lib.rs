//! Nexmark: the benchmark streaming engines are compared on (see `NEXMARK.md`).
//!
//! - [`Generator`]: persons, auctions and bids, reproducible from a seed and event by
//!   event (Beam's arithmetic over a counter-based random generator), built as Arrow
//!   batches;
//! - [`NexmarkSource`]: one kind of event as a source, split over source subtasks in
//!   chunks of event numbers, resumable from checkpoints at any parallelism;
//! - [`Query`]: queries q0-q5, q7, q8, q11 and q12 written with the `Stream` API.

mod generator;
mod queries;

pub use generator::{BASE_TIME_MS, EventKind, Generator, NexmarkConfig};
pub use queries::{OUT_OF_ORDERNESS, Query};

use sabot_core::{RecordBatch, SchemaRef};
use sabot_operators::{ChunkCursor, Source, SourceFactory, SourcePoll, TaskContext};

/// Event numbers per chunk: a source subtask's unit of work and of progress.
pub const CHUNK_EVENTS: u64 = 8_192;

/// The events of one kind as a source: subtask `s` of `p` generates chunks `s, s + p, ...`
/// of [`CHUNK_EVENTS`] event numbers, keeping the events of its kind.
#[derive(Clone, Debug)]
pub struct NexmarkSource {
    generator: Generator,
    kind: EventKind,
}

impl NexmarkSource {
    /// The `kind` events of `config`.
    pub fn new(config: NexmarkConfig, kind: EventKind) -> Self {
        NexmarkSource {
            generator: Generator::new(config),
            kind,
        }
    }
}

impl SourceFactory for NexmarkSource {
    fn name(&self) -> String {
        format!("nexmark_{:?}", self.kind).to_lowercase()
    }

    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn create(&self, ctx: &TaskContext) -> sabot_operators::Result<Box<dyn Source>> {
        self.generator.config().validate()?;
        Ok(Box::new(NexmarkSubtask {
            generator: self.generator.clone(),
            kind: self.kind,
            cursor: ChunkCursor::new(ctx.subtask, ctx.parallelism),
        }))
    }
}

struct NexmarkSubtask {
    generator: Generator,
    kind: EventKind,
    cursor: ChunkCursor,
}

impl NexmarkSubtask {
    fn next_batch(&mut self) -> sabot_operators::Result<Option<RecordBatch>> {
        let events = self.generator.config().events;
        loop {
            let start = self.cursor.next_chunk().saturating_mul(CHUNK_EVENTS);
            if start >= events {
                return Ok(None);
            }
            let b = self
                .generator
                .batch(self.kind, start..start.saturating_add(CHUNK_EVENTS))?;
            if b.num_rows() > 0 {
                return Ok(Some(b));
            }
        }
    }
}

impl Source for NexmarkSubtask {
    fn poll_next(&mut self) -> sabot_operators::Result<SourcePoll> {
        Ok(match self.next_batch()? {
            Some(b) => SourcePoll::Batch(b),
            None => SourcePoll::End,
        })
    }

    fn position(&mut self) -> sabot_operators::Result<Option<Vec<u8>>> {
        Ok(Some(self.cursor.position()))
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> sabot_operators::Result<()> {
        self.cursor.restore(positions).map_err(|reason| {
            sabot_operators::OperatorError::InvalidPlan {
                operator: "nexmark".into(),
                reason,
            }
        })
    }
}
