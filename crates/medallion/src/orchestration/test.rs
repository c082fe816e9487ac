//! `medallion test`: every expectation evaluated on the published tables (like `dbt test`).
//!
//! Row-level expectations run as `SELECT count(*) … WHERE NOT coalesce((<expectation>), false)`
//! over the table as readers see it; set- and table-level ones run with `this` standing for it.
//! Results are appended to `_medallion/expectations` with command `test`.

use serde::Serialize;

use crate::catalog;
use crate::error::{Error, Result};
use crate::project::Project;
use crate::quality::checks::{self, THIS};
use crate::quality::gates::{GateResult, Outcome};
use crate::quality::results;
use crate::runtime::Now;
use crate::storage::Lake;

/// One expectation's outcome on a published table.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// `silver/<table>` or `gold/<model>`.
    pub node: String,
    /// Counts, action, outcome and samples.
    pub result: GateResult,
}

/// Tests every expectation of the tables whose node (`silver/orders`) or name (`orders`) is in
/// `select` (all when empty), at time `now` (for freshness), and records the results.
pub async fn test(lake: &Lake, project: &Project, select: &[String], now: Now) -> Result<Vec<TestOutcome>> {
    let ctx = catalog::session(lake, project).await?;
    let silver = project
        .silver
        .values()
        .map(|t| (format!("silver/{}", t.name), format!("silver.{}", t.name), &t.contract.gates, &t.checks));
    let gold =
        project.gold.values().map(|m| (format!("gold/{}", m.name), format!("gold.{}", m.name), &m.gates, &m.checks));
    let mut out = Vec::new();
    for (node, table, gates, table_checks) in silver.chain(gold) {
        let name = node.split_once('/').map_or(node.as_str(), |(_, n)| n);
        if !select.is_empty() && !select.iter().any(|s| s == &node || s == name) {
            continue;
        }
        for gate in gates {
            out.push(TestOutcome { node: node.clone(), result: gate.evaluate_on(&ctx, &table, &node).await? });
        }
        if !table_checks.is_empty() {
            let provider =
                ctx.table_provider(table.as_str()).await.map_err(|e| Error::sql(format!("reading {node}"), e))?;
            ctx.deregister_table(THIS).map_err(|e| Error::sql("registering `this`", e))?;
            ctx.register_table(THIS, provider).map_err(|e| Error::sql("registering `this`", e))?;
            let all: Vec<&checks::TableCheck> = table_checks.iter().collect();
            for result in checks::evaluate(&ctx, &all, now, None).await? {
                out.push(TestOutcome { node: node.clone(), result });
            }
        }
    }
    for o in &mut out {
        o.result.settle();
        // A test removes nothing: a failing `drop` expectation on a published table warns.
        if o.result.outcome == Outcome::Drop {
            o.result.outcome = Outcome::Warn;
        }
    }
    let run_id = crate::runtime::new_run_id(Some("test"), now);
    let recorded: Vec<(String, GateResult)> = out.iter().map(|o| (o.node.clone(), o.result.clone())).collect();
    results::record(lake, &run_id, "test", now, &recorded).await?;
    Ok(out)
}
