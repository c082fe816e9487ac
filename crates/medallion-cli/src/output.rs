//! Rendering to stdout: aligned text tables and JSON Lines.

use std::io::Write;

use anyhow::{Context, Result};
use medallion::arrow::array::RecordBatch;
use medallion::arrow::datatypes::SchemaRef;
use medallion::arrow::json::WriterBuilder;
use medallion::arrow::json::writer::LineDelimited;
use medallion::bronze::drift::DriftEvent;

use crate::args::Format;

/// Schema version of every JSON line.
pub const SCHEMA_VERSION: u32 = 1;

/// Writes one JSON line with `type` and `schema_version` added.
pub fn json_line(kind: &str, value: serde_json::Value) -> Result<()> {
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), kind.into());
    obj.insert("schema_version".into(), SCHEMA_VERSION.into());
    if let serde_json::Value::Object(m) = value {
        obj.extend(m);
    } else {
        obj.insert("value".into(), value);
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &obj)?;
    writeln!(out)?;
    Ok(())
}

/// A plain aligned table: the first row is the header; columns whose cells are all numbers (or
/// `-`) are right-aligned, header included.
pub fn table(rows: &[Vec<String>]) -> String {
    let Some(header) = rows.first() else { return String::new() };
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
        .collect();
    let numeric: Vec<bool> = (0..header.len())
        .map(|c| {
            // A column of `-` alone holds no number: it reads as text.
            c > 0
                && rows[1..].iter().any(|r| r.get(c).is_some_and(|s| s != "-"))
                && rows[1..].iter().all(|r| {
                    r.get(c).is_some_and(|s| {
                        s == "-" || (!s.is_empty() && s.chars().all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '.'))
                    })
                })
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[c].saturating_sub(cell.chars().count()));
            if c > 0 {
                line.push_str("  ");
            }
            if numeric[c] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Prints record batches as a text grid, JSON Lines (`type: "row"`, the row's columns in
/// order, nulls kept, decimals as exact JSON numbers) or CSV with a header.
pub fn batches(schema: SchemaRef, batches: &[RecordBatch], format: Format) -> Result<()> {
    // No batches (an empty table): the header still says what the columns are.
    let empty = [RecordBatch::new_empty(schema)];
    let batches = if batches.is_empty() { &empty[..] } else { batches };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(&mut buf);
                for b in batches {
                    writer.write(b)?;
                }
                writer.finish()?;
            }
            // The row's text as arrow wrote it: parsing it would sort keys and round decimals.
            for line in String::from_utf8(buf)?.lines() {
                writeln!(out, "{{\"row\":{line},\"schema_version\":{SCHEMA_VERSION},\"type\":\"row\"}}")?;
            }
        }
        Format::Csv => {
            let mut writer = medallion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in batches {
                writer.write(b)?;
            }
        }
        Format::Text => {
            let text = medallion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

/// Writes `batches` to `path` as Parquet, CSV or NDJSON (by its extension); returns the rows.
pub fn write_file(
    schema: medallion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    path: &std::path::Path,
) -> Result<u64> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    if !matches!(ext.as_str(), "parquet" | "csv" | "ndjson" | "jsonl" | "json") {
        anyhow::bail!("--out {}: the extension names the format: .parquet, .csv or .ndjson/.jsonl", path.display());
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    match ext.as_str() {
        "parquet" => {
            let mut writer = medallion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
            for b in batches {
                writer.write(b)?;
            }
            writer.close()?;
        }
        "csv" => {
            let mut writer = medallion::arrow::csv::WriterBuilder::new().with_header(true).build(file);
            for b in batches {
                writer.write(b)?;
            }
        }
        _ => {
            let mut writer =
                WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(std::io::BufWriter::new(file));
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
    }
    Ok(rows)
}

/// Writes to stdout, reporting failure (a closed pipe ends the command quietly, see `main`).
pub fn stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_fmt(args)
}

/// `print!` that returns the write error instead of panicking on a closed pipe.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*))? };
}

/// `println!` that returns the write error instead of panicking on a closed pipe.
#[macro_export]
macro_rules! sayln {
    () => { $crate::output::stdout(format_args!("\n"))? };
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*)))? };
}

/// Expectation results as a table: name, node, kind, action, failing rows, rows checked, what was
/// observed (table-level kinds) and the outcome (upper-case when it stopped publication).
pub fn expectations<'a>(
    results: impl IntoIterator<Item = (&'a str, &'a medallion::quality::gates::GateResult)>,
) -> Option<String> {
    use medallion::quality::gates::Outcome;
    let mut rows = vec![vec![
        "expectation".to_string(),
        "node".into(),
        "kind".into(),
        "action".into(),
        "failing".into(),
        "checked".into(),
        "observed".into(),
        "outcome".into(),
    ]];
    for (node, e) in results {
        let outcome = match e.outcome {
            Outcome::Fail => "FAIL".to_string(),
            o => o.label().to_string(),
        };
        let dropped = if e.dropped > 0 { format!(" ({} dropped)", thousands(e.dropped)) } else { String::new() };
        rows.push(vec![
            e.name.clone(),
            node.to_string(),
            e.kind.to_string(),
            format!("{:?}", e.action).to_lowercase(),
            format!("{}{dropped}", thousands(e.failing_rows)),
            thousands(e.rows_checked),
            e.observed.clone().unwrap_or_else(|| "-".into()),
            outcome,
        ]);
    }
    (rows.len() > 1).then(|| table(&rows))
}

/// The sample failing rows of results that did not pass.
pub fn samples<'a>(results: impl IntoIterator<Item = (&'a str, &'a medallion::quality::gates::GateResult)>) -> String {
    let mut out = String::new();
    for (node, e) in results {
        if e.samples.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{} on {node}: sample failing rows\n", e.name));
        for s in &e.samples {
            out.push_str(&format!("  {s}\n"));
        }
    }
    out
}

/// Schema-drift events as a table: source, field, change, types, the silver tables whose contract
/// reads the field (`read_by`; `-`: none yet, bronze alone keeps it), first-seen batch and time.
pub fn drift(events: &[DriftEvent], read_by: impl Fn(&DriftEvent) -> Vec<String>) -> Option<String> {
    let mut rows = vec![vec![
        "source".to_string(),
        "field".into(),
        "change".into(),
        "types".into(),
        "read by".into(),
        "first seen in batch".into(),
        "ingested at".into(),
    ]];
    for e in events {
        let types = if e.types.is_empty() { "null".to_string() } else { e.types.join(", ") };
        let types = if e.known.is_empty() { types } else { format!("{types} (was {})", e.known.join(", ")) };
        rows.push(vec![
            e.source.clone(),
            e.field.clone(),
            e.change.replace('_', " "),
            types,
            Some(read_by(e).join(", ")).filter(|r| !r.is_empty()).unwrap_or_else(|| "-".into()),
            e.batch_id.clone(),
            e.ingested_at.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    (rows.len() > 1).then(|| table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(859_566), "859,566");
        assert_eq!(thousands(12), "12");
        let t = table(&[vec!["table".into(), "rows".into()], vec!["orders".into(), "1,000".into()]]);
        assert_eq!(t, "table    rows\norders  1,000\n");
        // Numbers (and `-` among them) right-aligned; a column of `-` alone is text.
        let row = |a: &str, b: &str, c: &str| vec![a.to_string(), b.to_string(), c.to_string()];
        let t = table(&[row("table", "version", "read by"), row("a", "12", "-"), row("b", "-", "-")]);
        assert_eq!(t, "table  version  read by\na           12  -\nb            -  -\n");
    }
}
