//! Querying the lake with DataFusion: every table of the project registered in one session.
//!
//! Silver and gold tables are reachable by plain name (`orders`) and qualified (`silver.orders`,
//! `gold.daily_revenue`); dead letters only qualified (`quarantine.orders`); expectation results
//! as `medallion.expectations`. A table not created yet reads as empty with its declared schema.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::quality::results;
use crate::silver::quarantine;
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

/// A session with every table of `project` in `lake` registered.
pub async fn session(lake: &Lake, project: &Project) -> Result<SessionContext> {
    let ctx = new_session()?;
    for t in project.silver.values() {
        let p = provider(lake, &ctx, Layer::Silver, &t.name, t.schema.clone()).await?;
        register_table(&ctx, Layer::Silver, &t.name, p)?;
        let q = provider(lake, &ctx, Layer::Quarantine, &t.name, quarantine::schema()).await?;
        register(&ctx, &format!("quarantine.{}", t.name), q)?;
    }
    for g in project.gold.values() {
        let p = provider(lake, &ctx, Layer::Gold, &g.name, g.schema.clone()).await?;
        register_table(&ctx, Layer::Gold, &g.name, p)?;
        let q = provider(lake, &ctx, Layer::Quarantine, &g.name, quarantine::schema()).await?;
        register(&ctx, &format!("quarantine.{}", g.name), q)?;
    }
    let results = provider(lake, &ctx, Layer::System, results::TABLE, results::schema()).await?;
    register(&ctx, &format!("medallion.{}", results::TABLE), results)?;
    Ok(ctx)
}

/// A session with the `silver`, `gold`, `quarantine` and `medallion` schemas and no tables.
pub fn new_session() -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Internal("no default catalog".into()))?;
    for schema in [Layer::Silver.dir(), Layer::Gold.dir(), Layer::Quarantine.dir(), "medallion"] {
        catalog
            .register_schema(schema, Arc::new(MemorySchemaProvider::new()))
            .map_err(|e| Error::sql("registering schemas", e))?;
    }
    Ok(ctx)
}

/// Registers a silver or gold table under its plain name and qualified (`silver.orders`).
pub fn register_table(ctx: &SessionContext, layer: Layer, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
    register(ctx, name, Arc::clone(&provider))?;
    register(ctx, &format!("{layer}.{name}"), provider)
}

/// An empty table of `schema`.
pub fn empty(schema: SchemaRef, name: &str) -> Result<Arc<dyn TableProvider>> {
    let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| Error::sql(format!("table `{name}`"), e))?;
    Ok(Arc::new(empty))
}

async fn provider(lake: &Lake, ctx: &SessionContext, layer: Layer, name: &str, schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let table = Table::open(lake, layer, name).await?;
    if table.exists() { table.provider(ctx).await } else { empty(schema, &format!("{layer}/{name}")) }
}

fn register(ctx: &SessionContext, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
    ctx.register_table(name, provider).map(|_| ()).map_err(|e| Error::sql(format!("registering `{name}`"), e))
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
