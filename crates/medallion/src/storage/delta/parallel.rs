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
}

impl<E: Send + 'static> Writers<E> {
    /// Starts `run` for each of `writers` on a task of its own, over the slices it is fed (its
    /// channel closes when the rows end).
    pub(super) fn start<W, F>(writers: Vec<W>, run: impl Fn(W, mpsc::Receiver<RecordBatch>) -> F) -> Writers<E>
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
        Writers { feeds, tasks, next: 0 }
    }

    /// Hands `batch`'s rows to the writers, a slice each in turn. False when a writer stopped:
    /// [`Writers::finish`] then says why.
    pub(super) async fn write(&mut self, batch: &RecordBatch) -> bool {
        for slice in slices(batch) {
            let feed = &self.feeds[self.next % self.feeds.len()];
            self.next += 1;
            if feed.send(slice).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends the rows and waits for every writer: the add actions of all their files, or the first
    /// error (`joined` makes one of a task that did not finish).
    pub(super) async fn finish(&mut self, joined: impl Fn(String) -> E) -> Result<Vec<Add>, E> {
        self.feeds.clear();
        let mut adds = Vec::new();
        let mut failed = None;
        // Every task is awaited, even after an error: none is left writing behind the caller.
        for task in std::mem::take(&mut self.tasks) {
            match task.await {
                Ok(Ok(written)) => adds.extend(written),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or_else(|| Some(joined(format!("a writer task stopped: {e}")))),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(adds),
        }
    }
}
