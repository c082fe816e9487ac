//! `medallion status`.

use anyhow::Result;
use medallion::bronze::drift;
use medallion::observability::runlog;
use medallion::quality::checks::human;
use medallion::silver::dead_letter::outstanding;
use medallion::storage::Layer;
use medallion::storage::delta::Table;

use super::{clock, open};
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{drift as drift_table, json_line, table, thousands};
use crate::{say, sayln};

/// Runs searched for a table's last promotion.
const RECENT_RUNS: usize = 50;

pub async fn run(g: &Global) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let now = clock(g)?;
    let mut entries: Vec<(Layer, String, Option<String>, Option<u64>)> = Vec::new();
    for t in project.silver.values() {
        entries.push((Layer::Silver, t.name.clone(), t.owner.clone(), t.sla.map(|d| d.seconds)));
    }
    for m in project.gold.values() {
        entries.push((Layer::Gold, m.name.clone(), Some(m.owner.clone()), m.sla.map(|s| s.seconds)));
    }
    let recent = runlog::recent(&lake, RECENT_RUNS).await?;
    let last = recent.first().cloned();
    // Rejected share per silver table in its last promotion (runs that promoted nothing into a
    // table do not hide it).
    let rejected_share = |table: &str| -> Option<f64> {
        recent.iter().find_map(|run| {
            let promotions = run.get("silver")?.as_array()?;
            let (read, rejected) = promotions
                .iter()
                .filter(|p| p.get("table").and_then(|t| t.as_str()) == Some(table))
                .fold((0u64, 0u64), |(r, j), p| {
                    (
                        r + p.get("read").and_then(|v| v.as_u64()).unwrap_or(0),
                        j + p.get("rejected").and_then(|v| v.as_u64()).unwrap_or(0),
                    )
                });
            (read > 0).then(|| rejected as f64 / read as f64)
        })
    };
    let mut rows = vec![vec![
        "layer".to_string(),
        "table".into(),
        "owner".into(),
        "rows".into(),
        "version".into(),
        "files".into(),
        "bytes".into(),
        "dead letter".into(),
        "rejected".into(),
        "updated".into(),
        "sla".into(),
        "last run".into(),
    ]];
    let mut late = Vec::new();
    for (layer, name, owner, sla) in &entries {
        let t = Table::open(&lake, *layer, name).await?;
        let rows_n = t.count_rows().await?;
        let (files, bytes) = t.files()?;
        let info = t.last_commit_info().await?;
        let last_run = info.get("medallion").and_then(|m| m.get("run_id")).and_then(|r| r.as_str()).map(str::to_string);
        let dead = if *layer == Layer::Silver { Some(outstanding(&lake, name).await?) } else { None };
        let share = if *layer == Layer::Silver { rejected_share(name) } else { None };
        let updated = t.recent_commits(Some(1)).await?.first().and_then(|c| c.timestamp);
        let age = updated.map(|u| (now - u).num_seconds());
        let is_late = matches!((age, sla), (Some(a), Some(s)) if a > *s as i64) || (sla.is_some() && updated.is_none());
        if is_late {
            late.push(format!("{layer}/{name}"));
        }
        if g.format == Format::Json {
            json_line(
                "table",
                serde_json::json!({
                    "layer": layer, "table": name, "owner": owner, "rows": rows_n, "version": t.version(),
                    "files": files, "bytes": bytes, "dead_letter_rows": dead, "last_run": last_run,
                    "rejected_fraction_last_run": share, "updated_at": updated.map(|u| u.to_rfc3339()),
                    "age_seconds": age, "sla_seconds": sla, "late": is_late,
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
            share.map_or("-".into(), |f| format!("{:.2}%", 100.0 * f)),
            age.map_or("never".into(), |a| format!("{} ago", human(a))),
            match sla {
                Some(s) => format!("{}{}", human(*s as i64), if is_late { " LATE" } else { "" }),
                None => "-".into(),
            },
            last_run.unwrap_or_else(|| "-".into()),
        ]);
    }
    let changed = super::contract_changes(&project, &lake).await?;
    let mut events = Vec::new();
    for source in project.sources.keys() {
        events.extend(drift::recorded(&lake, source).await?);
    }
    if g.format == Format::Json {
        for e in &events {
            let mut line = serde_json::to_value(e)?;
            line["read_by"] = serde_json::json!(project.readers_of(&e.source, &e.field));
            json_line("drift", line)?;
        }
        for (table, verdict) in &changed {
            let (node, changes, next) = super::describe_contract_change(table, verdict);
            json_line("contract_changed", serde_json::json!({ "table": node, "changes": changes, "next": next }))?;
        }
        json_line("last_run", last.unwrap_or(serde_json::Value::Null))?;
    } else {
        say!("{}", table(&rows));
        if !late.is_empty() {
            sayln!("\nlate (older than their SLA): {}", late.join(", "));
        }
        for (table, verdict) in &changed {
            let (node, changes, next) = super::describe_contract_change(table, verdict);
            sayln!("\ncontract changed: {node}: {}; {next}", changes.join("; "));
        }
        if let Some(t) = drift_table(&events, |e| project.readers_of(&e.source, &e.field)) {
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
