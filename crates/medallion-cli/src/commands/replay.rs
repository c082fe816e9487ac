//! `medallion replay` and `medallion quarantine`: getting dead-letter records back.

use anyhow::{Result, bail};
use medallion::runtime::new_run_id;
use medallion::silver::dead_letter::summarize;
use medallion::silver::replay::{Replay, ReplayOptions, replay};

use super::{clock, open};
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{expectations, json_line, table, thousands};
use crate::{say, sayln};

pub async fn run(g: &Global, name: &str, filter: Option<String>, dry_run: bool) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let Some(silver) = project.silver.get(name) else {
        let known: Vec<_> = project.silver.keys().cloned().collect();
        bail!(
            "`{name}` is not a silver table (silver tables: {}); only silver dead letters can be replayed",
            known.join(", ")
        );
    };
    let now = clock(g)?;
    let run_id = new_run_id(Some("replay"), now);
    let r = replay(
        &lake,
        &project,
        silver,
        &ReplayOptions { run_id, now, filter, dry_run, lock_wait: super::lock_wait(g)? },
    )
    .await?;
    if g.format == Format::Json {
        json_line("replay", serde_json::to_value(&r)?)?;
    } else {
        print_text(&r)?;
    }
    Ok(Outcome::Ok)
}

fn print_text(r: &Replay) -> Result<()> {
    if r.selected == 0 {
        sayln!("quarantine/{}: no outstanding records to replay", r.table);
        return Ok(());
    }
    let mut rows = vec![vec!["previous reason".to_string(), "column".into(), "records".into(), "pass now".into()]];
    for c in &r.by_reason {
        rows.push(vec![
            c.rule.clone(),
            c.column.clone().unwrap_or_else(|| "-".into()),
            thousands(c.records),
            thousands(c.passing),
        ]);
    }
    if !r.dry_run && r.intent.is_none() {
        sayln!(
            "quarantine/{}: none of the {} outstanding records passes the current contract; nothing written",
            r.table,
            thousands(r.selected)
        );
        return Ok(());
    }
    if r.dry_run {
        sayln!(
            "dry run: {} of {} records of quarantine/{} would pass the current contract\n",
            thousands(r.passing),
            thousands(r.selected),
            r.table
        );
        say!("{}", table(&rows));
        return Ok(());
    }
    sayln!(
        "replay {} of quarantine/{}{}: {} records: promoted {} (inserted {}, updated {}) + superseded {} + still rejected {} + dropped {}",
        r.intent.map_or("-".into(), |v| v.to_string()),
        r.table,
        if r.resumed { " (resumed)" } else { "" },
        thousands(r.selected),
        thousands(r.promoted()),
        thousands(r.inserted),
        thousands(r.updated),
        thousands(r.superseded),
        thousands(r.rejected),
        thousands(r.dropped),
    );
    say!("\n{}", table(&rows));
    let node = format!("silver/{}", r.table);
    if let Some(t) = expectations(r.expectations.iter().map(|e| (node.as_str(), e))) {
        say!("\n{t}");
    }
    sayln!(
        "\nsilver version {}, quarantine version {}",
        r.silver_version.map_or("-".into(), |v| v.to_string()),
        r.quarantine_version.map_or("-".into(), |v| v.to_string())
    );
    Ok(())
}

pub async fn summary(g: &Global, name: &str) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let s = summarize(&lake, &project, name).await?;
    if g.format == Format::Json {
        json_line("dead_letter", serde_json::to_value(&s)?)?;
        return Ok(Outcome::Ok);
    }
    sayln!("{}: {} outstanding record(s), {} replayed", s.table, thousands(s.outstanding), thousands(s.replayed));
    if s.outstanding == 0 {
        return Ok(Outcome::Ok);
    }
    let mut rows = vec![vec!["reason".to_string(), "column".into(), "records".into()]];
    rows.extend(
        s.by_reason
            .iter()
            .map(|c| vec![c.label.clone(), c.column.clone().unwrap_or_else(|| "-".into()), thousands(c.records)]),
    );
    say!("\n{}", table(&rows));
    note_markers(&project, name, &s.null_markers)?;
    if let Some(d) = &s.delimiter {
        let source = project.silver.get(name).map_or(name, |t| t.source.as_str());
        let shown = if d.delimiter == '\t' { "\\t".to_string() } else { d.delimiter.to_string() };
        sayln!(
            "\nhint: the records carry one field {:?} where {:?} splits it into columns they lack ({}): set `delimiter = \"{shown}\"` on [sources.{source}], then `medallion rebuild {name}` reads the landed files with it",
            d.field,
            d.delimiter.to_string(),
            d.columns.join(", ")
        );
    }
    for f in &s.formats {
        let guess = if f.ambiguous { " (no value tells the day from the month: check which comes first)" } else { "" };
        sayln!(
            "\nhint: column {} ({}): `format = {:?}` reads the values of {} of the {} record(s) sampled from its type errors (such as {:?}){guess}: with it on the column, `medallion rebuild {name}` reads them (and what was published) that way",
            f.column,
            f.ty,
            f.format,
            thousands(f.records),
            thousands(f.sampled),
            f.example,
        );
    }
    let mut rows = vec![vec!["batch".to_string(), "records".into()]];
    rows.extend(s.by_batch.iter().map(|c| vec![c.label.clone(), thousands(c.records)]));
    say!("\n{}", table(&rows));
    let mut rows = vec![vec!["ingested on".to_string(), "records".into()]];
    rows.extend(s.by_day.iter().map(|c| vec![c.label.clone(), thousands(c.records)]));
    say!("\n{}", table(&rows));
    for (reason, raws) in &s.samples {
        sayln!("\n{reason}: sample records");
        for raw in raws {
            sayln!("  {raw}");
        }
    }
    Ok(Outcome::Ok)
}

/// A hint per undeclared null marker the dead letter's type errors show: where to declare it,
/// and the replay that then promotes the records.
fn note_markers(
    project: &medallion::project::Project,
    table: &str,
    markers: &[medallion::silver::dead_letter::Count],
) -> Result<()> {
    let mut by_marker: Vec<(&str, Vec<String>)> = Vec::new();
    for m in markers {
        let column = format!("{} ({})", m.column.as_deref().unwrap_or("-"), thousands(m.records));
        match by_marker.iter_mut().find(|(text, _)| *text == m.label) {
            Some((_, columns)) => columns.push(column),
            None => by_marker.push((&m.label, vec![column])),
        }
    }
    let source = project.silver.get(table).map_or(table, |t| t.source.as_str());
    // The columns' own markers first: on the source, a string column would read its `NA`
    // (North America) as null too.
    for (marker, columns) in by_marker {
        sayln!(
            "\nhint: {marker:?} where a value was expected, in {}: likely a null marker; `null_values = [{marker:?}]` on those columns (or on [sources.{source}], for string columns too) reads it as null, then `medallion replay {table}` promotes what passes",
            columns.join(", ")
        );
    }
    Ok(())
}
