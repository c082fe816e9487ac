//! Data files as a new project (`medallion import files FILE... DIR`): per file, a source landing
//! it from `landing/` and a silver table whose contract is inferred from its records, so a user's
//! own CSV or NDJSON runs in one command and the contract is there to read and edit.
//!
//! Inference reads the first [`SAMPLE`] records:
//! - **Types**: a CSV cell or JSON string as dbt's seed inference reads text (integer, number,
//!   `%Y-%m-%d` date, datetime, `true`/`false`, else string), the first that reads [`MAJORITY`]
//!   of the column's values (the others go to the dead letter, and a note says so); JSON numbers
//!   and booleans as such. A field mixing JSON types no column type reads is left out with a note.
//!   Text none of those read may be numbers or dates written otherwise: the `format` reading the
//!   most of them, 99% at least ([`formats::guess`]), is the column's.
//! - **Nulls**: an empty CSV cell and JSON `null` are null. A text exports write for a missing
//!   value (`NA`, `N/A`, `NULL`, …: [`is_common_null_marker`]) in a column whose other values are numbers,
//!   dates or booleans becomes that column's `null_values`; in a string column it stays a value
//!   (`NA` may be North America).
//! - **Key**: a name that says so (`id`, `…_id`, `…_nr`, `…_no`: [`KEY_NAMES`]) that nearly every record carries, nearly always
//!   distinct ([`key_of`]); else the first column whose values are distinct and present; with
//!   none, every column (identical records are kept once). A note says which.
//! - Every column but the key is optional: a value missing later is null, not a rejected record.
//!
//! A value a later record carries that the inferred type cannot read is a dead-letter record with
//! its reason, never lost; widening the type is a contract change (`medallion rebuild`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use serde_json::value::RawValue;

use super::seed;
use super::{GITIGNORE, Imported, key, make_parent, quote, write_file};
use crate::bronze::ingest::Encoding;
use crate::error::{Error, Result};
use crate::silver::coerce::{is_common_null_marker, reads_as};
use crate::silver::formats;
use crate::silver::paths::Members;
use crate::spec::ColumnType;

/// Records read to infer a contract.
pub const SAMPLE: usize = 100_000;

/// A file's format, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv { delimiter: u8 },
    Ndjson,
}

/// Share of a column's sampled values its type must read: the rest (a few `C-1234` among
/// numeric ids) go to the dead letter with their reason rather than make the column a string.
const MAJORITY: f64 = 0.99;

/// One inferred column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// The contract's name for it: `field` in lower snake case ([`column_names`]).
    name: String,
    /// The raw field (CSV header, JSON key) it reads.
    field: String,
    ty: String,
    /// Markers read as null in this column.
    null_values: BTreeSet<String>,
    /// Sampled records, and those with a value (not null, not a marker).
    records: usize,
    present: usize,
    /// Distinct values among the present ones.
    distinct: usize,
    /// Values the type does not read: how many, and the first.
    outliers: (usize, Option<String>),
    /// How its values are written, when the defaults do not read them (`%d/%m/%Y`, `1.234,56`).
    format: Option<String>,
    /// Whether that format was a guess between two that read every value (day and month).
    ambiguous: bool,
}

impl Column {
    /// Whether every sampled record has a value, each a different one.
    fn unique(&self) -> bool {
        self.records > 0 && self.present == self.records && self.distinct == self.present
    }
}

/// Writes a project in `to` for `files`: each copied to `to/landing/`, with its source and silver
/// table. `to` must not hold a project.
pub fn import(files: &[PathBuf], to: &Path) -> Result<Imported> {
    let main = to.join(crate::spec::PROJECT_FILE);
    if main.exists() {
        return Err(Error::ProjectExists { path: main });
    }
    let mut out = Imported::default();
    let name = to.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = name.or_else(|| to.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or("data".into());
    let mut toml = format!("[project]\nname = {}\nlake = \"./lake\"\n", quote(&name));
    let mut names = BTreeSet::new();
    let mut written: Vec<(PathBuf, PathBuf)> = Vec::new();
    for file in files {
        let shown = PathBuf::from(file.file_name().unwrap_or(file.as_os_str()));
        let (format, stem) = match format_of(file) {
            Ok(f) => f,
            Err(why) => {
                out.untranslated.push((shown, why));
                continue;
            }
        };
        let table = table_name(&stem);
        if !names.insert(table.clone()) {
            out.untranslated.push((shown, format!("a second file for table `{table}`: not imported")));
            continue;
        }
        let bytes = read_sample(file)?;
        // Text that is not UTF-8 is most likely a Windows export: Windows-1252 reads every byte.
        let (sample, encoding) = match std::str::from_utf8(&bytes) {
            Ok(_) => (Encoding::Utf8.text(&bytes), None),
            Err(_) => (Encoding::Windows1252.text(&bytes), Some("windows-1252")),
        };
        if let Some(e) = encoding {
            out.notes.push((shown.clone(), format!("not UTF-8: read as {e} (`encoding` in its source)")));
        }
        let format = match format {
            Format::Csv { delimiter: b',' } => Format::Csv { delimiter: sniff_delimiter(&sample) },
            f => f,
        };
        let columns = match format {
            Format::Csv { delimiter } => csv_columns(&sample, delimiter),
            Format::Ndjson => ndjson_columns(&sample, &shown, &mut out),
        };
        let columns = match columns {
            Ok(mut c) if !c.is_empty() => {
                column_names(&mut c);
                c
            }
            Ok(_) => {
                out.untranslated.push((shown, "no column to read: not imported".into()));
                continue;
            }
            Err(why) => {
                out.untranslated.push((shown, format!("not imported: {why}")));
                continue;
            }
        };
        let landed = PathBuf::from("landing").join(&shown);
        toml.push_str(&section(&table, (format, encoding), &landed, &columns, &shown, &mut out));
        written.push((file.clone(), landed));
    }
    if written.is_empty() {
        let why: Vec<String> = out.untranslated.iter().map(|(f, w)| format!("{}: {w}", f.display())).collect();
        return Err(Error::Import {
            file: files.first().cloned().unwrap_or_default(),
            message: format!("no file could be imported ({})", why.join("; ")),
        });
    }
    for (rel, text) in [(PathBuf::from(crate::spec::PROJECT_FILE), toml.as_str()), (".gitignore".into(), GITIGNORE)] {
        write_file(to, &rel, text.as_bytes())?;
        out.files.push(rel);
    }
    for (from, landed) in written {
        let path = to.join(&landed);
        make_parent(&path)?;
        std::fs::copy(&from, &path).map_err(|source| Error::Io { path: from.clone(), source })?;
        out.files.push(landed);
    }
    Ok(out)
}

/// The format and stem of `file` from its name (`.gz` looked through).
fn format_of(file: &Path) -> std::result::Result<(Format, String), String> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bare = name.strip_suffix(".gz").unwrap_or(&name);
    let (stem, ext) = bare.rsplit_once('.').ok_or_else(|| "no extension to tell its format by".to_string())?;
    let format = match ext.to_ascii_lowercase().as_str() {
        "csv" => Format::Csv { delimiter: b',' },
        "tsv" | "tab" => Format::Csv { delimiter: b'\t' },
        "ndjson" | "jsonl" | "json" => Format::Ndjson,
        other => return Err(format!("`.{other}` files are not imported (CSV, TSV and NDJSON are)")),
    };
    Ok((format, stem.to_string()))
}

/// A table name for a file stem: [`snake`], `t_` before a leading digit.
fn table_name(stem: &str) -> String {
    match snake(stem) {
        s if s.is_empty() => "data".into(),
        s if s.starts_with(|c: char| c.is_ascii_digit()) => format!("t_{s}"),
        s => s,
    }
}

/// `text` in lower snake case: letters and digits lowered (accented Latin letters spelled in
/// ASCII: `Währung` → `waehrung`), a `_` where camel case starts a word (`OrderID` → `order_id`,
/// `HTTPServer` → `http_server`), runs of anything else one `_`, none at either end
/// (`Sold On (UTC)` → `sold_on_utc`).
fn snake(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let Some(ascii) = ascii_of(c) else {
            if !out.ends_with('_') {
                out.push('_');
            }
            continue;
        };
        if c.is_uppercase() && !out.is_empty() && !out.ends_with('_') {
            let prev = chars[i - 1];
            let after_lower = prev.is_lowercase() || prev.is_ascii_digit();
            let acronym_ends = prev.is_uppercase() && chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if after_lower || acronym_ends {
                out.push('_');
            }
        }
        out.push_str(&ascii);
    }
    out.trim_matches('_').to_string()
}

/// A letter or digit in lower-case ASCII: accented Latin letters without their accents (German
/// umlauts and `ß` as Germans spell them without: `ae`, `oe`, `ue`, `ss`); None for anything else.
fn ascii_of(c: char) -> Option<String> {
    if c.is_ascii_alphanumeric() {
        return Some(c.to_ascii_lowercase().to_string());
    }
    let spelled = match c.to_lowercase().next()? {
        'ä' | 'æ' => "ae",
        'ö' | 'œ' => "oe",
        'ü' => "ue",
        'ß' => "ss",
        'à' | 'á' | 'â' | 'ã' | 'å' => "a",
        'ç' => "c",
        'è' | 'é' | 'ê' | 'ë' => "e",
        'ì' | 'í' | 'î' | 'ï' => "i",
        'ñ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' => "o",
        'ù' | 'ú' | 'û' => "u",
        'ý' | 'ÿ' => "y",
        _ => return None,
    };
    Some(spelled.to_string())
}

/// Names the contract accepts for `columns` (lower snake case of their fields; `c_` before a
/// leading digit, `column<i>` when nothing is left, `_2`, `_3`… on a name taken): a column whose
/// name differs from its field reads it with `from`.
fn column_names(columns: &mut [Column]) {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (i, c) in columns.iter_mut().enumerate() {
        let base = match snake(&c.field) {
            s if s.is_empty() => format!("column{}", i + 1),
            s if s.starts_with(|c: char| c.is_ascii_digit()) => format!("c_{s}"),
            s => s,
        };
        let mut name = base.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        c.name = name;
    }
}

/// The first [`SAMPLE`] lines of `file` (gzip inflated; a CSV record spanning lines may be cut at
/// the end, which the CSV reader then reads as a short last record).
fn read_sample(file: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: file.to_path_buf(), source };
    let mut f = BufReader::new(std::fs::File::open(file).map_err(io)?);
    // Gzip by its magic number, looked at without consuming it.
    let gz = f.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz { Box::new(flate2::read::MultiGzDecoder::new(f)) } else { Box::new(f) };
    let mut text = Vec::new();
    let mut reader = BufReader::new(reader);
    for _ in 0..=SAMPLE {
        if reader.read_until(b'\n', &mut text).map_err(io)? == 0 {
            break;
        }
    }
    Ok(text)
}

/// Delimiters a `.csv` file may use: the comma, then what exports write where the comma is the
/// decimal separator (`;`), tabs and pipes.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// The delimiter of a CSV sample: of [`DELIMITERS`], the one splitting the header into the most
/// fields (at least two) that nearly every record of the first hundred also has; `,` if none.
fn sniff_delimiter(text: &str) -> u8 {
    let mut best = (1, b',');
    for d in DELIMITERS {
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(d).from_reader(text.as_bytes());
        let lens: Vec<usize> = reader.records().take(101).map_while(|r| r.ok()).map(|r| r.len()).collect();
        let Some((&header, rows)) = lens.split_first() else { continue };
        let agree = rows.iter().filter(|&&n| n == header).count();
        if header > best.0 && agree as f64 >= 0.9 * rows.len() as f64 {
            best = (header, d);
        }
    }
    best.1
}

/// Columns of a CSV sample: named by its header, typed from its cells.
fn csv_columns(text: &str, delimiter: u8) -> std::result::Result<Vec<Column>, String> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).flexible(true).delimiter(delimiter).from_reader(text.as_bytes());
    let header: Vec<String> =
        reader.headers().map_err(|e| format!("unreadable header: {e}"))?.iter().map(|h| h.trim().to_string()).collect();
    if header.iter().any(String::is_empty) {
        return Err("the header has an empty column name".into());
    }
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); header.len()];
    for record in reader.records().take(SAMPLE) {
        let Ok(record) = record else { continue };
        for (i, column) in cells.iter_mut().enumerate() {
            // An empty or missing cell is null, as landing reads it.
            column.push(record.get(i).filter(|v| !v.is_empty()).map(str::to_string));
        }
    }
    Ok(header.into_iter().zip(cells).map(|(name, cells)| typed(name, &cells)).collect())
}

/// A column from its cells' texts (None: null): the first type (int64, float64, date, timestamp,
/// bool) that reads [`MAJORITY`] of its values, else string.
fn typed(field: String, cells: &[Option<String>]) -> Column {
    let markers: BTreeSet<String> =
        cells.iter().flatten().filter(|v| is_common_null_marker(v)).map(|v| v.trim().to_string()).collect();
    let values: Vec<&str> = cells.iter().flatten().map(|v| v.trim()).filter(|v| !markers.contains(*v)).collect();
    let count = |f: &dyn Fn(&str) -> bool| values.iter().filter(|v| f(v)).count();
    let enough = |n: usize| !values.is_empty() && n as f64 >= MAJORITY * values.len() as f64;
    let date = |v: &str| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
    let number = |v: &str| seed::is_integer(v) || seed::is_decimal(v);
    // As silver reads booleans: `true`/`false`, `yes`/`no`, `t`/`f`, `y`/`n`, `on`/`off`, any case
    // (0 and 1 make an integer column first).
    let boolean = |v: &str| reads_as(v, ColumnType::Bool, None);
    let (integers, numbers, timestamps) = (count(&seed::is_integer), count(&number), count(&seed::is_timestamp));
    // A whole number among decimals makes no int64 column: the number type takes every number.
    let ty: (&str, &dyn Fn(&str) -> bool) = if enough(integers) && integers == numbers {
        ("int64", &seed::is_integer)
    } else if enough(numbers) {
        ("float64", &number)
    } else if enough(count(&date)) && timestamps == 0 {
        ("date", &date)
    } else if enough(timestamps) {
        ("timestamp", &seed::is_timestamp)
    } else if enough(count(&boolean)) {
        ("bool", &boolean)
    } else {
        ("string", &|_: &str| true)
    };
    let (default_ty, default_reads) = ty;
    // Text the defaults do not read may be numbers or dates written another way.
    let weighted: Vec<(&str, u64)> = values.iter().map(|v| (*v, 1)).collect();
    let guess = if default_ty == "string" { formats::guess(&weighted, None, MAJORITY) } else { None };
    let ty = guess.as_ref().map_or(default_ty.to_string(), |g| g.ty.to_string());
    let reads = |v: &str| match &guess {
        Some(g) => reads_as(v, g.ty, Some(&g.format)),
        None => default_reads(v),
    };
    // A marker in a string column is a value (`NA`: North America); elsewhere it is a null.
    let (null_values, present): (BTreeSet<String>, Vec<&str>) = if ty == "string" {
        (BTreeSet::new(), cells.iter().flatten().map(String::as_str).collect())
    } else {
        (markers, values.clone())
    };
    let outliers = values.iter().filter(|v| !reads(v)).count();
    let first = values.iter().find(|v| !reads(v)).map(|v| v.to_string());
    Column {
        name: field.clone(),
        field,
        ty,
        null_values,
        records: cells.len(),
        present: present.len(),
        distinct: present.iter().collect::<BTreeSet<_>>().len(),
        outliers: (outliers, first),
        format: guess.as_ref().map(|g| g.format.text().to_string()),
        ambiguous: guess.is_some_and(|g| g.ambiguous),
    }
}

/// Columns of an NDJSON sample: its objects' fields in the order first seen, the fields of objects
/// inside them too (in the text's order), each read by its dotted path (`customer.id`).
/// A field holding arrays (or objects past [`MAX_DEPTH`]) is a `json` column, its JSON text.
fn ndjson_columns(text: &str, file: &Path, out: &mut Imported) -> std::result::Result<Vec<Column>, String> {
    let mut order: Vec<String> = Vec::new();
    let mut fields: std::collections::HashMap<String, Field> = std::collections::HashMap::new();
    let mut records = 0usize;
    // Paths holding an object in some record, and keys inside objects no path can name.
    let mut objects: BTreeSet<String> = BTreeSet::new();
    let mut unnamed: BTreeSet<String> = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(SAMPLE) {
        // In the text's order: a `Value` orders an object's members by name.
        let Ok(Members(object)) = serde_json::from_str::<Members>(line) else { continue };
        let mut flat = Vec::new();
        for (k, v) in object {
            flatten(k, v, 0, &mut flat, &mut objects, &mut unnamed);
        }
        for (k, v) in flat {
            let field = fields.entry(k.clone()).or_insert_with(|| {
                order.push(k.clone());
                Field { cells: vec![None; records], ..Field::default() }
            });
            match &v {
                Value::Null => field.cells.push(None),
                Value::String(s) => field.cells.push(Some(s.clone())),
                Value::Number(n) => {
                    field.numbers = true;
                    field.cells.push(Some(n.to_string()));
                }
                Value::Bool(b) => {
                    field.bools = true;
                    field.cells.push(Some(b.to_string()));
                }
                Value::Array(_) | Value::Object(_) => {
                    field.nested = true;
                    field.cells.push(Some(v.to_string()));
                }
            }
        }
        records += 1;
        for f in fields.values_mut() {
            // A field this record does not carry is null in it.
            f.cells.resize(records, None);
        }
    }
    if records == 0 {
        return Err("no JSON object in its first lines".into());
    }
    for path in unnamed {
        out.notes.push((
            file.to_path_buf(),
            format!(
                "field `{path}` is an object's member under a key a dotted path cannot name (empty, or with a dot): left in bronze, not in the contract"
            ),
        ));
    }
    let mut columns = Vec::new();
    for name in order {
        let Some(field) = fields.remove(&name) else { continue };
        if objects.contains(&name) {
            if field.cells.iter().any(Option::is_some) || field.nested {
                out.notes.push((
                    file.to_path_buf(),
                    format!("field `{name}` is an object in some records and a value in others: its values are left in bronze, the object's fields are columns"),
                ));
            }
            continue;
        }
        if field.nested {
            // Arrays (and objects past the depth flattened) are kept as their JSON text.
            let present = field.cells.iter().flatten().count();
            let distinct = field.cells.iter().flatten().collect::<BTreeSet<_>>().len();
            columns.push(Column {
                name: name.clone(),
                field: name,
                ty: "json".into(),
                null_values: BTreeSet::new(),
                records: field.cells.len(),
                present,
                distinct,
                outliers: (0, None),
                format: None,
                ambiguous: false,
            });
            continue;
        }
        let column = typed(name.clone(), &field.cells);
        // JSON numbers read only as numbers, booleans only as booleans: anything else mixed in
        // (say `"n/a"` beside numbers) gets a type that reads both, or is left out.
        let fits = match column.ty.as_str() {
            "int64" | "float64" => !field.bools,
            "bool" => !field.numbers,
            _ => !field.numbers && !field.bools,
        };
        if fits {
            columns.push(column);
        } else {
            out.notes.push((
                file.to_path_buf(),
                format!(
                    "field `{name}` mixes JSON types no one column type reads: left in bronze, not in the contract"
                ),
            ));
        }
    }
    Ok(columns)
}

/// Objects nested deeper than this are kept whole, as JSON text.
const MAX_DEPTH: usize = 4;

/// `value` at `path` as (path, value) leaves: an object's members under `path.<key>`, in order,
/// the object itself noted in `objects`; a key with a dot, or empty, inside an object cannot be a
/// path's step (`unnamed`). An object deeper than [`MAX_DEPTH`], or under a record's own dotted
/// key (no path leads into it), stays one value.
fn flatten(
    path: String,
    value: &RawValue,
    depth: usize,
    out: &mut Vec<(String, Value)>,
    objects: &mut BTreeSet<String>,
    unnamed: &mut BTreeSet<String>,
) {
    let text = value.get();
    // A record's own dotted key is read as a whole (a flattened export): its object is kept whole.
    let members = (text.starts_with('{') && depth < MAX_DEPTH && !(depth == 0 && path.contains('.')))
        .then(|| serde_json::from_str::<Members>(text).ok())
        .flatten();
    let Some(Members(members)) = members else {
        out.push((path, serde_json::from_str(text).unwrap_or(Value::Null)));
        return;
    };
    for (k, v) in members {
        let inner = format!("{path}.{k}");
        if k.is_empty() || k.contains('.') {
            unnamed.insert(inner);
        } else {
            flatten(inner, v, depth + 1, out, objects, unnamed);
        }
    }
    objects.insert(path);
}

/// What a sample holds of one NDJSON field.
#[derive(Debug, Default)]
struct Field {
    /// Per record: its text (a string's value, a number or boolean as written), None: null or absent.
    cells: Vec<Option<String>>,
    numbers: bool,
    bools: bool,
    nested: bool,
}

/// Names, or ends of names after `_`, that say a column identifies a record (`order_id`,
/// `bestell_nr`, `invoice_no`, `customer_number`).
const KEY_NAMES: [&str; 6] = ["id", "nr", "no", "num", "number", "key"];

/// The key column: a name of [`KEY_NAMES`] (`id`, `…_id`, `…_nr`, …), present in [`MAJORITY`] of the sampled records
/// with at most one in ten values repeating (re-sent records: silver keeps the latest; one repeat
/// in a sample of fewer than twenty); else the first column whose values are all present and
/// distinct, unless they are floating-point numbers (measures such as amounts, distinct in a small
/// sample by chance); None: no column identifies a record.
fn key_of(columns: &[Column]) -> Option<&Column> {
    let id_named = |c: &&Column| {
        let n = c.name.to_ascii_lowercase();
        KEY_NAMES.iter().any(|k| n == *k || n.strip_suffix(k).is_some_and(|rest| rest.ends_with('_')))
    };
    let identifies = |c: &&Column| {
        matches!(c.ty.as_str(), "int64" | "string")
            && c.present as f64 >= MAJORITY * c.records as f64
            && c.distinct > 1
            && c.present - c.distinct <= (c.present / 10).max(1)
    };
    let measure = |c: &Column| c.ty == "float64";
    columns.iter().filter(id_named).find(identifies).or_else(|| columns.iter().find(|c| c.unique() && !measure(c)))
}

/// The `[sources.x]` and `[silver.x]` sections of one file.
fn section(
    table: &str,
    (format, encoding): (Format, Option<&str>),
    landed: &Path,
    columns: &[Column],
    file: &Path,
    out: &mut Imported,
) -> String {
    for c in columns.iter().filter(|c| c.format.is_some()) {
        let f = c.format.as_deref().unwrap_or_default();
        let guess = if c.ambiguous { "; no sampled value tells the day from the month: check it" } else { "" };
        out.notes.push((
            file.to_path_buf(),
            format!("table `{table}`: column `{}` is {} written as {f:?} (its `format`){guess}", c.name, c.ty),
        ));
    }
    for c in columns.iter().filter(|c| c.outliers.0 > 0) {
        let (n, first) = &c.outliers;
        out.notes.push((
            file.to_path_buf(),
            format!(
                "table `{table}`: column `{}` is {} though {n} of its {} sampled values are not (such as `{}`): their records go to the dead letter with the reason; make it a string to keep them in silver",
                c.name,
                c.ty,
                c.present,
                first.as_deref().unwrap_or_default()
            ),
        ));
    }
    let keys: Vec<&Column> = match key_of(columns) {
        Some(c) => {
            let repeats = if c.distinct < c.present {
                format!(
                    "; {} of its {} sampled values repeat one before them: the latest record per key is kept",
                    c.present - c.distinct,
                    c.present
                )
            } else {
                String::new()
            };
            out.notes.push((file.to_path_buf(), format!("table `{table}`: primary key `{}`{repeats}", c.name)));
            vec![c]
        }
        None => {
            out.notes.push((
                file.to_path_buf(),
                format!(
                    "table `{table}`: no column identifies a record: every column is the key (identical records are kept once)"
                ),
            ));
            columns.iter().collect()
        }
    };
    let (format_name, delimiter) = match format {
        Format::Csv { delimiter: b'\t' } => ("csv", Some("\\t".to_string())),
        Format::Csv { delimiter: b',' } => ("csv", None),
        Format::Csv { delimiter } => ("csv", Some(char::from(delimiter).to_string())),
        Format::Ndjson => ("ndjson", None),
    };
    let path = landed.to_string_lossy().replace('\\', "/");
    let mut t = format!("\n[sources.{}]\nformat = \"{format_name}\"\npaths = [{}]\n", key(table), quote(&path));
    if let Some(d) = delimiter {
        t.push_str(&format!("delimiter = \"{d}\"\n"));
    }
    if let Some(e) = encoding {
        t.push_str(&format!("encoding = {}\n", quote(e)));
    }
    let key_names: Vec<String> = keys.iter().map(|c| quote(&c.name)).collect();
    t.push_str(&format!(
        "\n[silver.{}]\nsource = {}\nprimary_key = [{}]\norder_by = \"_ingested_at\"\ncolumns = [\n",
        key(table),
        quote(table),
        key_names.join(", ")
    ));
    for c in columns {
        let mut col = format!("  {{ name = {}", quote(&c.name));
        if c.field != c.name {
            col.push_str(&format!(", from = {}", quote(&c.field)));
        }
        col.push_str(&format!(", type = {}", quote(&c.ty)));
        if !keys.iter().any(|k| k.name == c.name) {
            col.push_str(", required = false");
        }
        if let Some(f) = &c.format {
            col.push_str(&format!(", format = {}", quote(f)));
        }
        if !c.null_values.is_empty() {
            let markers: Vec<String> = c.null_values.iter().map(|m| quote(m)).collect();
            col.push_str(&format!(", null_values = [{}]", markers.join(", ")));
        }
        t.push_str(&col);
        t.push_str(" },\n");
    }
    t.push_str("]\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_name(columns: &[Column]) -> Vec<(&str, &str, Vec<&str>)> {
        columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty.as_str(), c.null_values.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn csv_markers_are_nulls_in_typed_columns_and_values_in_string_ones() {
        let csv = "id,mpg,region,day,ok\n1,21.5,NA,2024-01-02,true\n2,NA,EU,N/A,false\n3,30,,2024-01-04,\n";
        let columns = csv_columns(csv, b',').expect("reads");
        assert_eq!(
            by_name(&columns),
            vec![
                ("id", "int64", vec![]),
                ("mpg", "float64", vec!["NA"]),
                ("region", "string", vec![]),
                ("day", "date", vec!["N/A"]),
                ("ok", "bool", vec![]),
            ]
        );
        assert!(columns[0].unique() && !columns[1].unique() && !columns[2].unique());
        assert_eq!(key_of(&columns).map(|c| c.name.as_str()), Some("id"));
    }

    #[test]
    fn the_delimiter_is_the_one_every_record_splits_alike() {
        assert_eq!(sniff_delimiter("a;b;c\n1;\"x, y\";3\n2;z;4\n"), b';', "commas inside quotes");
        assert_eq!(sniff_delimiter("a,b\n1,x;y\n2,z;w\n"), b',', "semicolons in a text column");
        assert_eq!(sniff_delimiter("a\tb\n1\t2\n"), b'\t');
        assert_eq!(sniff_delimiter("a|b|c\n1|2|3\n"), b'|');
        assert_eq!(sniff_delimiter("only\n1\n"), b',', "one column: the default");
        // The header splits three ways on `;`, but no record does.
        assert_eq!(sniff_delimiter("a;b;c,d\n1,2\n3,4\n"), b',');
    }

    #[test]
    fn numbers_and_dates_written_otherwise_get_a_format() {
        let eu = "n;amount;day;at\n1;1.234,5;31.12.2024;31.12.2024 23:59\n2;-3,25;01.02.2024;01.02.2024 00:00\n";
        let columns = csv_columns(eu, b';').expect("reads");
        let formats: Vec<(&str, &str, Option<&str>)> =
            columns.iter().map(|c| (c.name.as_str(), c.ty.as_str(), c.format.as_deref())).collect();
        assert_eq!(
            formats,
            vec![
                ("n", "int64", None),
                ("amount", "float64", Some("1.234,56")),
                ("day", "date", Some("%d.%m.%Y")),
                ("at", "timestamp", Some("%d.%m.%Y %H:%M")),
            ]
        );
        let days = csv_columns("d\n01/02/2024\n03/04/2024\n", b',').expect("reads");
        assert_eq!((days[0].format.as_deref(), days[0].ambiguous), (Some("%d/%m/%Y"), true), "no day past 12");
        let us = csv_columns("d\n01/02/2024\n12/31/2024\n", b',').expect("reads");
        assert_eq!((us[0].format.as_deref(), us[0].ambiguous), (Some("%m/%d/%Y"), false));
        let flags = csv_columns("a,b\nYes,t\nno,F\n", b',').expect("reads");
        assert_eq!((flags[0].ty.as_str(), flags[1].ty.as_str()), ("bool", "bool"), "as silver reads booleans");
        let text = csv_columns("d\nfoo\n12/31/2024\n", b',').expect("reads");
        assert_eq!((text[0].ty.as_str(), text[0].format.as_deref()), ("string", None));
    }

    #[test]
    fn a_type_reads_nearly_every_value_and_the_key_may_repeat() {
        // 200 ids, one `C-7` and one repeat; amounts whole but one; dates but one in another format.
        let mut csv = String::from("n,order_id,amount,day\n");
        for i in 0..200 {
            let id = match i {
                7 => "C-7".to_string(),
                8 => "6".to_string(),
                _ => i.to_string(),
            };
            let amount = if i == 3 { "2.5".to_string() } else { i.to_string() };
            let day = if i == 5 { "05/01/2024".to_string() } else { "2024-01-02".to_string() };
            csv.push_str(&format!("{},{id},{amount},{day}\n", i % 3));
        }
        let columns = csv_columns(&csv, b',').expect("reads");
        assert_eq!(
            by_name(&columns).into_iter().map(|(n, t, _)| (n, t)).collect::<Vec<_>>(),
            vec![("n", "int64"), ("order_id", "int64"), ("amount", "float64"), ("day", "date")]
        );
        assert_eq!(columns[1].outliers, (1, Some("C-7".into())));
        assert_eq!(columns[2].outliers.0, 0, "a whole amount among decimals is a number");
        assert_eq!(columns[3].outliers, (1, Some("05/01/2024".into())));
        assert_eq!(key_of(&columns).map(|c| c.name.as_str()), Some("order_id"), "re-sent ids still key");
        // Two records in three repeat a value: no key, and `n` identifies nothing.
        let few = csv_columns("a,b\n1,x\n1,y\n1,x\n", b',').expect("reads");
        assert_eq!(key_of(&few), None);
        // A small sample: one re-sent id still keys it, and amounts, distinct by chance, never do.
        let small = csv_columns("order_id,amount\n1,10.5\n2,20.25\n2,21.5\n3,5.75\n", b',').expect("reads");
        assert_eq!(key_of(&small).map(|c| c.name.as_str()), Some("order_id"));
        let measures = csv_columns("kind,amount\nx,10.5\nx,20.25\ny,21.5\n", b',').expect("reads");
        assert_eq!(key_of(&measures).map(|c| c.name.as_str()), None);
        let daily = csv_columns("day,visits\n2024-01-01,5\n2024-01-02,5\n", b',').expect("reads");
        assert_eq!(key_of(&daily).map(|c| c.name.as_str()), Some("day"), "a day per record keys it");
    }

    #[test]
    fn ndjson_fields_take_their_json_types_arrays_are_json_and_mixed_ones_are_left_out() {
        let text = concat!(
            "{\"id\": 1, \"amount\": \"12.50\", \"at\": \"2024-01-02T10:00:00Z\", \"tags\": [1], \"n\": 1, \"x\": true}\n",
            "{\"id\": 2, \"amount\": 3, \"at\": null, \"n\": \"NA\", \"x\": 1, \"late\": \"a\"}\n",
            "not json\n",
        );
        let mut out = Imported::default();
        let columns = ndjson_columns(text, Path::new("f.ndjson"), &mut out).expect("reads");
        assert_eq!(
            by_name(&columns),
            vec![
                ("id", "int64", vec![]),
                ("amount", "float64", vec![]),
                ("at", "timestamp", vec![]),
                ("tags", "json", vec![]),
                ("n", "int64", vec!["NA"]),
                ("late", "string", vec![]),
            ]
        );
        let notes: Vec<&str> = out.notes.iter().map(|(_, n)| n.as_str()).collect();
        assert!(notes.iter().any(|n| n.contains("`x` mixes JSON types")), "{notes:?}");
    }

    /// Nested objects (as API responses hold them) become a column per field inside, read by a
    /// dotted `from`; arrays, and objects no path leads into, are `json` columns.
    #[test]
    fn ndjson_objects_inside_records_become_columns_read_by_their_path() {
        let text = concat!(
            "{\"id\": 1, \"customer\": {\"id\": 5, \"address\": {\"city\": \"K\\u00f6ln\"}}, \"tags\": [1]}\n",
            "{\"id\": 2, \"customer\": {\"id\": 6, \"tier\": \"gold\"}}\n",
            "{\"id\": 3, \"customer\": null, \"a.b\": {\"c\": 1}, \"x\": {\"y.z\": 2}}\n",
        );
        let mut out = Imported::default();
        let mut columns = ndjson_columns(text, Path::new("f.ndjson"), &mut out).expect("reads");
        column_names(&mut columns);
        let fields: Vec<(&str, &str, &str)> =
            columns.iter().map(|c| (c.name.as_str(), c.field.as_str(), c.ty.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("id", "id", "int64"),
                ("customer_id", "customer.id", "int64"),
                ("customer_address_city", "customer.address.city", "string"),
                ("tags", "tags", "json"),
                ("customer_tier", "customer.tier", "string"),
                ("a_b", "a.b", "json"),
            ]
        );
        assert_eq!((columns[1].present, columns[3].present), (2, 1));
        let notes: Vec<&str> = out.notes.iter().map(|(_, n)| n.as_str()).collect();
        assert!(!notes.iter().any(|n| n.contains("customer")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("`x.y.z`") && n.contains("cannot name")), "{notes:?}");
    }

    #[test]
    fn headers_people_write_become_column_names_reading_them() {
        let mut columns = csv_columns(
            "Car ID,Sold On (UTC),price,Price,2nd,__,OrderID,HTTPServer,Währung,Bestell-Nr\n1,2,3,4,5,6,7,8,9,10\n",
            b',',
        )
        .expect("reads");
        column_names(&mut columns);
        let names: Vec<(&str, &str)> = columns.iter().map(|c| (c.name.as_str(), c.field.as_str())).collect();
        assert_eq!(
            names,
            [
                ("car_id", "Car ID"),
                ("sold_on_utc", "Sold On (UTC)"),
                ("price", "price"),
                ("price_2", "Price"),
                ("c_2nd", "2nd"),
                ("column6", "__"),
                ("order_id", "OrderID"),
                ("http_server", "HTTPServer"),
                ("waehrung", "Währung"),
                ("bestell_nr", "Bestell-Nr"),
            ]
        );
        // `…_nr` says "identifies" as `…_id` does: the first of them that does is the key.
        let keyed = csv_columns("Bestell-Nr,Kunde\n1,7\n2,7\n", b',').map(|mut c| {
            column_names(&mut c);
            c
        });
        assert_eq!(keyed.ok().as_deref().and_then(key_of).map(|c| c.name.clone()), Some("bestell_nr".to_string()));
    }

    #[test]
    fn names_and_formats_come_from_the_file_name() {
        assert_eq!(table_name("Sales 2024-Q1"), "sales_2024_q1");
        assert_eq!(table_name("2024"), "t_2024");
        assert_eq!(format_of(Path::new("a/b.TSV.gz")), Ok((Format::Csv { delimiter: b'\t' }, "b".into())));
        assert_eq!(format_of(Path::new("events.jsonl")), Ok((Format::Ndjson, "events".into())));
        assert!(format_of(Path::new("x.parquet")).is_err() && format_of(Path::new("README")).is_err());
    }
}
