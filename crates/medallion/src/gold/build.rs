//! Building a gold model: run its SQL over the current silver/gold tables and overwrite the Delta
//! table in one commit. The commit records the versions of the tables it read and the SQL's hash;
//! when neither changed since, the model is up to date and nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::error::{Error, Result};
use crate::project::{GoldModel, Project};
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
    /// Milliseconds spent.
    pub duration_ms: u64,
}

/// Builds `model` unless it is up to date.
#[tracing::instrument(skip_all, fields(model = %model.name))]
pub async fn build(lake: &Lake, project: &Project, model: &GoldModel, run_id: &str) -> Result<Build> {
    let t0 = Instant::now();
    let mut inputs = BTreeMap::new();
    for r in &model.refs {
        let layer = if project.gold.contains_key(r) { Layer::Gold } else { Layer::Silver };
        let t = Table::open(lake, layer, r).await?;
        inputs.insert(format!("{layer}/{r}"), t.version());
    }
    let sql_hash: String = Sha256::digest(model.sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let fingerprint = json!({ "inputs": inputs, "sql_sha256": sql_hash });
    let table = Table::open(lake, Layer::Gold, &model.name).await?;
    if table.exists() {
        let info = table.last_commit_info().await?;
        if info.get("medallion").and_then(|m| m.get("fingerprint")) == Some(&fingerprint) {
            let ctx = catalog::session(lake, project).await?;
            let rows = catalog::count_rows(&ctx, Layer::Gold, &model.name).await?;
            return Ok(Build { model: model.name.clone(), rebuilt: false, rows, version: table.version(), inputs, duration_ms: ms(t0) });
        }
    }
    let ctx = catalog::session(lake, project).await?;
    let context = format!("gold model `{}` ({})", model.name, model.file.display());
    let df = ctx.sql(&model.sql).await.map_err(|e| Error::sql(&context, e))?;
    let batches = df.collect().await.map_err(|e| Error::sql(&context, e))?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let batches = if batches.is_empty() {
        vec![datafusion::arrow::array::RecordBatch::new_empty(model.schema.clone())]
    } else {
        batches
    };
    let metadata: HashMap<String, Value> =
        HashMap::from([("medallion".to_string(), json!({ "run_id": run_id, "fingerprint": fingerprint }))]);
    let table = table.write(batches, WriteOptions { overwrite: true, metadata, ..Default::default() }).await?;
    Ok(Build { model: model.name.clone(), rebuilt: true, rows, version: table.version(), inputs, duration_ms: ms(t0) })
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
