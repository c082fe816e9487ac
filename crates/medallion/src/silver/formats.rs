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
    /// The weight of the values it reads.
    pub reads: u64,
    /// Whether another format of the same type read as much (day and month told apart by no
    /// value).
    pub ambiguous: bool,
}

/// The format reading the most of `values` (each with its weight: how many records hold it), at
/// least `share` of their weight: of numbers (as int64 when every value read is whole, else
/// float64), dates and timestamps, in that order where two read as much; for a column of type
/// `ty`, only formats of that type.
pub fn guess(values: &[(&str, u64)], ty: Option<ColumnType>, share: f64) -> Option<Guess> {
    let total: u64 = values.iter().map(|(_, n)| n).sum();
    let reads = |ty: ColumnType, f: &Format| -> u64 {
        values.iter().filter(|(v, _)| reads_as(v, ty, Some(f))).map(|(_, n)| n).sum()
    };
    let wanted = |t: ColumnType| ty.is_none_or(|want| want == t);
    let mut candidates: Vec<(ColumnType, Format)> = Vec::new();
    let number = match ty {
        None => Some(ColumnType::Float64),
        Some(t @ (ColumnType::Int64 | ColumnType::Float64 | ColumnType::Decimal { .. })) => Some(t),
        Some(_) => None,
    };
    if let Some(as_ty) = number {
        let (prefix, suffix) = affixes(values, share);
        for text in NUMBER_FORMATS {
            if let Ok(f) = Format::parse(&format!("{prefix}{text}{suffix}"), as_ty) {
                candidates.push((as_ty, f));
            }
        }
    }
    let times: &[(ColumnType, &[&str])] = &[(ColumnType::Date, &[""]), (ColumnType::Timestamp, &TIMES)];
    for &(as_ty, times) in times.iter().filter(|(t, _)| wanted(*t)) {
        for time in times {
            candidates.extend(
                DATE_FORMATS
                    .iter()
                    .filter_map(|d| Format::parse(&format!("{d}{time}"), as_ty).ok().map(|f| (as_ty, f))),
            );
        }
    }
    let read: Vec<(u64, ColumnType, Format)> = candidates.into_iter().map(|(t, f)| (reads(t, &f), t, f)).collect();
    let most =
        read.iter().map(|(n, ..)| *n).max().filter(|&n| total > 0 && n > 0 && n as f64 >= share * total as f64)?;
    let mut best = read.iter().filter(|(n, ..)| *n == most);
    let (n, as_ty, format) = best.next()?;
    let numeric = matches!(as_ty, ColumnType::Float64 | ColumnType::Int64 | ColumnType::Decimal { .. });
    // Another date pattern reading as much (day first, month first); numbers all read `12` alike.
    let ambiguous = !numeric && best.any(|(_, t, _)| t == as_ty);
    let whole = ty.is_none() && numeric && reads(ColumnType::Int64, format) == *n;
    let ty = if whole { ColumnType::Int64 } else { *as_ty };
    Some(Guess { ty, format: format.clone(), reads: *n, ambiguous })
}

/// Currency symbols a number's format may carry around its digits (besides three-letter codes).
const CURRENCIES: [&str; 11] = ["$", "€", "£", "¥", "₹", "₽", "₩", "₺", "₪", "%", "US$"];

/// The currency most values write before and after their digits (`$`, ` €`, `EUR `), when at
/// least `share` of their weight does; empty otherwise. Only symbols and three-letter codes: a
/// letter before a number is more likely an id's (`C-1234`).
fn affixes(values: &[(&str, u64)], share: f64) -> (String, String) {
    let total: u64 = values.iter().map(|(_, n)| n).sum();
    let number = |c: char| c.is_ascii_digit() || matches!(c, '-' | '+');
    let currency = |r: &str| {
        let t = r.trim();
        CURRENCIES.contains(&t) || (t.len() == 3 && t.bytes().all(|b| b.is_ascii_uppercase()))
    };
    let common = |runs: Vec<(&str, u64)>| {
        let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for (r, n) in runs.into_iter().filter(|(r, _)| currency(r)) {
            *counts.entry(r).or_default() += n;
        }
        let best = counts.into_iter().max_by_key(|(_, n)| *n);
        best.filter(|(_, n)| *n as f64 >= share * total as f64).map_or(String::new(), |(r, _)| r.to_string())
    };
    // A sign may come before the prefix (`-$3`).
    let lead = values
        .iter()
        .map(|(v, n)| (v.trim_start().trim_start_matches(['-', '+']), *n))
        .map(|(v, n)| (&v[..v.find(number).unwrap_or(v.len())], n))
        .collect();
    let tail = values
        .iter()
        .map(|(v, n)| (v.trim_end(), *n))
        .map(|(v, n)| (&v[v.rfind(|c: char| c.is_ascii_digit()).map_or(v.len(), |i| i + 1)..], n))
        .collect();
    (common(lead), common(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(g: Option<Guess>) -> Option<(String, String, u64, bool)> {
        g.map(|g| (g.ty.to_string(), g.format.text().to_string(), g.reads, g.ambiguous))
    }

    #[test]
    fn the_first_format_reading_enough_values_wins() {
        let s = |v: &[&str], ty, share| shown(guess(&v.iter().map(|v| (*v, 1)).collect::<Vec<_>>(), ty, share));
        let g = |t: &str, f: &str, n: u64, a: bool| Some((t.to_string(), f.to_string(), n, a));
        assert_eq!(s(&["1.234,5", "-3,25"], None, 0.99), g("float64", "1.234,56", 2, false));
        assert_eq!(s(&["1,234,567", "12"], None, 0.99), g("int64", "1,234.56", 2, false));
        assert_eq!(s(&["31/12/2024", "01/02/2024"], None, 0.99), g("date", "%d/%m/%Y", 2, false));
        assert_eq!(s(&["01/02/2024", "03/04/2024"], None, 0.99), g("date", "%d/%m/%Y", 2, true));
        assert_eq!(s(&["12/31/2024 10:00", "x"], None, 0.5), g("timestamp", "%m/%d/%Y %H:%M", 1, false));
        assert_eq!(s(&["12/31/2024 10:00", "x"], None, 0.99), None);
        assert_eq!(s(&["2024-12-31 10:00"], None, 0.99), g("timestamp", "%Y-%m-%d %H:%M", 1, false));
        assert_eq!(s(&["13/02/24", "14/03/25"], None, 0.99), g("date", "%d/%m/%y", 2, false), "two-digit years");
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
        // A letter before the digits is an id's, not a currency: `C-7` is no number.
        assert_eq!(s(&["C-7", "C-12"], Some(ColumnType::Int64), 0.5), None);
        // Weights are records: the format most records' values read wins, not the first to pass.
        let weighted =
            [("31.12.2024", 900), ("01.02.2024", 800), ("13/02/2024", 1), ("14/02/2024", 1), ("15/02/2024", 1)];
        assert_eq!(shown(guess(&weighted, Some(ColumnType::Date), 0.5)), g("date", "%d.%m.%Y", 1700, false));
    }
}
