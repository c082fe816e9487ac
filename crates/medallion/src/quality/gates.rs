//! Row-level expectations compiled to physical expressions and evaluated over Arrow batches, the
//! result of any expectation, and the rule that stops publication when a `fail` one failed.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::spec::{Action, Check, ExpectationSpec};

/// Sample failing rows kept per expectation.
pub const SAMPLES: usize = 3;

/// The kinds of row-level expectations.
pub const ROW_KINDS: [&str; 5] = ["expect", "not_null", "accepted_values", "range", "regex"];

/// A compiled row-level expectation.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Its name.
    pub name: String,
    /// One of [`ROW_KINDS`].
    pub kind: &'static str,
    /// What a failure does.
    pub action: Action,
    /// The SQL it checks.
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// What happened to an expectation in a run or a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It held.
    Pass,
    /// It failed; the data was published anyway.
    Warn,
    /// It failed; failing rows went to the dead letter, the rest was published.
    Drop,
    /// It failed; nothing of the run was published for the table.
    Fail,
}

impl Outcome {
    /// Lower-case name.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Drop => "drop",
            Outcome::Fail => "fail",
        }
    }
}

/// The outcome of one expectation over a run's candidate data (or a published table).
#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    /// Expectation name.
    pub name: String,
    /// Its kind (`range`, `unique`, `freshness`…).
    pub kind: &'static str,
    /// Its action.
    pub action: Action,
    /// What it checks: the SQL expression or query.
    pub definition: String,
    /// Rows it was evaluated on.
    pub rows_checked: u64,
    /// Rows that failed it (row- and set-level kinds; for `sql`, the rows the query returned).
    pub failing_rows: u64,
    /// Rows removed into the dead letter by a `drop` action.
    pub dropped: u64,
    /// Table-level kinds: the measured value (`rows = 0`, `newest 2024-03-01T00:00:00Z, 3h old`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Table-level kinds: whether the measured value violates the bound.
    pub violated: bool,
    /// A few failing rows, as JSON objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<serde_json::Value>,
    /// pass, warn, drop or fail.
    pub outcome: Outcome,
}

impl GateResult {
    /// A fresh result (passing until counts say otherwise).
    pub fn new(name: &str, kind: &'static str, action: Action, definition: &str) -> GateResult {
        GateResult {
            name: name.to_string(),
            kind,
            action,
            definition: definition.to_string(),
            rows_checked: 0,
            failing_rows: 0,
            dropped: 0,
            observed: None,
            violated: false,
            samples: Vec::new(),
            outcome: Outcome::Pass,
        }
    }

    /// Whether it held.
    pub fn passed(&self) -> bool {
        self.failing_rows == 0 && !self.violated
    }

    /// Sets [`GateResult::outcome`] from the counts and the action; call once counting is done.
    pub fn settle(&mut self) {
        self.outcome = match (self.passed(), self.action) {
            (true, _) => Outcome::Pass,
            (false, Action::Warn) => Outcome::Warn,
            (false, Action::Drop) => Outcome::Drop,
            (false, Action::Fail) => Outcome::Fail,
        };
    }

    /// Adds up to [`SAMPLES`] rows of `batch` (JSON objects) as samples.
    pub fn add_samples(&mut self, batch: &RecordBatch) -> Result<()> {
        let room = SAMPLES.saturating_sub(self.samples.len());
        if room == 0 || batch.num_rows() == 0 {
            return Ok(());
        }
        let context = format!("sample rows of expectation `{}`", self.name);
        let rows = batch.slice(0, room.min(batch.num_rows()));
        for line in crate::catalog::json_rows(&[rows], &context)? {
            self.samples.push(serde_json::from_str(&line).map_err(|e| Error::Internal(format!("{context}: {e}")))?);
        }
        Ok(())
    }
}

/// Compiles the row-level expectations of `specs` against `schema` (other kinds are compiled by
/// [`crate::quality::checks`]); errors are (expectation name, message).
pub fn compile(specs: &[ExpectationSpec], schema: &SchemaRef) -> Result<Vec<Gate>, Vec<(String, String)>> {
    let ctx = SessionContext::new();
    crate::functions::register(&ctx).map_err(|e| vec![(String::new(), e.to_string())])?;
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| vec![(String::new(), e.to_string())])?;
    let mut gates = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for spec in specs {
        if !seen.insert(spec.name.as_str()) {
            errors.push((spec.name.clone(), format!("expectation `{}` is declared twice", spec.name)));
            continue;
        }
        let compiled = spec.check().and_then(|check| {
            let Check::Row { kind, sql } = check else { return Ok(None) };
            let first = |e: datafusion::error::DataFusionError| crate::catalog::error_line(&e);
            let expr = ctx.parse_sql_expr(&sql, &df_schema).map_err(first)?;
            let expr = crate::catalog::division::floats(expr, &df_schema).map_err(first)?.data;
            constants_fit(&ctx, expr.clone(), &df_schema).map_err(first)?;
            let expr = ctx.create_physical_expr(expr, &df_schema).map_err(first)?;
            match expr.data_type(schema).map_err(first)? {
                DataType::Boolean => Ok(Some(Gate { name: spec.name.clone(), kind, action: spec.action, sql, expr })),
                other => Err(format!("must be a boolean expression, this one gives {other}")),
            }
        });
        match compiled {
            Ok(g) => gates.extend(g),
            Err(message) => errors.push((spec.name.clone(), format!("expectation `{}`: {message}", spec.name))),
        }
    }
    if errors.is_empty() { Ok(gates) } else { Err(errors) }
}

/// Folds `expr`'s constants as a query's planner folds them, for the error only: a literal that
/// does not cast to its column's type (a `range` bound `'not a date'` on a date column) fails here,
/// when the project is validated, instead of in the first run that evaluates it. The gate keeps
/// the expression as written: folding is free to fix a stable function's value (`now()`, given a
/// start time) at load, and a long-running `schedule` reuses the loaded project run after run.
fn constants_fit(ctx: &SessionContext, expr: Expr, schema: &DFSchema) -> datafusion::error::Result<()> {
    let info = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .with_config_options(Arc::clone(ctx.state().config_options()))
        .build();
    let simplifier = ExprSimplifier::new(info);
    simplifier.simplify(simplifier.coerce(expr, schema)?).map(|_| ())
}

impl Gate {
    /// Per row: whether it fails (the expression is false or null).
    pub fn failing(&self, batch: &RecordBatch) -> Result<Vec<bool>> {
        let n = batch.num_rows();
        // A row the expectation cannot be evaluated on fails it.
        let (out, errors) =
            by_rows(batch, &DataType::Boolean, &|b: &RecordBatch| self.expr.evaluate(b)?.into_array(b.num_rows()))?;
        let out = out.as_boolean();
        Ok((0..n).map(|r| errors.contains_key(&r) || !(out.is_valid(r) && out.value(r))).collect())
    }

    /// A fresh result for this gate.
    pub fn result(&self) -> GateResult {
        GateResult::new(&self.name, self.kind, self.action, &self.sql)
    }

    /// Its result over the rows of `table` (a name registered in `ctx`; `node` names it in
    /// messages), by SQL: a count of the rows and of the failing ones, and a few samples. The
    /// rows are read where the session runs (on a cluster, by its executors).
    pub async fn evaluate_on(&self, ctx: &SessionContext, table: &str, node: &str) -> Result<GateResult> {
        use datafusion::arrow::datatypes::Int64Type;
        let context = format!("expectation `{}` on {node}", self.name);
        let failing = format!("NOT coalesce(({}), false)", self.sql);
        let sql = format!("SELECT count(*), count(*) FILTER (WHERE {failing}) FROM {table}");
        let counts = crate::catalog::query(ctx, &sql, &context).await?;
        let (rows, bad) = counts
            .first()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                (b.column(0).as_primitive::<Int64Type>().value(0), b.column(1).as_primitive::<Int64Type>().value(0))
            })
            .unwrap_or((0, 0));
        let mut result = self.result();
        result.rows_checked = u64::try_from(rows).unwrap_or(0);
        result.failing_rows = u64::try_from(bad).unwrap_or(0);
        if bad > 0 {
            let sql = format!("SELECT * FROM {table} WHERE {failing} LIMIT {SAMPLES}");
            for b in crate::catalog::query(ctx, &sql, &context).await? {
                result.add_samples(&b)?;
            }
        }
        Ok(result)
    }
}

/// Settles every result, then returns the `fail` ones that failed as an error naming each (the
/// error carries all results, for the run log), or `Ok` if none did.
pub fn enforce(node: &str, results: &mut [GateResult]) -> Result<()> {
    for r in results.iter_mut() {
        r.settle();
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Fail)
        .map(|r| match &r.observed {
            Some(observed) if r.failing_rows == 0 => format!("`{}` ({observed})", r.name),
            _ => format!("`{}` ({} of {} rows failed)", r.name, r.failing_rows, r.rows_checked),
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::GateFailed {
            node: node.to_string(),
            failed: failed.join(", "),
            results: Box::new(results.to_vec()),
        })
    }
}

/// The expectation results a [`Error::GateFailed`] carries (none for any other error).
pub fn results_of(error: &Error) -> Vec<GateResult> {
    match error {
        Error::GateFailed { results, .. } => results.downcast_ref::<Vec<GateResult>>().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The first line of an error message (DataFusion's go on with context a user need not read).
pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// Rows an expression could not be evaluated on, with the error.
pub type RowErrors = std::collections::HashMap<usize, String>;

/// `eval` over `batch`; where it fails, over ever smaller halves, so that a row it cannot be
/// evaluated on (a cast of text that is no number, JSON functions over text that is no JSON)
/// fails alone: the values (null on such rows, of type `ty`) and each such row's error. One bad
/// value must not stop the rows beside it.
pub fn by_rows(
    batch: &RecordBatch,
    ty: &DataType,
    eval: &dyn Fn(&RecordBatch) -> datafusion::error::Result<ArrayRef>,
) -> Result<(ArrayRef, RowErrors)> {
    fn go(
        batch: &RecordBatch,
        offset: usize,
        ty: &DataType,
        eval: &dyn Fn(&RecordBatch) -> datafusion::error::Result<ArrayRef>,
        parts: &mut Vec<ArrayRef>,
        errors: &mut RowErrors,
    ) {
        let n = batch.num_rows();
        match eval(batch) {
            Ok(values) => parts.push(values),
            Err(e) if n <= 1 => {
                parts.push(new_null_array(ty, n));
                if n == 1 {
                    errors.insert(offset, e.find_root().to_string());
                }
            }
            Err(_) => {
                let half = n / 2;
                go(&batch.slice(0, half), offset, ty, eval, parts, errors);
                go(&batch.slice(half, n - half), offset + half, ty, eval, parts, errors);
            }
        }
    }
    let (mut parts, mut errors) = (Vec::new(), RowErrors::new());
    go(batch, 0, ty, eval, &mut parts, &mut errors);
    let values = match parts.as_slice() {
        [one] => Arc::clone(one),
        _ => {
            let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
            concat(&refs).map_err(|e| Error::arrow("joining the rows of an expression", e))?
        }
    };
    Ok((values, errors))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    /// Where an expression fails on some rows, the others get their values and each failing row
    /// its own error; a whole batch that evaluates is evaluated once.
    #[test]
    fn by_rows_isolates_the_rows_an_expression_fails_on() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, true)]));
        let texts = StringArray::from(vec![Some("1"), Some("x"), Some("3"), None, Some("y"), Some("6"), Some("7")]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(texts)]).map_err(|e| Error::arrow("batch", e))?;
        let calls = std::cell::Cell::new(0);
        let cast = |b: &RecordBatch| {
            calls.set(calls.get() + 1);
            Ok(datafusion::arrow::compute::cast_with_options(
                b.column(0),
                &DataType::Int32,
                &datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() },
            )?)
        };
        let (values, errors) = by_rows(&batch, &DataType::Int32, &cast)?;
        let want = Int32Array::from(vec![Some(1), None, Some(3), None, None, Some(6), Some(7)]);
        assert_eq!(values.as_primitive::<datafusion::arrow::datatypes::Int32Type>(), &want);
        let mut failed: Vec<usize> = errors.keys().copied().collect();
        failed.sort_unstable();
        assert_eq!(failed, [1, 4]);
        assert!(errors[&1].contains("'x'"), "{errors:?}");
        let clean = batch.slice(5, 2);
        calls.set(0);
        let (_, none) = by_rows(&clean, &DataType::Int32, &cast)?;
        assert!(none.is_empty() && calls.get() == 1);
        Ok(())
    }
}
