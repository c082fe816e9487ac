//! `medallion run`.

use anyhow::Result;
use medallion::orchestration::run::{RunOptions, RunSummary, run as run_project};
use medallion::quality::gates::Outcome as GateOutcome;
use medallion::runtime::events::{Event, EventSink};

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
    let rebuild = Default::default();
    execute(g, project, lake, Settings { full_refresh, select: selection, retries, date, rebuild }).await
}

/// `medallion rebuild`: silver tables recomputed from bronze, then the gold models downstream.
pub async fn rebuild(g: &Global, tables: &[String]) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    for t in tables {
        if !project.silver.contains_key(t) {
            let known: Vec<&str> = project.silver.keys().map(String::as_str).collect();
            anyhow::bail!("`{t}` is not a silver table (silver tables: {})", known.join(", "));
        }
    }
    let rebuild: std::collections::BTreeSet<String> =
        if tables.is_empty() { project.silver.keys().cloned().collect() } else { tables.iter().cloned().collect() };
    let downstream: Vec<String> = rebuild.iter().map(|t| format!("silver/{t}+")).collect();
    let select = medallion::orchestration::select::select(&project, &downstream, &[])?;
    let settings = Settings {
        full_refresh: false,
        select: Some(select),
        retries: RunOptions::default().retries,
        date: None,
        rebuild,
    };
    execute(g, project, lake, settings).await
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
        Settings {
            full_refresh: false,
            select: Some(nodes),
            retries: RunOptions::default().retries,
            date: None,
            rebuild: Default::default(),
        },
    )
    .await
}

/// What a run is asked to do.
pub(crate) struct Settings {
    pub full_refresh: bool,
    pub select: Option<std::collections::BTreeSet<String>>,
    pub retries: u32,
    pub date: Option<chrono::NaiveDate>,
    pub rebuild: std::collections::BTreeSet<String>,
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
        let settings = Settings {
            full_refresh: false,
            select: None,
            retries: RunOptions::default().retries,
            date: Some(day),
            rebuild: Default::default(),
        };
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
    let Settings { full_refresh, select, retries, date, rebuild } = settings;
    let spinner = spinner(g, format!("running `{}` on {}", project.name, lake.display()));
    let on_event = match (&g.format, &spinner) {
        (Format::Json, _) => Some(EventSink(std::sync::Arc::new(|e: &Event| {
            if let Ok(v) = serde_json::to_value(e) {
                let _ = json_line(e.kind, v);
            }
        }))),
        // On a terminal: which nodes are running, and the records and bytes done so far.
        (Format::Text | Format::Csv, Some(pb)) => {
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
        (Format::Text | Format::Csv, None) => None,
    };
    let lock_wait = super::lock_wait(g)?;
    let opts = RunOptions {
        threads: threads(g),
        now: clock(g)?,
        full_refresh,
        rebuild,
        on_event,
        select,
        retries,
        date,
        lock_wait,
        slice_bytes: super::slice_size(g)?,
        engine: super::engine(g)?,
        ..Default::default()
    };
    let summary = run_project(&project, &lake, &opts).await;
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let summary = summary?;
    match g.format {
        Format::Json => print_json(&summary)?,
        // -q: errors and warnings only (on stderr, below).
        Format::Text | Format::Csv if g.quiet > 0 => {}
        Format::Text | Format::Csv => print_text(&project, &summary, g.verbose > 0)?,
    }
    note_contracts(&summary);
    note_landing(&summary.ingested);
    warn_rejects(&summary);
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

/// Landing files skipped or damaged, one line each: files still being written are a note (a
/// later run reads them), anything else a warning.
pub fn note_landing(ingested: &[medallion::bronze::ingest::IngestOutcome]) {
    use medallion::bronze::ingest::IngestStatus;
    for i in ingested {
        let Some(note) = &i.note else { continue };
        match i.status {
            IngestStatus::Skipped if note.contains("still being written") => {
                eprintln!("note: {} not read yet: {note}", i.input)
            }
            IngestStatus::Skipped => eprintln!("warning: {} skipped: {note}", i.input),
            _ => eprintln!("warning: {}: {note}", i.input),
        }
    }
}

/// Tables rebuilt (and why), and what a changed contract did to the others: evolved in place.
fn note_contracts(s: &RunSummary) {
    for p in s.silver.iter().filter(|p| p.rebuilt || !p.contract_changes.is_empty()) {
        let changes = p.contract_changes.join("; ");
        if p.rebuilt {
            let mut why = Vec::new();
            if p.resumed {
                why.push("an interrupted rebuild finished".to_string());
            }
            if !changes.is_empty() {
                why.push(format!("contract changed: {changes}"));
            }
            let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) };
            eprintln!("note: silver/{} rebuilt from bronze{why}", p.table);
        } else {
            let t = &p.table;
            let how = if p.added_columns.is_empty() {
                "let in: every published row passes the new rules".to_string()
            } else {
                format!(
                    "taken in place; rows promoted earlier hold null in {} until `medallion rebuild {t}`",
                    p.added_columns.join(", ")
                )
            };
            let replay = p.waiting_in_dead_letter.map_or_else(String::new, |n| {
                format!(
                    "; {} record(s) wait in its dead letter: `medallion replay {t} --dry-run` shows which pass now",
                    thousands(n)
                )
            });
            eprintln!("note: silver/{t}: {changes}: {how}{replay}");
        }
    }
}

/// One warning line per silver table that rejected records (share, count, top reasons), whatever
/// the format and verbosity: a run that rejected records never says so only in a table. Then,
/// per batch a rejection-rate gate held back, its reasons and a few of its records.
fn warn_rejects(s: &RunSummary) {
    let mut tables: Vec<&str> = s.silver.iter().map(|p| p.table.as_str()).collect();
    tables.dedup();
    for t in tables {
        let of_table = || s.silver.iter().filter(move |p| p.table == t);
        let (read, rejected) = of_table().fold((0, 0), |(r, j), p| (r + p.read, j + p.rejected));
        if rejected > 0 {
            let mut reasons: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
            for (reason, n) in of_table().flat_map(|p| &p.top_reasons) {
                *reasons.entry(reason).or_default() += n;
            }
            let mut reasons: Vec<(&str, u64)> = reasons.into_iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let top: Vec<String> = reasons.iter().take(3).map(|(r, n)| format!("{r} {}", thousands(*n))).collect();
            eprintln!(
                "warning: silver/{t} rejected {} of {} records ({:.2}%): {}; see `medallion quarantine {t}`",
                thousands(rejected),
                thousands(read),
                100.0 * rejected as f64 / read.max(1) as f64,
                top.join(", ")
            );
        }
        for h in of_table().flat_map(|p| &p.held_back) {
            let top: Vec<String> = h.top_reasons.iter().map(|(r, n)| format!("{r} {}", thousands(*n))).collect();
            eprintln!("warning: silver/{t} held back batch {}: {}", h.describe(), top.join(", "));
            for sample in &h.samples {
                let shown: String = sample.chars().take(200).collect();
                eprintln!("  {shown}");
            }
        }
    }
}

/// The events were streamed while the run went; the summary (every promotion and build in full)
/// closes the stream.
fn print_json(s: &RunSummary) -> Result<()> {
    json_line("summary", serde_json::to_value(s)?)
}

fn print_text(project: &medallion::project::Project, s: &RunSummary, timings: bool) -> Result<()> {
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
    if s.silver.is_empty() && s.failed.iter().any(|f| f.node.starts_with("silver/")) {
        sayln!("\nsilver: nothing promoted (errors below)");
    } else if s.silver.is_empty() {
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
            match (b.rebuilt, b.partitions, b.added) {
                _ if b.waiting => "waiting for inputs".into(),
                (false, ..) => "up to date".into(),
                (true, Some(n), _) => format!("incremental ({n} partition{})", if n == 1 { "" } else { "s" }),
                (true, None, None) if b.maintained.is_some() => {
                    let n = b.maintained.unwrap_or_default();
                    format!("kept from changes ({} change{})", thousands(n), if n == 1 { "" } else { "s" })
                }
                (true, None, Some(n)) => {
                    format!("incremental ({} new row{})", thousands(n), if n == 1 { "" } else { "s" })
                }
                (true, None, None) => "rebuilt".into(),
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
    if let Some(t) = drift(&s.drift, |e| project.readers_of(&e.source, &e.field)) {
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
        // In the order a node goes through them (`NodeStage`'s order).
        let stages = |timings: &medallion::runtime::Timings| {
            timings.iter().map(|(k, v)| format!("{k} {v} ms")).collect::<Vec<_>>().join(", ")
        };
        for p in &s.silver {
            eprintln!("silver/{}: {}", p.table, stages(&p.timings_ms));
        }
        for b in &s.gold {
            if b.timings_ms.is_empty() {
                eprintln!("gold/{}: {} ms", b.model, b.duration_ms);
            } else {
                eprintln!("gold/{}: {} ms ({})", b.model, b.duration_ms, stages(&b.timings_ms));
            }
        }
        eprintln!("run: {} ms", s.duration_ms);
    }
    Ok(())
}
