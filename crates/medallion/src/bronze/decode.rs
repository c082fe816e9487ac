//! Streaming a bronze batch back as columns of raw JSON tokens.
//!
//! ```text
//! gzip bytes ─▶ lines (chunks of CHUNK_LINES) ─▶ RawChunk { per wanted field: kind + text }
//!                    │
//!                    └─▶ BadLine (not UTF-8, not JSON, not an object, corrupt/truncated gzip)
//! ```
//!
//! Only the fields a contract needs are extracted; every other field is skipped without being
//! materialised (it stays in bronze and in the raw line kept for the dead letter). Type coercion
//! happens later, column by column ([`crate::silver::coerce`]).

use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::csv_batch::{CsvBatch, CsvLayout, CsvSource, parse_csv, read_layout, split_csv};
use super::scan;
use super::{BATCH_ID, CORRUPT_RECORD, INGESTED_AT, LINE, SOURCE};

/// Lines per chunk handed to validation. Each chunk in flight holds its text and its builders'
/// columns, and a process pays for that memory once, in page faults: at 65,536 lines of the
/// benchmark's ~280-byte records (18 MiB of text each), a run promoting one batch of 250k records
/// faulted in ~200 MB (a third of its CPU time was the kernel's); at 32,768 it faults ~40 MB less
/// and takes ~10% less, where smaller chunks (16,384) cost a run of many batches 8% more.
pub const CHUNK_LINES: usize = 32_768;

/// Bytes of text per chunk at most (a chunk ends at this or [`CHUNK_LINES`], whichever comes
/// first): keeps every column of a chunk far below arrow's 2 GiB per string array and the
/// chunk's line spans within `u32`, whatever the line lengths (issue 22).
pub const CHUNK_BYTES: usize = 128 << 20;

/// A longer line is not decoded: it goes to the dead letter as `line_too_long` with its first
/// [`LONG_LINE_KEPT`] bytes (the whole line stays in bronze, which the dead letter points to).
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// Bytes of an over-long line kept in the dead letter.
pub const LONG_LINE_KEPT: usize = 64 << 10;

/// Where a chunk ends and a line is too long; [`Limits::default`] in production, small ones in
/// tests of the boundaries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows per chunk at most.
    pub chunk_lines: usize,
    /// Text bytes per chunk at most (a single line may exceed it, up to `max_line`).
    pub chunk_bytes: usize,
    /// Longest line decoded.
    pub max_line: usize,
    /// Bytes of an over-long line kept.
    pub long_line_kept: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chunk_lines: CHUNK_LINES,
            chunk_bytes: CHUNK_BYTES,
            max_line: MAX_LINE_BYTES,
            long_line_kept: LONG_LINE_KEPT,
        }
    }
}

/// What a field held in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Kind {
    /// The key was absent.
    Missing = 0,
    /// JSON `null`.
    Null = 1,
    /// A JSON string (text is the unescaped content).
    String = 2,
    /// A JSON number (text is its literal).
    Number = 3,
    /// `true` / `false` (text is the literal).
    Bool = 4,
    /// An object or array (text is the raw JSON).
    Nested = 5,
}

/// One extracted field over the rows of a chunk.
#[derive(Debug, Default)]
pub struct RawField {
    /// Kind per row.
    pub kinds: Vec<Kind>,
    /// Text per row (empty for missing/null), concatenated; `offsets[i]..offsets[i+1]`.
    pub data: String,
    /// Offsets into `data`, one more than rows.
    pub offsets: Vec<u32>,
}

impl Kind {
    /// Every kind, by discriminant.
    pub const ALL: [Kind; 6] = [Kind::Missing, Kind::Null, Kind::String, Kind::Number, Kind::Bool, Kind::Nested];

    /// The kind of a raw JSON value.
    pub fn of(raw: &str) -> Kind {
        match raw.as_bytes().first() {
            Some(b'"') => Kind::String,
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'{' | b'[') => Kind::Nested,
            _ => Kind::Number,
        }
    }

    /// JSON type name (`string`, `number`, `bool`, `nested`), None for missing and null.
    pub fn json_type(self) -> Option<&'static str> {
        match self {
            Kind::Missing | Kind::Null => None,
            Kind::String => Some("string"),
            Kind::Number => Some("number"),
            Kind::Bool => Some("bool"),
            Kind::Nested => Some("nested"),
        }
    }
}

impl RawField {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        RawField { kinds: Vec::with_capacity(rows), data: String::new(), offsets }
    }

    pub(crate) fn push(&mut self, kind: Kind, text: &str) {
        self.kinds.push(kind);
        self.data.push_str(text);
        self.offsets.push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
    }

    /// Text of row `i`.
    pub fn text(&self, i: usize) -> &str {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// A field whose value comes in runs of rows, kept once per run: provenance, which every record
/// of a batch carries the same (its batch id, time and source). Kept per row, the batch id alone
/// was 36 bytes copied for each record, then read back to build its column.
#[derive(Debug, Default)]
pub struct RunField {
    /// Each run, in row order: its first row, the kind of its value, and the value's text as a
    /// range of `data`.
    runs: Vec<(usize, Kind, Range<u32>)>,
    /// The runs' texts, concatenated.
    data: String,
    /// Number of rows.
    rows: usize,
}

impl RunField {
    /// Adds a row holding `text` of `kind`: to the last run when it holds the same.
    pub(crate) fn push(&mut self, kind: Kind, text: &str) {
        let same = self
            .runs
            .last()
            .is_some_and(|(_, k, r)| *k == kind && &self.data[r.start as usize..r.end as usize] == text);
        if !same {
            let start = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
            self.data.push_str(text);
            self.runs.push((self.rows, kind, start..u32::try_from(self.data.len()).unwrap_or(u32::MAX)));
        }
        self.rows += 1;
    }

    /// The runs in row order: the rows each covers, with its value's kind and text.
    pub fn runs(&self) -> impl Iterator<Item = (Range<usize>, Kind, &str)> + '_ {
        self.runs.iter().enumerate().map(|(i, (first, kind, text))| {
            let end = self.runs.get(i + 1).map_or(self.rows, |next| next.0);
            (*first..end, *kind, &self.data[text.start as usize..text.end as usize])
        })
    }

    /// The kind and text of row `i` (`i` < [`RunField::len`]).
    pub fn value(&self, i: usize) -> (Kind, &str) {
        let (_, kind, text) = &self.runs[self.runs.partition_point(|(first, _, _)| *first <= i) - 1];
        (*kind, &self.data[text.start as usize..text.end as usize])
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// Where a decoded value goes: a field kept per row, or per run.
pub(crate) trait Values {
    /// Adds a row holding `text` of `kind`.
    fn push(&mut self, kind: Kind, text: &str);
}

impl Values for RawField {
    fn push(&mut self, kind: Kind, text: &str) {
        RawField::push(self, kind, text);
    }
}

impl Values for RunField {
    fn push(&mut self, kind: Kind, text: &str) {
        RunField::push(self, kind, text);
    }
}

/// Rows (JSON objects) of one chunk, by wanted field.
#[derive(Debug)]
pub struct RawChunk {
    /// One per wanted field, in the order given to the decoder.
    pub fields: Vec<RawField>,
    /// `_batch_id`, `_ingested_at`, `_source` of each row, by runs.
    pub provenance: [RunField; 3],
    /// 1-based line number of each row in its file.
    pub lines: Vec<u64>,
    /// The chunk's text; `spans[i]` is row i's raw line.
    pub text: String,
    /// Span of each row's line in `text`.
    pub spans: Vec<Range<u32>>,
    /// Keys the decoder was not asked for, with each kind their values had in this chunk
    /// (for schema-drift detection).
    pub other_keys: Vec<(String, Kind)>,
    /// The layout of a CSV batch's rows (`text` then holds CSV records, not JSON objects).
    pub(crate) csv: Option<Arc<CsvLayout>>,
}

impl RawChunk {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Raw JSON text of row `i` (a CSV record as the JSON object NDJSON landing made of it, with
    /// its provenance, so a dead-letter row replays the same whatever bronze kept).
    pub fn raw(&self, i: usize) -> Cow<'_, str> {
        let r = &self.spans[i];
        let text = &self.text[r.start as usize..r.end as usize];
        match &self.csv {
            Some(layout) => Cow::Owned(layout.record_json(text, self.lines[i])),
            None => Cow::Borrowed(text),
        }
    }
}

/// A line that could not become a row, or an unreadable rest of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number (for an unreadable tail: the line where reading stopped).
    pub line: u64,
    /// The raw text (lossy UTF-8).
    pub raw: String,
    /// Short rule name: `invalid_utf8`, `invalid_json`, `invalid_string`, `not_an_object`,
    /// `corrupt_record`, `line_too_long`, `unclosed_quote`, `truncated_line`, `unreadable_file`.
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Decodes one gzip NDJSON batch, calling `on_chunk` for each chunk of rows and collecting bad lines.
/// A decompression error ends the file: rows read before it are still delivered.
pub fn decode_batch(
    gz: &[u8],
    wanted: &[String],
    on_chunk: impl FnMut(RawChunk) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    decode_lines(gz_lines(gz), wanted, true, Limits::default(), on_chunk)
}

/// Like [`decode_batch`], over uncompressed NDJSON (dead-letter records being replayed): rows are
/// numbered by their line in `text`, never by a record's own `_line`.
pub fn decode_ndjson(
    text: &[u8],
    wanted: &[String],
    on_chunk: impl FnMut(RawChunk) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    decode_lines(text, wanted, false, Limits::default(), on_chunk)
}

/// How a file of records to decode is written.
#[derive(Debug, Clone)]
pub enum BatchFormat {
    /// A bronze batch of gzip NDJSON (a record's `_line` numbers its row).
    NdjsonGz,
    /// Plain NDJSON (dead-letter records being replayed: rows numbered by their line).
    Ndjson,
    /// A bronze batch of gzip CSV text, described by its gzip header (or, without one, by the
    /// batch given), and how its source reads CSV now ([`CsvSource`]).
    CsvGz(CsvBatch, CsvSource),
}

/// Decodes a bronze batch or replayed records and maps each chunk of rows with `f` on `workers`
/// threads while the calling thread inflates and cuts lines: a single batch uses every core (one
/// batch per run is the daily case). Returns `f`'s results in chunk order (the same as
/// [`decode_batch`] would deliver them) and the bad lines in line order; the first error of `f`
/// (in chunk order) ends the decoding.
pub fn map_chunks<T: Send>(
    bytes: &[u8],
    format: &BatchFormat,
    wanted: &[String],
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
) -> crate::Result<(Vec<T>, Vec<BadLine>)> {
    map_batch(bytes, format, wanted, Limits::default(), workers, f)
}

/// [`map_chunks`] handing `f`'s results to `deliver` as they come, in chunk order, instead of
/// collecting them: a batch's mapped chunks need not all be held at once (at most the chunks the
/// workers have finished ahead of an earlier one wait). Returns the bad lines in line order; the
/// first error of `f` or `deliver` ends the decoding.
pub fn for_each_chunk<T: Send>(
    bytes: &[u8],
    format: &BatchFormat,
    wanted: &[String],
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
    deliver: &mut dyn FnMut(T) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    map_batch_into(bytes, format, wanted, Limits::default(), workers, f, deliver)
}

/// [`map_chunks`] with chunks cut at `limits`.
pub(crate) fn map_batch<T: Send>(
    bytes: &[u8],
    format: &BatchFormat,
    wanted: &[String],
    limits: Limits,
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
) -> crate::Result<(Vec<T>, Vec<BadLine>)> {
    collected(|deliver| map_batch_into(bytes, format, wanted, limits, workers, f, deliver))
}

/// What `run` delivers, collected in order, with what it returns.
fn collected<T, R>(
    run: impl FnOnce(&mut dyn FnMut(T) -> crate::Result<()>) -> crate::Result<R>,
) -> crate::Result<(Vec<T>, R)> {
    let mut out = Vec::new();
    let r = run(&mut |t| {
        out.push(t);
        Ok(())
    })?;
    Ok((out, r))
}

/// [`for_each_chunk`] with chunks cut at `limits`.
fn map_batch_into<T: Send>(
    bytes: &[u8],
    format: &BatchFormat,
    wanted: &[String],
    limits: Limits,
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
    deliver: &mut dyn FnMut(T) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    match format {
        BatchFormat::NdjsonGz => map_lines_into(gz_lines(bytes), wanted, true, limits, workers, f, deliver),
        BatchFormat::Ndjson => map_lines_into(bytes, wanted, false, limits, workers, f, deliver),
        BatchFormat::CsvGz(fallback, source) => {
            let batch = CsvBatch::from_gzip(bytes).unwrap_or_else(|| fallback.clone());
            // Only between two dialects reading a header: names given by a dialect without one
            // are always "found".
            let other = source.dialect.as_ref().filter(|d| d.header && batch.dialect.header && **d != batch.dialect);
            let other = other.map(|d| CsvBatch { dialect: d.clone(), ..batch.clone() });
            let mut reader = gz_lines(bytes);
            let (mut layout, mut first) = match read_layout(&mut reader, batch, wanted, source.encoding) {
                Ok(read) => read,
                Err(e) => {
                    let message = format!("gzip stream unreadable before the first record: {e}; the file is lost");
                    return Ok(vec![BadLine { line: 1, raw: String::new(), rule: "unreadable_file", message }]);
                }
            };
            // The source's dialect now, where its header names more of the wanted fields.
            if let Some(other) = other {
                let mut again = gz_lines(bytes);
                if let Ok((l, f)) = read_layout(&mut again, other, wanted, source.encoding)
                    && l.found() > layout.found()
                {
                    (reader, layout, first) = (again, l, f);
                }
            }
            map_split(
                |on_text| split_csv(reader, &layout, first, limits, on_text),
                |text, bad| parse_csv(&layout, text, wanted.len(), limits, bad),
                workers,
                f,
                deliver,
            )
        }
    }
}

fn gz_lines(gz: &[u8]) -> impl BufRead + '_ {
    BufReader::with_capacity(1 << 20, MultiGzDecoder::new(gz))
}

/// `source_lines`: a record's `_line` (its line in the landed file) numbers its row.
pub(crate) fn decode_lines(
    reader: impl BufRead,
    wanted: &[String],
    source_lines: bool,
    limits: Limits,
    mut on_chunk: impl FnMut(RawChunk) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    let mut bad = Vec::new();
    let read_bad = split_lines(reader, limits, |lines| {
        let chunk = parse_lines(lines, wanted, source_lines, &mut bad);
        if chunk.rows() > 0 { on_chunk(chunk) } else { Ok(()) }
    })?;
    Ok(in_line_order(read_bad, bad))
}

/// [`decode_lines`] with `f` mapping chunks on `workers` threads; see [`map_chunks`].
#[cfg(test)]
pub(crate) fn map_lines<T: Send>(
    reader: impl BufRead,
    wanted: &[String],
    source_lines: bool,
    limits: Limits,
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
) -> crate::Result<(Vec<T>, Vec<BadLine>)> {
    collected(|deliver| map_lines_into(reader, wanted, source_lines, limits, workers, f, deliver))
}

/// [`map_lines`] handing results to `deliver`; see [`for_each_chunk`].
fn map_lines_into<T: Send>(
    reader: impl BufRead,
    wanted: &[String],
    source_lines: bool,
    limits: Limits,
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
    deliver: &mut dyn FnMut(T) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    map_split(
        |on_lines| split_lines(reader, limits, on_lines),
        |lines: Lines, bad| parse_lines(lines, wanted, source_lines, bad),
        workers,
        f,
        deliver,
    )
}

/// Runs `split` (stage 1: reading, on the calling thread) handing jobs to `workers` threads that
/// `parse` them into chunks (stage 2) and map each with `f`, whose results the calling thread
/// hands to `deliver` in chunk order; see [`for_each_chunk`].
fn map_split<J: Send, T: Send>(
    split: impl FnOnce(&mut dyn FnMut(J) -> crate::Result<()>) -> crate::Result<Vec<BadLine>>,
    parse: impl Fn(J, &mut Vec<BadLine>) -> RawChunk + Sync,
    workers: usize,
    f: impl Fn(RawChunk) -> crate::Result<T> + Sync,
    deliver: &mut dyn FnMut(T) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    if workers <= 1 {
        let mut bad = Vec::new();
        let read_bad = split(&mut |job| {
            let chunk = parse(job, &mut bad);
            if chunk.rows() > 0 {
                deliver(f(chunk)?)?;
            }
            Ok(())
        })?;
        return Ok(in_line_order(read_bad, bad));
    }
    type Done<T> = (usize, Option<crate::Result<T>>, Vec<BadLine>);
    let failed = std::sync::atomic::AtomicBool::new(false);
    // One job waits while the workers parse theirs and the reader cuts the next: at most
    // workers + 2 jobs of unparsed text are held.
    let (jobs, queue) = std::sync::mpsc::sync_channel::<(usize, J)>(1);
    // Each worker holds the queue: should all of them die (a panic), the reader's send fails
    // instead of waiting forever.
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    let (done_tx, done) = std::sync::mpsc::channel::<Done<T>>();
    let (f, parse, failed) = (&f, &parse, &failed);
    let read = std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let queue = std::sync::Arc::clone(&queue);
            scope.spawn(move || {
                loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, job)) = job else { return };
                    let mut bad = Vec::new();
                    let chunk = parse(job, &mut bad);
                    let mapped = (chunk.rows() > 0).then(|| f(chunk));
                    if matches!(mapped, Some(Err(_))) {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if done_tx.send((seq, mapped, bad)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((done_tx, queue));
        let mut seq = 0;
        // Finished chunks are delivered in order as the reader hands out jobs; those finished
        // ahead of an earlier one wait here.
        let mut ahead = InOrder::default();
        let mut stopped = None;
        let read = split(&mut |job| {
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(crate::Error::Internal("decoding stopped: a chunk failed".into()));
            }
            jobs.send((seq, job)).map_err(|_| crate::Error::Internal("decoding workers stopped".into()))?;
            seq += 1;
            while let Ok(d) = done.try_recv() {
                if let Err(e) = ahead.take(d, deliver) {
                    stopped = Some(e);
                    return Err(crate::Error::Internal("decoding stopped: a chunk failed".into()));
                }
            }
            Ok(())
        });
        drop(jobs);
        if let Some(e) = stopped {
            return Err(e);
        }
        // The first failed chunk in chunk order, if any, before what the reader ran into.
        for d in done.iter() {
            ahead.take(d, deliver)?;
        }
        let read = read?;
        if ahead.next != seq {
            return Err(crate::Error::Internal(format!("{} of {seq} decoded chunks arrived", ahead.next)));
        }
        Ok((read, ahead.bad))
    })?;
    Ok(in_line_order(read.0, read.1))
}

/// Mapped chunks put back in chunk order: each is delivered once every earlier one was.
struct InOrder<T> {
    next: usize,
    waiting: std::collections::BTreeMap<usize, (Option<crate::Result<T>>, Vec<BadLine>)>,
    /// Bad lines of the delivered chunks, in chunk order.
    bad: Vec<BadLine>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder { next: 0, waiting: std::collections::BTreeMap::new(), bad: Vec::new() }
    }
}

impl<T> InOrder<T> {
    /// Takes chunk `seq`'s result; delivers it and every waiting one that now follows in order.
    fn take(
        &mut self,
        (seq, mapped, bad): (usize, Option<crate::Result<T>>, Vec<BadLine>),
        deliver: &mut dyn FnMut(T) -> crate::Result<()>,
    ) -> crate::Result<()> {
        self.waiting.insert(seq, (mapped, bad));
        while let Some((mapped, bad)) = self.waiting.remove(&self.next) {
            self.next += 1;
            self.bad.extend(bad);
            match mapped {
                Some(Ok(v)) => deliver(v)?,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(())
    }
}

/// The bad lines of reading and of parsing, merged in line order (each list is in line order;
/// an unreadable rest of a file comes after the line it follows).
fn in_line_order(read: Vec<BadLine>, mut parsed: Vec<BadLine>) -> Vec<BadLine> {
    if !read.is_empty() {
        parsed.extend(read);
        parsed.sort_by_key(|b| b.line);
    }
    parsed
}

/// Lines read from a batch for one chunk, not parsed yet.
struct Lines {
    text: Vec<u8>,
    /// Line number and span in `text`, per line.
    lines: Vec<(u64, Range<usize>)>,
}

impl Lines {
    fn new() -> Self {
        Lines { text: Vec::new(), lines: Vec::new() }
    }

    /// An empty chunk sized like `previous` (a little more): the next chunk of a file is about as
    /// large, so its text is allocated once instead of growing by doubling (each step copying the
    /// text and leaving a freed buffer of another size to the allocator).
    fn sized_like(previous: &Lines) -> Self {
        let (text, lines) = (previous.text.len(), previous.lines.len());
        Lines { text: Vec::with_capacity(text + text / 8), lines: Vec::with_capacity(lines + lines / 8) }
    }
}

/// Stage 1: reads (inflating) and cuts lines into chunks of at most `limits.chunk_lines` lines
/// and `limits.chunk_bytes` bytes (a single line may be longer, up to `limits.max_line`),
/// handed to `on_lines`; returns the lines that could not be read: over-long, cut off by a
/// decompression error (which ends the file), the unreadable rest.
fn split_lines(
    mut reader: impl BufRead,
    limits: Limits,
    mut on_lines: impl FnMut(Lines) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    let mut bad = Vec::new();
    let mut chunk = Lines::new();
    let mut line_no: u64 = 0;
    loop {
        // Each line is read straight into the chunk's text, at its end.
        let start = chunk.text.len();
        match read_line(&mut reader, &mut chunk.text, limits.max_line) {
            Ok(Line::End) => break,
            Ok(Line::TooLong(len)) => {
                line_no += 1;
                let held = chunk.text.len() - start;
                let kept = String::from_utf8_lossy(&chunk.text[start..start + held.min(limits.long_line_kept)]);
                bad.push(BadLine {
                    line: line_no,
                    raw: kept.into_owned(),
                    rule: "line_too_long",
                    message: format!(
                        "line {line_no} is {len} bytes, over the {} decoded per line; its first {} bytes are kept here, all of it in bronze",
                        limits.max_line,
                        held.min(limits.long_line_kept)
                    ),
                });
                chunk.text.truncate(start);
            }
            Ok(Line::Read) => {
                line_no += 1;
                if !chunk.lines.is_empty() && chunk.text.len() > limits.chunk_bytes {
                    // Over the chunk's bytes: this line starts the next chunk.
                    let mut next = Lines::sized_like(&chunk);
                    next.text.extend_from_slice(&chunk.text[start..]);
                    chunk.text.truncate(start);
                    on_lines(std::mem::replace(&mut chunk, next))?;
                    chunk.lines.push((line_no, 0..chunk.text.len()));
                } else {
                    chunk.lines.push((line_no, start..chunk.text.len()));
                }
                if chunk.lines.len() >= limits.chunk_lines {
                    let next = Lines::sized_like(&chunk);
                    on_lines(std::mem::replace(&mut chunk, next))?;
                }
            }
            Err(e) => {
                // Whatever was read of an unterminated line is kept as its own bad line.
                if chunk.text.len() > start {
                    line_no += 1;
                    bad.push(BadLine {
                        line: line_no,
                        raw: String::from_utf8_lossy(&chunk.text[start..]).into_owned(),
                        rule: "truncated_line",
                        message: format!("line {line_no} is cut off by a decompression error"),
                    });
                    chunk.text.truncate(start);
                }
                bad.push(BadLine {
                    line: line_no + 1,
                    raw: String::new(),
                    rule: "unreadable_file",
                    message: format!("gzip stream unreadable after line {line_no}: {e}; the rest of the file is lost"),
                });
                break;
            }
        }
    }
    if !chunk.lines.is_empty() {
        on_lines(chunk)?;
    }
    Ok(bad)
}

/// Stage 2: the rows of a chunk's lines (bad ones added to `bad`, in line order). The chunk
/// keeps the lines' text as it was read (its rows' raw lines are spans of it) unless a line is not
/// UTF-8: then each row's line is copied.
fn parse_lines(lines: Lines, wanted: &[String], source_lines: bool, bad: &mut Vec<BadLine>) -> RawChunk {
    let Lines { text, lines } = lines;
    let bytes = text.len();
    match String::from_utf8(text) {
        Ok(text) => {
            let mut builder = ChunkBuilder::new(wanted, source_lines, lines.len(), bytes, Text::Kept);
            for (line, span) in &lines {
                // Lines end at newlines: each span of valid UTF-8 text is valid text.
                match text.get(span.clone()) {
                    Some(raw) => builder.push_text(raw, span.start, *line, bad),
                    None => builder.push_line(&text.as_bytes()[span.clone()], span.start, *line, bad),
                }
            }
            builder.finish(text)
        }
        Err(e) => {
            let text = e.into_bytes();
            let mut builder = ChunkBuilder::new(wanted, source_lines, lines.len(), bytes, Text::Copied);
            for (line, span) in &lines {
                builder.push_line(&text[span.clone()], span.start, *line, bad);
            }
            builder.finish(String::new())
        }
    }
}

/// What [`read_line`] found.
enum Line {
    /// End of input.
    End,
    /// A line (with its newline, if any) is in the buffer.
    Read,
    /// A line of this many bytes, longer than the limit: the buffer holds its start, the rest
    /// was skipped.
    TooLong(u64),
}

/// Reads one line onto the end of `buf`, holding at most `max` bytes of it: a longer line is
/// skipped to its end (never held whole: a line of gigabytes costs no memory).
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    let start = buf.len();
    let mut total: u64 = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match total {
                0 => Line::End,
                n if n > max as u64 => Line::TooLong(n),
                _ => Line::Read,
            });
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (max + 1).saturating_sub(buf.len() - start);
        buf.extend_from_slice(&available[..take.min(room)]);
        total += take as u64;
        reader.consume(take);
        if done {
            // `total` counts the newline.
            return Ok(if total > max as u64 + 1 { Line::TooLong(total - 1) } else { Line::Read });
        }
    }
}

/// Where a chunk's rows' raw lines live.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    /// In the chunk's text as read: a row's span is its line's place there.
    Kept,
    /// Copied line by line into the chunk's text (the text read is not all UTF-8).
    Copied,
}

struct ChunkBuilder<'w> {
    wanted: &'w [String],
    source_lines: bool,
    text: Text,
    chunk: RawChunk,
    /// Byte range of each wanted field's value in the current line (reused across lines).
    slots: Vec<Option<Range<usize>>>,
    /// Keys of the current line not wanted, with their positions and values' kinds (reused
    /// across lines).
    others: Vec<(usize, Range<usize>, Kind)>,
    /// The keys of the lines seen, by position.
    key_order: scan::KeyOrder,
}

impl<'w> ChunkBuilder<'w> {
    /// A builder for up to `rows` rows of `bytes` bytes of text.
    fn new(wanted: &'w [String], source_lines: bool, rows: usize, bytes: usize, text: Text) -> Self {
        ChunkBuilder {
            wanted,
            source_lines,
            text,
            chunk: RawChunk {
                // Each field's text starts at its share of the chunk's (at most one copy to grow);
                // reserving the whole chunk for each raised one batch's peak RSS by a third.
                fields: wanted
                    .iter()
                    .map(|_| {
                        let mut f = RawField::with_capacity(rows);
                        f.data.reserve(bytes / wanted.len().max(1));
                        f
                    })
                    .collect(),
                provenance: Default::default(),
                lines: Vec::with_capacity(rows),
                text: match text {
                    Text::Kept => String::new(),
                    Text::Copied => String::with_capacity(bytes),
                },
                spans: Vec::with_capacity(rows),
                other_keys: Vec::new(),
                csv: None,
            },
            slots: vec![None; wanted.len() + 5],
            others: Vec::new(),
            key_order: scan::KeyOrder::default(),
        }
    }

    /// The chunk; `text` is the text read when its rows' spans point into it ([`Text::Kept`]).
    fn finish(mut self, text: String) -> RawChunk {
        if self.text == Text::Kept {
            self.chunk.text = text;
        }
        self.chunk
    }

    /// Parses one line, `raw`, which starts at byte `at` of the text read.
    fn push_line(&mut self, raw: &[u8], at: usize, line: u64, bad: &mut Vec<BadLine>) {
        match std::str::from_utf8(raw) {
            Ok(text) => self.push_text(text, at, line, bad),
            Err(e) => {
                let trimmed = raw.trim_ascii();
                if trimmed.is_empty() {
                    return; // blank lines are not records
                }
                // The error's offset within the trimmed line.
                let lead = raw.len() - raw.trim_ascii_start().len();
                bad.push(BadLine {
                    line,
                    raw: String::from_utf8_lossy(trimmed).into_owned(),
                    rule: "invalid_utf8",
                    message: format!("invalid UTF-8 at byte {} of line {line}", e.valid_up_to() - lead),
                });
            }
        }
    }

    /// Parses one line of text, `raw`, which starts at byte `at` of the text read.
    fn push_text(&mut self, raw: &str, at: usize, line: u64, bad: &mut Vec<BadLine>) {
        let text = raw.trim_ascii();
        if text.is_empty() {
            return; // blank lines are not records
        }
        if !text.starts_with('{') {
            let what = if text.starts_with('[') { "an array" } else { "not an object" };
            let (rule, message) = match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => ("not_an_object", format!("line {line} is {what}, not a JSON object")),
                Err(e) => ("invalid_json", format!("line {line} is not valid JSON: {e}")),
            };
            bad.push(BadLine { line, raw: text.to_string(), rule, message });
            return;
        }
        let n = self.wanted.len();
        self.slots.fill(None);
        let key_slot = KeySlot { wanted: self.wanted };
        let scanned =
            scan::flat_object(text, &mut self.key_order, |k| key_slot.slot(k), &mut self.slots, &mut self.others);
        // A scanned line has no escapes in its strings.
        let escapes = scanned.is_none();
        let (keys, parsed) = match scanned {
            Some(keys) => {
                for (k, key, kind) in self.others.drain(..) {
                    if !self.key_order.noted(k, kind) {
                        note_other(&mut self.chunk.other_keys, &text[key], kind);
                    }
                }
                (keys, Ok(()))
            }
            None => {
                self.slots.fill(None);
                extract(text, self.wanted, &mut self.slots, &mut self.chunk.other_keys)
            }
        };
        let slots = &self.slots;
        let value = |i: usize| slots[i].clone().map(|r| &text[r]);
        if let Err(e) = parsed {
            bad.push(BadLine {
                line,
                raw: text.to_string(),
                rule: "invalid_json",
                message: format!("line {line} is not valid JSON: {e}"),
            });
            return;
        }
        // The tool's marker of a line that was not an object: `_corrupt_record` with provenance
        // and nothing else. A producer's own field of that name is just a field (issue 22).
        let marked = (n..n + 5).filter(|&i| slots[i].is_some()).count();
        if let Some(corrupt) = value(n + 3).filter(|_| keys == marked) {
            let original = serde_json::from_str::<String>(corrupt).unwrap_or_else(|_| corrupt.to_string());
            bad.push(BadLine {
                line,
                raw: original,
                rule: "corrupt_record",
                message: format!(
                    "line {line} could not be read as a record when ingested (not a JSON object, a CSV record whose quoted field is never closed, or text that is not UTF-8); kept as text"
                ),
            });
            return;
        }
        // A string whose escapes do not decode (a lone surrogate `\ud800`) rejects the record:
        // it never lands as an empty string.
        if escapes {
            for (i, name) in self.wanted.iter().enumerate() {
                let escaped = value(i).filter(|r| r.starts_with('"') && r.contains('\\'));
                if let Some(Err(e)) = escaped.map(serde_json::from_str::<String>) {
                    bad.push(BadLine {
                        line,
                        raw: text.to_string(),
                        rule: "invalid_string",
                        message: format!("line {line}: the string of `{name}` does not decode: {e}"),
                    });
                    return;
                }
            }
        }
        for (i, field) in self.chunk.fields.iter_mut().enumerate() {
            push_token(field, value(i), escapes);
        }
        for (i, field) in self.chunk.provenance.iter_mut().enumerate() {
            push_token(field, value(n + i), escapes);
        }
        let start = match self.text {
            // `text` starts after the line's leading whitespace.
            Text::Kept => at + (raw.len() - raw.trim_ascii_start().len()),
            Text::Copied => {
                let start = self.chunk.text.len();
                self.chunk.text.push_str(text);
                start
            }
        };
        let span = u32::try_from(start).unwrap_or(u32::MAX)..u32::try_from(start + text.len()).unwrap_or(u32::MAX);
        self.chunk.spans.push(span);
        // CSV records carry the line they came from in the landed file.
        let source_line = value(n + 4).filter(|_| self.source_lines).and_then(|l| l.parse().ok());
        self.chunk.lines.push(source_line.unwrap_or(line));
    }
}

/// Adds `raw`, a value's JSON text, to `field`; strings are unescaped unless `escapes` is false
/// (the line is known to hold none).
fn push_token(field: &mut impl Values, raw: Option<&str>, escapes: bool) {
    let Some(raw) = raw else {
        field.push(Kind::Missing, "");
        return;
    };
    match Kind::of(raw) {
        Kind::String => {
            let inner = &raw[1..raw.len() - 1];
            if escapes && inner.contains('\\') {
                let s: String = serde_json::from_str(raw).unwrap_or_default();
                field.push(Kind::String, &s);
            } else {
                field.push(Kind::String, inner);
            }
        }
        Kind::Null => field.push(Kind::Null, ""),
        kind => field.push(kind, raw),
    }
}

/// `key` with values of `kind` among a chunk's other keys (once).
fn note_other(other: &mut Vec<(String, Kind)>, key: &str, kind: Kind) {
    if !other.iter().any(|(k, t)| *t == kind && k == key) {
        other.push((key.to_string(), kind));
    }
}

/// The full parser's reading of one object (see [`Extract`]): the number of keys, and whether
/// `text` is one JSON object.
fn extract(
    text: &str,
    wanted: &[String],
    slots: &mut [Option<Range<usize>>],
    other: &mut Vec<(String, Kind)>,
) -> (usize, serde_json::Result<()>) {
    let mut keys = 0;
    let mut de = serde_json::Deserializer::from_str(text);
    let r = Extract { wanted, base: text.as_ptr() as usize, slots, other, keys: &mut keys }.deserialize(&mut de);
    (keys, r.and_then(|()| de.end()))
}

/// Extracts the wanted fields (then `_batch_id`, `_ingested_at`, `_source`, `_corrupt_record`,
/// `_line`)
/// of one JSON object as raw values; the last occurrence of a duplicated key wins.
struct Extract<'w> {
    wanted: &'w [String],
    /// Address of the line's first byte: values are recorded as ranges relative to it.
    base: usize,
    slots: &'w mut [Option<Range<usize>>],
    /// Other keys seen in the chunk, with their kinds (few: a linear scan is cheapest).
    other: &'w mut Vec<(String, Kind)>,
    /// Keys of the object (duplicates counted).
    keys: &'w mut usize,
}

impl<'de, 'w> DeserializeSeed<'de> for Extract<'w> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'w> Visitor<'de> for Extract<'w> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(slot) = map.next_key_seed(KeySlot { wanted: self.wanted })? {
            *self.keys += 1;
            match slot {
                Slot::Wanted(i) => {
                    let raw = map.next_value::<&'de RawValue>()?.get();
                    let start = raw.as_ptr() as usize - self.base;
                    self.slots[i] = Some(start..start + raw.len());
                }
                Slot::Other(key) => {
                    let kind = Kind::of(map.next_value::<&'de RawValue>()?.get());
                    note_other(self.other, &key, kind);
                }
            }
        }
        Ok(())
    }
}

/// Where a key goes: a wanted slot, or the other keys.
enum Slot<'de> {
    Wanted(usize),
    Other(Cow<'de, str>),
}

/// Maps a key to its slot index, if wanted.
struct KeySlot<'w> {
    wanted: &'w [String],
}

impl KeySlot<'_> {
    fn slot(&self, key: &str) -> Option<usize> {
        let n = self.wanted.len();
        if key.starts_with('_') {
            return match key {
                BATCH_ID => Some(n),
                INGESTED_AT => Some(n + 1),
                SOURCE => Some(n + 2),
                CORRUPT_RECORD => Some(n + 3),
                LINE => Some(n + 4),
                _ => self.wanted.iter().position(|w| w == key),
            };
        }
        self.wanted.iter().position(|w| w == key)
    }
}

impl<'de, 'w> DeserializeSeed<'de> for KeySlot<'w> {
    type Value = Slot<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'w> Visitor<'de> for KeySlot<'w> {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Slot<'de>, E> {
        Ok(self.slot(key).map_or(Slot::Other(Cow::Borrowed(key)), Slot::Wanted))
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Slot<'de>, E> {
        Ok(self.slot(key).map_or_else(|| Slot::Other(Cow::Owned(key.to_string())), Slot::Wanted))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Random lines close to flat JSON objects: every branch of the scanner, valid or not.
    fn near_json_lines(count: usize) -> Vec<String> {
        let mut random = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: usize| (random() % n as u64) as usize;
        let keys = [
            "a",
            "b",
            "_batch_id",
            "_source",
            "_line",
            "_corrupt_record",
            "x",
            "",
            "a\\u0062",
            "é",
            "a key read by words",
            "a key read by words \\u0041",
        ];
        let values = [
            "1",
            "-0",
            "0.5",
            "-12.5e+3",
            "1E9",
            "01",
            "1.",
            "-",
            "1e",
            "2.e3",
            "-x",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "\"s\"",
            "\"\"",
            "\"é ü\"",
            "\"a\\\"b\"",
            "\"\\ud800\"",
            "\"tab\there\"",
            "\"open",
            "\"a string read eight bytes at a time\"",
            "\"12345678\"",
            "\"long, ünïcödé, é\"",
            "\"long, with a tab\there\"",
            "\"long, with an escape \\n here\"",
            "\"long, with a quote\" here\"",
            "{}",
            "{\"k\":1}",
            "[1,2]",
            "[]",
            "\"x\"y",
            "1 2",
        ];
        let spaces = ["", "", "", " ", "\t", "\r\n ", "\u{a0}"];
        (0..count)
            .map(|_| {
                let mut line = String::from(spaces[next(spaces.len())]);
                line.push('{');
                for k in 0..next(5) {
                    if k > 0 {
                        line.push_str(if next(40) == 0 { ";" } else { "," });
                    }
                    line.push_str(spaces[next(spaces.len())]);
                    let key = keys[next(keys.len())];
                    match next(30) {
                        0 => line.push_str(key),
                        _ => line.push_str(&format!("\"{key}\"")),
                    }
                    line.push_str(spaces[next(spaces.len())]);
                    line.push_str(if next(40) == 0 { "=" } else { ":" });
                    line.push_str(spaces[next(spaces.len())]);
                    line.push_str(values[next(values.len())]);
                    line.push_str(spaces[next(spaces.len())]);
                }
                match next(20) {
                    0 => {}
                    1 => line.push_str("},"),
                    2 => line.push_str("} x"),
                    _ => line.push('}'),
                }
                line.push_str(spaces[next(spaces.len())]);
                line
            })
            .collect()
    }

    #[test]
    fn the_flat_scanner_agrees_with_serde_json_on_every_line_it_accepts_and_accepts_the_common_ones() {
        let wanted: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let key_slot = KeySlot { wanted: &wanted };
        // One key order over all lines, as over a chunk's: its guesses hit and miss.
        let mut order = scan::KeyOrder::default();
        let (mut accepted, mut valid) = (0, 0);
        for line in near_json_lines(50_000) {
            let mut full = vec![None; wanted.len() + 5];
            let mut full_other = Vec::new();
            let (full_keys, parsed) = extract(&line, &wanted, &mut full, &mut full_other);
            valid += usize::from(parsed.is_ok());
            let mut fast = vec![None; wanted.len() + 5];
            let mut others = Vec::new();
            let scanned = scan::flat_object(&line, &mut order, |k| key_slot.slot(k), &mut fast, &mut others);
            // What the keys of earlier lines lead the scanner to expect never changes its answer.
            let mut unprimed = (vec![None; wanted.len() + 5], Vec::new());
            let fresh = scan::flat_object(
                &line,
                &mut scan::KeyOrder::default(),
                |k| key_slot.slot(k),
                &mut unprimed.0,
                &mut unprimed.1,
            );
            assert_eq!(scanned, fresh, "{line:?}");
            let Some(keys) = scanned else { continue };
            assert_eq!((&fast, &others), (&unprimed.0, &unprimed.1), "{line:?}");
            accepted += 1;
            assert!(parsed.is_ok(), "accepted what serde_json refuses: {line:?}");
            assert_eq!((keys, &fast), (full_keys, &full), "{line:?}");
            let mut fast_other = Vec::new();
            for (_, key, kind) in others {
                note_other(&mut fast_other, &line[key], kind);
            }
            assert_eq!(fast_other, full_other, "{line:?}");
        }
        // The lines serde_json reads, the scanner mostly reads too (escapes and nesting aside).
        assert!(valid > 5_000 && accepted * 3 > valid, "{accepted} accepted of {valid} valid");
    }

    /// A row's texts are its values as serde_json reads them, whether its chunk's text was kept as
    /// read (all UTF-8) or copied line by line (a line is not UTF-8), escapes and all.
    #[test]
    fn each_rows_texts_are_its_values_as_serde_json_reads_them_in_any_chunk() {
        // Two wanted fields, and `_batch_id`, the first provenance field.
        let checked = ["a", "b", "_batch_id"];
        let wanted = &checked[..2];
        let lines = near_json_lines(5_000);
        let text = lines.join("\n") + "\n";
        let (kept, _) = decode(&gz(text.as_bytes()), wanted);
        let mut mixed = text.clone().into_bytes();
        mixed.extend_from_slice(b"{\"a\": \"\xff\"}\n");
        let (copied, bad) = decode(&gz(&mixed), wanted);
        assert_eq!(bad.last().map(|b| b.rule), Some("invalid_utf8"));
        let (kept, copied) = (&kept[0], &copied[0]);
        assert!(kept.rows() > 500, "{} rows", kept.rows());
        // Kept: the text as read, bad lines and all; copied: the rows' lines alone.
        assert!(copied.text.len() < kept.text.len(), "{} / {} bytes", copied.text.len(), kept.text.len());
        assert_eq!((kept.rows(), &kept.lines), (copied.rows(), &copied.lines));
        for r in 0..kept.rows() {
            assert_eq!(kept.raw(r), copied.raw(r));
            // The last of a duplicated key wins, as in a map.
            let values: std::collections::BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(&kept.raw(r)).expect("a row is a JSON object");
            for (i, name) in checked.iter().enumerate() {
                let (kind, value) = match values.get(*name).map(|v| v.get()) {
                    None => (Kind::Missing, String::new()),
                    Some(v) => match Kind::of(v) {
                        // A provenance string that does not decode reads as empty: only a wanted
                        // field's rejects its record (provenance is written by the tool).
                        Kind::String => (Kind::String, serde_json::from_str::<String>(v).unwrap_or_default()),
                        Kind::Null => (Kind::Null, String::new()),
                        kind => (kind, v.to_string()),
                    },
                };
                for (chunk, how) in [(kept, "kept"), (copied, "copied")] {
                    let got = match chunk.fields.get(i) {
                        Some(field) => (field.kinds[r], field.text(r)),
                        None => chunk.provenance[0].value(r),
                    };
                    assert_eq!(got, (kind, value.as_str()), "{name} of {:?}, {how}", kept.raw(r));
                }
            }
        }
        let bytes = |c: &RawChunk| c.fields.iter().map(|f| f.data.len()).sum::<usize>();
        let texts = |c: &RawChunk| (0..c.rows()).flat_map(|r| c.fields.iter().map(move |f| f.text(r).len())).sum();
        assert_eq!((bytes(kept), bytes(copied)), (texts(kept), texts(kept)));
    }

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).expect("write");
        e.finish().expect("finish")
    }

    fn decode(gzipped: &[u8], wanted: &[&str]) -> (Vec<RawChunk>, Vec<BadLine>) {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        let mut chunks = Vec::new();
        let bad = decode_batch(gzipped, &wanted, |c| {
            chunks.push(c);
            Ok(())
        })
        .expect("decode");
        (chunks, bad)
    }

    /// Provenance is kept once per run of equal values, and reads back per row as it was pushed:
    /// a run ends where the text or the kind changes (a missing value and a null are both empty).
    #[test]
    fn a_run_field_reads_back_each_row_as_pushed() {
        let pushed = [
            (Kind::String, "b1"),
            (Kind::String, "b1"),
            (Kind::Missing, ""),
            (Kind::Null, ""),
            (Kind::Null, ""),
            (Kind::String, ""),
            (Kind::String, "b2"),
            (Kind::Number, "b2"),
            (Kind::String, "b1"),
        ];
        let mut field = RunField::default();
        assert!(field.is_empty() && field.runs().next().is_none());
        for (kind, text) in pushed {
            field.push(kind, text);
        }
        assert_eq!(field.len(), pushed.len());
        for (i, want) in pushed.iter().enumerate() {
            assert_eq!(field.value(i), *want, "row {i}");
        }
        let runs: Vec<_> = field.runs().collect();
        assert_eq!(
            runs,
            [
                (0..2, Kind::String, "b1"),
                (2..3, Kind::Missing, ""),
                (3..5, Kind::Null, ""),
                (5..6, Kind::String, ""),
                (6..7, Kind::String, "b2"),
                (7..8, Kind::Number, "b2"),
                (8..9, Kind::String, "b1"),
            ]
        );
        // A batch's rows are one run: its value is kept once.
        let mut batch = RunField::default();
        (0..10_000).for_each(|_| batch.push(Kind::String, "5f0c9a3e-batch"));
        assert_eq!((batch.runs().count(), batch.data.len()), (1, "5f0c9a3e-batch".len()));
    }

    #[test]
    fn extracts_tokens_by_kind() {
        let text = br#"{"a": 1.50, "b": "x\"y", "c": null, "_batch_id": "b1", "extra": {"k": [1]}, "d": true, "e": [1]}
{"b": "plain"}
"#;
        let (chunks, bad) = decode(&gz(text), &["a", "b", "c", "d", "e"]);
        assert!(bad.is_empty());
        let c = &chunks[0];
        assert_eq!(c.rows(), 2);
        assert_eq!((c.fields[0].kinds[0], c.fields[0].text(0)), (Kind::Number, "1.50"));
        assert_eq!((c.fields[1].kinds[0], c.fields[1].text(0)), (Kind::String, "x\"y"));
        assert_eq!(c.fields[2].kinds[0], Kind::Null);
        assert_eq!((c.fields[3].kinds[0], c.fields[3].text(0)), (Kind::Bool, "true"));
        assert_eq!(c.fields[4].kinds[0], Kind::Nested);
        assert_eq!(c.fields[0].kinds[1], Kind::Missing);
        assert_eq!(c.provenance[0].value(0), (Kind::String, "b1"));
        assert_eq!(c.lines, vec![1, 2]);
        assert!(c.raw(0).contains("\"extra\""));
    }

    #[test]
    fn bad_lines_are_kept_with_reasons() {
        let mut text =
            b"{\"a\": 1}\nnot json\n[1,2]\n{\"a\": \xff}\n\n{\"a\": 2\n{\"_corrupt_record\": \"oops\"}\n".to_vec();
        text.extend_from_slice(b"{\"a\": 3}\n");
        let (chunks, bad) = decode(&gz(&text), &["a"]);
        assert_eq!(chunks[0].rows(), 2);
        assert_eq!(chunks[0].lines, vec![1, 8]);
        let rules: Vec<(u64, &str)> = bad.iter().map(|b| (b.line, b.rule)).collect();
        assert_eq!(
            rules,
            vec![
                (2, "invalid_json"),
                (3, "not_an_object"),
                (4, "invalid_utf8"),
                (6, "invalid_json"),
                (7, "corrupt_record")
            ]
        );
        assert_eq!(bad[4].raw, "oops");
    }

    #[test]
    fn truncated_gzip_keeps_what_was_read() {
        let mut text = Vec::new();
        for i in 0..5000 {
            text.extend_from_slice(format!("{{\"a\": {i}, \"pad\": \"{}\"}}\n", "x".repeat(i % 50)).as_bytes());
        }
        let full = gz(&text);
        let cut = &full[..full.len() / 2];
        let (chunks, bad) = decode(cut, &["a"]);
        let rows: usize = chunks.iter().map(RawChunk::rows).sum();
        assert!(rows > 0 && rows < 5000, "{rows}");
        assert_eq!(bad.last().map(|b| b.rule), Some("unreadable_file"));
    }

    fn decode_with(text: &[u8], wanted: &[&str], limits: Limits) -> (Vec<RawChunk>, Vec<BadLine>) {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        let mut chunks = Vec::new();
        let bad = decode_lines(text, &wanted, false, limits, |c| {
            chunks.push(c);
            Ok(())
        })
        .expect("decode");
        (chunks, bad)
    }

    /// Issue 22: chunks end by bytes as well as lines, so no column of a chunk nears 2 GiB and
    /// spans stay within u32; a line over the limit is dead-lettered with its start, never held
    /// whole; every line is a row or a bad line, with its exact text.
    #[test]
    fn chunks_end_by_bytes_and_over_long_lines_are_bad_lines() {
        let limits = Limits { chunk_lines: 1000, chunk_bytes: 100, max_line: 60, long_line_kept: 10 };
        let mut text = String::new();
        let mut want = Vec::new();
        for i in 0..20 {
            let line = format!("{{\"a\": \"{}\"}}", "x".repeat(i * 2));
            text.push_str(&line);
            text.push('\n');
            want.push(line);
        }
        let (chunks, bad) = decode_with(text.as_bytes(), &["a"], limits);
        let long: Vec<u64> = want.iter().enumerate().filter(|(_, l)| l.len() > 60).map(|(i, _)| i as u64 + 1).collect();
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), long);
        assert!(bad.iter().all(|b| b.rule == "line_too_long" && b.raw.len() == 10 && b.raw.starts_with("{\"a\"")));
        assert!(chunks.len() > 3, "split by bytes: {}", chunks.len());
        let mut rows = Vec::new();
        for c in &chunks {
            assert!(c.rows() == 1 || c.text.len() <= 100, "{} bytes in {} rows", c.text.len(), c.rows());
            rows.extend((0..c.rows()).map(|i| (c.lines[i], c.raw(i).to_string())));
        }
        let kept: Vec<(u64, String)> =
            want.iter().enumerate().filter(|(_, l)| l.len() <= 60).map(|(i, l)| (i as u64 + 1, l.clone())).collect();
        assert_eq!(rows, kept);
        // A last line without a newline, over the limit, too.
        let (_, bad) = decode_with(format!("{{\"a\": \"{}\"}}", "y".repeat(80)).as_bytes(), &["a"], limits);
        assert_eq!((bad.len(), bad[0].rule, bad[0].line), (1, "line_too_long", 1));
    }

    /// A batch decoded on several threads gives the chunks (in order) and bad lines of one thread,
    /// and the first failing chunk's error.
    #[test]
    fn chunks_mapped_on_several_threads_equal_one_thread() {
        let limits = Limits { chunk_lines: 7, chunk_bytes: 300, max_line: 80, long_line_kept: 10 };
        let mut text = String::new();
        for i in 0..3000 {
            let line = match i % 97 {
                0 => "not json".to_string(),
                1 => format!("{{\"a\": \"{}\"}}", "z".repeat(100)),
                2 => String::new(),
                _ => format!("{{\"a\": {i}, \"b\": \"{}\"}}", "x".repeat(i % 13)),
            };
            text.push_str(&line);
            text.push('\n');
        }
        let wanted = vec!["a".to_string(), "b".to_string()];
        let rows = |c: RawChunk| Ok((0..c.rows()).map(|i| (c.lines[i], c.raw(i).to_string())).collect::<Vec<_>>());
        let one = map_lines(text.as_bytes(), &wanted, false, limits, 1, rows).expect("one thread");
        assert!(one.0.len() > 400, "{} chunks", one.0.len());
        assert_eq!(one.1.iter().map(|b| b.rule).collect::<std::collections::BTreeSet<_>>().len(), 2);
        for workers in [2, 3, 8] {
            let many = map_lines(text.as_bytes(), &wanted, false, limits, workers, rows).expect("threads");
            assert_eq!(many.0, one.0, "{workers} workers");
            assert_eq!(many.1, one.1, "{workers} workers");
        }
        let failing = |c: RawChunk| match c.lines.iter().find(|&&l| l >= 2000) {
            Some(l) => Err(crate::Error::Internal(format!("chunk at line {l}"))),
            None => Ok(c.rows()),
        };
        for workers in [1, 4] {
            let err = map_lines(text.as_bytes(), &wanted, false, limits, workers, failing).expect_err("fails");
            assert!(err.to_string().contains("chunk at line 200"), "{err}");
        }
        // Delivered as they come, in order; a failing delivery ends the decoding with its error.
        for workers in [1, 3] {
            let mut delivered = Vec::new();
            let err = map_lines_into(text.as_bytes(), &wanted, false, limits, workers, rows, &mut |c| {
                if delivered.len() == 100 {
                    return Err(crate::Error::Internal("the sink is full".into()));
                }
                delivered.push(c);
                Ok(())
            })
            .expect_err("the sink fails");
            assert!(err.to_string().contains("the sink is full"), "{err}");
            assert_eq!(delivered, one.0[..100], "{workers} workers");
        }
    }

    /// Issue 22: a lone surrogate is a rejected record, not an empty string; a producer's own
    /// `_corrupt_record` field is a field, only the tool's marker (with provenance alone) is one.
    #[test]
    fn lone_surrogates_are_rejected_and_only_the_tools_marker_means_corrupt() {
        let text = concat!(
            r#"{"region": "eu-\ud800west", "id": 1}"#,
            "\n",
            r#"{"region": "eu-\u00e9", "id": 2}"#,
            "\n",
            r#"{"region": "x", "_corrupt_record": "producer's", "id": 3}"#,
            "\n",
            r#"{"_corrupt_record": "not json", "_batch_id": "b", "_ingested_at": "t", "_source": "s"}"#,
            "\n",
            r#"{"_batch_id": "b", "_ingested_at": "t", "_source": "s", "_corrupt_record": "also not json"}"#,
            "\n"
        );
        let (chunks, bad) = decode(&gz(text.as_bytes()), &["region", "id"]);
        let rules: Vec<(u64, &str)> = bad.iter().map(|b| (b.line, b.rule)).collect();
        assert_eq!(rules, vec![(1, "invalid_string"), (4, "corrupt_record"), (5, "corrupt_record")]);
        assert_eq!(bad[0].raw, text.lines().next().expect("line 1"), "kept exactly");
        assert!(bad[0].message.contains("`region`"), "{}", bad[0].message);
        assert_eq!((bad[1].raw.as_str(), bad[2].raw.as_str()), ("not json", "also not json"));
        let c = &chunks[0];
        assert_eq!(c.lines, vec![2, 3]);
        assert_eq!((c.fields[0].text(0), c.fields[0].text(1)), ("eu-é", "x"));
    }
}
