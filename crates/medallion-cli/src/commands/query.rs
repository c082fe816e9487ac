//! `medallion show` and `medallion sql`.

use anyhow::{Context, Result};
use medallion::catalog::session;

use super::open;
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::batches;

pub async fn show(g: &Global, table: &str, limit: usize) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let known = known_tables(&project);
    if !known.iter().any(|k| k == table) {
        return Err(medallion::Error::Unknown { kind: "table", name: table.to_string(), known }.into());
    }
    let ctx = session(&lake, &project).await?;
    let df = ctx.sql(&format!("SELECT * FROM {table} LIMIT {limit}")).await.with_context(|| format!("reading `{table}`"))?;
    let rows = df.collect().await.with_context(|| format!("reading `{table}`"))?;
    batches(&rows, g.format == Format::Json)?;
    Ok(Outcome::Ok)
}

pub async fn sql(g: &Global, query: &str) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let ctx = session(&lake, &project).await?;
    let df = ctx.sql(query).await.context("the query does not plan")?;
    let rows = df.collect().await.context("the query failed")?;
    batches(&rows, g.format == Format::Json)?;
    Ok(Outcome::Ok)
}

fn known_tables(project: &medallion::project::Project) -> Vec<String> {
    let mut out = Vec::new();
    for t in project.silver.keys() {
        out.extend([t.clone(), format!("silver.{t}"), format!("quarantine.{t}")]);
    }
    for m in project.gold.keys() {
        out.extend([m.clone(), format!("gold.{m}")]);
    }
    out
}
