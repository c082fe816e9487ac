//! `medallion run`.

use anyhow::Result;
use medallion::observability::events::{Event, EventSink};
use medallion::orchestration::run::{RunOptions, RunSummary, run as run_project};
use medallion::quality::gates::Outcome as GateOutcome;

use super::{clock, open, spinner, threads};
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{drift, expectations, json_line, samples, table, thousands};
use crate::{say, sayln};

pub async fn run(
    g: &Global,
    full_refresh: bool,
    select: &[String],
    exclude: &[String],
    retries: u32,
    date: Option<chrono::NaiveDate>,
) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let selection = if select.is_empty() && exclude.is_empty() {
        None
    } else {
        Some(medallion::orchestration::select::select(&project, select, exclude)?)
    };
    execute(g, project, lake, Settings { full_refresh, select: selection, retries, date }).await
}

/// `medallion retry`: the failed and skipped nodes of the last run, run again.
pub async fn retry(g: &Global) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let Some(last) = medallion::observability::runlog::recent(&lake, 1).await?.into_iter().next() else {
        sayln!("no run yet: nothing to retry");
        return Ok(Outcome::Ok);
    };
    let failed = last
        .get("failed")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("node").and_then(|n| n.as_str()));
    let skipped = last.get("skipped").and_then(|f| f.as_array()).into_iter().flatten().filter_map(|n| n.as_str());
    let nodes: std::collections::BTreeSet<String> = failed.chain(skipped).map(str::to_string).collect();
    if nodes.is_empty() {
        sayln!(
            "the last run ({}) had no failed or skipped node: nothing to retry",
            last.get("run_id").and_then(|r| r.as_str()).unwrap_or("?")
        );
        return Ok(Outcome::Ok);
    }
    eprintln!("retrying {}", nodes.iter().cloned().collect::<Vec<_>>().join(", "));
    execute(
        g,
        project,
        lake,
        Settings { full_refresh: false, select: Some(nodes), retries: RunOptions::default().retries, date: None },
    )
    .await
}

/// What a run is asked to do.
pub(crate) struct Settings {
    pub full_refresh: bool,
    pub select: Option<std::collections::BTreeSet<String>>,
    pub retries: u32,
    pub date: Option<chrono::NaiveDate>,
}

/// `medallion backfill`: one dated run per day, in order; stops at the first failed day.
pub async fn backfill(g: &Global, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Result<Outcome> {
    if to < from {
        anyhow::bail!("--to {to} is before --from {from}");
    }
    let mut day = from;
    while day <= to {
        let (project, lake) = open(g).await?;
        eprintln!("backfill: {day}");
        let settings =
            Settings { full_refresh: false, select: None, retries: RunOptions::default().retries, date: Some(day) };
        if matches!(execute(g, project, lake, settings).await?, Outcome::Failed) {
            eprintln!("backfill stopped at {day}; run it again to resume from there");
            return Ok(Outcome::Failed);
        }
        day = day.succ_opt().ok_or_else(|| anyhow::anyhow!("date overflow after {day}"))?;
    }
    Ok(Outcome::Ok)
}

pub(crate) async fn execute(
    g: &Global,
    project: medallion::project::Project,
    lake: medallion::storage::Lake,
    settings: Settings,
) -> Result<Outcome> {
    let Settings { full_refresh, select, retries, date } = settings;
    let spinner = spinner(g, format!("running `{}` on {}", project.name, lake.display()));
    let on_event = match (&g.format, &spinner) {
        (Format::Json, _) => Some(EventSink(std::sync::Arc::new(|e: &Event| {
            if let Ok(v) = serde_json::to_value(e) {
                let _ = json_line(e.kind, v);
            }
        }))),
        // On a terminal: which nodes are running, and the records and bytes done so far.
        (Format::Text, Some(pb)) => {
            let pb = pb.clone();
            let progress = std::sync::Mutex::new((std::collections::BTreeSet::<String>::new(), 0u64, 0u64));
            Some(EventSink(std::sync::Arc::new(move |e: &Event| {
                let Ok(mut p) = progress.lock() else { return };
                let node = e.node.clone().unwrap_or_default();
                match e.kind {
                    "node_started" => {
                        p.0.insert(node);
                    }
                    "node_finished" | "node_failed" | "node_skipped" => {
                        p.0.remove(&node);
                        p.1 += e.rows_read.unwrap_or(0);
                        p.2 += e.bytes.unwrap_or(0);
                    }
                    _ => {}
                }
                let running =
                    if p.0.is_empty() { "…".to_string() } else { p.0.iter().cloned().collect::<Vec<_>>().join(", ") };
                pb.set_message(format!("{running} · {} records, {} bytes read", thousands(p.1), thousands(p.2)));
            })))
        }
        (Format::Text, None) => None,
    };
    let lock_wait = super::lock_wait(g)?;
    let opts = RunOptions {
        threads: threads(g),
        now: clock(g)?,
        full_refresh,
        on_event,
        select,
        retries,
        date,
        lock_wait,
        ..Default::default()
    };
    let summary = run_project(&project, &lake, &opts).await;
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let summary = summary?;
    match g.format {
        Format::Json => print_json(&summary)?,
        Format::Text => print_text(&summary, g.verbose > 0)?,
    }
    if !summary.ok() {
        for f in &summary.failed {
            eprintln!("error: {}: {}", f.node, f.error);
        }
        for s in &summary.skipped {
            eprintln!("not run: {s} (an upstream node failed)");
        }
    }
    Ok(if summary.ok() { Outcome::Ok } else { Outcome::Failed })
}

/// The events were streamed while the run went; the summary (every promotion and build in full)
/// closes the stream.
fn print_json(s: &RunSummary) -> Result<()> {
    json_line("summary", serde_json::to_value(s)?)
}

fn print_text(s: &RunSummary, timings: bool) -> Result<()> {
    sayln!("run {} of `{}`: {}", s.run_id, s.project, if s.ok() { "ok" } else { "FAILED" });
    if !s.ingested.is_empty() {
        let mut rows = vec![vec!["ingested".to_string(), "status".into(), "batch".into(), "records".into()]];
        for i in &s.ingested {
            rows.push(vec![i.input.clone(), i.status.label().to_string(), i.batch_id.clone(), thousands(i.records)]);
        }
        say!("\n{}", table(&rows));
    }
    let mut rows = vec![vec![
        "silver".to_string(),
        "batches".into(),
        "read".into(),
        "inserted".into(),
        "updated".into(),
        "superseded".into(),
        "rejected".into(),
        "version".into(),
    ]];
    for p in &s.silver {
        rows.push(vec![
            if p.resumed { format!("{} (resumed)", p.table) } else { p.table.clone() },
            p.batches.to_string(),
            thousands(p.read),
            thousands(p.inserted),
            thousands(p.updated),
            thousands(p.superseded),
            thousands(p.rejected),
            p.silver_version.map_or("-".into(), |v| v.to_string()),
        ]);
    }
    if s.silver.is_empty() {
        sayln!("\nsilver: no pending bronze batches");
    } else {
        say!("\n{}", table(&rows));
    }
    let mut rows = vec![vec!["gold".to_string(), "rows".into(), "version".into(), "status".into()]];
    for b in &s.gold {
        rows.push(vec![
            b.model.clone(),
            thousands(b.rows),
            b.version.map_or("-".into(), |v| v.to_string()),
            match (b.rebuilt, b.partitions) {
                _ if b.waiting => "waiting for inputs".into(),
                (false, _) => "up to date".into(),
                (true, Some(n)) => format!("incremental ({n} partition{})", if n == 1 { "" } else { "s" }),
                (true, None) => "rebuilt".into(),
            },
        ]);
    }
    if !s.gold.is_empty() {
        say!("\n{}", table(&rows));
    }
    let results = s.expectations();
    if let Some(t) = expectations(results.iter().map(|(n, e)| (n.as_str(), e))) {
        say!("\n{t}");
    }
    let failing = results.iter().filter(|(_, e)| e.outcome == GateOutcome::Fail).map(|(n, e)| (n.as_str(), e));
    say!("{}", samples(failing));
    if let Some(t) = drift(&s.drift) {
        say!("\nschema drift (bronze kept every record; check the contracts)\n{t}");
    }
    let t = &s.totals;
    sayln!(
        "\naccounting: read {} = promoted {} + superseded {} + rejected {}",
        thousands(t.read),
        thousands(t.promoted),
        thousands(t.superseded),
        thousands(t.rejected)
    );
    for (what, done) in [
        ("compacted after the run (maintenance policy)", &s.compacted),
        ("vacuumed after the run (maintenance policy)", &s.vacuumed),
    ] {
        if !done.is_empty() {
            say!("\n{what}\n{}", super::maintain::maintained_table(done));
        }
    }
    if let Some(l) = &s.lineage {
        let to: Vec<&str> = l.file.iter().chain(l.url.iter()).map(String::as_str).collect();
        sayln!("lineage: {} OpenLineage events → {}", l.events, to.join(", "));
        if let Some(e) = &l.error {
            eprintln!("warning: {} OpenLineage deliveries failed; first: {e}", l.failed);
        }
    }
    if timings {
        for p in &s.silver {
            let mut stages: Vec<_> = p.timings_ms.iter().collect();
            stages.sort();
            let text: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v} ms")).collect();
            eprintln!("silver/{}: {}", p.table, text.join(", "));
        }
        for b in &s.gold {
            eprintln!("gold/{}: {} ms", b.model, b.duration_ms);
        }
        eprintln!("run: {} ms", s.duration_ms);
    }
    Ok(())
}
