//! CSV batches: a CSV source's file lands in bronze as its own text, gzipped, and is read back
//! by a CSV parser into the raw columns silver validates.
//!
//! ```text
//! landing file ──UTF-8──▶ bronze/<source>/<date>/<batch_id>.csv.gz
//!                          gzip header, extra subfield `MD`: the batch's provenance and dialect
//! batch ──inflate──▶ text cut at record ends (quote-aware) ──workers: csv parser──▶ RawChunk
//! ```
//!
//! Landing a CSV file as NDJSON cost a JSON object per row and five times the bytes to gzip
//! (issue 20). The text is kept instead: immutable, complete (every byte of the file, a header
//! and skipped lines included), and self-describing: every record's `_batch_id`, `_ingested_at`
//! and `_source` are the header's, and each record's `_line` is where it starts in the text.
//! `zcat` gives back the file; a dead-letter row still holds its record as the JSON object the
//! NDJSON landing would have written, so replay reads it as before.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::BufRead;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::decode::{BadLine, Kind, Limits, RawChunk, RawField, RunField};
use super::ingest::{CsvOptions, Encoding};
use super::{BATCH_ID, CORRUPT_RECORD, INGESTED_AT, LINE, SOURCE};

/// Gzip extra subfield id of a CSV batch's description.
const SUBFIELD: [u8; 2] = *b"MD";

/// What a CSV batch's gzip header says about it: provenance of every record, and how to read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvBatch {
    /// Layout version of the description.
    pub version: u32,
    /// Provenance of every record.
    #[serde(rename = "_batch_id")]
    pub batch_id: String,
    /// Provenance of every record.
    #[serde(rename = "_ingested_at")]
    pub ingested_at: String,
    /// Provenance of every record.
    #[serde(rename = "_source")]
    pub source: String,
    /// The dialect the file was landed with (a later change of the source's settings does not
    /// change how a landed batch reads).
    pub dialect: Dialect,
}

/// A CSV dialect as stored (characters rather than bytes, for people reading it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialect {
    /// Field delimiter.
    pub delimiter: char,
    /// Quote character.
    pub quote: char,
    /// Escape character inside quotes (none: quotes are doubled).
    pub escape: Option<char>,
    /// Whether the first record (after `skip_rows` lines) names the columns.
    pub header: bool,
    /// Column names when there is no header.
    pub column_names: Vec<String>,
    /// Lines before the header or first record.
    pub skip_rows: usize,
}

/// How a source reads its CSV text now, for batches landed before a correction: text that is
/// not UTF-8 reads in its declared `encoding`, and a batch whose header its current dialect splits
/// into more of the wanted fields than the dialect it was landed with reads in the current one
/// (a delimiter declared after the first files landed with the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvSource {
    /// The source's dialect (None: not a CSV source).
    pub dialect: Option<Dialect>,
    /// The source's declared encoding.
    pub encoding: Encoding,
}

impl Dialect {
    /// The stored form of `opts`.
    pub fn of(opts: &CsvOptions) -> Dialect {
        Dialect {
            delimiter: char::from(opts.delimiter),
            quote: char::from(opts.quote),
            escape: opts.escape.map(char::from),
            header: opts.header,
            column_names: opts.column_names.clone(),
            skip_rows: opts.skip_rows,
        }
    }

    /// The options it was made from (a character outside Latin-1 reads as `,`/`"`).
    pub fn options(&self) -> CsvOptions {
        let byte = |c: char, or: u8| u8::try_from(u32::from(c)).unwrap_or(or);
        CsvOptions {
            delimiter: byte(self.delimiter, b','),
            quote: byte(self.quote, b'"'),
            escape: self.escape.map(|c| byte(c, b'\\')),
            header: self.header,
            column_names: self.column_names.clone(),
            skip_rows: self.skip_rows,
        }
    }
}

impl CsvBatch {
    /// How a CSV batch without a description (written by another tool in bronze's layout) reads:
    /// the default dialect, the provenance its path and listing give.
    pub fn undescribed(batch_id: &str, source: &str, ingested_at: Option<&str>) -> CsvBatch {
        CsvBatch {
            version: 1,
            batch_id: batch_id.to_string(),
            ingested_at: ingested_at.unwrap_or_default().to_string(),
            source: source.to_string(),
            dialect: Dialect::of(&CsvOptions::default()),
        }
    }

    /// The gzip header's extra field carrying this description, or None when it does not fit
    /// (a gzip extra field holds 64 KiB: thousands of configured column names); such a file
    /// lands as NDJSON.
    pub fn gzip_extra(&self) -> Option<Vec<u8>> {
        let json = serde_json::to_vec(self).ok()?;
        let len = u16::try_from(json.len()).ok().filter(|&l| usize::from(l) + 4 <= usize::from(u16::MAX))?;
        let mut extra = Vec::with_capacity(json.len() + 4);
        extra.extend_from_slice(&SUBFIELD);
        extra.extend_from_slice(&len.to_le_bytes());
        extra.extend_from_slice(&json);
        Some(extra)
    }

    /// The description in the gzip header at the start of `gz`, if it has one.
    pub fn from_gzip(gz: &[u8]) -> Option<CsvBatch> {
        const FEXTRA: u8 = 4;
        if gz.len() < 12 || gz[..2] != [0x1f, 0x8b] || gz[3] & FEXTRA == 0 {
            return None;
        }
        let xlen = usize::from(u16::from_le_bytes([gz[10], gz[11]]));
        let mut extra = gz.get(12..12 + xlen)?;
        while extra.len() >= 4 {
            let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
            let data = extra.get(4..4 + len)?;
            if extra[..2] == SUBFIELD {
                return serde_json::from_slice(data).ok();
            }
            extra = &extra[4 + len..];
        }
        None
    }
}

/// The provenance members of a record's JSON object, as NDJSON landing appends them.
pub(crate) fn provenance_members(batch_id: &str, ingested_at: &str, source: &str) -> String {
    format!(
        "\"{BATCH_ID}\": {}, \"{INGESTED_AT}\": {}, \"{SOURCE}\": {}",
        json_string(batch_id),
        json_string(ingested_at),
        json_string(source)
    )
}

/// `s` as a JSON string.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Appends one CSV record as a JSON object of strings (an empty cell is null) ending with its
/// `_line`, without the closing brace. `keys` holds each column's `"name": ` (escaped once); the
/// cells of a longer row are named `_extra_<i>` (header) or `column<i+1>`.
pub(crate) fn push_csv_object(out: &mut String, keys: &[String], header: bool, row: &csv::ByteRecord, line: u64) {
    out.push('{');
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match keys.get(i) {
            Some(key) => out.push_str(key),
            None => out.push_str(&key_json(&extra_name(header, i))),
        }
        // CSV cannot tell an empty value from a missing one: an empty cell is null.
        if value.is_empty() {
            out.push_str("null");
        } else {
            push_json_string(out, value);
        }
    }
    if !row.is_empty() {
        out.push_str(", ");
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "\"{LINE}\": {line}");
}

/// `"name": ` as JSON.
pub(crate) fn key_json(name: &str) -> String {
    format!("{}: ", json_string(name))
}

/// The name of column `i` past the named ones.
fn extra_name(header: bool, i: usize) -> String {
    if header { format!("_extra_{i}") } else { format!("column{}", i + 1) }
}

/// Appends `value` as a JSON string (invalid UTF-8 replaced): copied as it is when nothing in it
/// needs escaping, the common case.
pub(crate) fn push_json_string(out: &mut String, value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&json_string(&text));
    } else {
        out.push('"');
        out.push_str(&text);
        out.push('"');
    }
}

/// A csv reader over `bytes` in `opts`' dialect, every record as data.
fn csv_reader<R: std::io::Read>(opts: &CsvOptions, from: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .escape(opts.escape)
        .double_quote(opts.escape.is_none())
        .from_reader(from)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a record or field.
    FieldStart,
    /// Inside a field that did not start with a quote (a quote there is a character).
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first of a doubled quote.
    QuoteInQuoted,
    /// After the escape character inside a quoted field.
    Escaped,
}

/// Finds record ends in CSV text without parsing fields: the states of the csv crate's parser
/// (csv-core) that decide where a record ends, so text cut after a newline it reports parses
/// the same as the whole. Counts records as the parser yields them (blank lines are none).
#[derive(Debug, Clone)]
pub(crate) struct RecordEnds {
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    double_quote: bool,
    state: State,
    /// Whether the record being read has a byte yet.
    started: bool,
    /// Records ended so far.
    ended: u64,
}

impl RecordEnds {
    pub(crate) fn new(opts: &CsvOptions) -> Self {
        RecordEnds {
            delimiter: opts.delimiter,
            quote: opts.quote,
            escape: opts.escape,
            double_quote: opts.escape.is_none(),
            state: State::FieldStart,
            started: false,
            ended: 0,
        }
    }

    /// Records in the text scanned, an unterminated last one included.
    pub(crate) fn records(&self) -> u64 {
        self.ended + u64::from(self.started)
    }

    /// Whether the text scanned ends inside a quoted field: read to its end, the last record's
    /// field was never closed.
    pub(crate) fn in_quotes(&self) -> bool {
        matches!(self.state, State::Quoted | State::Escaped)
    }

    /// Whether the text scanned is one record whose quoted field is never closed (read to its
    /// end, no record ended): a header that would take the whole file as its names.
    fn never_closed_from_start(&self) -> bool {
        self.ended == 0 && self.in_quotes()
    }

    /// Scans the next `bytes` of the text: the offset just past the last `\n` in them that is
    /// not inside a quoted field, if any.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let quoted = matches!(self.state, State::Quoted | State::QuoteInQuoted | State::Escaped);
        if !quoted && memchr::memchr(self.quote, bytes).is_none() {
            return self.scan_unquoted(bytes);
        }
        let mut last = None;
        for (i, &b) in bytes.iter().enumerate() {
            if self.step(b) {
                last = Some(i + 1);
            }
        }
        last
    }

    /// Scans `bytes` up to the first `\n` ending a record: the offset past it, if any (the rest
    /// is not scanned).
    fn first_end(&mut self, bytes: &[u8]) -> Option<usize> {
        bytes.iter().position(|&b| self.step(b)).map(|i| i + 1)
    }

    /// [`RecordEnds::scan`] of text with no quote, outside a quoted field: only line ends matter.
    fn scan_unquoted(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut last = None;
        let mut from = 0;
        for i in memchr::memchr2_iter(b'\n', b'\r', bytes) {
            if i > from || self.started {
                self.ended += 1;
            }
            self.started = false;
            if bytes[i] == b'\n' {
                last = Some(i + 1);
            }
            from = i + 1;
        }
        match bytes[from..].last() {
            Some(&b) => {
                self.started = true;
                self.state = if b == self.delimiter { State::FieldStart } else { State::Unquoted };
            }
            None if from > 0 => self.state = State::FieldStart,
            None => {}
        }
        last
    }

    /// One byte: whether it is a `\n` ending a record (or a blank line).
    fn step(&mut self, b: u8) -> bool {
        match self.state {
            State::Quoted => {
                if b == self.quote {
                    self.state = State::QuoteInQuoted;
                } else if Some(b) == self.escape {
                    self.state = State::Escaped;
                }
                return false;
            }
            State::Escaped => {
                self.state = State::Quoted;
                return false;
            }
            State::QuoteInQuoted if b == self.quote && self.double_quote => {
                self.state = State::Quoted;
                return false;
            }
            _ => {}
        }
        if b == b'\n' || b == b'\r' {
            if self.started {
                self.ended += 1;
                self.started = false;
            }
            self.state = State::FieldStart;
            return b == b'\n';
        }
        self.started = true;
        self.state = if b == self.delimiter {
            State::FieldStart
        } else if b == self.quote && self.state == State::FieldStart {
            State::Quoted
        } else {
            State::Unquoted
        };
        false
    }
}

/// Records of a CSV text (UTF-8, skipped lines and header included) as the NDJSON landing counted
/// them.
pub(crate) fn count_records(opts: &CsvOptions, text: &mut impl BufRead) -> std::io::Result<u64> {
    let mut line = Vec::new();
    for _ in 0..opts.skip_rows {
        line.clear();
        if text.read_until(b'\n', &mut line)? == 0 {
            return Ok(0);
        }
    }
    let mut ends = RecordEnds::new(opts);
    loop {
        let buf = match text.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        ends.scan(buf);
        let n = buf.len();
        text.consume(n);
    }
    // A header whose quoted field is never closed is the file's one record, read as unclosed.
    let header = opts.header && !ends.never_closed_from_start();
    Ok(ends.records().saturating_sub(u64::from(header)))
}

/// How the rows of one CSV batch read: its dialect, column names and which column each wanted
/// field is.
#[derive(Debug)]
pub(crate) struct CsvLayout {
    /// The provenance members every record's dead-letter text ends with (built once).
    provenance: String,
    opts: CsvOptions,
    /// Column names, the header's or the configured ones.
    names: Vec<String>,
    /// `"name": ` of each column, for dead-letter records.
    keys: Vec<String>,
    /// Per wanted field: its column (the last of that name).
    wanted: Vec<Column>,
    /// Whether a column is wanted, by index (longer rows: past it, `_extra_<i>` names).
    is_wanted: Vec<bool>,
    /// A parser for single records, built once: building one costs a DFA (tens of microseconds,
    /// which per rejected row was a quarter of a run), and csv-core 0.1.13's `Clone` of a reader
    /// loses its DFA's final states (a clone ends a record after one byte), so it is shared.
    record_parser: std::sync::Mutex<csv_core::Reader>,
    /// The source's declared encoding, for text that is not UTF-8: a file landed before the
    /// source declared it keeps its bytes in bronze, and is read in it once declared.
    encoding: Encoding,
}

#[derive(Debug, Clone, Copy)]
enum Column {
    At(usize),
    Absent,
}

impl CsvLayout {
    /// How many wanted fields the header names.
    pub(crate) fn found(&self) -> usize {
        self.wanted.iter().filter(|c| matches!(c, Column::At(i) if *i < self.names.len())).count()
    }

    fn new(batch: CsvBatch, names: Vec<String>, wanted: &[String], encoding: Encoding) -> Self {
        let opts = batch.dialect.options();
        // Provenance names are the tool's (as in an NDJSON record, where they follow the
        // file's columns and win): never a field of the file, wanted or other.
        let reserved = [BATCH_ID, INGESTED_AT, SOURCE, CORRUPT_RECORD, LINE];
        let mut is_wanted: Vec<bool> =
            names.iter().map(|n| reserved.contains(&n.as_str()) || wanted.contains(n)).collect();
        let wanted = wanted
            .iter()
            .map(|w| {
                if reserved.contains(&w.as_str()) {
                    return Column::Absent;
                }
                if let Some(i) = names.iter().rposition(|n| n == w) {
                    return Column::At(i);
                }
                let past = |prefix: &str, shift: usize| {
                    w.strip_prefix(prefix).and_then(|i| i.parse::<usize>().ok()).and_then(|i| i.checked_sub(shift))
                };
                let extra = if opts.header { past("_extra_", 0) } else { past("column", 1) };
                match extra.filter(|&i| i >= names.len()) {
                    Some(i) => {
                        if i >= is_wanted.len() {
                            is_wanted.resize(i + 1, false);
                        }
                        is_wanted[i] = true;
                        Column::At(i)
                    }
                    None => Column::Absent,
                }
            })
            .collect();
        let keys = names.iter().map(|n| key_json(n)).collect();
        let record_parser = csv_core::ReaderBuilder::new()
            .delimiter(opts.delimiter)
            .quote(opts.quote)
            .escape(opts.escape)
            .double_quote(opts.escape.is_none())
            .build();
        let record_parser = std::sync::Mutex::new(record_parser);
        let provenance = provenance_members(&batch.batch_id, &batch.ingested_at, &batch.source);
        CsvLayout { provenance, opts, names, keys, wanted, is_wanted, record_parser, encoding }
    }

    /// A record's dead-letter text: the JSON object NDJSON landing made of it, with provenance.
    pub(crate) fn record_json(&self, record: &str, line: u64) -> String {
        let row = self.fields(record.as_bytes());
        let mut out = String::with_capacity(record.len() * 2 + 128);
        push_csv_object(&mut out, &self.keys, self.opts.header, &row, line);
        out.push_str(", ");
        out.push_str(&self.provenance);
        out.push('}');
        out
    }

    /// The fields of one record's text.
    fn fields(&self, record: &[u8]) -> csv::ByteRecord {
        let mut parser = match self.record_parser.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        parser.reset();
        // A record's fields are never longer than its text.
        let mut out = vec![0u8; record.len()];
        let mut ends = vec![0usize; record.len() + 1];
        let (result, _, mut written, mut fields) = parser.read_record(record, &mut out, &mut ends);
        if result != csv_core::ReadRecordResult::Record {
            // The text ends the record (it has no line end): say so.
            let (_, _, w, f) = parser.read_record(&[], &mut out[written..], &mut ends[fields..]);
            (written, fields) = (written + w, fields + f);
        }
        let mut row = csv::ByteRecord::with_capacity(written, fields);
        let mut start = 0;
        for &end in &ends[..fields] {
            row.push_field(&out[start..end]);
            start = end;
        }
        row
    }

    /// The name of column `i`.
    fn name(&self, i: usize) -> Cow<'_, str> {
        match self.names.get(i) {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(extra_name(self.opts.header, i)),
        }
    }
}

/// CSV text of one chunk, cut after a record's end, not parsed yet.
pub(crate) struct CsvText {
    text: Vec<u8>,
    /// Where its records start (past the header in the first chunk).
    start: usize,
    /// Lines of the file before the text.
    lines_before: u64,
    /// Whether the text ends the file inside a quoted field (its last record is never closed).
    unclosed: bool,
}

/// Reads a CSV batch's header (after its skipped lines): the batch's layout for `wanted`, and the
/// text read past it, which [`split_csv`] goes on from. A batch without a description (written by
/// another tool in bronze's layout) reads in the default dialect with the origin's provenance.
pub(crate) fn read_layout(
    reader: &mut impl BufRead,
    batch: CsvBatch,
    wanted: &[String],
    encoding: Encoding,
) -> std::io::Result<(Arc<CsvLayout>, CsvText)> {
    let opts = batch.dialect.options();
    let mut lines_before = 0;
    let mut line = Vec::new();
    for _ in 0..opts.skip_rows {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        lines_before += 1;
    }
    let mut text = Vec::new();
    let mut start = 0;
    let names = if opts.header {
        // Up to the first record's end: blank lines before it are skipped, as the parser does.
        let mut ends = RecordEnds::new(&opts);
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let cut = ends.scan(buf);
            text.extend_from_slice(buf);
            let n = buf.len();
            reader.consume(n);
            if cut.is_some() && ends.ended > 0 {
                break;
            }
        }
        if ends.never_closed_from_start() {
            // The header's quoted field is never closed: the whole text would be its names. It is
            // read as a record instead, which `split_csv` finds unclosed (a dead letter).
            Vec::new()
        } else {
            let mut rdr = csv_reader(&opts, &text[..]);
            let mut row = csv::ByteRecord::new();
            match rdr.read_byte_record(&mut row) {
                Ok(true) => {
                    start = usize::try_from(rdr.position().byte()).unwrap_or(text.len()).min(text.len());
                    row.iter()
                        .map(|f| match std::str::from_utf8(f) {
                            Ok(name) => name.trim().to_string(),
                            Err(_) => encoding.text(f).trim().to_string(),
                        })
                        .collect()
                }
                _ => {
                    start = text.len();
                    Vec::new()
                }
            }
        }
    } else {
        opts.column_names.clone()
    };
    let layout = Arc::new(CsvLayout::new(batch, names, wanted, encoding));
    Ok((layout, CsvText { text, start, lines_before, unclosed: false }))
}

/// Stage 1 for CSV: reads (inflating) and cuts the text after the header into chunks ending at a
/// record's end, about `limits.chunk_lines` records or `limits.chunk_bytes` bytes each, handed to
/// `on_text`. A record longer than `limits.max_line` (an unclosed quote makes the rest of a file
/// one record) is not held: its start is a `line_too_long` bad line. Returns the records that
/// could not be read (over-long, cut off by a decompression error, the unreadable rest).
pub(crate) fn split_csv(
    mut reader: impl BufRead,
    layout: &CsvLayout,
    first: CsvText,
    limits: Limits,
    mut on_text: impl FnMut(CsvText) -> crate::Result<()>,
) -> crate::Result<Vec<BadLine>> {
    let mut bad = Vec::new();
    let mut ends = RecordEnds::new(&layout.opts);
    let CsvText { text: mut chunk, mut start, mut lines_before, .. } = first;
    // Records of the first chunk's header are not counted: its text past the header is scanned.
    let mut boundary = ends.scan(&chunk[start..]).map(|b| start + b);
    let mut at_chunk = 0;
    // An over-long record being skipped: (its first line, bytes, kept start).
    let mut skipping: Option<(u64, u64, Vec<u8>)> = None;
    let cut = |chunk: &mut Vec<u8>, at: usize, start: &mut usize, lines_before: &mut u64| {
        let rest = chunk.split_off(at);
        let text = std::mem::replace(chunk, rest);
        let newlines = memchr::memchr_iter(b'\n', &text).count() as u64;
        let done = CsvText { text, start: *start, lines_before: *lines_before, unclosed: false };
        *start = 0;
        *lines_before += newlines;
        done
    };
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Some(b) = boundary {
                    on_text(cut(&mut chunk, b, &mut start, &mut lines_before))?;
                }
                let line = lines_before + 1;
                let tail = &chunk[start..];
                if !tail.is_empty() {
                    bad.push(BadLine {
                        line,
                        raw: String::from_utf8_lossy(tail).into_owned(),
                        rule: "truncated_line",
                        message: format!("the record at line {line} is cut off by a decompression error"),
                    });
                }
                let after = lines_before + memchr::memchr_iter(b'\n', tail).count() as u64;
                bad.push(BadLine {
                    line: after + 1,
                    raw: String::new(),
                    rule: "unreadable_file",
                    message: format!("gzip stream unreadable after line {after}: {e}; the rest of the file is lost"),
                });
                return Ok(bad);
            }
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        if let Some((line, len, kept)) = &mut skipping {
            // Skipping an over-long record to its end; what follows it starts the next chunk.
            match ends.first_end(buf) {
                Some(end) => {
                    *len += end as u64;
                    lines_before += memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
                    bad.push(too_long(*line, *len, kept, limits));
                    boundary = ends.scan(&buf[end..]);
                    chunk.extend_from_slice(&buf[end..]);
                    skipping = None;
                }
                None => *len += n as u64,
            }
            reader.consume(n);
            continue;
        }
        let base = chunk.len();
        if let Some(b) = ends.scan(buf) {
            boundary = Some(base + b);
        }
        chunk.extend_from_slice(buf);
        reader.consume(n);
        if let Some(b) = boundary
            && (ends.ended - at_chunk >= limits.chunk_lines as u64 || chunk.len() >= limits.chunk_bytes)
        {
            on_text(cut(&mut chunk, b, &mut start, &mut lines_before))?;
            boundary = None;
            at_chunk = ends.ended;
        }
        let open = boundary.unwrap_or(start);
        if chunk.len() - open > limits.max_line {
            if open > start {
                on_text(cut(&mut chunk, open, &mut start, &mut lines_before))?;
            }
            let tail = std::mem::take(&mut chunk);
            let tail = &tail[start..];
            // Newlines inside the record count as lines of the file all the same.
            let line = lines_before + 1;
            lines_before += memchr::memchr_iter(b'\n', tail).count() as u64;
            skipping = Some((line, tail.len() as u64, tail[..tail.len().min(limits.long_line_kept)].to_vec()));
            (start, boundary) = (0, None);
        }
    }
    if let Some((line, len, kept)) = skipping {
        bad.push(too_long(line, len, &kept, limits));
    } else if chunk.len() > start {
        let end = chunk.len();
        let last = cut(&mut chunk, end, &mut start, &mut lines_before);
        on_text(CsvText { unclosed: ends.in_quotes(), ..last })?;
    }
    Ok(bad)
}

fn too_long(line: u64, len: u64, kept: &[u8], limits: Limits) -> BadLine {
    BadLine {
        line,
        raw: String::from_utf8_lossy(kept).into_owned(),
        rule: "line_too_long",
        message: format!(
            "the record at line {line} is {len} bytes, over the {} decoded per record (an unclosed quote?); its first {} bytes are kept here, all of it in bronze",
            limits.max_line,
            kept.len()
        ),
    }
}

/// The last record of a file, whose quoted field is never closed: read as the parser reads it, every
/// line after its start would be one field of it, and the records there would vanish into it.
fn unclosed_quote(line: u64, record: &str) -> BadLine {
    let after = memchr::memchr_iter(b'\n', record.as_bytes()).count();
    BadLine {
        line,
        raw: record.to_string(),
        rule: "unclosed_quote",
        message: format!(
            "the record at line {line} opens a quoted field that is never closed: it would run to the end of the file ({after} more line(s) read as one field); the file is cut short, or a quote in it is not doubled: land the corrected file"
        ),
    }
}

/// A record holding bytes that are not UTF-8: `at` is the first one's offset in it.
fn not_utf8(line: u64, at: usize, record: &[u8]) -> BadLine {
    BadLine {
        line,
        raw: String::from_utf8_lossy(record).into_owned(),
        rule: "invalid_utf8",
        message: format!(
            "invalid UTF-8 at byte {at} of line {line}: the file is not UTF-8 text (a Latin-1 or Windows-1252 export?): set `encoding` on its source, then `medallion rebuild`"
        ),
    }
}

/// A chunk's bytes as text, with where its records start (`start` in the bytes) in it: text that
/// is not UTF-8 is read in `encoding` when the source declares one, else each run of bytes that
/// are not UTF-8 is replaced by U+FFFD, and where each replacement is in the text (ascending) is
/// returned too.
fn as_text(bytes: Vec<u8>, start: usize, encoding: Encoding) -> (String, usize, Vec<usize>) {
    let bytes = match String::from_utf8(bytes) {
        Ok(text) => return (text, start, Vec::new()),
        Err(e) => e.into_bytes(),
    };
    let (head, rest) = bytes.split_at(start.min(bytes.len()));
    if encoding != Encoding::Utf8 {
        let head = encoding.text(head);
        let start = head.len();
        return (head + &encoding.text(rest), start, Vec::new());
    }
    let mut text = String::from_utf8_lossy(head).into_owned();
    let start = text.len();
    let mut at = Vec::new();
    for chunk in rest.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            at.push(text.len());
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    (text, start, at)
}

/// Stage 2 for CSV: the rows of a chunk of text, by wanted field; a record longer than
/// `limits.max_line`, or holding bytes that are not UTF-8, is a bad line instead.
pub(crate) fn parse_csv(
    layout: &Arc<CsvLayout>,
    chunk: CsvText,
    wanted: usize,
    limits: Limits,
    bad: &mut Vec<BadLine>,
) -> RawChunk {
    let CsvText { text, start, lines_before, unclosed } = chunk;
    let (text, start, invalid) = as_text(text, start, layout.encoding);
    let mut invalid = invalid.into_iter().peekable();
    let bytes = text.as_bytes();
    let rows_guess = memchr::memchr_iter(b'\n', &bytes[start.min(bytes.len())..]).count() + 1;
    // Each field's text starts at its share of the chunk's: at most one copy to grow.
    let share = bytes.len().saturating_sub(start) / layout.names.len().max(1);
    let mut fields: Vec<RawField> = (0..wanted)
        .map(|_| {
            let mut f = RawField::with_capacity(rows_guess);
            f.data.reserve(share);
            f
        })
        .collect();
    let mut provenance: [RunField; 3] = Default::default();
    let mut lines = Vec::with_capacity(rows_guess);
    let mut spans = Vec::with_capacity(rows_guess);
    // Kinds seen per column not wanted: [string, null].
    let mut others: Vec<[bool; 2]> = Vec::new();
    let mut newlines = memchr::memchr_iter(b'\n', bytes).peekable();
    let mut passed: u64 = 0;
    let mut rdr = csv_reader(&layout.opts, &bytes[start.min(bytes.len())..]);
    let mut row = csv::ByteRecord::new();
    // The parser reads only bytes: a read error cannot happen, a record always parses.
    while let Ok(true) = rdr.read_byte_record(&mut row) {
        let at = start + row.position().map_or(0, |p| usize::try_from(p.byte()).unwrap_or(0));
        let end = (start + usize::try_from(rdr.position().byte()).unwrap_or(0)).min(bytes.len());
        // A newline at the record's start ends the line before it (after a CRLF the parser
        // starts the next record at its `\n`).
        while newlines.next_if(|&p| p <= at).is_some() {
            passed += 1;
        }
        let line = lines_before + 1 + passed;
        let record = trim_line_ends(at..end, bytes);
        // Bytes that are not UTF-8 (a Latin-1 export read as UTF-8): never silently replaced.
        while invalid.next_if(|&p| p < record.start).is_some() {}
        if let Some(&p) = invalid.peek().filter(|&&p| p < record.end) {
            bad.push(not_utf8(line, p - record.start, &bytes[record.clone()]));
            continue;
        }
        if record.len() > limits.max_line {
            let kept = &bytes[record.start..record.start + limits.long_line_kept.min(record.len())];
            bad.push(too_long(line, record.len() as u64, kept, limits));
            continue;
        }
        if unclosed && end == bytes.len() {
            bad.push(unclosed_quote(line, &text[record]));
            continue;
        }
        for (field, column) in fields.iter_mut().zip(&layout.wanted) {
            match *column {
                Column::At(i) => match row.get(i) {
                    None => field.push(Kind::Missing, ""),
                    Some([]) => field.push(Kind::Null, ""),
                    Some(v) => match std::str::from_utf8(v) {
                        Ok(s) => field.push(Kind::String, s),
                        Err(_) => field.push(Kind::String, &String::from_utf8_lossy(v)),
                    },
                },
                Column::Absent => field.push(Kind::Missing, ""),
            }
        }
        for p in &mut provenance {
            p.push(Kind::Missing, "");
        }
        for (i, v) in row.iter().enumerate() {
            if layout.is_wanted.get(i).copied().unwrap_or(false) {
                continue;
            }
            if i >= others.len() {
                others.resize(i + 1, [false; 2]);
            }
            others[i][usize::from(v.is_empty())] = true;
        }
        lines.push(line);
        spans.push(u32::try_from(record.start).unwrap_or(u32::MAX)..u32::try_from(record.end).unwrap_or(u32::MAX));
    }
    let mut other_keys = Vec::new();
    for (i, seen) in others.iter().enumerate() {
        if layout.is_wanted.get(i).copied().unwrap_or(false) {
            continue;
        }
        let name = layout.name(i);
        for (kind, _) in [Kind::String, Kind::Null].into_iter().zip(seen).filter(|(_, s)| **s) {
            other_keys.push((name.to_string(), kind));
        }
    }
    RawChunk { fields, provenance, lines, text, spans, other_keys, csv: Some(Arc::clone(layout)) }
}

/// `span` without the line ends around it.
fn trim_line_ends(span: Range<usize>, bytes: &[u8]) -> Range<usize> {
    let (mut s, mut e) = (span.start, span.end);
    while s < e && matches!(bytes[s], b'\r' | b'\n') {
        s += 1;
    }
    while e > s && matches!(bytes[e - 1], b'\r' | b'\n') {
        e -= 1;
    }
    s..e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CsvOptions {
        CsvOptions::default()
    }

    /// Records and their start offsets as the csv crate reads the whole text.
    fn parsed(opts: &CsvOptions, text: &[u8]) -> Vec<(usize, Vec<Vec<u8>>)> {
        let mut rdr = csv_reader(opts, text);
        let mut row = csv::ByteRecord::new();
        let mut out = Vec::new();
        while let Ok(true) = rdr.read_byte_record(&mut row) {
            let at = usize::try_from(row.position().map_or(0, |p| p.byte())).unwrap_or(0);
            out.push((at, row.iter().map(<[u8]>::to_vec).collect()));
        }
        out
    }

    const TRICKY: &[&[u8]] = &[
        b"a,b\n1,2\n",
        b"a,b\r\n1,2\r\n\r\n3,4",
        b"a,b\n\"x\ny\",2\n3,\"q\"\"\n\"\"\"\n",
        b"a,b\n1,x\"y\n2,\"z\",w\n",
        b"a,b\r1,2\r3,4\n\n\n5,6",
        b"a,b\n\"unclosed,1\n2,3\n",
        b"\n\na,b\n,\n\"\",\"\"\n",
        b"a;b\n\"1;2\";3\n",
    ];

    #[test]
    fn record_ends_count_and_cut_where_the_parser_does() {
        for (opts, texts) in [
            (opts(), TRICKY),
            (CsvOptions { escape: Some(b'\\'), ..opts() }, &[b"a,b\n\"x\\\"\ny\",2\n\"\\\\\",3\n" as &[u8]][..]),
            (CsvOptions { delimiter: b';', ..opts() }, &TRICKY[7..]),
        ] {
            for text in texts {
                let whole = parsed(&opts, text);
                for split in 0..=text.len() {
                    let mut ends = RecordEnds::new(&opts);
                    let mut cuts = Vec::new();
                    for (base, part) in [(0, &text[..split]), (split, &text[split..])] {
                        if let Some(c) = ends.scan(part) {
                            cuts.push(base + c);
                        }
                    }
                    assert_eq!(
                        ends.records(),
                        whole.len() as u64,
                        "{:?} split at {split}",
                        String::from_utf8_lossy(text)
                    );
                    // The text parsed in two pieces at a cut gives the whole parse's records.
                    let fields = |t: &[u8]| parsed(&opts, t).into_iter().map(|r| r.1).collect::<Vec<_>>();
                    for c in cuts {
                        let pieces = [fields(&text[..c]), fields(&text[c..])].concat();
                        assert_eq!(pieces, fields(text), "{:?} cut at {c}", String::from_utf8_lossy(text));
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_description_round_trips_through_the_gzip_header() {
        use std::io::{Read, Write};

        let batch = CsvBatch {
            version: 1,
            batch_id: "b1".into(),
            ingested_at: "2026-12-01T00:00:00.000000+00:00".into(),
            source: "people".into(),
            dialect: Dialect::of(&CsvOptions { delimiter: b';', escape: Some(b'\\'), skip_rows: 2, ..opts() }),
        };
        let extra = batch.gzip_extra().expect("fits");
        let mut gz = flate2::GzBuilder::new().extra(extra).write(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"a;b\n1;2\n").expect("gz");
        let gz = gz.finish().expect("gz");
        assert_eq!(CsvBatch::from_gzip(&gz), Some(batch.clone()));
        assert_eq!(batch.dialect.options().delimiter, b';');
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).expect("plain gzip");
        assert_eq!(text, "a;b\n1;2\n");
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        plain.write_all(b"x").expect("gz");
        assert_eq!(CsvBatch::from_gzip(&plain.finish().expect("gz")), None);
        let huge = CsvBatch {
            dialect: Dialect { column_names: vec!["c".repeat(100); 1000], ..batch.dialect.clone() },
            ..batch
        };
        assert!(huge.gzip_extra().is_none());
    }
}
