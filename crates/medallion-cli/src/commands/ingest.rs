//! `medallion ingest`.

use std::io::Read;

use anyhow::{Context, Result};
use medallion::bronze::ingest::{FileInput, ingest, ingest_from};

use super::{clock, open, spinner};
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{json_line, table, thousands};
use crate::say;

pub async fn run(g: &Global, source: &str, files: &[String]) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let src = project.source(source)?;
    let now = clock(g)?;
    let mut rows =
        vec![vec!["input".to_string(), "status".into(), "batch".into(), "records".into(), "not objects".into()]];
    if let (Some(http), true) = (&src.http, files.is_empty()) {
        let lock = medallion::runtime::lock::acquire(&lake, &format!("ingest {}", src.name)).await?;
        let progress = spinner(g, format!("fetching `{}`", src.name));
        let fetched = medallion::bronze::http::fetch(&lake, &src.name, http, now).await;
        if let Some(pb) = progress {
            pb.finish_and_clear();
        }
        let outcomes = lock.release_after(fetched).await?;
        super::run::note_landing(&outcomes);
        for outcome in outcomes {
            if g.format == Format::Json {
                json_line("ingested", serde_json::to_value(&outcome)?)?;
            }
            rows.push(row(outcome.input.clone(), outcome));
        }
        if g.format != Format::Json {
            say!("{}", if rows.len() == 1 { "no new records".to_string() } else { table(&rows) });
        }
        return Ok(Outcome::Ok);
    }
    if files.is_empty() {
        anyhow::bail!("give files to ingest into `{}`, or `-` to read standard input", src.name);
    }
    for (i, file) in files.iter().enumerate() {
        let progress = spinner(g, format!("ingesting {file} into `{}`", src.name));
        let at = medallion::runtime::clock::later(now, i);
        let outcome = if file == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read standard input")?;
            ingest(&lake, &src.name, src.read.clone(), file, buf, at).await
        } else {
            // A FIFO or device would block or never end: regular files only (`-` reads stdin).
            let meta = std::fs::metadata(file).with_context(|| format!("cannot read {file}"))?;
            if !meta.is_file() {
                let what = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
                anyhow::bail!("cannot ingest {file}: it is {what}; give files, or `-` to read standard input");
            }
            let input = std::sync::Arc::new(FileInput { path: file.into(), start: 0, head: Vec::new() });
            ingest_from(&lake, &src.name, src.read.clone(), file, input, at).await
        };
        if let Some(pb) = progress {
            pb.finish_and_clear();
        }
        let outcome = outcome?;
        super::run::note_landing(std::slice::from_ref(&outcome));
        if g.format == Format::Json {
            json_line("ingested", serde_json::to_value(&outcome)?)?;
        }
        rows.push(row(file.clone(), outcome));
    }
    if g.format != Format::Json {
        say!("{}", table(&rows));
    }
    Ok(Outcome::Ok)
}

/// `ingest --follow`: lands what arrives, every `interval`, until SIGTERM or Ctrl-C. A signal is
/// taken between rounds, so the file (or page) being landed is finished first; a kill loses
/// nothing either, since landing files stay where they are and land exactly once per content.
pub async fn follow(g: &Global, source: Option<&str>, interval: &str) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let interval = super::span(interval, "--interval")?;
    let sources: Vec<_> = match source {
        Some(name) => vec![project.source(name)?.clone()],
        None => project.sources.values().filter(|s| s.http.is_some() || !s.paths.is_empty()).cloned().collect(),
    };
    if sources.iter().all(|s| s.http.is_none() && s.paths.is_empty()) {
        anyhow::bail!("nothing to follow: give a source `paths` (landing files) or an `http` table");
    }
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    eprintln!("following {} every {}s; SIGTERM or Ctrl-C stops", names.join(", "), interval.as_secs_f64());
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut landed = 0u64;
    loop {
        for src in &sources {
            let now = clock(g)?;
            let outcomes = if src.http.is_some() {
                // An HTTP source's fetch state has one writer: skip the round while a run holds
                // the lake (the run fetches it itself).
                match medallion::runtime::lock::acquire(&lake, &format!("ingest --follow {}", src.name)).await {
                    Ok(lock) => {
                        lock.release_after(medallion::orchestration::run::land(&project, &lake, src, now).await).await
                    }
                    Err(medallion::Error::Busy { .. }) => continue,
                    Err(e) => Err(e),
                }
            } else {
                medallion::orchestration::run::land(&project, &lake, src, now).await
            };
            let outcomes = match outcomes {
                Ok(o) => o,
                Err(e) => {
                    // A source that fails (an API down) is tried again next round.
                    eprintln!("error: {}: {e}", src.name);
                    continue;
                }
            };
            super::run::note_landing(&outcomes);
            for o in outcomes.into_iter().filter(|o| o.records > 0) {
                landed += o.records;
                if g.format == Format::Json {
                    json_line("ingested", serde_json::to_value(&o)?)?;
                } else {
                    say!("{}: {} {} records ({})", src.name, o.input, thousands(o.records), o.status.label());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("stopping: {} records landed", thousands(landed));
    Ok(Outcome::Ok)
}

fn row(input: String, outcome: medallion::bronze::ingest::IngestOutcome) -> Vec<String> {
    vec![input, outcome.status.label().into(), outcome.batch_id, thousands(outcome.records), thousands(outcome.corrupt)]
}
