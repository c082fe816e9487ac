//! A promotion's rejects, written to its dead letter while its merge works.
//!
//! A promotion commits its dead letter before silver: a resumed intent skips a dead letter its
//! rejects already landed in, so that commit must never follow silver's. Nothing else waits for
//! it: the dead letter is written on a task of its own while the merge reads silver's keys and
//! writes its files, and silver's commit waits at the [`Gate`] the task opens once the dead letter
//! landed. A dead letter that fails keeps the gate shut; the promotion reports its error.

use std::collections::HashMap;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

use super::promote::Promotion;
use super::spill::Spilled;
use crate::error::{Error, Result};
use crate::quality::quarantine::{self, Rejected};
use crate::runtime::{NodeStage, faults, ms};
use crate::storage::delta::{Gate, Rows, Table, Txn, WriteOptions};
use crate::storage::{Lake, Layer};

/// The rejected records of a promotion.
pub(crate) enum Rejects {
    /// In memory, with when and in which run they failed.
    Records { rows: Vec<Rejected>, failed_at: i64, run_id: String },
    /// Dead-letter rows spilled to scratch files (the files must outlive the writing).
    Spilled(Spilled),
}

impl Rejects {
    fn is_empty(&self) -> bool {
        match self {
            Rejects::Records { rows, .. } => rows.is_empty(),
            Rejects::Spilled(rows) => rows.count() == 0,
        }
    }
}

/// A promotion's dead letter: its rejects, written to `table` in one commit carrying `txn` (none
/// when nothing is rejected and nothing is replaced, or when this txn already landed).
pub(crate) struct DeadLetter {
    /// The promotion's node (`silver/<table>`), for its fault points.
    node: String,
    /// The dead-letter table.
    table: Table,
    rejects: Rejects,
    /// Replace the table's content (a rebuild's dead letter).
    replace: bool,
    txn: Txn,
    meta: HashMap<String, serde_json::Value>,
    /// What its commit waits for besides (see [`DeadLetter::held`]).
    held: Gate,
}

/// A dead letter being written.
pub(crate) struct Writing {
    node: String,
    /// The table's version before.
    before: Option<i64>,
    task: tokio::task::JoinHandle<Result<(Option<i64>, u64)>>,
}

impl DeadLetter {
    /// The dead letter of silver `table`'s promotion (`node`): `rejects`, committed with `txn`
    /// and `meta`; a `rebuild`'s replaces the content of an existing one (with nothing, when
    /// nothing is rejected now).
    pub(crate) async fn open(
        lake: &Lake,
        (table, node): (&str, &str),
        rejects: Rejects,
        rebuild: bool,
        (txn, meta): (Txn, HashMap<String, serde_json::Value>),
    ) -> Result<DeadLetter> {
        let q = Table::open(lake, Layer::Quarantine, table).await?;
        let replace = rebuild && q.exists();
        Ok(DeadLetter { node: node.to_string(), replace, table: q, rejects, txn, meta, held: Gate::open() })
    }

    /// Its commit also waits for `gate` (the verdict of an audit made as silver's rows are
    /// written): a gate that fails stops it, and so silver's.
    pub(crate) fn held(self, gate: Gate) -> DeadLetter {
        DeadLetter { held: gate, ..self }
    }

    /// Writes it on a task of its own: returns the writing, and the gate silver's commit waits at,
    /// which opens once the dead letter landed (then checks the node's `merge` fault point).
    pub(crate) fn spawn(self) -> (Writing, Gate) {
        let (node, before) = (self.node.clone(), self.table.version());
        let (landed, on_landing) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let t = Instant::now();
            let written = self.write().await;
            let _ = landed.send(written.is_ok());
            Ok((written?, ms(t)))
        });
        let gated = node.clone();
        let gate = Gate::after(async move {
            match on_landing.await {
                Ok(true) => faults::check(&gated, "merge"),
                // The promotion reports the writing's own error.
                _ => Err(Error::Internal(format!("{gated}: the dead letter did not land"))),
            }
        });
        (Writing { node, before, task }, gate)
    }

    async fn write(self) -> Result<Option<i64>> {
        let DeadLetter { node, table, rejects, replace, txn, meta, held } = self;
        faults::check(&node, "dead_letter")?;
        if rejects.is_empty() && !replace {
            // Nothing to commit, but what holds it still decides whether silver commits.
            held.pass().await?;
            return Ok(None);
        }
        if table.txn_version(&txn.app_id).await?.unwrap_or(0) >= txn.version {
            return Ok(None);
        }
        let write = WriteOptions { gate: held, ..quarantine::write_options(txn, meta, replace) };
        let written = match rejects {
            Rejects::Records { rows, failed_at, run_id } => {
                let batches = quarantine::to_batches(&rows, failed_at, &run_id)?;
                let batches =
                    if batches.is_empty() { vec![RecordBatch::new_empty(quarantine::schema())] } else { batches };
                table.write(batches, write).await?
            }
            Rejects::Spilled(rows) => table.write_from(&rows, write).await?,
        };
        Ok(written.version())
    }
}

impl Writing {
    /// Waits until it ends, and records in `p` the dead letter's version and the time it took
    /// (ms, `dead_letter`); its error when it failed.
    pub(crate) async fn landed(self, p: &mut Promotion) -> Result<()> {
        let (version, took) = match self.task.await {
            Ok(landed) => landed?,
            Err(e) => return Err(Error::Internal(format!("{}: the dead letter's task: {e}", self.node))),
        };
        p.quarantine_version = version.or(self.before);
        p.timings_ms.insert(NodeStage::DeadLetter, took);
        Ok(())
    }
}
