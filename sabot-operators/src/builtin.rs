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
            cursor: ChunkCursor::new(ctx.subtask, ctx.parallelism),
        }))
    }
}

struct VecSourceReader {
    batches: Arc<Vec<RecordBatch>>,
    cursor: ChunkCursor,
}

impl Source for VecSourceReader {
    fn poll_next(&mut self) -> Result<SourcePoll> {
        let next = usize::try_from(self.cursor.next_chunk()).unwrap_or(usize::MAX);
        match self.batches.get(next) {
            Some(b) => Ok(SourcePoll::Batch(b.clone())),
            None => Ok(SourcePoll::End),
        }
    }

    fn position(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(Some(self.cursor.position()))
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        self.cursor
            .restore(positions)
            .map_err(|reason| OperatorError::InvalidPlan {
                operator: "vec_source".into(),
                reason,
            })
    }
}

/// The progress of a source whose subtask `s` of `p` emits chunks `s, s + p, s + 2p, ...`
/// ([`VecSource`], the demo's generator), resumable at any parallelism.
///
/// A position is a list of layers `(p, s, next)`: chunks `c` with `c % p == s` and
/// `c < next` were emitted. A subtask's own layer says how far it got; layers inherited
/// from an earlier run at another parallelism say what that run emitted, and the new
/// subtasks skip those chunks. Encoding: `SBCK`, version 2 (u8), layer count (u32), then
/// per layer parallelism (u32), subtask (u32), next (u64); little-endian.
#[derive(Clone, Debug)]
pub struct ChunkCursor {
    subtask: u64,
    parallelism: u64,
    next: u64,
    done: Vec<(u64, u64, u64)>,
}

impl ChunkCursor {
    /// Subtask `subtask` of `parallelism`, from the start.
    pub fn new(subtask: usize, parallelism: usize) -> Self {
        ChunkCursor {
            subtask: subtask as u64,
            parallelism: parallelism.max(1) as u64,
            next: subtask as u64,
            done: Vec::new(),
        }
    }

    /// The next chunk to emit, skipping chunks an earlier run emitted. The caller stops
    /// at the first chunk beyond its input.
    pub fn next_chunk(&mut self) -> u64 {
        loop {
            let c = self.next;
            self.next += self.parallelism;
            if !self.done.iter().any(|&(p, s, n)| c % p == s && c < n) {
                return c;
            }
        }
    }

    /// The position for a checkpoint.
    pub fn position(&self) -> Vec<u8> {
        let mut layers = self.done.clone();
        layers.push((self.parallelism, self.subtask, self.next));
        let mut b = Vec::with_capacity(9 + layers.len() * 16);
        b.extend_from_slice(b"SBCK");
        b.push(2);
        b.extend_from_slice(&(layers.len() as u32).to_le_bytes());
        for (p, s, n) in layers {
            b.extend_from_slice(&(p as u32).to_le_bytes());
            b.extend_from_slice(&(s as u32).to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
        }
        b
    }

    /// Continues after `positions` (every subtask's of the checkpointed run).
    pub fn restore(&mut self, positions: &[Vec<u8>]) -> std::result::Result<(), String> {
        let mut layers: std::collections::BTreeMap<(u64, u64), u64> = Default::default();
        for pos in positions {
            if pos.len() < 9 || &pos[..4] != b"SBCK" || pos[4] != 2 {
                return Err("a checkpointed position is not a chunk position".into());
            }
            let count = u32::from_le_bytes([pos[5], pos[6], pos[7], pos[8]]) as usize;
            if pos.len() != 9 + count * 16 {
                return Err(format!(
                    "a chunk position of {} bytes for {count} layers",
                    pos.len()
                ));
            }
            for l in pos[9..].chunks_exact(16) {
                let p = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as u64;
                let s = u32::from_le_bytes([l[4], l[5], l[6], l[7]]) as u64;
                let mut n = [0u8; 8];
                n.copy_from_slice(&l[8..16]);
                if p == 0 || s >= p {
                    return Err(format!("a chunk layer for subtask {s} of {p}"));
                }
                let next = layers.entry((p, s)).or_insert(0);
                *next = (*next).max(u64::from_le_bytes(n));
            }
        }
        self.done = layers.into_iter().map(|((p, s), n)| (p, s, n)).collect();
        Ok(())
    }
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
