//! Reading a project directory into raw specs, collecting every problem with its file and line.
//!
//! Layout (all optional except `medallion.toml`):
//!
//! ```text
//! medallion.toml        [project], [storage], [lineage], [sources.*], [silver.*], [gold.*]
//! silver/<name>.toml    one silver table (the body of a [silver.<name>] section)
//! gold/<name>.toml      one gold model's header (the body of a [gold.<name>] section)
//! gold/<name>.sql       the model's SQL (Jinja: {{ ref('orders') }})
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

use super::{Diagnostic, GoldSpec, LineageSpec, ProjectSpec, SilverSpec, SourceSpec};

/// A spec with where it was declared.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The spec.
    pub spec: T,
    /// File relative to the project root.
    pub file: PathBuf,
    /// 1-based line of its declaration.
    pub line: Option<usize>,
}

/// Everything read from a project directory, before semantic validation.
#[derive(Debug, Default)]
pub struct LoadedSpecs {
    /// `[project]`, if present and well-formed.
    pub project: Option<Located<ProjectSpec>>,
    /// `[lineage]`, if present and well-formed.
    pub lineage: Option<Located<LineageSpec>>,
    /// `[storage]`: object-store options, values as text (`${VAR}` not yet expanded).
    pub storage: Option<Located<BTreeMap<String, String>>>,
    /// Sources by name.
    pub sources: BTreeMap<String, Located<SourceSpec>>,
    /// Silver tables by name.
    pub silver: BTreeMap<String, Located<SilverSpec>>,
    /// Gold models by name.
    pub gold: BTreeMap<String, Located<GoldSpec>>,
    /// `gold/*.sql` files found on disk, by model name.
    pub gold_sql_files: BTreeMap<String, PathBuf>,
    /// Problems found so far.
    pub diagnostics: Vec<Diagnostic>,
    /// Declarations that exist but did not load (`source orders`, `silver table orders`,
    /// `gold model x`): already reported, so what refers to them reports nothing more.
    pub broken: std::collections::BTreeSet<String>,
}

impl LoadedSpecs {
    /// Whether `kind` `name` is declared but failed to load (its problem is already reported).
    pub fn is_broken(&self, kind: &str, name: &str) -> bool {
        self.broken.contains(&format!("{kind} {name}"))
    }
}

/// The main file's top level (unknown sections are reported one by one, see [`SECTIONS`]).
#[derive(Deserialize)]
struct MainFile {
    project: Option<Spanned<toml::Value>>,
    lineage: Option<Spanned<toml::Value>>,
    storage: Option<Spanned<toml::Value>>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    silver: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    gold: BTreeMap<String, Spanned<toml::Value>>,
}

/// The main file's sections.
const SECTIONS: [&str; 6] = ["project", "lineage", "storage", "sources", "silver", "gold"];

/// The name of a project's main file.
pub const PROJECT_FILE: &str = "medallion.toml";

/// Reads every spec file of the project at `root`. Never stops at the first problem.
pub fn load_specs(root: &Path) -> LoadedSpecs {
    let mut out = LoadedSpecs::default();
    let main = PathBuf::from(PROJECT_FILE);
    match std::fs::read_to_string(root.join(&main)) {
        Err(e) => {
            out.diagnostics.push(Diagnostic::new(&main, "", format!("cannot read the project file: {e}")).with_hint(
                format!("run `medallion init {}` to create a project, or pass --project DIR", root.display()),
            ))
        }
        Ok(text) => {
            if !load_main(&text, &main, &mut out) {
                // Its declarations are unknown, not missing: the SQL files are not "undeclared".
                out.broken.insert(format!("file {PROJECT_FILE}"));
            }
        }
    }
    for (name, file, text) in section_files(root, "silver", &mut out.diagnostics) {
        insert_file(
            &mut out.silver,
            (&mut out.diagnostics, &mut out.broken),
            &Site { kind: "silver table", file: &file, text: &text },
            name,
        );
    }
    for (name, file, text) in section_files(root, "gold", &mut out.diagnostics) {
        insert_file(
            &mut out.gold,
            (&mut out.diagnostics, &mut out.broken),
            &Site { kind: "gold model", file: &file, text: &text },
            name,
        );
    }
    if let Ok(entries) = std::fs::read_dir(root.join("gold")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "sql")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                out.gold_sql_files.insert(stem.to_string(), PathBuf::from("gold").join(entry.file_name()));
            }
        }
    }
    out
}

/// Loads the main file's sections into `out`; false when the file does not parse at all.
fn load_main(text: &str, file: &Path, out: &mut LoadedSpecs) -> bool {
    let doc: MainFile = match toml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            out.diagnostics.push(toml_error(file, text, "", &e));
            return false;
        }
    };
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        for key in table.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            let line = text
                .lines()
                .position(|l| {
                    let l = l.trim_start().trim_start_matches('[');
                    l.starts_with(key.as_str()) && l[key.len()..].trim_start().starts_with(['=', ']', '.'])
                })
                .map(|i| i + 1);
            let hint = match key.as_str() {
                "vars" => "vars go in [project]: `[project.vars]` or `vars = { … }` under [project]".to_string(),
                _ => format!("the sections are [{}]", SECTIONS.join("], [")),
            };
            out.diagnostics
                .push(Diagnostic::new(file, "", format!("unknown section `{key}`")).with_line(line).with_hint(hint));
        }
    }
    match doc.project {
        None => out.diagnostics.push(
            Diagnostic::new(file, "", "missing [project] section").with_hint("add `[project]` with `name = \"...\"`"),
        ),
        Some(value) => {
            let line = line_of(text, value.span().start);
            match typed::<ProjectSpec>(value.clone().into_inner()) {
                Ok(spec) => out.project = Some(Located { spec, file: file.to_path_buf(), line: Some(line) }),
                Err(e) => out.diagnostics.push(field_error(file, text, "[project]", &e, value.span())),
            }
        }
    }
    if let Some(value) = doc.lineage {
        let line = line_of(text, value.span().start);
        match typed::<LineageSpec>(value.clone().into_inner()) {
            Ok(spec) => out.lineage = Some(Located { spec, file: file.to_path_buf(), line: Some(line) }),
            Err(e) => out.diagnostics.push(field_error(file, text, "[lineage]", &e, value.span())),
        }
    }
    if let Some(value) = doc.storage {
        let line = line_of(text, value.span().start);
        let mut options = BTreeMap::new();
        match value.into_inner() {
            toml::Value::Table(table) => {
                for (key, v) in table {
                    let text = match v {
                        toml::Value::String(s) => s,
                        toml::Value::Boolean(b) => b.to_string(),
                        toml::Value::Integer(i) => i.to_string(),
                        other => {
                            let message =
                                format!("`{key}` must be a string, a boolean or an integer, not {}", other.type_str());
                            out.diagnostics.push(Diagnostic::new(file, "[storage]", message).with_line(Some(line)));
                            continue;
                        }
                    };
                    options.insert(key, text);
                }
            }
            _ => out
                .diagnostics
                .push(Diagnostic::new(file, "[storage]", "must be a table of options").with_line(Some(line))),
        }
        out.storage = Some(Located { spec: options, file: file.to_path_buf(), line: Some(line) });
    }
    for (name, value) in doc.sources {
        let span = value.span();
        insert_value(
            &mut out.sources,
            (&mut out.diagnostics, &mut out.broken),
            &Site { kind: "source", file, text },
            name,
            value.into_inner(),
            span,
        );
    }
    for (name, value) in doc.silver {
        let span = value.span();
        insert_value(
            &mut out.silver,
            (&mut out.diagnostics, &mut out.broken),
            &Site { kind: "silver table", file, text },
            name,
            value.into_inner(),
            span,
        );
    }
    for (name, value) in doc.gold {
        let span = value.span();
        insert_value(
            &mut out.gold,
            (&mut out.diagnostics, &mut out.broken),
            &Site { kind: "gold model", file, text },
            name,
            value.into_inner(),
            span,
        );
    }
    true
}

/// `<root>/<dir>/*.toml`, sorted, as (stem, relative path, text).
fn section_files(root: &Path, dir: &str, diags: &mut Vec<Diagnostic>) -> Vec<(String, PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else { return Vec::new() };
    let mut files: Vec<_> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        let rel = PathBuf::from(dir).join(path.file_name().unwrap_or_default());
        match std::fs::read_to_string(&path) {
            Ok(text) => out.push((stem, rel, text)),
            Err(e) => diags.push(Diagnostic::new(rel, "", format!("cannot read: {e}"))),
        }
    }
    out
}

/// Where specs are being read from: their kind (for messages), file and its text.
struct Site<'a> {
    kind: &'a str,
    file: &'a Path,
    text: &'a str,
}

/// Parses a whole file as one spec named `name` and inserts it.
/// Where problems go: the diagnostics, and the declarations that did not load.
type Problems<'a> = (&'a mut Vec<Diagnostic>, &'a mut std::collections::BTreeSet<String>);

fn insert_file<T: DeserializeOwned>(
    map: &mut BTreeMap<String, Located<T>>,
    (diags, broken): Problems<'_>,
    site: &Site<'_>,
    name: String,
) {
    match toml::from_str::<toml::Value>(site.text) {
        Ok(value) => insert_value(map, (diags, broken), site, name, value, 0..site.text.len()),
        Err(e) => {
            broken.insert(format!("{} {name}", site.kind));
            diags.push(toml_error(site.file, site.text, &format!("{} `{name}`", site.kind), &e))
        }
    }
}

/// Inserts the spec `name` declared by `value` at `span` of the site's text.
fn insert_value<T: DeserializeOwned>(
    map: &mut BTreeMap<String, Located<T>>,
    (diags, broken): Problems<'_>,
    site: &Site<'_>,
    name: String,
    value: toml::Value,
    span: std::ops::Range<usize>,
) {
    let Site { kind, file, text } = *site;
    let subject = format!("{kind} `{name}`");
    let line = Some(line_of(text, span.start));
    if let Some(prev) = map.get(&name) {
        diags.push(
            Diagnostic::new(file, &subject, format!("declared twice (also in {})", prev.file.display()))
                .with_line(line),
        );
        return;
    }
    // Every unknown and missing key in one pass: each one found is reported, then set aside
    // (removed, or stood in for) so that the next one shows.
    let mut value = value;
    let mut found = Vec::new();
    for _ in 0..MAX_KEY_PROBLEMS {
        let e = match typed::<T>(value.clone()) {
            Ok(spec) if found.is_empty() => {
                map.insert(name, Located { spec, file: file.to_path_buf(), line });
                return;
            }
            Ok(_) => break,
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        let field = quoted_field(&message).unwrap_or_default();
        if found.iter().any(|d: &Diagnostic| d.message == message && message.starts_with("unknown field")) {
            break; // set aside already, yet back: stop rather than repeat it
        }
        let fixed = if message.starts_with("unknown field") {
            found.push(field_error(file, text, &subject, &e, span.clone()));
            remove_key(&mut value, &field)
        } else if message.starts_with("missing field") {
            // A key missing because it is misspelt is one problem, the misspelling, reported already.
            let misspelt = found.iter().any(|d| {
                d.message.starts_with("unknown field") && quoted_field(&d.message).is_some_and(|u| near(&u, &field))
            });
            match stand_in::<T>(&mut value, &field) {
                Some(_) if misspelt => true,
                Some(owner) => {
                    // The table that lacks it: its `name = "…"` line, else the section's.
                    let at = owner.and_then(|(n, is_name)| {
                        if is_name { find_value(text, span.start, &n) } else { find_key(text, span.start, &n) }
                    });
                    found.push(field_error(file, text, &subject, &e, span.clone()).with_line(at.or(line)));
                    true
                }
                None => false,
            }
        } else {
            false
        };
        if !fixed {
            if found.is_empty() || !found.iter().any(|d| d.message == message) {
                found.push(field_error(file, text, &subject, &e, span.clone()));
            }
            break;
        }
    }
    broken.insert(format!("{kind} {name}"));
    diags.extend(found);
}

/// Whether `a` is `b` misspelt: at most two edits apart (Levenshtein).
fn near(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

/// Key problems reported per declaration at most.
const MAX_KEY_PROBLEMS: usize = 32;

/// Removes the first `key` found in `value` (its own table first, then nested ones).
fn remove_key(value: &mut toml::Value, key: &str) -> bool {
    match value {
        toml::Value::Table(t) => {
            if t.remove(key).is_some() {
                return true;
            }
            t.iter_mut().any(|(_, v)| remove_key(v, key))
        }
        toml::Value::Array(a) => a.iter_mut().any(|v| remove_key(v, key)),
        _ => false,
    }
}

/// Stands a value in for the missing `key`: in the declaration's own table, else in the first
/// nested table lacking it, with whichever type makes `T` stop missing it. When that worked:
/// Some(where the table is: (its `name`, true), or (the declaration's key holding it, false)).
fn stand_in<T: DeserializeOwned>(value: &mut toml::Value, key: &str) -> Option<Option<(String, bool)>> {
    let placeholders = || {
        [
            toml::Value::Array(Vec::new()),
            toml::Value::String(String::new()),
            toml::Value::Table(Default::default()),
            toml::Value::Integer(0),
            toml::Value::Boolean(false),
        ]
    };
    // A stand-in of the right type leaves no error, or one about something else.
    let fits = |v: &toml::Value| match typed::<T>(v.clone()) {
        Ok(_) => true,
        Err(e) => {
            let m = e.message().trim();
            m != format!("missing field `{key}`")
                && !m.starts_with(&format!("unknown field `{key}`"))
                && !["invalid type", "invalid value", "unknown variant", "invalid length"]
                    .iter()
                    .any(|p| m.starts_with(p))
        }
    };
    // Candidate tables: the declaration itself, then every nested table, depth first.
    let mut paths: Vec<Vec<usize>> = vec![Vec::new()];
    collect_tables(value, &mut Vec::new(), &mut paths);
    for path in paths {
        let Some(table) = table_at(value, &path) else { continue };
        if table.contains_key(key) {
            continue;
        }
        // Where it is: a `name = "…"` inside it, else the declaration's key holding it.
        let owner = table.get("name").and_then(toml::Value::as_str).map(|n| (n.to_string(), true)).or_else(|| {
            let first = *path.first()?;
            value.as_table().and_then(|t| t.keys().nth(first)).map(|k| (k.clone(), false))
        });
        for p in placeholders() {
            if let Some(t) = table_at(value, &path) {
                t.insert(key.to_string(), p);
            }
            if fits(value) {
                return Some(owner);
            }
            if let Some(t) = table_at(value, &path) {
                t.remove(key);
            }
        }
    }
    None
}

/// Paths (indices into tables' values in order, then array items) of every nested table.
fn collect_tables(value: &toml::Value, at: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    let children: Vec<&toml::Value> = match value {
        toml::Value::Table(t) => t.values().collect(),
        toml::Value::Array(a) => a.iter().collect(),
        _ => return,
    };
    for (i, child) in children.into_iter().enumerate() {
        at.push(i);
        if child.is_table() {
            out.push(at.clone());
        }
        collect_tables(child, at, out);
        at.pop();
    }
}

fn table_at<'a>(value: &'a mut toml::Value, path: &[usize]) -> Option<&'a mut toml::Table> {
    let mut v = value;
    for &i in path {
        v = match v {
            toml::Value::Table(t) => t.iter_mut().nth(i).map(|(_, v)| v)?,
            toml::Value::Array(a) => a.get_mut(i)?,
            _ => return None,
        };
    }
    v.as_table_mut()
}

/// The line of the first `name = "value"` at or after byte `from`.
fn find_value(text: &str, from: usize, value: &str) -> Option<usize> {
    let quoted = serde_json::to_string(value).ok()?;
    let from_line = line_of(text, from);
    text.lines()
        .enumerate()
        .skip(from_line.saturating_sub(1))
        .find(|(_, l)| l.contains("name") && l.contains(&quoted))
        .map(|(i, _)| i + 1)
}

fn typed<T: DeserializeOwned>(value: toml::Value) -> Result<T, toml::de::Error> {
    T::deserialize(value)
}

/// A syntax or top-level error from the TOML parser, which knows its own span.
fn toml_error(file: &Path, text: &str, subject: &str, e: &toml::de::Error) -> Diagnostic {
    let line = e.span().map(|s| line_of(text, s.start));
    let message = e.message().trim().to_string();
    let d = Diagnostic::new(file, subject, message.clone()).with_line(line);
    match quoted_field(&message) {
        Some(field) if message.starts_with("unknown field") => d.with_hint(format!("remove or rename `{field}`")),
        _ => d,
    }
}

/// Keys other tools (dbt, Pydantic, pandas, Great Expectations) use for what medallion names
/// otherwise: (their key, medallion's key, the hint), the hint given where medallion's key is known.
const BORROWED_KEYS: [(&str, &str, &str); 9] = [
    ("nullable", "required", "columns are required unless they say `required = false`"),
    ("not_null", "required", "write `required = true` (the default) or `required = false`"),
    ("dtype", "type", "a column's type is `type = \"...\"`"),
    ("data_type", "type", "a column's type is `type = \"...\"`"),
    ("tests", "checks", "a column's rules are `checks = [\"<SQL condition>\", ...]`"),
    ("constraints", "checks", "a column's rules are `checks = [\"<SQL condition>\", ...]`"),
    ("tests", "expectations", "a table's rules are `expectations = [{ name = ..., ... }]`"),
    ("unique_key", "primary_key", "the key is `primary_key = [\"col\", ...]`"),
    ("key", "primary_key", "the key is `primary_key = [\"col\", ...]`"),
];

/// An error from deserialising one section: locate the offending key inside the section when the
/// message names one, otherwise point at the section.
fn field_error(
    file: &Path,
    text: &str,
    subject: &str,
    e: &toml::de::Error,
    span: std::ops::Range<usize>,
) -> Diagnostic {
    let message = e.message().trim().to_string();
    let section_line = line_of(text, span.start);
    let key_line = quoted_field(&message).and_then(|field| find_key(text, span.start, &field));
    let d = Diagnostic::new(file, subject, message.clone()).with_line(Some(key_line.unwrap_or(section_line)));
    if message.starts_with("unknown field") {
        let field = quoted_field(&message).unwrap_or_default();
        let expected = message.split_once("expected").map(|(_, list)| list).unwrap_or_default();
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let borrowed = BORROWED_KEYS.iter().find(|(from, key, _)| *from == field && known.contains(key));
        match (borrowed, known.iter().find(|k| near(k, &field))) {
            (Some((_, _, hint)), _) => d.with_hint((*hint).to_string()),
            (None, Some(k)) => d.with_hint(format!("did you mean `{k}`?")),
            (None, None) => d.with_hint(format!("`{field}` is not a known key here; check its spelling")),
        }
    } else if message.starts_with("missing field") {
        let field = quoted_field(&message).unwrap_or_default();
        d.with_hint(format!("add `{field} = ...`"))
    } else {
        d
    }
}

/// The first `name` between backticks in a serde message.
fn quoted_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The line of the first `key =` (or `key=`, or `{ key =`) at or after byte `from`.
fn find_key(text: &str, from: usize, key: &str) -> Option<usize> {
    let from_line = line_of(text, from);
    text.lines().enumerate().skip(from_line.saturating_sub(1)).find_map(|(i, line)| {
        let mut rest = line;
        while let Some(pos) = rest.find(key) {
            let before = rest[..pos].trim_end();
            let after = rest[pos + key.len()..].trim_start();
            let boundary = before.is_empty() || before.ends_with('{') || before.ends_with(',');
            if boundary && after.starts_with('=') {
                return Some(i + 1);
            }
            rest = &rest[pos + key.len()..];
        }
        None
    })
}

/// 1-based line of byte offset `pos`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn unknown_keys_are_located_and_all_reported() {
        let dir = project(&[
            (
                "medallion.toml",
                "[project]\nname = \"p\"\n\n[sources.orders]\nformat = \"ndjson\"\npathz = []\n\n[silver.orders]\nprimary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\", chekcs = [] },\n]\n",
            ),
            ("gold/rev.toml", "owner = \"a\"\nrefresh = \"daily\"\nslaa = \"1d\"\n"),
        ]);
        let specs = load_specs(dir.path());
        let rendered: Vec<String> = specs.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(specs.diagnostics.len(), 3, "{rendered:#?}");
        assert!(rendered[0].starts_with("medallion.toml:6: source `orders`: unknown field `pathz`"), "{}", rendered[0]);
        assert!(
            rendered[1].starts_with("medallion.toml:11: silver table `orders`: unknown field `chekcs`"),
            "{}",
            rendered[1]
        );
        assert!(rendered[2].starts_with("gold/rev.toml:3: gold model `rev`: unknown field `slaa`"), "{}", rendered[2]);
    }

    /// A key another tool uses for what medallion names otherwise gets medallion's key as its
    /// hint, where that key is known; a misspelling still gets its nearest key.
    #[test]
    fn keys_borrowed_from_other_tools_are_answered_with_medallions() {
        let dir = project(&[(
            "medallion.toml",
            "[project]\nname = \"p\"\n\n[sources.a]\n\n[silver.a]\nsource = \"a\"\nunique_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"tag\", type = \"string\", nullable = true },\n  { name = \"n\", dtype = \"int64\" },\n  { name = \"m\", type = \"int64\", tests = [\"m > 0\"] },\n  { name = \"k\", typ = \"int64\" },\n]\n",
        )]);
        let specs = load_specs(dir.path());
        let hints: Vec<(String, Option<String>)> =
            specs.diagnostics.iter().map(|d| (d.message.clone(), d.hint.clone())).collect();
        for (field, hint) in [
            ("unique_key", "the key is `primary_key"),
            ("nullable", "`required = false`"),
            ("dtype", "`type = \"...\"`"),
            ("tests", "`checks = ["),
            ("typ", "did you mean `type`?"),
        ] {
            let found = hints.iter().find(|(m, _)| m.starts_with(&format!("unknown field `{field}`")));
            assert!(found.is_some_and(|(_, h)| h.as_deref().is_some_and(|h| h.contains(hint))), "{field}: {hints:#?}");
        }
    }

    /// Issue 17: every missing and unknown key of every declaration in one pass, each at its line:
    /// a missing key at its own section (not at the same key in the next), a nested one at its
    /// entry.
    #[test]
    fn missing_and_unknown_keys_are_all_reported_at_their_lines() {
        let dir = project(&[(
            "medallion.toml",
            "[project]\nname = \"p\"\n\n[sources.a]\n\n[silver.a]\ndescription = \"no key, no columns\"\nownr = \"x\"\n\n[silver.b]\nprimary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"amount\" },\n  { name = \"day\", typ = \"date\" },\n]\n\n[silver.c]\nprimary_key = [\"id\"]\ncolumns = [{ name = \"id\", type = \"int64\" }]\nhistory = { }\n",
        )]);
        let specs = load_specs(dir.path());
        let rendered: Vec<String> = specs.diagnostics.iter().map(|d| d.to_string()).collect();
        let want = [
            "medallion.toml:8: silver table `a`: unknown field `ownr`",
            "medallion.toml:6: silver table `a`: missing field `primary_key`",
            "medallion.toml:6: silver table `a`: missing field `columns`",
            "medallion.toml:15: silver table `b`: unknown field `typ`",
            "medallion.toml:14: silver table `b`: missing field `type`",
            "medallion.toml:21: silver table `c`: missing field `scd`",
        ];
        assert_eq!(rendered.len(), want.len(), "{rendered:#?}");
        for w in want {
            assert!(rendered.iter().any(|r| r.starts_with(w)), "missing `{w}` in {rendered:#?}");
        }
        assert!(specs.is_broken("silver table", "a") && specs.is_broken("silver table", "b"));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let dir = project(&[("medallion.toml", "[project]\nname = \"p\"\nlake = \n")]);
        let specs = load_specs(dir.path());
        assert_eq!(specs.diagnostics.len(), 1);
        assert_eq!(specs.diagnostics[0].line, Some(3), "{}", specs.diagnostics[0]);
    }

    #[test]
    fn missing_project_file_suggests_init() {
        let dir = project(&[]);
        let specs = load_specs(dir.path());
        assert_eq!(specs.diagnostics.len(), 1);
        assert!(specs.diagnostics[0].to_string().contains("medallion init"));
    }
}
