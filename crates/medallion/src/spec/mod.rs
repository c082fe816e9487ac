//! The project format: raw serde types for `medallion.toml`, `silver/*.toml` and `gold/*.toml`,
//! their loading with file/line diagnostics, and column types.
//!
//! This module imports no arrow, DataFusion or deltalake (see STYLE.md §2): checks that need SQL
//! planning live in [`crate::project`], which turns these raw specs into a validated
//! [`crate::project::Project`].

mod diagnostic;
mod load;
mod types;

pub use diagnostic::Diagnostic;
pub use load::{LoadedSpecs, Located, load_specs};
pub use types::{ColumnType, Duration, Refresh};


use serde::Deserialize;

/// `[project]`: the project's identity and where its lake lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    /// Project name.
    pub name: String,
    /// Lake location: a directory (relative to the project) or, later, an object-store URL.
    #[serde(default)]
    pub lake: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// What a failed expectation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record the failure, publish anyway.
    Warn,
    /// Send failing rows to the dead letter with the expectation's name as the reason.
    Drop,
    /// Publish nothing from this run for the table; nothing downstream runs.
    #[default]
    Fail,
}

/// A row-level expectation: its name, what it checks (exactly one kind) and its action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectationSpec {
    /// Name, used as the reason in the dead letter and in results.
    pub name: String,
    /// What a failure does (default `fail`).
    #[serde(default)]
    pub action: Action,
    /// Any SQL boolean expression over the row.
    #[serde(default)]
    pub expect: Option<String>,
    /// A column that must not be null.
    #[serde(default)]
    pub not_null: Option<String>,
    /// A column whose non-null values must be among `values`.
    #[serde(default)]
    pub accepted_values: Option<AcceptedValues>,
    /// A column whose non-null values must lie in bounds.
    #[serde(default)]
    pub range: Option<RangeSpec>,
    /// A string column whose non-null values must match a regular expression.
    #[serde(default)]
    pub regex: Option<RegexSpec>,
}

/// `accepted_values = { column = "currency", values = ["USD", "EUR"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValues {
    /// Column.
    pub column: String,
    /// Allowed values (strings, numbers or booleans).
    pub values: Vec<toml::Value>,
}

/// `range = { column = "amount", min = 0, max = 10000, min_inclusive = false }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Column.
    pub column: String,
    /// Lower bound.
    #[serde(default)]
    pub min: Option<toml::Value>,
    /// Upper bound.
    #[serde(default)]
    pub max: Option<toml::Value>,
    /// Whether `min` itself passes (default true).
    #[serde(default = "yes")]
    pub min_inclusive: bool,
    /// Whether `max` itself passes (default true).
    #[serde(default = "yes")]
    pub max_inclusive: bool,
}

/// `regex = { column = "email", pattern = "^[^@]+@[^@]+$" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexSpec {
    /// Column.
    pub column: String,
    /// Pattern (Rust regex syntax), matched anywhere unless anchored.
    pub pattern: String,
}

impl ExpectationSpec {
    /// The expectation as one SQL boolean expression over a row (a null result fails), or why
    /// it is malformed. Value-set, range and regex expectations let nulls pass: use `not_null`.
    pub fn to_sql(&self) -> Result<String, String> {
        let kinds = [self.expect.is_some(), self.not_null.is_some(), self.accepted_values.is_some(), self.range.is_some(), self.regex.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("give exactly one of expect, not_null, accepted_values, range, regex".into());
        }
        if let Some(sql) = &self.expect {
            return Ok(format!("({sql})"));
        }
        if let Some(col) = &self.not_null {
            return Ok(format!("{} IS NOT NULL", ident(col)));
        }
        if let Some(a) = &self.accepted_values {
            if a.values.is_empty() {
                return Err("accepted_values needs at least one value".into());
            }
            let values = a.values.iter().map(literal).collect::<Result<Vec<_>, _>>()?;
            return Ok(format!("{c} IS NULL OR {c} IN ({})", values.join(", "), c = ident(&a.column)));
        }
        if let Some(r) = &self.range {
            let c = ident(&r.column);
            let mut parts = Vec::new();
            if let Some(min) = &r.min {
                parts.push(format!("{c} {} {}", if r.min_inclusive { ">=" } else { ">" }, literal(min)?));
            }
            if let Some(max) = &r.max {
                parts.push(format!("{c} {} {}", if r.max_inclusive { "<=" } else { "<" }, literal(max)?));
            }
            if parts.is_empty() {
                return Err("range needs min, max or both".into());
            }
            return Ok(format!("{c} IS NULL OR ({})", parts.join(" AND ")));
        }
        if let Some(r) = &self.regex {
            return Ok(format!("{c} IS NULL OR regexp_like({c}, {})", quote(&r.pattern), c = ident(&r.column)));
        }
        Err("give exactly one of expect, not_null, accepted_values, range, regex".into())
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn literal(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(quote(s)),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) if f.is_finite() => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("unsupported value {}; use a string, number or boolean", other.type_str())),
    }
}

/// Format of raw input files for a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// One JSON value per line (gzip accepted).
    #[default]
    Ndjson,
    /// One JSON array of records per file.
    Json,
    /// CSV with a header row; every value is kept as a string.
    Csv,
}

/// `[sources.<name>]`: a bronze source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Raw file format.
    #[serde(default)]
    pub format: SourceFormat,
    /// Paths or globs (relative to the project) that `run` ingests from, exactly once per content.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[silver.<name>]`: a typed contract over one source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilverSpec {
    /// The bronze source feeding this table (defaults to the table's name).
    #[serde(default)]
    pub source: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Owner (team or person).
    #[serde(default)]
    pub owner: Option<String>,
    /// Columns identifying a record; duplicates are resolved per key.
    pub primary_key: Vec<String>,
    /// Column deciding which duplicate wins (greatest wins); default `_ingested_at`.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Delta partition columns.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// The contract, in table order.
    pub columns: Vec<ColumnSpec>,
    /// Row-level checks over several columns (SQL boolean expressions).
    #[serde(default)]
    pub checks: Vec<String>,
    /// Quality gates evaluated on the run's candidate rows before anything is committed.
    #[serde(default)]
    pub expectations: Vec<ExpectationSpec>,
}

/// One contract column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Type: `int64`, `float64`, `decimal(p,s)`, `string`, `bool`, `date`, `timestamp`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether a missing or null value rejects the record (default true).
    #[serde(default = "yes")]
    pub required: bool,
    /// SQL expression computing the stored value from the coerced one (e.g. `upper(currency)`).
    #[serde(default)]
    pub transform: Option<String>,
    /// SQL boolean expressions the stored value must satisfy.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}

/// `[gold.<name>]`: a SQL model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldSpec {
    /// SQL file relative to the project (default `gold/<name>.sql`).
    #[serde(default)]
    pub sql: Option<String>,
    /// Who answers for the table.
    pub owner: String,
    /// Refresh cadence: `hourly`, `daily`, `weekly`, `on_run`.
    pub refresh: String,
    /// Maximum staleness consumers accept, e.g. `6h`, `1d`, `30m`.
    pub sla: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Quality gates evaluated on the model's result before it is written.
    #[serde(default)]
    pub expectations: Vec<ExpectationSpec>,
}
