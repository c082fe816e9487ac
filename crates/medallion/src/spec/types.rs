//! Column types, refresh cadences and durations as written in project files.

use std::fmt;
use std::str::FromStr;

/// A contract column's logical type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float (finite values only).
    Float64,
    /// Exact decimal with precision (1..=38) and scale (0..=precision).
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// UTF-8 text.
    String,
    /// Boolean.
    Bool,
    /// Calendar date.
    Date,
    /// UTC timestamp (microseconds).
    Timestamp,
    /// Any JSON value, stored as its JSON text (an object or array as the record wrote it).
    Json,
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "int64" | "bigint" | "int" | "integer" | "long" => ColumnType::Int64,
            "float64" | "double" | "float" => ColumnType::Float64,
            "string" | "str" | "text" | "utf8" | "varchar" => ColumnType::String,
            "bool" | "boolean" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            _ => {
                return parse_decimal(&t).ok_or_else(|| {
                    format!(
                        "unknown type `{s}`; expected int64, float64, decimal(p,s), string, bool, date, timestamp or json"
                    )
                });
            }
        })
    }
}

fn parse_decimal(t: &str) -> Option<ColumnType> {
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    let precision: u8 = p.trim().parse().ok()?;
    let scale: u8 = s.trim().parse().ok()?;
    ((1..=38).contains(&precision) && scale <= precision).then_some(ColumnType::Decimal { precision, scale })
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Int64 => f.write_str("int64"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Json => f.write_str("json"),
        }
    }
}

/// How often a gold model is expected to be refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    /// Every run.
    OnRun,
    /// Once an hour.
    Hourly,
    /// Once a day.
    Daily,
    /// Once a week.
    Weekly,
}

impl FromStr for Refresh {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on_run" => Ok(Refresh::OnRun),
            "hourly" | "@hourly" => Ok(Refresh::Hourly),
            "daily" | "@daily" => Ok(Refresh::Daily),
            "weekly" | "@weekly" => Ok(Refresh::Weekly),
            _ => Err(format!("unknown refresh `{s}`; expected on_run, hourly, daily or weekly")),
        }
    }
}

/// A span of time written like `90s`, `30m`, `6h`, `1d`, `1w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Duration {
    /// Length in seconds.
    pub seconds: u64,
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid duration `{s}`; expected a number and a unit: 90s, 30m, 6h, 1d, 1w");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| err())?;
        let mult = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(err()),
        };
        Ok(Duration { seconds: n * mult })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types() {
        assert_eq!("int64".parse(), Ok(ColumnType::Int64));
        assert_eq!("decimal(18, 2)".parse(), Ok(ColumnType::Decimal { precision: 18, scale: 2 }));
        assert!("decimal(40,2)".parse::<ColumnType>().is_err());
        assert!("decimal(5,6)".parse::<ColumnType>().is_err());
        assert!("int65".parse::<ColumnType>().is_err());
        assert_eq!(ColumnType::Decimal { precision: 18, scale: 2 }.to_string(), "decimal(18,2)");
    }

    #[test]
    fn parses_durations() {
        assert_eq!("6h".parse::<Duration>().map(|d| d.seconds), Ok(21_600));
        assert_eq!("1d".parse::<Duration>().map(|d| d.seconds), Ok(86_400));
        assert!("6 hours".parse::<Duration>().is_err());
        assert!("h".parse::<Duration>().is_err());
    }
}
