//! Compiled row-level expectations and their evaluation over Arrow batches.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::spec::{Action, ExpectationSpec};

/// A compiled expectation.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Its name.
    pub name: String,
    /// What a failure does.
    pub action: Action,
    /// The SQL it checks.
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// The outcome of one expectation over a run's candidate rows.
#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    /// Expectation name.
    pub name: String,
    /// Its action.
    pub action: Action,
    /// Rows it was evaluated on.
    pub rows_checked: u64,
    /// Rows that failed it.
    pub failing_rows: u64,
}

impl GateResult {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.failing_rows == 0
    }
}

/// Compiles `specs` against `schema`; errors are (expectation name, message).
pub fn compile(specs: &[ExpectationSpec], schema: &SchemaRef) -> Result<Vec<Gate>, Vec<(String, String)>> {
    let ctx = SessionContext::new();
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| vec![(String::new(), e.to_string())])?;
    let mut gates = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for spec in specs {
        if !seen.insert(spec.name.as_str()) {
            errors.push((spec.name.clone(), format!("expectation `{}` is declared twice", spec.name)));
            continue;
        }
        let compiled = spec.to_sql().and_then(|sql| {
            let first = |e: datafusion::error::DataFusionError| e.to_string().lines().next().unwrap_or_default().to_string();
            let expr = ctx.parse_sql_expr(&sql, &df_schema).map_err(first)?;
            let expr = ctx.create_physical_expr(expr, &df_schema).map_err(first)?;
            match expr.data_type(schema).map_err(first)? {
                DataType::Boolean => Ok(Gate { name: spec.name.clone(), action: spec.action, sql, expr }),
                other => Err(format!("must be a boolean expression, this one gives {other}")),
            }
        });
        match compiled {
            Ok(g) => gates.push(g),
            Err(message) => errors.push((spec.name.clone(), format!("expectation `{}`: {message}", spec.name))),
        }
    }
    if errors.is_empty() { Ok(gates) } else { Err(errors) }
}

impl Gate {
    /// Per row: whether it fails (the expression is false or null).
    pub fn failing(&self, batch: &RecordBatch) -> Result<Vec<bool>> {
        let n = batch.num_rows();
        let out = self
            .expr
            .evaluate(batch)
            .and_then(|v| v.into_array(n))
            .map_err(|e| Error::sql(format!("expectation `{}`", self.name), e))?;
        let out = out.as_boolean();
        Ok((0..n).map(|r| !(out.is_valid(r) && out.value(r))).collect())
    }

    /// A fresh result for this gate.
    pub fn result(&self) -> GateResult {
        GateResult { name: self.name.clone(), action: self.action, rows_checked: 0, failing_rows: 0 }
    }
}

/// The `fail` gates that failed, as an error naming each, or `Ok` if none did.
pub fn enforce(node: &str, results: &[GateResult]) -> Result<()> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.action == Action::Fail && !r.passed())
        .map(|r| format!("`{}` ({} of {} rows failed)", r.name, r.failing_rows, r.rows_checked))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::GateFailed { node: node.to_string(), failed: failed.join(", ") })
    }
}
