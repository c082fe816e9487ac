//! `count(DISTINCT k)` over a table that holds one row per `k` is `count(k)`, and `count(*)` when
//! `k` is never null. A silver table kept
//! as the latest row per key (SCD 1) holds one row per key by construction, and reconciling gold
//! with it by `count(DISTINCT order_id)` is the usual check. DataFusion does not know the key is
//! unique, so it hashes every key of the table to count them: on 4.3M rows, 0.6 s against 0.1 s
//! for `count(order_id)`, every run, growing with the table.
//!
//! Sessions note which registered tables are unique on which column ([`mark`]); the analyzer rule
//! [`DistinctOfUnique`] drops the `DISTINCT` of a `count` whose one argument is such a column,
//! read straight from the table or through filters, sorts, limits, aliases and projections that
//! pass the column on (anything else, a join, a union, an aggregate, keeps it). When the table
//! also holds no null `k` (its log's statistics say so: every live file's null count of `k` is 0),
//! the count becomes `count(*)`, which reads no column (the reconciliation above read every key
//! of the table to count them). Output names stay as written.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use datafusion::catalog::TableProvider;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::utils::expr::COUNT_STAR_EXPANSION;
use datafusion::config::ConfigOptions;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

/// The tables of a session known to hold one row per value of a column. The providers are held,
/// so an address is never reused by another table while the session lives.
#[derive(Default)]
pub struct UniqueKeys(RwLock<Vec<Marked>>);

/// A table marked unique on a column.
struct Marked {
    provider: Arc<dyn TableProvider>,
    key: String,
    never_null: bool,
}

impl UniqueKeys {
    /// The unique column of `provider` and whether it is never null, if it is marked.
    fn key_of(&self, provider: &Arc<dyn TableProvider>) -> Option<(String, bool)> {
        let tables = self.0.read().unwrap_or_else(PoisonError::into_inner);
        tables.iter().find(|m| same(&m.provider, provider)).map(|m| (m.key.clone(), m.never_null))
    }

    fn is_empty(&self) -> bool {
        self.0.read().unwrap_or_else(PoisonError::into_inner).is_empty()
    }
}

impl fmt::Debug for UniqueKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables = self.0.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_list().entries(tables.iter().map(|m| (&m.key, m.never_null))).finish()
    }
}

/// The same provider (data pointers compared; vtables may differ between codegen units).
fn same(a: &Arc<dyn TableProvider>, b: &Arc<dyn TableProvider>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Notes in `ctx` (a session of [`super::new_session`]) that `provider` holds one row per value of
/// its column `key`, and whether `key` is `never_null`. The caller vouches for both: a wrong mark
/// makes `count(DISTINCT key)` count repeats (or nulls).
pub fn mark(ctx: &SessionContext, provider: &Arc<dyn TableProvider>, key: &str, never_null: bool) {
    let state = ctx.state_ref();
    let state = state.read();
    if let Some(keys) = state.config().get_extension::<UniqueKeys>() {
        keys.0.write().unwrap_or_else(PoisonError::into_inner).push(Marked {
            provider: Arc::clone(provider),
            key: key.to_string(),
            never_null,
        });
    }
}

/// The analyzer rule: see the module's documentation.
#[derive(Debug)]
pub struct DistinctOfUnique(pub Arc<UniqueKeys>);

impl AnalyzerRule for DistinctOfUnique {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        if self.0.is_empty() {
            return Ok(plan);
        }
        plan.transform_up_with_subqueries(|plan| {
            let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
            let input = Arc::clone(&aggregate.input);
            let names = NamePreserver::new(&plan);
            let rewritten = plan.map_expressions(|expr| {
                let name = names.save(&expr);
                Ok(self.plain_counts(expr, &input)?.update_data(|e| name.restore(e)))
            })?;
            if !rewritten.transformed {
                return Ok(rewritten);
            }
            rewritten.map_data(LogicalPlan::recompute_schema)
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "medallion_distinct_of_unique"
    }
}

impl DistinctOfUnique {
    /// `expr` (of an aggregate over `input`) with every `count(DISTINCT c)` of a column `c` unique
    /// in `input` counting plainly: `count(c)`, or `count(*)` when `c` is never null.
    fn plain_counts(&self, expr: Expr, input: &LogicalPlan) -> Result<Transformed<Expr>> {
        expr.transform_up(|e| {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = &e else {
                return Ok(Transformed::no(e));
            };
            let unique = match params.args.as_slice() {
                [Expr::Column(c)] if func.name() == "count" && params.distinct => {
                    input.schema().index_of_column(c).ok().and_then(|i| self.unique_at(input, i))
                }
                _ => None,
            };
            match e {
                Expr::AggregateFunction(mut f) if unique.is_some() => {
                    f.params.distinct = false;
                    if unique == Some(true) {
                        f.params.args = vec![Expr::Literal(COUNT_STAR_EXPANSION, None)];
                    }
                    Ok(Transformed::yes(Expr::AggregateFunction(f)))
                }
                e => Ok(Transformed::no(e)),
            }
        })
    }

    /// Whether the `i`th column of `plan`'s output holds no value twice: Some(whether it is never
    /// null besides), or None.
    fn unique_at(&self, plan: &LogicalPlan, i: usize) -> Option<bool> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let field = scan.projected_schema.field(i).name();
                let (key, never_null) = source_as_provider(&scan.source).ok().and_then(|p| self.0.key_of(&p))?;
                (key == *field).then_some(never_null)
            }
            LogicalPlan::Filter(f) => self.unique_at(&f.input, i),
            LogicalPlan::Sort(s) => self.unique_at(&s.input, i),
            LogicalPlan::Limit(l) => self.unique_at(&l.input, i),
            LogicalPlan::SubqueryAlias(a) => self.unique_at(&a.input, i),
            LogicalPlan::Projection(p) => {
                let mut e = match p.expr.get(i) {
                    Some(e) if p.expr.len() == p.schema.fields().len() => e,
                    _ => return None,
                };
                while let Expr::Alias(a) = e {
                    e = &a.expr;
                }
                let Expr::Column(c) = e else { return None };
                p.input.schema().index_of_column(c).ok().and_then(|j| self.unique_at(&p.input, j))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;
    use crate::catalog::{new_session, query};

    /// A table whose `k` repeats a value (1, 1, 2) and `v` does too: marked unique on `k`, the
    /// rewrite shows as `count(DISTINCT k)` counting the repeat.
    fn table() -> Arc<dyn TableProvider> {
        let schema =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true), Field::new("v", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 1, 2])), Arc::new(Int64Array::from(vec![5, 5, 6]))],
        )
        .expect("batch");
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"))
    }

    async fn counts(ctx: &SessionContext, sql: &str) -> Vec<i64> {
        let rows = query(ctx, sql, "test").await.expect("runs");
        let b = &rows[0];
        (0..b.num_columns())
            .map(|i| b.column(i).as_any().downcast_ref::<Int64Array>().expect("int64").value(0))
            .collect()
    }

    /// Only `count(DISTINCT k)` of a marked table's key, read through filters, aliases and
    /// projections, loses its DISTINCT, with its name kept; other columns, unmarked tables and
    /// joins keep it.
    #[tokio::test]
    async fn distinct_count_of_a_unique_key_counts_plainly() {
        let ctx = new_session().expect("session");
        let (marked, other) = (table(), table());
        ctx.register_table("t", Arc::clone(&marked)).expect("register");
        ctx.register_table("u", other).expect("register");
        mark(&ctx, &marked, "k", false);

        // The repeated key (a mark the caller got wrong) is counted twice: the rewrite happened.
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT k), count(DISTINCT v) FROM t").await, vec![3, 2]);
        let through =
            "SELECT count(DISTINCT key) FROM (SELECT k AS key, v FROM t AS a WHERE v > 0 ORDER BY v LIMIT 10)";
        assert_eq!(counts(&ctx, through).await, vec![3]);
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT k) FILTER (WHERE v = 5) FROM t").await, vec![2]);
        let grouped =
            query(&ctx, "SELECT v, count(DISTINCT k) AS n FROM t GROUP BY v ORDER BY v", "test").await.expect("runs");
        let n = grouped[0].column(1).as_any().downcast_ref::<Int64Array>().expect("int64");
        assert_eq!(n.values().to_vec(), vec![2, 1]);
        assert_eq!(grouped[0].schema().field(1).name(), "n");
        let named = query(&ctx, "SELECT count(DISTINCT k) FROM t", "test").await.expect("runs");
        assert_eq!(named[0].schema().field(0).name(), "count(DISTINCT t.k)");

        // Unmarked, another column, through a join or a union: counted as distinct values.
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT k) FROM u").await, vec![2]);
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT t.k) FROM t JOIN u ON t.v = u.v").await, vec![2]);
        assert_eq!(
            counts(&ctx, "SELECT count(DISTINCT k) FROM (SELECT k FROM t UNION ALL SELECT k FROM t)").await,
            vec![2]
        );
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT k + 0) FROM t").await, vec![2]);
    }

    /// A key marked never null counts rows: `count(*)`, reading no column. A null key (a mark the
    /// caller got wrong) then counts, where a key that may be null is counted as `count(k)`.
    #[tokio::test]
    async fn distinct_count_of_a_never_null_unique_key_counts_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![Some(1), None, Some(2)]))])
                .expect("batch");
        let with_null = || -> Arc<dyn TableProvider> {
            Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![batch.clone()]]).expect("table"))
        };
        let ctx = new_session().expect("session");
        let (never, maybe) = (with_null(), with_null());
        ctx.register_table("never", Arc::clone(&never)).expect("register");
        ctx.register_table("maybe", Arc::clone(&maybe)).expect("register");
        mark(&ctx, &never, "k", true);
        mark(&ctx, &maybe, "k", false);
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT k) FROM never").await, vec![3]);
        assert_eq!(
            counts(&ctx, "SELECT count(DISTINCT id) FROM (SELECT k AS id FROM never WHERE true) AS x").await,
            vec![3]
        );
        assert_eq!(counts(&ctx, "SELECT count(DISTINCT k) FROM maybe").await, vec![2]);
        let named = query(&ctx, "SELECT count(DISTINCT k) FROM never", "test").await.expect("runs");
        assert_eq!(named[0].schema().field(0).name(), "count(DISTINCT never.k)");
    }
}
