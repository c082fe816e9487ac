//! Rows written to several Parquet files at once. Encoding a Parquet file is one core's work
//! (delta-rs's own write of an unpartitioned table feeds every row to one writer), so a write of
//! many rows starts a writer per core, each on a task of its own, and hands them slices in turn.
//! The rows land in no particular order across the files: for tables whose rows have none (silver,
//! whose merges already scatter them).

use std::future::Future;

use datafusion::arrow::array::RecordBatch;
use deltalake::kernel::Add;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Rows per slice handed to one writer.
pub(super) const SLICE_ROWS: usize = 65_536;

/// Rows worth a file of their own when written at once: fewer go to one file.
const FILE_ROWS: u64 = 100_000;

/// How many files `rows` rows are written to at once: one per [`FILE_ROWS`], up to one per core,
/// at least one.
pub(super) fn file_count(rows: u64) -> usize {
    usize::try_from(rows / FILE_ROWS).unwrap_or(usize::MAX).clamp(1, super::cores())
}

/// `batch` in slices of [`SLICE_ROWS`] rows (none when it is empty).
pub(super) fn slices(batch: &RecordBatch) -> impl Iterator<Item = RecordBatch> + '_ {
    (0..batch.num_rows()).step_by(SLICE_ROWS).map(|at| batch.slice(at, (batch.num_rows() - at).min(SLICE_ROWS)))
}

/// Writers on tasks of their own, fed slices of [`SLICE_ROWS`] rows in turn; each ends with the
/// add actions of the files it wrote, or its error `E`.
pub(super) struct Writers<E> {
    feeds: Vec<mpsc::Sender<RecordBatch>>,
    tasks: Vec<JoinHandle<Result<Vec<Add>, E>>>,
    next: usize,
    /// The error of a writer that stopped without one of its own (its task panicked or was
    /// cancelled), from what happened.
    stopped: fn(String) -> E,
}

impl<E: Send + 'static> Writers<E> {
    /// Starts `run` for each of `writers` on a task of its own, over the slices it is fed (its
    /// channel closes when the rows end); `stopped` words the error of a writer that ended without
    /// one.
    pub(super) fn start<W, F>(
        writers: Vec<W>,
        stopped: fn(String) -> E,
        run: impl Fn(W, mpsc::Receiver<RecordBatch>) -> F,
    ) -> Writers<E>
    where
        F: Future<Output = Result<Vec<Add>, E>> + Send + 'static,
    {
        let (mut feeds, mut tasks) = (Vec::with_capacity(writers.len()), Vec::with_capacity(writers.len()));
        for writer in writers {
            // Two slices wait per writer at most: rows are held as they are encoded, not ahead.
            let (feed, rows) = mpsc::channel::<RecordBatch>(2);
            feeds.push(feed);
            tasks.push(tokio::spawn(run(writer, rows)));
        }
        Writers { feeds, tasks, next: 0, stopped }
    }

    /// Hands `batch`'s rows to the writers, a slice each in turn. When a writer stopped, waits for
    /// them all and returns why it did.
    pub(super) async fn write(&mut self, batch: &RecordBatch) -> Result<(), E> {
        for slice in slices(batch) {
            let feed = &self.feeds[self.next % self.feeds.len()];
            self.next += 1;
            if feed.send(slice).await.is_err() {
                return Err(match self.finish().await {
                    Err(e) => e,
                    Ok(_) => (self.stopped)("it stopped before the rows ended".into()),
                });
            }
        }
        Ok(())
    }

    /// Ends the rows and waits for every writer: the add actions of all their files, or the first
    /// error.
    pub(super) async fn finish(&mut self) -> Result<Vec<Add>, E> {
        self.feeds.clear();
        let mut adds = Vec::new();
        let mut failed = None;
        // Every task is awaited, even after an error: none is left writing behind the caller.
        for task in std::mem::take(&mut self.tasks) {
            match task.await {
                Ok(Ok(written)) => adds.extend(written),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or_else(|| Some((self.stopped)(format!("its task ended: {e}")))),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(adds),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(n: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n as i64))]).expect("batch")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_row_goes_to_one_writer_in_slices_taken_in_turn() {
        let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let mut writers = Writers::start(
            counts.clone(),
            |why| why,
            |count, mut rows| async move {
                while let Some(batch) = rows.recv().await {
                    assert!(batch.num_rows() <= SLICE_ROWS);
                    count.fetch_add(batch.num_rows(), Ordering::Relaxed);
                }
                Ok(Vec::new())
            },
        );
        // 7 slices: 2 of 100,000 rows' 65,536 and 34,464, then 5, then none, then 3 whole ones and 1.
        for n in [100_000, 5, 0, 3 * SLICE_ROWS, 1] {
            writers.write(&rows(n)).await.expect("written");
        }
        assert!(writers.finish().await.expect("finished").is_empty());
        let got: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(got, vec![SLICE_ROWS + SLICE_ROWS + 1, 34_464 + SLICE_ROWS, 5 + SLICE_ROWS]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_fails_stops_the_write_with_its_error() {
        let mut writers = Writers::start(
            vec![0, 1],
            |why| why,
            |n, mut rows| async move {
                if n == 1 {
                    return Err("the disk is full".to_string());
                }
                while rows.recv().await.is_some() {}
                Ok(Vec::new())
            },
        );
        let mut stopped = None;
        for _ in 0..16 {
            if let Err(e) = writers.write(&rows(SLICE_ROWS)).await {
                stopped = Some(e);
                break;
            }
        }
        assert_eq!(stopped.as_deref(), Some("the disk is full"), "a send to the failed writer fails with its error");
    }
}
