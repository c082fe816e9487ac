//! Building a gold model: run its SQL over the current silver/gold tables and overwrite the Delta
//! table in one commit. The commit records the versions of the tables it read and the SQL's hash;
//! when neither changed since, the model is up to date and nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

use crate::catalog;
use crate::error::{Error, Result};
use crate::orchestration::run::Now;
use crate::quality::audit::{Stage, audit};
use crate::project::{GoldModel, Project};
use crate::quality::gates::{GateResult, enforce};
use crate::silver::quarantine::{self, Reason, Rejected};
use crate::spec::Action;
use crate::storage::delta::{Table, WriteOptions};
use crate::storage::{Lake, Layer};

/// What building a model did.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    /// Model name.
    pub model: String,
    /// Whether it was rebuilt (false: its inputs and SQL were unchanged).
    pub rebuilt: bool,
    /// Rows in the table.
    pub rows: u64,
    /// Delta version after the build.
    pub version: Option<i64>,
    /// Versions of the tables it read.
    pub inputs: BTreeMap<String, Option<i64>>,
    /// Expectation results on the result rows (empty when up to date).
    pub expectations: Vec<GateResult>,
    /// Rows dropped by `drop` expectations into `quarantine/<model>`.
    pub dropped: u64,
    /// Milliseconds spent.
    pub duration_ms: u64,
}

/// Builds `model` unless it is up to date.
#[tracing::instrument(skip_all, fields(model = %model.name))]
pub async fn build(lake: &Lake, project: &Project, model: &GoldModel, run_id: &str, now: Now) -> Result<Build> {
    let t0 = Instant::now();
    let mut inputs = BTreeMap::new();
    for r in &model.refs {
        let layer = if project.gold.contains_key(r) { Layer::Gold } else { Layer::Silver };
        let t = Table::open(lake, layer, r).await?;
        inputs.insert(format!("{layer}/{r}"), t.version());
    }
    // The fingerprint covers the SQL and the expectations: changing either rebuilds the model.
    let mut hasher = Sha256::new();
    hasher.update(model.sql.as_bytes());
    for g in &model.gates {
        hasher.update(format!("\0{}\0{:?}\0{}", g.name, g.action, g.sql).as_bytes());
    }
    for c in &model.checks {
        hasher.update(format!("\0{}\0{:?}\0{}", c.name, c.action, c.definition).as_bytes());
    }
    let sql_hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let fingerprint = json!({ "inputs": inputs, "sql_sha256": sql_hash });
    let table = Table::open(lake, Layer::Gold, &model.name).await?;
    if table.exists() {
        let info = table.last_commit_info().await?;
        if info.get("medallion").and_then(|m| m.get("fingerprint")) == Some(&fingerprint) {
            let rows = table.count_rows().await?;
            return Ok(Build {
                model: model.name.clone(),
                rebuilt: false,
                rows,
                version: table.version(),
                inputs,
                expectations: Vec::new(),
                dropped: 0,
                duration_ms: ms(t0),
            });
        }
    }
    let ctx = catalog::session(lake, project).await?;
    let context = format!("gold model `{}` ({})", model.name, model.file.display());
    let df = ctx.sql(&model.sql).await.map_err(|e| Error::sql(&context, e))?;
    let batches = df.collect().await.map_err(|e| Error::sql(&context, e))?;
    // Write-audit-publish: expectations run on the result before anything is written.
    let (mut batches, mut dropped, mut expectations) = audit_rows(model, batches)?;
    if !model.checks.is_empty() {
        let schema = batches.first().map_or_else(|| model.schema.clone(), RecordBatch::schema);
        let audited = audit(&ctx, &model.checks, &schema, batches, Stage::Rows, now).await?;
        let source = format!("gold/{}", model.name);
        dropped.extend(quarantine::from_rows(&audited.removed, audited.reasons, &source, |_| model.file.display().to_string())?);
        expectations.extend(audited.results);
        batches = audited.kept;
    }
    enforce(&format!("gold/{}", model.name), &mut expectations)?;
    if !dropped.is_empty() {
        let q = Table::open(lake, Layer::Quarantine, &model.name).await?;
        q.write(vec![quarantine::to_batch(&dropped, now.timestamp_micros(), run_id)?], WriteOptions::default()).await?;
    }
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let batches = if batches.is_empty() {
        vec![RecordBatch::new_empty(model.schema.clone())]
    } else {
        batches
    };
    let metadata: HashMap<String, Value> =
        HashMap::from([("medallion".to_string(), json!({ "run_id": run_id, "fingerprint": fingerprint }))]);
    let table = table.write(batches, WriteOptions { overwrite: true, metadata, ..Default::default() }).await?;
    Ok(Build {
        model: model.name.clone(),
        rebuilt: true,
        rows,
        version: table.version(),
        inputs,
        dropped: dropped.len() as u64,
        expectations,
        duration_ms: ms(t0),
    })
}

/// Evaluates the model's row-level expectations on its result: returns the rows to publish, the rows
/// `drop` expectations removed (as dead-letter records), and every expectation's result.
fn audit_rows(model: &GoldModel, batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, Vec<Rejected>, Vec<GateResult>)> {
    let mut results: Vec<GateResult> = model.gates.iter().map(|g| g.result()).collect();
    if model.gates.is_empty() {
        return Ok((batches, Vec::new(), results));
    }
    let mut kept = Vec::with_capacity(batches.len());
    let mut dropped = Vec::new();
    for batch in batches {
        let n = batch.num_rows();
        let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); n];
        for (gate, result) in model.gates.iter().zip(results.iter_mut()) {
            let fails = gate.failing(&batch)?;
            result.rows_checked += n as u64;
            result.failing_rows += fails.iter().filter(|&&f| f).count() as u64;
            if gate.action == Action::Drop {
                for r in (0..n).filter(|&r| fails[r]) {
                    reasons[r].push(Reason::expectation(&gate.name, &gate.sql));
                }
            }
        }
        let drop_mask: Vec<bool> = reasons.iter().map(|r| !r.is_empty()).collect();
        if !drop_mask.iter().any(|&d| d) {
            kept.push(batch);
            continue;
        }
        let keep = BooleanArray::from(drop_mask.iter().map(|d| !d).collect::<Vec<_>>());
        kept.push(filter_record_batch(&batch, &keep).map_err(|e| Error::arrow("dropping gold rows", e))?);
        let gone = filter_record_batch(&batch, &BooleanArray::from(drop_mask)).map_err(|e| Error::arrow("dropping gold rows", e))?;
        let why: Vec<Vec<Reason>> = reasons.into_iter().filter(|r| !r.is_empty()).collect();
        dropped.extend(quarantine::from_rows(&[gone], why, &format!("gold/{}", model.name), |_| model.file.display().to_string())?);
    }
    Ok((kept, dropped, results))
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
