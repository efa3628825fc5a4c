//! A slow sink must slow the sources down, not let batches pile up in memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use sabot::StreamEnv;
use sabot::core::{RecordBatch, SchemaRef};
use sabot::operators::{Result, Sink, SinkFactory, Source, SourceFactory, SourcePoll, TaskContext};
use sabot_test_kit::{keyed_batches, keyed_schema};

/// Counts live heap bytes, to measure what the job holds.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only adds relaxed counters.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const ROWS_PER_BATCH: usize = 1_000;
const BATCHES_PER_SUBTASK: usize = 300;

/// Rows emitted by sources minus rows written by the sink, and its maximum.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicI64,
    max: AtomicI64,
}

impl InFlight {
    fn add(&self, n: i64) {
        let v = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.max.fetch_max(v, Ordering::SeqCst);
    }
}

/// Makes batches on the fly (nothing pre-generated), counting them as in flight.
#[derive(Debug, Clone)]
struct CountingSource(Arc<InFlight>);

struct CountingSourceTask {
    left: usize,
    seed: u64,
    flight: Arc<InFlight>,
}

impl SourceFactory for CountingSource {
    fn name(&self) -> String {
        "counting-source".into()
    }
    fn schema(&self) -> SchemaRef {
        keyed_schema()
    }
    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Source>> {
        Ok(Box::new(CountingSourceTask {
            left: BATCHES_PER_SUBTASK,
            seed: ctx.subtask as u64,
            flight: self.0.clone(),
        }))
    }
}

impl Source for CountingSourceTask {
    fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.left == 0 {
            return Ok(SourcePoll::End);
        }
        self.left -= 1;
        self.seed += 1000;
        let b = keyed_batches(self.seed, ROWS_PER_BATCH, ROWS_PER_BATCH, 64, 1, 1).remove(0);
        self.flight.add(b.num_rows() as i64);
        Ok(SourcePoll::Batch(b))
    }
}

/// Sleeps on every batch: a sink slower than the sources.
#[derive(Debug, Clone)]
struct SlowSink(Arc<InFlight>);

impl SinkFactory for SlowSink {
    fn name(&self) -> String {
        "slow-sink".into()
    }
    fn create(&self, _input: &SchemaRef, _ctx: &TaskContext) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

impl Sink for SlowSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        self.0.add(-(batch.num_rows() as i64));
        Ok(())
    }
}

#[test]
fn slow_sink_bounds_rows_in_flight_and_memory() {
    let parallelism = 2;
    let capacity = 2;
    let flight = Arc::new(InFlight::default());
    let env = StreamEnv::new();
    env.set_parallelism(parallelism)
        .set_queue_capacity(capacity);
    env.source(CountingSource(flight.clone()))
        .map(Ok)
        .key_by(&["key"])
        .sink(SlowSink(flight.clone()));
    let job = env.build().unwrap();

    let baseline = LIVE.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    job.run().unwrap();
    let peak_growth = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);

    let total = (parallelism * BATCHES_PER_SUBTASK * ROWS_PER_BATCH) as i64;
    assert_eq!(
        flight.now.load(Ordering::SeqCst),
        0,
        "every row reached the sink"
    );
    // Queues hold at most `capacity * parallelism` parts per downstream subtask; add one
    // batch in the hands of every source and sink thread.
    let queued_parts = (capacity * parallelism * parallelism) as i64;
    let bound = (queued_parts + 2 * parallelism as i64) * ROWS_PER_BATCH as i64;
    let max = flight.max.load(Ordering::SeqCst);
    assert!(
        max <= bound,
        "{max} rows were in flight at once (bound {bound}, total {total}): no backpressure"
    );
    // Each row is 24 bytes of column data; a batch with its arrays and hashes stays well
    // under 64 KiB, so the job must not hold more than a few MiB.
    let batch_bytes = 64 * 1024;
    let memory_bound = (bound as usize / ROWS_PER_BATCH) * batch_bytes + (2 << 20);
    assert!(
        peak_growth <= memory_bound,
        "heap grew by {peak_growth} bytes while the job ran (bound {memory_bound})"
    );
}
