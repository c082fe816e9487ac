//! `medallion show`, `medallion sql` and `medallion history`.

use anyhow::{Context, Result, anyhow, bail};
use medallion::catalog::{resolve, session_reading};
use medallion::storage::delta::{AsOf, Table};

use super::open;
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{batches, json_line, table as text_table, thousands, write_file};
use crate::say;

fn as_of(text: Option<&str>) -> Result<Option<AsOf>> {
    text.map(|t| t.parse::<AsOf>().map_err(|e| anyhow!("--as-of: {e}"))).transpose()
}

/// A table named as runs, errors and events name it (`silver/orders`) in SQL's spelling
/// (`silver.orders`); any other name as it is.
fn sql_name(table: &str) -> String {
    match medallion::storage::Layer::split(table) {
        Some((layer, name)) => format!("{layer}.{name}"),
        None => table.to_string(),
    }
}

pub async fn show(
    g: &Global,
    given: &str,
    limit: usize,
    at: Option<&str>,
    out: Option<&std::path::Path>,
) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let known = known_tables(&project);
    let table = &sql_name(given);
    let Some((layer, name)) = resolve(&project, table).filter(|_| known.iter().any(|k| k == table)) else {
        return Err(medallion::Error::Unknown { kind: "table", name: given.to_string(), known }.into());
    };
    let at = as_of(at)?;
    let query = format!("SELECT * FROM {table} LIMIT {limit}");
    let ctx = match at {
        Some(AsOf::Version(_)) | None => session_reading(&lake, &project, None, &query).await?,
        Some(time) => session_reading(&lake, &project, Some(time), &query).await?,
    };
    if let Some(version) = at.filter(|a| matches!(a, AsOf::Version(_))) {
        let t = Table::open_as_of(&lake, layer, &name, version).await?;
        if !t.exists() {
            bail!("{layer}/{name} does not exist yet");
        }
        ctx.deregister_table(table)?;
        ctx.register_table(table, t.provider(&ctx).await?)?;
    }
    let df = ctx.sql(&query).await.with_context(|| format!("reading `{table}`"))?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let rows = df.collect().await.map_err(|e| medallion::Error::query(format!("reading `{table}`"), e))?;
    emit(g, schema, &rows, out)
}

pub async fn sql(g: &Global, query: &str, at: Option<&str>, out: Option<&std::path::Path>) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let at = as_of(at)?;
    if matches!(at, Some(AsOf::Version(_))) {
        bail!("--as-of for `sql` takes a time (versions differ per table; use `show <table> --as-of <version>`)");
    }
    let engine = super::engine(g)?;
    let ctx = match at {
        None if engine == medallion::catalog::Engine::InProcess => {
            session_reading(&lake, &project, None, query).await?
        }
        None => medallion::catalog::session_on(&lake, &project, &engine).await?,
        Some(_) if engine != medallion::catalog::Engine::InProcess => bail!("--as-of is not supported with --cluster"),
        Some(_) => session_reading(&lake, &project, at, query).await?,
    };
    // A query that does not plan: what and where in it, in one line.
    let df = medallion::catalog::read_only(&ctx, query, "`sql`").await.map_err(|e| match e {
        medallion::Error::Sql { context, source } => {
            anyhow::anyhow!("{context}: {}", medallion::catalog::SqlProblem::of(&source))
        }
        other => other.into(),
    })?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let rows = df.collect().await.map_err(|e| medallion::Error::query("the query failed", e))?;
    emit(g, schema, &rows, out)
}

/// Rows to `out` (by its extension) or to stdout in the global format.
fn emit(
    g: &Global,
    schema: medallion::arrow::datatypes::SchemaRef,
    rows: &[medallion::arrow::array::RecordBatch],
    out: Option<&std::path::Path>,
) -> Result<Outcome> {
    match out {
        Some(path) => {
            let n = write_file(schema, rows, path)?;
            if g.quiet == 0 {
                eprintln!("wrote {} rows to {}", thousands(n), path.display());
            }
        }
        None => batches(schema, rows, g.format)?,
    }
    Ok(Outcome::Ok)
}

pub async fn history(g: &Global, given: &str, limit: usize) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let Some((layer, name)) = resolve(&project, &sql_name(given)) else {
        return Err(medallion::Error::Unknown {
            kind: "table",
            name: given.to_string(),
            known: known_tables(&project),
        }
        .into());
    };
    let t = Table::open(&lake, layer, &name).await?;
    let commits = t.commits().await?;
    if g.format == Format::Json {
        for c in commits.iter().take(limit) {
            json_line("commit", serde_json::to_value(c)?)?;
        }
        return Ok(Outcome::Ok);
    }
    if commits.is_empty() {
        say!("{layer}/{name}: no commits yet\n");
        return Ok(Outcome::Ok);
    }
    let mut rows = vec![vec![
        "version".to_string(),
        "time".into(),
        "operation".into(),
        "inserted".into(),
        "updated".into(),
        "deleted".into(),
        "run".into(),
    ]];
    for c in commits.iter().take(limit) {
        rows.push(vec![
            c.version.to_string(),
            c.timestamp.map_or("-".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            c.operation.clone(),
            thousands(c.rows.inserted),
            thousands(c.rows.updated),
            thousands(c.rows.deleted),
            c.run_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    say!("{layer}/{name}\n{}", text_table(&rows));
    Ok(Outcome::Ok)
}

fn known_tables(project: &medallion::project::Project) -> Vec<String> {
    let mut out = Vec::new();
    for t in project.silver.keys() {
        out.extend([t.clone(), format!("silver.{t}"), format!("quarantine.{t}")]);
    }
    for m in project.gold.keys() {
        out.extend([m.clone(), format!("gold.{m}"), format!("quarantine.{m}")]);
    }
    out
}
