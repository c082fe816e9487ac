//! Promoting pending bronze batches of a source into a silver table, exactly once.
//!
//! Accounting is exact per promotion: `read = inserted + updated + superseded + rejected`, where
//! superseded counts valid records that lost to a newer one (in the same run, or already in
//! silver). A mismatch fails the run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::json;

use super::contract::Contract;
use super::dedup::latest_per_key;
use super::quarantine::{self, Reason, Rejected};
use super::validate::{Origin, validate};
use crate::bronze::batches::{self, BatchFile};
use crate::bronze::decode::decode_batch;
use crate::catalog;
use crate::error::{Error, Result};
use crate::orchestration::ledger::{self, Intent};
use crate::orchestration::run::Now;
use crate::project::{Project, SilverTable};
use crate::quality::audit::{Stage, audit};
use crate::quality::gates::{GateResult, enforce};
use crate::storage::delta::{Table, Txn, Upsert, WriteOptions};
use crate::storage::{Lake, Layer};

/// Rows per batch written to Delta.
const WRITE_BATCH_ROWS: usize = 131_072;

/// What one promotion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Promotion {
    /// Silver table.
    pub table: String,
    /// Ledger number (txn version) of the promotion.
    pub intent: i64,
    /// Whether it resumed an interrupted promotion.
    pub resumed: bool,
    /// Batches covered.
    pub batches: usize,
    /// Bronze records read (rows and unreadable lines).
    pub read: u64,
    /// New keys written.
    pub inserted: u64,
    /// Existing keys replaced by a newer record.
    pub updated: u64,
    /// Valid records that lost to a newer record.
    pub superseded: u64,
    /// Records sent to the dead letter.
    pub rejected: u64,
    /// Silver version after the commit.
    pub silver_version: Option<i64>,
    /// Quarantine version after this promotion's commit (if any rejects).
    pub quarantine_version: Option<i64>,
    /// Expectation results over the promotion's candidate rows.
    pub expectations: Vec<GateResult>,
    /// Stage timings in milliseconds.
    pub timings_ms: HashMap<&'static str, u64>,
}

impl Promotion {
    /// Rows promoted (inserted + updated).
    pub fn promoted(&self) -> u64 {
        self.inserted + self.updated
    }
}

/// Settings of a promotion.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// Run id, recorded in intents and the dead letter.
    pub run_id: String,
    /// The run's clock: failure time of dead-letter rows, `now` of freshness expectations.
    pub now: Now,
    /// Files decoded in parallel.
    pub threads: usize,
}

/// Promotes every pending batch of `table`'s source (resuming an interrupted promotion first).
#[tracing::instrument(skip_all, fields(table = %table.name))]
pub async fn promote(lake: &Lake, project: &Project, table: &SilverTable, opts: &PromoteOptions) -> Result<Vec<Promotion>> {
    let app = ledger::app_id(&table.name);
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let mut committed = silver.txn_version(&app).await?.unwrap_or(0);
    let intents = ledger::intents(lake, &table.name).await?;
    if let Some((&last, _)) = intents.last_key_value()
        && last > committed + 1
    {
        return Err(Error::InconsistentState {
            table: format!("silver/{}", table.name),
            message: format!(
                "the ledger records {last} promotions but the table has only {committed} (was the table deleted or restored by hand?)"
            ),
            hint: format!(
                "to rebuild silver/{t} from bronze, delete silver/{t}, quarantine/{t} and _medallion/ledger/silver/{t} together",
                t = table.name
            ),
        });
    }
    let mut done: HashSet<String> = intents
        .range(..=committed)
        .flat_map(|(_, i)| i.batches.iter().map(|b| b.path.clone()))
        .collect();
    let mut out = Vec::new();
    if let Some(open) = intents.get(&(committed + 1)) {
        tracing::info!(intent = open.version, "resuming an interrupted promotion");
        out.push(run_intent(lake, project, table, open, true, opts).await?);
        done.extend(open.batches.iter().map(|b| b.path.clone()));
        committed += 1;
    }
    let pending: Vec<BatchFile> =
        batches::list(lake, &table.source).await?.into_iter().filter(|b| !done.contains(&b.path)).collect();
    if pending.is_empty() {
        return Ok(out);
    }
    let pending = batches::order_by_ingestion(lake, pending).await?;
    let intent = Intent { version: committed + 1, run_id: opts.run_id.clone(), batches: pending };
    ledger::record(lake, &table.name, &intent).await?;
    out.push(run_intent(lake, project, table, &intent, false, opts).await?);
    Ok(out)
}

/// What decoding and validating one file gave.
struct FileResult {
    valid: Vec<RecordBatch>,
    rejected: Vec<Rejected>,
    read: u64,
    gate_counts: Vec<(u64, u64)>,
}

async fn run_intent(lake: &Lake, project: &Project, table: &SilverTable, intent: &Intent, resumed: bool, opts: &PromoteOptions) -> Result<Promotion> {
    let mut p = Promotion { table: table.name.clone(), intent: intent.version, resumed, batches: intent.batches.len(), ..Default::default() };
    let app = ledger::app_id(&table.name);
    let txn = Txn { app_id: app.clone(), version: intent.version };
    let t0 = Instant::now();

    // Decode and validate the batches, several files at once; results keep batch order.
    let contract = Arc::clone(&table.contract);
    let results: Vec<FileResult> = futures::stream::iter(intent.batches.iter().cloned())
        .map(|file| {
            let contract = Arc::clone(&contract);
            let source = table.source.clone();
            async move {
                let gz = lake.get(&file.path).await?.ok_or_else(|| Error::Internal(format!("bronze batch {} vanished", file.path)))?;
                tokio::task::spawn_blocking(move || process_file(&contract, &gz, &file, &source))
                    .await
                    .map_err(|e| Error::Internal(format!("validation task failed: {e}")))?
            }
        })
        .buffered(opts.threads.max(1))
        .try_collect()
        .await?;
    p.timings_ms.insert("read_validate", ms(t0));

    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    p.expectations = table.contract.gates.iter().map(|g| g.result()).collect();
    for r in results {
        p.read += r.read;
        valid.extend(r.valid);
        rejected.extend(r.rejected);
        for (res, (checked, failing)) in p.expectations.iter_mut().zip(r.gate_counts) {
            res.rows_checked += checked;
            res.failing_rows += failing;
        }
    }
    // Write-audit-publish: a failed `fail` gate stops here, before any commit. The intent stays
    // open, so the next run retries exactly these batches (after the data or the rule is fixed).
    let node = format!("silver/{}", table.name);
    enforce(&node, &mut p.expectations)?;
    let contract_rejected = rejected.len() as u64;
    let valid_rows: u64 = valid.iter().map(|b| b.num_rows() as u64).sum();
    if valid_rows + contract_rejected != p.read {
        p.rejected = contract_rejected;
        return Err(accounting(&p));
    }

    let t2 = Instant::now();
    let schema = table.contract.schema.clone();
    let deduped = latest_per_key(&schema, &valid, &table.keys, &table.order_by, WRITE_BATCH_ROWS)?;
    drop(valid);
    p.timings_ms.insert("dedup", ms(t2));

    // Set- and table-level expectations see the table as the merge would leave it.
    let t_audit = Instant::now();
    let file_of = |batch_id: &str| {
        intent.batches.iter().find(|b| b.batch_id == batch_id).map(|b| b.path.clone()).unwrap_or_default()
    };
    let (deduped, table_dropped) = if table.checks.is_empty() {
        (deduped, 0)
    } else {
        let ctx = catalog::session(lake, project).await?;
        let target = format!("silver.{}", table.name);
        let stage = Stage::Merge { target: &target, keys: &table.keys, order_by: &table.order_by };
        let audited = audit(&ctx, &table.checks, &schema, deduped, stage, opts.now).await?;
        p.expectations.extend(audited.results);
        enforce(&node, &mut p.expectations)?;
        let dropped = quarantine::from_rows(&audited.removed, audited.reasons, &table.source, file_of)?;
        let n = dropped.len() as u64;
        rejected.extend(dropped);
        (audited.kept, n)
    };
    p.rejected = rejected.len() as u64;
    let unique: u64 = deduped.iter().map(|b| b.num_rows() as u64).sum();
    if !table.checks.is_empty() {
        p.timings_ms.insert("audit", ms(t_audit));
    }

    // Dead letter first: it is skipped on resume if this intent's rejects already landed.
    let t1 = Instant::now();
    let q = Table::open(lake, Layer::Quarantine, &table.name).await?;
    p.quarantine_version = q.version();
    if !rejected.is_empty() && q.txn_version(&app).await?.unwrap_or(0) < intent.version {
        let batch = quarantine::to_batch(&rejected, opts.now.timestamp_micros(), &opts.run_id)?;
        let q = q
            .write(vec![batch], WriteOptions { txn: Some(txn.clone()), metadata: commit_meta(&opts.run_id, intent), ..Default::default() })
            .await?;
        p.quarantine_version = q.version();
    }
    p.timings_ms.insert("dead_letter", ms(t1));

    let t3 = Instant::now();
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let silver = if !silver.exists() {
        p.inserted = unique;
        silver
            .write(deduped, WriteOptions { partition_by: table.partition_by.clone(), txn: Some(txn), metadata: commit_meta(&opts.run_id, intent), overwrite: false })
            .await?
    } else if unique == 0 {
        // Nothing valid: still record the intent as done, in an empty commit.
        silver
            .write(vec![RecordBatch::new_empty(schema.clone())], WriteOptions { txn: Some(txn), metadata: commit_meta(&opts.run_id, intent), ..Default::default() })
            .await?
    } else {
        let bounds = key_bounds(&deduped, table);
        let ctx = SessionContext::new();
        let source = ctx.read_batches(deduped).map_err(|e| Error::sql("merge source", e))?;
        let (silver, metrics) = silver
            .upsert(
                source,
                Upsert {
                    keys: table.keys.clone(),
                    order_by: table.order_by.clone(),
                    columns,
                    bounds,
                    txn: Some(txn),
                    metadata: commit_meta(&opts.run_id, intent),
                },
            )
            .await?;
        if metrics.num_source_rows as u64 != unique {
            return Err(Error::Internal(format!("merge read {} source rows, expected {unique}", metrics.num_source_rows)));
        }
        p.inserted = metrics.num_target_rows_inserted as u64;
        p.updated = metrics.num_target_rows_updated as u64;
        silver
    };
    p.silver_version = silver.version();
    p.timings_ms.insert("merge", ms(t3));
    p.superseded = valid_rows.saturating_sub(table_dropped).saturating_sub(p.promoted());
    if p.read != p.inserted + p.updated + p.superseded + p.rejected || p.promoted() > unique {
        return Err(accounting(&p));
    }
    Ok(p)
}

fn accounting(p: &Promotion) -> Error {
    Error::Accounting { table: p.table.clone(), read: p.read, promoted: p.promoted(), superseded: p.superseded, rejected: p.rejected }
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn commit_meta(run_id: &str, intent: &Intent) -> HashMap<String, serde_json::Value> {
    HashMap::from([(
        "medallion".to_string(),
        json!({ "run_id": run_id, "intent": intent.version, "batches": intent.batches.iter().map(|b| &b.batch_id).collect::<Vec<_>>() }),
    )])
}

/// For a single integer key, `target.k BETWEEN min AND max` of the source: lets the merge skip
/// target files whose key range cannot match.
fn key_bounds(batches: &[RecordBatch], table: &SilverTable) -> Vec<String> {
    let [key] = table.keys.as_slice() else { return Vec::new() };
    let Ok(idx) = table.contract.schema.index_of(key) else { return Vec::new() };
    if table.contract.schema.field(idx).data_type() != &DataType::Int64 {
        return Vec::new();
    }
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for b in batches {
        let a = b.column(idx).as_primitive::<Int64Type>();
        if a.null_count() == a.len() {
            continue;
        }
        if let (Some(min), Some(max)) = (datafusion::arrow::compute::min(a), datafusion::arrow::compute::max(a)) {
            lo = lo.min(min);
            hi = hi.max(max);
        }
    }
    if lo > hi { Vec::new() } else { vec![format!("target.{key} >= {lo}"), format!("target.{key} <= {hi}")] }
}

/// Decodes and validates one bronze file (blocking).
fn process_file(contract: &Contract, gz: &[u8], file: &BatchFile, source: &str) -> Result<FileResult> {
    let origin = Origin {
        batch_id: file.batch_id.clone(),
        source: source.to_string(),
        file: file.path.clone(),
        ingested_at: file.ingested_at.clone(),
    };
    let wanted = contract.column_names();
    let mut out = FileResult { valid: Vec::new(), rejected: Vec::new(), read: 0, gate_counts: vec![(0, 0); contract.gates.len()] };
    let bad = decode_batch(gz, &wanted, |chunk| {
        out.read += chunk.rows() as u64;
        let v = validate(contract, &chunk, &origin)?;
        if v.valid.num_rows() > 0 {
            out.valid.push(v.valid);
        }
        out.rejected.extend(v.rejected);
        for (total, (checked, failing)) in out.gate_counts.iter_mut().zip(v.gate_counts) {
            total.0 += checked;
            total.1 += failing;
        }
        Ok(())
    })?;
    let file_ts = origin.ingested_at.as_deref().and_then(super::coerce::parse_timestamp);
    out.read += bad.len() as u64;
    for b in bad {
        out.rejected.push(Rejected {
            raw: b.raw,
            reasons: vec![Reason { column: None, rule: b.rule.to_string(), message: b.message }],
            batch_id: origin.batch_id.clone(),
            source: source.to_string(),
            source_file: origin.file.clone(),
            line: b.line,
            ingested_at: file_ts,
        });
    }
    Ok(out)
}
