//! `medallion import dbt <dbt_project> <new_project>`: a dbt project as a medallion project.
//!
//! - Seeds (`seeds/*.csv`) become CSV sources landing from `seeds/` and silver contracts with the
//!   types dbt would infer (`import::seed`); the key is the column `schema.yml` tests as `unique`
//!   and `not_null`, else the first column whose values are distinct and present.
//! - Models (`models/**.sql`) become gold models, their SQL copied as it is (dbt's Jinja runs in
//!   medallion); a materialization set in `dbt_project.yml` or `schema.yml` is written into the
//!   SQL's first line as `config()`, so the line numbers stay the file's.
//! - `schema.yml` descriptions become descriptions; the generic tests `unique`, `not_null`,
//!   `accepted_values`, `relationships` (and `dbt_utils.unique_combination_of_columns`) become
//!   expectations that fail the run (`severity: warn` warns); singular tests in `tests/` become
//!   `sql` expectations of the model they read.
//! - `macros/**.sql` are copied; `vars` go to `[project] vars`.
//!
//! What cannot be translated (snapshots, packages, hooks, custom tests, sources without a seed) is
//! returned, file by file, for the user to see; the import never guesses silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::seed::{self, Seed};
use super::{GITIGNORE, Imported, key, quote, write_file};
use crate::error::{Error, Result};

/// A model or seed's properties from `*.yml`.
#[derive(Debug, Clone, Default)]
struct Properties {
    description: Option<String>,
    /// Column → its description.
    docs: BTreeMap<String, String>,
    /// Expectations, as TOML inline tables.
    expectations: Vec<String>,
    /// Columns tested both `unique` and `not_null`.
    keys: Vec<String>,
    config: serde_json::Map<String, Value>,
}

/// Imports the dbt project at `from` into a new medallion project at `to`.
pub fn import(from: &Path, to: &Path) -> Result<Imported> {
    let main = to.join(crate::spec::PROJECT_FILE);
    if main.exists() {
        return Err(Error::ProjectExists { path: main });
    }
    let project_file = from.join("dbt_project.yml");
    let project: Value = read_yaml(&project_file)?;
    let mut out = Imported::default();
    let name = project.get("name").and_then(Value::as_str).unwrap_or("imported").to_string();
    let dirs = |key: &str, default: &str| -> Vec<String> {
        match project.get(key).and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            None => vec![default.to_string()],
        }
    };
    let rel = |p: &Path| p.strip_prefix(from).unwrap_or(p).to_path_buf();
    let dbt_project = PathBuf::from("dbt_project.yml");
    for (key, what) in [
        ("on-run-start", "on-run-start hooks are not run"),
        ("on-run-end", "on-run-end hooks are not run"),
        ("snapshots", "snapshot configs are not translated"),
    ] {
        if project.get(key).is_some_and(|v| !v.is_null()) {
            out.untranslated.push((dbt_project.clone(), what.to_string()));
        }
    }
    for file in ["packages.yml", "dependencies.yml"] {
        if from.join(file).is_file() {
            out.untranslated.push((
                file.into(),
                "packages are not installed: their macros are unknown to medallion (a model using one fails in validate, naming it)"
                    .into(),
            ));
        }
    }
    for dir in dirs("snapshot-paths", "snapshots") {
        for f in files_under(&from.join(&dir), &["sql"]) {
            out.untranslated.push((
                rel(&f),
                "snapshots are not translated: an SCD 2 silver table (`history = { scd = 2 }`) keeps the same history"
                    .into(),
            ));
        }
    }
    for dir in dirs("analysis-paths", "analyses") {
        for f in files_under(&from.join(&dir), &["sql"]) {
            out.untranslated.push((rel(&f), "analyses are not built (run them with `medallion sql`)".into()));
        }
    }

    // Properties of models, seeds and sources, from every YAML file under models/ and seeds/.
    let mut props: BTreeMap<String, Properties> = BTreeMap::new();
    let mut sources: Vec<(PathBuf, String, String)> = Vec::new(); // (file, source, table)
    let mut yaml_dirs = dirs("model-paths", "models");
    yaml_dirs.extend(dirs("seed-paths", "seeds"));
    for dir in &yaml_dirs {
        for f in files_under(&from.join(dir), &["yml", "yaml"]) {
            let doc: Value = read_yaml(&f)?;
            let file = rel(&f);
            for kind in ["models", "seeds"] {
                for node in doc.get(kind).and_then(Value::as_array).into_iter().flatten() {
                    let Some(n) = node.get("name").and_then(Value::as_str) else { continue };
                    let p = props.entry(n.to_string()).or_default();
                    properties(node, n, &file, p, &mut out);
                }
            }
            for src in doc.get("sources").and_then(Value::as_array).into_iter().flatten() {
                let s = src.get("name").and_then(Value::as_str).unwrap_or_default();
                for t in src.get("tables").and_then(Value::as_array).into_iter().flatten() {
                    let Some(tn) = t.get("name").and_then(Value::as_str) else { continue };
                    let table = t.get("identifier").and_then(Value::as_str).unwrap_or(tn);
                    sources.push((file.clone(), s.to_string(), table.to_string()));
                    let p = props.entry(table.to_string()).or_default();
                    properties(t, table, &file, p, &mut out);
                }
            }
            for key in ["unit_tests", "exposures", "metrics", "semantic_models", "snapshots", "macros", "analyses"] {
                if doc.get(key).is_some_and(|v| !v.is_null()) {
                    out.untranslated.push((file.clone(), format!("`{key}:` is not translated")));
                }
            }
        }
    }

    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut toml = format!("[project]\nname = {}\n", quote(&name));
    if let Some(vars) = project.get("vars").and_then(Value::as_object) {
        let mut inline = Vec::new();
        for (k, v) in vars {
            match toml_value(v) {
                Some(t) => inline.push(format!("{} = {t}", key(k))),
                None => out.untranslated.push((
                    dbt_project.clone(),
                    format!("vars: `{k}` is null or nested under a project name; set it with --vars"),
                )),
            }
        }
        if !inline.is_empty() {
            toml.push_str(&format!("vars = {{ {} }}\n", inline.join(", ")));
        }
    }

    // Seeds: a source and a silver table each.
    let seed_config = project.get("seeds").cloned().unwrap_or(Value::Null);
    let mut seeds = Vec::new();
    for dir in dirs("seed-paths", "seeds") {
        for f in files_under(&from.join(&dir), &["csv"]) {
            let Some(stem) = f.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
            let text = read_text(&f)?;
            let sub = f.parent().and_then(|p| p.strip_prefix(from.join(&dir)).ok()).unwrap_or(Path::new(""));
            let config = scoped_config(&seed_config, &name, sub, &stem);
            let overrides: Vec<(String, String)> = config
                .get("column_types")
                .and_then(Value::as_object)
                .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|t| (k.clone(), t.to_string()))).collect())
                .unwrap_or_default();
            match seed::infer(&text, &overrides) {
                Ok(seed) => {
                    files.push((PathBuf::from("seeds").join(format!("{stem}.csv")), text));
                    seeds.push((stem, rel(&f), seed));
                }
                Err(e) => out.untranslated.push((rel(&f), format!("seed not imported: {e}"))),
            }
        }
    }
    for (stem, file, seed) in &seeds {
        let p = props.remove(stem).unwrap_or_default();
        toml.push_str(&silver_table(stem, file, seed, &p, &mut out));
    }
    let seed_names: Vec<&str> = seeds.iter().map(|(s, ..)| s.as_str()).collect();
    for (file, source, table) in &sources {
        if !seed_names.contains(&table.as_str()) {
            out.untranslated.push((
                file.clone(),
                format!("source `{source}.{table}` is loaded outside dbt: declare [sources.{table}] and a silver contract for it"),
            ));
        }
    }

    // Models: gold models with their SQL.
    let model_config = project.get("models").cloned().unwrap_or(Value::Null);
    for dir in dirs("model-paths", "models") {
        let base = from.join(&dir);
        for f in files_under(&base, &["sql"]) {
            let Some(stem) = f.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
            let sql = read_text(&f)?;
            let sub = f.parent().and_then(|p| p.strip_prefix(&base).ok()).unwrap_or(Path::new(""));
            let mut config = scoped_config(&model_config, &name, sub, &stem);
            let p = props.remove(&stem).unwrap_or_default();
            config.extend(p.config.clone());
            if config.get("enabled").and_then(Value::as_bool) == Some(false) {
                out.notes.push((rel(&f), "disabled (enabled: false): not imported".into()));
                continue;
            }
            for hook in ["pre-hook", "post-hook", "pre_hook", "post_hook"] {
                if config.contains_key(hook) {
                    out.untranslated.push((rel(&f), format!("{hook} is not run")));
                }
            }
            files.push((PathBuf::from("gold").join(format!("{stem}.sql")), with_config(&sql, &config)));
            toml.push_str(&format!("\n[gold.{}]\n", key(&stem)));
            if let Some(d) = &p.description {
                toml.push_str(&format!("description = {}\n", quote(d)));
            }
            if let Some(tags) = config.get("tags") {
                let tags: Vec<String> = match tags {
                    Value::String(t) => vec![quote(t)],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).map(quote).collect(),
                    _ => Vec::new(),
                };
                if !tags.is_empty() {
                    toml.push_str(&format!("tags = [{}]\n", tags.join(", ")));
                }
            }
            // Column descriptions have no key in a gold model's section: kept beside it.
            for (column, doc) in &p.docs {
                toml.push_str(&format!("# column {column}: {}\n", doc.replace('\n', " ")));
            }
            push_expectations(&mut toml, &p.expectations);
        }
    }
    for (n, p) in &props {
        if !p.expectations.is_empty() || p.description.is_some() {
            out.notes.push((
                PathBuf::from("models"),
                format!("properties of `{n}`, which is neither a model nor a seed, were left out"),
            ));
        }
    }

    // Singular tests: a query returning failing rows, on the model it reads.
    for dir in dirs("test-paths", "tests") {
        for f in files_under(&from.join(&dir), &["sql"]) {
            let text = read_text(&f)?;
            match singular_test(&text) {
                Some((table, query)) => {
                    let test = f.file_stem().and_then(|s| s.to_str()).unwrap_or("test").to_string();
                    let exp = format!("{{ name = {}, sql = {} }}", quote(&test), quote(&query));
                    if !add_expectation(&mut toml, &table, &exp) {
                        out.untranslated.push((rel(&f), format!("reads `{table}`, which is not imported")));
                    }
                }
                None => out
                    .untranslated
                    .push((rel(&f), "a singular test with Jinja other than ref()/source() is not translated".into())),
            }
        }
    }

    // Macros, flattened into macros/ (a name taken twice gets its directory as a prefix).
    for dir in dirs("macro-paths", "macros") {
        let base = from.join(&dir);
        for f in files_under(&base, &["sql"]) {
            let text = read_text(&f)?;
            let flat = f.strip_prefix(&base).unwrap_or(&f).to_string_lossy().replace(['/', '\\'], "_");
            files.push((PathBuf::from("macros").join(flat), text));
        }
    }

    files.push((PathBuf::from(crate::spec::PROJECT_FILE), toml));
    files.push((PathBuf::from(".gitignore"), GITIGNORE.into()));
    for (rel, text) in &files {
        write_file(to, rel, text.as_bytes())?;
        out.files.push(rel.clone());
    }
    Ok(out)
}

/// The silver table (and its source) of a seed.
fn silver_table(name: &str, file: &Path, seed: &Seed, p: &Properties, out: &mut Imported) -> String {
    let mut keys: Vec<String> = p.keys.iter().filter(|k| seed.columns.iter().any(|c| &c.name == *k)).cloned().collect();
    if keys.is_empty() {
        keys = match seed.columns.iter().find(|c| c.unique) {
            Some(c) => {
                out.notes.push((file.to_path_buf(), format!("primary key `{}`: its values are distinct and present (test it `unique` and `not_null` in schema.yml to make it explicit)", c.name)));
                vec![c.name.clone()]
            }
            None => {
                out.notes.push((
                    file.to_path_buf(),
                    "no column is distinct: every column is the key (identical rows are kept once)".into(),
                ));
                seed.columns.iter().map(|c| c.name.clone()).collect()
            }
        };
    }
    let mut t = format!(
        "\n[sources.{k}]\nformat = \"csv\"\npaths = [{}]\n",
        quote(&format!("seeds/{name}.csv")),
        k = key(name)
    );
    if !seed.null_values.is_empty() {
        let nulls: Vec<String> = seed.null_values.iter().map(|v| quote(v)).collect();
        t.push_str(&format!("null_values = [{}]\n", nulls.join(", ")));
    }
    t.push_str(&format!("\n[silver.{}]\n", key(name)));
    if let Some(d) = &p.description {
        t.push_str(&format!("description = {}\n", quote(d)));
    }
    let keys_toml: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    t.push_str(&format!("primary_key = [{}]\ncolumns = [\n", keys_toml.join(", ")));
    for c in &seed.columns {
        let mut col = format!("  {{ name = {}, type = {}", quote(&c.name), quote(&c.ty));
        if !keys.contains(&c.name) {
            col.push_str(", required = false");
        }
        if let Some(d) = p.docs.get(&c.name) {
            col.push_str(&format!(", description = {}", quote(d)));
        }
        t.push_str(&col);
        t.push_str(" },\n");
    }
    t.push_str("]\n");
    push_expectations(&mut t, &p.expectations);
    t
}

fn push_expectations(toml: &mut String, expectations: &[String]) {
    if expectations.is_empty() {
        return;
    }
    toml.push_str("expectations = [\n");
    for e in expectations {
        toml.push_str(&format!("  {e},\n"));
    }
    toml.push_str("]\n");
}

/// Adds `expectation` to the section of `table` in `toml` (silver or gold); false when absent.
fn add_expectation(toml: &mut String, table: &str, expectation: &str) -> bool {
    for layer in ["silver", "gold"] {
        let header = format!("\n[{layer}.{}]\n", key(table));
        let Some(start) = toml.find(&header) else { continue };
        let body = start + header.len();
        let end = toml[body..].find("\n[").map_or(toml.len(), |i| body + i + 1);
        let section = &toml[body..end];
        let updated = match section.find("expectations = [\n") {
            Some(i) => {
                let at = i + "expectations = [\n".len();
                format!("{}  {expectation},\n{}", &section[..at], &section[at..])
            }
            None => format!("{section}expectations = [\n  {expectation},\n]\n"),
        };
        toml.replace_range(body..end, &updated);
        return true;
    }
    false
}

/// Reads a model, seed or source table's description, column docs, tests and config.
fn properties(node: &Value, name: &str, file: &Path, p: &mut Properties, out: &mut Imported) {
    if let Some(d) = node.get("description").and_then(Value::as_str).filter(|d| !d.trim().is_empty()) {
        p.description = Some(d.trim().to_string());
    }
    if let Some(c) = node.get("config").and_then(Value::as_object) {
        p.config.extend(c.clone());
    }
    for test in tests_of(node) {
        match table_test(test) {
            Some(e) => p.expectations.push(e),
            None => out
                .untranslated
                .push((file.to_path_buf(), format!("`{name}`: test {} is not translated", test_name(test)))),
        }
    }
    for col in node.get("columns").and_then(Value::as_array).into_iter().flatten() {
        let Some(c) = col.get("name").and_then(Value::as_str) else { continue };
        if let Some(d) = col.get("description").and_then(Value::as_str).filter(|d| !d.trim().is_empty()) {
            p.docs.insert(c.to_string(), d.trim().to_string());
        }
        let tests: Vec<&Value> = tests_of(col).collect();
        let named = |n: &str| tests.iter().any(|t| test_name(t) == n);
        if named("unique") && named("not_null") && !p.keys.iter().any(|k| k == c) {
            p.keys.push(c.to_string());
        }
        for test in tests {
            match column_test(c, test) {
                Some(e) => p.expectations.push(e),
                None => out
                    .untranslated
                    .push((file.to_path_buf(), format!("`{name}.{c}`: test {} is not translated", test_name(test)))),
            }
        }
    }
}

/// `tests:` and dbt 1.8's `data_tests:`.
fn tests_of(node: &Value) -> impl Iterator<Item = &Value> {
    ["tests", "data_tests"].into_iter().flat_map(|k| node.get(k).and_then(Value::as_array).into_iter().flatten())
}

/// `unique` or `{accepted_values: {...}}`'s name.
fn test_name(test: &Value) -> String {
    match test {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    }
}

/// A test's arguments (top-level, or under dbt 1.10's `arguments:`) and its config.
fn test_args(test: &Value) -> (serde_json::Map<String, Value>, serde_json::Map<String, Value>) {
    let Some(body) = test.as_object().and_then(|m| m.values().next()).and_then(Value::as_object) else {
        return Default::default();
    };
    let mut args = body.clone();
    let config = args.remove("config").and_then(|c| c.as_object().cloned()).unwrap_or_default();
    if let Some(Value::Object(nested)) = args.remove("arguments") {
        args.extend(nested);
    }
    let mut config = config;
    for k in ["severity", "where", "name"] {
        if let Some(v) = args.remove(k) {
            config.insert(k.to_string(), v);
        }
    }
    (args, config)
}

/// The expectation name and action of a test, as TOML key/values.
fn name_and_action(default: String, config: &serde_json::Map<String, Value>) -> Option<String> {
    if config.contains_key("where") {
        return None; // a filtered test: no expectation kind takes a filter
    }
    let name = config.get("name").and_then(Value::as_str).map_or(default, str::to_string);
    let action = match config.get("severity").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("warn") => "warn",
        _ => "fail",
    };
    Some(format!("name = {}, action = \"{action}\"", quote(&name)))
}

fn column_test(column: &str, test: &Value) -> Option<String> {
    let kind = test_name(test);
    let (args, config) = test_args(test);
    let head = name_and_action(format!("{kind}_{column}"), &config)?;
    let c = quote(column);
    let body = match kind.as_str() {
        "unique" => format!("unique = {c}"),
        "not_null" => format!("not_null = {c}"),
        "accepted_values" => {
            let values: Vec<String> = args.get("values")?.as_array()?.iter().map(toml_value).collect::<Option<_>>()?;
            format!("accepted_values = {{ column = {c}, values = [{}] }}", values.join(", "))
        }
        "relationships" => {
            let to = table_of(args.get("to")?.as_str()?)?;
            let field = args.get("field").and_then(Value::as_str).unwrap_or(column);
            format!("relationships = {{ column = {c}, to = {}, field = {} }}", quote(&to), quote(field))
        }
        _ => return None,
    };
    Some(format!("{{ {head}, {body} }}"))
}

fn table_test(test: &Value) -> Option<String> {
    let kind = test_name(test);
    let (args, config) = test_args(test);
    match kind.as_str() {
        "dbt_utils.unique_combination_of_columns" => {
            let cols: Vec<String> = args
                .get("combination_of_columns")?
                .as_array()?
                .iter()
                .map(|c| c.as_str().map(quote))
                .collect::<Option<_>>()?;
            let head = name_and_action("unique_combination".into(), &config)?;
            Some(format!("{{ {head}, unique = [{}] }}", cols.join(", ")))
        }
        _ => None,
    }
}

/// The table named by `ref('x')`, `source('s', 'x')` or a bare name.
fn table_of(expr: &str) -> Option<String> {
    let e = expr.trim();
    let inner = e.strip_prefix("ref(").or_else(|| e.strip_prefix("source(")).and_then(|r| r.strip_suffix(')'));
    let arg = match inner {
        Some(args) => args.rsplit(',').next()?.trim(),
        None => e,
    };
    let name = arg.trim_matches(|c| c == '\'' || c == '"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A singular test's query with `{{ ref('x') }}`/`{{ source('s', 'x') }}` replaced by `x` (`this`
/// for the first table it names), and that table; None when it holds other Jinja.
fn singular_test(text: &str) -> Option<(String, String)> {
    let mut query = String::new();
    let mut first = None;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}")? + start;
        let table = table_of(rest[start + 2..end].trim()).filter(|_| {
            let call = rest[start + 2..end].trim();
            call.starts_with("ref(") || call.starts_with("source(")
        })?;
        query.push_str(&rest[..start]);
        // The expectation belongs to the first table read: it reads the rows about to be
        // published as `this`, not the published ones.
        let first = first.get_or_insert_with(|| table.clone());
        query.push_str(if *first == table { "this" } else { &table });
        rest = &rest[end + 2..];
    }
    query.push_str(rest);
    if query.contains("{%") || query.contains("{#") {
        return None;
    }
    let query = query.trim().trim_end_matches(';').trim().to_string();
    Some((first?, query))
}

/// The model's SQL with the materialization of its YAML config written into its first line
/// (unless its own `config()` sets one).
fn with_config(sql: &str, config: &serde_json::Map<String, Value>) -> String {
    let Some(m) = config.get("materialized").and_then(Value::as_str) else { return sql.to_string() };
    if sql.contains("materialized") {
        return sql.to_string();
    }
    let mut args = vec![format!("materialized={}", jinja_literal(&Value::String(m.to_string())))];
    for k in ["unique_key", "incremental_strategy"] {
        if let Some(v) = config.get(k) {
            args.push(format!("{k}={}", jinja_literal(v)));
        }
    }
    format!("{{{{ config({}) }}}}{sql}", args.join(", "))
}

fn jinja_literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(jinja_literal).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// dbt's hierarchical config (`models: {project: {+materialized: view, staging: {...}}}`) for
/// the node `name` in subdirectory `sub`: the most specific level wins; `+` prefixes dropped.
fn scoped_config(tree: &Value, project: &str, sub: &Path, name: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let mut level = tree.get(project);
    let take = |level: &Value, out: &mut serde_json::Map<String, Value>| {
        if let Some(m) = level.as_object() {
            for (k, v) in m {
                if !v.is_object() || k.starts_with('+') || k == "column_types" {
                    out.insert(k.trim_start_matches('+').to_string(), v.clone());
                }
            }
        }
    };
    if let Some(l) = level {
        take(l, &mut out);
    }
    let parts: Vec<String> =
        sub.components().map(|c| c.as_os_str().to_string_lossy().to_string()).chain([name.to_string()]).collect();
    for part in parts {
        level = level.and_then(|l| l.get(&part));
        match level {
            Some(l) => take(l, &mut out),
            None => break,
        }
    }
    out
}

/// Files under `dir` (recursively) with one of `exts`, sorted.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| exts.contains(&x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    let value: Value = serde_norway::from_str(&text)
        .map_err(|e| Error::Import { file: path.to_path_buf(), message: e.to_string() })?;
    Ok(if value.is_null() { Value::Object(Default::default()) } else { value })
}

/// A JSON value as a TOML value (None: null, or an object holding one).
fn toml_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(a) => format!("[{}]", a.iter().map(toml_value).collect::<Option<Vec<_>>>()?.join(", ")),
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| toml_value(v).map(|t| format!("{} = {t}", key(k))))
                .collect::<Option<Vec<_>>>()?
                .join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_nest_by_directory_and_tests_become_expectations() {
        let tree: Value = serde_norway::from_str(
            "shop:\n  +materialized: view\n  marts:\n    +materialized: table\n    +tags: [finance]\n    orders:\n      +materialized: incremental\n      +unique_key: order_id\n",
        )
        .expect("yaml");
        let c = scoped_config(&tree, "shop", Path::new("marts"), "orders");
        assert_eq!(c["materialized"], "incremental");
        assert_eq!(c["tags"], serde_json::json!(["finance"]));
        assert_eq!(scoped_config(&tree, "shop", Path::new("staging"), "stg")["materialized"], "view");
        let sql = with_config("select 1\nfrom x", &c);
        assert_eq!(sql, "{{ config(materialized='incremental', unique_key='order_id') }}select 1\nfrom x");

        let t: Value =
            serde_norway::from_str("accepted_values:\n  values: ['a', 'b']\n  config:\n    severity: warn\n")
                .expect("yaml");
        assert_eq!(
            column_test("status", &t).as_deref(),
            Some(
                r#"{ name = "accepted_values_status", action = "warn", accepted_values = { column = "status", values = ["a", "b"] } }"#
            )
        );
        let t: Value =
            serde_norway::from_str("relationships:\n  arguments:\n    to: ref('customers')\n    field: id\n")
                .expect("yaml");
        assert_eq!(
            column_test("customer_id", &t).as_deref(),
            Some(
                r#"{ name = "relationships_customer_id", action = "fail", relationships = { column = "customer_id", to = "customers", field = "id" } }"#
            )
        );
        let t: Value = serde_norway::from_str("not_null:\n  where: \"x > 1\"\n").expect("yaml");
        assert_eq!(column_test("x", &t), None, "a filtered test is reported, not weakened");
        assert_eq!(
            singular_test(
                "-- totals\nselect * from {{ ref('orders') }} o join {{ source('raw', 'pay') }} p using (id)\nwhere total < 0;\n"
            ),
            Some(("orders".into(), "-- totals\nselect * from this o join pay p using (id)\nwhere total < 0".into()))
        );
        assert_eq!(singular_test("{% set x = 1 %}select * from {{ ref('a') }}"), None);
    }

    #[test]
    fn expectations_are_added_to_the_right_section() {
        let mut toml = "[project]\nname = \"x\"\n\n[gold.a]\ndescription = \"A\"\n\n[gold.b]\nexpectations = [\n  { name = \"u\", unique = \"id\" },\n]\n".to_string();
        assert!(add_expectation(&mut toml, "a", "{ name = \"t\", sql = \"select 1\" }"));
        assert!(add_expectation(&mut toml, "b", "{ name = \"t2\", sql = \"select 2\" }"));
        assert!(!add_expectation(&mut toml, "c", "{}"));
        let parsed: toml::Table = toml::from_str(&toml).expect("valid TOML");
        assert_eq!(parsed["gold"]["a"]["expectations"].as_array().map(Vec::len), Some(1));
        assert_eq!(parsed["gold"]["b"]["expectations"].as_array().map(Vec::len), Some(2));
    }
}
