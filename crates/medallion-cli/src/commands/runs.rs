//! `medallion runs` and `medallion airflow-dag`.

use std::path::Path;

use anyhow::{Context, Result};
use medallion::catalog::session;
use medallion::observability::runlog;
use medallion::orchestration::airflow::{AirflowOptions, Operator, render};

use super::open;
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{batches, json_line, table, thousands};
use crate::{say, sayln};

pub async fn runs(g: &Global, run_id: Option<&str>, limit: usize) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    if let Some(id) = run_id {
        let ctx = session(&lake, &project).await?;
        let sql = format!(
            "SELECT seq, type, node, status, attempts, rows_read, rows_inserted, rows_updated, rows_deleted, rows_superseded, rows_rejected, \
             duration_ms, version, expectations_failed, error FROM medallion.events WHERE run_id = {} ORDER BY seq",
            medallion::spec::quote(id)
        );
        let rows =
            ctx.sql(&sql).await.context("reading the event log")?.collect().await.context("reading the event log")?;
        if rows.iter().all(|b| b.num_rows() == 0) {
            anyhow::bail!("no events for run `{id}` (see `medallion runs` for recent run ids)");
        }
        batches(rows[0].schema(), &rows, g.format)?;
        return Ok(Outcome::Ok);
    }
    let recent = runlog::recent(&lake, limit).await?;
    if g.format == Format::Json {
        for r in recent {
            json_line("run", r)?;
        }
        return Ok(Outcome::Ok);
    }
    if recent.is_empty() {
        sayln!("no run yet");
        return Ok(Outcome::Ok);
    }
    let mut rows = vec![vec![
        "run".to_string(),
        "started".into(),
        "ms".into(),
        "status".into(),
        "read".into(),
        "promoted".into(),
        "rejected".into(),
        "failed".into(),
    ]];
    for r in &recent {
        let get = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        let total = |k: &str| r.get("totals").and_then(|t| t.get(k)).and_then(|v| v.as_u64()).unwrap_or(0);
        let failed: Vec<String> = r
            .get("failed")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .filter_map(|f| f.get("node").and_then(|n| n.as_str()).map(str::to_string))
            .collect();
        rows.push(vec![
            get("run_id"),
            get("started_at"),
            r.get("duration_ms").and_then(|v| v.as_u64()).map_or("-".into(), thousands),
            if failed.is_empty() { "ok".into() } else { "FAILED".into() },
            thousands(total("read")),
            thousands(total("promoted")),
            thousands(total("rejected")),
            if failed.is_empty() { "-".into() } else { failed.join(", ") },
        ]);
    }
    say!("{}", table(&rows));
    Ok(Outcome::Ok)
}

pub async fn docs(g: &Global, out: &Path) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let html = medallion::observability::report::render(&lake, &project, super::clock(g)?).await?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let index = out.join("index.html");
    std::fs::write(&index, html).with_context(|| format!("cannot write {}", index.display()))?;
    eprintln!("wrote {}", index.display());
    Ok(Outcome::Ok)
}

pub async fn airflow(
    g: &Global,
    out: Option<&Path>,
    schedule: String,
    retries: u32,
    command: String,
    operator: &str,
) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let project_dir =
        std::fs::canonicalize(&project.root).unwrap_or_else(|_| project.root.clone()).display().to_string();
    let operator = if operator == "medallion" { Operator::Medallion } else { Operator::Bash };
    let (namespace, root, _) = lake.dataset("");
    let opts = AirflowOptions { schedule, retries, command, project_dir, operator, lineage: (namespace, root) };
    let py = render(&project, &opts);
    match out {
        Some(path) => {
            std::fs::write(path, py).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => say!("{py}"),
    }
    Ok(Outcome::Ok)
}
