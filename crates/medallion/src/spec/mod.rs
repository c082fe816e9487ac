//! The project format: raw serde types for `medallion.toml`, `silver/*.toml` and `gold/*.toml`,
//! their loading with file/line diagnostics, and column types.
//!
//! This module imports no arrow, DataFusion or deltalake (see STYLE.md §2): checks that need SQL
//! planning live in [`crate::project`], which turns these raw specs into a validated
//! [`crate::project::Project`].

mod diagnostic;
pub mod env;
mod load;
mod types;

use serde::Deserialize;

pub use diagnostic::Diagnostic;
pub use load::{LoadedSpecs, Located, PROJECT_FILE, load_specs};
pub use types::{ColumnType, Duration, Refresh};

/// `[project]`: the project's identity and where its lake lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    /// Project name.
    pub name: String,
    /// Who answers for the project's tables: the default `owner` of gold models (and of silver
    /// tables without one).
    #[serde(default)]
    pub owner: Option<String>,
    /// Values gold models read with `{{ var('name') }}` (dbt's vars).
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, toml::Value>,
    /// Lake location: a directory (relative to the project) or an object-store URL (`s3://bucket/prefix`).
    #[serde(default)]
    pub lake: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// `medallion schedule`: run every fire missed while it was down, in order (each with that
    /// fire's date), rather than once.
    #[serde(default)]
    pub catchup: bool,
    /// After a run, compact an append-only table (dead letters, `_medallion` logs) holding more
    /// files than this (default 64; 0 turns it off).
    #[serde(default)]
    pub compact_above_files: Option<usize>,
    /// After a run, vacuum every table when the last vacuum is older than this (e.g. `7d`).
    #[serde(default)]
    pub vacuum_every: Option<String>,
    /// What those vacuums keep (default `7d`; shorter is refused).
    #[serde(default)]
    pub vacuum_retain: Option<String>,
    /// Default for every silver table's `on_contract_change` (`evolve` when absent).
    #[serde(default)]
    pub on_contract_change: Option<OnContractChange>,
}

/// `[lineage]`: OpenLineage run events for every run and node, to a file and/or an HTTP endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageSpec {
    /// Job namespace (default: `$OPENLINEAGE_NAMESPACE`, else the project name).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Append events as JSON Lines to this file (relative to the project).
    #[serde(default)]
    pub file: Option<String>,
    /// POST each event to `<url>/<endpoint>` (an OpenLineage backend such as Marquez).
    #[serde(default)]
    pub url: Option<String>,
    /// Path under `url` (default `api/v1/lineage`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bearer token; `${VAR}` takes it from the environment.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Per-request timeout (default `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `maintenance = { … }` on a silver table or gold model: what `run` does to it after a
/// successful run (overrides the project's `compact_above_files` / `vacuum_every`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSpec {
    /// Compact when the table holds more live files than this (0: never).
    #[serde(default)]
    pub compact_above_files: Option<usize>,
    /// Z-order the compacted files by these columns (clusters them for file skipping).
    #[serde(default)]
    pub zorder: Vec<String>,
    /// Size of the compacted files in bytes (default delta-rs's, 100 MiB); smaller files let a
    /// Z-ordered table of a few hundred MB skip files.
    #[serde(default)]
    pub target_size: Option<u64>,
    /// Vacuum the table this often (e.g. `7d`).
    #[serde(default)]
    pub vacuum_every: Option<String>,
    /// What those vacuums keep (default `7d`; shorter is refused).
    #[serde(default)]
    pub vacuum_retain: Option<String>,
    /// A table merged with deletion vectors: after a run, rewrite the files that have one without
    /// their deleted rows when those are more than this share of the files' rows (0–1, default
    /// 0.1; 1 turns it off).
    #[serde(default)]
    pub purge_deleted_above: Option<f64>,
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

/// An expectation: its name, what it checks (exactly one kind) and its action.
///
/// Row-level kinds (`expect`, `not_null`, `accepted_values`, `range`, `regex`) are evaluated on
/// every candidate row as it streams through validation; set-level kinds (`unique`,
/// `relationships`) and table-level kinds (`row_count`, `freshness`, `null_fraction`, `sql`,
/// `reconcile`) are evaluated with SQL on the table as it would be after the commit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectationSpec {
    /// Name, used as the reason in the dead letter and in results.
    pub name: String,
    /// What a failure does (default `fail`).
    #[serde(default)]
    pub action: Action,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
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
    /// Columns whose combined non-null values must be unique in the table.
    #[serde(default)]
    pub unique: Option<Columns>,
    /// Every non-null value of a column exists in another table's column.
    #[serde(default)]
    pub relationships: Option<RelationshipSpec>,
    /// Bounds on the table's row count.
    #[serde(default)]
    pub row_count: Option<RowCountSpec>,
    /// The newest value of a timestamp/date column is no older than a maximum age.
    #[serde(default)]
    pub freshness: Option<FreshnessSpec>,
    /// The share of nulls in a column is at most `max`.
    #[serde(default)]
    pub null_fraction: Option<NullFractionSpec>,
    /// A query over `this` (and any other table) returning the failing rows.
    #[serde(default)]
    pub sql: Option<String>,
    /// An aggregate of this table equals an aggregate of another, within a tolerance.
    #[serde(default)]
    pub reconcile: Option<ReconcileSpec>,
}

/// One column name or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    /// `unique = "order_id"`.
    One(String),
    /// `unique = ["customer_id", "order_date"]`.
    Many(Vec<String>),
}

impl Columns {
    /// The names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Columns::One(c) => vec![c.clone()],
            Columns::Many(cs) => cs.clone(),
        }
    }
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

/// `relationships = { column = "customer_id", to = "customers", field = "customer_id" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipSpec {
    /// Column of this table.
    pub column: String,
    /// The other table (`customers`, `silver.customers`, `gold.x`).
    pub to: String,
    /// Its column (default: the same name as `column`).
    #[serde(default)]
    pub field: Option<String>,
}

/// `row_count = { min = 1, max = 1000000 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountSpec {
    /// Fewest rows allowed.
    #[serde(default)]
    pub min: Option<u64>,
    /// Most rows allowed.
    #[serde(default)]
    pub max: Option<u64>,
}

/// `freshness = { column = "_ingested_at", max_age = "26h" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    /// A timestamp or date column.
    pub column: String,
    /// Maximum age of its newest value (default: the table's `sla`).
    #[serde(default)]
    pub max_age: Option<String>,
}

/// `null_fraction = { column = "email", max = 0.05 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullFractionSpec {
    /// Column.
    pub column: String,
    /// Largest share of nulls allowed, between 0 and 1.
    pub max: f64,
}

/// `reconcile = { expr = "sum(revenue)", with = "silver.orders", with_expr = "sum(amount)" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSpec {
    /// Aggregate over this table.
    pub expr: String,
    /// Rows of this table it covers (SQL boolean expression; default all).
    #[serde(default)]
    pub filter: Option<String>,
    /// The other table.
    pub with: String,
    /// Aggregate over the other table.
    pub with_expr: String,
    /// Rows of the other table it covers.
    #[serde(default)]
    pub with_filter: Option<String>,
    /// Largest absolute difference allowed (default 0).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Largest difference allowed relative to the larger magnitude (e.g. 0.001 = 0.1%).
    #[serde(default)]
    pub relative_tolerance: Option<f64>,
}

/// What an expectation checks, once its kind is known.
#[derive(Debug, Clone)]
pub enum Check<'a> {
    /// A boolean expression per row (a null result fails).
    Row {
        /// `expect`, `not_null`, `accepted_values`, `range` or `regex`.
        kind: &'static str,
        /// The expression.
        sql: String,
    },
    /// Unique combined values.
    Unique(Vec<String>),
    /// Referential integrity.
    Relationships(&'a RelationshipSpec),
    /// Row-count bounds.
    RowCount(&'a RowCountSpec),
    /// Newest value no older than a maximum age.
    Freshness(&'a FreshnessSpec),
    /// Null share bound.
    NullFraction(&'a NullFractionSpec),
    /// A query returning failing rows.
    Sql(&'a str),
    /// Aggregates agree.
    Reconcile(&'a ReconcileSpec),
}

impl Check<'_> {
    /// The kind's name, as in the project file.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Row { kind, .. } => kind,
            Check::Unique(_) => "unique",
            Check::Relationships(_) => "relationships",
            Check::RowCount(_) => "row_count",
            Check::Freshness(_) => "freshness",
            Check::NullFraction(_) => "null_fraction",
            Check::Sql(_) => "sql",
            Check::Reconcile(_) => "reconcile",
        }
    }

    /// Whether failures are rows that `drop` can remove (row- and set-level kinds).
    pub fn droppable(&self) -> bool {
        matches!(self, Check::Row { .. } | Check::Unique(_) | Check::Relationships(_))
    }
}

const KINDS: &str = "expect, not_null, accepted_values, range, regex, unique, relationships, row_count, freshness, null_fraction, sql, reconcile";

impl ExpectationSpec {
    /// What the expectation checks, or why it is malformed. Value-set, range, regex, unique
    /// and relationship expectations let nulls pass: use `not_null`.
    pub fn check(&self) -> Result<Check<'_>, String> {
        let given = [
            self.expect.is_some(),
            self.not_null.is_some(),
            self.accepted_values.is_some(),
            self.range.is_some(),
            self.regex.is_some(),
            self.unique.is_some(),
            self.relationships.is_some(),
            self.row_count.is_some(),
            self.freshness.is_some(),
            self.null_fraction.is_some(),
            self.sql.is_some(),
            self.reconcile.is_some(),
        ];
        if given.iter().filter(|k| **k).count() != 1 {
            return Err(format!("give exactly one of {KINDS}"));
        }
        let check = self.row_sql().map(|(kind, sql)| sql.map(|sql| Check::Row { kind, sql }));
        let check = match check {
            Some(c) => c?,
            None => {
                if let Some(u) = &self.unique {
                    let cols = u.names();
                    if cols.is_empty() {
                        return Err("unique needs at least one column".into());
                    }
                    Check::Unique(cols)
                } else if let Some(r) = &self.relationships {
                    Check::Relationships(r)
                } else if let Some(r) = &self.row_count {
                    if r.min.is_none() && r.max.is_none() {
                        return Err("row_count needs min, max or both".into());
                    }
                    if let (Some(lo), Some(hi)) = (r.min, r.max)
                        && lo > hi
                    {
                        return Err(format!("row_count min {lo} is above max {hi}"));
                    }
                    Check::RowCount(r)
                } else if let Some(f) = &self.freshness {
                    if let Some(age) = &f.max_age {
                        age.parse::<Duration>()?;
                    }
                    Check::Freshness(f)
                } else if let Some(n) = &self.null_fraction {
                    if !(0.0..=1.0).contains(&n.max) {
                        return Err(format!("null_fraction max must be between 0 and 1, not {}", n.max));
                    }
                    Check::NullFraction(n)
                } else if let Some(sql) = &self.sql {
                    Check::Sql(sql)
                } else if let Some(r) = &self.reconcile {
                    for t in [r.tolerance, r.relative_tolerance].into_iter().flatten() {
                        if !(t >= 0.0 && t.is_finite()) {
                            return Err(format!("reconcile tolerances must be finite and not negative, not {t}"));
                        }
                    }
                    Check::Reconcile(r)
                } else {
                    return Err(format!("give exactly one of {KINDS}"));
                }
            }
        };
        if self.action == Action::Drop && !check.droppable() {
            return Err(format!(
                "`{}` is a table-level expectation: its action can be `warn` or `fail`, not `drop`",
                check.kind()
            ));
        }
        Ok(check)
    }

    /// For row-level kinds: the kind and its SQL boolean expression (or why it is malformed).
    fn row_sql(&self) -> Option<(&'static str, Result<String, String>)> {
        if let Some(sql) = &self.expect {
            return Some(("expect", Ok(format!("({sql})"))));
        }
        if let Some(col) = &self.not_null {
            return Some(("not_null", Ok(format!("{} IS NOT NULL", ident(col)))));
        }
        if let Some(a) = &self.accepted_values {
            let kinds: std::collections::BTreeSet<&str> = a
                .values
                .iter()
                .map(|v| match v {
                    toml::Value::String(_) => "strings",
                    toml::Value::Integer(_) | toml::Value::Float(_) => "numbers",
                    _ => "booleans", // or a kind `literal` refuses first
                })
                .collect();
            let sql = if a.values.is_empty() {
                Err("accepted_values needs at least one value".into())
            } else {
                a.values.iter().map(literal).collect::<Result<Vec<_>, _>>().and_then(|values| {
                    if kinds.len() > 1 {
                        // SQL would coerce the list to one type and fail on a value ("Cannot
                        // cast string 'mobile' to value of Int64 type"): say what is wrong.
                        let kinds: Vec<&str> = kinds.into_iter().collect();
                        return Err(format!(
                            "accepted_values mixes {}: write every value as the column's type (in quotes for a string column)",
                            kinds.join(" and ")
                        ));
                    }
                    Ok(format!("{c} IS NULL OR {c} IN ({})", values.join(", "), c = ident(&a.column)))
                })
            };
            return Some(("accepted_values", sql));
        }
        if let Some(r) = &self.range {
            let c = ident(&r.column);
            let bound = |v: &Option<toml::Value>, inclusive: bool, op: &str| -> Option<Result<String, String>> {
                v.as_ref().map(|v| literal(v).map(|l| format!("{c} {op}{} {l}", if inclusive { "=" } else { "" })))
            };
            let parts: Result<Vec<String>, String> =
                [bound(&r.min, r.min_inclusive, ">"), bound(&r.max, r.max_inclusive, "<")]
                    .into_iter()
                    .flatten()
                    .collect();
            let sql = parts.and_then(|parts| {
                if parts.is_empty() {
                    Err("range needs min, max or both".into())
                } else {
                    Ok(format!("{c} IS NULL OR ({})", parts.join(" AND ")))
                }
            });
            return Some(("range", sql));
        }
        if let Some(r) = &self.regex {
            return Some((
                "regex",
                Ok(format!("{c} IS NULL OR regexp_like({c}, {})", quote(&r.pattern), c = ident(&r.column))),
            ));
        }
        None
    }
}

/// A column name quoted for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string quoted as a SQL literal.
pub fn quote(s: &str) -> String {
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
    /// Parquet files: each row lands as a JSON object of its columns (typed values as JSON
    /// numbers, booleans, strings; dates and timestamps as ISO text; nested columns as objects
    /// and arrays).
    Parquet,
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
    /// `medallion schedule`: when to ingest and promote it (cron, or `@hourly`, `@daily`…).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Text values read as null in the silver tables fed by this source, in any column (e.g.
    /// `["NA", "NULL", "\\N", ""]`); a column's own `null_values` overrides it. Bronze keeps them
    /// as they came, so changing this takes effect on a rebuild.
    #[serde(default)]
    pub null_values: Vec<String>,
    /// Text encoding of the files: `utf-8` (default), `latin-1` (ISO-8859-1) or `windows-1252`.
    /// Bronze stores UTF-8.
    #[serde(default)]
    pub encoding: Option<String>,
    /// CSV: the field delimiter, one character (default `,`; `\t` for tabs).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// CSV: the quote character (default `"`).
    #[serde(default)]
    pub quote: Option<String>,
    /// CSV: the escape character inside quoted fields (default none: a quote is escaped by
    /// doubling it).
    #[serde(default)]
    pub escape: Option<String>,
    /// CSV: whether the first row (after `skip_rows`) names the columns (default true).
    #[serde(default)]
    pub header: Option<bool>,
    /// CSV without a header: the column names (default `column1`, `column2`, …).
    #[serde(default)]
    pub column_names: Vec<String>,
    /// CSV: lines to skip at the top of each file, before the header (default 0).
    #[serde(default)]
    pub skip_rows: Option<usize>,
    /// Read symlinks among `paths` (default false: a symlink is skipped with a warning). With it,
    /// a link may lead outside the project: the way to land from a directory elsewhere.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// Records fetched from a JSON HTTP API instead of files (`[sources.<name>.http]`).
    #[serde(default)]
    pub http: Option<HttpSpec>,
}

/// `[sources.<name>.http]`: a paginated JSON API. Values of `url`, `params` and `headers` may name
/// environment variables as `${VAR}` (tokens belong there, not in the file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// The endpoint (`http://` or `https://`).
    pub url: String,
    /// Dotted path of the records array in a response (`data`, `result.items`); default: the
    /// response is the array.
    #[serde(default)]
    pub records: Option<String>,
    /// Query parameters sent with every request.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Request headers (`Authorization = "Bearer ${API_TOKEN}"`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// How the next page is found (default: one request, no pages).
    #[serde(default)]
    pub pagination: Option<PaginationSpec>,
    /// Fetch only what changed since the last run.
    #[serde(default)]
    pub incremental: Option<HttpIncrementalSpec>,
    /// Per request (default `30s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries of a request after a timeout, a dropped connection, 408, 429 or 5xx (default 5).
    #[serde(default)]
    pub retries: Option<u32>,
    /// The longest wait honoured between tries, `Retry-After` included (default `5m`); a server
    /// asking for more fails the fetch, which resumes at the next run.
    #[serde(default)]
    pub max_wait: Option<String>,
}

/// `pagination = { style = …, … }` of an HTTP source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationSpec {
    /// `cursor` (a token in the response, sent back as `param`), `url` (the next page's URL in
    /// the response at `path`), `link` (the `Link: <…>; rel="next"` header), `page` (page
    /// numbers in `param` from `start`) or `offset` (records skipped so far in `param`).
    pub style: String,
    /// `cursor`, `url`: dotted path of the token or URL in the response.
    #[serde(default)]
    pub path: Option<String>,
    /// `cursor`, `page`, `offset`: the query parameter to send it in.
    #[serde(default)]
    pub param: Option<String>,
    /// `page`: the first page's number (default 1).
    #[serde(default)]
    pub start: Option<u64>,
}

/// `incremental = { field = …, param = … }` of an HTTP source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIncrementalSpec {
    /// Dotted path of a record's change marker (`updated_at`, a number or text ordered as text,
    /// such as ISO-8601 in one format).
    pub field: String,
    /// The query parameter that asks for records changed since the largest value landed.
    pub param: String,
    /// Sent on the first run (default: nothing, so the first run fetches everything).
    #[serde(default)]
    pub start: Option<String>,
}

/// What a silver table does when its contract no longer matches the published table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnContractChange {
    /// New nullable columns are added to the table in place (old rows null until a rebuild);
    /// any other change refuses to promote until `medallion rebuild <table>`.
    #[default]
    Evolve,
    /// Any change rebuilds the table from bronze at the next run.
    Rebuild,
    /// Any change, even an added column, refuses to promote until `medallion rebuild <table>`.
    Fail,
}

/// `[silver.<name>]`: a typed contract over one source.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Labels for selection (`run --select tag:finance`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Retries after a transient error for this table (default: the run's `--retries`).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Compaction and vacuum after runs (default: the project's).
    #[serde(default)]
    pub maintenance: Option<MaintenanceSpec>,
    /// Maximum staleness consumers accept (e.g. `26h`): the default `max_age` of `freshness`.
    #[serde(default)]
    pub sla: Option<String>,
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
    /// Largest share of rejected records: a number (per batch, action `fail`) or a table.
    #[serde(default)]
    pub max_rejected_fraction: Option<RejectedFraction>,
    /// How changes are kept: SCD type 1 (latest per key, optional deletes) or 2 (full history).
    #[serde(default)]
    pub history: Option<HistorySpec>,
    /// How a merge changes the table's files: `copy_on_write` (default: files holding a replaced
    /// row are rewritten) or `deletion_vectors` (replaced rows are marked in the files' deletion
    /// vectors; readers need deletion-vector support). Takes effect when the table is created.
    #[serde(default)]
    pub merge: Option<MergeMode>,
    /// An event table instead: rows are appended, and a record whose `primary_key` (the event
    /// id) was already kept with an event time within `window` of its own is dropped as a
    /// duplicate (`dedup = { time = "event_ts", window = "1h" }`).
    #[serde(default)]
    pub dedup: Option<WindowDedupSpec>,
    /// When the contract no longer matches the published table: `evolve`, `rebuild` or `fail`
    /// (default: the project's `on_contract_change`, else `evolve`).
    #[serde(default)]
    pub on_contract_change: Option<OnContractChange>,
}

/// How merges change a silver table's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// Files holding a replaced row are rewritten.
    CopyOnWrite,
    /// Replaced rows are marked in deletion vectors (merge-on-read).
    #[default]
    DeletionVectors,
}

/// `dedup = { time = "event_ts", window = "1h" }`: append-only with window dedup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDedupSpec {
    /// The event time column (timestamp, date or int64) of the contract.
    pub time: String,
    /// How far apart two events with one id may be and still be the same event (`90s`, `1h`,
    /// `1d`).
    pub window: String,
}

/// `history = { scd = 2, track = ["tier"], delete_when = "op = 'delete'" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySpec {
    /// 1: one row per key, the latest by `order_by` (change-data apply); 2: one row per version
    /// with `valid_from`, `valid_to`, `is_current`, `_sk`.
    pub scd: u8,
    /// SCD 2: columns whose change opens a new version (default: every non-key column not in
    /// `exclude`).
    #[serde(default)]
    pub track: Option<Vec<String>>,
    /// SCD 2: columns never tracked.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A SQL boolean over the record marking it a delete (e.g. `op = 'D'`): SCD 1 removes the
    /// key's row, SCD 2 closes its current version.
    #[serde(default)]
    pub delete_when: Option<String>,
}

/// `max_rejected_fraction = 0.02` or `{ per_batch = 0.02, per_run = 0.01, action = "warn" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RejectedFraction {
    /// Per batch, action `fail`.
    PerBatch(f64),
    /// Bounds and action.
    Detailed(RejectedFractionSpec),
}

/// Bounds on the rejected share of bronze records.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedFractionSpec {
    /// Per batch: a batch above it is held back (`fail`: it stays pending) or reported (`warn`).
    #[serde(default)]
    pub per_batch: Option<f64>,
    /// Per promotion (all its batches together): above it, nothing is published (`fail`).
    #[serde(default)]
    pub per_run: Option<f64>,
    /// `warn` or `fail` (default).
    #[serde(default)]
    pub action: Action,
}

impl RejectedFraction {
    /// The bounds, checked: between 0 and 1, at least one, action not `drop`.
    pub fn spec(&self) -> Result<RejectedFractionSpec, String> {
        let s = match self {
            RejectedFraction::PerBatch(f) => {
                RejectedFractionSpec { per_batch: Some(*f), per_run: None, action: Action::Fail }
            }
            RejectedFraction::Detailed(s) => *s,
        };
        if s.per_batch.is_none() && s.per_run.is_none() {
            return Err("max_rejected_fraction needs per_batch, per_run or both".into());
        }
        for f in [s.per_batch, s.per_run].into_iter().flatten() {
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("max_rejected_fraction must be between 0 and 1, not {f}"));
            }
        }
        if s.action == Action::Drop {
            return Err("max_rejected_fraction's action can be `warn` or `fail`, not `drop`".into());
        }
        Ok(s)
    }
}

/// One contract column.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// The raw field the column is read from when its name differs (a rename, as dbt staging's
    /// `id as customer_id`: `{ name = "customer_id", from = "id" }`); default: `name`. A dotted
    /// path reads a field inside nested objects and arrays (`customer.id`, `items.0.sku`).
    #[serde(default)]
    pub from: Option<String>,
    /// Type: `int64`, `float64`, `decimal(p,s)`, `string`, `bool`, `date`, `timestamp`, `json`
    /// (any value as its JSON text).
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
    /// Text values read as null in this column (overrides the source's `null_values`; `[]` turns
    /// them off for this column).
    #[serde(default)]
    pub null_values: Option<Vec<String>>,
    /// How the text of a date, timestamp or number is written when the defaults do not read it:
    /// a strftime pattern for dates and timestamps (`"%d/%m/%Y"`, `"%d.%m.%Y %H:%M"`), and for
    /// numbers 1234.56 written as the file writes it (`"1.234,56"`: decimal comma, dots between
    /// thousands; `"1234,56"`; `"1,234.56"`; `"$1,234.56"`, a currency a value may leave out).
    #[serde(default)]
    pub format: Option<String>,
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
    /// Who answers for the table (default: the project's `owner`, else `unassigned`).
    #[serde(default)]
    pub owner: Option<String>,
    /// Labels for selection (`run --select tag:finance`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Outputs besides the Delta table: `["parquet"]` also publishes one plain Parquet file,
    /// `<lake>/exports/<model>.parquet`, replaced in one step on each build.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Retries after a transient error for this model (default: the run's `--retries`).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Compaction and vacuum after runs (default: the project's).
    #[serde(default)]
    pub maintenance: Option<MaintenanceSpec>,
    /// Refresh cadence: `on_run` (default: every run), `hourly`, `daily`, `weekly`.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Maximum staleness consumers accept, e.g. `6h`, `1d`, `30m` (default none: no staleness
    /// bound, and freshness expectations need their own `max_age`).
    #[serde(default)]
    pub sla: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Quality gates evaluated on the model's result before it is written.
    #[serde(default)]
    pub expectations: Vec<ExpectationSpec>,
    /// Rebuild only the partitions the source's changes touch (default: the whole model).
    #[serde(default)]
    pub incremental: Option<IncrementalSpec>,
    /// How a keyed dbt-style incremental build replaces rows: `copy_on_write` (default: the files
    /// holding a replaced key are rewritten; every Delta reader reads the table) or
    /// `deletion_vectors` (replaced rows are marked; readers need deletion-vector support).
    #[serde(default)]
    pub merge: Option<MergeMode>,
}

/// `incremental = { partition_by = "order_date", source = "orders" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// A column of the model's result that is also a column of `source`: the partitions.
    pub partition_by: String,
    /// The table whose changes decide the partitions to rebuild (default: the model's only input).
    #[serde(default)]
    pub source: Option<String>,
}

/// `--vars`: a YAML (or JSON) mapping, as dbt takes it (`{key: value, other: 3}`).
pub fn vars_from_yaml(
    text: &str,
) -> std::result::Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    let value: serde_json::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    match value {
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        serde_json::Value::Null => Ok(std::collections::BTreeMap::new()),
        other => Err(format!("expected a mapping such as {{key: value}}, found {other}")),
    }
}

#[cfg(test)]
mod vars_tests {
    #[test]
    fn vars_are_yaml_or_json_mappings() {
        let v = super::vars_from_yaml("{min_amount: 10, region: 'eu', tiers: [a, b]}").expect("yaml");
        assert_eq!(v["min_amount"], serde_json::json!(10));
        assert_eq!(v["tiers"], serde_json::json!(["a", "b"]));
        assert_eq!(super::vars_from_yaml(r#"{"x": 1.5}"#).expect("json")["x"], serde_json::json!(1.5));
        assert!(super::vars_from_yaml("[1, 2]").expect_err("a list").contains("expected a mapping"));
        assert!(super::vars_from_yaml("{a: [}").is_err());
    }
}
