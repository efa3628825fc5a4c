//! Built-in sources and sinks: in-memory batches in, collected batches out.

use std::sync::{Arc, Mutex, PoisonError};

use sabot_core::{RecordBatch, SchemaRef};

use crate::{
    OperatorError, Result, Sink, SinkFactory, Source, SourceFactory, SourcePoll, TaskContext,
};

/// A source over batches held in memory: batch `i` is read by subtask `i % parallelism`,
/// so each subtask is one partition of the input, in order.
#[derive(Clone, Debug)]
pub struct VecSource {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
}

impl VecSource {
    /// A source emitting `batches`, all of schema `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        VecSource {
            schema,
            batches: Arc::new(batches),
        }
    }
}

impl SourceFactory for VecSource {
    fn name(&self) -> String {
        format!("vec_source({} batches)", self.batches.len())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Source>> {
        Ok(Box::new(VecSourceReader {
            batches: self.batches.clone(),
            next: ctx.subtask,
            step: ctx.parallelism.max(1),
        }))
    }
}

struct VecSourceReader {
    batches: Arc<Vec<RecordBatch>>,
    next: usize,
    step: usize,
}

impl Source for VecSourceReader {
    fn poll_next(&mut self) -> Result<SourcePoll> {
        match self.batches.get(self.next) {
            Some(b) => {
                self.next += self.step;
                Ok(SourcePoll::Batch(b.clone()))
            }
            None => Ok(SourcePoll::End),
        }
    }

    fn position(&mut self) -> Result<Option<Vec<u8>>> {
        let subtask = self.next % self.step;
        Ok(Some(chunk_position(self.step, subtask, self.next as u64)))
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let subtask = self.next % self.step;
        self.next = restore_chunk("vec_source", position, self.step, subtask)? as usize;
        Ok(())
    }
}

/// The position of a source whose subtask `s` of `p` emits chunks `s, s + p, s + 2p, ...`
/// ([`VecSource`], the demo's generator): `SBCK`, version 1 (u8), parallelism (u32),
/// subtask (u32), next chunk (u64), little-endian.
pub fn chunk_position(parallelism: usize, subtask: usize, next: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(21);
    b.extend_from_slice(b"SBCK");
    b.push(1);
    b.extend_from_slice(&(parallelism as u32).to_le_bytes());
    b.extend_from_slice(&(subtask as u32).to_le_bytes());
    b.extend_from_slice(&next.to_le_bytes());
    b
}

/// The next chunk of subtask `subtask` of `parallelism` in a [`chunk_position`]; an
/// error if the position is damaged or belongs to another subtask or parallelism
/// (these sources resume only at the parallelism they were checkpointed at).
pub fn restore_chunk(
    source: &str,
    position: &[u8],
    parallelism: usize,
    subtask: usize,
) -> Result<u64> {
    let bad = |reason: String| OperatorError::InvalidPlan {
        operator: source.into(),
        reason,
    };
    if position.len() != 21 || &position[..4] != b"SBCK" || position[4] != 1 {
        return Err(bad(
            "the checkpointed position is not a chunk position".into()
        ));
    }
    let u32_at = |i: usize| {
        u32::from_le_bytes([
            position[i],
            position[i + 1],
            position[i + 2],
            position[i + 3],
        ]) as usize
    };
    let (p, s) = (u32_at(5), u32_at(9));
    if p != parallelism || s != subtask {
        return Err(bad(format!(
            "the checkpoint holds subtask {s} of {p}; this source resumes only at the same \
             parallelism (restoring subtask {subtask} of {parallelism})"
        )));
    }
    let mut next = [0u8; 8];
    next.copy_from_slice(&position[13..21]);
    let next = u64::from_le_bytes(next);
    if next % parallelism.max(1) as u64 != subtask as u64 {
        return Err(bad(format!(
            "chunk {next} does not belong to subtask {subtask}"
        )));
    }
    Ok(next)
}

/// The batches a [`CollectSink`] received, from every subtask.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl Collected {
    /// Every batch received so far (order across subtasks is not defined).
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The number of rows received so far.
    pub fn num_rows(&self) -> usize {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    }
}

/// A sink that keeps every batch in memory, for tests and small results.
#[derive(Clone, Debug, Default)]
pub struct CollectSink {
    collected: Collected,
}

impl CollectSink {
    /// A sink and the handle to read what it collects.
    pub fn new() -> (Self, Collected) {
        let s = CollectSink::default();
        let c = s.collected.clone();
        (s, c)
    }
}

impl SinkFactory for CollectSink {
    fn name(&self) -> String {
        "collect".into()
    }

    fn create(&self, _input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

impl Sink for CollectSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.collected
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(batch);
        Ok(())
    }
}
