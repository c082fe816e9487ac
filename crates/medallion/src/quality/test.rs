//! `medallion test`: every expectation evaluated on the published tables (like `dbt test`).
//!
//! Each expectation runs as SQL over the table as readers see it:
//! `SELECT count(*) … WHERE NOT coalesce((<expectation>), false)`, plus a few sample rows.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::gates::{Gate, GateResult};
use crate::catalog;
use crate::error::{Error, Result};
use crate::project::Project;
use crate::storage::Lake;

/// Sample failing rows kept per expectation.
const SAMPLES: usize = 3;

/// One expectation's outcome on a published table.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// `silver/<table>` or `gold/<model>`.
    pub node: String,
    /// Counts and action.
    pub result: GateResult,
    /// A few failing rows, as JSON objects.
    pub samples: Vec<serde_json::Value>,
}

/// Tests every expectation of the tables whose node (`silver/orders`) or name (`orders`) is in
/// `select` (all when empty).
pub async fn test(lake: &Lake, project: &Project, select: &[String]) -> Result<Vec<TestOutcome>> {
    let ctx = catalog::session(lake, project).await?;
    let silver = project.silver.values().map(|t| (format!("silver/{}", t.name), format!("silver.{}", t.name), &t.contract.gates));
    let gold = project.gold.values().map(|m| (format!("gold/{}", m.name), format!("gold.{}", m.name), &m.gates));
    let mut out = Vec::new();
    for (node, table, gates) in silver.chain(gold) {
        let name = node.split_once('/').map_or(node.as_str(), |(_, n)| n);
        if !select.is_empty() && !select.iter().any(|s| s == &node || s == name) {
            continue;
        }
        for gate in gates {
            out.push(run_one(&ctx, &node, &table, gate).await?);
        }
    }
    Ok(out)
}

async fn run_one(ctx: &SessionContext, node: &str, table: &str, gate: &Gate) -> Result<TestOutcome> {
    let context = format!("expectation `{}` on {node}", gate.name);
    let failing = format!("NOT coalesce(({}), false)", gate.sql);
    let counts = collect(ctx, &format!("SELECT count(*), count(*) FILTER (WHERE {failing}) FROM {table}"), &context).await?;
    let (rows, bad) = counts
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| (b.column(0).as_primitive::<Int64Type>().value(0), b.column(1).as_primitive::<Int64Type>().value(0)))
        .unwrap_or((0, 0));
    let mut samples = Vec::new();
    if bad > 0 {
        let rows = collect(ctx, &format!("SELECT * FROM {table} WHERE {failing} LIMIT {SAMPLES}"), &context).await?;
        for line in catalog::json_rows(&rows, &context)? {
            samples.push(serde_json::from_str(&line).map_err(|e| Error::Internal(format!("{context}: {e}")))?);
        }
    }
    let mut result = gate.result();
    result.rows_checked = u64::try_from(rows).unwrap_or(0);
    result.failing_rows = u64::try_from(bad).unwrap_or(0);
    Ok(TestOutcome { node: node.to_string(), result, samples })
}

async fn collect(ctx: &SessionContext, sql: &str, context: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(|e| Error::sql(context, e))?;
    df.collect().await.map_err(|e| Error::sql(context, e))
}
