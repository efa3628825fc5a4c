//! Morsel-driven parallelism inside a subtask: a large batch is cut into morsels
//! (zero-copy slices) that a few threads process at once; the results come back in the
//! batch's order.

use sabot_core::RecordBatch;

use crate::Result;

/// When and how to split batches into morsels. Batches under
/// [`threshold_rows`](Self::threshold_rows) (and every batch with one thread) are
/// processed whole, on the subtask's thread.
///
/// The morsels of one batch run on scoped threads started for that batch: worth it for
/// batches whose processing takes milliseconds (hundreds of thousands of rows through an
/// expensive kernel or user function), not for the engine's usual 8,192-row batches,
/// hence the threshold.
///
/// ```
/// use std::sync::Arc;
/// use sabot_core::arrow::array::{Array, Int64Array};
/// use sabot_core::arrow::datatypes::{DataType, Field, Schema};
/// use sabot_core::RecordBatch;
/// use sabot_operators::Morsels;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
/// let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..100_000))]).unwrap();
/// let m = Morsels::new(2).threshold_rows(10_000).morsel_rows(30_000);
/// let sizes = m.run(&batch, |b| Ok(b.num_rows())).unwrap();
/// assert_eq!(sizes, vec![30_000, 30_000, 30_000, 10_000]); // in order
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Morsels {
    threads: usize,
    threshold_rows: usize,
    morsel_rows: usize,
}

impl Morsels {
    /// Up to `threads` threads per batch (at least 1); batches of 131,072 rows or more
    /// are split into morsels of 32,768 rows.
    pub fn new(threads: usize) -> Self {
        Morsels {
            threads: threads.max(1),
            threshold_rows: 1 << 17,
            morsel_rows: 1 << 15,
        }
    }

    /// Batches with fewer rows are processed whole.
    pub fn threshold_rows(mut self, rows: usize) -> Self {
        self.threshold_rows = rows;
        self
    }

    /// Rows per morsel (at least 1).
    pub fn morsel_rows(mut self, rows: usize) -> Self {
        self.morsel_rows = rows.max(1);
        self
    }

    /// Runs `f` over `batch`, whole or as morsels, returning the results in row order.
    /// The first error (in morsel order) is returned.
    pub fn run<T: Send>(
        &self,
        batch: &RecordBatch,
        f: impl Fn(RecordBatch) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let rows = batch.num_rows();
        if self.threads <= 1 || rows < self.threshold_rows || rows <= self.morsel_rows {
            return Ok(vec![f(batch.clone())?]);
        }
        let morsels: Vec<RecordBatch> = (0..rows)
            .step_by(self.morsel_rows)
            .map(|at| batch.slice(at, self.morsel_rows.min(rows - at)))
            .collect();
        let threads = self.threads.min(morsels.len());
        let f = &f;
        let morsels = &morsels;
        // Thread t takes morsels t, t + threads, ...; this thread is thread 0.
        let work = move |t: usize| -> Vec<(usize, Result<T>)> {
            (t..morsels.len())
                .step_by(threads)
                .map(|i| (i, f(morsels[i].clone())))
                .collect()
        };
        let mut results: Vec<(usize, Result<T>)> = std::thread::scope(|s| {
            let others: Vec<_> = (1..threads).map(|t| s.spawn(move || work(t))).collect();
            let mut all = work(0);
            for h in others {
                match h.join() {
                    Ok(r) => all.extend(r),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            all
        });
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }
}
