//! Querying the lake with DataFusion: every table of the project registered in one session.
//!
//! Silver and gold tables are reachable by plain name (`orders`) and qualified (`silver.orders`,
//! `gold.daily_revenue`); dead letters only qualified (`quarantine.orders`); expectation results
//! as `medallion.expectations`, the event log as `medallion.events`. A table not created yet reads
//! as empty with its declared schema. Which tables exist, and their schemas, come from a
//! [`Registry`] (the project).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::storage::delta::{AsOf, Table};
use crate::storage::{Lake, Layer};

pub mod unique;

/// The tables a catalog serves, with the schema each reads as while it does not exist yet. The
/// project implements it; the catalog learns schemas from it, not from the modules writing them.
pub trait Registry: Sync {
    /// Silver and gold tables: (layer, name, declared schema).
    fn published(&self) -> Vec<(Layer, &str, SchemaRef)>;
    /// The schema of every table's dead letter (`quarantine.<name>`).
    fn dead_letter_schema(&self) -> SchemaRef;
    /// The lake's own tables, served as `medallion.<name>`: (name, schema).
    fn system(&self) -> Vec<(&'static str, SchemaRef)>;
    /// The column a published table holds one row per value of, if it is one (a silver table
    /// kept as the latest row per single-column key): queries count its distinct values plainly
    /// ([`unique`]).
    fn unique_key(&self, layer: Layer, name: &str) -> Option<String> {
        let _ = (layer, name);
        None
    }
}

/// The layer a published table `name` is in (gold wins over silver), if any.
pub fn layer_of(tables: &dyn Registry, name: &str) -> Option<Layer> {
    let found = tables.published().into_iter().filter(|(_, n, _)| *n == name).map(|(l, ..)| l).collect::<Vec<_>>();
    found.iter().find(|l| **l == Layer::Gold).or(found.first()).copied()
}

/// The declared schema of the published table `layer/name`.
fn schema_of(tables: &dyn Registry, layer: Layer, name: &str) -> Option<SchemaRef> {
    tables.published().into_iter().find(|(l, n, _)| *l == layer && *n == name).map(|(.., s)| s)
}

/// Whether `plan` calls a function whose value varies between runs of the same SQL over the same
/// rows (`now()`, `current_date`, `random()`: DataFusion's stable and volatile functions).
pub fn varies_between_runs(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::{Expr, Volatility};
    let varies = |e: &Expr| {
        e.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable)))
            .unwrap_or(true)
    };
    plan.exists(|p| Ok(p.expressions().iter().any(varies))).unwrap_or(true)
}

/// A session with every table of `tables` in `lake` registered.
pub async fn session(lake: &Lake, tables: &dyn Registry) -> Result<SessionContext> {
    session_as_of(lake, tables, None).await
}

/// A session with every table as it was at `as_of` (None: now). Tables created later read as
/// empty.
pub async fn session_as_of(lake: &Lake, tables: &dyn Registry, as_of: Option<AsOf>) -> Result<SessionContext> {
    session_with(new_session()?, lake, tables, as_of, &Wanted::all(tables)).await
}

/// A session for running `sql` as of `as_of` (None: now), with only the tables it names
/// registered: opening a table reads its log, on an object store a few requests each. SQL whose
/// tables cannot all be told apart (the information schema, `SHOW TABLES`, another catalog's
/// names, SQL that does not parse) gets every table, as [`session_as_of`].
pub async fn session_reading(
    lake: &Lake,
    tables: &dyn Registry,
    as_of: Option<AsOf>,
    sql: &str,
) -> Result<SessionContext> {
    // The session that parses the query is the one its tables are registered in.
    let ctx = new_session()?;
    let wanted = Wanted::named_in(&ctx, sql).unwrap_or_else(|| Wanted::all(tables));
    session_with(ctx, lake, tables, as_of, &wanted).await
}

/// A session with only the silver and gold tables named in `tables` (no dead letters, no
/// results): opening a Delta table reads its log, so a node's audit opens only what it reads.
pub async fn session_for(lake: &Lake, registry: &dyn Registry, tables: &[&str]) -> Result<SessionContext> {
    session_with(new_session()?, lake, registry, None, &Wanted::published(tables)).await
}

/// A session over tables already opened (layer, name, table): a node that has read their versions
/// computes from exactly those snapshots, and no log is read twice.
pub async fn session_of(registry: &dyn Registry, tables: &[(Layer, &str, Table)]) -> Result<SessionContext> {
    let ctx = new_session()?;
    for (layer, name, table) in tables {
        let schema = schema_of(registry, if *layer == Layer::Gold { Layer::Gold } else { Layer::Silver }, name);
        let schema = schema.ok_or_else(|| Error::Internal(format!("no schema for {}", table.label)))?;
        register_published(&ctx, registry, (*layer, name), provider_of(&ctx, table, schema).await?, Some(table))?;
    }
    Ok(ctx)
}

/// A session with every silver and gold table of `tables` (no dead letters, no system tables on
/// a cluster) whose queries run on `engine`.
pub async fn session_on(lake: &Lake, tables: &dyn Registry, engine: &Engine) -> Result<SessionContext> {
    if *engine == Engine::InProcess {
        return session(lake, tables).await;
    }
    let mut opened = Vec::new();
    for (layer, name, _) in tables.published() {
        opened.push((layer, name, Table::open(lake, layer, name).await?));
    }
    match remote_session(tables, &opened, engine).await? {
        Some(ctx) => Ok(ctx),
        None => session(lake, tables).await,
    }
}

/// Where a node's queries run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// In this process, on its cores.
    #[default]
    InProcess,
    /// On a Ballista cluster's executors, planned by its scheduler.
    #[cfg(feature = "cluster")]
    Cluster(crate::cluster::Cluster),
}

/// A session over tables already opened whose queries run on `engine`'s cluster, each table
/// shipped as its live Parquet files ([`crate::cluster::ShippedTable`]); None in process (use
/// [`session_of`]).
pub async fn remote_session(
    registry: &dyn Registry,
    tables: &[(Layer, &str, Table)],
    engine: &Engine,
) -> Result<Option<SessionContext>> {
    match engine {
        Engine::InProcess => {
            let _ = (registry, tables);
            Ok(None)
        }
        #[cfg(feature = "cluster")]
        Engine::Cluster(cluster) => {
            let ctx = crate::cluster::session(cluster, new_session()?.state()).await?;
            add_schemas(&ctx)?;
            for (layer, name, table) in tables {
                let declared =
                    schema_of(registry, if *layer == Layer::Gold { Layer::Gold } else { Layer::Silver }, name);
                let schema = match table.arrow_schema()? {
                    Some(s) => s,
                    None => declared.ok_or_else(|| Error::Internal(format!("no schema for {}", table.label)))?,
                };
                let files = table.live_files().await?;
                let shipped = crate::cluster::ShippedTable::new(&schema, files)
                    .map_err(|e| Error::sql(format!("reading {}", table.label), e))?;
                register_published(&ctx, registry, (*layer, name), Arc::new(shipped), None)?;
            }
            Ok(Some(ctx))
        }
    }
}

/// Runs `df`, of a [`remote_session`], on the cluster's executors, which write its rows as files of
/// `table` (cast to `schema`'s types) without committing them; returns the files' add actions
/// (see [`Table::commit_files`]).
pub async fn write_on_cluster(df: DataFrame, table: &Table, schema: SchemaRef) -> Result<Vec<String>> {
    #[cfg(feature = "cluster")]
    {
        crate::cluster::write(df, &table.url(), schema).await
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = (df, schema);
        Err(Error::Internal(format!("{}: no cluster in this build (cargo feature `cluster`)", table.label)))
    }
}

/// Registers as `name` in a [`remote_session`] the files `adds` written for `table` and not
/// committed (of `schema`): the executors read them where they are.
pub fn register_written(
    ctx: &SessionContext,
    name: &str,
    table: &Table,
    schema: &SchemaRef,
    adds: &[String],
) -> Result<()> {
    #[cfg(feature = "cluster")]
    {
        let shipped = crate::cluster::ShippedTable::new(schema, table.written_files(adds)?)
            .map_err(|e| Error::sql(format!("reading the written files of {}", table.label), e))?;
        let _ = ctx.deregister_table(name).map_err(|e| Error::sql(format!("staging `{name}`"), e))?;
        ctx.register_table(name, Arc::new(shipped)).map_err(|e| Error::sql(format!("staging `{name}`"), e))?;
        Ok(())
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = (ctx, schema, adds);
        Err(Error::Internal(format!(
            "{}: no cluster in this build (cargo feature `cluster`) for `{name}`",
            table.label
        )))
    }
}

/// Which tables a session registers, by the names a query uses for them: `orders` or
/// `silver.orders` (published), `quarantine.orders`, `medallion.events`.
#[derive(Debug, Default)]
struct Wanted {
    published: BTreeSet<String>,
    quarantine: BTreeSet<String>,
    system: BTreeSet<String>,
}

impl Wanted {
    /// Every table: silver and gold, their dead letters, the lake's own tables.
    fn all(tables: &dyn Registry) -> Self {
        let published: BTreeSet<String> = tables.published().into_iter().map(|(_, n, _)| n.to_string()).collect();
        let system = tables.system().into_iter().map(|(n, _)| n.to_string()).collect();
        Self { quarantine: published.clone(), published, system }
    }

    /// Only the silver and gold tables of these names.
    fn published(names: &[&str]) -> Self {
        Self { published: names.iter().map(|n| n.to_string()).collect(), ..Self::default() }
    }

    /// The tables `sql` names, when every name is one the catalog serves or cannot serve (a name
    /// of another catalog, the information schema, SQL that does not parse: None, every table).
    fn named_in(ctx: &SessionContext, sql: &str) -> Option<Self> {
        use datafusion::common::TableReference;
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).ok()?;
        let default = state.config().options().catalog.default_catalog.clone();
        let mut out = Self::default();
        for r in state.resolve_table_references(&statement).ok()? {
            let (schema, table) = match &r {
                TableReference::Bare { table } => (None, table.to_string()),
                TableReference::Partial { schema, table } => (Some(schema.as_ref()), table.to_string()),
                TableReference::Full { catalog, schema, table } if catalog.as_ref() == default => {
                    (Some(schema.as_ref()), table.to_string())
                }
                TableReference::Full { .. } => return None,
            };
            match schema {
                None | Some("silver" | "gold") => out.published.insert(table),
                Some("quarantine") => out.quarantine.insert(table),
                Some("medallion") => out.system.insert(table),
                Some(_) => return None,
            };
        }
        Some(out)
    }
}

/// `ctx` (a session of [`new_session`]) with the `wanted` tables of `tables` registered.
async fn session_with(
    ctx: SessionContext,
    lake: &Lake,
    tables: &dyn Registry,
    as_of: Option<AsOf>,
    wanted: &Wanted,
) -> Result<SessionContext> {
    let provider = |layer: Layer, name: String, schema: SchemaRef| {
        let ctx = ctx.clone();
        async move { provider(lake, &ctx, layer, &name, schema, as_of).await }
    };
    // Opened side by side: on an object store each open is a few requests in turn.
    let opening = tables.published().into_iter().map(|(layer, name, schema)| {
        let provider = &provider;
        async move {
            let table = if wanted.published.contains(name) {
                Some(provider(layer, name.to_string(), schema).await?)
            } else {
                None
            };
            let dead_letter = if wanted.quarantine.contains(name) {
                Some(provider(Layer::Quarantine, name.to_string(), tables.dead_letter_schema()).await?.1)
            } else {
                None
            };
            Ok::<_, Error>((layer, name, table, dead_letter))
        }
    });
    let system_opening =
        tables.system().into_iter().filter(|(name, _)| wanted.system.contains(*name)).map(|(name, schema)| {
            let provider = &provider;
            async move { Ok::<_, Error>((name, provider(Layer::System, name.to_string(), schema).await?.1)) }
        });
    let (opened, system_opened) = futures::future::try_join(
        futures::future::try_join_all(opening),
        futures::future::try_join_all(system_opening),
    )
    .await?;
    for (layer, name, table, dead_letter) in opened {
        if let Some((table, p)) = table {
            register_published(&ctx, tables, (layer, name), p, Some(&table))?;
        }
        if let Some(q) = dead_letter {
            register(&ctx, &format!("quarantine.{name}"), q)?;
        }
    }
    for (name, p) in system_opened {
        register(&ctx, &format!("medallion.{name}"), p)?;
    }
    Ok(ctx)
}

/// A session with the `silver`, `gold`, `quarantine` and `medallion` schemas and no tables, and
/// medallion's SQL semantics ([`division::FloatDivision`]), drawing on the process's query memory
/// pool ([`crate::runtime::memory::query_pool`]).
pub fn new_session() -> Result<SessionContext> {
    // Before type coercion, which then reconciles what the rewrite changed (`3 / 2 > 1`).
    let mut rules: Vec<Arc<dyn datafusion::optimizer::AnalyzerRule + Send + Sync>> =
        vec![Arc::new(division::FloatDivision)];
    rules.extend(datafusion::optimizer::Analyzer::new().rules);
    // After them: views are inlined, so a count over one sees the table.
    let unique_keys = Arc::new(unique::UniqueKeys::default());
    rules.push(Arc::new(unique::DistinctOfUnique(Arc::clone(&unique_keys))));
    // Every session's operators draw on the process's one pool (`--memory-limit`), spilling to
    // scratch files past it.
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(crate::runtime::memory::query_pool())
        .build_arc()
        .map_err(|e| Error::sql("a query session's runtime", e))?;
    let mut config = datafusion::prelude::SessionConfig::new().with_extension(unique_keys);
    // Planning errors then say where in the SQL they are (a column's span too); spans are
    // ignored when plans compare.
    config.options_mut().sql_parser.collect_spans = true;
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_runtime_env(runtime)
        .with_analyzer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::functions::register(&ctx).map_err(|e| Error::sql("a query session's functions", e))?;
    add_schemas(&ctx)?;
    Ok(ctx)
}

/// The `silver`, `gold`, `quarantine` and `medallion` schemas, empty, in `ctx`'s catalog.
fn add_schemas(ctx: &SessionContext) -> Result<()> {
    let name = ctx.state().config().options().catalog.default_catalog.clone();
    let catalog = ctx.catalog(&name).ok_or_else(|| Error::Internal(format!("no catalog `{name}`")))?;
    for schema in [Layer::Silver.dir(), Layer::Gold.dir(), Layer::Quarantine.dir(), "medallion"] {
        if catalog.schema(schema).is_none() {
            catalog
                .register_schema(schema, Arc::new(MemorySchemaProvider::new()))
                .map_err(|e| Error::sql("registering schemas", e))?;
        }
    }
    Ok(())
}

/// Registers a silver or gold table under its plain name and qualified (`silver.orders`).
pub fn register_table(ctx: &SessionContext, layer: Layer, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
    register(ctx, name, Arc::clone(&provider))?;
    register(ctx, &format!("{layer}.{name}"), provider)
}

/// [`register_table`], noting the table's unique key, if `registry` names one, and whether the
/// key is never null, if `table` (the table `provider` reads) tells from its log.
fn register_published(
    ctx: &SessionContext,
    registry: &dyn Registry,
    (layer, name): (Layer, &str),
    provider: Arc<dyn TableProvider>,
    table: Option<&Table>,
) -> Result<()> {
    if let Some(key) = registry.unique_key(layer, name) {
        let never_null = match table {
            Some(t) => t.never_null(&key)?,
            None => false,
        };
        unique::mark(ctx, &provider, &key, never_null);
    }
    register_table(ctx, layer, name, provider)
}

/// An empty table of `schema`.
pub fn empty(schema: SchemaRef, name: &str) -> Result<Arc<dyn TableProvider>> {
    let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| Error::sql(format!("table `{name}`"), e))?;
    Ok(Arc::new(empty))
}

/// The table a name used in SQL refers to: `orders`, `silver.orders`, `gold.x`, `quarantine.x`.
pub fn resolve(tables: &dyn Registry, name: &str) -> Option<(Layer, String)> {
    let is = |layer: Layer, t: &str| schema_of(tables, layer, t).is_some();
    let (layer, table) = match name.split_once('.') {
        Some(("silver", t)) => (Layer::Silver, t),
        Some(("gold", t)) => (Layer::Gold, t),
        Some(("quarantine", t)) => (Layer::Quarantine, t),
        Some(_) => return None,
        None if is(Layer::Gold, name) => (Layer::Gold, name),
        None => (Layer::Silver, name),
    };
    let known = match layer {
        Layer::Silver | Layer::Gold => is(layer, table),
        _ => is(Layer::Silver, table) || is(Layer::Gold, table),
    };
    known.then(|| (layer, table.to_string()))
}

async fn provider(
    lake: &Lake,
    ctx: &SessionContext,
    layer: Layer,
    name: &str,
    schema: SchemaRef,
    as_of: Option<AsOf>,
) -> Result<(Table, Arc<dyn TableProvider>)> {
    let table = match as_of {
        None => Table::open(lake, layer, name).await?,
        Some(at) => Table::open_as_of(lake, layer, name, at).await?,
    };
    let provider = provider_of(ctx, &table, schema).await?;
    Ok((table, provider))
}

/// An opened table's provider; a table not created yet reads as empty with `schema`.
async fn provider_of(ctx: &SessionContext, table: &Table, schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    if table.exists() { table.provider(ctx).await } else { empty(schema, &table.label) }
}

fn register(ctx: &SessionContext, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
    ctx.register_table(name, provider).map(|_| ()).map_err(|e| Error::sql(format!("registering `{name}`"), e))
}

/// Runs `sql` (a query: see [`read_only`]) in `ctx` and collects the result; a failure names
/// `context`.
pub async fn query(ctx: &SessionContext, sql: &str, context: &str) -> Result<Vec<RecordBatch>> {
    let df = read_only(ctx, sql, context).await?;
    df.collect().await.map_err(|e| Error::sql(context, e))
}

/// A DataFusion error in one line for a user, for SQL the user did not write whole (an
/// expression of a contract or an expectation): [`SqlProblem`]'s message and advice, without a
/// position in the SQL medallion built around it.
pub fn error_line(e: &datafusion::error::DataFusionError) -> String {
    let problem = SqlProblem::of(e);
    match problem.advice {
        Some(advice) => format!("{} (hint: {advice})", problem.message),
        None => problem.message,
    }
}

/// The first line of a DataFusion error, a SQL parser's error in the parser's own words
/// (`Expected: ), found: EOF`, not `SQL error: ParserError("…")`).
fn first_line(e: &datafusion::error::DataFusionError) -> String {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e.find_root() {
        datafusion::error::DataFusionError::SQL(p, _) => match p.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
            other => other.to_string(),
        },
        // A wrapper ("Optimizer rule 'simplify_expressions' failed") says where, its cause what.
        root if matches!(e, datafusion::error::DataFusionError::Context(..)) => {
            root.to_string().lines().next().unwrap_or_default().to_string()
        }
        _ => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

/// Where in a query something is: (line, column), 1-based, columns counting characters.
pub type Position = (usize, usize);

/// A query's planning or parsing error as a user reads it: one line, where in the SQL, and
/// DataFusion's advice (sessions from [`new_session`] collect the spans this needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlProblem {
    /// What is wrong, in one line, without the position.
    pub message: String,
    /// The start of the offending text and just past its end; a parser's point has both equal.
    pub span: Option<(Position, Position)>,
    /// DataFusion's help, or its notes ("possible column orders.amount").
    pub advice: Option<String>,
}

impl SqlProblem {
    /// The problem `e` describes: its diagnostic when it has one, else its first line; a
    /// parser's trailing position (" at Line: 4, Column: 1") is taken off the message, and is
    /// the span when there is no other. A table is named as written ("table 'clients' not
    /// found"), not in DataFusion's default catalog and schema.
    pub fn of(e: &datafusion::error::DataFusionError) -> Self {
        let diagnostic = e.diagnostic();
        let text = diagnostic.map_or_else(|| first_line(e), |d| d.message.lines().next().unwrap_or_default().into());
        let (message, point) = without_position(&text);
        let message = message.replace("'datafusion.public.", "'");
        let point = point.map(|p| (p, p));
        let Some(d) = diagnostic else { return Self { message, span: point, advice: None } };
        let at = |l: datafusion::common::Location| (l.line as usize, l.column as usize);
        let advice: Vec<&str> = match d.helps.is_empty() {
            false => d.helps.iter().map(|h| h.message.as_str()).collect(),
            true => d.notes.iter().map(|n| n.message.as_str()).collect(),
        };
        Self {
            message,
            span: d.span.map(|s| (at(s.start), at(s.end))).or(point),
            advice: (!advice.is_empty()).then(|| advice.join("; ")),
        }
    }
}

/// A parser's message without its trailing position, and that position.
fn without_position(text: &str) -> (String, Option<Position>) {
    let point = text.rsplit_once(" at Line: ").and_then(|(message, at)| {
        let (l, c) = at.split_once(", Column: ")?;
        Some((message.to_string(), (l.trim().parse().ok()?, c.trim().parse().ok()?)))
    });
    match point {
        Some((message, p)) => (message, Some(p)),
        None => (text.to_string(), None),
    }
}

impl std::fmt::Display for SqlProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(((line, column), _)) = self.span {
            write!(f, "line {line}, column {column}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(advice) = &self.advice {
            write!(f, " (hint: {advice})")?;
        }
        Ok(())
    }
}

/// Plans `sql` as a query only: DDL (`CREATE`, `DROP`), DML (`INSERT`, `UPDATE`, `DELETE`,
/// `COPY … TO`) and statements (`SET`, transactions) are refused ([`Error::Refused`]) before
/// anything runs. Tables change only through medallion's commits (ledger, lock, txn); a write
/// through SQL would bypass them, and `COPY` could write anywhere, the Delta log included. Other
/// planning errors name `context`.
pub async fn read_only(ctx: &SessionContext, sql: &str, context: &str) -> Result<DataFrame> {
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    ctx.sql_with_options(sql, options).await.map_err(|e| {
        let text = e.to_string();
        if ["DDL not supported", "DML not supported", "Statement not supported"].iter().any(|m| text.contains(m)) {
            Error::Refused {
                what: "this statement".into(),
                why: format!(
                    "{context} runs queries only (SELECT, WITH, VALUES, EXPLAIN); tables change through `run`, \
                     `rebuild` and `replay` ({})",
                    text.lines().next().unwrap_or_default()
                ),
            }
        } else {
            Error::sql(context, e)
        }
    })
}

/// The schema a query's rows have: after analysis, which may change types (medallion's float
/// division, type coercion), so not the unanalysed plan's `df.schema()`.
pub fn result_schema(df: &DataFrame, context: &str) -> Result<SchemaRef> {
    let plan = df.clone().into_optimized_plan().map_err(|e| Error::sql(context, e))?;
    Ok(Arc::new(plan.schema().as_arrow().clone()))
}

/// `text` parsed as exactly one SQL expression (a filter written by a user), rendered back:
/// anything around or after it (`1=1) OR (1=1`, a second statement) is an error, so the
/// expression cannot escape the parentheses it is placed in.
pub fn one_expression(text: &str) -> std::result::Result<String, String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Token;

    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| e.to_string())?;
    let expr = parser.parse_expr().map_err(|e| e.to_string())?;
    match parser.peek_token().token {
        Token::EOF => Ok(expr.to_string()),
        t => Err(format!("unexpected `{t}` after the expression `{expr}`: give one SQL condition")),
    }
}

/// Runs `sql` and returns its rows with every value as text (NULL as `None`), for summaries.
pub async fn text_rows(ctx: &SessionContext, sql: &str, context: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    for b in query(ctx, sql, context).await? {
        let mut cols: Vec<_> =
            b.columns().iter().map(|c| text_column(c, context).map(Vec::into_iter)).collect::<Result<_>>()?;
        out.extend((0..b.num_rows()).map(|_| cols.iter_mut().map(|c| c.next().flatten()).collect()));
    }
    Ok(out)
}

/// One column's values as text (NULL as `None`).
pub fn text_column(col: &ArrayRef, context: &str) -> Result<Vec<Option<String>>> {
    let col = cast(col, &DataType::Utf8).map_err(|e| Error::arrow(context, e))?;
    let col = col.as_string::<i32>();
    Ok((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())).collect())
}

/// Each row of `batches` as one JSON object (every column, nulls included), for dead letters and
/// sample rows.
pub fn json_rows(batches: &[RecordBatch], context: &str) -> Result<Vec<String>> {
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buf);
        for b in batches {
            writer.write(b).map_err(|e| Error::arrow(context, e))?;
        }
        writer.finish().map_err(|e| Error::arrow(context, e))?;
    }
    Ok(String::from_utf8_lossy(&buf).lines().map(str::to_string).collect())
}

/// `/` between two integers gives a float, as in DuckDB, Spark, Snowflake and BigQuery
/// (`1250 / 100` is 12.5), not DataFusion's truncated integer (12): a model ported from them
/// would otherwise be silently wrong on data that is not a multiple of the divisor. Decimals and
/// floats divide as before; `trunc(a / b)` gives the truncated quotient.
pub mod division {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    use datafusion::common::{DFSchema, Result};
    use datafusion::config::ConfigOptions;
    use datafusion::logical_expr::expr_rewriter::NamePreserver;
    use datafusion::logical_expr::utils::merge_schema;
    use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, cast};
    use datafusion::optimizer::AnalyzerRule;

    /// The analyzer rule: every integer `/` in a plan (subqueries included) divides as floats;
    /// output names stay as written.
    #[derive(Debug)]
    pub struct FloatDivision;

    impl AnalyzerRule for FloatDivision {
        fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
            plan.transform_up_with_subqueries(|plan| {
                let schema = merge_schema(&plan.inputs());
                let names = NamePreserver::new(&plan);
                let rewritten = plan.map_expressions(|expr| {
                    let name = names.save(&expr);
                    Ok(floats(expr, &schema)?.update_data(|e| name.restore(e)))
                })?;
                // A changed expression changes its node's schema, and so its parents'.
                rewritten.map_data(LogicalPlan::recompute_schema)
            })
            .map(|t| t.data)
        }

        fn name(&self) -> &str {
            "medallion_float_division"
        }
    }

    /// `expr` with every `/` between two integers (typed against `schema`) dividing as floats.
    pub fn floats(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        expr.transform_up(|e| {
            let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Divide, right }) = &e else {
                return Ok(Transformed::no(e));
            };
            let integer = |x: &Expr| x.get_type(schema).is_ok_and(|t| t.is_integer());
            if !(integer(left) && integer(right)) {
                return Ok(Transformed::no(e));
            }
            let Expr::BinaryExpr(BinaryExpr { left, right, .. }) = e else { return Ok(Transformed::no(e)) };
            let divided = Expr::BinaryExpr(BinaryExpr::new(
                Box::new(cast(*left, DataType::Float64)),
                Operator::Divide,
                Box::new(cast(*right, DataType::Float64)),
            ));
            Ok(Transformed::new(divided, true, TreeNodeRecursion::Continue))
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Float64Type;

    use super::*;

    /// Issue 17: integer `/` divides as DuckDB and Spark do, in projections, aggregates, filters
    /// and subqueries; decimals keep their type; names stay as written.
    #[tokio::test]
    async fn integer_division_gives_floats_and_keeps_names() {
        let ctx = new_session().expect("session");
        let sql = "SELECT 1250 / 100 AS a, 7 / 2, -7 / 2 AS neg, trunc(7 / 2) AS t, \
                   CAST(1250 AS DECIMAL(10, 2)) / 100 AS d, (SELECT max(x) / 2 FROM (VALUES (3), (5)) AS v(x)) AS sub \
                   WHERE 3 / 2 > 1";
        let rows = query(&ctx, sql, "division").await.expect("runs");
        let b = &rows[0];
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["a", "Int64(7) / Int64(2)", "neg", "t", "d", "sub"]);
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>().value(0);
        assert_eq!((f(0), f(1), f(2), f(3), f(5)), (12.5, 3.5, -3.5, 3.0, 2.5));
        assert!(matches!(b.column(4).data_type(), DataType::Decimal128(..)), "{}", b.column(4).data_type());
    }
}
