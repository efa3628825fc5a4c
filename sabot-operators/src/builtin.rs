//! Built-in sources and sinks: in-memory batches in, collected batches out.

use std::sync::{Arc, Mutex, PoisonError};

use sabot_core::{RecordBatch, SchemaRef};

use crate::{Result, Sink, SinkFactory, Source, SourceFactory, SourcePoll, TaskContext};

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
