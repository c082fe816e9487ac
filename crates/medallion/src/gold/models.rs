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
/// unknown table (CTEs excepted).
pub fn render(template: &str, exists: &dyn Fn(&str) -> bool) -> Result<Rendered, String> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let sink = Arc::clone(&seen);
    env.add_function("ref", move |name: String| -> Result<String, minijinja::Error> {
        if let Ok(mut s) = sink.lock() {
            s.push(name.clone());
        }
        Ok(name)
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
    fn ref_and_plain_names_are_collected() {
        let r = render("{% set cols = ['a', 'b'] %}SELECT {% for c in cols %}{{ c }}, {% endfor %}1 FROM {{ ref('orders') }} JOIN daily_revenue USING (x)", &known)
            .expect("render");
        assert_eq!(r.refs, vec!["orders".to_string(), "daily_revenue".to_string()]);
        assert!(r.sql.starts_with("SELECT a, b, 1 FROM orders"));
    }

    #[test]
    fn unknown_references_are_errors() {
        assert!(render("SELECT * FROM {{ ref('nope') }}", &known).expect_err("an error").contains("ref('nope')"));
        assert!(render("SELECT * FROM nope", &known).expect_err("an error").contains("unknown table `nope`"));
        assert!(render("WITH t AS (SELECT 1) SELECT * FROM t", &known).is_ok());
        assert!(render("SELECT {{ undefined_var }}", &known).expect_err("an error").contains("template error"));
    }
}
