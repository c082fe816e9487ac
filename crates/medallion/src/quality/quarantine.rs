//! The dead letter: rejected records with their raw text and every reason, as a Delta table at
//! `quarantine/<table>`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, ListBuilder, RecordBatch, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimestampMicrosecondType};

use crate::error::{Error, Result};
use crate::storage::delta::{Txn, WriteOptions};
use crate::storage::timestamp_type;

/// Why a record was rejected: one failed rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reason {
    /// The column, for column rules.
    pub column: Option<String>,
    /// Rule: `required`, `type`, `range`, `finite`, a check's SQL, or a bronze rule (`invalid_json`…).
    pub rule: String,
    /// What was wrong, with the offending value.
    pub message: String,
}

impl Reason {
    /// An expectation that failed: its name is the rule.
    pub fn expectation(name: &str, definition: &str) -> Reason {
        Reason { column: None, rule: name.to_string(), message: format!("expectation `{name}` failed: {definition}") }
    }
}

/// One rejected record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rejected {
    /// The raw record (JSON text, every field it had).
    pub raw: String,
    /// All failed rules.
    pub reasons: Vec<Reason>,
    /// Its batch.
    pub batch_id: String,
    /// Its source.
    pub source: String,
    /// The bronze file.
    pub source_file: String,
    /// 1-based line in the bronze file; 0 when unknown (stored as null).
    pub line: u64,
    /// Batch ingest time (µs since epoch, UTC).
    pub ingested_at: Option<i64>,
    /// For a record already in the dead letter that a replay re-examined: its stored identity and
    /// what the replay did.
    #[serde(skip)]
    pub stored: Option<Box<Stored>>,
}

/// A dead-letter record's identity and replay state, as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// `_id`.
    pub id: String,
    /// When it was first rejected.
    pub failed_at: Option<i64>,
    /// The run that rejected it.
    pub run_id: Option<String>,
    /// When a replay promoted it out of the dead letter (None: still rejected).
    pub replayed_at: Option<i64>,
    /// The last replay that examined it.
    pub replay_run_id: Option<String>,
    /// `promoted`, `superseded`, `dropped` (moved to a new record by an expectation) or `rejected`.
    pub replay_outcome: Option<String>,
}

fn reason_fields() -> Fields {
    Fields::from(vec![
        Field::new("column", DataType::Utf8, true),
        Field::new("rule", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, true),
    ])
}

/// Rows per Parquet row group of a dead letter: its rows carry the raw record, so a writer's
/// default group (about 1M rows, held in memory until full) would cost memory in proportion to
/// a large promotion's rejects.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Bytes of a dead-letter data file (the writer holds one until it is full): a large promotion's
/// rejects are written in several files of this size, never held whole.
pub const FILE_BYTES: u64 = 32 << 20;

/// How a dead letter is written: one commit carrying `txn` and `metadata`, replacing its content
/// when `overwrite` (a rebuild), in row groups and files small enough that a large promotion's
/// rejects are never buffered whole.
pub fn write_options(txn: Txn, metadata: HashMap<String, serde_json::Value>, overwrite: bool) -> WriteOptions {
    WriteOptions {
        overwrite,
        txn: Some(txn),
        metadata,
        row_group_rows: Some(ROW_GROUP_ROWS),
        file_bytes: Some(FILE_BYTES),
        ..Default::default()
    }
}

/// Schema of `quarantine/<table>`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_id", DataType::Utf8, true),
        Field::new("_raw", DataType::Utf8, true),
        Field::new(
            "_errors",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(reason_fields()), true))),
            true,
        ),
        Field::new("_batch_id", DataType::Utf8, true),
        Field::new("_source", DataType::Utf8, true),
        Field::new("_source_file", DataType::Utf8, true),
        Field::new("_line", DataType::Int64, true),
        Field::new("_ingested_at", timestamp_type(), true),
        Field::new("_failed_at", timestamp_type(), true),
        Field::new("_run_id", DataType::Utf8, true),
        Field::new("_replayed_at", timestamp_type(), true),
        Field::new("_replay_run_id", DataType::Utf8, true),
        Field::new("_replay_outcome", DataType::Utf8, true),
    ]))
}

/// Text bytes per dead-letter batch at most: a promotion's rejects may hold gigabytes of text,
/// more than one arrow string array takes (2 GiB), and the dead letter's writer takes its batches
/// through a queue of ten (delta-rs's writer channel) filled faster than it encodes them: batches
/// of a bronze batch's rejects each (12 MB at 500k records a batch) kept the dead letter of a 10M
/// record first load in memory, 206 MB of its peak (117 MB at 5M; heaptrack).
const BATCH_BYTES: usize = 2 << 20;

/// Builds quarantine batches from rejected records, split so no batch holds more than
/// `BATCH_BYTES` of text (one empty batch when there are none); see [`to_batch`].
pub fn to_batches(rows: &[Rejected], failed_at: i64, run_id: &str) -> Result<Vec<RecordBatch>> {
    to_batches_within(rows, failed_at, run_id, BATCH_BYTES)
}

fn to_batches_within(rows: &[Rejected], failed_at: i64, run_id: &str, limit: usize) -> Result<Vec<RecordBatch>> {
    let size =
        |r: &Rejected| r.raw.len() + r.reasons.iter().map(|x| x.message.len() + x.rule.len() + 16).sum::<usize>() + 128;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        let n = size(r);
        if i > start && bytes + n > limit {
            out.push(to_batch(&rows[start..i], failed_at, run_id)?);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < rows.len() || out.is_empty() {
        out.push(to_batch(&rows[start..], failed_at, run_id)?);
    }
    Ok(out)
}

/// Builds one quarantine batch from rejected records. New records get a fresh `_id`, `failed_at`
/// and `run_id`; re-examined ones keep their [`Stored`] state.
pub fn to_batch(rows: &[Rejected], failed_at: i64, run_id: &str) -> Result<RecordBatch> {
    let n = rows.len();
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let mut id = StringBuilder::new();
    let mut replayed = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut replay_run = StringBuilder::new();
    let mut replay_outcome = StringBuilder::new();
    let mut raw = StringBuilder::with_capacity(n, n * 200);
    let mut errors = ListBuilder::new(StructBuilder::from_fields(reason_fields(), n)).with_field(Arc::new(Field::new(
        "item",
        DataType::Struct(reason_fields()),
        true,
    )));
    let mut batch_id = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut file = StringBuilder::new();
    let mut line = Int64Builder::with_capacity(n);
    let mut ingested = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut failed = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut run = StringBuilder::new();
    for (i, r) in rows.iter().enumerate() {
        match &r.stored {
            Some(h) => {
                id.append_value(&h.id);
                failed.append_option(h.failed_at);
                run.append_option(h.run_id.as_deref());
                replayed.append_option(h.replayed_at);
                replay_run.append_option(h.replay_run_id.as_deref());
                replay_outcome.append_option(h.replay_outcome.as_deref());
            }
            None => {
                id.append_value(format!("{prefix}-{i}"));
                failed.append_value(failed_at);
                run.append_value(run_id);
                replayed.append_null();
                replay_run.append_null();
                replay_outcome.append_null();
            }
        }
        raw.append_value(&r.raw);
        let items = errors.values();
        for reason in &r.reasons {
            let fields = items.field_builder::<StringBuilder>(0).ok_or_else(|| internal("column"))?;
            fields.append_option(reason.column.as_deref());
            items.field_builder::<StringBuilder>(1).ok_or_else(|| internal("rule"))?.append_value(&reason.rule);
            items.field_builder::<StringBuilder>(2).ok_or_else(|| internal("message"))?.append_value(&reason.message);
            items.append(true);
        }
        errors.append(true);
        batch_id.append_value(&r.batch_id);
        source.append_value(&r.source);
        file.append_value(&r.source_file);
        line.append_option((r.line > 0).then(|| i64::try_from(r.line).unwrap_or(i64::MAX)));
        ingested.append_option(r.ingested_at);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(raw.finish()),
        Arc::new(errors.finish()),
        Arc::new(batch_id.finish()),
        Arc::new(source.finish()),
        Arc::new(file.finish()),
        Arc::new(line.finish()),
        Arc::new(ingested.finish()),
        Arc::new(failed.finish()),
        Arc::new(run.finish()),
        Arc::new(replayed.finish()),
        Arc::new(replay_run.finish()),
        Arc::new(replay_outcome.finish()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| Error::arrow("building the quarantine batch", e))
}

/// Typed rows removed by expectations after validation, as dead-letter records: each row as a
/// JSON object (the raw bronze line is not kept past validation), with its reasons (in row
/// order) and its provenance from `_batch_id`, `_source` and `_ingested_at` when it has them.
/// `file_of` maps a batch id to its bronze file; `default_source` names rows without `_source`.
pub fn from_rows(
    batches: &[RecordBatch],
    reasons: Vec<Vec<Reason>>,
    default_source: &str,
    file_of: impl Fn(&str) -> String,
) -> Result<Vec<Rejected>> {
    let lines = crate::catalog::json_rows(batches, "rows removed by expectations")?;
    let mut out = Vec::with_capacity(lines.len());
    let mut lines = lines.into_iter();
    let mut reasons = reasons.into_iter();
    for b in batches {
        let text = |name: &str| b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>().cloned());
        let (batch_ids, sources) = (text(crate::bronze::BATCH_ID), text(crate::bronze::SOURCE));
        let ingested = b
            .column_by_name(crate::bronze::INGESTED_AT)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>().cloned());
        for r in 0..b.num_rows() {
            let (Some(raw), Some(why)) = (lines.next(), reasons.next()) else {
                return Err(Error::Internal("removed rows and their reasons differ in number".into()));
            };
            let batch_id =
                batch_ids.as_ref().filter(|c| c.is_valid(r)).map(|c| c.value(r).to_string()).unwrap_or_default();
            out.push(Rejected {
                raw,
                reasons: why,
                source_file: file_of(&batch_id),
                batch_id,
                source: sources
                    .as_ref()
                    .filter(|c| c.is_valid(r))
                    .map_or_else(|| default_source.to_string(), |c| c.value(r).to_string()),
                line: 0,
                ingested_at: ingested.as_ref().filter(|c| c.is_valid(r)).map(|c| c.value(r)),
                stored: None,
            });
        }
    }
    Ok(out)
}

fn internal(what: &str) -> Error {
    Error::Internal(format!("quarantine reason builder lacks `{what}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(raw: &str) -> Rejected {
        Rejected {
            raw: raw.to_string(),
            reasons: vec![Reason { column: Some("a".into()), rule: "type".into(), message: "not a number".into() }],
            batch_id: "b".into(),
            source: "s".into(),
            source_file: "f".into(),
            line: 1,
            ingested_at: None,
            stored: None,
        }
    }

    /// Issue 22: rejects of any total size become batches each under the byte limit (arrow's
    /// string arrays hold 2 GiB at most), every record once, in order; none gives one empty batch.
    #[test]
    fn rejects_are_split_into_batches_by_bytes() {
        let rows: Vec<Rejected> = (0..50).map(|i| rejected(&"x".repeat(100 + i))).collect();
        let batches = to_batches_within(&rows, 0, "r", 1_000).expect("batches");
        assert!(batches.len() > 5, "{}", batches.len());
        let raws: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("_raw").expect("_raw").as_string::<i32>().clone();
                (0..col.len()).map(move |i| col.value(i).to_string())
            })
            .collect();
        assert_eq!(raws, rows.iter().map(|r| r.raw.clone()).collect::<Vec<_>>());
        let ids: std::collections::BTreeSet<String> = batches
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("_id").expect("_id").as_string::<i32>().clone();
                (0..col.len()).map(move |i| col.value(i).to_string())
            })
            .collect();
        assert_eq!(ids.len(), 50, "ids stay unique across batches");
        // A single record over the limit still gets its own batch.
        assert_eq!(to_batches_within(&[rejected(&"y".repeat(5_000))], 0, "r", 1_000).expect("one").len(), 1);
        let none = to_batches_within(&[], 0, "r", 1_000).expect("none");
        assert_eq!((none.len(), none[0].num_rows()), (1, 0));
    }
}
