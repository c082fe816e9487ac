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

use std::sync::Arc;

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
    pub fn describe(self, kind: Kind, text: &str, ty: ColumnType) -> (&'static str, String) {
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
            Fault::Type => ("type", format!("cannot read {what} as {ty}")),
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

/// Coerces `field` to `ty`. A string equal to one of `nulls` (surrounding whitespace aside) is
/// read as JSON `null` (the source's or column's `null_values`).
pub fn coerce(field: &RawField, ty: ColumnType, required: bool, nulls: &[String]) -> Coerced {
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
    let array = match ty {
        ColumnType::Int64 => run!(Int64Builder::with_capacity(n), parse_int),
        ColumnType::Float64 => run!(Float64Builder::with_capacity(n), parse_float),
        ColumnType::Decimal { precision, scale } => {
            let builder = Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(precision, i8::try_from(scale).unwrap_or(0))
                .unwrap_or_else(|_| Decimal128Builder::with_capacity(n));
            run!(builder, |k, t| parse_decimal_token(k, t, precision, scale))
        }
        ColumnType::String => run!(StringBuilder::with_capacity(n, field.data.len()), parse_string),
        ColumnType::Bool => run!(BooleanBuilder::with_capacity(n), parse_bool),
        ColumnType::Date => run!(Date32Builder::with_capacity(n), parse_date),
        ColumnType::Timestamp => {
            run!(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"), |k, t| match k {
                Kind::String => parse_timestamp(t).ok_or(Fault::Type),
                _ => Err(Fault::Type),
            })
        }
    };
    Coerced { array, faults }
}

/// Whether the string `text` coerces to a value of `ty` (a null marker that does is also a value).
pub fn reads_as(text: &str, ty: ColumnType) -> bool {
    let s = Kind::String;
    match ty {
        ColumnType::Int64 => parse_int(s, text).is_ok(),
        ColumnType::Float64 => parse_float(s, text).is_ok(),
        ColumnType::Decimal { precision, scale } => parse_decimal_token(s, text, precision, scale).is_ok(),
        ColumnType::String => true,
        ColumnType::Bool => parse_bool(s, text).is_ok(),
        ColumnType::Date => parse_date(s, text).is_ok(),
        ColumnType::Timestamp => parse_timestamp(text).is_some(),
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

/// Microseconds since the epoch, UTC.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    None
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
        let out = coerce(&f, ColumnType::Int64, true, &[]);
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
        let out = coerce(&f, ColumnType::Decimal { precision: 18, scale: 2 }, true, &[]);
        let arr = out.array.as_primitive::<Decimal128Type>();
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(arr.is_valid(i).then(|| arr.value(i)), c.2, "{c:?}");
            assert_eq!(out.faults[i], c.3, "{c:?}");
        }
    }

    #[test]
    fn float_refuses_non_finite() {
        let f = field(&[(Num, "1.5"), (S, " 12.5 "), (S, "nan"), (S, "inf"), (S, "-infinity"), (B, "true")]);
        let out = coerce(&f, ColumnType::Float64, true, &[]);
        let arr = out.array.as_primitive::<Float64Type>();
        assert_eq!((arr.value(0), arr.value(1)), (1.5, 12.5));
        assert_eq!(&out.faults[2..], &[Fault::NotFinite, Fault::NotFinite, Fault::NotFinite, Fault::Type]);
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
        let out = coerce(&f, ColumnType::Date, true, &[]);
        let arr = out.array.as_primitive::<Date32Type>();
        assert_eq!((arr.value(0), arr.value(3)), (19737, 19782));
        assert_eq!(&out.faults[..4], &[Fault::None; 4]);
        assert!(out.faults[4..].iter().all(|f| *f == Fault::Type), "{:?}", out.faults);

        let f = field(&[(S, "usd"), (Num, "5"), (M, "")]);
        let out = coerce(&f, ColumnType::String, false, &[]);
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
        let f = field(&[(B, "true"), (S, "No"), (Num, "1"), (Num, "2"), (S, "maybe")]);
        let out = coerce(&f, ColumnType::Bool, true, &[]);
        assert_eq!(&out.faults[..3], &[Fault::None; 3]);
        assert_eq!(&out.faults[3..], &[Fault::Type, Fault::Type]);
    }

    #[test]
    fn null_markers_read_as_null_in_any_type() {
        let f = field(&[(Kind::String, "NA"), (Kind::String, " NULL "), (Kind::Number, "7"), (Kind::String, "N/A")]);
        let nulls = ["NA".to_string(), "NULL".to_string()];
        let out = coerce(&f, ColumnType::Int64, false, &nulls);
        assert_eq!(out.faults, vec![Fault::None, Fault::None, Fault::None, Fault::Type]);
        assert_eq!((out.array.null_count(), out.array.len()), (3, 4));
        let required = coerce(&f, ColumnType::Int64, true, &nulls);
        assert_eq!(required.faults[..2], [Fault::Null, Fault::Null]);
        let text = coerce(&f, ColumnType::String, false, &nulls);
        assert_eq!(
            text.faults,
            vec![Fault::None, Fault::None, Fault::Type, Fault::None],
            "markers are null in text too"
        );
        assert_eq!(text.array.null_count(), 3, "the two markers, and the number refused for text");
        let none = coerce(&f, ColumnType::String, false, &[]);
        assert_eq!(none.array.null_count(), 1, "without markers only the number is refused");
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
