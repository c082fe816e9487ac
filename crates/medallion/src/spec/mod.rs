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
}
