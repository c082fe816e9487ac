//! Set- and table-level expectations (`unique`, `relationships`, `row_count`, `freshness`,
//! `null_fraction`, `sql`, `reconcile`), evaluated with DataFusion SQL over a candidate table.
//!
//! A candidate is registered in a session under two names: [`THIS`], the table as it would be
//! after the commit (what users' SQL sees), and [`ROWS`], the same rows plus a [`ROW_ID`] column
//! that numbers the rows this run would write (null for rows already published). `drop`
//! expectations select the ids of their failing rows from [`ROWS`]; published rows are never
//! removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::gates::{GateResult, SAMPLES};
use crate::catalog;
use crate::error::{Error, Result};
use crate::quality::gates::first_line;
use crate::runtime::Now;
use crate::spec::{Action, Check, Duration, ExpectationSpec, ident};

/// The candidate as users' SQL sees it.
pub const THIS: &str = "this";
/// The candidate with [`ROW_ID`].
pub const ROWS: &str = "__medallion_rows";
/// Numbers the rows a run would write; null for published rows.
pub const ROW_ID: &str = "__medallion_row";

/// A compiled set- or table-level expectation.
#[derive(Debug, Clone)]
pub struct TableCheck {
    /// Name.
    pub name: String,
    /// Kind, as in the project file.
    pub kind: &'static str,
    /// What a failure does.
    pub action: Action,
    /// What it checks, for results.
    pub definition: String,
    /// Other tables it reads (plain names).
    pub refs: Vec<String>,
    query: Query,
}

#[derive(Debug, Clone)]
enum Query {
    /// Unique combined values: the columns.
    Unique(Vec<String>),
    /// Referential integrity: this column, the other table, its column.
    Relationships {
        column: String,
        to: String,
        field: String,
    },
    /// A user query over `this` returning failing rows.
    Failing(String),
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    NullFraction {
        column: String,
        max: f64,
    },
    Freshness {
        column: String,
        max_age: Duration,
    },
    Reconcile {
        this: Side,
        with: Side,
        tolerance: f64,
        relative: f64,
        scope: Option<String>,
    },
}

/// One side of a reconciliation: an aggregate over a table's rows (those matching `filter`).
#[derive(Debug, Clone)]
struct Side {
    expr: String,
    table: String,
    filter: Option<String>,
}

impl Side {
    /// The aggregate's query, over the rows also matching `scope` when given.
    fn sql(&self, scope: Option<&str>) -> String {
        select(&format!("{} AS value", self.expr), &self.table, self.filter.as_deref(), scope)
    }
}

/// `SELECT list FROM table`, over the rows matching `filter` and `scope` when given.
fn select(list: &str, table: &str, filter: Option<&str>, scope: Option<&str>) -> String {
    let filters: Vec<String> = filter.into_iter().chain(scope).map(|f| format!("({f})")).collect();
    let filter = if filters.is_empty() { String::new() } else { format!(" WHERE {}", filters.join(" AND ")) };
    format!("SELECT {list} FROM {table}{filter}")
}

/// Where a check is declared, for its defaults.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The table's plain name (its own published version is not a dependency).
    pub name: &'a str,
    /// The table's SLA: the default freshness `max_age`.
    pub sla: Option<Duration>,
}

/// Compiles the set- and table-level expectations of `specs`, planning their SQL in `ctx`, where
/// [`THIS`] must be registered with the table's schema along with every table they may read.
/// Errors are (expectation name, message); duplicates and malformed specs are reported by
/// [`super::gates::compile`].
pub async fn compile(
    ctx: &SessionContext,
    specs: &[ExpectationSpec],
    owner: Owner<'_>,
) -> Result<Vec<TableCheck>, Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for spec in specs {
        let Ok(check) = spec.check() else { continue };
        if matches!(check, Check::Row { .. }) {
            continue;
        }
        match compile_one(ctx, spec, &check, owner).await {
            Ok(c) => out.push(c),
            Err(message) => errors.push((spec.name.clone(), format!("expectation `{}`: {message}", spec.name))),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

async fn compile_one(
    ctx: &SessionContext,
    spec: &ExpectationSpec,
    check: &Check<'_>,
    owner: Owner<'_>,
) -> Result<TableCheck, String> {
    let query = match check {
        Check::Row { .. } => return Err("a row-level expectation is not a table check".into()),
        Check::Unique(cols) => Query::Unique(cols.clone()),
        Check::Relationships(r) => Query::Relationships {
            column: r.column.clone(),
            to: r.to.clone(),
            field: r.field.clone().unwrap_or_else(|| r.column.clone()),
        },
        Check::Sql(sql) => Query::Failing(sql.trim().trim_end_matches(';').to_string()),
        Check::RowCount(r) => Query::RowCount { min: r.min, max: r.max },
        Check::NullFraction(n) => Query::NullFraction { column: n.column.clone(), max: n.max },
        Check::Freshness(f) => {
            let max_age = match (&f.max_age, owner.sla) {
                (Some(age), _) => age.parse::<Duration>()?,
                (None, Some(sla)) => sla,
                (None, None) => return Err("give freshness a `max_age`, or the table an `sla`".into()),
            };
            Query::Freshness { column: f.column.clone(), max_age }
        }
        Check::Reconcile(r) => Query::Reconcile {
            this: Side { expr: r.expr.clone(), table: THIS.to_string(), filter: r.filter.clone() },
            with: Side { expr: r.with_expr.clone(), table: r.with.clone(), filter: r.with_filter.clone() },
            tolerance: r.tolerance.unwrap_or(0.0),
            relative: r.relative_tolerance.unwrap_or(0.0),
            scope: None,
        },
    };
    let mut c = TableCheck {
        name: spec.name.clone(),
        kind: check.kind(),
        action: spec.action,
        definition: String::new(),
        refs: Vec::new(),
        query,
    };
    c.definition = c.describe();
    let mut refs = BTreeSet::new();
    for (sql, want) in c.planned_queries() {
        let plan = catalog::read_only(ctx, &sql, "an expectation").await.map_err(|e| match e {
            Error::Sql { source, .. } => catalog::error_line(&source),
            other => first_line(&other.to_string()),
        })?;
        let plan = plan.logical_plan().clone();
        let ty = plan.schema().field(0).data_type().clone();
        match want {
            Want::Rows => {}
            Want::Time if !matches!(ty, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) => {
                return Err(format!("freshness needs a timestamp or date column, this one is {ty}"));
            }
            Want::Number if !ty.is_numeric() => {
                return Err(format!("reconcile needs numeric aggregates, `{}` gives {ty}", first_select(&sql)));
            }
            Want::Number if !is_global_aggregate(&plan) => {
                return Err(format!(
                    "reconcile needs an aggregate over the whole table (like `sum(x)`), not `{}`",
                    first_select(&sql)
                ));
            }
            Want::Time | Want::Number => {}
        }
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                refs.insert(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|e| e.to_string())?;
    }
    c.refs = refs.into_iter().filter(|r| r != THIS && r != owner.name && !r.starts_with("__medallion")).collect();
    Ok(c)
}

/// What a planned query must produce.
enum Want {
    Rows,
    Time,
    Number,
}

impl TableCheck {
    /// Whether its failing rows can be dropped (an action of `drop` on `unique`/`relationships`).
    pub fn drops(&self) -> bool {
        self.action == Action::Drop
    }

    /// Whether it is answered, over a candidate of one row per value of `keys`, by what the
    /// candidate's writer counts (its rows, its newest values: see [`MergeFacts`]) without reading
    /// it: `unique` on the key, `row_count` and `freshness`, none of them dropping rows.
    pub fn known_without_rows(&self, keys: &[String]) -> bool {
        !self.drops()
            && match &self.query {
                Query::Unique(cols) => same_columns(cols, keys),
                Query::RowCount { .. } | Query::Freshness { .. } => true,
                _ => false,
            }
    }

    fn describe(&self) -> String {
        match &self.query {
            Query::Unique(cols) => format!("unique ({})", cols.join(", ")),
            Query::Relationships { column, to, field } => format!("{column} references {to}.{field}"),
            Query::Failing(sql) => sql.clone(),
            Query::RowCount { min, max } => match (min, max) {
                (Some(lo), Some(hi)) => format!("{lo} <= rows <= {hi}"),
                (Some(lo), None) => format!("rows >= {lo}"),
                (None, Some(hi)) => format!("rows <= {hi}"),
                (None, None) => "any row count".into(),
            },
            Query::NullFraction { column, max } => format!("null fraction of {column} <= {max}"),
            Query::Freshness { column, max_age } => {
                format!("max({column}) no older than {}", human(max_age.seconds as i64))
            }
            Query::Reconcile { this, with, tolerance, relative, .. } => {
                format!("({}) = ({}) within {tolerance} + {relative} relative", this.sql(None), with.sql(None))
            }
        }
    }

    /// The queries to plan at load time, with what each must produce.
    fn planned_queries(&self) -> Vec<(String, Want)> {
        match &self.query {
            Query::Unique(_) | Query::Relationships { .. } | Query::Failing(_) => {
                vec![(self.failing_sql(THIS).unwrap_or_default(), Want::Rows)]
            }
            Query::RowCount { .. } => Vec::new(),
            Query::NullFraction { column, .. } => vec![(format!("SELECT {} FROM {THIS}", ident(column)), Want::Rows)],
            Query::Freshness { column, .. } => vec![(format!("SELECT max({}) FROM {THIS}", ident(column)), Want::Time)],
            Query::Reconcile { this, with, .. } => vec![(this.sql(None), Want::Number), (with.sql(None), Want::Number)],
        }
    }

    /// For kinds whose failures are rows: the query returning them from `table`.
    fn failing_sql(&self, table: &str) -> Option<String> {
        match &self.query {
            Query::Unique(cols) => {
                let list: Vec<String> = cols.iter().map(|c| ident(c)).collect();
                let not_null: Vec<String> = list.iter().map(|c| format!("{c} IS NOT NULL")).collect();
                let on: Vec<String> = list.iter().map(|c| format!("x.{c} = d.{c}")).collect();
                Some(format!(
                    "SELECT x.* FROM {table} AS x JOIN (SELECT {cols} FROM {table} WHERE {nn} GROUP BY {cols} HAVING count(*) > 1) AS d ON {on}",
                    cols = list.join(", "),
                    nn = not_null.join(" AND "),
                    on = on.join(" AND ")
                ))
            }
            Query::Relationships { column, to, field } => Some(format!(
                "SELECT * FROM {table} AS x WHERE x.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {to} AS r WHERE r.{f} = x.{c})",
                c = ident(column),
                f = ident(field)
            )),
            Query::Failing(sql) => Some(sql.clone()),
            _ => None,
        }
    }

    /// For an incremental build: a reconciliation of this table with `source` (the model's
    /// incremental source, `is_source` recognising its name) compares only the rows matching
    /// `predicate`, the touched partitions. The others were compared when they were built, and
    /// neither side of them has changed since (an untouched partition is one no changed source
    /// row falls in). Other checks are returned as they are.
    pub fn scoped(&self, is_source: impl Fn(&str) -> bool, predicate: &str) -> TableCheck {
        let mut c = self.clone();
        if let Query::Reconcile { with, scope, .. } = &mut c.query
            && is_source(&with.table)
        {
            *scope = Some(predicate.to_string());
        }
        c
    }

    /// The column a freshness check reads, if it is one.
    pub fn freshness_of(&self) -> Option<&str> {
        match &self.query {
            Query::Freshness { column, .. } => Some(column),
            _ => None,
        }
    }

    fn result(&self) -> GateResult {
        GateResult::new(&self.name, self.kind, self.action, &self.definition)
    }
}

/// Evaluates the `drop` checks on [`ROWS`]: per check, its result and the ids of its failing
/// rows of this run (the rows to remove; published rows are never removed).
pub async fn failing_ids(
    ctx: &SessionContext,
    checks: &[&TableCheck],
    columns: &[String],
    rows: u64,
) -> Result<Vec<(GateResult, BTreeSet<i64>)>> {
    let mut results = Vec::new();
    for check in checks {
        let mut ids = BTreeSet::new();
        let mut result = check.result();
        result.rows_checked = rows;
        let context = format!("expectation `{}`", check.name);
        let failing = check.failing_sql(ROWS).ok_or_else(|| Error::Internal(format!("{context} cannot drop rows")))?;
        for b in catalog::query(ctx, &format!("SELECT {ROW_ID} FROM ({failing}) AS f"), &context).await? {
            result.failing_rows += b.num_rows() as u64;
            let col = b.column(0).as_primitive::<Int64Type>();
            ids.extend((0..col.len()).filter(|&i| col.is_valid(i)).map(|i| col.value(i)));
        }
        result.dropped = ids.len() as u64;
        if result.failing_rows > 0 {
            let shown: Vec<String> = columns.iter().map(|c| format!("f.{}", ident(c))).collect();
            let sample = format!("SELECT {} FROM ({failing}) AS f LIMIT {SAMPLES}", shown.join(", "));
            for b in catalog::query(ctx, &sample, &context).await? {
                result.add_samples(&b)?;
            }
        }
        results.push((result, ids));
    }
    Ok(results)
}

/// Evaluates `checks` on [`THIS`] at time `now`. The row count and every null-fraction and
/// freshness aggregate come from one scan.
pub async fn evaluate(
    ctx: &SessionContext,
    checks: &[&TableCheck],
    now: Now,
    merge: Option<&MergeFacts<'_>>,
) -> Result<Vec<GateResult>> {
    // A merge candidate answers some checks from what is known of it without reading the table:
    // its row count, uniqueness of its key, and its newest value: a freshness the run's own
    // winners prove, or, of the order column, the newer of the published table's newest and the
    // winners' (a winner replaces a row only when newer by that column, so the candidate's newest
    // is one of them).
    let mut newest_known: Vec<Option<Option<i64>>> = vec![None; checks.len()];
    if let Some(m) = merge {
        for (i, check) in checks.iter().enumerate() {
            if let Query::Freshness { column, max_age } = &check.query {
                let context = format!("expectation `{}`", check.name);
                let winners = match m.winners_newest.iter().find(|(c, _)| c == column) {
                    Some(&(_, known)) => known,
                    None => {
                        let sql = format!("SELECT max({}) FROM {}", ident(column), m.winners);
                        let batches = catalog::query(ctx, &sql, &context).await?;
                        match batches.iter().find(|b| b.num_rows() > 0) {
                            Some(b) => newest_micros(b.column(0), &context)?,
                            None => None,
                        }
                    }
                };
                newest_known[i] = match (winners, m.newest) {
                    // The winners are the whole candidate (a rebuild's rows).
                    (w, _) if m.winners == THIS => Some(w),
                    (Some(w), _) if age_seconds(now, w) <= max_age.seconds as i64 => Some(Some(w)),
                    (w, Some((order_by, Some(published)))) if order_by == column => Some(w.max(Some(published))),
                    (w, Some((order_by, None))) if order_by == column => Some(w),
                    _ => None,
                };
            }
        }
    }
    let mut exprs = vec!["count(*)".to_string()];
    let mut slot: Vec<Option<usize>> = vec![None; checks.len()];
    for (i, check) in checks.iter().enumerate() {
        let expr = match &check.query {
            Query::NullFraction { column, .. } => format!("count(*) FILTER (WHERE {} IS NULL)", ident(column)),
            Query::Freshness { column, .. } if newest_known[i].is_none() => format!("max({})", ident(column)),
            _ => continue,
        };
        slot[i] = Some(exprs.len());
        exprs.push(expr);
    }
    let known_rows = merge.and_then(|m| m.rows);
    let aggregates = if exprs.len() == 1 && known_rows.is_some() {
        None
    } else {
        let batches =
            catalog::query(ctx, &format!("SELECT {} FROM {THIS}", exprs.join(", ")), "aggregating candidate rows")
                .await?;
        let Some(b) = batches.into_iter().find(|b| b.num_rows() > 0) else {
            return Err(Error::Internal("an aggregate over the candidate returned no row".into()));
        };
        Some(b)
    };
    let sides = reconciled(ctx, checks).await?;
    let rows = match (&aggregates, known_rows) {
        (Some(a), _) => u64::try_from(a.column(0).as_primitive::<Int64Type>().value(0)).unwrap_or(0),
        (None, Some(n)) => n,
        (None, None) => 0,
    };
    let mut out = Vec::new();
    for (i, (check, slot)) in checks.iter().zip(slot).enumerate() {
        let mut r = check.result();
        r.rows_checked = rows;
        let context = format!("expectation `{}`", check.name);
        let column = |slot: Option<usize>| match (&aggregates, slot) {
            (Some(a), Some(s)) => Ok(a.column(s).clone()),
            _ => Err(Error::Internal(format!("{context}: no aggregate"))),
        };
        match &check.query {
            Query::Unique(cols) if merge.is_some_and(|m| m.is_key(cols)) => {
                // The merge keeps one row per key: the published table has unique keys, the run's
                // winners are deduplicated, and each replaces the row of its key.
                r.observed = Some("by the merge key".into());
            }
            Query::Unique(_) | Query::Relationships { .. } | Query::Failing(_) => {
                let failing = check.failing_sql(THIS).unwrap_or_default();
                r.failing_rows = count(ctx, &format!("SELECT count(*) FROM ({failing}) AS f"), &context).await?;
                if r.failing_rows > 0 {
                    for b in catalog::query(ctx, &format!("SELECT * FROM ({failing}) AS f LIMIT {SAMPLES}"), &context)
                        .await?
                    {
                        r.add_samples(&b)?;
                    }
                }
            }
            Query::RowCount { min, max } => {
                r.violated = min.is_some_and(|lo| rows < lo) || max.is_some_and(|hi| rows > hi);
                r.observed = Some(format!("rows = {rows}"));
            }
            Query::NullFraction { max, .. } => {
                let col = column(slot)?;
                let col = col.as_primitive::<Int64Type>();
                let nulls = u64::try_from(col.value(0)).unwrap_or(0);
                let fraction = if rows == 0 { 0.0 } else { nulls as f64 / rows as f64 };
                r.violated = fraction > *max;
                r.observed = Some(format!("null fraction {fraction:.4} ({nulls} of {rows} rows)"));
            }
            Query::Freshness { column: name, max_age } => {
                let newest = match newest_known[i] {
                    Some(known) => known,
                    None => newest_micros(&column(slot)?, &context)?,
                };
                match newest {
                    None => {
                        r.violated = true;
                        r.observed = Some(format!("no value in {name}"));
                    }
                    Some(newest) => {
                        let age = age_seconds(now, newest);
                        r.violated = age > max_age.seconds as i64;
                        let at = chrono::DateTime::from_timestamp_micros(newest).map_or_else(
                            || newest.to_string(),
                            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        );
                        r.observed = Some(format!("newest {at}, {} old", human(age)));
                    }
                }
            }
            Query::Reconcile { this, with, tolerance, relative, scope } => {
                // An aggregate over no rows (sum → null) counts as 0: reconciliations compare sums
                // and counts, and an empty side must equal an empty side.
                let side = |s: &Side| {
                    sides.get(&((s.table.as_str(), s.filter.as_deref(), scope.as_deref()), s.expr.as_str())).copied()
                };
                let (Some(a), Some(b)) = (side(this), side(with)) else {
                    return Err(Error::Internal(format!("{context}: a side was not aggregated")));
                };
                let (a, b) = (a.unwrap_or(0.0), b.unwrap_or(0.0));
                let diff = (a - b).abs();
                let allowed = tolerance + relative * a.abs().max(b.abs());
                let within = if scope.is_some() { " (touched partitions)" } else { "" };
                let (violated, observed) =
                    (diff.is_nan() || diff > allowed, format!("{a} vs {b}, difference {diff}{within}"));
                r.violated = violated;
                r.observed = Some(observed);
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// What is known of a merge candidate (the published table with a run's winners merged by key)
/// without reading the table.
#[derive(Debug, Clone, Copy)]
pub struct MergeFacts<'a> {
    /// The primary key.
    pub keys: &'a [String],
    /// The candidate's rows (the published table's live rows, from its log, plus the winners of
    /// new keys); None when the log does not tell.
    pub rows: Option<u64>,
    /// The registered table of the run's winners.
    pub winners: &'a str,
    /// The order column and the published table's newest value of it (micros; inner None: no
    /// value), when known (see `Table::newest`).
    pub newest: Option<(&'a str, Option<i64>)>,
    /// The winners' newest value of some columns (micros; None: no value), known without reading
    /// them (see [`newest_of`]).
    pub winners_newest: &'a [(String, Option<i64>)],
}

impl MergeFacts<'_> {
    fn is_key(&self, cols: &[String]) -> bool {
        same_columns(cols, self.keys)
    }
}

/// Whether `a` and `b` name the same columns, in any order.
fn same_columns(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// The rows a reconciliation side aggregates: (table, its filter, the check's scope).
type Over<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// A reconciliation side's aggregate, by the rows it is over and its expression.
type Sides<'a> = HashMap<(Over<'a>, &'a str), Option<f64>>;

/// The value of every side of the reconciliations among `checks` (None: null). The sides over the
/// same rows (table, filter and scope) are aggregated in one query: two reconciliations of gold
/// with silver (a sum and a count) read silver once.
async fn reconciled<'a>(ctx: &SessionContext, checks: &[&'a TableCheck]) -> Result<Sides<'a>> {
    // Per set of rows, its expressions and the checks that brought them.
    let mut groups: BTreeMap<Over<'a>, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for check in checks {
        if let Query::Reconcile { this, with, scope, .. } = &check.query {
            for side in [this, with] {
                let (exprs, names) =
                    groups.entry((side.table.as_str(), side.filter.as_deref(), scope.as_deref())).or_default();
                if !exprs.contains(&side.expr.as_str()) {
                    exprs.push(&side.expr);
                    names.push(&check.name);
                }
            }
        }
    }
    let mut out = Sides::new();
    for ((table, filter, scope), (exprs, names)) in groups {
        let values: Vec<String> =
            exprs.iter().enumerate().map(|(i, e)| format!("CAST({e} AS DOUBLE) AS v{i}")).collect();
        let context = format!("expectation `{}`", names.join("`, `"));
        let batches = catalog::query(ctx, &select(&values.join(", "), table, filter, scope), &context).await?;
        let row = batches.iter().find(|b| b.num_rows() > 0);
        for (i, expr) in exprs.into_iter().enumerate() {
            let value =
                row.map(|b| b.column(i).as_primitive::<Float64Type>()).filter(|c| c.is_valid(0)).map(|c| c.value(0));
            out.insert(((table, filter, scope), expr), value);
        }
    }
    Ok(out)
}

/// Rows of [`THIS`].
pub async fn count_this(ctx: &SessionContext) -> Result<u64> {
    count(ctx, &format!("SELECT count(*) FROM {THIS}"), "counting candidate rows").await
}

/// Whole seconds from `newest` (micros since the epoch) to `now`, rounded.
fn age_seconds(now: Now, newest: i64) -> i64 {
    (now.timestamp_micros() - newest + 500_000).div_euclid(1_000_000)
}

/// The `count(*)` `sql` returns (0 for no row).
pub(super) async fn count(ctx: &SessionContext, sql: &str, context: &str) -> Result<u64> {
    let batches = catalog::query(ctx, sql, context).await?;
    let n = batches.iter().find(|b| b.num_rows() > 0).map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The newest value of `column` in `batches` (micros since the epoch; None: no value), as a
/// freshness expectation reads it.
pub fn newest_of(batches: &[RecordBatch], column: &str) -> Result<Option<i64>> {
    let context = format!("the newest value of `{column}`");
    let mut newest = None;
    for b in batches {
        let col = b.column_by_name(column).ok_or_else(|| Error::Internal(format!("{context}: no such column")))?;
        let col =
            cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(|e| Error::arrow(&context, e))?;
        newest = newest.max(datafusion::arrow::compute::max(col.as_primitive::<TimestampMicrosecondType>()));
    }
    Ok(newest)
}

fn newest_micros(col: &datafusion::arrow::array::ArrayRef, context: &str) -> Result<Option<i64>> {
    let col = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(|e| Error::arrow(context, e))?;
    let col = col.as_primitive::<TimestampMicrosecondType>();
    Ok(col.is_valid(0).then(|| col.value(0)))
}

fn is_global_aggregate(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => is_global_aggregate(&p.input),
        LogicalPlan::SubqueryAlias(a) => is_global_aggregate(&a.input),
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        _ => false,
    }
}

fn first_select(sql: &str) -> &str {
    sql.strip_prefix("SELECT ").and_then(|s| s.split(" AS value FROM ").next()).unwrap_or(sql)
}

/// `3d 4h`, `2h 5m`, `40s`, `-1m` (a clock behind the data).
pub fn human(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let text = match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    };
    format!("{sign}{text}")
}
