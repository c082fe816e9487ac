//! Gold models: what the project validated ([`GoldModel`]), Jinja rendering (`{{ ref('orders') }}`), reference resolution and planning.

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
    /// Labels for selection.
    pub tags: Vec<String>,
    /// Retries after a transient error (None: the run's).
    pub retries: Option<u32>,
    /// Compaction and vacuum after runs.
    pub maintenance: Maintenance,
}

/// A model's SQL after rendering, and the tables it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The SQL DataFusion runs.
    pub sql: String,
    /// Tables referenced with `ref()` or by name, in first-seen order, deduplicated.
    pub refs: Vec<String>,
}

/// Renders `template` and collects the tables it references. `exists` says whether a name is a
/// silver or gold table; `ref()` of anything else is an error, and so is a plain reference to an
/// unknown table (CTEs excepted). `vars` are the project's `[vars]`.
///
/// dbt's Jinja as far as it applies: `ref('m')` (and `ref('package', 'm')`), `source('src', 't')`
/// (silver table `t`: silver is where raw data becomes tables), `config(...)` (materialized
/// `table` accepted; other materializations are errors naming the construct; other keys ignored),
/// `var('x', default)`, `env_var('X', default)`. `is_incremental()` is an error: a model's
/// incremental build is declared with `incremental = {...}`.
pub fn render(
    template: &str,
    exists: &dyn Fn(&str) -> bool,
    vars: &std::collections::BTreeMap<String, minijinja::Value>,
) -> Result<Rendered, String> {
    use minijinja::value::Kwargs;
    use minijinja::{Error as JinjaError, ErrorKind};

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let unsupported = |what: String| JinjaError::new(ErrorKind::InvalidOperation, what);
    let sink = Arc::clone(&seen);
    env.add_function("ref", move |first: String, second: Option<String>| -> Result<String, JinjaError> {
        let name = second.unwrap_or(first);
        if let Ok(mut s) = sink.lock() {
            s.push(name.clone());
        }
        Ok(name)
    });
    let sink = Arc::clone(&seen);
    env.add_function("source", move |_source: String, table: String| -> Result<String, JinjaError> {
        if let Ok(mut s) = sink.lock() {
            s.push(table.clone());
        }
        Ok(table)
    });
    env.add_function("config", move |kwargs: Kwargs| -> Result<String, JinjaError> {
        let materialized: Option<String> = kwargs.get("materialized")?;
        for key in kwargs.args() {
            let _: minijinja::Value = kwargs.get(key)?;
        }
        match materialized.as_deref() {
            None | Some("table") => Ok(String::new()),
            Some(m) => Err(unsupported(format!(
                "config(materialized='{m}') is not supported: gold models are tables; for an incremental build \
                 declare incremental = {{ partition_by = \"…\" }} on the model"
            ))),
        }
    });
    env.add_function("is_incremental", move || -> Result<bool, JinjaError> {
        Err(unsupported(
            "is_incremental() is not supported: declare incremental = { partition_by = \"…\" } on the model, and \
             medallion rebuilds the partitions the source's changes touch"
                .into(),
        ))
    });
    let known = vars.clone();
    env.add_function(
        "var",
        move |name: String, default: Option<minijinja::Value>| -> Result<minijinja::Value, JinjaError> {
            known
                .get(&name)
                .cloned()
                .or(default)
                .ok_or_else(|| unsupported(format!("var('{name}') is not set: add it under [vars] in medallion.toml")))
        },
    );
    env.add_function("env_var", move |name: String, default: Option<String>| -> Result<String, JinjaError> {
        std::env::var(&name)
            .ok()
            .or(default)
            .ok_or_else(|| unsupported(format!("env_var('{name}'): the environment variable is not set")))
    });
    let sql = env.render_str(template, minijinja::context! {}).map_err(|e| render_error(&e))?;
    let mut refs: Vec<String> = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for name in &refs {
        if !exists(name) {
            return Err(format!("ref('{name}') names no silver or gold table"));
        }
    }
    let statements = DFParser::parse_sql(&sql).map_err(|e| format!("SQL does not parse: {e}"))?;
    if statements.len() != 1 {
        return Err(format!("a model must be exactly one query, found {} statements", statements.len()));
    }
    for statement in &statements {
        let (tables, _ctes) = resolve_table_references(statement, true).map_err(|e| e.to_string())?;
        for t in tables {
            let name = t.table().to_string();
            let qualified_layer = t.schema();
            if !exists(&name) || qualified_layer.is_some_and(|s| !matches!(s, "silver" | "gold")) {
                return Err(format!("unknown table `{t}`; models read silver and gold tables by name or with ref()"));
            }
            refs.push(name);
        }
    }
    let mut unique = Vec::new();
    for r in refs {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    Ok(Rendered { sql, refs: unique })
}

fn render_error(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("template error at line {line}: {}", e.detail().unwrap_or(&e.kind().to_string())),
        None => format!("template error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        matches!(name, "orders" | "daily_revenue")
    }

    #[test]
    fn dbt_functions_render_or_fail_naming_the_construct() {
        let vars = std::collections::BTreeMap::from([("min_amount".to_string(), minijinja::Value::from(10))]);
        let sql = "{{ config(materialized='table', tags=['x'], unique_key='id') }}SELECT * FROM {{ source('shop', 'orders') }} \
                   JOIN {{ ref('pkg', 'daily_revenue') }} USING (x) WHERE amount > {{ var('min_amount') }} \
                   AND y > {{ var('other', 3) }} AND z = '{{ env_var('MEDALLION_TEST_SURELY_UNSET', 'd') }}'";
        let r = render(sql, &known, &vars).expect("renders");
        assert_eq!(r.refs, vec!["orders".to_string(), "daily_revenue".into()]);
        assert!(r.sql.contains("amount > 10") && r.sql.contains("y > 3") && r.sql.contains("z = 'd'"), "{}", r.sql);
        for (bad, needle) in [
            ("{{ config(materialized='incremental') }}SELECT 1", "config(materialized='incremental') is not supported"),
            ("{% if is_incremental() %}x{% endif %}SELECT 1", "is_incremental() is not supported"),
            ("SELECT {{ var('nope') }}", "var('nope') is not set"),
            ("SELECT * FROM {{ source('shop', 'nope') }}", "ref('nope') names no silver or gold table"),
        ] {
            let e = render(bad, &known, &vars).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn ref_and_plain_names_are_collected() {
        let r = render("{% set cols = ['a', 'b'] %}SELECT {% for c in cols %}{{ c }}, {% endfor %}1 FROM {{ ref('orders') }} JOIN daily_revenue USING (x)", &known, &Default::default())
            .expect("render");
        assert_eq!(r.refs, vec!["orders".to_string(), "daily_revenue".to_string()]);
        assert!(r.sql.starts_with("SELECT a, b, 1 FROM orders"));
    }

    #[test]
    fn unknown_references_are_errors() {
        assert!(
            render("SELECT * FROM {{ ref('nope') }}", &known, &Default::default())
                .expect_err("an error")
                .contains("ref('nope')")
        );
        assert!(
            render("SELECT * FROM nope", &known, &Default::default())
                .expect_err("an error")
                .contains("unknown table `nope`")
        );
        assert!(render("WITH t AS (SELECT 1) SELECT * FROM t", &known, &Default::default()).is_ok());
        assert!(
            render("SELECT {{ undefined_var }}", &known, &Default::default())
                .expect_err("an error")
                .contains("template error")
        );
    }
}
