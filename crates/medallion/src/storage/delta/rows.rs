//! The rows a write or a merge takes, read in passes: held in memory, or read back from files a
//! caller spilled because they would not fit (a promotion of a large backlog). The keyed merge
//! reads its source twice: the key and order columns to index it, then every column to write the
//! winners, so a spilled source never has to be in memory at once.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use crate::error::{Error, Result};

/// One pass over some rows, batch by batch, in order.
pub type Pass = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// Rows that can be read several times, in the same order each time.
pub trait Rows: Send + Sync {
    /// Their schema.
    fn schema(&self) -> SchemaRef;
    /// How many there are.
    fn count(&self) -> u64;
    /// One pass over them, with only the columns numbered `projection` (None: every column).
    fn pass(&self, projection: Option<&[usize]>) -> Result<Pass>;
}

/// Rows held in memory.
#[derive(Debug, Clone)]
pub struct InMemory {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl InMemory {
    /// `batches` of `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> InMemory {
        InMemory { schema, batches }
    }
}

impl Rows for InMemory {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn count(&self) -> u64 {
        self.batches.iter().map(|b| b.num_rows() as u64).sum()
    }

    fn pass(&self, projection: Option<&[usize]>) -> Result<Pass> {
        let batches = self.batches.clone();
        match projection {
            None => Ok(Box::new(batches.into_iter().map(Ok))),
            Some(columns) => {
                let columns = columns.to_vec();
                Ok(Box::new(
                    batches.into_iter().map(move |b| {
                        b.project(&columns).map_err(|e| Error::arrow("projecting rows held in memory", e))
                    }),
                ))
            }
        }
    }
}

/// Every row of `rows`, in memory (what a caller does when a path needs the rows at once).
pub fn collect(rows: &dyn Rows) -> Result<Vec<RecordBatch>> {
    rows.pass(None)?.collect()
}

/// One pass over `rows` as a stream for a write, led by an empty batch so that a write of no rows
/// still has its schema.
pub fn stream(rows: &dyn Rows) -> Result<SendableRecordBatchStream> {
    let schema = rows.schema();
    let first = std::iter::once(Ok(RecordBatch::new_empty(Arc::clone(&schema))));
    let batches =
        first.chain(rows.pass(None)?.map(|b| b.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))));
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches))))
}
