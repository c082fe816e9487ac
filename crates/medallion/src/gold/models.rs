//! Gold models: what the project validated ([`GoldModel`]), Jinja rendering (`{{ ref('orders') }}`), reference resolution and planning.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::parser::DFParser;
use datafusion::sql::resolve::resolve_table_references;

use crate::quality::checks::TableCheck;
use crate::quality::gates::Gate;
use crate::spec::{Duration, Refresh};
use crate::storage::Maintenance;

/// A gold model.
#[derive(Debug, Clone)]
pub struct GoldModel {
    /// Name.
    pub name: String,
    /// SQL file, relative to the project.
    pub file: std::path::PathBuf,
    /// Rendered SQL.
    pub sql: String,
    /// Tables it reads: in its SQL and in its expectations.
    pub refs: Vec<String>,
    /// Owner.
    pub owner: String,
    /// Refresh cadence.
    pub refresh: Refresh,
    /// SLA (None: no staleness bound).
    pub sla: Option<Duration>,
    /// Description.
    pub description: Option<String>,
    /// Output schema, from planning.
    pub schema: SchemaRef,
    /// Row-level expectations checked on its result before it is written.
    pub gates: Vec<Gate>,
    /// Set- and table-level expectations checked on its result before it is written.
    pub checks: Vec<TableCheck>,
    /// Incremental by partition: (partition column, source table).
    pub incremental: Option<(String, String)>,
    /// Incremental the dbt way: the query giving the rows to add once the table exists.
    pub incremental_query: Option<IncrementalQuery>,
    /// A keyed incremental build marks replaced rows in deletion vectors (`merge =
    /// "deletion_vectors"`) rather than rewriting the files holding them.
    pub deletion_vectors: bool,
    /// Labels for selection.
    pub tags: Vec<String>,
    /// Also published as `<lake>/exports/<model>.parquet` (`outputs = ["parquet"]`).
    pub parquet: bool,
    /// Retries after a transient error (None: the run's).
    pub retries: Option<u32>,
    /// Compaction and vacuum after runs.
    pub maintenance: Maintenance,
    /// Its SQL calls a function whose value varies between runs (`now()`, `current_date`,
    /// `random()`): built in full every run, never skipped, kept from changes or built by
    /// partition.
    pub varies: bool,
}

/// A model's SQL after rendering, and the tables it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The SQL DataFusion runs for a full build.
    pub sql: String,
    /// Tables referenced with `ref()` or by name, in first-seen order, deduplicated (never the
    /// model itself: `{{ this }}` is its own published table).
    pub refs: Vec<String>,
    /// A dbt-style incremental model (`config(materialized='incremental')`).
    pub incremental: Option<IncrementalQuery>,
    /// What was accepted but means nothing here (`config(schema=…)`), for `validate` to say.
    pub notes: Vec<String>,
}

/// A dbt-style incremental model: once its table exists, `sql` (rendered with `is_incremental()`
/// true, `{{ this }}` naming the published table) gives the rows to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalQuery {
    /// The SQL rendered with `is_incremental()` true.
    pub sql: String,
    /// With a key: published rows whose key the new rows carry are replaced (dbt's
    /// `delete+insert`); without one, the new rows are appended.
    pub unique_key: Vec<String>,
}

/// Why a model does not render: the message, and where (None: the model's own SQL file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The macro file the error is in, if not the model's SQL.
    pub file: Option<PathBuf>,
    /// Line in that file.
    pub line: Option<usize>,
    /// Column on that line, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl RenderError {
    fn plain(message: impl Into<String>) -> Self {
        Self { file: None, line: None, column: None, message: message.into() }
    }
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {}", file.display(), self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// What every model of a project renders with: the project's `[vars]` (and `--vars`) and the
/// macros of `macros/*.sql`.
#[derive(Debug, Clone, Default)]
pub struct Jinja {
    /// `var('x')` values.
    pub vars: BTreeMap<String, minijinja::Value>,
    macros: Option<Macros>,
    /// Names defined by macro files that did not load.
    broken: Vec<String>,
}

/// Every `macros/*.sql` file as one template (so macros can call each other across files), with
/// where each file starts in it, and the names it defines.
#[derive(Debug, Clone)]
struct Macros {
    source: String,
    starts: Vec<(PathBuf, usize)>,
    names: Vec<String>,
}

/// The template name under which the macros are loaded.
const MACROS: &str = "<macros>";

impl Jinja {
    /// `vars`, and the macros in `files` ((path relative to the project, text), in name order).
    /// A file that does not load is left out, with an error naming it and its line; what then
    /// fails for want of its macros is not reported again (see [`Jinja::is_follow_on`]).
    pub fn new(vars: BTreeMap<String, minijinja::Value>, files: Vec<(PathBuf, String)>) -> (Self, Vec<RenderError>) {
        let mut errors = Vec::new();
        let mut broken = Vec::new();
        let mut good = Vec::new();
        for (path, text) in &files {
            match Macros::load(&vars, vec![(path.clone(), text.clone())]) {
                Ok(_) => good.push((path.clone(), text.clone())),
                Err(e) => {
                    errors.push(e);
                    broken.extend(macro_names(text));
                }
            }
        }
        let macros = match Macros::load(&vars, good) {
            Ok(m) => m,
            Err(e) => {
                // Each file loads alone but not together (two define the same name): keep none.
                errors.push(e);
                broken.extend(files.iter().flat_map(|(_, text)| macro_names(text)));
                None
            }
        };
        (Self { vars, macros, broken }, errors)
    }

    /// Whether a model's render error may come from a macro file that did not load.
    pub fn is_follow_on(&self, e: &RenderError) -> bool {
        self.broken.iter().any(|name| e.message.contains(name.as_str()))
    }
}

/// The names `{% macro name(…) %}` defines in `text`.
fn macro_names(text: &str) -> Vec<String> {
    text.split("macro")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (!name.is_empty() && rest.trim_start()[name.len()..].trim_start().starts_with('(')).then_some(name)
        })
        .collect()
}

impl Macros {
    /// `files` as one template, and the names it defines (None: no files).
    fn load(
        vars: &BTreeMap<String, minijinja::Value>,
        files: Vec<(PathBuf, String)>,
    ) -> std::result::Result<Option<Macros>, RenderError> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut source = String::new();
        let mut starts = Vec::new();
        for (path, text) in files {
            starts.push((path, source.lines().count() + 1));
            source.push_str(&text);
            if !source.ends_with('\n') {
                source.push('\n');
            }
        }
        let mut macros = Macros { source, starts, names: Vec::new() };
        let mut env = environment(vars, None, &Sinks::default(), false, "");
        let names = (|| -> std::result::Result<Vec<String>, minijinja::Error> {
            env.add_template_owned(MACROS, macros.source.clone())?;
            let template = env.get_template(MACROS)?;
            let captured = template.render_captured(minijinja::context! {})?;
            Ok(captured.state().exports().into_iter().map(str::to_string).collect())
        })()
        .map_err(|e| macros.error(&e))?;
        macros.names = names;
        Ok(Some(macros))
    }

    /// An error inside the macros, at its file and line.
    fn error(&self, e: &minijinja::Error) -> RenderError {
        let message = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
        let Some(line) = e.line() else { return RenderError::plain(format!("in macros/: {message}")) };
        let (file, start) = self.starts.iter().rev().find(|(_, start)| *start <= line).cloned().unwrap_or_default();
        RenderError { file: Some(file), line: Some(line + 1 - start.max(1)), column: None, message }
    }
}

/// What the functions of one rendering saw.
#[derive(Default, Clone)]
struct Sinks {
    refs: Arc<Mutex<Vec<String>>>,
    config: Arc<Mutex<Config>>,
}

/// `config(...)` as the model set it.
#[derive(Default, Clone)]
struct Config {
    materialized: Option<String>,
    unique_key: Vec<String>,
    notes: Vec<String>,
}

/// A dbt object medallion has no counterpart for (`adapter`, `run_query`, …).
#[derive(Debug)]
struct Unsupported(&'static str);

impl Unsupported {
    fn error(&self, what: String) -> minijinja::Error {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!(
                "{what} is not supported: dbt's {} reaches the warehouse at compile time, which medallion models do not",
                self.0
            ),
        )
    }
}

impl minijinja::value::Object for Unsupported {
    fn call(
        self: &Arc<Self>,
        _: &minijinja::State<'_, '_>,
        _: &[minijinja::Value],
    ) -> Result<minijinja::Value, minijinja::Error> {
        Err(self.error(format!("{}()", self.0)))
    }

    fn call_method(
        self: &Arc<Self>,
        _: &minijinja::State<'_, '_>,
        method: &str,
        _: &[minijinja::Value],
    ) -> Result<minijinja::Value, minijinja::Error> {
        Err(self.error(format!("{}.{method}()", self.0)))
    }
}

/// An environment with dbt's functions. `this` is the model's table as SQL (`gold.name`).
fn environment<'a>(
    vars: &BTreeMap<String, minijinja::Value>,
    macros: Option<&Macros>,
    sinks: &Sinks,
    incremental: bool,
    this: &str,
) -> minijinja::Environment<'a> {
    use minijinja::value::Kwargs;
    use minijinja::{Error as JinjaError, ErrorKind};

    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let unsupported = |what: String| JinjaError::new(ErrorKind::InvalidOperation, what);
    let sink = Arc::clone(&sinks.refs);
    env.add_function("ref", move |first: String, second: Option<String>| -> Result<String, JinjaError> {
        let name = second.unwrap_or(first);
        if let Ok(mut s) = sink.lock() {
            s.push(name.clone());
        }
        Ok(name)
    });
    let sink = Arc::clone(&sinks.refs);
    env.add_function("source", move |_source: String, table: String| -> Result<String, JinjaError> {
        if let Ok(mut s) = sink.lock() {
            s.push(table.clone());
        }
        Ok(table)
    });
    let sink = Arc::clone(&sinks.config);
    env.add_function("config", move |kwargs: Kwargs| -> Result<String, JinjaError> {
        let mut config = sink.lock().map_err(|_| unsupported("config() poisoned".into()))?;
        for key in kwargs.args().map(str::to_string).collect::<Vec<_>>() {
            let value: minijinja::Value = kwargs.get(&key)?;
            match key.as_str() {
                "materialized" => {
                    let m = value.to_string();
                    if !matches!(m.as_str(), "table" | "view" | "ephemeral" | "incremental") {
                        return Err(unsupported(format!(
                            "config(materialized='{m}') is not supported: models are built as tables \
                             (table, view and ephemeral) or incrementally (incremental)"
                        )));
                    }
                    config.materialized = Some(m);
                }
                "unique_key" => {
                    config.unique_key = match value.kind() {
                        minijinja::value::ValueKind::Seq => value.try_iter()?.map(|v| v.to_string()).collect(),
                        _ => vec![value.to_string()],
                    };
                }
                "incremental_strategy" => {
                    let s = value.to_string();
                    if !matches!(s.as_str(), "append" | "delete+insert" | "merge") {
                        return Err(unsupported(format!(
                            "config(incremental_strategy='{s}') is not supported: append, delete+insert or merge"
                        )));
                    }
                }
                "schema" | "alias" | "database" | "persist_docs" | "grants" | "meta" | "docs" | "contract" => {
                    config
                        .notes
                        .push(format!("config({key}=…) is ignored: models are gold tables named after their file"));
                }
                _ => {} // tags, on_schema_change, pre/post hooks' absence: nothing to do
            }
        }
        Ok(String::new())
    });
    env.add_function("is_incremental", move || -> Result<bool, JinjaError> { Ok(incremental) });
    env.add_global("this", minijinja::Value::from(this.to_string()));
    env.add_function("log", |_message: minijinja::Value, _info: Option<bool>| -> Result<String, JinjaError> {
        Ok(String::new())
    });
    env.add_global("execute", true);
    env.add_global(
        "target",
        minijinja::context! { name => "medallion", schema => "gold", type => "datafusion", database => "", threads => 1 },
    );
    // dbt's warehouse-facing objects: using one fails naming it, not as an undefined value.
    for name in ["adapter", "run_query", "statement", "load_result", "exceptions", "graph", "dbt_utils", "modules"] {
        env.add_global(name, minijinja::Value::from_object(Unsupported(name)));
    }
    let known = vars.clone();
    env.add_function(
        "var",
        move |name: String, default: Option<minijinja::Value>| -> Result<minijinja::Value, JinjaError> {
            known.get(&name).cloned().or(default).ok_or_else(|| {
                unsupported(format!("var('{name}') is not set: add it under [vars] in medallion.toml or pass --vars"))
            })
        },
    );
    env.add_function("env_var", move |name: String, default: Option<String>| -> Result<String, JinjaError> {
        std::env::var(&name)
            .ok()
            .or(default)
            .ok_or_else(|| unsupported(format!("env_var('{name}'): the environment variable is not set")))
    });
    if let Some(m) = macros {
        // Loaded from a string just checked by `Jinja::new`: an error here is reported at render.
        let _ = env.add_template_owned(MACROS, m.source.clone());
    }
    env
}

/// Renders `template`, the SQL of gold model `name`, and collects the tables it references.
/// `exists` says whether a name is a silver or gold table; `ref()` of anything else is an error,
/// and so is a plain reference to an unknown table (CTEs excepted).
///
/// dbt's Jinja as far as it applies: `ref('m')` (and `ref('package', 'm')`), `source('src', 't')`
/// (silver table `t`: silver is where raw data becomes tables), `config(...)` (materialized
/// `table`, `view` and `ephemeral` build a table; `incremental` with `unique_key` and
/// `is_incremental()`/`{{ this }}`; other materializations are errors naming the construct),
/// `var('x', default)`, `env_var('X', default)`, and the macros of `macros/*.sql`.
pub fn render(
    template: &str,
    name: &str,
    exists: &dyn Fn(&str) -> bool,
    jinja: &Jinja,
) -> Result<Rendered, RenderError> {
    let this = format!("gold.{}", crate::spec::ident(name));
    // Macros are imported on the template's first line: its line numbers stay the file's.
    let prefix = match &jinja.macros {
        Some(m) if !m.names.is_empty() => format!("{{% from {MACROS:?} import {} %}}", m.names.join(", ")),
        _ => String::new(),
    };
    let source = format!("{prefix}{template}");
    let render_once = |incremental: bool| -> Result<(String, Sinks), RenderError> {
        let sinks = Sinks::default();
        let env = environment(&jinja.vars, jinja.macros.as_ref(), &sinks, incremental, &this);
        let sql = env.render_str(&source, minijinja::context! {}).map_err(|e| match (&jinja.macros, e.name()) {
            (Some(m), Some(MACROS)) => m.error(&e),
            _ => RenderError {
                file: None,
                line: e.line(),
                column: None,
                message: format!("template error: {}", e.detail().map_or_else(|| e.kind().to_string(), str::to_string)),
            },
        })?;
        Ok((sql, sinks))
    };
    let (sql, sinks) = render_once(false)?;
    let config = sinks.config.lock().map(|c| c.clone()).unwrap_or_default();
    let mut refs: Vec<String> = sinks.refs.lock().map(|s| s.clone()).unwrap_or_default();
    let incremental = if config.materialized.as_deref() == Some("incremental") {
        let (sql, sinks) = render_once(true)?;
        refs.extend(sinks.refs.lock().map(|s| s.clone()).unwrap_or_default());
        Some(IncrementalQuery { sql, unique_key: config.unique_key.clone() })
    } else {
        None
    };
    for r in &refs {
        if !exists(r) {
            return Err(RenderError::plain(format!("ref('{r}') names no silver or gold table")));
        }
    }
    for sql in std::iter::once(&sql).chain(incremental.as_ref().map(|i| &i.sql)) {
        refs.extend(tables_of(template, sql, name, exists)?);
    }
    let mut unique = Vec::new();
    for r in refs {
        if r != name && !unique.contains(&r) {
            unique.push(r);
        }
    }
    Ok(Rendered { sql, refs: unique, incremental, notes: config.notes })
}

/// Where a span of a model's rendered SQL comes from in its template: (line, column), 1-based,
/// the column when the spanned text is found once on that line. `start` and `end` are the span's
/// (line, column) in `rendered`, columns counting characters, the end's just past the span (a
/// point: the word there).
///
/// Rendering keeps a template's lines where it can (macros are imported on the first line,
/// `{{ ref('x') }}` renders in place), so the same line is taken when both have as many lines
/// and that line holds the spanned text. A macro or a false `{% if %}` adds or drops lines; then
/// the one template line holding the spanned text (or the rendered line as a whole) is taken,
/// and nothing when that is ambiguous: no line is better than a wrong one.
pub fn template_position(
    template: &str,
    rendered: &str,
    start: (usize, usize),
    end: (usize, usize),
) -> Option<(usize, Option<usize>)> {
    let rendered_lines: Vec<&str> = rendered.lines().collect();
    let template_lines: Vec<&str> = template.lines().collect();
    let at = *rendered_lines.get(start.0.checked_sub(1)?)?;
    let chars: Vec<char> = at.chars().collect();
    let from = start.1.saturating_sub(1).min(chars.len());
    let to = match end.0 == start.0 && end.1 > start.1 {
        true => end.1.saturating_sub(1).min(chars.len()),
        // A point (a parser's position) spans the word there.
        false if end.0 == start.0 => {
            chars[from..].iter().position(|c| c.is_whitespace()).map_or(chars.len(), |n| from + n)
        }
        false => chars.len(),
    };
    let text: String = chars[from..to].iter().collect();
    let text = text.trim();
    if template_lines.len() == rendered_lines.len() {
        let source = template_lines[start.0 - 1];
        if source == at {
            return Some((start.0, Some(start.1)));
        }
        if text.is_empty() || source.contains(text) {
            return Some((start.0, column_of(source, text)));
        }
    }
    template_find(template, text).or_else(|| {
        let mut equal =
            template_lines.iter().enumerate().filter(|(_, l)| !at.trim().is_empty() && l.trim() == at.trim());
        let (i, line) = equal.next()?;
        equal.next().is_none().then(|| (i + 1, column_of(line, text)))
    })
}

/// The one line of `template` holding `text`, 1-based, and the column where `text` starts when
/// it is there once; nothing when no line or several do.
pub fn template_find(template: &str, text: &str) -> Option<(usize, Option<usize>)> {
    if text.is_empty() {
        return None;
    }
    let mut holding = template.lines().enumerate().filter(|(_, l)| l.contains(text));
    let (i, line) = holding.next()?;
    holding.next().is_none().then(|| (i + 1, column_of(line, text)))
}

/// The 1-based character column of `text` in `line`, when it occurs there exactly once.
fn column_of(line: &str, text: &str) -> Option<usize> {
    let mut found = line.match_indices(text).filter(|_| !text.is_empty());
    let (byte, _) = found.next()?;
    found.next().is_none().then(|| line[..byte].chars().count() + 1)
}

/// The tables `sql` (one query, rendered from `template`) reads by name; `gold.<name>`
/// (`{{ this }}`) is the model itself.
fn tables_of(template: &str, sql: &str, name: &str, exists: &dyn Fn(&str) -> bool) -> Result<Vec<String>, RenderError> {
    let statements = DFParser::parse_sql(sql).map_err(|e| {
        let problem = crate::catalog::SqlProblem::of(&e);
        let position = problem.span.and_then(|(start, end)| template_position(template, sql, start, end));
        RenderError {
            file: None,
            line: position.map(|p| p.0),
            column: position.and_then(|p| p.1),
            message: format!("SQL does not parse: {}", problem.message),
        }
    })?;
    if statements.len() != 1 {
        return Err(RenderError::plain(format!(
            "a model must be exactly one query, found {} statements",
            statements.len()
        )));
    }
    let mut refs = Vec::new();
    for statement in &statements {
        let (tables, _ctes) =
            resolve_table_references(statement, true).map_err(|e| RenderError::plain(e.to_string()))?;
        for t in tables {
            let table = t.table().to_string();
            let qualified_layer = t.schema();
            if table == name && qualified_layer == Some("gold") {
                continue;
            }
            if !exists(&table) || qualified_layer.is_some_and(|s| !matches!(s, "silver" | "gold")) {
                return Err(RenderError::plain(format!(
                    "unknown table `{t}`; models read silver and gold tables by name or with ref()"
                )));
            }
            refs.push(table);
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        matches!(name, "orders" | "daily_revenue" | "model")
    }

    fn render_plain(sql: &str) -> Result<Rendered, RenderError> {
        render(sql, "model", &known, &Jinja::default())
    }

    #[test]
    fn dbt_functions_render_or_fail_naming_the_construct() {
        let vars = BTreeMap::from([("min_amount".to_string(), minijinja::Value::from(10))]);
        let (jinja, errors) = Jinja::new(vars, Vec::new());
        assert!(errors.is_empty());
        let sql = "{{ config(materialized='table', tags=['x'], schema='marts') }}SELECT * FROM {{ source('shop', 'orders') }} \
                   JOIN {{ ref('pkg', 'daily_revenue') }} USING (x) WHERE amount > {{ var('min_amount') }} \
                   AND y > {{ var('other', 3) }} AND z = '{{ env_var('MEDALLION_TEST_SURELY_UNSET', 'd') }}'";
        let r = render(sql, "model", &known, &jinja).expect("renders");
        assert_eq!(r.refs, vec!["orders".to_string(), "daily_revenue".into()]);
        assert!(r.sql.contains("amount > 10") && r.sql.contains("y > 3") && r.sql.contains("z = 'd'"), "{}", r.sql);
        assert_eq!(r.incremental, None);
        assert!(r.notes.iter().any(|n| n.contains("config(schema=…) is ignored")), "{:?}", r.notes);
        for (bad, needle) in [
            ("{{ config(materialized='snapshot') }}SELECT 1", "config(materialized='snapshot') is not supported"),
            (
                "{{ config(materialized='incremental', incremental_strategy='microbatch') }}SELECT 1",
                "incremental_strategy='microbatch'",
            ),
            ("SELECT {{ var('nope') }}", "var('nope') is not set"),
            ("SELECT * FROM {{ source('shop', 'nope') }}", "ref('nope') names no silver or gold table"),
            ("SELECT {{ adapter.dispatch('x')() }}", "adapter.dispatch() is not supported"),
            ("SELECT {{ run_query('select 1') }}", "run_query() is not supported"),
        ] {
            let e = render(bad, "model", &known, &jinja).expect_err(bad);
            assert!(e.message.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn incremental_models_render_twice_and_this_is_their_table() {
        let sql = "{{ config(materialized='incremental', unique_key=['id', 'day']) }}\nSELECT * FROM {{ ref('orders') }}\n\
                   {% if is_incremental() %}WHERE ts > (SELECT max(ts) FROM {{ this }}){% endif %}";
        let r = render_plain(sql).expect("renders");
        assert_eq!(r.refs, vec!["orders".to_string()], "the model's own table is not an input");
        assert!(!r.sql.contains("WHERE"), "{}", r.sql);
        let inc = r.incremental.expect("incremental");
        assert!(inc.sql.contains(r#"FROM gold."model")"#), "{}", inc.sql);
        assert_eq!(inc.unique_key, vec!["id".to_string(), "day".into()]);
        // is_incremental() outside an incremental model is false, as in dbt.
        let r = render_plain("SELECT 1 {% if is_incremental() %}nope{% endif %}").expect("renders");
        assert_eq!((r.sql.as_str(), r.incremental), ("SELECT 1 ", None));
    }

    #[test]
    fn macros_are_shared_and_their_errors_point_into_their_file() {
        let files = vec![
            ("macros/cents.sql".into(), "{% macro cents_to_dollars(col) %}\n({{ col }} / 100){% endmacro %}\n".into()),
            (
                "macros/money.sql".into(),
                "{# money #}\n{% macro money(col) %}round({{ cents_to_dollars(col) }}, 2){% endmacro %}".into(),
            ),
        ];
        let (jinja, errors) = Jinja::new(BTreeMap::new(), files);
        assert!(errors.is_empty(), "{errors:?}");
        let r = render("SELECT {{ money('amount') }} AS a\nFROM orders", "model", &known, &jinja).expect("renders");
        assert_eq!(r.sql, "SELECT round(\n(amount / 100), 2) AS a\nFROM orders");
        let e = render("SELECT 1,\n{{ nope() }}", "model", &known, &jinja).expect_err("undefined");
        assert_eq!((e.file, e.line), (None, Some(2)), "{}", e.message);
        let broken = vec![
            ("macros/a.sql".into(), "{% macro a() %}1{% endmacro %}\n".into()),
            ("macros/b.sql".into(), "\n\n{% macro b() %}{% if %}{% endmacro %}\n".into()),
        ];
        let (jinja, errors) = Jinja::new(BTreeMap::new(), broken);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!((e.file.as_deref(), e.line), (Some(std::path::Path::new("macros/b.sql")), Some(3)), "{e}");
        // The good file's macros still work; a model calling the broken one's is a follow-on.
        assert_eq!(render("SELECT {{ a() }}", "model", &known, &jinja).expect("renders").sql, "SELECT 1");
        let e = render("SELECT {{ b() }}", "model", &known, &jinja).expect_err("b is gone");
        assert!(jinja.is_follow_on(&e), "{e}");
    }

    /// Where `word` first is in `sql`: (line, column) of its start and just past it, 1-based.
    fn span_of(sql: &str, word: &str) -> ((usize, usize), (usize, usize)) {
        let (i, line) = sql.lines().enumerate().find(|(_, l)| l.contains(word)).expect("word");
        let column = line[..line.find(word).expect("word")].chars().count() + 1;
        ((i + 1, column), (i + 1, column + word.chars().count()))
    }

    #[test]
    fn a_position_in_the_rendered_sql_is_found_in_the_template() {
        let at = |template: &str, word: &str| {
            let sql = render_plain(template).expect("renders").sql;
            let (start, end) = span_of(&sql, word);
            template_position(template, &sql, start, end)
        };
        // `ref()` renders in place, shorter than it is written: same line, the word's own column.
        assert_eq!(at("SELECT 1\nFROM {{ ref('orders') }} AS o WHERE o.amout > 0", "o.amout"), Some((2, Some(37))));
        // A false `{% if %}` drops lines: the one line holding the word.
        let template = "{{ config(materialized='incremental') }}\nSELECT a\nFROM orders\n{% if is_incremental() %}\nWHERE a > 1\n{% endif %}\nORDER BY amout";
        assert_eq!(at(template, "amout"), Some((7, Some(10))));
        // The word on two lines of a template whose lines moved: no line rather than a wrong one.
        let template = "{% if false %}\n\n{% endif %}SELECT amout\nFROM orders\nWHERE amout > 0";
        assert_eq!(at(template, "amout"), None);
        // A parser's point spans the word there.
        let sql = "SELECT a\nFROM orders LIMT 1";
        assert_eq!(template_position(sql, sql, (2, 13), (2, 13)), Some((2, Some(13))));
        let template = "{% if false %}\n{% endif %}SELECT a\nFROM orders o LIMT 1";
        let e = render_plain(template).expect_err("does not parse");
        assert_eq!((e.line, e.column), (Some(3), Some(15)), "{}", e.message);
        assert_eq!(e.message, "SQL does not parse: Expected: end of statement, found: LIMT");
    }

    #[test]
    fn ref_and_plain_names_are_collected() {
        let r = render_plain("{% set cols = ['a', 'b'] %}SELECT {% for c in cols %}{{ c }}, {% endfor %}1 FROM {{ ref('orders') }} JOIN daily_revenue USING (x)")
            .expect("render");
        assert_eq!(r.refs, vec!["orders".to_string(), "daily_revenue".to_string()]);
        assert!(r.sql.starts_with("SELECT a, b, 1 FROM orders"));
    }

    #[test]
    fn unknown_references_are_errors() {
        assert!(render_plain("SELECT * FROM {{ ref('nope') }}").expect_err("an error").message.contains("ref('nope')"));
        assert!(render_plain("SELECT * FROM nope").expect_err("an error").message.contains("unknown table `nope`"));
        assert!(render_plain("WITH t AS (SELECT 1) SELECT * FROM t").is_ok());
        let e = render_plain("SELECT 1\n{{ undefined_var }}").expect_err("an error");
        assert!(e.message.contains("template error") && e.line == Some(2), "{e:?}");
    }
}
