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
        rows.push(vec![
            file.clone(),
            outcome.status.label().into(),
            outcome.batch_id,
            thousands(outcome.records),
            thousands(outcome.corrupt),
        ]);
    }
    if g.format != Format::Json {
        say!("{}", table(&rows));
    }
    Ok(Outcome::Ok)
}
