//! `medallion status`.

use anyhow::Result;
use medallion::bronze::drift;
use medallion::observability::runlog;
use medallion::silver::dead_letter::outstanding;
use medallion::storage::Layer;
use medallion::storage::delta::Table;

use super::open;
use crate::Outcome;
use crate::{say, sayln};
use crate::args::{Format, Global};
use crate::output::{drift as drift_table, json_line, table, thousands};

pub async fn run(g: &Global) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let mut entries: Vec<(Layer, String, Option<String>)> = Vec::new();
    for t in project.silver.values() {
        entries.push((Layer::Silver, t.name.clone(), t.owner.clone()));
    }
    for m in project.gold.values() {
        entries.push((Layer::Gold, m.name.clone(), Some(m.owner.clone())));
    }
    let last = runlog::recent(&lake, 1).await?.into_iter().next();
    let mut rows = vec![vec![
        "layer".to_string(),
        "table".into(),
        "owner".into(),
        "rows".into(),
        "version".into(),
        "files".into(),
        "bytes".into(),
        "dead letter".into(),
        "last run".into(),
    ]];
    for (layer, name, owner) in &entries {
        let t = Table::open(&lake, *layer, name).await?;
        let rows_n = t.count_rows().await?;
        let (files, bytes) = t.files()?;
        let info = t.last_commit_info().await?;
        let last_run = info.get("medallion").and_then(|m| m.get("run_id")).and_then(|r| r.as_str()).map(str::to_string);
        let dead = if *layer == Layer::Silver { Some(outstanding(&lake, name).await?) } else { None };
        if g.format == Format::Json {
            json_line(
                "table",
                serde_json::json!({
                    "layer": layer, "table": name, "owner": owner, "rows": rows_n, "version": t.version(),
                    "files": files, "bytes": bytes, "dead_letter_rows": dead, "last_run": last_run,
                }),
            )?;
        }
        rows.push(vec![
            layer.to_string(),
            name.clone(),
            owner.clone().unwrap_or_else(|| "-".into()),
            thousands(rows_n),
            t.version().map_or("-".into(), |v| v.to_string()),
            files.to_string(),
            thousands(bytes),
            dead.map_or("-".into(), thousands),
            last_run.unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut events = Vec::new();
    for source in project.sources.keys() {
        events.extend(drift::recorded(&lake, source).await?);
    }
    if g.format == Format::Json {
        for e in &events {
            json_line("drift", serde_json::to_value(e)?)?;
        }
        json_line("last_run", last.unwrap_or(serde_json::Value::Null))?;
    } else {
        say!("{}", table(&rows));
        if let Some(t) = drift_table(&events) {
            say!("\nschema drift\n{t}");
        }
        match last {
            Some(run) => {
                let failed = run.get("failed").and_then(|f| f.as_array()).map_or(0, Vec::len);
                sayln!(
                    "\nlast run: {} at {} ({})",
                    run.get("run_id").and_then(|v| v.as_str()).unwrap_or("?"),
                    run.get("started_at").and_then(|v| v.as_str()).unwrap_or("?"),
                    if failed == 0 { "ok".to_string() } else { format!("{failed} node(s) failed") }
                );
            }
            None => sayln!("\nno run yet"),
        }
    }
    Ok(Outcome::Ok)
}
