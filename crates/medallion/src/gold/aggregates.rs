//! Gold models kept from their source's change data feed instead of recomputed.
//!
//! A model that is one `GROUP BY` over one silver table recording a change data feed is built
//! from a state of its groups: per group its row count and, per aggregated expression, the count
//! of its non-null values, their exact sum, and up to 16 of their least and greatest values
//! ([`super::extremes`]). A run reads the rows
//! that changed since the state was taken (inserts and postimages add, deletes and preimages
//! subtract), brings the state forward, and computes the model's rows from the state with the
//! model's own `SELECT` list, `ORDER BY` and types. Its cost follows the batch and the number of
//! groups, not the table.
//!
//! Where the line is (anything else is built in full, as before):
//! - `SELECT … FROM <one silver table> [AS a] [<inner or left joins of tables>] [WHERE …] GROUP BY
//!   <expressions> [ORDER BY …]`: no right or full join, subquery, `DISTINCT`, `HAVING`, window,
//!   `LIMIT` or `WITH`, and no function whose value varies between runs (`now()`, `random()`);
//!   `GROUP BY` names expressions or positions of selected ones, and the `SELECT` list reads a key
//!   that is not a column of the silver table by repeating it as written;
//! - joined tables: while none of them changes, the changes joined are the change of the join;
//!   the state records their versions, and a run after one changed recomputes from the source;
//! - aggregates: `count(*)`, `count(e)`, `sum(e)` and `avg(e)` of integer or decimal `e` (exact:
//!   floating-point sums depend on the order of the rows), `min(e)` and `max(e)` of any type; none
//!   with `DISTINCT`, `FILTER` or `OVER`; the `SELECT` list may compute on them
//!   (`ROUND(AVG(amount), 2)`);
//! - a `min` or `max` is taken from the group's kept least (greatest) values; a group whose kept
//!   values the changes all removed is recomputed from the source (one scan, for those groups).
//!
//! The state is a Delta table, `_medallion/aggregates/<model>`, whose commit records the source
//! version it reflects and the model's SQL: a state of another SQL, of a source the feed does not
//! cover since (a rebuild), or missing is recomputed from the source. It is written after the
//! model, so a crash between the two leaves an older state, brought forward next run.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Decimal128Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    self, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query,
    SelectItem, SetExpr, Statement, TableFactor, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::extremes::{Extremes, KeptOf};
use crate::error::{Error, Result};
use crate::storage::delta::{Feed, Table, WriteOptions};
use crate::storage::{Lake, Layer};

/// What a model's SQL aggregates, when it is a shape this module keeps (see the module docs).
#[derive(Debug, Clone)]
pub struct Shape {
    /// The model's query, as parsed.
    query: Query,
    /// The source table's name as written.
    pub source: String,
    /// The name the source's rows are qualified by (its alias, else its name's last part).
    alias: String,
    /// The joins after the source, as written (empty, or starting with a space).
    joins: String,
    /// The tables joined to the source, as written: the state holds while none of them changes.
    pub joined: Vec<String>,
    /// The `WHERE` condition.
    filter: Option<String>,
    /// Group keys: (expression as written, its name in the state).
    keys: Vec<(String, String)>,
    /// Aggregated expressions, each once, with what the state keeps of it.
    inputs: Vec<Input>,
}

/// One aggregated expression and the parts of the state its aggregates need.
#[derive(Debug, Clone, Default)]
struct Input {
    sql: String,
    count: bool,
    sum: bool,
    avg: bool,
    min: bool,
    max: bool,
}

/// An aggregate call of the kinds kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// The layout of the state table: a state of another layout is recomputed from the source.
const LAYOUT: u64 = 1;

/// Name of the state's row count column.
const N: &str = "__n";
/// Name of the delta's count of change rows.
const ROWS: &str = "__rows";
/// Names the state and its helpers are registered under in a build's session.
const STATE: &str = "__medallion_state";
const CHANGES: &str = "__medallion_changes";
const DELTA: &str = "__medallion_delta";
const MERGED: &str = "__medallion_merged";
const DIRTY: &str = "__medallion_dirty";

impl Shape {
    /// The shape of `sql`, or why it is not one kept from changes.
    pub fn of(sql: &str) -> std::result::Result<Shape, String> {
        let mut statements = DFParser::parse_sql(sql).map_err(|e| e.to_string())?;
        let (Some(DFStatement::Statement(statement)), None) = (statements.pop_front(), statements.pop_front()) else {
            return Err("not one SELECT".into());
        };
        let Statement::Query(query) = *statement else { return Err("not a query".into()) };
        let q = &*query;
        if q.with.is_some()
            || q.limit_clause.is_some()
            || q.fetch.is_some()
            || !q.locks.is_empty()
            || q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return Err("WITH, LIMIT or another clause around the SELECT".into());
        }
        let SetExpr::Select(select) = &*q.body else { return Err("not a plain SELECT".into()) };
        if select.distinct.is_some()
            || select.top.is_some()
            || select.into.is_some()
            || select.having.is_some()
            || select.qualify.is_some()
            || select.prewhere.is_some()
            || select.exclude.is_some()
            || select.value_table_mode.is_some()
            || !select.named_window.is_empty()
            || !select.lateral_views.is_empty()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
        {
            return Err("DISTINCT, HAVING, QUALIFY, a window or another clause".into());
        }
        let [from] = select.from.as_slice() else { return Err("not one table".into()) };
        let (name, alias) = plain_table(&from.relation)?;
        let alias = match alias {
            Some(a) => a.clone(),
            None => name.0.last().and_then(|p| p.as_ident()).cloned().ok_or("no table name")?,
        };
        // Joined tables: each source row joins the same rows of them until one changes, so the
        // joined rows of the changes are the changes of the joined rows (inner and left joins
        // only: a right or full join adds rows for what the source lacks).
        let mut joined = Vec::with_capacity(from.joins.len());
        let mut joins = String::new();
        for j in &from.joins {
            use ast::{JoinConstraint, JoinOperator};
            let linear = match &j.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => {
                    matches!(c, JoinConstraint::On(_) | JoinConstraint::Using(_))
                }
                JoinOperator::CrossJoin(JoinConstraint::None) => true,
                _ => false,
            };
            if !linear || j.global {
                return Err(format!("{j}: not an inner or left join"));
            }
            joined.push(plain_table(&j.relation)?.0.to_string());
            joins.push(' ');
            joins.push_str(&j.to_string());
        }
        let GroupByExpr::Expressions(groups, modifiers) = &select.group_by else { return Err("GROUP BY ALL".into()) };
        if groups.is_empty() || !modifiers.is_empty() {
            return Err("no GROUP BY, or ROLLUP/CUBE".into());
        }
        let mut keys = Vec::with_capacity(groups.len());
        for g in groups {
            let column = match g {
                Expr::Value(v) => match &v.value {
                    SqlValue::Number(n, _) => {
                        let at: usize = n.parse().map_err(|_| "a GROUP BY position")?;
                        match select.projection.get(at.wrapping_sub(1)) {
                            Some(SelectItem::UnnamedExpr(e)) | Some(SelectItem::ExprWithAlias { expr: e, .. }) => e,
                            _ => return Err("a GROUP BY position".into()),
                        }
                    }
                    _ => return Err("a GROUP BY constant".into()),
                },
                e => e,
            };
            // A column of the source keeps its name in the state, which the SELECT list reads as
            // the source: it finds the column as written. Any other key is named by its place,
            // and the SELECT list's copies of it are replaced by that name.
            let ident = match column {
                Expr::Identifier(i) => Some(i),
                Expr::CompoundIdentifier(parts) if parts.len() == 2 && normalized(&parts[0]) == normalized(&alias) => {
                    parts.last()
                }
                _ => None,
            };
            let state_name = ident
                .map(normalized)
                .filter(|n| !n.starts_with("__") && !keys.iter().any(|(_, k)| k == n))
                .unwrap_or_else(|| format!("__g{}", keys.len()));
            if keys.iter().any(|(k, _)| *k == column.to_string()) {
                return Err(format!("GROUP BY {column}: repeated"));
            }
            keys.push((column.to_string(), state_name));
        }
        if select.projection.iter().any(|p| !matches!(p, SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }))
        {
            return Err("a wildcard in the SELECT list".into());
        }
        let mut inputs: Vec<Input> = Vec::new();
        let mut refused: Option<String> = None;
        let _ = ast::visit_expressions(&*query, |e: &Expr| {
            match e {
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                    refused = Some("a subquery".into());
                }
                Expr::Function(f) => match classify(f) {
                    Ok(None) => {}
                    Ok(Some((kind, arg))) => {
                        if let Some(arg) = arg {
                            let text = arg.to_string();
                            let at = match inputs.iter().position(|i| i.sql == text) {
                                Some(at) => at,
                                None => {
                                    inputs.push(Input { sql: text, ..Default::default() });
                                    inputs.len() - 1
                                }
                            };
                            let input = &mut inputs[at];
                            match kind {
                                Kind::Count => input.count = true,
                                Kind::Sum => (input.count, input.sum) = (true, true),
                                Kind::Avg => (input.count, input.sum, input.avg) = (true, true, true),
                                Kind::Min => (input.count, input.min) = (true, true),
                                Kind::Max => (input.count, input.max) = (true, true),
                                Kind::CountStar => {}
                            }
                        }
                    }
                    Err(why) => refused = Some(why),
                },
                _ => {}
            }
            if refused.is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        if let Some(why) = refused {
            return Err(why);
        }
        Ok(Shape {
            source: name.to_string(),
            alias: alias.to_string(),
            joins,
            joined,
            filter: select.selection.as_ref().map(ToString::to_string),
            keys,
            inputs,
            query: *query,
        })
    }
}

/// `f` as an aggregate kept here (None: another function), with its argument (None for
/// `count(*)`); an error for a form that is not kept (`DISTINCT`, `FILTER`, `OVER`, …).
fn classify(f: &ast::Function) -> std::result::Result<Option<(Kind, Option<&Expr>)>, String> {
    if f.over.is_some() {
        return Err("a window function".into());
    }
    let name = f.name.to_string().to_lowercase();
    let kind = match name.as_str() {
        "count" => Kind::Count,
        "sum" => Kind::Sum,
        "avg" => Kind::Avg,
        "min" => Kind::Min,
        "max" => Kind::Max,
        _ => return Ok(None),
    };
    let FunctionArguments::List(list) = &f.args else { return Err(format!("{name} without arguments")) };
    let plain = f.filter.is_none()
        && f.within_group.is_empty()
        && f.null_treatment.is_none()
        && matches!(f.parameters, FunctionArguments::None)
        && list.clauses.is_empty()
        && matches!(list.duplicate_treatment, None | Some(DuplicateTreatment::All));
    match (plain, list.args.as_slice()) {
        (true, [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) if kind == Kind::Count => {
            Ok(Some((Kind::CountStar, None)))
        }
        (true, [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))]) => Ok(Some((kind, Some(e)))),
        _ => Err(format!("{name} with DISTINCT, FILTER or other arguments")),
    }
}

/// The name and alias of a table read as it is (no function, version, sample, hint or column
/// aliases).
fn plain_table(relation: &TableFactor) -> std::result::Result<(&ast::ObjectName, Option<&Ident>), String> {
    let TableFactor::Table { name, alias, args: None, with_hints, version: None, partitions, sample: None, .. } =
        relation
    else {
        return Err(format!("{relation}: not a table"));
    };
    if !with_hints.is_empty() || !partitions.is_empty() || alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return Err("table hints or column aliases".into());
    }
    Ok((name, alias.as_ref().map(|a| &a.name)))
}

/// An identifier as DataFusion resolves it: unquoted ones in lower case.
fn normalized(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// A [`Shape`] with the types of its sums and averages, ready to build.
#[derive(Debug)]
pub struct Plan {
    shape: Shape,
    /// Per input: the type of its sum (when summed).
    sums: Vec<Option<DataType>>,
    /// Per input: the decimal average's (precision, scale), or None (an integer average: a double).
    averages: Vec<Option<(u8, i8)>>,
    /// SHA-256 of the model's SQL.
    sql_sha256: String,
    /// Per group key: whether it is a string (compared as `Utf8`: tables read as `Utf8View` and
    /// batches holding `Utf8` do not join on it directly).
    strings: Vec<bool>,
    /// Per input with a `min` or `max`: the type its extremes are kept in.
    values: Vec<Option<DataType>>,
}

impl Plan {
    /// The plan for `sql` of shape `shape` in `ctx` (where the source is registered), or why it is
    /// not kept (a floating-point sum, a SELECT list the state cannot answer, …).
    pub async fn new(ctx: &SessionContext, shape: Shape, sql: &str) -> std::result::Result<Plan, String> {
        let mut sums = vec![None; shape.inputs.len()];
        let mut averages = vec![None; shape.inputs.len()];
        let mut values = vec![None; shape.inputs.len()];
        if !shape.inputs.is_empty() {
            // Planned only: the type of each input, and of the sum of each summed one.
            let mut list = Vec::new();
            for i in &shape.inputs {
                list.push(format!("({})", i.sql));
                if i.sum {
                    list.push(format!("sum({})", i.sql));
                }
            }
            let groups: Vec<String> = shape.inputs.iter().map(|i| format!("({})", i.sql)).collect();
            let probe = format!(
                "SELECT {} FROM {} AS {}{} GROUP BY {}",
                list.join(", "),
                shape.source,
                shape.alias,
                shape.joins,
                groups.join(", ")
            );
            let plan = ctx.state().create_logical_plan(&probe).await.map_err(|e| e.to_string())?;
            let schema = plan.schema();
            let mut at = 0;
            for (j, input) in shape.inputs.iter().enumerate() {
                let arg = schema.field(at).data_type().clone();
                at += 1;
                if input.min || input.max {
                    values[j] = Some(match arg {
                        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                        ref t => t.clone(),
                    });
                }
                if !input.sum {
                    continue;
                }
                match &arg {
                    DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {}
                    DataType::Decimal128(p, s) => {
                        if input.avg {
                            averages[j] = Some(((*p + 4).min(38), (*s + 4).min(38)));
                        }
                    }
                    other => return Err(format!("sum or avg of {} ({other}): not exact", input.sql)),
                }
                sums[j] = Some(schema.field(at).data_type().clone());
                at += 1;
            }
        }
        let sql_sha256 = Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let strings = vec![false; shape.keys.len()];
        let mut plan = Plan { shape, sums, averages, sql_sha256, strings, values };
        plan.register_functions(ctx);
        // The SELECT list must be answerable from the state alone: planned over an empty state, it
        // reads no other column and aggregates nothing more (`stddev`, say, would).
        let state = ctx.sql(&plan.source_state(None)).await.map_err(|e| e.to_string())?;
        let schema: SchemaRef = Arc::new(state.schema().as_arrow().clone());
        plan.strings = (0..plan.shape.keys.len())
            .map(|i| matches!(schema.field(i).data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8))
            .collect();
        let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| e.to_string())?;
        ctx.register_table(STATE, Arc::new(empty)).map_err(|e| e.to_string())?;
        let result = match plan.result_sql() {
            Ok(q) => ctx.state().create_logical_plan(&q).await.map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        ctx.deregister_table(STATE).map_err(|e| e.to_string())?;
        let aggregates = result?
            .exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_))))
            .map_err(|e| e.to_string())?;
        if aggregates {
            return Err("an aggregate other than count, sum, avg, min and max".into());
        }
        Ok(plan)
    }

    fn state_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = self.shape.keys.iter().map(|(_, k)| crate::spec::ident(k)).collect();
        columns.push(N.into());
        for (j, i) in self.shape.inputs.iter().enumerate() {
            if i.count {
                columns.push(format!("__c{j}"));
            }
            if i.sum {
                columns.push(format!("__s{j}"));
            }
            if i.min {
                columns.push(format!("__lo{j}"));
            }
            if i.max {
                columns.push(format!("__hi{j}"));
            }
        }
        columns
    }

    fn sum_type(&self, j: usize) -> String {
        self.sums[j].as_ref().map(ToString::to_string).unwrap_or_default()
    }

    /// `SELECT <keys>, <select> FROM <from> AS <alias> [<joins>] [WHERE …] GROUP BY <keys>`: per
    /// group of `from`'s rows joined as the model joins the source's, under the model's WHERE and
    /// `extra`.
    fn grouped(&self, select: &[String], from: &str, extra: Option<&str>) -> String {
        let keys = self.shape.keys.iter().map(|(k, name)| format!("{k} AS {}", crate::spec::ident(name)));
        let select: Vec<String> = keys.chain(select.iter().cloned()).collect();
        let alias = &self.shape.alias;
        let filter = match (&self.shape.filter, extra) {
            (Some(f), Some(x)) => format!(" WHERE ({f}) AND ({x})"),
            (Some(f), None) => format!(" WHERE ({f})"),
            (None, Some(x)) => format!(" WHERE ({x})"),
            (None, None) => String::new(),
        };
        let keys: Vec<&str> = self.shape.keys.iter().map(|(k, _)| k.as_str()).collect();
        let joins = &self.shape.joins;
        format!("SELECT {} FROM {from} AS {alias}{joins}{filter} GROUP BY {}", select.join(", "), keys.join(", "))
    }

    /// `(left IS NOT DISTINCT FROM right)` for group key `i`, comparable across `Utf8` and
    /// `Utf8View`.
    fn same_key(&self, i: usize, left: &str, right: &str) -> String {
        let strings = self.strings.get(i).copied().unwrap_or(false);
        let key = |e: &str| if strings { format!("arrow_cast({e}, 'Utf8')") } else { e.to_string() };
        format!("({} IS NOT DISTINCT FROM {})", key(left), key(right))
    }

    /// The state of every group, computed from the source (`extra`: a further condition).
    fn source_state(&self, extra: Option<&str>) -> String {
        let mut select = vec![format!("count(*) AS {N}")];
        for (j, i) in self.shape.inputs.iter().enumerate() {
            let e = &i.sql;
            if i.count {
                select.push(format!("count({e}) AS __c{j}"));
            }
            if i.sum {
                select.push(format!("arrow_cast(coalesce(sum({e}), 0), '{}') AS __s{j}", self.sum_type(j)));
            }
            // The group's least and greatest values, as many as are kept.
            if i.min {
                select.push(format!("{}({e}) AS __lo{j}", self.kept_of(j, false)));
            }
            if i.max {
                select.push(format!("{}({e}) AS __hi{j}", self.kept_of(j, true)));
            }
        }
        self.grouped(&select, &self.shape.source, extra)
    }

    /// Per group, what the changes add and take away: the change rows (`__rows`), signed counts
    /// and sums, and of inputs with a `min` or `max` the values removed (`__out{j}`) and the least
    /// (`__addlo{j}`) and greatest (`__addhi{j}`) values added. Only as many added values as are
    /// kept can be among the group's kept values, so the others are not collected.
    fn delta_sql(&self) -> String {
        // Qualified: a joined table may have a column of the name.
        let sign = format!("{}.__sign", self.shape.alias);
        let mut select = vec![format!("sum({sign}) AS {N}"), format!("count(*) AS {ROWS}")];
        for (j, i) in self.shape.inputs.iter().enumerate() {
            let e = &i.sql;
            if i.count {
                select.push(format!("sum(CASE WHEN ({e}) IS NOT NULL THEN {sign} ELSE 0 END) AS __c{j}"));
            }
            if i.sum {
                select.push(format!(
                    "arrow_cast(coalesce(sum(CASE WHEN {sign} > 0 THEN {e} END), 0) - \
                     coalesce(sum(CASE WHEN {sign} < 0 THEN {e} END), 0), '{}') AS __s{j}",
                    self.sum_type(j)
                ));
            }
            if i.min || i.max {
                select.push(format!("array_agg({e}) FILTER (WHERE {sign} < 0 AND ({e}) IS NOT NULL) AS __out{j}"));
            }
            for (added, on, descending) in [("__addlo", i.min, false), ("__addhi", i.max, true)] {
                if on {
                    select
                        .push(format!("{}({e}) FILTER (WHERE {sign} > 0) AS {added}{j}", self.kept_of(j, descending)));
                }
            }
        }
        let signed = format!(
            "(SELECT *, CASE WHEN _change_type IN ('insert', 'update_postimage') THEN 1 ELSE -1 END AS __sign \
             FROM {CHANGES})"
        );
        self.grouped(&select, &signed, None)
    }

    /// The state brought forward by the delta, with `__dirty` on groups whose kept least or
    /// greatest values the changes emptied ([`super::extremes`]: recomputed from the source).
    fn merge_sql(&self) -> String {
        let mut select: Vec<String> = self
            .shape
            .keys
            .iter()
            .map(|(_, k)| {
                let k = crate::spec::ident(k);
                format!("coalesce(s.{k}, d.{k}) AS {k}")
            })
            .collect();
        select.push(format!("coalesce(s.{N}, 0) + coalesce(d.{N}, 0) AS {N}"));
        let mut dirty = vec!["false".to_string()];
        for (j, i) in self.shape.inputs.iter().enumerate() {
            if i.count {
                select.push(format!("coalesce(s.__c{j}, 0) + coalesce(d.__c{j}, 0) AS __c{j}"));
            }
            if i.sum {
                select.push(format!(
                    "arrow_cast(coalesce(s.__s{j}, 0) + coalesce(d.__s{j}, 0), '{}') AS __s{j}",
                    self.sum_type(j)
                ));
            }
            for (kept, added, on, descending) in [("__lo", "__addlo", i.min, false), ("__hi", "__addhi", i.max, true)] {
                if on {
                    let f = self.extremes(j, descending);
                    select.push(format!("{f}(s.{kept}{j}, s.__c{j}, d.__out{j}, d.{added}{j}) AS {kept}{j}"));
                    dirty.push(format!("(__c{j} > 0 AND coalesce(cardinality({kept}{j}), 0) = 0)"));
                }
            }
        }
        let on: Vec<String> = self
            .shape
            .keys
            .iter()
            .enumerate()
            .map(|(i, (_, k))| {
                let k = crate::spec::ident(k);
                self.same_key(i, &format!("s.{k}"), &format!("d.{k}"))
            })
            .collect();
        format!(
            "SELECT *, coalesce({}, false) AS __dirty FROM (SELECT {} FROM {STATE} AS s FULL OUTER JOIN {DELTA} AS d ON {})",
            dirty.join(" OR "),
            select.join(", "),
            on.join(" AND ")
        )
    }

    /// The next state: the merged groups still holding rows and not dirty, and the dirty ones
    /// recomputed from the source (`dirty`: whether there are any).
    fn next_sql(&self, dirty: bool) -> String {
        let columns = self.state_columns().join(", ");
        let kept = format!("SELECT {columns} FROM {MERGED} WHERE NOT __dirty AND {N} > 0");
        if !dirty {
            return kept;
        }
        // The dirty keys are renamed so that no column of theirs hides one the keys read.
        let (mut renamed, mut same) = (Vec::new(), Vec::new());
        for (i, (k, name)) in self.shape.keys.iter().enumerate() {
            renamed.push(format!("{} AS __dirty{i}", crate::spec::ident(name)));
            same.push(self.same_key(i, &format!("__medallion_d.__dirty{i}"), k));
        }
        let recomputed = self.source_state(Some(&format!(
            "EXISTS (SELECT 1 FROM (SELECT {} FROM {DIRTY}) AS __medallion_d WHERE {})",
            renamed.join(", "),
            same.join(" AND ")
        )));
        format!("{kept} UNION ALL SELECT {columns} FROM ({recomputed}) AS r")
    }

    /// The model's rows from the state: its SELECT list with each aggregate read from the state,
    /// its ORDER BY, no WHERE or GROUP BY.
    fn result_sql(&self) -> std::result::Result<String, String> {
        let mut query = self.shape.query.clone();
        let SetExpr::Select(select) = &mut *query.body else { return Err("not a SELECT".into()) };
        let from = format!("SELECT 1 FROM {STATE} AS {}", self.shape.alias);
        let Some(Statement::Query(q)) = Parser::parse_sql(&GenericDialect {}, &from).map_err(|e| e.to_string())?.pop()
        else {
            return Err("state relation".into());
        };
        let SetExpr::Select(state) = *q.body else { return Err("state relation".into()) };
        select.from = state.from;
        select.selection = None;
        select.group_by = GroupByExpr::Expressions(Vec::new(), Vec::new());
        let mut failed = None;
        let _ = ast::visit_expressions_mut(&mut query, |e: &mut Expr| {
            let Expr::Function(f) = e else { return ControlFlow::Continue(()) };
            let replacement = match classify(f) {
                Ok(Some((kind, arg))) => {
                    let j = arg.and_then(|a| {
                        let text = a.to_string();
                        self.shape.inputs.iter().position(|i| i.sql == text)
                    });
                    self.replacement(kind, j)
                }
                Ok(None) => return ControlFlow::Continue(()),
                Err(why) => Err(why),
            };
            match replacement.and_then(|r| {
                Parser::new(&GenericDialect {})
                    .try_with_sql(&r)
                    .and_then(|mut p| p.parse_expr())
                    .map_err(|e| e.to_string())
            }) {
                Ok(r) => {
                    *e = r;
                    ControlFlow::Continue(())
                }
                Err(why) => {
                    failed = Some(why);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(why) = failed {
            return Err(why);
        }
        // The group keys the SELECT list and ORDER BY repeat as written are read from the state.
        let _ = ast::visit_expressions_mut(&mut query, |e: &mut Expr| {
            let text = e.to_string();
            if let Some((_, name)) = self.shape.keys.iter().find(|(k, _)| *k == text) {
                *e = Expr::Identifier(Ident::with_quote('"', name.as_str()));
            }
            ControlFlow::<()>::Continue(())
        });
        Ok(query.to_string())
    }

    /// What an aggregate of `kind` over input `j` reads from the state.
    fn replacement(&self, kind: Kind, j: Option<usize>) -> std::result::Result<String, String> {
        if kind == Kind::CountStar {
            return Ok(N.to_string());
        }
        let j = j.ok_or("an aggregate's input is lost")?;
        Ok(match kind {
            Kind::CountStar => N.to_string(),
            Kind::Count => format!("__c{j}"),
            Kind::Sum => format!("CASE WHEN __c{j} > 0 THEN __s{j} END"),
            Kind::Avg => match self.averages[j] {
                Some((p, s)) => format!("{}(__s{j}, __c{j})", average_name(p, s)),
                None => format!("CASE WHEN __c{j} > 0 THEN CAST(__s{j} AS DOUBLE) / CAST(__c{j} AS DOUBLE) END"),
            },
            Kind::Min => format!("__lo{j}[1]"),
            Kind::Max => format!("__hi{j}[1]"),
        })
    }

    /// The name of the function keeping input `j`'s least (`descending`: greatest) values.
    fn extremes(&self, j: usize, descending: bool) -> String {
        Extremes::function_name(self.values[j].as_ref().unwrap_or(&DataType::Null), descending)
    }

    /// The aggregate taking the kept values of input `j` from its rows.
    fn kept_of(&self, j: usize, descending: bool) -> String {
        KeptOf::function_name(self.values[j].as_ref().unwrap_or(&DataType::Null), descending)
    }

    /// Registers the functions its SQL calls in `ctx`.
    fn register_functions(&self, ctx: &SessionContext) {
        for (j, avg) in self.averages.iter().enumerate() {
            if let (Some((precision, scale)), Some(DataType::Decimal128(_, sum_scale))) = (avg, &self.sums[j]) {
                ctx.register_udf(ScalarUDF::new_from_impl(DecimalAverage::new(*precision, *scale, *sum_scale)));
            }
        }
        for t in self.values.iter().flatten() {
            for descending in [false, true] {
                ctx.register_udf(ScalarUDF::new_from_impl(Extremes::new(t.clone(), descending)));
                ctx.register_udaf(AggregateUDF::new_from_impl(KeptOf::new(t.clone(), descending)));
            }
        }
    }
}

/// What bringing the state forward did.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// The model's rows.
    pub rows: Vec<RecordBatch>,
    /// The change rows applied (None: the state was computed from the source).
    pub changes: Option<u64>,
    /// Groups whose `min` or `max` was recomputed from the source.
    pub recomputed: u64,
    /// The new state, the source version it reflects and the joined tables' versions it holds
    /// for, to save once the model is published.
    state: Vec<RecordBatch>,
    version: i64,
    joined: Value,
}

/// The name of `model`'s state table in the system layer.
pub fn state_name(model: &str) -> String {
    format!("aggregates/{model}")
}

/// The state table of `model`.
async fn state_table(lake: &Lake, model: &str) -> Result<Table> {
    Table::open(lake, Layer::System, &state_name(model)).await
}

/// The model's rows, from its state brought forward by the source's changes (or computed from
/// the source when the state does not apply, or `from_scratch`). `ctx` has the source registered
/// at the snapshot of `source`, and the tables it joins at theirs, whose versions (and ids) are
/// `joined`: a state saved with other versions of them is recomputed.
pub async fn build(
    lake: &Lake,
    ctx: &SessionContext,
    plan: &Plan,
    (model, source, joined): (&str, &Table, Value),
    from_scratch: bool,
) -> Result<Kept> {
    let context = format!("gold model `{model}`, kept from the changes of {}", source.label);
    let sql = |e| Error::sql(&context, e);
    let version = source.version().unwrap_or(-1);
    plan.register_functions(ctx);
    let saved = state_table(lake, model).await?;
    let mut changes = None;
    if !from_scratch && saved.exists() {
        let info = saved.last_commit_info().await?;
        let recorded = info.get("medallion").and_then(|m| m.get("aggregates"));
        let field = |k: &str| recorded.and_then(|r| r.get(k));
        let same = field("layout").and_then(Value::as_u64) == Some(LAYOUT)
            && field("sql_sha256").and_then(Value::as_str) == Some(plan.sql_sha256.as_str())
            && field("source").and_then(Value::as_str) == Some(source.label.as_str())
            && field("joined").unwrap_or(&json!({})) == &joined;
        if let Some(after) = field("version").and_then(Value::as_i64).filter(|v| same && *v <= version) {
            changes = source.change_feed_after(after).await?;
        }
    }
    let mut kept = Kept { version, joined, ..Default::default() };
    let state = match changes {
        None => crate::catalog::query(ctx, &plan.source_state(None), &context).await?,
        Some(feed) => {
            let old = saved.provider(ctx).await?;
            ctx.register_table(STATE, old).map_err(sql)?;
            let t = std::time::Instant::now();
            let next = forward(ctx, plan, feed, &context).await;
            tracing::debug!(model, ms = t.elapsed().as_millis() as u64, "state brought forward");
            for name in [STATE, CHANGES, DELTA, MERGED, DIRTY] {
                ctx.deregister_table(name).map_err(sql)?;
            }
            match next? {
                Some(Forward { state, rows, recomputed }) => {
                    kept.changes = Some(rows);
                    kept.recomputed = recomputed;
                    state
                }
                None => {
                    // A group with fewer rows than changes removed: the state is not this source's.
                    tracing::warn!(model, "aggregate state inconsistent with {}; recomputed", source.label);
                    crate::catalog::query(ctx, &plan.source_state(None), &context).await?
                }
            }
        }
    };
    let schema = match state.first() {
        Some(b) => b.schema(),
        None => Arc::new(ctx.sql(&plan.source_state(None)).await.map_err(sql)?.schema().as_arrow().clone()),
    };
    let mem = MemTable::try_new(schema.clone(), vec![state.clone()]).map_err(sql)?;
    ctx.register_table(STATE, Arc::new(mem)).map_err(sql)?;
    let rows = match plan.result_sql() {
        Ok(q) => crate::catalog::query(ctx, &q, &context).await,
        Err(why) => Err(Error::Internal(format!("{context}: {why}"))),
    };
    ctx.deregister_table(STATE).map_err(sql)?;
    kept.rows = rows?;
    kept.state = if state.is_empty() { vec![RecordBatch::new_empty(schema)] } else { state };
    Ok(kept)
}

/// A state brought forward.
struct Forward {
    state: Vec<RecordBatch>,
    /// The change rows applied (those the model's `WHERE` keeps).
    rows: u64,
    /// Groups recomputed from the source.
    recomputed: u64,
}

/// The state after the changes `feed` holds: None when a group would hold fewer than no rows.
async fn forward(ctx: &SessionContext, plan: &Plan, feed: Feed, context: &str) -> Result<Option<Forward>> {
    let sql = |e| Error::sql(context, e);
    let Feed::Rows(changes) = feed else {
        // Nothing changed: the state stands.
        let state =
            crate::catalog::query(ctx, &format!("SELECT {} FROM {STATE}", plan.state_columns().join(", ")), context)
                .await?;
        return Ok(Some(Forward { state, rows: 0, recomputed: 0 }));
    };
    // The feed is read by the delta's query: only the columns the model uses.
    ctx.register_table(CHANGES, changes).map_err(sql)?;
    let t = std::time::Instant::now();
    let (schema, delta) = collect_with_schema(ctx, &plan.delta_sql(), context).await?;
    let delta_ms = t.elapsed().as_millis() as u64;
    let rows: u64 = delta
        .iter()
        .filter_map(|b| b.column_by_name(ROWS))
        .map(|c| c.as_primitive::<Int64Type>().iter().flatten().sum::<i64>().max(0) as u64)
        .sum();
    ctx.register_table(DELTA, Arc::new(MemTable::try_new(schema, vec![delta]).map_err(sql)?)).map_err(sql)?;
    let (schema, merged) = collect_with_schema(ctx, &plan.merge_sql(), context).await?;
    tracing::debug!(
        delta_ms,
        merge_ms = t.elapsed().as_millis() as u64 - delta_ms,
        "changes read, aggregated and merged"
    );
    let (mut negative, mut dirty) = (false, 0u64);
    for b in &merged {
        let n = b.column_by_name(N).map(|c| c.as_primitive::<Int64Type>());
        negative |= n.is_some_and(|n| n.iter().any(|v| v.is_some_and(|v| v < 0)));
        if let Some(d) = b.column_by_name("__dirty") {
            dirty += d.as_boolean().true_count() as u64;
        }
    }
    if negative {
        return Ok(None);
    }
    ctx.register_table(MERGED, Arc::new(MemTable::try_new(schema, vec![merged]).map_err(sql)?)).map_err(sql)?;
    if dirty > 0 {
        let keys: Vec<String> = plan.shape.keys.iter().map(|(_, k)| crate::spec::ident(k)).collect();
        let dirty_rows =
            ctx.sql(&format!("SELECT {} FROM {MERGED} WHERE __dirty", keys.join(", "))).await.map_err(sql)?;
        ctx.register_table(DIRTY, dirty_rows.into_view()).map_err(sql)?;
    }
    let state = crate::catalog::query(ctx, &plan.next_sql(dirty > 0), context).await?;
    Ok(Some(Forward { state, rows, recomputed: dirty }))
}

/// The rows of `sql` with their schema (also when there are none).
async fn collect_with_schema(ctx: &SessionContext, sql: &str, context: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = crate::catalog::read_only(ctx, sql, context).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await.map_err(|e| Error::sql(context, e))?))
}

/// Saves the state `kept` was built with, after the model's rows were published.
pub async fn save(lake: &Lake, plan: &Plan, (model, source): (&str, &Table), kept: Kept) -> Result<()> {
    let metadata = HashMap::from([(
        "medallion".to_string(),
        json!({ "aggregates": {
            "layout": LAYOUT, "source": source.label, "version": kept.version, "sql_sha256": plan.sql_sha256,
            "joined": kept.joined,
        } }),
    )]);
    let state = kept
        .state
        .iter()
        .map(|b| plain_strings(b).map_err(|e| Error::arrow(format!("aggregate state of gold/{model}"), e)))
        .collect::<Result<Vec<_>>>()?;
    state_table(lake, model)
        .await?
        .write(state, WriteOptions { overwrite: true, metadata, ..Default::default() })
        .await?;
    Ok(())
}

/// `batch` with its string views as plain strings, as Delta stores them.
fn plain_strings(batch: &RecordBatch) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if f.data_type() == &DataType::Utf8View {
            columns.push(cast(c, &DataType::Utf8)?);
            fields.push(Field::new(f.name(), DataType::Utf8, true));
        } else if let DataType::List(item) = f.data_type()
            && item.data_type() == &DataType::Utf8View
        {
            let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
            columns.push(cast(c, &list)?);
            fields.push(Field::new(f.name(), list, true));
        } else {
            columns.push(Arc::clone(c));
            fields.push(f.as_ref().clone().with_nullable(true));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

fn average_name(precision: u8, scale: i8) -> String {
    format!("__medallion_avg_{precision}_{scale}")
}

/// `avg` of a decimal from its sum and count, as DataFusion's `avg` computes it: the sum scaled
/// to the result's scale, divided by the count with the remainder dropped; null for no values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DecimalAverage {
    name: String,
    precision: u8,
    scale: i8,
    sum_scale: i8,
    signature: Signature,
}

impl DecimalAverage {
    fn new(precision: u8, scale: i8, sum_scale: i8) -> Self {
        let signature = Signature::any(2, Volatility::Immutable);
        Self { name: average_name(precision, scale), precision, scale, sum_scale, signature }
    }
}

impl ScalarUDFImpl for DecimalAverage {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Decimal128(self.precision, self.scale))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        use datafusion::common::exec_err;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [sums, counts] = arrays.as_slice() else { return exec_err!("{} takes a sum and a count", self.name) };
        let sums = cast(sums, &DataType::Decimal128(38, self.sum_scale))?;
        let counts = cast(counts, &DataType::Int64)?;
        let (sums, counts) = (sums.as_primitive::<Decimal128Type>(), counts.as_primitive::<Int64Type>());
        let factor = 10i128.pow(u32::try_from(self.scale - self.sum_scale).unwrap_or(0));
        let mut out = Vec::with_capacity(sums.len());
        for (sum, count) in sums.iter().zip(counts.iter()) {
            out.push(match (sum, count) {
                (Some(sum), Some(count)) if count > 0 => {
                    let Some(scaled) = sum.checked_mul(factor) else {
                        return exec_err!("Arithmetic Overflow in AvgAccumulator");
                    };
                    Some(scaled / i128::from(count))
                }
                _ => None,
            });
        }
        let avg = Decimal128Array::from(out).with_precision_and_scale(self.precision, self.scale)?;
        avg.validate_decimal_precision(self.precision)?;
        Ok(ColumnarValue::Array(Arc::new(avg)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;

    use super::*;

    fn refused(sql: &str) -> String {
        Shape::of(sql).expect_err(sql)
    }

    #[test]
    fn the_shapes_kept_and_the_ones_not() {
        let s = Shape::of(
            "SELECT order_date, region, COUNT(*) AS n, SUM(amount) AS revenue, ROUND(AVG(amount), 2) AS avg, \
             MIN(amount) AS lo, MAX(amount) AS hi FROM orders WHERE amount > 0 GROUP BY order_date, region ORDER BY 1",
        )
        .expect("kept");
        assert_eq!(s.source, "orders");
        assert_eq!(s.keys, vec![("order_date".into(), "order_date".into()), ("region".into(), "region".into())]);
        assert!(s.joined.is_empty() && s.joins.is_empty());
        assert_eq!(s.inputs.len(), 1, "one input for five aggregates of amount");
        let i = &s.inputs[0];
        assert!(i.count && i.sum && i.avg && i.min && i.max);
        assert_eq!(s.filter.as_deref(), Some("amount > 0"));
        let s = Shape::of("SELECT o.day AS d, count(o.x) FROM silver.orders AS o GROUP BY 1").expect("kept");
        assert_eq!(s.keys, vec![("o.day".into(), "day".into())]);
        assert!(refused("SELECT a, count(DISTINCT b) FROM t GROUP BY a").contains("DISTINCT"));
        assert!(refused("SELECT a, sum(b) FILTER (WHERE b > 0) FROM t GROUP BY a").contains("FILTER"));
        assert!(refused("SELECT a, sum(b) FROM t GROUP BY a HAVING sum(b) > 0").contains("HAVING"));
        // Inner and left joins, keys of the joined tables and expressions (named by place).
        let s = Shape::of(
            "SELECT o.day, coalesce(c.tier, 'none') AS tier, sum(o.x) FROM silver.orders AS o \
             LEFT JOIN dim AS c ON o.cid = c.cid JOIN regions USING (region) GROUP BY o.day, 2, c.tier",
        )
        .expect("kept");
        assert_eq!(
            (s.source.as_str(), s.joined.as_slice()),
            ("silver.orders", ["dim".to_string(), "regions".into()].as_slice())
        );
        assert_eq!(s.joins, " LEFT JOIN dim AS c ON o.cid = c.cid JOIN regions USING(region)");
        assert_eq!(
            s.keys,
            vec![
                ("o.day".into(), "day".into()),
                ("coalesce(c.tier, 'none')".into(), "__g1".into()),
                ("c.tier".into(), "__g2".into())
            ]
        );
        for join in ["RIGHT JOIN", "FULL OUTER JOIN", "LEFT ANTI JOIN"] {
            assert!(
                refused(&format!("SELECT a, sum(b) FROM t {join} u USING (a) GROUP BY a"))
                    .contains("not an inner or left join"),
                "{join}"
            );
        }
        assert!(
            refused("SELECT a, sum(b) FROM t JOIN (SELECT a FROM u) AS v USING (a) GROUP BY a").contains("not a table")
        );
        assert!(refused("SELECT a, sum(b) FROM t, u GROUP BY a").contains("not one table"));
        assert!(refused("SELECT a, sum(b) OVER () FROM t GROUP BY a").contains("window"));
        assert!(refused("SELECT sum(b) FROM t").contains("GROUP BY"));
        assert!(refused("SELECT upper(a), sum(b) FROM t GROUP BY upper(a), upper(a)").contains("repeated"));
        assert!(refused("SELECT a, sum(b) FROM t WHERE a IN (SELECT a FROM u) GROUP BY a").contains("subquery"));
        assert!(refused("SELECT a, sum(b) FROM t GROUP BY a LIMIT 3").contains("LIMIT"));
    }

    #[test]
    fn a_decimal_average_drops_the_remainder_like_datafusion() {
        let avg = DecimalAverage::new(22, 6, 2);
        // 10.00 / 3 = 3.333333; -10.00 / 3 = -3.333333 (towards zero); no values: null.
        let sums = Decimal128Array::from(vec![Some(1000i128), Some(-1000), Some(0)])
            .with_precision_and_scale(28, 2)
            .expect("decimal");
        let counts = datafusion::arrow::array::Int64Array::from(vec![3, 3, 0]);
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(sums)), ColumnarValue::Array(Arc::new(counts))],
            arg_fields: vec![],
            number_rows: 3,
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new("a", DataType::Decimal128(22, 6), true)),
            config_options: Arc::new(Default::default()),
        };
        let out = avg.invoke_with_args(args).expect("avg").into_array(3).expect("an array");
        let out = out.as_primitive::<Decimal128Type>();
        assert_eq!(out.value(0), 3_333_333);
        assert_eq!(out.value(1), -3_333_333);
        assert!(out.is_null(2));
    }
}
