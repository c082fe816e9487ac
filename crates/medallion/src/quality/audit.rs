//! Auditing a candidate with set- and table-level expectations: stage it, let `drop` checks
//! remove this run's failing rows, stage what remains, and evaluate the other checks on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;

use super::candidate::{WINNERS, new_winners, split, stage_append, stage_merge, stage_numbered, stage_rows};
use super::checks::{MergeFacts, THIS, TableCheck, count_this, evaluate, failing_ids};
use super::gates::GateResult;
use crate::error::{Error, Result};
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
        /// The published table's live rows, from its log (None: unknown): with them, the
        /// candidate's row count is known without reading the table.
        published_rows: Option<u64>,
        /// Per row of the audited batches, what the table holds for its key (None: unknown, the
        /// winners are found by a join; see `Table::published_orders`).
        published: Option<&'a [Option<Option<i64>>]>,
        /// The published table's newest `order_by` value (micros; inner None: no value), when
        /// known (see `Table::newest`): a freshness of `order_by` needs no scan then.
        newest: Option<Option<i64>>,
    },
    /// The rows are appended to `target` (an event table).
    Append {
        /// Registered name of the published table.
        target: &'a str,
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
    let reasons = reasons_by_id(&dropped_by);
    let ids: BTreeSet<i64> = reasons.keys().copied().collect();
    let (kept, removed) = split(batches, &ids)?;
    if !ids.is_empty() {
        // Fewer rows than `published` describes: the winners by a join.
        let stage = match stage {
            Stage::Merge { published: Some(_), target, keys, order_by, published_rows, newest } => {
                Stage::Merge { target, keys, order_by, published_rows, published: None, newest }
            }
            other => other,
        };
        staged(ctx, schema, &kept, stage).await?;
    }
    let mut results: Vec<GateResult> = dropped_by.into_iter().map(|(r, _)| r).collect();
    let facts = match stage {
        Stage::Merge { keys, published_rows, order_by, newest, .. } => {
            let rows = match published_rows {
                Some(n) => Some(n + new_winners(ctx).await?),
                None => None,
            };
            let newest = newest.map(|n| (order_by, n));
            Some(MergeFacts { keys, rows, winners: WINNERS, newest, winners_newest: &[] })
        }
        _ => None,
    };
    results.extend(evaluate(ctx, &others, now, facts.as_ref()).await?);
    Ok(Audited { kept, removed, reasons: reasons.into_values().collect(), results })
}

/// The outcome of auditing numbered rows ([`audit_numbered`]).
#[derive(Debug)]
pub struct AuditedIds {
    /// The ids of the rows `drop` checks removed, with the checks that removed each.
    pub dropped: BTreeMap<i64, Vec<Reason>>,
    /// One result per check.
    pub results: Vec<GateResult>,
}

/// Audits a whole candidate table that is not in memory: `rows` holds the columns of `schema`
/// plus [`super::checks::ROW_ID`] numbering its rows (e.g. files spilled by a rebuild). Rows
/// are read by the checks' queries, never collected; what comes back is the dropped rows' ids.
/// `keyed`: what is known of a candidate of one row per key, so that some checks need no scan.
pub async fn audit_numbered(
    ctx: &SessionContext,
    checks: &[TableCheck],
    schema: &SchemaRef,
    rows: Arc<dyn TableProvider>,
    now: Now,
    keyed: Option<Keyed<'_>>,
) -> Result<AuditedIds> {
    if checks.is_empty() {
        return Ok(AuditedIds { dropped: BTreeMap::new(), results: Vec::new() });
    }
    stage_numbered(ctx, schema, Arc::clone(&rows), &BTreeSet::new()).await?;
    let (droppers, others): (Vec<&TableCheck>, Vec<&TableCheck>) = checks.iter().partition(|c| c.drops());
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let count = if droppers.is_empty() { 0 } else { count_this(ctx).await? };
    let dropped_by = failing_ids(ctx, &droppers, &columns, count).await?;
    let dropped = reasons_by_id(&dropped_by);
    if !dropped.is_empty() {
        stage_numbered(ctx, schema, rows, &dropped.keys().copied().collect()).await?;
    }
    let mut results: Vec<GateResult> = dropped_by.into_iter().map(|(r, _)| r).collect();
    let facts = keyed.map(|k| MergeFacts {
        keys: k.keys,
        rows: Some(k.rows.saturating_sub(dropped.len() as u64)),
        winners: THIS,
        newest: None,
        // A dropped row may have been the newest.
        winners_newest: if dropped.is_empty() { k.newest } else { &[] },
    });
    results.extend(evaluate(ctx, &others, now, facts.as_ref()).await?);
    Ok(AuditedIds { dropped, results })
}

/// Audits a whole candidate of one row per value of its key while it is written, never read: from
/// what its writer counted (`keyed`). Every check must be [`TableCheck::known_without_rows`].
pub async fn audit_unread(checks: &[TableCheck], now: Now, keyed: Keyed<'_>) -> Result<Vec<GateResult>> {
    if let Some(c) = checks.iter().find(|c| !c.known_without_rows(keyed.keys)) {
        return Err(Error::Internal(format!("expectation `{}` needs to read the rows it audits", c.name)));
    }
    let checks: Vec<&TableCheck> = checks.iter().collect();
    let facts = MergeFacts {
        keys: keyed.keys,
        rows: Some(keyed.rows),
        winners: THIS,
        newest: None,
        winners_newest: keyed.newest,
    };
    // Nothing is registered: the facts answer every check.
    evaluate(&SessionContext::new(), &checks, now, Some(&facts)).await
}

/// What is known of a whole candidate of one row per value of its key (see [`audit_numbered`]):
/// `unique` on the key and `row_count` need no scan, nor, when no row is dropped, a `freshness` of
/// a column whose newest value is given.
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    /// The key columns.
    pub keys: &'a [String],
    /// The candidate's rows, before drops.
    pub rows: u64,
    /// Its newest value of some columns (micros; None: no value; see
    /// [`super::checks::newest_of`]), before drops.
    pub newest: &'a [(String, Option<i64>)],
}

/// Per dropped row id (ascending), the `drop` checks that removed it.
fn reasons_by_id(dropped_by: &[(GateResult, BTreeSet<i64>)]) -> BTreeMap<i64, Vec<Reason>> {
    let mut out: BTreeMap<i64, Vec<Reason>> = BTreeMap::new();
    for (r, ids) in dropped_by {
        for id in ids {
            out.entry(*id).or_default().push(Reason::expectation(&r.name, &r.definition));
        }
    }
    out
}

async fn staged(ctx: &SessionContext, schema: &SchemaRef, rows: &[RecordBatch], stage: Stage<'_>) -> Result<()> {
    match stage {
        Stage::Rows => stage_rows(ctx, schema, rows).await,
        Stage::Merge { target, keys, order_by, published, .. } => {
            stage_merge(ctx, schema, rows, target, keys, order_by, published).await
        }
        Stage::Append { target } => stage_append(ctx, schema, rows, target).await,
    }
}
