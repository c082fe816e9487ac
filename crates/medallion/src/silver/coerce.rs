//! Lax type coercion, one column at a time: raw JSON tokens ([`RawField`]) to a typed Arrow array
//! plus one error code per row.
//!
//! The rules (README "Coercion"), decided one by one against Pydantic's lax mode:
//!
//! | target | accepted | rejected |
//! |---|---|---|
//! | int64 | JSON integers; whole JSON numbers (`123.0`, `1e3`); strings of those, trimmed, `_` between digits | fractions (`12.5`), bools, `"C-123"`, out of range |
//! | float64 | finite JSON numbers; numeric strings, trimmed | NaN, ±inf (as strings or results), bools |
//! | decimal(p,s) | JSON numbers and numeric strings, parsed exactly and rounded half away from zero to `s` | NaN/inf, more than `p` digits |
//! | string | JSON strings, verbatim | numbers, bools, objects (a number where text is expected is a producer bug) |
//! | bool | `true`/`false`; 0/1; strings `true/false/yes/no/on/off/t/f/y/n/1/0` (any case) | anything else |
//! | date | `YYYY-MM-DD`; a datetime string at exact midnight | other formats (`15/01/2024`), non-midnight datetimes, numbers |
//! | timestamp | RFC 3339 (offset converted to UTC), `YYYY-MM-DD[ T]HH:MM:SS[.f]` taken as UTC | numbers, other formats |
//!
//! A missing key or `null` is an error for a required column and a null otherwise.
//!
//! A column's `format` ([`Format`]) reads text the defaults refuse: dates and timestamps by a
//! strftime pattern (`%d/%m/%Y`), numbers as a sample of how the file writes 1234.56 (`1.234,56`:
//! a decimal comma, dots between thousands). JSON numbers are read as ever.

use std::sync::Arc;

use chrono::format::{Item, Numeric, Parsed, StrftimeItems};
use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};

use crate::bronze::decode::{Kind, RawField};
use crate::spec::ColumnType;

/// Per-row outcome of coercion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Coerced (or an allowed null).
    None = 0,
    /// Key absent in a required column.
    Missing = 1,
    /// `null` in a required column.
    Null = 2,
    /// Value cannot be read as the type.
    Type = 3,
    /// A whole number was expected.
    NotWhole = 4,
    /// Out of the type's range or precision.
    Range = 5,
    /// NaN or infinity.
    NotFinite = 6,
}

impl Fault {
    /// Rule name and message for a rejected value.
    pub fn describe(self, kind: Kind, text: &str, ty: ColumnType, format: Option<&Format>) -> (&'static str, String) {
        let shown = shorten(text);
        let what = match kind {
            Kind::String => format!("string {shown:?}"),
            Kind::Number => format!("number {shown}"),
            Kind::Bool => format!("boolean {shown}"),
            Kind::Nested => format!("JSON {shown}"),
            Kind::Missing | Kind::Null => String::new(),
        };
        match self {
            Fault::None => ("", String::new()),
            Fault::Missing => ("required", "field required".to_string()),
            Fault::Null => ("required", "null is not allowed".to_string()),
            // `dead_letter` reads the value back from this text to hint at null markers.
            Fault::Type => match format {
                None => ("type", format!("cannot read {what} as {ty}")),
                Some(f) => ("type", format!("cannot read {what} as {ty} in format {:?}", f.text())),
            },
            Fault::NotWhole => ("type", format!("{what} is not a whole number")),
            Fault::Range => ("range", format!("{what} does not fit {ty}")),
            Fault::NotFinite => ("finite", format!("{what}: NaN and infinity are not allowed")),
        }
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Texts exports write for a missing value (compared in any case): a type error on one of them is
/// most likely a null marker the contract does not declare (`medallion quarantine` hints at it,
/// `medallion import files` declares the ones it sees in typed columns).
pub const COMMON_NULL_MARKERS: [&str; 11] =
    ["NA", "N/A", "#N/A", "NULL", "NONE", "NIL", "NAN", "-", "?", ".", "MISSING"];

/// Whether `text` (surrounding whitespace aside) is one of [`COMMON_NULL_MARKERS`].
pub fn is_common_null_marker(text: &str) -> bool {
    let text = text.trim();
    COMMON_NULL_MARKERS.iter().any(|m| m.eq_ignore_ascii_case(text))
}

/// A coerced column.
#[derive(Debug)]
pub struct Coerced {
    /// Typed values (null where absent or faulty).
    pub array: ArrayRef,
    /// One fault per row.
    pub faults: Vec<Fault>,
}

impl Coerced {
    /// Whether any row is faulty.
    pub fn any_fault(&self) -> bool {
        self.faults.iter().any(|f| *f != Fault::None)
    }
}

/// A column's `format`: how its text is written when the defaults do not read it.
#[derive(Debug, Clone)]
pub enum Format {
    /// A strftime pattern (chrono's syntax) for a date or timestamp column.
    Time {
        /// The pattern as written.
        text: String,
        /// Its parsed items.
        items: Vec<Item<'static>>,
    },
    /// How a number column's text writes 1234.56.
    Number {
        /// The sample as written.
        text: String,
        /// The decimal separator (`.` or `,`).
        decimal: char,
        /// The separator between groups of three digits, if any.
        thousands: Option<char>,
        /// Text before the number (a currency: `$`), trimmed; a value may leave it out.
        prefix: String,
        /// Text after it (` €`, ` %`), trimmed; a value may leave it out.
        suffix: String,
    },
}

/// Characters that may separate thousands in a number format.
const THOUSANDS: [char; 7] = ['.', ',', ' ', '\'', '_', '\u{a0}', '\u{202f}'];

impl Format {
    /// The format `text` for a column of type `ty`, or why it is not one.
    pub fn parse(text: &str, ty: ColumnType) -> Result<Format, String> {
        match ty {
            ColumnType::Date | ColumnType::Timestamp => Format::time(text, ty),
            ColumnType::Int64 | ColumnType::Float64 | ColumnType::Decimal { .. } => Format::number(text),
            ColumnType::String | ColumnType::Bool | ColumnType::Json => {
                Err(format!("`format` applies to date, timestamp and number columns, not {ty}"))
            }
        }
    }

    /// The format as written in the contract.
    pub fn text(&self) -> &str {
        match self {
            Format::Time { text, .. } | Format::Number { text, .. } => text,
        }
    }

    fn time(text: &str, ty: ColumnType) -> Result<Format, String> {
        let items = StrftimeItems::new(text).parse_to_owned().map_err(|_| {
            format!("format {text:?} is not a strftime pattern (such as \"%d/%m/%Y\" or \"%d.%m.%Y %H:%M\")")
        })?;
        // A pattern must name a whole date: a day written with it must read back as that day.
        let sample = NaiveDate::from_ymd_opt(2024, 12, 31).and_then(|d| d.and_hms_opt(23, 59, 58)).unwrap_or_default();
        let mut written = String::new();
        let unwritable = std::fmt::Write::write_fmt(
            &mut written,
            format_args!("{}", sample.and_utc().fixed_offset().format_with_items(items.iter())),
        )
        .is_err();
        let back = match ty {
            ColumnType::Date => read_date_with(&written, &items),
            _ => read_timestamp_with(&written, &items)
                .and_then(chrono::DateTime::from_timestamp_micros)
                .map(|t| t.date_naive()),
        };
        match back {
            Some(day) if day == sample.date() && !unwritable => Ok(Format::Time { text: text.to_string(), items }),
            _ => Err(format!(
                "format {text:?} does not name a whole date (day, month and year, as in \"%d/%m/%Y\"): 2024-12-31 written with it is {written:?}"
            )),
        }
    }

    fn number(text: &str) -> Result<Format, String> {
        let bad = || {
            format!(
                "format {text:?} is not a way of writing 1234.56: write that number as the file does, such as \"1.234,56\" (decimal comma, dots between thousands), \"1234,56\", \"1,234.56\" or \"$1,234.56\""
            )
        };
        let digits = |t: &str| t.chars().any(|c| c.is_ascii_digit());
        let at = text.find('1').ok_or_else(bad)?;
        let (prefix, rest) = (&text[..at], &text[at + 1..]);
        let (thousands, rest) = match rest.strip_prefix("234") {
            Some(r) => (None, r),
            None => {
                let sep = rest.chars().next().filter(|c| THOUSANDS.contains(c)).ok_or_else(bad)?;
                (Some(sep), rest[sep.len_utf8()..].strip_prefix("234").ok_or_else(bad)?)
            }
        };
        let fraction = rest.chars().next().filter(|c| matches!(c, '.' | ',') && rest[1..].starts_with("56"));
        let (decimal, suffix) = match fraction {
            Some(d) => (d, &rest[3..]),
            // Whole numbers: the decimal separator is the one thousands do not use.
            None => (if thousands == Some('.') { ',' } else { '.' }, rest),
        };
        if thousands == Some(decimal) || digits(prefix) || digits(suffix) || suffix.starts_with(['.', ',']) {
            return Err(bad());
        }
        let (prefix, suffix) = (prefix.trim().to_string(), suffix.trim().to_string());
        if prefix.ends_with(['-', '+']) || suffix.starts_with(['-', '+']) {
            return Err(bad());
        }
        Ok(Format::Number { text: text.to_string(), decimal, thousands, prefix, suffix })
    }

    /// `text` as the default parsers read numbers (`-1234.56`), or None when it is not a number
    /// written this way (thousands separators only between groups of three digits).
    fn plain_number(text: &str, decimal: char, thousands: Option<char>, affix: (&str, &str)) -> Option<String> {
        let spaced = thousands.is_some_and(|t| t == ' ' || t == '\u{a0}' || t == '\u{202f}');
        let t = text.trim_matches(|c: char| c.is_whitespace());
        // A sign before or after the prefix (`-$12`, `$-12`); the prefix and suffix optional.
        fn signed(t: &str) -> Option<(&str, &str)> {
            t.strip_prefix(['-', '+']).map(|rest| (&t[..1], rest))
        }
        let (mut sign, mut t) = signed(t).unwrap_or(("", t));
        if !affix.0.is_empty()
            && let Some(rest) = t.strip_prefix(affix.0)
        {
            t = rest.trim_start();
            if sign.is_empty()
                && let Some((s, rest)) = signed(t)
            {
                (sign, t) = (s, rest);
            }
        }
        if !affix.1.is_empty()
            && let Some(rest) = t.strip_suffix(affix.1)
        {
            t = rest.trim_end();
        }
        let (int, frac) = match t.split_once(decimal) {
            Some((i, f)) => (i, Some(f)),
            None => (t, None),
        };
        let mut out = String::with_capacity(t.len() + 1);
        out.push_str(sign);
        let is_sep = |c: char| Some(c) == thousands || (spaced && matches!(c, ' ' | '\u{a0}' | '\u{202f}'));
        if int.contains(is_sep) {
            let mut groups = int.split(is_sep);
            let first = groups.next()?;
            if first.is_empty() || first.len() > 3 || !first.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            out.push_str(first);
            for g in groups {
                if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                out.push_str(g);
            }
        } else {
            out.push_str(int);
        }
        if let Some(f) = frac {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            out.push('.');
            out.push_str(f);
        }
        Some(out)
    }
}

/// `parse` applied to a number written as `format` says (JSON numbers as they are).
fn read_number<T>(
    kind: Kind,
    text: &str,
    format: &Format,
    parse: impl Fn(Kind, &str) -> Result<T, Fault>,
) -> Result<T, Fault> {
    match (kind, format) {
        (Kind::String, Format::Number { decimal, thousands, prefix, suffix, .. }) => {
            let plain = Format::plain_number(text, *decimal, *thousands, (prefix, suffix)).ok_or(Fault::Type)?;
            parse(kind, &plain)
        }
        _ => parse(kind, text),
    }
}

fn read_date_with(text: &str, items: &[Item<'static>]) -> Option<NaiveDate> {
    let parsed = parsed_with(text, items)?;
    parsed.to_naive_date().ok()
}

/// `text` read by `items`; None where it does not match, or where a `%Y` year has fewer than four
/// digits (`13/02/24` read by `%d/%m/%Y` is a two-digit year, never the year 24).
fn parsed_with(text: &str, items: &[Item<'static>]) -> Option<Parsed> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text.trim(), items.iter()).ok()?;
    let full_year = items.iter().any(|i| matches!(i, Item::Numeric(Numeric::Year, _)));
    if full_year && parsed.year().is_some_and(|y| (0..1000).contains(&y)) {
        return None;
    }
    Some(parsed)
}

/// Microseconds since the epoch, UTC: an offset in the text converts, none is UTC; a pattern with
/// no time of day reads midnight.
fn read_timestamp_with(text: &str, items: &[Item<'static>]) -> Option<i64> {
    let parsed = parsed_with(text, items)?;
    if let Ok(t) = parsed.to_datetime() {
        return Some(t.timestamp_micros());
    }
    let naive = match parsed.to_naive_datetime_with_offset(0) {
        Ok(t) => t,
        Err(_) => parsed.to_naive_date().ok()?.and_hms_opt(0, 0, 0)?,
    };
    Some(naive.and_utc().timestamp_micros())
}

fn time_items(format: Option<&Format>) -> Option<&[Item<'static>]> {
    match format {
        Some(Format::Time { items, .. }) => Some(items),
        _ => None,
    }
}

/// Coerces `field` to `ty`, read as `format` says when there is one. A string equal to one of
/// `nulls` (surrounding whitespace aside) is read as JSON `null` (the source's or column's
/// `null_values`).
pub fn coerce(field: &RawField, ty: ColumnType, required: bool, nulls: &[String], format: Option<&Format>) -> Coerced {
    let n = field.len();
    let mut faults = Vec::with_capacity(n);
    let is_marker = |i: usize| {
        let text = field.text(i).trim_matches(|c: char| c.is_ascii_whitespace());
        nulls.iter().any(|m| m.trim_matches(|c: char| c.is_ascii_whitespace()) == text)
    };
    macro_rules! run {
        ($builder:expr, $parse:expr) => {{
            let mut b = $builder;
            for i in 0..n {
                let kind = match field.kinds[i] {
                    Kind::String if !nulls.is_empty() && is_marker(i) => Kind::Null,
                    kind => kind,
                };
                let fault = match kind {
                    Kind::Missing | Kind::Null => {
                        b.append_null();
                        if !required {
                            Fault::None
                        } else if kind == Kind::Missing {
                            Fault::Missing
                        } else {
                            Fault::Null
                        }
                    }
                    _ => match $parse(kind, field.text(i)) {
                        Ok(v) => {
                            b.append_value(v);
                            Fault::None
                        }
                        Err(f) => {
                            b.append_null();
                            f
                        }
                    },
                };
                faults.push(fault);
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    let number = format.filter(|f| matches!(f, Format::Number { .. }));
    let array = match (ty, number, time_items(format)) {
        (ColumnType::Int64, Some(f), _) => run!(Int64Builder::with_capacity(n), |k, t| read_number(k, t, f, parse_int)),
        (ColumnType::Int64, None, _) => run!(Int64Builder::with_capacity(n), parse_int),
        (ColumnType::Float64, Some(f), _) => {
            run!(Float64Builder::with_capacity(n), |k, t| read_number(k, t, f, parse_float))
        }
        (ColumnType::Float64, None, _) => run!(Float64Builder::with_capacity(n), parse_float),
        (ColumnType::Decimal { precision, scale }, number, _) => {
            let builder = Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(precision, i8::try_from(scale).unwrap_or(0))
                .unwrap_or_else(|_| Decimal128Builder::with_capacity(n));
            match number {
                Some(f) => {
                    run!(builder, |k, t| read_number(k, t, f, |k, t| parse_decimal_token(k, t, precision, scale)))
                }
                None => run!(builder, |k, t| parse_decimal_token(k, t, precision, scale)),
            }
        }
        (ColumnType::String, ..) => run!(StringBuilder::with_capacity(n, field.data.len()), parse_string),
        (ColumnType::Json, ..) => run!(StringBuilder::with_capacity(n, field.data.len() + 2 * n), parse_json),
        (ColumnType::Bool, ..) => run!(BooleanBuilder::with_capacity(n), parse_bool),
        (ColumnType::Date, _, Some(items)) => run!(Date32Builder::with_capacity(n), |k, t| match k {
            Kind::String => read_date_with(t, items)
                .map(|d| chrono::Datelike::num_days_from_ce(&d) - EPOCH_DAYS_CE)
                .ok_or(Fault::Type),
            _ => Err(Fault::Type),
        }),
        (ColumnType::Date, _, None) => run!(Date32Builder::with_capacity(n), parse_date),
        (ColumnType::Timestamp, _, items) => {
            run!(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"), |k, t| match (k, items) {
                (Kind::String, Some(items)) => read_timestamp_with(t, items).ok_or(Fault::Type),
                (Kind::String, None) => parse_timestamp(t).ok_or(Fault::Type),
                _ => Err(Fault::Type),
            })
        }
    };
    Coerced { array, faults }
}

/// Whether the string `text` coerces to a value of `ty` read as `format` says (a null marker that
/// does is also a value).
pub fn reads_as(text: &str, ty: ColumnType, format: Option<&Format>) -> bool {
    let s = Kind::String;
    match (ty, format, time_items(format)) {
        (ColumnType::Int64, Some(f @ Format::Number { .. }), _) => read_number(s, text, f, parse_int).is_ok(),
        (ColumnType::Float64, Some(f @ Format::Number { .. }), _) => read_number(s, text, f, parse_float).is_ok(),
        (ColumnType::Decimal { precision, scale }, Some(f @ Format::Number { .. }), _) => {
            read_number(s, text, f, |k, t| parse_decimal_token(k, t, precision, scale)).is_ok()
        }
        (ColumnType::Date, _, Some(items)) => read_date_with(text, items).is_some(),
        (ColumnType::Timestamp, _, Some(items)) => read_timestamp_with(text, items).is_some(),
        (ColumnType::Int64, ..) => parse_int(s, text).is_ok(),
        (ColumnType::Float64, ..) => parse_float(s, text).is_ok(),
        (ColumnType::Decimal { precision, scale }, ..) => parse_decimal_token(s, text, precision, scale).is_ok(),
        (ColumnType::String | ColumnType::Json, ..) => true,
        (ColumnType::Bool, ..) => parse_bool(s, text).is_ok(),
        (ColumnType::Date, ..) => parse_date(s, text).is_ok(),
        (ColumnType::Timestamp, ..) => parse_timestamp(text).is_some(),
    }
}

/// Strips surrounding whitespace and `_` between digits (as Python's numeric parsers allow).
fn clean_numeric(kind: Kind, text: &str) -> Result<std::borrow::Cow<'_, str>, Fault> {
    match kind {
        Kind::Number => Ok(text.into()),
        Kind::String => {
            let t = text.trim();
            if !t.contains('_') {
                return Ok(t.into());
            }
            let b = t.as_bytes();
            let ok = b.iter().enumerate().all(|(i, &c)| {
                c != b'_' || (i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
            });
            if ok { Ok(t.replace('_', "").into()) } else { Err(Fault::Type) }
        }
        _ => Err(Fault::Type),
    }
}

fn parse_int(kind: Kind, text: &str) -> Result<i64, Fault> {
    let t = clean_numeric(kind, text)?;
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    let d = ExactDecimal::parse(&t).ok_or(if is_non_finite(&t) { Fault::NotFinite } else { Fault::Type })?;
    let (v, exact) = d.rescale(0).ok_or(Fault::Range)?;
    if !exact {
        return Err(Fault::NotWhole);
    }
    i64::try_from(v).map_err(|_| Fault::Range)
}

fn parse_float(kind: Kind, text: &str) -> Result<f64, Fault> {
    let t = clean_numeric(kind, text)?;
    // Only decimal literals: Rust also parses "inf"/"nan", which are refused below anyway.
    let v: f64 = t.parse().map_err(|_| Fault::Type)?;
    if v.is_finite() { Ok(v) } else { Err(Fault::NotFinite) }
}

fn is_non_finite(t: &str) -> bool {
    let l = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
    matches!(l.as_str(), "nan" | "inf" | "infinity" | "snan")
}

fn parse_decimal_token(kind: Kind, text: &str, precision: u8, scale: u8) -> Result<i128, Fault> {
    let t = clean_numeric(kind, text)?;
    let v = match plain_decimal(&t, scale) {
        Some(v) => v,
        None => {
            let d = ExactDecimal::parse(&t).ok_or(if is_non_finite(&t) { Fault::NotFinite } else { Fault::Type })?;
            d.rescale(scale).ok_or(Fault::Range)?.0
        }
    };
    let limit = 10i128.pow(u32::from(precision));
    if v.abs() >= limit { Err(Fault::Range) } else { Ok(v) }
}

/// The common literal `[+-]digits[.digits]` scaled to `scale` and rounded half away from zero,
/// as [`ExactDecimal`] does, without allocating (one call per value); None for anything else
/// (exponents, no digit, a value past `i128`), which the exact parser decides.
fn plain_decimal(t: &str, scale: u8) -> Option<i128> {
    let b = t.as_bytes();
    let (negative, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    if int.is_empty() && frac.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let push = |v: i128, d: u8| v.checked_mul(10)?.checked_add(i128::from(d - b'0'));
    let mut v = int.iter().try_fold(0i128, |v, &d| push(v, d))?;
    let scale = usize::from(scale);
    for i in 0..scale {
        v = push(v, frac.get(i).copied().unwrap_or(b'0'))?;
    }
    if frac.get(scale).is_some_and(|&d| d >= b'5') {
        v = v.checked_add(1)?;
    }
    Some(if negative { -v } else { v })
}

fn parse_string(kind: Kind, text: &str) -> Result<&str, Fault> {
    match kind {
        Kind::String => Ok(text),
        _ => Err(Fault::Type),
    }
}

/// Any value as its JSON text: a string quoted, unless it is the text of an object or array (a
/// double-encoded value, a CSV cell holding JSON).
fn parse_json(kind: Kind, text: &str) -> Result<std::borrow::Cow<'_, str>, Fault> {
    match kind {
        Kind::String => {
            let holds_json = text.trim_start().starts_with(['{', '['])
                && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            if holds_json {
                Ok(text.into())
            } else {
                serde_json::to_string(text).map(Into::into).map_err(|_| Fault::Type)
            }
        }
        _ => Ok(text.into()),
    }
}

fn parse_bool(kind: Kind, text: &str) -> Result<bool, Fault> {
    match kind {
        Kind::Bool => Ok(text == "true"),
        Kind::Number => match text {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(Fault::Type),
        },
        Kind::String => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Ok(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Ok(false),
            _ => Err(Fault::Type),
        },
        _ => Err(Fault::Type),
    }
}

const EPOCH_DAYS_CE: i32 = 719_163;

fn parse_date(kind: Kind, text: &str) -> Result<i32, Fault> {
    if kind != Kind::String {
        return Err(Fault::Type);
    }
    let (date, rest) = if text.len() >= 10 && text.is_char_boundary(10) { text.split_at(10) } else { (text, "") };
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(Fault::Type);
    }
    // By hand: chrono's format-string parser was 4% of a 5M-record run (one call per value).
    let digits = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let (Some(y), Some(m), Some(dd)) = (digits(0..4), digits(5..7), digits(8..10)) else { return Err(Fault::Type) };
    let d = NaiveDate::from_ymd_opt(i32::try_from(y).map_err(|_| Fault::Type)?, m, dd).ok_or(Fault::Type)?;
    if !rest.is_empty() && !is_midnight(rest) {
        return Err(Fault::Type);
    }
    Ok(chrono::Datelike::num_days_from_ce(&d) - EPOCH_DAYS_CE)
}

/// `T00:00:00`, optionally with a zero fraction and `Z`/`+00:00`.
fn is_midnight(rest: &str) -> bool {
    let Some(t) = rest.strip_prefix(['T', ' ']) else { return false };
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00")).unwrap_or(t);
    let Some(frac) = t.strip_prefix("00:00:00") else { return false };
    frac.is_empty() || frac.strip_prefix('.').is_some_and(|f| !f.is_empty() && f.bytes().all(|c| c == b'0'))
}

/// Microseconds since the epoch, UTC: `YYYY-MM-DD[T ]HH:MM[:SS[.f]]`, with `Z` or `±HH:MM`
/// converted, without one taken as UTC; a date alone (`YYYY-MM-DD`) is its midnight, UTC, as
/// Pydantic's lax mode, DuckDB and Spark read it.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_micros());
    }
    // chrono reads `%Y` from any number of digits: `24-03-01` would be the year 24.
    let b = text.as_bytes();
    if b.len() == 10 {
        let day = parse_date(Kind::String, text).ok()?;
        return i64::from(day).checked_mul(86_400_000_000);
    }
    if b.len() < 16 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    const NAIVE: [&str; 4] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    if let Some(dt) = NAIVE.iter().find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok()) {
        return Some(dt.and_utc().timestamp_micros());
    }
    let (local, offset) = match text.strip_suffix(['Z', 'z']) {
        Some(local) => (local, "+00:00"),
        None => {
            let at = text.len().checked_sub(6)?;
            (text.get(..at)?, text.get(at..)?)
        }
    };
    let local = NAIVE.iter().find_map(|fmt| NaiveDateTime::parse_from_str(local, fmt).ok())?;
    let offset = chrono::DateTime::parse_from_rfc3339(&format!("1970-01-01T00:00:00{offset}")).ok()?;
    Some(
        (local - chrono::TimeDelta::seconds(i64::from(offset.offset().local_minus_utc()))).and_utc().timestamp_micros(),
    )
}

/// A decimal literal held exactly: `digits × 10^exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExactDecimal {
    negative: bool,
    /// Significant digits, most significant first, no leading zeros.
    digits: Vec<u8>,
    exp: i32,
}

impl ExactDecimal {
    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (at least one digit before or after the point).
    fn parse(s: &str) -> Option<ExactDecimal> {
        let b = s.as_bytes();
        let mut i = 0;
        let negative = match b.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut digits = Vec::with_capacity(b.len());
        let mut seen = 0;
        let mut frac = 0i32;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] - b'0');
            seen += 1;
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                digits.push(b[i] - b'0');
                frac += 1;
                seen += 1;
                i += 1;
            }
        }
        if seen == 0 {
            return None;
        }
        let mut exp = 0i32;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            let (sign, start) = match b.get(i) {
                Some(b'-') => (-1, i + 1),
                Some(b'+') => (1, i + 1),
                _ => (1, i),
            };
            let e = s.get(start..)?;
            if e.is_empty() || !e.bytes().all(|c| c.is_ascii_digit()) || e.len() > 6 {
                return None;
            }
            exp = sign * e.parse::<i32>().ok()?;
            i = b.len();
        }
        if i != b.len() {
            return None;
        }
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..lead);
        Some(ExactDecimal { negative, digits, exp: exp - frac })
    }

    /// The value scaled by 10^scale as an integer, rounded half away from zero, and whether it was
    /// exact. `None` on overflow.
    fn rescale(&self, scale: u8) -> Option<(i128, bool)> {
        let shift = self.exp + i32::from(scale);
        let (keep, dropped): (&[u8], &[u8]) = if shift >= 0 {
            (&self.digits, &[])
        } else {
            let cut = self.digits.len().saturating_sub(usize::try_from(-shift).ok()?);
            self.digits.split_at(cut)
        };
        let mut v: i128 = 0;
        for &d in keep {
            v = v.checked_mul(10)?.checked_add(i128::from(d))?;
        }
        if shift > 0 && v != 0 {
            v = v.checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?;
        }
        let exact = dropped.iter().all(|&d| d == 0);
        // Digits dropped past the available ones are zeros; only the first dropped digit decides.
        let first_dropped = if shift < 0 && usize::try_from(-shift).ok()? <= self.digits.len() {
            dropped.first().copied().unwrap_or(0)
        } else {
            0
        };
        if first_dropped >= 5 {
            v = v.checked_add(1)?;
        }
        Some((if self.negative { -v } else { v }, exact))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Date32Type, Decimal128Type, Float64Type, Int64Type};

    use super::*;

    fn field(tokens: &[(Kind, &str)]) -> RawField {
        let mut f = RawField { kinds: vec![], data: String::new(), offsets: vec![0] };
        for (k, t) in tokens {
            f.kinds.push(*k);
            f.data.push_str(t);
            f.offsets.push(f.data.len() as u32);
        }
        f
    }

    use Kind::{Bool as B, Missing as M, Nested as O, Null as N, Number as Num, String as S};

    #[test]
    fn int64_coercion_table() {
        let cases: &[(Kind, &str, Option<i64>, Fault)] = &[
            (Num, "123", Some(123), Fault::None),
            (S, "123", Some(123), Fault::None),
            (S, " 123 ", Some(123), Fault::None),
            (S, "1_000", Some(1000), Fault::None),
            (S, "123.0", Some(123), Fault::None),
            (Num, "123.0", Some(123), Fault::None),
            (Num, "1e3", Some(1000), Fault::None),
            (Num, "123.5", None, Fault::NotWhole),
            (S, "C-123", None, Fault::Type),
            (S, "1__0", None, Fault::Type),
            (S, "_1", None, Fault::Type),
            (B, "true", None, Fault::Type),
            (O, "[1]", None, Fault::Type),
            (Num, "99999999999999999999", None, Fault::Range),
            (M, "", None, Fault::Missing),
            (N, "", None, Fault::Null),
        ];
        let f = field(&cases.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>());
        let out = coerce(&f, ColumnType::Int64, true, &[], None);
        let arr = out.array.as_primitive::<Int64Type>();
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(arr.is_valid(i).then(|| arr.value(i)), c.2, "{c:?}");
            assert_eq!(out.faults[i], c.3, "{c:?}");
        }
    }

    #[test]
    fn decimal_is_exact_and_rounds_half_away_from_zero() {
        let cases: &[(Kind, &str, Option<i128>, Fault)] = &[
            (Num, "12.34", Some(1234), Fault::None),
            (S, "12.34", Some(1234), Fault::None),
            (Num, "0", Some(0), Fault::None),
            (Num, "2.675", Some(268), Fault::None),
            (Num, "12.345", Some(1235), Fault::None),
            (Num, "-12.345", Some(-1235), Fault::None),
            (Num, "12.344999", Some(1234), Fault::None),
            (Num, "0.004", Some(0), Fault::None),
            (Num, "1.5e2", Some(15000), Fault::None),
            (Num, "1E-3", Some(0), Fault::None),
            (Num, "0.0000000000000000000000000000000000000000001", Some(0), Fault::None),
            (S, "nan", None, Fault::NotFinite),
            (S, "-Infinity", None, Fault::NotFinite),
            (S, "12,34", None, Fault::Type),
            (S, "", None, Fault::Type),
            (S, ".", None, Fault::Type),
            (Num, "1e20", None, Fault::Range),
        ];
        let f = field(&cases.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>());
        let out = coerce(&f, ColumnType::Decimal { precision: 18, scale: 2 }, true, &[], None);
        let arr = out.array.as_primitive::<Decimal128Type>();
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(arr.is_valid(i).then(|| arr.value(i)), c.2, "{c:?}");
            assert_eq!(out.faults[i], c.3, "{c:?}");
        }
    }

    #[test]
    fn float_refuses_non_finite() {
        let f = field(&[(Num, "1.5"), (S, " 12.5 "), (S, "nan"), (S, "inf"), (S, "-infinity"), (B, "true")]);
        let out = coerce(&f, ColumnType::Float64, true, &[], None);
        let arr = out.array.as_primitive::<Float64Type>();
        assert_eq!((arr.value(0), arr.value(1)), (1.5, 12.5));
        assert_eq!(&out.faults[2..], &[Fault::NotFinite, Fault::NotFinite, Fault::NotFinite, Fault::Type]);
    }

    /// A `json` column keeps any JSON value as its text: an object or array as the record wrote
    /// it, a number or boolean as its literal, a string quoted, unless the string is itself the
    /// text of an object or array (a double-encoded value, a CSV cell holding JSON).
    #[test]
    fn json_columns_keep_any_value_as_its_json_text() {
        let f = field(&[
            (O, "[{\"name\": \"bug\"}]"),
            (O, "{\"a\": 1}"),
            (Num, "1.50"),
            (B, "true"),
            (S, "plain \"text\""),
            (S, "[1, 2]"),
            (S, "{not json"),
            (S, "NA"),
            (N, ""),
            (M, ""),
        ]);
        let out = coerce(&f, ColumnType::Json, false, &["NA".to_string()], None);
        let text = out.array.as_string::<i32>();
        let got: Vec<Option<&str>> = (0..text.len()).map(|i| text.is_valid(i).then(|| text.value(i))).collect();
        assert_eq!(
            got,
            [
                Some("[{\"name\": \"bug\"}]"),
                Some("{\"a\": 1}"),
                Some("1.50"),
                Some("true"),
                Some("\"plain \\\"text\\\"\""),
                Some("[1, 2]"),
                Some("\"{not json\""),
                None,
                None,
                None,
            ]
        );
        assert!(out.faults.iter().all(|f| *f == Fault::None));
        assert_eq!("JSON".parse::<ColumnType>(), Ok(ColumnType::Json));
        assert_eq!(ColumnType::Json.to_string(), "json");
        assert!(Format::parse("%Y", ColumnType::Json).is_err());
        assert!(reads_as("anything", ColumnType::Json, None));
    }

    #[test]
    fn dates_and_strings() {
        let f = field(&[
            (S, "2024-01-15"),
            (S, "2024-01-15T00:00:00"),
            (S, "2024-01-15T00:00:00.000Z"),
            (S, "2024-02-29"),
            (S, "2024-01-15T10:00:00"),
            (S, "2024-13-01"),
            (S, "2024-0a-15"),
            (S, "+024-01-15"),
            (S, "2023-02-29"),
            (S, "15/01/2024"),
            (S, "20240115"),
            (Num, "1705276800"),
            (S, "2024-02-30"),
            (S, " 2024-01-15"),
        ]);
        let out = coerce(&f, ColumnType::Date, true, &[], None);
        let arr = out.array.as_primitive::<Date32Type>();
        assert_eq!((arr.value(0), arr.value(3)), (19737, 19782));
        assert_eq!(&out.faults[..4], &[Fault::None; 4]);
        assert!(out.faults[4..].iter().all(|f| *f == Fault::Type), "{:?}", out.faults);

        let f = field(&[(S, "usd"), (Num, "5"), (M, "")]);
        let out = coerce(&f, ColumnType::String, false, &[], None);
        assert_eq!(out.faults, vec![Fault::None, Fault::Type, Fault::None]);
        assert_eq!(out.array.as_string::<i32>().value(0), "usd");
        assert!(out.array.is_null(2));
    }

    #[test]
    fn timestamps_and_bools() {
        assert_eq!(parse_timestamp("2024-03-01T00:00:00.000001+00:00"), Some(1_709_251_200_000_001));
        assert_eq!(parse_timestamp("2024-03-01T01:00:00+01:00"), Some(1_709_251_200_000_000));
        assert_eq!(parse_timestamp("2024-03-01 00:00:00"), Some(1_709_251_200_000_000));
        assert_eq!(parse_timestamp("yesterday"), None);
        // A date alone is its midnight, UTC (Pydantic's lax mode, DuckDB, Spark); not a short year.
        assert_eq!(parse_timestamp("2024-03-01"), Some(1_709_251_200_000_000));
        assert_eq!(parse_timestamp("1969-12-31"), Some(-86_400_000_000));
        for text in ["2024-02-30", "24-03-01-0", "2024/03/01", "20240301"] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
        // Seconds may be left out (Pydantic, DuckDB and Spark read these); an offset converts.
        let half_past_ten = Some(1_709_289_000_000_000);
        for text in ["2024-03-01T10:30", "2024-03-01 10:30", "2024-03-01T10:30Z", "2024-03-01 11:30+01:00"] {
            assert_eq!(parse_timestamp(text), half_past_ten, "{text}");
        }
        assert_eq!(parse_timestamp("2024-03-01 11:30:00+01:00"), half_past_ten);
        // A year of four digits, and a whole time of day.
        for text in [
            "24-03-01 10:30:00",
            "24-03-01T10:30",
            "2024-03-01 10",
            "2024-03-01 10:30:",
            "2024-03-01T25:00",
            "2024-03-01 10:3€00000",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
        let f = field(&[(B, "true"), (S, "No"), (Num, "1"), (Num, "2"), (S, "maybe")]);
        let out = coerce(&f, ColumnType::Bool, true, &[], None);
        assert_eq!(&out.faults[..3], &[Fault::None; 3]);
        assert_eq!(&out.faults[3..], &[Fault::Type, Fault::Type]);
    }

    #[test]
    fn null_markers_read_as_null_in_any_type() {
        let f = field(&[(Kind::String, "NA"), (Kind::String, " NULL "), (Kind::Number, "7"), (Kind::String, "N/A")]);
        let nulls = ["NA".to_string(), "NULL".to_string()];
        let out = coerce(&f, ColumnType::Int64, false, &nulls, None);
        assert_eq!(out.faults, vec![Fault::None, Fault::None, Fault::None, Fault::Type]);
        assert_eq!((out.array.null_count(), out.array.len()), (3, 4));
        let required = coerce(&f, ColumnType::Int64, true, &nulls, None);
        assert_eq!(required.faults[..2], [Fault::Null, Fault::Null]);
        let text = coerce(&f, ColumnType::String, false, &nulls, None);
        assert_eq!(
            text.faults,
            vec![Fault::None, Fault::None, Fault::Type, Fault::None],
            "markers are null in text too"
        );
        assert_eq!(text.array.null_count(), 3, "the two markers, and the number refused for text");
        let none = coerce(&f, ColumnType::String, false, &[], None);
        assert_eq!(none.array.null_count(), 1, "without markers only the number is refused");
    }

    #[test]
    fn dates_and_timestamps_read_by_a_pattern() {
        let dmy = Format::parse("%d/%m/%Y", ColumnType::Date).expect("a format");
        let f = field(&[(S, "15/01/2024"), (S, " 01/02/2024 "), (S, "2024-01-15"), (S, "31/02/2024"), (Num, "15")]);
        let out = coerce(&f, ColumnType::Date, true, &[], Some(&dmy));
        let arr = out.array.as_primitive::<Date32Type>();
        assert_eq!((arr.value(0), arr.value(1)), (19737, 19754), "15 January and 1 February 2024");
        assert_eq!(out.faults, [Fault::None, Fault::None, Fault::Type, Fault::Type, Fault::Type]);
        assert!(!reads_as("13/02/24", ColumnType::Date, Some(&dmy)), "a two-digit year is not the year 24");
        assert!(reads_as("3/2/2024", ColumnType::Date, Some(&dmy)), "days and months without their zero");
        let (rule, message) = Fault::Type.describe(S, "2024-01-15", ColumnType::Date, Some(&dmy));
        assert_eq!(
            (rule, message.as_str()),
            ("type", r#"cannot read string "2024-01-15" as date in format "%d/%m/%Y""#)
        );

        let ts = Format::parse("%d.%m.%Y %H:%M", ColumnType::Timestamp).expect("a format");
        let day = Format::parse("%m/%d/%Y", ColumnType::Timestamp).expect("a format");
        let zoned = Format::parse("%d.%m.%Y %H:%M %z", ColumnType::Timestamp).expect("a format");
        let f = field(&[(S, "01.03.2024 01:30"), (S, "01.03.2024 01:30 +0100"), (S, "03/01/2024")]);
        let micros = |fmt: &Format, row: usize| {
            let out = coerce(&f, ColumnType::Timestamp, false, &[], Some(fmt));
            let arr = out.array.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            arr.is_valid(row).then(|| arr.value(row))
        };
        assert_eq!(micros(&ts, 0), Some(1_709_251_200_000_000 + 5_400_000_000), "no offset is UTC");
        assert_eq!(micros(&zoned, 1), Some(1_709_251_200_000_000 + 1_800_000_000), "an offset converts");
        assert_eq!(micros(&day, 2), Some(1_709_251_200_000_000), "a pattern without a time reads midnight");
        assert_eq!(micros(&ts, 2), None);

        for (bad, ty, why) in [
            ("%d/%m", ColumnType::Date, "does not name a whole date"),
            ("%H:%M", ColumnType::Timestamp, "does not name a whole date"),
            ("%d/%m/%Q", ColumnType::Date, "is not a strftime pattern"),
            ("%Y", ColumnType::String, "applies to date, timestamp and number columns, not string"),
        ] {
            let e = Format::parse(bad, ty).expect_err("not a format");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_read_as_the_format_writes_1234_56() {
        let eu = Format::parse("1.234,56", ColumnType::Decimal { precision: 18, scale: 2 }).expect("a format");
        let cases: &[(Kind, &str, Option<i128>)] = &[
            (S, "1.234,56", Some(123_456)),
            (S, "-1.234.567,8", Some(-123_456_780)),
            (S, "12,5", Some(1250)),
            (S, " 7 ", Some(700)),
            (Num, "3.25", Some(325)),
            (S, "1.23,4", None),
            (S, "1,234.56", None),
            (S, "12,", None),
            (S, ".234", None),
        ];
        let f = field(&cases.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>());
        let out = coerce(&f, ColumnType::Decimal { precision: 18, scale: 2 }, true, &[], Some(&eu));
        let arr = out.array.as_primitive::<Decimal128Type>();
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(arr.is_valid(i).then(|| arr.value(i)), c.2, "{c:?}");
            assert_eq!(out.faults[i] == Fault::None, c.2.is_some(), "{c:?}");
        }

        let fr = Format::parse("1 234,56", ColumnType::Float64).expect("a format");
        let f = field(&[(S, "1\u{202f}234,5"), (S, "2 000"), (S, "2,5e3")]);
        let out = coerce(&f, ColumnType::Float64, true, &[], Some(&fr));
        let arr = out.array.as_primitive::<Float64Type>();
        assert_eq!((arr.value(0), arr.value(1)), (1234.5, 2000.0), "any space separates thousands");
        assert_eq!(out.faults[2], Fault::Type);

        let us = Format::parse("1,234", ColumnType::Int64).expect("a format");
        let f = field(&[(S, "1,234,567"), (S, "1,234.5")]);
        let out = coerce(&f, ColumnType::Int64, true, &[], Some(&us));
        assert_eq!(out.array.as_primitive::<Int64Type>().value(0), 1_234_567);
        assert_eq!(out.faults[1], Fault::NotWhole);

        let dollars = Format::parse("$1,234.56", ColumnType::Float64).expect("a format");
        let euros = Format::parse("1.234,56 €", ColumnType::Float64).expect("a format");
        for (text, format, want) in [
            ("$1,234.50", &dollars, Some(1234.5)),
            ("-$3", &dollars, Some(-3.0)),
            ("$ -3", &dollars, Some(-3.0)),
            ("12.5", &dollars, Some(12.5)),
            ("12.5$", &dollars, None),
            ("12,50 €", &euros, Some(12.5)),
            ("-1.000€", &euros, Some(-1000.0)),
            ("€12", &euros, None),
        ] {
            let got = reads_as(text, ColumnType::Float64, Some(format)).then(|| {
                let f = field(&[(S, text)]);
                coerce(&f, ColumnType::Float64, true, &[], Some(format)).array.as_primitive::<Float64Type>().value(0)
            });
            assert_eq!(got, want, "{text}");
        }
        let eu_ints = Format::parse("1.234", ColumnType::Int64).expect("a format");
        assert!(reads_as("1.234.567", ColumnType::Int64, Some(&eu_ints)), "whole numbers with dots between thousands");

        for bad in ["1.234.56", "1234", "1,234,56", "12.34", "1 234 56", "1.234,5", "1234,56 7", "-1234"] {
            let ok = Format::parse(bad, ColumnType::Float64).is_ok();
            assert_eq!(ok, bad == "1234", "{bad}");
        }
    }

    /// The allocation-free decimal parser agrees with the exact one wherever it answers.
    #[test]
    fn plain_decimals_read_as_exact_ones_do() {
        let mut seed: u64 = 42;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut answered = 0;
        for _ in 0..20_000 {
            let mut s = String::new();
            match next(4) {
                0 => s.push('-'),
                1 => s.push('+'),
                _ => {}
            }
            for _ in 0..next(25) {
                s.push(char::from(b'0' + next(10) as u8));
            }
            if next(3) > 0 {
                s.push('.');
                for _ in 0..next(12) {
                    s.push(char::from(b'0' + [next(10), 5, 4, 9][next(4) as usize] as u8));
                }
            }
            let scale = next(8) as u8;
            let exact = ExactDecimal::parse(&s).and_then(|d| d.rescale(scale)).map(|(v, _)| v);
            if let Some(v) = plain_decimal(&s, scale) {
                assert_eq!(Some(v), exact, "{s} at scale {scale}");
                answered += 1;
            }
        }
        assert!(answered > 15_000, "{answered}");
        for s in ["1e3", ".", "", "-", "1.2.3", "12a"] {
            assert_eq!(plain_decimal(s, 2), None, "{s}");
        }
    }
}
