//! Landing raw input in bronze, exactly once per content.
//!
//! ```text
//! input ─▶ sha256(content) ─▶ _medallion/ingest/<source>/<sha256>.json   (marker, create-only)
//!                         └─▶ bronze/<source>/<date>/<batch_id>.ndjson.gz  (atomic put)
//! ```
//!
//! The marker is written first and names the batch id, date and ingest time; a crash before the
//! batch file lands is repaired by the next ingest of the same content, which rewrites that same
//! batch. A second ingest of a content whose batch exists does nothing.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{CORRUPT_RECORD, batch_path};
use crate::error::{Error, Result};
use crate::spec::SourceFormat;
use crate::storage::Lake;

/// What happened to one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    /// A new batch was landed.
    Ingested,
    /// The same content was ingested before; nothing was written.
    AlreadyIngested,
    /// An earlier ingest of this content was interrupted; its batch was completed now.
    Recovered,
}

impl IngestStatus {
    /// A short label for people.
    pub fn label(&self) -> &'static str {
        match self {
            IngestStatus::Ingested => "ingested",
            IngestStatus::AlreadyIngested => "already ingested",
            IngestStatus::Recovered => "recovered",
        }
    }
}

/// The result of ingesting one input.
#[derive(Debug, Clone, Serialize)]
pub struct IngestOutcome {
    /// The input's name (path or `-`).
    pub input: String,
    /// What happened.
    pub status: IngestStatus,
    /// The batch id.
    pub batch_id: String,
    /// The batch's object path in the lake.
    pub path: String,
    /// Records in the batch (0 when nothing was written).
    pub records: u64,
    /// Lines that were not JSON objects, kept as `_corrupt_record` text.
    pub corrupt: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    batch_id: String,
    date: String,
    ingested_at: String,
    input: String,
}

/// Lands `content` (the raw bytes of `input`, gzip accepted) as a batch of `source`.
pub async fn ingest(
    lake: &Lake,
    source: &str,
    format: SourceFormat,
    input: &str,
    content: Vec<u8>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IngestOutcome> {
    let content = gunzip_if_needed(content).map_err(|e| Error::Ingest {
        source_name: source.to_string(),
        input: input.to_string(),
        message: format!("looks like gzip but cannot be decompressed: {e}"),
    })?;
    let hash = hex(&Sha256::digest(&content));
    let marker_path = format!("_medallion/ingest/{source}/{hash}.json");
    let fresh = Marker {
        batch_id: uuid::Uuid::new_v4().to_string(),
        date: now.format("%Y-%m-%d").to_string(),
        ingested_at: now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
        input: input.to_string(),
    };
    let marker_bytes = serde_json::to_vec(&fresh).map_err(|e| Error::Internal(e.to_string()))?;
    let (marker, created) = if lake.put_if_absent(&marker_path, marker_bytes).await? {
        (fresh, true)
    } else {
        let bytes = lake.get(&marker_path).await?.ok_or_else(|| Error::Internal(format!("{marker_path} vanished")))?;
        let marker: Marker = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("corrupt ingest marker {marker_path}: {e}")))?;
        (marker, false)
    };
    let path = batch_path(source, &marker.date, &marker.batch_id);
    crate::orchestration::faults::check(&format!("bronze/{source}"), "batch")?;
    if !created && lake.exists(&path).await? {
        return Ok(IngestOutcome {
            input: input.to_string(),
            status: IngestStatus::AlreadyIngested,
            batch_id: marker.batch_id,
            path,
            records: 0,
            corrupt: 0,
        });
    }
    let provenance = format!(
        "\"_batch_id\": {}, \"_ingested_at\": {}, \"_source\": {}",
        json_string(&marker.batch_id),
        json_string(&marker.ingested_at),
        json_string(source)
    );
    let (ndjson, records, corrupt) = to_ndjson(format, &content, &provenance);
    let mut encoder = GzEncoder::new(Vec::with_capacity(ndjson.len() / 4), Compression::new(6));
    encoder.write_all(ndjson.as_bytes()).and_then(|()| Ok(())).map_err(|e| Error::Internal(e.to_string()))?;
    let gz = encoder.finish().map_err(|e| Error::Internal(e.to_string()))?;
    lake.put(&path, gz).await?;
    Ok(IngestOutcome {
        input: input.to_string(),
        status: if created { IngestStatus::Ingested } else { IngestStatus::Recovered },
        batch_id: marker.batch_id,
        path,
        records,
        corrupt,
    })
}

fn gunzip_if_needed(content: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if content.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(content.len() * 4);
        flate2::read::MultiGzDecoder::new(&content[..]).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(content)
    }
}

/// Converts raw content to NDJSON records carrying `provenance`; returns (text, records, corrupt).
fn to_ndjson(format: SourceFormat, content: &[u8], provenance: &str) -> (String, u64, u64) {
    let mut out = String::with_capacity(content.len() + content.len() / 4);
    let mut records = 0;
    let mut corrupt = 0;
    let mut emit = |out: &mut String, record: Record<'_>| {
        records += 1;
        match record {
            Record::Object(obj) => {
                let body = obj.trim_end().strip_suffix('}').unwrap_or(obj).trim_end();
                out.push_str(body);
                if !body.trim_start().eq("{") {
                    out.push_str(", ");
                }
                out.push_str(provenance);
                out.push_str("}\n");
            }
            Record::Corrupt(text) => {
                corrupt += 1;
                out.push_str(&format!("{{\"{CORRUPT_RECORD}\": {}, {provenance}}}\n", json_string(&text)));
            }
        }
    };
    match format {
        SourceFormat::Ndjson => ndjson_records(content, |r| emit(&mut out, r)),
        SourceFormat::Json => json_records(content, |r| emit(&mut out, r)),
        SourceFormat::Csv => csv_records(content, |r| emit(&mut out, r)),
    }
    (out, records, corrupt)
}

enum Record<'a> {
    /// A JSON object's exact text.
    Object(&'a str),
    /// Anything else, as text.
    Corrupt(String),
}

fn ndjson_records(content: &[u8], mut emit: impl FnMut(Record<'_>)) {
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(line) {
            Ok(text) => emit(classify(text.trim())),
            Err(_) => emit(Record::Corrupt(String::from_utf8_lossy(line).into_owned())),
        }
    }
}

fn classify(text: &str) -> Record<'_> {
    if text.starts_with('{') && serde_json::from_str::<IgnoredAny>(text).is_ok() {
        Record::Object(text)
    } else {
        Record::Corrupt(text.to_string())
    }
}

fn json_records(content: &[u8], mut emit: impl FnMut(Record<'_>)) {
    let Ok(text) = std::str::from_utf8(content) else {
        return ndjson_records(content, emit);
    };
    match serde_json::from_str::<Vec<&RawValue>>(text) {
        Ok(items) => items.into_iter().for_each(|v| emit(classify(v.get()))),
        Err(_) => ndjson_records(content, emit),
    }
}

fn csv_records(content: &[u8], mut emit: impl FnMut(Record<'_>)) {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(content);
    let headers: Vec<String> = match reader.byte_headers() {
        Ok(h) => h.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect(),
        Err(e) => return emit(Record::Corrupt(format!("unreadable CSV header: {e}"))),
    };
    for row in reader.byte_records() {
        match row {
            Ok(row) => {
                let mut obj = String::from("{");
                for (i, value) in row.iter().enumerate() {
                    let key = headers.get(i).cloned().unwrap_or_else(|| format!("_extra_{i}"));
                    if i > 0 {
                        obj.push_str(", ");
                    }
                    obj.push_str(&json_string(&key));
                    obj.push_str(": ");
                    // CSV cannot tell an empty value from a missing one: an empty cell is null.
                    if value.is_empty() {
                        obj.push_str("null");
                    } else {
                        obj.push_str(&json_string(&String::from_utf8_lossy(value)));
                    }
                }
                obj.push('}');
                emit(Record::Object(&obj));
            }
            Err(e) => emit(Record::Corrupt(format!("unreadable CSV row: {e}"))),
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "\"_batch_id\": \"b\"";

    #[test]
    fn ndjson_keeps_records_verbatim_and_appends_provenance() {
        let (out, n, bad) = to_ndjson(SourceFormat::Ndjson, b"{\"a\": 1.50, \"x\": [1]}\n\n{}\nnope\n[1]\n", P);
        assert_eq!((n, bad), (4, 2));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"a\": 1.50, \"x\": [1], \"_batch_id\": \"b\"}");
        assert_eq!(lines[1], "{\"_batch_id\": \"b\"}");
        assert_eq!(lines[2], "{\"_corrupt_record\": \"nope\", \"_batch_id\": \"b\"}");
        assert_eq!(lines[3], "{\"_corrupt_record\": \"[1]\", \"_batch_id\": \"b\"}");
    }

    #[test]
    fn json_array_and_csv() {
        let (out, n, _) = to_ndjson(SourceFormat::Json, b"[{\"a\": 1}, {\"a\": \"2\"}]", P);
        assert_eq!(n, 2);
        assert!(out.starts_with("{\"a\": 1, "));
        let (out, n, _) = to_ndjson(SourceFormat::Csv, b"a,b\n1,\n2,\"y,z\",extra\n", P);
        assert_eq!(n, 2);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"a\": \"1\", \"b\": null, \"_batch_id\": \"b\"}");
        assert_eq!(lines[1], "{\"a\": \"2\", \"b\": \"y,z\", \"_extra_2\": \"extra\", \"_batch_id\": \"b\"}");
    }
}
