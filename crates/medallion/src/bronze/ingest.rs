//! Landing raw input in bronze, exactly once per content.
//!
//! ```text
//! input ─▶ convert + sha256(content) ─▶ bronze/<source>/<date>/<batch_id>.ndjson.gz  (upload, not yet visible)
//!                        └─▶ _medallion/ingest/<source>/<sha256>.json   (marker, create-only)
//!                                  created: the upload completes; there already: it is abandoned
//! ```
//!
//! An input is read once: converted, hashed and uploaded in the same pass. The marker names the
//! batch id, date and ingest time; a crash between the marker and the batch's completion is
//! repaired by the next ingest of the same content, which lands that same batch. A second ingest of
//! a content whose batch exists writes nothing.

use std::io::{Read, Write};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::content::{Content, Fingerprint, Print};
use super::csv_batch::{
    CsvBatch, CsvSource, Dialect, RecordEnds, count_records, json_string, key_json, provenance_members, push_csv_object,
};
use super::gzip::Gzip;
use super::landing::FileStamp;
use super::{CORRUPT_RECORD, batch_path};
use crate::error::{Error, Result};
use crate::spec::SourceFormat;
use crate::storage::{Lake, Part};

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
    /// Bytes of the input's content read (decompressed; 0 when it was not read).
    pub bytes: u64,
    /// How long landing it took (for inputs landed together, the time of all of them).
    pub duration_ms: u64,
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
            bytes: 0,
            duration_ms: 0,
            note: Some(why.into()),
        }
    }

    /// An input whose content landed before, as batch `batch_id` at `path`: nothing landed again.
    /// `bytes`: the content's size, when this call read it.
    pub fn already_ingested(
        input: &str,
        batch_id: String,
        path: String,
        bytes: u64,
        duration_ms: u64,
    ) -> IngestOutcome {
        IngestOutcome {
            input: input.to_string(),
            status: IngestStatus::AlreadyIngested,
            batch_id,
            path,
            records: 0,
            corrupt: 0,
            bytes,
            duration_ms,
            note: None,
        }
    }
}

/// Decompressed bytes of one input at most, and times its compressed size: past either, a gzip
/// input is refused whole (a gzip bomb inflates a thousandfold; NDJSON and CSV about tenfold).
pub const MAX_INFLATED_BYTES: u64 = 16 << 30;
/// See [`MAX_INFLATED_BYTES`].
pub const MAX_INFLATE_RATIO: u64 = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    batch_id: String,
    date: String,
    ingested_at: String,
    input: String,
}

impl Marker {
    /// A new batch of `input`, ingested `now`.
    fn fresh(now: chrono::DateTime<chrono::Utc>, input: &str) -> Marker {
        Marker {
            batch_id: uuid::Uuid::new_v4().to_string(),
            date: now.format("%Y-%m-%d").to_string(),
            ingested_at: now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
            input: input.to_string(),
        }
    }

    /// Where the marker of a content (by its SHA-256) lives.
    fn path(source: &str, sha256: &str) -> String {
        format!("_medallion/ingest/{source}/{sha256}.json")
    }

    /// The object path of its batch (`csv`: CSV text, else NDJSON).
    fn batch(&self, source: &str, csv: bool) -> String {
        batch_path(source, &self.date, &self.batch_id, csv)
    }

    /// The path of its batch if it landed, in either format (a content landed as NDJSON before
    /// CSV batches kept their text, or pushed, is landed all the same).
    async fn landed(&self, lake: &Lake, source: &str) -> Result<Option<String>> {
        for csv in [false, true] {
            let path = self.batch(source, csv);
            if lake.exists(&path).await? {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// The gzip header extra field describing a CSV batch of this marker, if `read` lands CSV
    /// text (None: NDJSON).
    fn csv_header(&self, source: &str, read: &ReadOptions) -> Option<Vec<u8>> {
        let batch = CsvBatch {
            version: 1,
            batch_id: self.batch_id.clone(),
            ingested_at: self.ingested_at.clone(),
            source: source.to_string(),
            dialect: Dialect::of(&read.csv),
        };
        if read.format == SourceFormat::Csv { batch.gzip_extra() } else { None }
    }

    /// Where its batch of `read`'s input lands, and how the batch's records get their provenance.
    fn landing(&self, source: &str, read: &ReadOptions) -> (String, Provenance) {
        match self.csv_header(source, read) {
            Some(extra) => (self.batch(source, true), Provenance::CsvHeader(extra)),
            None => (self.batch(source, false), Provenance::Members(self.provenance(source))),
        }
    }

    /// The provenance fields every record of its batch carries (JSON members).
    fn provenance(&self, source: &str) -> String {
        provenance_members(&self.batch_id, &self.ingested_at, source)
    }

    /// Writes this marker at `path` unless one is there (create-only): the marker in force, and
    /// whether it is this one.
    async fn claim(self, lake: &Lake, path: &str) -> Result<(Marker, bool)> {
        let bytes = serde_json::to_vec(&self).map_err(|e| Error::Internal(e.to_string()))?;
        if lake.put_if_absent(path, bytes).await? {
            return Ok((self, true));
        }
        let bytes = lake.get(path).await?.ok_or_else(|| Error::Internal(format!("{path} vanished")))?;
        let marker = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("corrupt ingest marker {path}: {e}")))?;
        Ok((marker, false))
    }
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

impl ReadOptions {
    /// How these options read CSV text now, for batches landed before a correction.
    pub fn csv_source(&self) -> CsvSource {
        CsvSource {
            dialect: (self.format == SourceFormat::Csv).then(|| Dialect::of(&self.csv)),
            encoding: self.encoding,
        }
    }
}

impl From<SourceFormat> for ReadOptions {
    fn from(format: SourceFormat) -> Self {
        ReadOptions { format, ..Default::default() }
    }
}

/// A text encoding medallion reads (and turns into UTF-8 at ingest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// `raw` read as UTF-8 (streaming): a UTF-8 byte-order mark dropped, Latin-1 and
    /// Windows-1252 bytes transcoded.
    fn reader<'a>(self, raw: impl Read + 'a) -> Box<dyn Read + 'a> {
        Box::new(Utf8Reader {
            raw,
            encoding: self,
            started: false,
            pending: Vec::new(),
            at: 0,
            chunk: vec![0; 1 << 16],
        })
    }

    /// `bytes` as text (a UTF-8 byte-order mark dropped; invalid UTF-8 replaced).
    pub(crate) fn text(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Utf8 => {
                String::from_utf8_lossy(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)).into_owned()
            }
            enc => bytes.iter().map(|&b| enc.char_of(b)).collect(),
        }
    }

    fn char_of(self, b: u8) -> char {
        match (self, b) {
            (Encoding::Windows1252, 0x80..=0x9f) => WINDOWS_1252_HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        }
    }
}

/// Windows-1252's characters for 0x80–0x9F (the five unassigned bytes kept as their C1 code points).
/// A reader turning its input into UTF-8 (see [`Encoding::reader`]).
struct Utf8Reader<R> {
    raw: R,
    encoding: Encoding,
    /// Whether the start (a byte-order mark) was dealt with.
    started: bool,
    /// Transcoded bytes not yet read, from `at`.
    pending: Vec<u8>,
    at: usize,
    chunk: Vec<u8>,
}

impl<R: Read> Read for Utf8Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            self.pending.clear();
            self.at = 0;
            let n = loop {
                match self.raw.read(&mut self.chunk) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(0);
            }
            let mut bytes = &self.chunk[..n];
            if !self.started {
                self.started = true;
                if self.encoding == Encoding::Utf8 {
                    // A BOM split across reads is not worth a case: the first read holds 64 KiB.
                    bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
                }
            }
            match self.encoding {
                Encoding::Utf8 => self.pending.extend_from_slice(bytes),
                enc => {
                    let mut tmp = [0u8; 4];
                    for &b in bytes {
                        self.pending.extend_from_slice(enc.char_of(b).encode_utf8(&mut tmp).as_bytes());
                    }
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

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

/// Where an input's bytes come from. It is read once, streaming, to land it and hash its content
/// on the way (exactly once per content); never held whole. (A content whose marker names a batch
/// that never landed, an interrupted landing, is read a second time to land that batch.)
pub trait Input: Send + Sync {
    /// A fresh reader over the input's raw bytes (gzip or not).
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>>;
    /// Raw bytes (compressed size for gzip).
    fn size(&self) -> std::io::Result<u64>;
    /// The whole input as a local file, when it is one (a Parquet file is then read by row group
    /// from it rather than held in memory).
    fn local_file(&self) -> Option<&std::path::Path> {
        None
    }
    /// Whether the input changed since it was first opened (a file written to meanwhile): what
    /// was read may then mix old and new bytes, and nothing of it lands.
    fn changed(&self) -> bool {
        false
    }
}

/// A file, from byte `start` on (a grown landing file lands its new bytes).
#[derive(Debug, Clone)]
pub struct FileInput {
    /// The file.
    pub path: std::path::PathBuf,
    /// Where its content starts.
    pub start: u64,
    /// Bytes read before it (a grown CSV file's header lines).
    pub head: Vec<u8>,
    /// The file's stamp when it was first opened.
    opened: std::sync::OnceLock<Option<FileStamp>>,
}

impl FileInput {
    /// The whole file at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> FileInput {
        FileInput { path: path.into(), start: 0, head: Vec::new(), opened: std::sync::OnceLock::new() }
    }

    /// The new content of a grown file at `path`: `head` (a CSV file's header lines), then the
    /// file from byte `start` on.
    pub fn grown(path: impl Into<std::path::PathBuf>, start: u64, head: Vec<u8>) -> FileInput {
        FileInput { path: path.into(), start, head, opened: std::sync::OnceLock::new() }
    }

    /// The file's stamp when it was first opened (None before, or where the platform has none).
    pub fn stamp(&self) -> Option<FileStamp> {
        self.opened.get().cloned().flatten()
    }
}

impl Input for FileInput {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        use std::io::Seek;
        let mut f = std::fs::File::open(&self.path)?;
        // The stamp of the file opened, not of whatever the path names by now.
        let stamp = FileStamp::of_metadata(&f.metadata()?);
        self.opened.get_or_init(|| stamp);
        f.seek(std::io::SeekFrom::Start(self.start))?;
        if self.head.is_empty() {
            return Ok(Box::new(f));
        }
        Ok(Box::new(std::io::Cursor::new(self.head.clone()).chain(f)))
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len().saturating_sub(self.start) + self.head.len() as u64)
    }

    fn local_file(&self) -> Option<&std::path::Path> {
        (self.start == 0 && self.head.is_empty()).then_some(self.path.as_path())
    }

    fn changed(&self) -> bool {
        match self.opened.get() {
            Some(Some(opened)) => FileStamp::of(&self.path).as_ref() != Some(opened),
            _ => false,
        }
    }
}

impl Input for bytes::Bytes {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.clone())))
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
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
    ingest_from(lake, source, read, input, std::sync::Arc::new(bytes::Bytes::from(content)), now).await
}

/// Lands the bytes of `from` as [`ingest`] does, streaming: memory stays a few MiB whatever the
/// input's size (a JSON-array file aside: its array is parsed whole).
pub async fn ingest_from(
    lake: &Lake,
    source: &str,
    read: impl Into<ReadOptions>,
    input: &str,
    from: std::sync::Arc<dyn Input>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IngestOutcome> {
    Ok(land_input(lake, source, &read.into(), input, from, now).await?.0)
}

/// Lands `from` as [`ingest_from`] does, and says what its raw bytes were when all of them were
/// read (what a landing file is remembered by).
///
/// One pass converts the input, hashes its content and uploads the batch in parts; the upload is
/// completed only once the content's marker, created then, names this batch. A content landed
/// before abandons the upload (the conversion was spent: a file untouched since it landed is not
/// read at all, see [`super::landing::unchanged`]); a marker whose batch never landed (an
/// interrupted landing, or one still under way) is landed again under that marker, reading the
/// input a second time.
pub(crate) async fn land_input(
    lake: &Lake,
    source: &str,
    read: &ReadOptions,
    input: &str,
    from: std::sync::Arc<dyn Input>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(IngestOutcome, Option<Print>)> {
    let started = std::time::Instant::now();
    let failed = |message: String| Error::Ingest { source_name: source.to_string(), input: input.to_string(), message };
    let fresh = Marker::fresh(now, input);
    let (path, provenance) = fresh.landing(source, read);
    let first = std::sync::Arc::clone(&from);
    let decide = async move |converted: Converted| {
        if first.changed() {
            return Err(failed(CHANGED.into()));
        }
        let (marker, created) = fresh.claim(lake, &Marker::path(source, &converted.print.content.sha256)).await?;
        if created {
            crate::runtime::faults::check(&format!("bronze/{source}"), "batch")?;
            converted.sink.done().await.map_err(|e| failed(format!("cannot be landed: {e}")))?;
        }
        Ok((marker, created, converted.counts, converted.print))
    };
    let ((marker, created, (records, corrupt), print), uploaded) =
        convert_uploading(lake, &path, std::sync::Arc::clone(&from), read, provenance, &failed, decide).await?;
    let raw = print.raw.clone();
    let landed = |status, batch_id, path, (records, corrupt)| IngestOutcome {
        input: input.to_string(),
        status,
        batch_id,
        path,
        records,
        corrupt,
        bytes: print.content.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        note: print.damage.clone(),
    };
    if created {
        uploaded?;
        return Ok((landed(IngestStatus::Ingested, marker.batch_id, path, (records, corrupt)), raw));
    }
    // The upload was abandoned: the content has a marker already.
    if let Some(earlier) = marker.landed(lake, source).await? {
        return Ok((landed(IngestStatus::AlreadyIngested, marker.batch_id, earlier, (0, 0)), raw));
    }
    crate::runtime::faults::check(&format!("bronze/{source}"), "batch")?;
    let (path, provenance) = marker.landing(source, read);
    let again = std::sync::Arc::clone(&from);
    let decide = async |converted: Converted| {
        if again.changed() || converted.print.content != print.content {
            return Err(failed(CHANGED.into()));
        }
        converted.sink.done().await.map_err(|e| failed(format!("cannot be landed: {e}")))?;
        Ok(converted.counts)
    };
    let (counts, uploaded) = convert_uploading(lake, &path, from, read, provenance, &failed, decide).await?;
    uploaded?;
    Ok((landed(IngestStatus::Recovered, marker.batch_id, path, counts), raw))
}

/// Converts `from` on a blocking thread into a batch uploaded at `path` as it is produced; `decide`
/// gets what the conversion made and completes the upload ([`PartSink::done`]) or drops it (nothing
/// is written). Returns what `decide` returned and the upload's result; when both failed and the
/// store refused the upload, that stopped the conversion, so its error is the one returned.
async fn convert_uploading<T>(
    lake: &Lake,
    path: &str,
    from: std::sync::Arc<dyn Input>,
    read: &ReadOptions,
    provenance: Provenance,
    failed: &impl Fn(String) -> Error,
    decide: impl AsyncFnOnce(Converted) -> Result<T>,
) -> Result<(T, Result<()>)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Part>(2);
    let read = read.clone();
    let converter = tokio::task::spawn_blocking(move || land(from.as_ref(), &read, &provenance, PartSink::new(tx)));
    let decided = async {
        let converted = converter.await.map_err(|e| Error::Internal(format!("ingest task: {e}")))?.map_err(failed)?;
        decide(converted).await
    };
    let (uploaded, decided) = tokio::join!(lake.put_parts(path, rx), decided);
    match (decided, uploaded) {
        (Err(_), Err(e @ Error::Storage { .. })) => Err(e),
        (decided, uploaded) => Ok((decided?, uploaded)),
    }
}

/// Why an input read differently from one read to the next lands nothing.
const CHANGED: &str = "changed while it was being landed: nothing landed; the next run lands it";

/// Lands several inputs (pushed bodies) together as one batch, each exactly once per content:
/// returns one outcome per input, in order. An input whose content was landed before (alone or in
/// another group) is `AlreadyIngested` with that batch, and is not landed again; so is the second
/// of two equal inputs here. The markers of the inputs are written first, naming the new batch; a
/// crash before the batch lands leaves markers whose batch does not exist, which the next landing
/// of the same content takes over. Memory: the group's NDJSON, uncompressed.
pub async fn ingest_group(
    lake: &Lake,
    source: &str,
    read: &ReadOptions,
    input: &str,
    bodies: Vec<bytes::Bytes>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<IngestOutcome>> {
    let started = std::time::Instant::now();
    let failed = |message: String| Error::Ingest { source_name: source.to_string(), input: input.to_string(), message };
    let fresh = Marker::fresh(now, input);
    let path = fresh.batch(source, false);
    // Which inputs this batch lands: (index, fingerprint); the others are answered as landed.
    let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; bodies.len()];
    let mut read_bytes = vec![0u64; bodies.len()];
    let mut taken: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut landing = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let b = body.clone();
        let print = tokio::task::spawn_blocking(move || Content::open(&b)?.finish())
            .await
            .map_err(|e| Error::Internal(format!("fingerprint task: {e}")))?
            .map_err(failed)?
            .content;
        read_bytes[i] = print.bytes;
        if let Some(&first) = taken.get(&print.sha256) {
            landing.push((i, Some(first)));
            continue;
        }
        let marker_path = Marker::path(source, &print.sha256);
        let (earlier, created) = fresh.clone().claim(lake, &marker_path).await?;
        if !created {
            if let Some(earlier_path) = earlier.landed(lake, source).await? {
                outcomes[i] = Some(IngestOutcome::already_ingested(
                    input,
                    earlier.batch_id,
                    earlier_path,
                    print.bytes,
                    started.elapsed().as_millis() as u64,
                ));
                continue;
            }
            // Its batch never landed (a crash): this one lands it.
            let bytes = serde_json::to_vec(&fresh).map_err(|e| Error::Internal(e.to_string()))?;
            lake.put(&marker_path, bytes).await?;
        }
        taken.insert(print.sha256.clone(), i);
        landing.push((i, None));
    }
    crate::runtime::faults::check(&format!("bronze/{source}"), "batch")?;
    let provenance = fresh.provenance(source);
    let own: Vec<(usize, bytes::Bytes)> =
        landing.iter().filter(|(_, dup)| dup.is_none()).map(|&(i, _)| (i, bodies[i].clone())).collect();
    if !own.is_empty() {
        let read = read.clone();
        let converted = tokio::task::spawn_blocking(move || -> std::result::Result<_, String> {
            let mut gz = Gzip::new(Vec::new(), None).map_err(|e| format!("cannot be landed: {e}"))?;
            let mut counts = Vec::with_capacity(own.len());
            for (i, body) in &own {
                let (text, _) = text_reader(body).map_err(|e| format!("cannot be read: {e}"))?;
                let n =
                    records_ndjson(&read, &mut { text }, body.len() as u64, &provenance, &mut gz, "cannot be landed")?;
                counts.push((*i, n));
            }
            Ok((gz.finish().map_err(|e| format!("cannot be landed: {e}"))?, counts))
        });
        let (gz, counts) =
            converted.await.map_err(|e| Error::Internal(format!("ingest task: {e}")))?.map_err(failed)?;
        lake.put(&path, gz).await?;
        for (i, (records, corrupt)) in counts {
            outcomes[i] = Some(IngestOutcome {
                input: input.to_string(),
                status: IngestStatus::Ingested,
                batch_id: fresh.batch_id.clone(),
                path: path.clone(),
                records,
                corrupt,
                bytes: read_bytes[i],
                duration_ms: started.elapsed().as_millis() as u64,
                note: None,
            });
        }
    }
    for (i, dup) in landing {
        if let Some(first) = dup {
            let mut same = outcomes[first].clone().ok_or_else(|| Error::Internal("group outcome missing".into()))?;
            (same.status, same.records, same.corrupt) = (IngestStatus::AlreadyIngested, 0, 0);
            outcomes[i] = Some(same);
        }
    }
    outcomes.into_iter().map(|o| o.ok_or_else(|| Error::Internal("group outcome missing".into()))).collect()
}

/// What a pushed body would land (records, of which corrupt), read without landing anything; or
/// why it is refused: empty, no record a JSON object (NDJSON, JSON), not Parquet, inflating
/// past [`MAX_INFLATE_RATIO`] times its size, or text that is not UTF-8 from a source declaring no
/// other encoding (landed as NDJSON, its bytes could not be kept). Pushes are refused whole rather
/// than landed as corrupt records only, so the client learns at once (a file landed from disk
/// never is).
pub fn inspect(read: &ReadOptions, body: &bytes::Bytes) -> std::result::Result<(u64, u64), String> {
    if body.is_empty() {
        return Err("the body is empty".into());
    }
    let (text, gzip) = text_reader(body).map_err(|e| format!("cannot be read: {e}"))?;
    let cap =
        if gzip { (body.len() as u64).saturating_mul(MAX_INFLATE_RATIO).min(MAX_INFLATED_BYTES) } else { u64::MAX };
    let mut limited = text.take(cap.saturating_add(1));
    // Text read as UTF-8 is checked; a declared encoding reads every byte, Parquet is not text.
    let utf8 = read.encoding == Encoding::Utf8 && read.format != SourceFormat::Parquet;
    let mut checked = Utf8Check::new(&mut limited, utf8);
    let (records, corrupt) =
        records_ndjson(read, &mut checked, body.len() as u64, "", &mut std::io::sink(), "cannot be read")?;
    let not_utf8 = checked.bad;
    if limited.limit() == 0 {
        return Err(format!("inflates past {MAX_INFLATE_RATIO} times its compressed size: refused as a gzip bomb"));
    }
    if let Some((line, byte)) = not_utf8 {
        return Err(format!(
            "line {line} is not UTF-8 text (byte {byte} of the line; a Latin-1 or Windows-1252 export?): declare the source's `encoding`, or send UTF-8"
        ));
    }
    match (records, corrupt) {
        (0, _) => Err("the body holds no record".into()),
        (n, c) if n == c && read.format != SourceFormat::Csv => {
            let format = format!("{:?}", read.format).to_lowercase();
            Err(format!("none of its {n} record(s) is a JSON object (the source's format is {format})"))
        }
        counts => Ok(counts),
    }
}

/// A reader passing text on and, when `checking`, checking it is UTF-8: where the first byte that
/// is not is.
struct Utf8Check<R> {
    inner: R,
    checking: bool,
    /// The first bytes of a character the last read cut.
    carry: Vec<u8>,
    /// Lines passed, and bytes of the current line.
    lines: u64,
    column: u64,
    /// The first byte that is not UTF-8: (line, byte of the line), both from 1.
    bad: Option<(u64, u64)>,
}

impl<R: Read> Utf8Check<R> {
    fn new(inner: R, checking: bool) -> Self {
        Utf8Check { inner, checking, carry: Vec::new(), lines: 0, column: 0, bad: None }
    }

    fn check(&mut self, bytes: &[u8], eof: bool) {
        if self.carry.is_empty() {
            return self.check_text(bytes, eof);
        }
        let mut text = std::mem::take(&mut self.carry);
        text.extend_from_slice(bytes);
        self.check_text(&text, eof);
    }

    fn check_text(&mut self, text: &[u8], eof: bool) {
        let (valid, error) = match std::str::from_utf8(text) {
            Ok(_) => (text.len(), None),
            Err(e) => (e.valid_up_to(), Some(e.error_len().is_some() || eof)),
        };
        let passed = &text[..valid];
        match memchr::memrchr(b'\n', passed) {
            Some(last) => {
                self.lines += memchr::memchr_iter(b'\n', passed).count() as u64;
                self.column = (passed.len() - last - 1) as u64;
            }
            None => self.column += passed.len() as u64,
        }
        match error {
            Some(true) => self.bad = Some((self.lines + 1, self.column + 1)),
            Some(false) => self.carry = text[valid..].to_vec(),
            None => {}
        }
    }
}

impl<R: Read> Read for Utf8Check<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.checking && self.bad.is_none() {
            self.check(&buf[..n], n == 0 && !buf.is_empty());
        }
        Ok(n)
    }
}

/// Bytes per uploaded part of a batch.
const PART_BYTES: usize = 8 << 20;

/// The input's text reader: decompressed when it starts like gzip.
fn text_reader(from: &dyn Input) -> std::io::Result<(Box<dyn Read + Send>, bool)> {
    use std::io::BufRead;
    let mut raw = std::io::BufReader::with_capacity(1 << 16, from.open()?);
    let gzip = raw.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip { (Box::new(flate2::read::MultiGzDecoder::new(raw)), true) } else { (Box::new(raw), false) })
}

/// Where a batch's records get their provenance.
enum Provenance {
    /// JSON members appended to every NDJSON record.
    Members(String),
    /// The gzip header extra field describing a batch of CSV text ([`CsvBatch::gzip_extra`]).
    CsvHeader(Vec<u8>),
}

/// What one pass over an input made of it: its counts (records, corrupt), what was read, and the
/// sink holding the batch's upload open: [`PartSink::done`] completes it, dropping it abandons it.
struct Converted {
    counts: (u64, u64),
    print: Fingerprint,
    sink: PartSink,
}

/// Converts the input (blocking) into a gzip batch sent to `sink`: NDJSON records carrying their
/// provenance, or a CSV file's text described by its gzip header; its content hashed on the way.
/// Every part but the end is sent.
fn land(
    from: &dyn Input,
    read: &ReadOptions,
    provenance: &Provenance,
    sink: PartSink,
) -> std::result::Result<Converted, String> {
    let mut content = Content::open(from)?;
    let converted = convert(from, read, provenance, &mut content, sink);
    // A read the content refused (a gzip bomb, a false gzip header) is said as the content says it.
    let (counts, gz) = converted.map_err(|e| content.fatal().map_or(e, str::to_string))?;
    // Whatever the format left unread still counts for the hash.
    let print = content.finish()?;
    let mut sink = gz.finish().map_err(|e| format!("cannot be landed: {e}"))?;
    sink.flush_part().map_err(|e| format!("cannot be landed: {e}"))?;
    Ok(Converted { counts, print, sink })
}

fn convert(
    from: &dyn Input,
    read: &ReadOptions,
    provenance: &Provenance,
    content: &mut Content,
    sink: PartSink,
) -> std::result::Result<((u64, u64), Gzip<PartSink>), String> {
    let landing = |e: std::io::Error| format!("cannot be landed: {e}");
    let provenance = match provenance {
        Provenance::Members(p) => p.as_str(),
        Provenance::CsvHeader(extra) => {
            let mut gz = Gzip::new(sink, Some(extra.clone())).map_err(landing)?;
            let records = copy_csv(read, content, &mut gz).map_err(landing)?;
            return Ok(((records, 0), gz));
        }
    };
    let mut gz = Gzip::new(sink, None).map_err(landing)?;
    let counts = if read.format == SourceFormat::Parquet {
        match from.local_file().filter(|_| !content.gzip()) {
            // Read by row group from the file; its bytes are hashed all the same (by the caller), so
            // they are the content the marker names.
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
                parquet_rows(file, provenance, &mut gz)?
            }
            None => parquet_ndjson(content, from.size().unwrap_or(0), provenance, &mut gz)?,
        }
    } else {
        records_ndjson(read, content, from.size().unwrap_or(0), provenance, &mut gz, "cannot be landed")?
    };
    Ok((counts, gz))
}

/// Copies a CSV input's text (as UTF-8) to `out` as it is, and counts its records as the CSV
/// parser will read them.
fn copy_csv(read: &ReadOptions, input: &mut impl Read, out: &mut impl Write) -> std::io::Result<u64> {
    struct Tee<'a, R, W> {
        inner: R,
        out: &'a mut W,
    }
    impl<R: Read, W: Write> Read for Tee<'_, R, W> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.out.write_all(&buf[..n])?;
            Ok(n)
        }
    }
    let text = Tee { inner: read.encoding.reader(input), out };
    count_records(&read.csv, &mut std::io::BufReader::with_capacity(1 << 16, text))
}

/// Writes the rows of a Parquet stream (read whole from `raw`: its footer is at its end) as NDJSON
/// lines carrying `provenance`; returns (records, 0). A file that is not Parquet is an error naming
/// what is wrong, and nothing lands.
fn parquet_ndjson(
    raw: &mut impl Read,
    size: u64,
    provenance: &str,
    out: &mut impl Write,
) -> std::result::Result<(u64, u64), String> {
    let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    raw.read_to_end(&mut content).map_err(|e| format!("cannot be read: {e}"))?;
    parquet_rows(bytes::Bytes::from(content), provenance, out)
}

/// The rows of the Parquet file `source` as NDJSON lines carrying `provenance`; (records, 0).
fn parquet_rows(
    source: impl datafusion::parquet::file::reader::ChunkReader + 'static,
    provenance: &str,
    out: &mut impl Write,
) -> std::result::Result<(u64, u64), String> {
    use datafusion::arrow::json::LineDelimitedWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let not_parquet = |e: &dyn std::fmt::Display| format!("is not a readable Parquet file: {e}");
    let reader = ParquetRecordBatchReaderBuilder::try_new(source)
        .map_err(|e| not_parquet(&e))?
        .with_batch_size(8192)
        .build()
        .map_err(|e| not_parquet(&e))?;
    let mut records = 0;
    let mut json = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| not_parquet(&e))?;
        json.clear();
        let mut writer = LineDelimitedWriter::new(&mut json);
        writer.write(&batch).map_err(|e| format!("cannot be landed: {e}"))?;
        writer.finish().map_err(|e| format!("cannot be landed: {e}"))?;
        drop(writer);
        for line in json.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let body = line.strip_suffix(b"}").unwrap_or(line);
            out.write_all(body).map_err(|e| format!("cannot be landed: {e}"))?;
            out.write_all(if body == b"{" { b"" } else { b", " }).map_err(|e| format!("cannot be landed: {e}"))?;
            out.write_all(provenance.as_bytes()).map_err(|e| format!("cannot be landed: {e}"))?;
            out.write_all(b"}\n").map_err(|e| format!("cannot be landed: {e}"))?;
            records += 1;
        }
    }
    Ok((records, 0))
}

/// Collects written bytes into [`PART_BYTES`] parts sent to the uploader.
struct PartSink {
    tx: tokio::sync::mpsc::Sender<Part>,
    buf: Vec<u8>,
}

impl PartSink {
    fn new(tx: tokio::sync::mpsc::Sender<Part>) -> PartSink {
        PartSink { tx, buf: Vec::with_capacity(PART_BYTES) }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let data = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PART_BYTES)));
        self.tx.blocking_send(Part::Data(data)).map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends what is left (blocking), not the end.
    fn flush_part(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }

    /// Sends the end, completing the upload (after [`PartSink::flush_part`]).
    async fn done(self) -> std::io::Result<()> {
        self.tx.send(Part::Done).await.map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PART_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The records of decompressed input (`size` bytes) as NDJSON lines carrying `provenance`, written
/// to `out`: a Parquet file's rows, else text in the source's encoding and format; (records,
/// corrupt). A text read or write error is `failure: …`.
fn records_ndjson(
    read: &ReadOptions,
    input: &mut impl Read,
    size: u64,
    provenance: &str,
    out: &mut impl Write,
    failure: &str,
) -> std::result::Result<(u64, u64), String> {
    if read.format == SourceFormat::Parquet {
        return parquet_ndjson(input, size, provenance, out);
    }
    write_ndjson(read, read.encoding.reader(input), provenance, out).map_err(|e| format!("{failure}: {e}"))
}

/// Writes the records of `text` (UTF-8) as NDJSON lines carrying `provenance`; returns
/// (records, corrupt).
fn write_ndjson(
    read: &ReadOptions,
    text: impl Read,
    provenance: &str,
    out: &mut impl Write,
) -> std::io::Result<(u64, u64)> {
    let mut records = 0;
    let mut corrupt = 0;
    let mut failed: Option<std::io::Error> = None;
    let mut line = String::new();
    let mut emit = |record: Record<'_>| {
        if failed.is_some() {
            return;
        }
        records += 1;
        line.clear();
        match record {
            Record::Object(obj) => {
                let body = obj.trim_end().strip_suffix('}').unwrap_or(obj).trim_end();
                line.push_str(body);
                if !body.trim_start().eq("{") {
                    line.push_str(", ");
                }
                line.push_str(provenance);
                line.push_str("}\n");
            }
            Record::Corrupt(text) => {
                corrupt += 1;
                line.push_str(&format!("{{\"{CORRUPT_RECORD}\": {}, {provenance}}}\n", json_string(&text)));
            }
        }
        if let Err(e) = out.write_all(line.as_bytes()) {
            failed = Some(e);
        }
    };
    let mut text = std::io::BufReader::with_capacity(1 << 16, text);
    match read.format {
        SourceFormat::Ndjson => ndjson_records(&mut text, &mut emit)?,
        SourceFormat::Json => {
            let mut content = Vec::new();
            text.read_to_end(&mut content)?;
            json_records(&content, &mut emit)?;
        }
        SourceFormat::Csv => csv_records(&mut text, &read.csv, &mut emit)?,
        SourceFormat::Parquet => {
            return Err(std::io::Error::other("Parquet is landed by parquet_ndjson, not as text"));
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((records, corrupt)),
    }
}

enum Record<'a> {
    /// A JSON object's exact text.
    Object(&'a str),
    /// Anything else, as text.
    Corrupt(String),
}

fn ndjson_records(text: &mut impl std::io::BufRead, mut emit: impl FnMut(Record<'_>)) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if text.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
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

fn json_records(content: &[u8], mut emit: impl FnMut(Record<'_>)) -> std::io::Result<()> {
    if let Ok(text) = std::str::from_utf8(content)
        && let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text)
    {
        items.into_iter().for_each(|v| emit(classify(v.get())));
        return Ok(());
    }
    ndjson_records(&mut &content[..], emit)
}

/// CSV rows as JSON objects of strings (an empty cell is null), each with the line it starts on
/// in the file (`_line`, counting skipped lines and the header), so dead letters point there.
/// A row is built in one reused buffer: keys are escaped once, a value needing no JSON escape is
/// copied as it is (issue 20: the conversion must cost a fraction of the parse).
fn csv_records(
    text: &mut impl std::io::BufRead,
    opts: &CsvOptions,
    mut emit: impl FnMut(Record<'_>),
) -> std::io::Result<()> {
    let mut skipped = 0u64;
    let mut line = Vec::new();
    for _ in 0..opts.skip_rows {
        line.clear();
        text.read_until(b'\n', &mut line)?;
        skipped += 1;
    }
    let newlines = std::rc::Rc::new(std::cell::RefCell::new(NewlineIndex::new(opts)));
    let body = NewlineCounting { inner: text, offset: 0, index: std::rc::Rc::clone(&newlines) };
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
            // Its quoted field never closed, the header would be the whole file: marked, as a row.
            Ok(h) if newlines.borrow().unclosed() => {
                emit(Record::Corrupt(marked(skipped + 1, "a quoted field never closed", h, opts.delimiter)));
                return Ok(());
            }
            Ok(h) => h.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect(),
            Err(e) => {
                emit(Record::Corrupt(format!("unreadable CSV header: {e}")));
                return Ok(());
            }
        }
    } else {
        opts.column_names.clone()
    };
    // `"key": ` of each named column, escaped once.
    let keys: Vec<String> = headers.iter().map(|k| key_json(k)).collect();
    let mut row = csv::ByteRecord::new();
    let mut obj = String::new();
    loop {
        match reader.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let start = row.position().map_or(0, |p| p.byte());
                let line = skipped + 1 + newlines.borrow_mut().before(start);
                // Rows that cannot be data are kept as text, marked (a dead letter): a quoted field
                // never closed runs to the end (the lines after its start would be one field, their
                // records gone into it), and NDJSON cannot hold bytes that are not UTF-8 (never
                // landed with replacement characters as if they were data).
                let why = if newlines.borrow().unclosed() {
                    Some("a quoted field never closed")
                } else if row.iter().any(|f| std::str::from_utf8(f).is_err()) {
                    Some("not UTF-8")
                } else {
                    None
                };
                if let Some(why) = why {
                    emit(Record::Corrupt(marked(line, why, &row, opts.delimiter)));
                    continue;
                }
                obj.clear();
                push_csv_object(&mut obj, &keys, opts.header, &row, line);
                obj.push('}');
                emit(Record::Object(&obj));
            }
            Err(e) if e.is_io_error() => match e.into_kind() {
                csv::ErrorKind::Io(e) => return Err(e),
                _ => return Err(std::io::Error::other("CSV reader I/O error")),
            },
            Err(e) => emit(Record::Corrupt(format!("unreadable CSV row: {e}"))),
        }
    }
    Ok(())
}

/// The text of a CSV row that cannot be data, marked with its line and why (a dead letter's text).
fn marked(line: u64, why: &str, row: &csv::ByteRecord, delimiter: u8) -> String {
    let fields: Vec<String> = row.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    format!("line {line}, {why}: {}", fields.join(&char::from(delimiter).to_string()))
}

/// Byte offsets of the newlines read but not yet passed by the CSV parser, and how many it passed;
/// and whether the text read so far ends inside a quoted field.
struct NewlineIndex {
    pending: std::collections::VecDeque<u64>,
    passed: u64,
    quotes: RecordEnds,
    /// Whether the text was read to its end.
    eof: bool,
}

impl NewlineIndex {
    fn new(opts: &CsvOptions) -> Self {
        NewlineIndex { pending: Default::default(), passed: 0, quotes: RecordEnds::new(opts), eof: false }
    }

    /// Whether the record the parser just gave is the file's last and its quoted field is never
    /// closed: the parser reads to the end only to finish the last record, so once the text is
    /// read to its end, the record it gives is the last.
    fn unclosed(&self) -> bool {
        self.eof && self.quotes.in_quotes()
    }

    /// Newlines before a record whose parse started at byte `start`. The csv crate's own line
    /// count is one short after a CRLF line end (it starts the next record at the `\n`), so every
    /// record of a Windows export would point at the line above it: a newline at `start` itself
    /// ends the previous line, counted too.
    fn before(&mut self, start: u64) -> u64 {
        while self.pending.front().is_some_and(|&at| at <= start) {
            self.pending.pop_front();
            self.passed += 1;
        }
        self.passed
    }
}

/// A reader noting where its newlines are, for [`NewlineIndex`].
struct NewlineCounting<R> {
    inner: R,
    offset: u64,
    index: std::rc::Rc<std::cell::RefCell<NewlineIndex>>,
}

impl<R: Read> Read for NewlineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut index = self.index.borrow_mut();
        index.pending.extend(memchr::memchr_iter(b'\n', &buf[..n]).map(|i| self.offset + i as u64));
        index.quotes.scan(&buf[..n]);
        index.eof |= n == 0 && !buf.is_empty();
        self.offset += n as u64;
        Ok(n)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "\"_batch_id\": \"b\"";

    /// Raw content converted as landing converts it: (text, records, corrupt).
    fn to_ndjson(read: &ReadOptions, content: &[u8], provenance: &str) -> (String, u64, u64) {
        let mut out = Vec::new();
        let (n, bad) = write_ndjson(read, read.encoding.reader(content), provenance, &mut out).expect("convert");
        (String::from_utf8(out).expect("utf-8"), n, bad)
    }

    fn utf8(encoding: Encoding, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encoding.reader(raw).read_to_end(&mut out).expect("read");
        out
    }

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
    fn csv_rows_point_at_their_line_with_crlf_line_ends_and_escape_what_json_needs() {
        // A Windows export: every record on its own line, whatever the line ends.
        let content = b"id,name\r\n1,x\r\n2,\"two\r\nlines\"\r\n3,\"q\"\"\\ \t\xc3\xa9\"\r\n4,\r\n";
        let (out, n, bad) = to_ndjson(&SourceFormat::Csv.into(), content, P);
        assert_eq!((n, bad), (4, 0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"id\": \"1\", \"name\": \"x\", \"_line\": 2, \"_batch_id\": \"b\"}");
        assert_eq!(lines[1], "{\"id\": \"2\", \"name\": \"two\\r\\nlines\", \"_line\": 3, \"_batch_id\": \"b\"}");
        assert_eq!(lines[2], "{\"id\": \"3\", \"name\": \"q\\\"\\\\ \\t\u{e9}\", \"_line\": 5, \"_batch_id\": \"b\"}");
        assert_eq!(lines[3], "{\"id\": \"4\", \"name\": null, \"_line\": 6, \"_batch_id\": \"b\"}");
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).expect("valid JSON");
        }
        // The same file with LF line ends gives the same lines.
        let lf: Vec<u8> = String::from_utf8(content.to_vec()).expect("utf-8").replace("\r\n", "\n").into_bytes();
        let (out_lf, _, _) = to_ndjson(&SourceFormat::Csv.into(), &lf, P);
        assert_eq!(out_lf.replace("\\r\\n", "\\n"), out.replace("\\r\\n", "\\n"));
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
        // Raw Latin-1: landing transcodes it.
        let content = b"title\nexported\n1;'Jos\xe9 \\'J\\''\n2;'two\nlines'\n3;x;extra\n".to_vec();
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
        assert_eq!(utf8(Encoding::Windows1252, b"\x80 \x93q\x94 \xe9"), "€ “q” é".as_bytes());
        assert_eq!(utf8(Encoding::Latin1, b"\x80\xe9"), "\u{80}é".as_bytes());
        assert_eq!(utf8(Encoding::Utf8, b"\xef\xbb\xbf{\"a\": 1}"), b"{\"a\": 1}");
        assert_eq!("Windows-1252".parse::<Encoding>(), Ok(Encoding::Windows1252));
        assert!("ebcdic".parse::<Encoding>().is_err());
    }

    /// A decoded batch, comparable: rows (line, wanted fields, dead-letter text), the other keys
    /// seen, bad lines (line, rule).
    type Decoded =
        (Vec<(u64, Vec<(u8, String)>, String)>, std::collections::BTreeSet<(String, u8)>, Vec<(u64, String)>);

    fn decoded(
        bytes: &[u8],
        format: &super::super::decode::BatchFormat,
        wanted: &[String],
        limits: super::super::decode::Limits,
        workers: usize,
    ) -> Decoded {
        let rows = |c: super::super::decode::RawChunk| {
            let rows: Vec<_> = (0..c.rows())
                .map(|i| {
                    let fields = c.fields.iter().map(|f| (f.kinds[i] as u8, f.text(i).to_string())).collect();
                    (c.lines[i], fields, c.raw(i).into_owned())
                })
                .collect();
            Ok((rows, c.other_keys.iter().map(|(k, kind)| (k.clone(), *kind as u8)).collect::<Vec<_>>()))
        };
        let (chunks, bad) =
            super::super::decode::map_batch(bytes, format, wanted, limits, workers, rows).expect("decodes");
        let mut all = (Vec::new(), std::collections::BTreeSet::new(), Vec::new());
        for (rows, others) in chunks {
            all.0.extend(rows);
            all.1.extend(others);
        }
        all.2 = bad.into_iter().map(|b| (b.line, b.rule.to_string())).collect();
        all
    }

    /// `text` landed as CSV text with its description, as ingest lands it: (gzip bytes, records).
    fn csv_batch(read: &ReadOptions, text: &[u8]) -> (Vec<u8>, u64) {
        let batch = CsvBatch {
            version: 1,
            batch_id: "b".into(),
            ingested_at: "2026-12-01T00:00:00.000000+00:00".into(),
            source: "s".into(),
            dialect: Dialect::of(&read.csv),
        };
        let mut gz = flate2::GzBuilder::new()
            .extra(batch.gzip_extra().expect("fits"))
            .write(Vec::new(), flate2::Compression::fast());
        let records = copy_csv(read, &mut &text[..], &mut gz).expect("copies");
        (gz.finish().expect("gz"), records)
    }

    /// Issue 20: CSV batches keep their text and are parsed at promotion; every row, line, field,
    /// other key and dead-letter text must be what landing the same file as NDJSON gave, whatever
    /// the chunking and the number of threads.
    #[test]
    fn csv_text_batches_decode_as_their_ndjson_landing_did() {
        use flate2::Compression;

        use super::super::decode::{BatchFormat, Limits};

        let provenance =
            "\"_batch_id\": \"b\", \"_ingested_at\": \"2026-12-01T00:00:00.000000+00:00\", \"_source\": \"s\"";
        let mut many = String::from("id,name,note\n");
        for i in 0..300 {
            match i % 7 {
                0 => many.push_str(&format!("{i},\"multi\nline {i}\",\"q\"\"{i}\"\r\n")),
                1 => many.push_str(&format!("{i},,\n\n")),
                2 => many.push_str(&format!("{i},short\n")),
                3 => many.push_str(&format!("{i},long,row,{i},more\n")),
                _ => many.push_str(&format!("{i},n{i},x\"{i}\n")),
            }
        }
        let csv = |opts: CsvOptions| ReadOptions { format: SourceFormat::Csv, csv: opts, ..Default::default() };
        let cases: Vec<(ReadOptions, Vec<u8>)> = vec![
            (
                csv(CsvOptions::default()),
                b"id,name,name\r\n1,\"A\nB\",x\r\n\r\n2,,y,extra\r\n3\n\"4\",\"q\"\"x\",\xc3\xbf\n5,\"a,b\",z".to_vec(),
            ),
            (
                csv(CsvOptions { delimiter: b';', skip_rows: 2, ..Default::default() }),
                b"junk\nmore\" junk\n id ; name \n1;2\n".to_vec(),
            ),
            (
                csv(CsvOptions { header: false, column_names: vec!["id".into(), "name".into()], ..Default::default() }),
                b"1,a\n2,b,c\n".to_vec(),
            ),
            (
                csv(CsvOptions { escape: Some(b'\\'), ..Default::default() }),
                b"id,name\n1,\"x\\\"y\nz\"\n2,\"\\\\\"\n".to_vec(),
            ),
            (csv(CsvOptions::default()), b"\n\nid,name\n1,a\n".to_vec()),
            (csv(CsvOptions::default()), b"id,name\n".to_vec()),
            (csv(CsvOptions::default()), Vec::new()),
            (csv(CsvOptions::default()), many.into_bytes()),
        ];
        let wanted: Vec<String> =
            ["id", "name", "note", "_extra_3", "column3", "missing", "_line"].iter().map(|s| s.to_string()).collect();
        for (read, text) in &cases {
            let shown = String::from_utf8_lossy(text);
            let mut ndjson = Vec::new();
            let (n, _) = write_ndjson(read, &text[..], provenance, &mut ndjson).expect("ndjson");
            let (gz, records) = csv_batch(read, text);
            assert_eq!(records, n, "{shown:?}");
            for limits in
                [Limits::default(), Limits { chunk_lines: 7, chunk_bytes: 300, max_line: 10_000, long_line_kept: 10 }]
            {
                let reference = {
                    let mut gz_nd = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
                    gz_nd.write_all(&ndjson).expect("gz");
                    decoded(&gz_nd.finish().expect("gz"), &BatchFormat::NdjsonGz, &wanted, limits, 1)
                };
                assert_eq!(reference.0.len() as u64, n, "{shown:?}");
                for workers in [1, 3] {
                    let fallback = CsvBatch::undescribed("x", "y", None);
                    let got =
                        decoded(&gz, &BatchFormat::CsvGz(fallback, CsvSource::default()), &wanted, limits, workers);
                    assert_eq!(got, reference, "{shown:?} {limits:?} {workers} workers");
                }
            }
        }
    }

    /// Bytes that are not UTF-8 in a CSV batch (a Latin-1 file landed by a source declaring no
    /// encoding) make their record an `invalid_utf8` bad line, never text with replacement
    /// characters; once the source declares its encoding, the batch reads in it. The NDJSON
    /// landing, which pushed CSV bodies still take, cannot keep such bytes: it marks the row.
    #[test]
    fn csv_bytes_that_are_not_utf8_are_bad_lines_until_an_encoding_reads_them() {
        use super::super::decode::{BatchFormat, Limits};

        let read = ReadOptions { format: SourceFormat::Csv, ..Default::default() };
        let wanted = vec!["id".to_string(), "name".to_string()];
        let text = b"id,name\n1,M\xfcller\n2,\"two\nlines\"\n3,\"Stra\xdfe \xe0\"\n4,ok\n";
        let (gz, _) = csv_batch(&read, text);
        let fallback = CsvBatch::undescribed("x", "y", None);
        for limits in [Limits::default(), Limits { chunk_lines: 1, chunk_bytes: 8, max_line: 1000, long_line_kept: 10 }]
        {
            for workers in [1, 2] {
                let format = BatchFormat::CsvGz(fallback.clone(), CsvSource::default());
                let (rows, _, bad) = decoded(&gz, &format, &wanted, limits, workers);
                let names: Vec<(u64, String)> = rows.iter().map(|r| (r.0, r.1[1].1.clone())).collect();
                assert_eq!(names, [(3, "two\nlines".to_string()), (6, "ok".to_string())], "{limits:?}");
                assert_eq!(bad, [(2, "invalid_utf8".to_string()), (5, "invalid_utf8".to_string())]);
                let format = BatchFormat::CsvGz(
                    fallback.clone(),
                    CsvSource { encoding: Encoding::Latin1, ..Default::default() },
                );
                let (rows, _, bad) = decoded(&gz, &format, &wanted, limits, workers);
                let names: Vec<String> = rows.iter().map(|r| r.1[1].1.clone()).collect();
                assert_eq!(names, ["Müller", "two\nlines", "Straße à", "ok"], "{limits:?}");
                assert!(bad.is_empty(), "{bad:?}");
            }
        }
        // Landed as NDJSON (a pushed body): such rows are marked, not replaced.
        let (ndjson, _, corrupt) = to_ndjson(&read, text, P);
        assert_eq!(corrupt, 2, "{ndjson}");
        assert!(ndjson.contains("{\"_corrupt_record\": \"line 2, not UTF-8: 1,M\u{fffd}ller\""), "{ndjson}");
        assert!(!ndjson.contains("\"name\": \"M"), "{ndjson}");
    }

    /// A pushed body whose text is not UTF-8 (and whose source declares no other encoding) is
    /// refused whole, naming the line: landed as NDJSON, its bytes could not be kept. With the
    /// source's encoding declared it lands. A character cut between two reads is no error.
    #[test]
    fn a_pushed_body_that_is_not_utf8_is_refused_whole() {
        let csv = ReadOptions { format: SourceFormat::Csv, ..Default::default() };
        let latin1 = ReadOptions { encoding: Encoding::Latin1, ..csv.clone() };
        let ndjson = ReadOptions::default();
        let body = |b: &[u8]| bytes::Bytes::from(b.to_vec());
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).expect("gz");
            bytes::Bytes::from(e.finish().expect("gz"))
        };
        let refused = [
            (&csv, body(b"id,name\n1,ok\n2,M\xfcller\n")),
            (&csv, gz(b"id,name\n1,ok\n2,M\xfcller\n")),
            (&ndjson, body(b"{\"id\": 1}\n{\"id\": 2, \"name\": \"M\xfcller\"}\n")),
        ];
        for (read, b) in refused {
            let why = inspect(read, &b).expect_err("refused");
            assert!(why.contains("line 3") || why.contains("line 2"), "{why}");
            assert!(why.contains("not UTF-8") && why.contains("encoding"), "{why}");
        }
        assert_eq!(inspect(&latin1, &body(b"id,name\n1,ok\n2,M\xfcller\n")), Ok((2, 0)));
        assert_eq!(inspect(&csv, &body("id,name\n1,Müller\n".as_bytes())), Ok((1, 0)));
        // One byte a read: a character's bytes come in several reads.
        struct Bytewise<'a>(&'a [u8]);
        impl Read for Bytewise<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        for (text, bad) in
            [("a\nMüller €\n".as_bytes(), None), (b"a\nb\nc\xc3", Some((3, 2))), (b"a\n\xe2\x82x\n", Some((2, 1)))]
        {
            let mut check = Utf8Check::new(Bytewise(text), true);
            std::io::copy(&mut check, &mut std::io::sink()).expect("reads");
            assert_eq!(check.bad, bad, "{text:?}");
        }
    }

    /// A quoted field never closed makes its record run to the end of the file: the lines after
    /// its start would be one field of it, and the records on them would vanish into it. Such a
    /// record is an `unclosed_quote` bad line (a dead letter), never a row; the NDJSON landing
    /// (pushed bodies) marks it. A quoted field holding newlines and closed at the end is a row.
    #[test]
    fn a_quote_never_closed_is_a_bad_line_not_the_rest_of_the_file() {
        use super::super::decode::{BatchFormat, Limits};

        let read = ReadOptions { format: SourceFormat::Csv, ..Default::default() };
        let escaped = ReadOptions { csv: CsvOptions { escape: Some(b'\\'), ..Default::default() }, ..read.clone() };
        let wanted = vec!["id".to_string(), "name".to_string()];
        let fallback = CsvBatch::undescribed("x", "y", None);
        // (read as, text, rows (line, name), bad lines (line, rule))
        type Lines<'a> = &'a [(u64, &'a str)];
        let cases: [(&ReadOptions, &[u8], Lines, Lines); 6] = [
            (&read, b"id,name\n0,ok\n1,\"Alice\n2,Bob\n3,Carol\n", &[(2, "ok")], &[(3, "unclosed_quote")]),
            (&read, b"id,name\n0,ok\n1,\"Al\"\"ice", &[(2, "ok")], &[(3, "unclosed_quote")]),
            (&read, b"id,name\n0,ok\n1,\"A\nB\"", &[(2, "ok"), (3, "A\nB")], &[]),
            (&read, b"id,name\n1,\"A\"\"\"\n", &[(2, "A\"")], &[]),
            (&escaped, b"id,name\n0,ok\n1,\"x\\\"\n", &[(2, "ok")], &[(3, "unclosed_quote")]),
            // The header itself: the whole file would be its names.
            (&read, b"id,\"name\n1,Ann\n2,Bob\n", &[], &[(1, "unclosed_quote")]),
        ];
        for (read, text, rows_wanted, bad_wanted) in cases {
            let shown = String::from_utf8_lossy(text);
            let (gz, records) = csv_batch(read, text);
            assert_eq!(records as usize, rows_wanted.len() + bad_wanted.len(), "{shown:?}");
            for limits in
                [Limits::default(), Limits { chunk_lines: 1, chunk_bytes: 4, max_line: 1000, long_line_kept: 10 }]
            {
                for workers in [1, 2] {
                    let format = BatchFormat::CsvGz(fallback.clone(), CsvSource::default());
                    let (rows, _, bad) = decoded(&gz, &format, &wanted, limits, workers);
                    let names: Vec<(u64, &str)> = rows.iter().map(|r| (r.0, r.1[1].1.as_str())).collect();
                    assert_eq!(names, rows_wanted, "{shown:?} {limits:?}");
                    let bad: Vec<(u64, &str)> = bad.iter().map(|b| (b.0, b.1.as_str())).collect();
                    assert_eq!(bad, bad_wanted, "{shown:?} {limits:?}");
                }
            }
            let (ndjson, n, corrupt) = to_ndjson(read, text, P);
            assert_eq!((n, corrupt as usize), (records, bad_wanted.len()), "{ndjson}");
        }
        let (ndjson, _, _) = to_ndjson(&read, b"id,name\n1,\"Alice\n2,Bob\n", P);
        assert!(
            ndjson.contains("{\"_corrupt_record\": \"line 2, a quoted field never closed: 1,Alice\\n2,Bob\\n\""),
            "{ndjson}"
        );
    }

    /// A record longer than the limit (an unclosed quote runs to the end of the file) is a
    /// `line_too_long` bad line, never held whole; the records around it still decode; a batch cut
    /// short keeps the records before the cut.
    #[test]
    fn over_long_and_cut_off_csv_records_are_bad_lines() {
        use super::super::decode::{BatchFormat, Limits};

        let limits = Limits { chunk_lines: 2, chunk_bytes: 1000, max_line: 50, long_line_kept: 10 };
        let read = ReadOptions { format: SourceFormat::Csv, ..Default::default() };
        let wanted = vec!["id".to_string()];
        let long =
            format!("id,name\n1,a\n2,\"{}\n{}\"\n3,c\n4,\"{}", "x".repeat(100), "y".repeat(100), "z".repeat(100));
        let (gz, records) = csv_batch(&read, long.as_bytes());
        assert_eq!(records, 4);
        let fallback = CsvBatch::undescribed("x", "y", None);
        for workers in [1, 2] {
            let (rows, _, bad) =
                decoded(&gz, &BatchFormat::CsvGz(fallback.clone(), CsvSource::default()), &wanted, limits, workers);
            let ids: Vec<(u64, String)> = rows.iter().map(|r| (r.0, r.1[0].1.clone())).collect();
            assert_eq!(ids, [(2, "1".to_string()), (5, "3".to_string())]);
            assert_eq!(bad, [(3, "line_too_long".to_string()), (6, "line_too_long".to_string())]);
        }
        let text: String = (0..5000).map(|i| format!("{i},n{i}\n")).collect();
        let (gz, _) = csv_batch(&read, format!("id,name\n{text}").as_bytes());
        let cut = &gz[..gz.len() / 2];
        let (rows, _, bad) =
            decoded(cut, &BatchFormat::CsvGz(fallback, CsvSource::default()), &wanted, Limits::default(), 2);
        assert!(!rows.is_empty() && rows.len() < 5000, "{}", rows.len());
        assert!(rows.iter().enumerate().all(|(i, r)| r.1[0].1 == i.to_string() && r.0 == i as u64 + 2));
        assert_eq!(bad.last().map(|b| b.1.as_str()), Some("unreadable_file"), "{bad:?}");
    }
}
