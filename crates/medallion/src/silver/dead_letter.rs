//! A dead letter at a glance (`medallion quarantine <table>`): outstanding records by reason, by
//! batch and by ingest day, with sample raw records for the most common reasons.

use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::catalog::{self, Registry};
use crate::error::{Error, Result};
use crate::spec::quote;
use crate::storage::Lake;

/// Reasons shown with samples.
const TOP_REASONS: usize = 5;
/// Samples per reason.
const SAMPLES: usize = 3;
/// Rows of the by-batch and by-day lists.
const LIST: usize = 20;

/// A count under a label.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    /// What is counted (a rule, a batch, a day).
    pub label: String,
    /// The column, for column rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Records.
    pub records: u64,
}

/// The summary of one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// `quarantine/<table>`.
    pub table: String,
    /// Records still in the dead letter.
    pub outstanding: u64,
    /// Records a replay moved out.
    pub replayed: u64,
    /// Outstanding records per reason (a record with several reasons counts under each).
    pub by_reason: Vec<Count>,
    /// Outstanding records per batch (most first).
    pub by_batch: Vec<Count>,
    /// Outstanding records per ingest day (newest first).
    pub by_day: Vec<Count>,
    /// Sample raw records of the most common reasons (`rule (column)`).
    pub samples: Vec<(String, Vec<String>)>,
    /// Outstanding records rejected by `type` on a text exports use for a missing value (`NA`,
    /// `N/A`, `NULL`, …), by that text and column: null markers the contract does not declare.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub null_markers: Vec<Count>,
    /// Columns without a `format` whose `type` rejects are mostly values a format reads
    /// (`31/12/2024`, `1.234,56`): formats the contract does not declare.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<FormatHint>,
    /// A field of the sampled records (a CSV header read whole) that splits on a delimiter into
    /// columns the records lack: the source's `delimiter` is likely another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<DelimiterHint>,
}

/// A CSV header read as one field where another delimiter splits it into the contract's columns.
#[derive(Debug, Clone, Serialize)]
pub struct DelimiterHint {
    /// The field, as read (`id;name;amount`).
    pub field: String,
    /// The delimiter that splits it.
    pub delimiter: char,
    /// The missing columns it names.
    pub columns: Vec<String>,
}

/// A format that reads most of a column's rejected values.
#[derive(Debug, Clone, Serialize)]
pub struct FormatHint {
    /// The column.
    pub column: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The format (`%d/%m/%Y`, `1.234,56`).
    pub format: String,
    /// Outstanding records whose value it reads, of those holding the [`FORMAT_SAMPLE`] values
    /// most records hold.
    pub records: u64,
    /// Outstanding records holding those values.
    pub sampled: u64,
    /// One of those values.
    pub example: String,
    /// Whether another format reads as many (day and month told apart by no value).
    pub ambiguous: bool,
}

/// Distinct rejected values per column a format is guessed from (those most records hold): the
/// summary reads no more of a large dead letter.
pub const FORMAT_SAMPLE: usize = 1000;

/// Summarises `quarantine/<table>` (a silver table or a gold model).
pub async fn summarize(lake: &Lake, tables: &dyn Registry, table: &str) -> Result<DeadLetter> {
    if catalog::layer_of(tables, table).is_none() {
        let known = tables.published().into_iter().map(|(_, n, _)| n.to_string()).collect();
        return Err(Error::Unknown { kind: "table", name: table.to_string(), known });
    }
    let ctx = catalog::session(lake, tables).await?;
    let q = format!("quarantine.{table}");
    let counts = rows(&ctx, &format!("SELECT count(*) FILTER (WHERE _replayed_at IS NULL), count(*) FILTER (WHERE _replayed_at IS NOT NULL) FROM {q}")).await?;
    let number = |i: usize| {
        counts.first().and_then(|r| r.get(i)).and_then(|v| v.as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let (outstanding, replayed) = (number(0), number(1));
    let open = format!("(SELECT * FROM {q} WHERE _replayed_at IS NULL)");
    let reasons = rows(
        &ctx,
        &format!("SELECT e['rule'], e['column'], count(DISTINCT _id) AS n FROM (SELECT _id, unnest(_errors) AS e FROM {open}) GROUP BY 1, 2 ORDER BY n DESC, 1"),
    )
    .await?;
    let by_reason: Vec<Count> = reasons
        .into_iter()
        .map(|r| Count { label: text(&r[0]), column: r[1].clone(), records: count(&r[2]) })
        .collect();
    let by_batch =
        rows(&ctx, &format!("SELECT _batch_id, count(*) AS n FROM {open} GROUP BY 1 ORDER BY n DESC, 1 LIMIT {LIST}"))
            .await?;
    let by_day = rows(&ctx, &format!("SELECT CAST(CAST(_ingested_at AS DATE) AS VARCHAR), count(*) FROM {open} GROUP BY 1 ORDER BY 1 DESC LIMIT {LIST}")).await?;
    let mut samples = Vec::new();
    for reason in by_reason.iter().take(TOP_REASONS) {
        let column = reason
            .column
            .as_deref()
            .map_or_else(|| "e['column'] IS NULL".to_string(), |c| format!("e['column'] = {}", quote(c)));
        let raws = rows(
            &ctx,
            &format!(
                "SELECT _raw FROM (SELECT _raw, _ingested_at, _line, unnest(_errors) AS e FROM {open}) WHERE e['rule'] = {} AND {column} ORDER BY _ingested_at, _line LIMIT {SAMPLES}",
                quote(&reason.label)
            ),
        )
        .await?;
        let label = reason.column.as_ref().map_or_else(|| reason.label.clone(), |c| format!("{} ({c})", reason.label));
        samples.push((label, raws.into_iter().map(|r| text(&r[0])).collect()));
    }
    // The value is the quoted string of the coercion's message (`cannot read string "NA" as …`).
    let markers = super::coerce::COMMON_NULL_MARKERS.iter().map(|m| quote(m)).collect::<Vec<_>>().join(", ");
    let null_markers = rows(
        &ctx,
        &format!(
            "SELECT v, c, count(DISTINCT _id) AS n FROM (SELECT _id, trim(split_part(e['message'], '\"', 2)) AS v, e['column'] AS c \
             FROM (SELECT _id, unnest(_errors) AS e FROM {open}) WHERE e['rule'] = 'type' AND starts_with(e['message'], 'cannot read string \"')) \
             WHERE upper(v) IN ({markers}) GROUP BY 1, 2 ORDER BY n DESC, 1, 2"
        ),
    )
    .await?
    .into_iter()
    .map(|r| Count { label: text(&r[0]), column: r[1].clone(), records: count(&r[2]) })
    .collect();
    let formats = format_hints(
        rows(
            &ctx,
            &format!(
                "SELECT c, m, n FROM (SELECT c, m, n, row_number() OVER (PARTITION BY c ORDER BY n DESC, m) AS r \
                 FROM (SELECT c, m, count(DISTINCT _id) AS n FROM (SELECT _id, e['column'] AS c, e['message'] AS m \
                 FROM (SELECT _id, unnest(_errors) AS e FROM {open}) WHERE e['rule'] = 'type') \
                 WHERE starts_with(m, 'cannot read string \"') AND NOT contains(m, ' in format \"') GROUP BY 1, 2)) \
                 WHERE r <= {FORMAT_SAMPLE} ORDER BY 1, n DESC, 2"
            ),
        )
        .await?,
    );
    let missing: Vec<&str> =
        by_reason.iter().filter(|r| r.label == "required").filter_map(|r| r.column.as_deref()).collect();
    let delimiter = delimiter_hint(samples.iter().flat_map(|(_, raws)| raws).map(String::as_str), &missing);
    let plain = |rows: Vec<Vec<Option<String>>>| {
        rows.into_iter().map(|r| Count { label: text(&r[0]), column: None, records: count(&r[1]) }).collect()
    };
    Ok(DeadLetter {
        table: format!("quarantine/{table}"),
        outstanding,
        replayed,
        by_reason,
        by_batch: plain(by_batch),
        by_day: plain(by_day),
        samples,
        null_markers,
        formats,
        delimiter,
    })
}

/// The first field of `raws` (JSON objects) that `;`, a tab, `|` or `,` splits into at least two
/// of the `missing` columns.
fn delimiter_hint<'a>(raws: impl Iterator<Item = &'a str>, missing: &[&str]) -> Option<DelimiterHint> {
    for raw in raws {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(raw) else { continue };
        for field in fields.keys().filter(|k| !k.starts_with('_')) {
            for delimiter in [';', '\t', '|', ','] {
                let columns: Vec<String> =
                    field.split(delimiter).map(str::trim).filter(|p| missing.contains(p)).map(str::to_string).collect();
                if columns.len() >= 2 {
                    return Some(DelimiterHint { field: field.clone(), delimiter, columns });
                }
            }
        }
    }
    None
}

/// Per column, the format ([`super::formats::guess`]) reading the values of at least half of its
/// rejected records, from rows of (column, coercion message, records), a column's rows together.
fn format_hints(rows: Vec<Vec<Option<String>>>) -> Vec<FormatHint> {
    // `cannot read string "31/12/2024" as date`: the value as Rust quotes it, and the type.
    let parse = |m: &str| {
        let (value, ty) = m.strip_prefix("cannot read string \"")?.rsplit_once("\" as ")?;
        Some((value.replace("\\\"", "\"").replace("\\\\", "\\"), ty.parse::<crate::spec::ColumnType>().ok()?))
    };
    let mut hints = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.peek() {
        let column = text(&first[0]);
        let mut values: Vec<(String, u64)> = Vec::new();
        let mut ty = None;
        while let Some(r) = rows.next_if(|r| text(&r[0]) == column) {
            if let Some((v, t)) = r[1].as_deref().and_then(parse)
                && ty.is_none_or(|ty| ty == t)
            {
                ty = Some(t);
                values.push((v, count(&r[2])));
            }
        }
        let Some(ty) = ty else { continue };
        let weighted: Vec<(&str, u64)> = values.iter().map(|(v, n)| (v.trim(), *n)).collect();
        let Some(g) = super::formats::guess(&weighted, Some(ty), 0.5) else { continue };
        let read: Vec<&(String, u64)> =
            values.iter().filter(|(v, _)| super::coerce::reads_as(v.trim(), ty, Some(&g.format))).collect();
        hints.push(FormatHint {
            column,
            ty: ty.to_string(),
            format: g.format.text().to_string(),
            records: g.reads,
            sampled: weighted.iter().map(|(_, n)| n).sum(),
            example: read.first().map(|(v, _)| v.clone()).unwrap_or_default(),
            ambiguous: g.ambiguous,
        });
    }
    hints
}

/// Records still in `quarantine/<table>` (not replayed out); 0 if it does not exist.
pub async fn outstanding(lake: &Lake, table: &str) -> Result<u64> {
    let t = crate::storage::delta::Table::open(lake, crate::storage::Layer::Quarantine, table).await?;
    if !t.exists() {
        return Ok(0);
    }
    let ctx = SessionContext::new();
    ctx.register_table("q", t.provider(&ctx).await?).map_err(|e| Error::sql("counting the dead letter", e))?;
    let r = rows(&ctx, "SELECT count(*) FROM q WHERE _replayed_at IS NULL").await?;
    Ok(r.first().map_or(0, |r| count(&r[0])))
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn count(v: &Option<String>) -> u64 {
    v.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Every row of a query as text cells.
async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    catalog::text_rows(ctx, sql, "summarising the dead letter").await
}
