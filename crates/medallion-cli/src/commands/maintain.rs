//! `medallion optimize` and `medallion vacuum`.

use anyhow::{Result, anyhow};
use medallion::maintenance::{self, Maintained};
use medallion::spec::Duration;

use super::open;
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{json_line, table, thousands};
use crate::say;

pub async fn optimize(g: &Global, only: Option<&str>, zorder: &[String], target_size: Option<u64>) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let done = maintenance::optimize(&lake, &project, only, (zorder, target_size), super::lock_wait(g)?).await?;
    report(g, "optimized", &done)
}

pub async fn vacuum(g: &Global, only: Option<&str>, retain: &str, force: bool, dry_run: bool) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let retain: Duration = retain.parse().map_err(|e: String| anyhow!("--retain: {e}"))?;
    let retain = std::time::Duration::from_secs(retain.seconds);
    let done = maintenance::vacuum(&lake, &project, only, (retain, force, dry_run), super::lock_wait(g)?).await?;
    report(g, if dry_run { "would vacuum" } else { "vacuumed" }, &done)
}

fn report(g: &Global, what: &str, done: &[Maintained]) -> Result<Outcome> {
    if g.format == Format::Json {
        for m in done {
            json_line(what, serde_json::to_value(m)?)?;
        }
        return Ok(Outcome::Ok);
    }
    say!("{what}\n{}", maintained_table(done));
    Ok(Outcome::Ok)
}

/// Maintained tables as a text table: files and bytes before and after.
pub fn maintained_table(done: &[Maintained]) -> String {
    let mut rows = vec![vec![
        "table".to_string(),
        "files before".into(),
        "bytes before".into(),
        "files after".into(),
        "bytes after".into(),
        "removed".into(),
        "added".into(),
        "version".into(),
    ]];
    for m in done {
        rows.push(vec![
            m.table.clone(),
            m.files_before.to_string(),
            thousands(m.bytes_before),
            m.files_after.to_string(),
            thousands(m.bytes_after),
            m.removed.to_string(),
            m.added.to_string(),
            m.version.map_or("-".into(), |v| v.to_string()),
        ]);
    }
    table(&rows)
}
