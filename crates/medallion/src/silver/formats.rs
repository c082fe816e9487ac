//! Guessing a column's `format` from its values: how numbers and dates are written where the
//! defaults do not read them (`1.234,56`, `31/12/2024`). `medallion import files` guesses the
//! formats of a new contract's columns; `medallion quarantine` hints at one for a column whose
//! dead letter holds values the guess reads.

use super::coerce::{Format, reads_as};
use crate::spec::ColumnType;

/// Ways of writing 1234.56 tried, in order.
const NUMBER_FORMATS: [&str; 4] = ["1.234,56", "1,234.56", "1 234,56", "1'234.56"];

/// Date patterns tried, day first before month first (where both read as many values, the guess
/// says it is ambiguous); each with a time of day too, for timestamps (ISO dates read by default,
/// but not with a time lacking its seconds).
const DATE_FORMATS: [&str; 8] =
    ["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d/%m/%y", "%m/%d/%y", "%Y-%m-%d"];

/// Times of day tried after a date pattern, for timestamps ("": midnight).
const TIMES: [&str; 4] = [" %H:%M:%S", " %H:%M", "T%H:%M", ""];

/// A format that reads a column's values.
#[derive(Debug, Clone)]
pub struct Guess {
    /// The type it reads them as.
    pub ty: ColumnType,
    /// The format.
    pub format: Format,
    /// Values it reads.
    pub reads: usize,
    /// Whether another format read as many values (day and month told apart by no value).
    pub ambiguous: bool,
}

/// The format reading the most of `values`, at least `share` of them: numbers first (as int64
/// when every value read is whole, else float64), then dates, then timestamps; for a column of
/// type `ty`, only formats of that type.
pub fn guess(values: &[&str], ty: Option<ColumnType>, share: f64) -> Option<Guess> {
    let reads = |ty: ColumnType, f: &Format| {
        let n = values.iter().filter(|v| reads_as(v, ty, Some(f))).count();
        (!values.is_empty() && n as f64 >= share * values.len() as f64).then_some(n)
    };
    let wanted = |t: ColumnType| ty.is_none_or(|want| want == t);
    let number = match ty {
        None => Some(ColumnType::Float64),
        Some(t @ (ColumnType::Int64 | ColumnType::Float64 | ColumnType::Decimal { .. })) => Some(t),
        Some(_) => None,
    };
    if let Some(as_ty) = number {
        let (prefix, suffix) = affixes(values, share);
        for text in NUMBER_FORMATS {
            let Ok(f) = Format::parse(&format!("{prefix}{text}{suffix}"), as_ty) else { continue };
            if let Some(n) = reads(as_ty, &f) {
                let whole = ty.is_none() && reads(ColumnType::Int64, &f) == Some(n);
                let ty = if whole { ColumnType::Int64 } else { as_ty };
                return Some(Guess { ty, format: f, reads: n, ambiguous: false });
            }
        }
    }
    let times: &[(ColumnType, &[&str])] = &[(ColumnType::Date, &[""]), (ColumnType::Timestamp, &TIMES)];
    for &(as_ty, times) in times.iter().filter(|(t, _)| wanted(*t)) {
        for time in times {
            let read: Vec<(usize, Format)> = DATE_FORMATS
                .iter()
                .filter_map(|d| Format::parse(&format!("{d}{time}"), as_ty).ok())
                .filter_map(|f| reads(as_ty, &f).map(|n| (n, f)))
                .collect();
            let Some(most) = read.iter().map(|(n, _)| *n).max() else { continue };
            let mut best = read.into_iter().filter(|(n, _)| *n == most);
            if let Some((n, format)) = best.next() {
                return Some(Guess { ty: as_ty, format, reads: n, ambiguous: best.next().is_some() });
            }
        }
    }
    None
}

/// The text most values write before and after their digits (a currency: `$`, ` €`), when at
/// least `share` of them do; empty otherwise.
fn affixes(values: &[&str], share: f64) -> (String, String) {
    let number = |c: char| c.is_ascii_digit() || matches!(c, '-' | '+');
    let common = |runs: Vec<&str>| {
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for r in runs.into_iter().filter(|r| !r.trim().is_empty()) {
            *counts.entry(r).or_default() += 1;
        }
        let best = counts.into_iter().max_by_key(|(_, n)| *n);
        best.filter(|(_, n)| *n as f64 >= share * values.len() as f64).map_or(String::new(), |(r, _)| r.to_string())
    };
    // A sign may come before the prefix (`-$3`).
    let lead = values
        .iter()
        .map(|v| v.trim_start().trim_start_matches(['-', '+']))
        .map(|v| &v[..v.find(number).unwrap_or(v.len())])
        .collect();
    let tail = values
        .iter()
        .map(|v| v.trim_end())
        .map(|v| &v[v.rfind(|c: char| c.is_ascii_digit()).map_or(v.len(), |i| i + 1)..])
        .collect();
    (common(lead), common(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(g: Option<Guess>) -> Option<(String, String, usize, bool)> {
        g.map(|g| (g.ty.to_string(), g.format.text().to_string(), g.reads, g.ambiguous))
    }

    #[test]
    fn the_first_format_reading_enough_values_wins() {
        let s = |v: &[&str], ty, share| shown(guess(v, ty, share));
        let g = |t: &str, f: &str, n: usize, a: bool| Some((t.to_string(), f.to_string(), n, a));
        assert_eq!(s(&["1.234,5", "-3,25"], None, 0.99), g("float64", "1.234,56", 2, false));
        assert_eq!(s(&["1,234,567", "12"], None, 0.99), g("int64", "1,234.56", 2, false));
        assert_eq!(s(&["31/12/2024", "01/02/2024"], None, 0.99), g("date", "%d/%m/%Y", 2, false));
        assert_eq!(s(&["01/02/2024", "03/04/2024"], None, 0.99), g("date", "%d/%m/%Y", 2, true));
        assert_eq!(s(&["12/31/2024 10:00", "x"], None, 0.5), g("timestamp", "%m/%d/%Y %H:%M", 1, false));
        assert_eq!(s(&["12/31/2024 10:00", "x"], None, 0.99), None);
        assert_eq!(s(&["2024-12-31 10:00"], None, 0.99), g("timestamp", "%Y-%m-%d %H:%M", 1, false));
        assert_eq!(s(&["2024-12-31T10:00"], None, 0.99), g("timestamp", "%Y-%m-%dT%H:%M", 1, false));
        // A column's type limits the guess: dates for a timestamp read at midnight.
        assert_eq!(s(&["31.12.2024"], Some(ColumnType::Timestamp), 0.9), g("timestamp", "%d.%m.%Y", 1, false));
        assert_eq!(s(&["31.12.2024"], Some(ColumnType::Int64), 0.9), None);
        let dec = ColumnType::Decimal { precision: 10, scale: 2 };
        assert_eq!(s(&["1.234,56"], Some(dec), 0.9), g("decimal(10,2)", "1.234,56", 1, false));
        assert_eq!(s(&["1.234,56"], Some(ColumnType::String), 0.9), None);
        // Currencies around the digits are part of the format.
        assert_eq!(s(&["$1,234.50", "-$3.25", "$12"], None, 0.99), g("float64", "$1,234.56", 3, false));
        assert_eq!(s(&["12,50 €", "1.000 €"], None, 0.99), g("float64", "1.234,56 €", 2, false));
        assert_eq!(s(&["EUR 12", "EUR 1.000"], None, 0.99), g("int64", "EUR 1.234,56", 2, false));
    }
}
