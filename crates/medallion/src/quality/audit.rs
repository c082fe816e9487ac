//! Auditing a candidate with set- and table-level expectations: stage it, let `drop` checks
//! remove this run's failing rows, stage what remains, and evaluate the other checks on it.

use std::collections::BTreeSet;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;

use super::candidate::{split, stage_merge, stage_rows};
use super::checks::{TableCheck, count_this, evaluate, failing_ids};
use super::gates::GateResult;
use crate::error::Result;
use crate::quality::quarantine::Reason;
use crate::runtime::Now;

/// What the candidate is.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// The rows replace the table (gold).
    Rows,
    /// The rows are merged into `target` by `keys`, newer by `order_by` (silver).
    Merge {
        /// Registered name of the published table.
        target: &'a str,
        /// Key columns.
        keys: &'a [String],
        /// Ordering column.
        order_by: &'a str,
    },
}

/// The outcome of an audit.
#[derive(Debug)]
pub struct Audited {
    /// The rows to publish.
    pub kept: Vec<RecordBatch>,
    /// The rows `drop` checks removed.
    pub removed: Vec<RecordBatch>,
    /// Per removed row (in order), the checks that removed it.
    pub reasons: Vec<Vec<Reason>>,
    /// One result per check.
    pub results: Vec<GateResult>,
}

/// Audits `batches` (of `schema`) staged as `stage` in `ctx` (a catalog session).
pub async fn audit(
    ctx: &SessionContext,
    checks: &[TableCheck],
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    stage: Stage<'_>,
    now: Now,
) -> Result<Audited> {
    if checks.is_empty() {
        return Ok(Audited { kept: batches, removed: Vec::new(), reasons: Vec::new(), results: Vec::new() });
    }
    staged(ctx, schema, &batches, stage).await?;
    let (droppers, others): (Vec<&TableCheck>, Vec<&TableCheck>) = checks.iter().partition(|c| c.drops());
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let count = if droppers.is_empty() { 0 } else { count_this(ctx).await? };
    let dropped_by = failing_ids(ctx, &droppers, &columns, count).await?;
    let ids: BTreeSet<i64> = dropped_by.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
    let (kept, removed) = split(batches, &ids)?;
    if !ids.is_empty() {
        staged(ctx, schema, &kept, stage).await?;
    }
    let reasons = ids
        .iter()
        .map(|id| {
            dropped_by
                .iter()
                .filter(|(_, ids)| ids.contains(id))
                .map(|(r, _)| Reason::expectation(&r.name, &r.definition))
                .collect()
        })
        .collect();
    let mut results: Vec<GateResult> = dropped_by.into_iter().map(|(r, _)| r).collect();
    results.extend(evaluate(ctx, &others, now).await?);
    Ok(Audited { kept, removed, reasons, results })
}

async fn staged(ctx: &SessionContext, schema: &SchemaRef, rows: &[RecordBatch], stage: Stage<'_>) -> Result<()> {
    match stage {
        Stage::Rows => stage_rows(ctx, schema, rows).await,
        Stage::Merge { target, keys, order_by } => stage_merge(ctx, schema, rows, target, keys, order_by).await,
    }
}
