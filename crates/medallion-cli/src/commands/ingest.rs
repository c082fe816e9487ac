//! `medallion ingest`.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, Result};
use medallion::bronze::ingest::{FileInput, Input, ingest_from};

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
    // Standard input is read whole first; files must be regular files (a FIFO or device would
    // block or never end).
    let mut inputs: Vec<Arc<dyn Input>> = Vec::with_capacity(files.len());
    for file in files {
        if file == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read standard input")?;
            inputs.push(Arc::new(bytes::Bytes::from(buf)));
            continue;
        }
        let meta = std::fs::metadata(file).with_context(|| format!("cannot read {file}"))?;
        if !meta.is_file() {
            let what = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
            anyhow::bail!("cannot ingest {file}: it is {what}; give files, or `-` to read standard input");
        }
        inputs.push(Arc::new(FileInput::new(file)));
    }
    // Files land `--threads` at a time, in waves that keep a repeated file after its first copy;
    // each gets a later ingest time than the file before it, as given.
    let threads = super::threads(g);
    let progress = spinner(g, format!("ingesting {} input(s) into `{}`", files.len(), src.name));
    let landed = medallion::bronze::landing::in_waves(&inputs, threads, |i| {
        let (input, at) = (Arc::clone(&inputs[i]), medallion::runtime::clock::later(now, i));
        let (lake, src) = (&lake, &src);
        async move { ingest_from(lake, &src.name, src.read.clone(), &files[i], input, at).await }
    })
    .await;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut failed = Vec::new();
    for (file, outcome) in files.iter().zip(landed) {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                failed.push(e);
                continue;
            }
        };
        super::run::note_landing(std::slice::from_ref(&outcome));
        if g.format == Format::Json {
            json_line("ingested", serde_json::to_value(&outcome)?)?;
        }
        rows.push(row(file.clone(), outcome));
    }
    // Nothing landed: the error, as for one file. Some landed: they are reported, then each
    // input that could not land, and the command fails (exit 1).
    if rows.len() == 1 && !failed.is_empty() {
        let first = failed.remove(0);
        if failed.is_empty() {
            return Err(first.into());
        }
        let others: Vec<String> = failed.iter().map(|e| format!("  {e}")).collect();
        anyhow::bail!("{first}\nand {} more input(s) not ingested:\n{}", failed.len(), others.join("\n"));
    }
    if g.format != Format::Json {
        say!("{}", table(&rows));
    }
    for e in &failed {
        eprintln!("error: {e}");
    }
    Ok(if failed.is_empty() { Outcome::Ok } else { Outcome::Failed })
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
