//! Querying the lake with DataFusion: every table of the project registered in one session.
//!
//! Silver and gold tables are reachable by plain name (`orders`) and qualified (`silver.orders`,
//! `gold.daily_revenue`); dead letters only qualified (`quarantine.orders`). A table not created
//! yet reads as empty with its declared schema.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::silver::quarantine;
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

/// A session with every table of `project` in `lake` registered.
pub async fn session(lake: &Lake, project: &Project) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Internal("no default catalog".into()))?;
    for layer in [Layer::Silver, Layer::Gold, Layer::Quarantine] {
        catalog
            .register_schema(layer.dir(), Arc::new(MemorySchemaProvider::new()))
            .map_err(|e| Error::sql("registering schemas", e))?;
    }
    for t in project.silver.values() {
        let p = provider(lake, &ctx, Layer::Silver, &t.name, t.contract.schema.clone()).await?;
        register(&ctx, &t.name, Arc::clone(&p))?;
        register(&ctx, &format!("silver.{}", t.name), p)?;
        let q = provider(lake, &ctx, Layer::Quarantine, &t.name, quarantine::schema()).await?;
        register(&ctx, &format!("quarantine.{}", t.name), q)?;
    }
    for g in project.gold.values() {
        let p = provider(lake, &ctx, Layer::Gold, &g.name, g.schema.clone()).await?;
        register(&ctx, &g.name, Arc::clone(&p))?;
        register(&ctx, &format!("gold.{}", g.name), p)?;
        let q = provider(lake, &ctx, Layer::Quarantine, &g.name, quarantine::schema()).await?;
        register(&ctx, &format!("quarantine.{}", g.name), q)?;
    }
    Ok(ctx)
}

async fn provider(lake: &Lake, ctx: &SessionContext, layer: Layer, name: &str, schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let table = Table::open(lake, layer, name).await?;
    if table.exists() {
        table.provider(ctx).await
    } else {
        let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| Error::sql(format!("{layer}/{name}"), e))?;
        Ok(Arc::new(empty))
    }
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
