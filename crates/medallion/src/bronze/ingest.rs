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

use super::{CORRUPT_RECORD, LINE, batch_path};
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
    /// A landing entry that was not read (why: in [`IngestOutcome::note`]): not a regular file,
    /// a symlink, unreadable, still being written, or a temporary name. It stays where it is.
    Skipped,
}

impl IngestStatus {
    /// A short label for people.
    pub fn label(&self) -> &'static str {
        match self {
            IngestStatus::Ingested => "ingested",
            IngestStatus::AlreadyIngested => "already ingested",
            IngestStatus::Recovered => "recovered",
            IngestStatus::Skipped => "skipped",
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
    /// Damage to the input (a gzip stream unreadable past some point: what was read landed), or
    /// why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl IngestOutcome {
    /// A landing entry that was not read, and why.
    pub fn skipped(input: &str, why: impl Into<String>) -> IngestOutcome {
        IngestOutcome {
            input: input.to_string(),
            status: IngestStatus::Skipped,
            batch_id: String::new(),
            path: String::new(),
            records: 0,
            corrupt: 0,
            note: Some(why.into()),
        }
    }
}

/// Decompressed bytes of one input at most, and times its compressed size: past either, a gzip
/// input is refused whole (a gzip bomb inflates a thousandfold; NDJSON and CSV about tenfold).
pub const MAX_INFLATED_BYTES: u64 = 16 << 30;
/// See [`MAX_INFLATED_BYTES`].
pub const MAX_INFLATE_RATIO: u64 = 200;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    batch_id: String,
    date: String,
    ingested_at: String,
    input: String,
}

/// How a source's files are read: the format, the text encoding and, for CSV, the dialect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Raw format.
    pub format: SourceFormat,
    /// Text encoding of the files (bronze stores UTF-8).
    pub encoding: Encoding,
    /// CSV dialect (ignored for other formats).
    pub csv: CsvOptions,
}

impl From<SourceFormat> for ReadOptions {
    fn from(format: SourceFormat) -> Self {
        ReadOptions { format, ..Default::default() }
    }
}

/// A text encoding medallion reads (and turns into UTF-8 at ingest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 (a byte-order mark is dropped).
    #[default]
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same value.
    Latin1,
    /// Windows-1252: Latin-1 with printable characters (€, curly quotes, …) in 0x80–0x9F.
    Windows1252,
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => Ok(Encoding::Latin1),
            "windows-1252" | "cp1252" => Ok(Encoding::Windows1252),
            _ => Err(format!("unknown encoding `{s}`: use utf-8, latin-1 or windows-1252")),
        }
    }
}

impl Encoding {
    /// `content` as UTF-8 bytes.
    fn to_utf8(self, content: Vec<u8>) -> Vec<u8> {
        let map = |b: u8| -> char {
            match (self, b) {
                (Encoding::Windows1252, 0x80..=0x9f) => WINDOWS_1252_HIGH[usize::from(b - 0x80)],
                _ => char::from(b),
            }
        };
        match self {
            Encoding::Utf8 => match content.strip_prefix(b"\xef\xbb\xbf") {
                Some(rest) => rest.to_vec(),
                None => content,
            },
            Encoding::Latin1 | Encoding::Windows1252 => content.into_iter().map(map).collect::<String>().into_bytes(),
        }
    }
}

/// Windows-1252's characters for 0x80–0x9F (the five unassigned bytes kept as their C1 code points).
const WINDOWS_1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘', '’',
    '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// A CSV dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
    /// Escape character inside quotes (None: quotes are doubled).
    pub escape: Option<u8>,
    /// Whether the first row (after `skip_rows`) names the columns.
    pub header: bool,
    /// Column names when there is no header (default `column1`, `column2`, …).
    pub column_names: Vec<String>,
    /// Lines skipped at the top of each file.
    pub skip_rows: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { delimiter: b',', quote: b'"', escape: None, header: true, column_names: Vec::new(), skip_rows: 0 }
    }
}

/// Lands `content` (the raw bytes of `input`, gzip accepted) as a batch of `source`, read as
/// `read` says (a [`SourceFormat`] alone reads UTF-8 and the default CSV dialect).
pub async fn ingest(
    lake: &Lake,
    source: &str,
    read: impl Into<ReadOptions>,
    input: &str,
    content: Vec<u8>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IngestOutcome> {
    let read = read.into();
    let cap = MAX_INFLATED_BYTES.min((content.len() as u64).saturating_mul(MAX_INFLATE_RATIO).max(1 << 20));
    let (content, damage) = gunzip_if_needed(content, cap).map_err(|message| Error::Ingest {
        source_name: source.to_string(),
        input: input.to_string(),
        message,
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
    crate::runtime::faults::check(&format!("bronze/{source}"), "batch")?;
    if !created && lake.exists(&path).await? {
        return Ok(IngestOutcome {
            input: input.to_string(),
            status: IngestStatus::AlreadyIngested,
            batch_id: marker.batch_id,
            path,
            records: 0,
            corrupt: 0,
            note: damage,
        });
    }
    let provenance = format!(
        "\"_batch_id\": {}, \"_ingested_at\": {}, \"_source\": {}",
        json_string(&marker.batch_id),
        json_string(&marker.ingested_at),
        json_string(source)
    );
    let content = read.encoding.to_utf8(content);
    let (ndjson, records, corrupt) = to_ndjson(&read, &content, &provenance);
    let mut encoder = GzEncoder::new(Vec::with_capacity(ndjson.len() / 4), Compression::new(6));
    encoder.write_all(ndjson.as_bytes()).map_err(|e| Error::Internal(e.to_string()))?;
    let gz = encoder.finish().map_err(|e| Error::Internal(e.to_string()))?;
    lake.put(&path, gz).await?;
    Ok(IngestOutcome {
        input: input.to_string(),
        status: if created { IngestStatus::Ingested } else { IngestStatus::Recovered },
        batch_id: marker.batch_id,
        path,
        records,
        corrupt,
        note: damage,
    })
}

/// `content` decompressed when it is gzip, with what was wrong with the stream: a truncated
/// stream or trailing garbage keeps what was read (the damage said), like a damaged bronze file
/// read line by line. More than `cap` bytes inflated is an error: nothing is landed.
fn gunzip_if_needed(content: Vec<u8>, cap: u64) -> std::result::Result<(Vec<u8>, Option<String>), String> {
    if !content.starts_with(&[0x1f, 0x8b]) {
        return Ok((content, None));
    }
    let mut out = Vec::with_capacity(content.len().saturating_mul(4).min(1 << 30));
    let mut inflate = flate2::read::MultiGzDecoder::new(&content[..]).take(cap + 1);
    let damage = match inflate.read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > cap => {
            return Err(format!(
                "decompresses to more than {cap} bytes ({}x its {} compressed bytes, or {} GiB, at most): refused \
                 whole; land it in smaller files",
                MAX_INFLATE_RATIO,
                content.len(),
                MAX_INFLATED_BYTES >> 30
            ));
        }
        Ok(_) => None,
        Err(e) if out.is_empty() => return Err(format!("looks like gzip but cannot be decompressed: {e}")),
        Err(e) => Some(format!(
            "the gzip stream is unreadable after {} decompressed bytes ({e}): what was read landed, a cut-off last \
             line as a corrupt record; the rest of the input is not in bronze",
            out.len()
        )),
    };
    Ok((out, damage))
}

/// Converts raw content to NDJSON records carrying `provenance`; returns (text, records, corrupt).
fn to_ndjson(read: &ReadOptions, content: &[u8], provenance: &str) -> (String, u64, u64) {
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
    match read.format {
        SourceFormat::Ndjson => ndjson_records(content, |r| emit(&mut out, r)),
        SourceFormat::Json => json_records(content, |r| emit(&mut out, r)),
        SourceFormat::Csv => csv_records(content, &read.csv, |r| emit(&mut out, r)),
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

/// CSV rows as JSON objects of strings (an empty cell is null), each with the line it starts on
/// in the file (`_line`, counting skipped lines and the header), so dead letters point there.
fn csv_records(content: &[u8], opts: &CsvOptions, mut emit: impl FnMut(Record<'_>)) {
    let mut skipped = 0u64;
    let mut body = content;
    for _ in 0..opts.skip_rows {
        match body.iter().position(|&b| b == b'\n') {
            Some(i) => body = &body[i + 1..],
            None => body = &[],
        }
        skipped += 1;
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(opts.header)
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .escape(opts.escape)
        .double_quote(opts.escape.is_none())
        .from_reader(body);
    let headers: Vec<String> = if opts.header {
        match reader.byte_headers() {
            Ok(h) => h.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect(),
            Err(e) => return emit(Record::Corrupt(format!("unreadable CSV header: {e}"))),
        }
    } else {
        opts.column_names.clone()
    };
    let mut row = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let line = skipped + row.position().map_or(0, |p| p.line());
                let mut obj = String::from("{");
                for (i, value) in row.iter().enumerate() {
                    let key = match headers.get(i) {
                        Some(k) => k.clone(),
                        None if opts.header => format!("_extra_{i}"),
                        None => format!("column{}", i + 1),
                    };
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
                obj.push_str(&format!("{}\"{LINE}\": {line}}}", if row.is_empty() { "" } else { ", " }));
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
        let (out, n, bad) = to_ndjson(&SourceFormat::Ndjson.into(), b"{\"a\": 1.50, \"x\": [1]}\n\n{}\nnope\n[1]\n", P);
        assert_eq!((n, bad), (4, 2));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"a\": 1.50, \"x\": [1], \"_batch_id\": \"b\"}");
        assert_eq!(lines[1], "{\"_batch_id\": \"b\"}");
        assert_eq!(lines[2], "{\"_corrupt_record\": \"nope\", \"_batch_id\": \"b\"}");
        assert_eq!(lines[3], "{\"_corrupt_record\": \"[1]\", \"_batch_id\": \"b\"}");
    }

    #[test]
    fn json_array_and_csv() {
        let (out, n, _) = to_ndjson(&SourceFormat::Json.into(), b"[{\"a\": 1}, {\"a\": \"2\"}]", P);
        assert_eq!(n, 2);
        assert!(out.starts_with("{\"a\": 1, "));
        let (out, n, _) = to_ndjson(&SourceFormat::Csv.into(), b"a,b\n1,\n2,\"y,z\",extra\n", P);
        assert_eq!(n, 2);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"a\": \"1\", \"b\": null, \"_line\": 2, \"_batch_id\": \"b\"}");
        assert_eq!(
            lines[1],
            "{\"a\": \"2\", \"b\": \"y,z\", \"_extra_2\": \"extra\", \"_line\": 3, \"_batch_id\": \"b\"}"
        );
    }

    #[test]
    fn csv_dialects_encodings_and_the_line_each_record_starts_on() {
        let read = ReadOptions {
            format: SourceFormat::Csv,
            encoding: Encoding::Latin1,
            csv: CsvOptions {
                delimiter: b';',
                quote: b'\'',
                escape: Some(b'\\'),
                header: false,
                column_names: vec!["id".into(), "name".into()],
                skip_rows: 2,
            },
        };
        let content =
            read.encoding.to_utf8(b"title\nexported\n1;'Jos\xe9 \\'J\\''\n2;'two\nlines'\n3;x;extra\n".to_vec());
        let (out, n, bad) = to_ndjson(&read, &content, P);
        assert_eq!((n, bad), (3, 0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"id\": \"1\", \"name\": \"José 'J'\", \"_line\": 3, \"_batch_id\": \"b\"}");
        assert_eq!(lines[1], "{\"id\": \"2\", \"name\": \"two\\nlines\", \"_line\": 4, \"_batch_id\": \"b\"}");
        assert_eq!(
            lines[2],
            "{\"id\": \"3\", \"name\": \"x\", \"column3\": \"extra\", \"_line\": 6, \"_batch_id\": \"b\"}"
        );
    }

    #[test]
    fn encodings_become_utf8_and_a_bom_is_dropped() {
        assert_eq!(Encoding::Windows1252.to_utf8(b"\x80 \x93q\x94 \xe9".to_vec()), "€ “q” é".as_bytes());
        assert_eq!(Encoding::Latin1.to_utf8(b"\x80\xe9".to_vec()), "\u{80}é".as_bytes());
        assert_eq!(Encoding::Utf8.to_utf8(b"\xef\xbb\xbf{\"a\": 1}".to_vec()), b"{\"a\": 1}");
        assert_eq!("Windows-1252".parse::<Encoding>(), Ok(Encoding::Windows1252));
        assert!("ebcdic".parse::<Encoding>().is_err());
    }
}
