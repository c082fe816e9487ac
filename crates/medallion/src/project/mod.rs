//! The validated project: raw specs ([`crate::spec`]) checked as a whole, contracts compiled,
//! gold models rendered, ordered and planned. [`Project::load`] reports every problem at once.

pub mod lineage;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;

use crate::bronze::ingest::{CsvOptions, Encoding, ReadOptions};
use crate::catalog;
use crate::error::{Error, Result};
use crate::gold::models::{Jinja, render};
use crate::quality::checks::{self, Owner, THIS, TableCheck};
use crate::runtime::dag::topological_order;
use crate::silver::contract::Contract;
use crate::silver::evolve::ContractRecord;
use crate::silver::history::History;
use crate::spec::{Diagnostic, Duration, Located, Refresh, SourceFormat, load_specs};
use crate::storage::Layer;

pub use crate::gold::models::GoldModel;
pub use crate::silver::table::SilverTable;
pub use crate::storage::Maintenance;

/// Default lake location, relative to the project.
pub const DEFAULT_LAKE: &str = "./lake";

/// A bronze source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name.
    pub name: String,
    /// Raw format.
    pub format: SourceFormat,
    /// Paths/globs (relative to the project) ingested by `run`.
    pub paths: Vec<String>,
    /// When `medallion schedule` runs it.
    pub schedule: Option<String>,
    /// How its files are read (format, encoding, CSV dialect).
    pub read: ReadOptions,
    /// Whether symlinks among its paths are read (they may then lead outside the project).
    pub follow_symlinks: bool,
    /// A JSON API fetched instead of files.
    pub http: Option<crate::bronze::http::HttpSource>,
}

/// A loaded, valid project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Project directory.
    pub root: PathBuf,
    /// Name.
    pub name: String,
    /// Lake location as configured (or overridden).
    pub lake: String,
    /// Sources.
    pub sources: BTreeMap<String, Source>,
    /// Silver tables.
    pub silver: BTreeMap<String, SilverTable>,
    /// Silver tables in dependency order (expectations reading other silver tables).
    pub silver_order: Vec<String>,
    /// Gold models.
    pub gold: BTreeMap<String, GoldModel>,
    /// Gold models in dependency order.
    pub gold_order: Vec<String>,
    /// `medallion schedule` catches up every missed fire (else once).
    pub catchup: bool,
    /// After a run, append-only tables with more files than this are compacted (0: never).
    pub compact_above_files: usize,
    /// After a run, vacuum (every, retain) when the last vacuum is older than `every`.
    pub vacuum: Option<(Duration, Duration)>,
    /// Object-store options for the lake (`[storage]`; `${VAR}` expanded when the lake is opened).
    pub storage: BTreeMap<String, String>,
    /// Where OpenLineage events go (`[lineage]`).
    pub lineage: Option<lineage::LineageConfig>,
    /// What was accepted but has no effect here (dbt's `config(schema=…)`), for `validate` to say.
    pub notes: Vec<Diagnostic>,
}

impl Project {
    /// The silver tables (`silver/<name>`) whose contract reads raw field `field` of `source`:
    /// a drifted field some contract reads is taken care of; one none reads is still in bronze only.
    pub fn readers_of(&self, source: &str, field: &str) -> Vec<String> {
        self.silver
            .values()
            .filter(|t| t.source == source && t.contract.columns.iter().any(|c| c.field == field))
            .map(|t| format!("silver/{}", t.name))
            .collect()
    }

    /// The project's DAG: node → the nodes it reads.
    pub fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut up: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.sources.keys() {
            up.entry(format!("bronze/{s}")).or_default();
        }
        for t in self.silver.values() {
            let reads = up.entry(format!("silver/{}", t.name)).or_default();
            reads.insert(format!("bronze/{}", t.source));
            reads.extend(t.depends_on.iter().map(|d| format!("silver/{d}")));
        }
        for m in self.gold.values() {
            let reads: BTreeSet<String> = m
                .refs
                .iter()
                .map(|r| if self.gold.contains_key(r) { format!("gold/{r}") } else { format!("silver/{r}") })
                .collect();
            up.insert(format!("gold/{}", m.name), reads);
        }
        up
    }

    /// Loads and validates the project at `root`.
    pub async fn load(root: &Path) -> Result<Project> {
        Self::load_with_vars(root, BTreeMap::new()).await
    }

    /// Loads and validates the project at `root`, with `vars` over the project's `[vars]` (dbt's
    /// `--vars`).
    pub async fn load_with_vars(root: &Path, overrides: BTreeMap<String, serde_json::Value>) -> Result<Project> {
        let mut specs = load_specs(root);
        let mut diags = std::mem::take(&mut specs.diagnostics);
        let text_of = |file: &Path| std::fs::read_to_string(root.join(file)).unwrap_or_default();
        let line_of = |file: &Path, needle: &str, from: Option<usize>| -> Option<usize> {
            let text = text_of(file);
            let skip = from.unwrap_or(1).saturating_sub(1);
            text.lines().enumerate().skip(skip).find(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1).or(from)
        };

        let catchup = specs.project.as_ref().is_some_and(|p| p.spec.catchup);
        let default_on_change = specs.project.as_ref().and_then(|p| p.spec.on_contract_change).unwrap_or_default();
        let compact_above_files = specs.project.as_ref().and_then(|p| p.spec.compact_above_files).unwrap_or(64);
        let mut vacuum = None;
        if let Some(p) = &specs.project {
            match vacuum_policy(p.spec.vacuum_every.as_deref(), p.spec.vacuum_retain.as_deref(), None) {
                Ok(v) => vacuum = v,
                Err(e) => {
                    diags.push(Diagnostic::new(&p.file, "[project]", e).with_line(line_of(&p.file, "vacuum_", p.line)))
                }
            }
        }
        let maintenance_of = |spec: Option<&crate::spec::MaintenanceSpec>,
                              schema: &SchemaRef,
                              file: &Path,
                              subject: &str,
                              line: Option<usize>,
                              diags: &mut Vec<Diagnostic>| {
            let mut m = Maintenance {
                compact_above_files,
                zorder: Vec::new(),
                target_size: None,
                vacuum,
                purge_deleted_above: Some(crate::storage::PURGE_DELETED_ABOVE),
            };
            let Some(spec) = spec else { return m };
            let line = line_of(file, "maintenance", line);
            m.compact_above_files = spec.compact_above_files.unwrap_or(compact_above_files);
            for c in &spec.zorder {
                if schema.field_with_name(c).is_err() {
                    diags.push(
                        Diagnostic::new(
                            file,
                            subject,
                            format!("maintenance: zorder column `{c}` is not a column of the table"),
                        )
                        .with_line(line),
                    );
                }
            }
            m.zorder = spec.zorder.clone();
            m.target_size = spec.target_size;
            if spec.target_size == Some(0) {
                diags.push(
                    Diagnostic::new(file, subject, "maintenance: target_size must be more than 0 bytes")
                        .with_line(line),
                );
            }
            match spec.purge_deleted_above {
                Some(share) if !(0.0..=1.0).contains(&share) => diags.push(
                    Diagnostic::new(
                        file,
                        subject,
                        format!("maintenance: purge_deleted_above is a share of rows from 0 to 1, not {share}"),
                    )
                    .with_line(line),
                ),
                Some(share) => m.purge_deleted_above = (share < 1.0).then_some(share),
                None => {}
            }
            match vacuum_policy(spec.vacuum_every.as_deref(), spec.vacuum_retain.as_deref(), vacuum) {
                Ok(v) => m.vacuum = v,
                Err(e) => diags.push(Diagnostic::new(file, subject, format!("maintenance: {e}")).with_line(line)),
            }
            m
        };
        let storage = specs.storage.as_ref().map(|s| s.spec.clone()).unwrap_or_default();
        if let Some(s) = &specs.storage {
            for (key, value) in &s.spec {
                if let Err(e) = crate::spec::env::check(value) {
                    diags.push(
                        Diagnostic::new(&s.file, "[storage]", format!("{key}: {e}"))
                            .with_line(line_of(&s.file, key, s.line)),
                    );
                }
            }
        }
        let lineage = match &specs.lineage {
            Some(l) => match lineage::LineageConfig::from_spec(l, root) {
                Ok(c) => Some(c),
                Err(d) => {
                    diags.extend(d);
                    None
                }
            },
            None => None,
        };
        let project_owner = specs.project.as_ref().and_then(|p| p.spec.owner.clone());
        let mut vars: BTreeMap<String, minijinja::Value> = specs
            .project
            .as_ref()
            .map(|p| p.spec.vars.iter().map(|(k, v)| (k.clone(), minijinja::Value::from_serialize(v))).collect())
            .unwrap_or_default();
        vars.extend(overrides.iter().map(|(k, v)| (k.clone(), minijinja::Value::from_serialize(v))));
        let jinja = match macro_files(root) {
            Ok(files) => {
                let (jinja, errors) = Jinja::new(vars, files);
                for e in errors {
                    let file = e.file.clone().unwrap_or_else(|| PathBuf::from("macros"));
                    diags.push(Diagnostic::new(file, "macros", e.message).with_line(e.line));
                }
                jinja
            }
            Err(d) => {
                diags.push(d);
                Jinja::default()
            }
        };
        let mut notes = Vec::new();
        let (name, lake) = match &specs.project {
            Some(p) => {
                if p.spec.name.trim().is_empty() {
                    diags.push(Diagnostic::new(&p.file, "[project]", "name must not be empty").with_line(p.line));
                }
                (p.spec.name.clone(), p.spec.lake.clone().unwrap_or_else(|| DEFAULT_LAKE.to_string()))
            }
            None => (String::new(), DEFAULT_LAKE.to_string()),
        };

        let mut sources = BTreeMap::new();
        for (n, s) in &specs.sources {
            check_ident(&mut diags, s, "source", n);
            for p in &s.spec.paths {
                let message = if let Err(e) = glob::Pattern::new(p) {
                    Some(format!("invalid path pattern `{p}`: {e}"))
                } else if crate::bronze::landing::leaves_project(p) {
                    Some(format!(
                        "path `{p}` leaves the project directory: paths are relative to it and stay inside it \
                         (to land from elsewhere, link the directory into the project and set `follow_symlinks = true`)"
                    ))
                } else {
                    None
                };
                if let Some(message) = message {
                    diags.push(
                        Diagnostic::new(&s.file, format!("source `{n}`"), message)
                            .with_line(line_of(&s.file, p, s.line)),
                    );
                }
            }
            if let Some(expr) = &s.spec.schedule
                && let Err(e) = crate::runtime::schedule::Item::new(n, expr, BTreeSet::new())
            {
                diags.push(
                    Diagnostic::new(&s.file, format!("source `{n}`"), e)
                        .with_line(line_of(&s.file, "schedule", s.line)),
                );
            }
            let read = read_options(&s.spec).unwrap_or_else(|errors| {
                for (key, message) in errors {
                    diags.push(
                        Diagnostic::new(&s.file, format!("source `{n}`"), message)
                            .with_line(line_of(&s.file, key, s.line)),
                    );
                }
                ReadOptions::default()
            });
            let http = s.spec.http.as_ref().and_then(|h| {
                let mut problems = Vec::new();
                if !s.spec.paths.is_empty() {
                    problems
                        .push(("paths", "an HTTP source is fetched, not read from `paths`: remove one".to_string()));
                }
                if s.spec.format != SourceFormat::Ndjson || s.spec.encoding.is_some() {
                    let key = if s.spec.encoding.is_some() { "encoding" } else { "format" };
                    problems.push((key, format!("`{key}` is for files; an HTTP source reads JSON responses")));
                }
                let checked = crate::bronze::http::HttpSource::from_spec(h).map_err(|e| problems.extend(e)).ok();
                for (key, message) in problems {
                    diags.push(
                        Diagnostic::new(&s.file, format!("source `{n}`"), message)
                            .with_line(line_of(&s.file, key, s.line)),
                    );
                }
                checked
            });
            sources.insert(
                n.clone(),
                Source {
                    name: n.clone(),
                    format: s.spec.format,
                    paths: s.spec.paths.clone(),
                    schedule: s.spec.schedule.clone(),
                    read,
                    follow_symlinks: s.spec.follow_symlinks,
                    http,
                },
            );
        }

        let mut silver = BTreeMap::new();
        for (n, t) in &specs.silver {
            check_ident(&mut diags, t, "silver table", n);
            let subject = format!("silver table `{n}`");
            let spec = &t.spec;
            let source = spec.source.clone().unwrap_or_else(|| n.clone());
            if !specs.sources.contains_key(&source) && !specs.is_broken("source", &source) {
                let known: Vec<_> = specs.sources.keys().cloned().collect();
                diags.push(
                    Diagnostic::new(&t.file, &subject, format!("source `{source}` is not declared"))
                        .with_line(t.line)
                        .with_hint(if known.is_empty() {
                            format!("add a [sources.{source}] section")
                        } else {
                            format!("declared sources: {}", known.join(", "))
                        }),
                );
            }
            if spec.columns.is_empty() {
                diags.push(Diagnostic::new(&t.file, &subject, "the contract has no columns").with_line(t.line));
            }
            // Each column's line: its name's first mention after `columns` (the primary key names
            // it before), a repeated name's after the first column's.
            let columns = line_of(&t.file, "columns", t.line);
            let mut seen: BTreeMap<&str, Option<usize>> = BTreeMap::new();
            for c in &spec.columns {
                let first = seen.get(c.name.as_str()).copied();
                let from = first.map_or(columns, |l| l.map(|l| l + 1));
                let line = line_of(&t.file, &format!("\"{}\"", c.name), from);
                seen.entry(c.name.as_str()).or_insert(line);
                if first.is_some() {
                    diags.push(
                        Diagnostic::new(&t.file, &subject, format!("column `{}` is declared twice", c.name))
                            .with_line(line),
                    );
                }
                if c.name.starts_with('_') || !is_ident(&c.name) {
                    diags.push(
                        Diagnostic::new(&t.file, &subject, format!("invalid column name `{}`", c.name))
                            .with_line(line)
                            .with_hint("use lower-case letters, digits and `_`, not starting with `_` (reserved for provenance)"),
                    );
                }
            }
            let has = |c: &str| spec.columns.iter().any(|x| x.name == c);
            if spec.primary_key.is_empty() {
                diags.push(
                    Diagnostic::new(&t.file, &subject, "primary_key must name at least one column").with_line(t.line),
                );
            }
            for k in &spec.primary_key {
                if !has(k) {
                    diags.push(
                        Diagnostic::new(&t.file, &subject, format!("primary_key column `{k}` is not in the contract"))
                            .with_line(line_of(&t.file, "primary_key", t.line)),
                    );
                }
            }
            let order_by = spec.order_by.clone().unwrap_or_else(|| crate::bronze::INGESTED_AT.to_string());
            if order_by != crate::bronze::INGESTED_AT && !has(&order_by) {
                diags.push(
                    Diagnostic::new(&t.file, &subject, format!("order_by column `{order_by}` is not in the contract"))
                        .with_line(line_of(&t.file, "order_by", t.line))
                        .with_hint("use a contract column or `_ingested_at`"),
                );
            }
            for p in &spec.partition_by {
                if !has(p) {
                    diags.push(
                        Diagnostic::new(&t.file, &subject, format!("partition_by column `{p}` is not in the contract"))
                            .with_line(line_of(&t.file, "partition_by", t.line)),
                    );
                }
            }
            let sla = match spec.sla.as_deref().map(str::parse::<Duration>) {
                Some(Err(e)) => {
                    diags.push(Diagnostic::new(&t.file, &subject, e).with_line(line_of(&t.file, "sla", t.line)));
                    None
                }
                Some(Ok(d)) => Some(d),
                None => None,
            };
            let max_rejected_fraction = match spec.max_rejected_fraction.as_ref().map(|f| f.spec()) {
                Some(Err(e)) => {
                    diags.push(Diagnostic::new(&t.file, &subject, e).with_line(line_of(
                        &t.file,
                        "max_rejected_fraction",
                        t.line,
                    )));
                    None
                }
                Some(Ok(f)) => Some(f),
                None => None,
            };
            let source_nulls = specs.sources.get(&source).map(|s| s.spec.null_values.clone()).unwrap_or_default();
            match Contract::compile(spec, &source_nulls) {
                Ok(contract) => {
                    let (compiled, key) = match &spec.dedup {
                        Some(d) => {
                            (History::events(d, &contract, spec.history.as_ref(), spec.order_by.as_deref()), "dedup")
                        }
                        None => (
                            History::compile(spec.history.as_ref(), &contract, &spec.primary_key, &order_by),
                            "history",
                        ),
                    };
                    let history = match compiled {
                        Ok(h) => h,
                        Err(e) => {
                            diags.push(
                                Diagnostic::new(&t.file, &subject, format!("{key}: {e}"))
                                    .with_line(line_of(&t.file, key, t.line)),
                            );
                            History::Latest { delete: None }
                        }
                    };
                    let schema = history.output_schema(&contract, &order_by);
                    let record = ContractRecord::of(spec, &source_nulls, &order_by);
                    silver.insert(
                        n.clone(),
                        SilverTable {
                            name: n.clone(),
                            csv: sources.get(&source).map(|s: &Source| s.read.csv_source()).unwrap_or_default(),
                            source,
                            contract: Arc::new(contract),
                            keys: spec.primary_key.clone(),
                            order_by,
                            partition_by: spec.partition_by.clone(),
                            owner: spec.owner.clone().or_else(|| project_owner.clone()),
                            description: spec.description.clone(),
                            sla,
                            checks: Vec::new(),
                            depends_on: Vec::new(),
                            max_rejected_fraction,
                            tags: spec.tags.clone(),
                            retries: spec.retries,
                            change_feed: false,
                            history,
                            maintenance: maintenance_of(
                                spec.maintenance.as_ref(),
                                &schema,
                                &t.file,
                                &subject,
                                t.line,
                                &mut diags,
                            ),
                            schema,
                            record,
                            on_contract_change: spec.on_contract_change.unwrap_or(default_on_change),
                            deletion_vectors: spec.merge.unwrap_or_default() == crate::spec::MergeMode::DeletionVectors,
                            declared_deletion_vectors: spec.merge.map(|m| m == crate::spec::MergeMode::DeletionVectors),
                        },
                    );
                }
                Err(errors) => {
                    for e in errors {
                        let line = e.needle.as_deref().and_then(|needle| line_of(&t.file, needle, t.line)).or(t.line);
                        diags.push(
                            Diagnostic::new(&t.file, format!("{subject}, {}", e.subject), e.message).with_line(line),
                        );
                    }
                }
            }
        }

        for (n, sql_file) in &specs.gold_sql_files {
            // A declaration that did not load is reported already: its SQL file is not orphaned.
            let main_unreadable = specs.broken.contains(&format!("file {}", crate::spec::PROJECT_FILE));
            if !specs.gold.contains_key(n) && !specs.is_broken("gold model", n) && !main_unreadable {
                diags.push(
                    Diagnostic::new(
                        sql_file,
                        format!("gold model `{n}`"),
                        "SQL file without a declaration (owner, refresh, sla)",
                    )
                    .with_hint(format!("add [gold.{n}] to medallion.toml or create gold/{n}.toml")),
                );
            }
        }
        // A table whose declaration did not load is still a table to what refers to it (its
        // problem is reported once, where it is).
        let broken_table = |x: &str| specs.is_broken("silver table", x) || specs.is_broken("gold model", x);
        let is_table = |x: &str| specs.silver.contains_key(x) || specs.gold.contains_key(x) || broken_table(x);
        let mut rendered = BTreeMap::new();
        for (n, g) in &specs.gold {
            check_ident(&mut diags, g, "gold model", n);
            let subject = format!("gold model `{n}`");
            if specs.silver.contains_key(n) {
                diags.push(
                    Diagnostic::new(&g.file, &subject, "a silver table has the same name")
                        .with_line(g.line)
                        .with_hint("table names are shared by silver and gold; rename one"),
                );
            }
            for output in &g.spec.outputs {
                let why = match output.as_str() {
                    "parquet" => continue,
                    "iceberg" => "iceberg-rust 0.10 is built on arrow 58 (medallion is on arrow 59) and only appends; \
                                  gold needs overwrites"
                        .to_string(),
                    other => format!("unknown output `{other}`; outputs are \"parquet\""),
                };
                diags.push(
                    Diagnostic::new(&g.file, &subject, format!("outputs: {why}"))
                        .with_line(line_of(&g.file, "outputs", g.line)),
                );
            }
            let refresh = g.spec.refresh.as_deref().map_or(Ok(Refresh::OnRun), str::parse::<Refresh>);
            let sla = g.spec.sla.as_deref().map(str::parse::<Duration>).transpose();
            if let Err(e) = &refresh {
                diags
                    .push(Diagnostic::new(&g.file, &subject, e.clone()).with_line(line_of(&g.file, "refresh", g.line)));
            }
            if let Err(e) = &sla {
                diags.push(Diagnostic::new(&g.file, &subject, e.clone()).with_line(line_of(&g.file, "sla", g.line)));
            }
            let file = PathBuf::from(g.spec.sql.clone().unwrap_or_else(|| format!("gold/{n}.sql")));
            let template = match std::fs::read_to_string(root.join(&file)) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(
                        Diagnostic::new(&g.file, &subject, format!("cannot read its SQL file {}: {e}", file.display()))
                            .with_line(g.line),
                    );
                    continue;
                }
            };
            match render(&template, n, &is_table, &jinja) {
                Ok(r) => {
                    for note in &r.notes {
                        notes.push(
                            Diagnostic::new(&file, &subject, note.clone()).with_line(line_of(&file, "config(", None)),
                        );
                    }
                    if let (Ok(refresh), Ok(sla)) = (refresh, sla) {
                        rendered.insert(n.clone(), (r, g.clone(), file, refresh, sla, template));
                    }
                }
                Err(e) if jinja.is_follow_on(&e) => {} // its macro file's error is reported
                Err(e) => {
                    // A Jinja error knows its line (in the SQL file or a macro file); otherwise
                    // point at the offending reference: `ref('x')` or `x` quoted in the message.
                    let position = e.line.map(|line| (line, e.column)).or_else(|| {
                        let needle = e
                            .message
                            .split_once("ref('")
                            .and_then(|(_, rest)| rest.split_once("')"))
                            .map(|(name, _)| format!("ref('{name}')"))
                            .or_else(|| e.message.split('`').nth(1).map(str::to_string));
                        needle.and_then(|n| line_of(&file, &n, None)).map(|line| (line, None))
                    });
                    diags.push(Diagnostic::new(e.file.unwrap_or(file), &subject, e.message).with_position(position));
                }
            }
        }
        let deps: BTreeMap<String, Vec<String>> =
            rendered.iter().map(|(n, (r, ..))| (n.clone(), r.refs.clone())).collect();
        let mut gold_order = match topological_order(&deps) {
            Ok(order) => order,
            Err(cycle) => {
                // The models on a cycle are reported and left out; what reads them is then a
                // follow-on (not planned, below), and every other model is still planned.
                for n in &cycle {
                    if let Some((_, _, file, ..)) = rendered.remove(n) {
                        diags.push(Diagnostic::new(
                            file,
                            format!("gold model `{n}`"),
                            format!("is part of a reference cycle: {}", cycle.join(" → ")),
                        ));
                    }
                }
                let rest = deps.iter().filter(|(n, _)| !cycle.contains(n)).map(|(n, d)| (n.clone(), d.clone()));
                topological_order(&rest.collect()).unwrap_or_default()
            }
        };

        // Plan every model against the silver contracts' schemas and upstream models' outputs.
        let mut gold = BTreeMap::new();
        let mut silver_order = Vec::new();
        // Planned even when something else is wrong (every problem at once), except what reads a
        // table that did not load, render or plan: that table's problem is reported already.
        let mut unplanned: BTreeSet<String> = specs
            .silver
            .keys()
            .filter(|n| !silver.contains_key(*n))
            .chain(specs.gold.keys().filter(|n| !rendered.contains_key(*n)))
            .cloned()
            .collect();
        {
            let ctx = catalog::new_session()?;
            // A table whose name is no identifier is reported above; registered, `silver.a.b`
            // would fail the whole check with a planning error instead.
            for t in silver.values().filter(|t| is_ident(&t.name)) {
                catalog::register_table(&ctx, Layer::Silver, &t.name, catalog::empty(t.schema.clone(), &t.name)?)?;
            }
            let results = crate::quality::results::schema();
            ctx.register_table("medallion.expectations", catalog::empty(results, "medallion.expectations")?)
                .map_err(|e| Error::sql("registering medallion.expectations", e))?;
            let mut planned = Vec::new();
            for n in &gold_order {
                let Some((r, g, file, refresh, sla, template)) = rendered.remove(n) else { continue };
                if r.refs.iter().any(|x| broken_table(x) || unplanned.contains(x)) {
                    unplanned.insert(n.clone());
                    continue; // it reads a table that did not load: nothing to plan against
                }
                match catalog::read_only(&ctx, &r.sql, "a gold model").await {
                    Ok(df) => {
                        let schema = match catalog::result_schema(&df, "a gold model") {
                            Ok(s) => s,
                            Err(e) => {
                                diags.push(sql_problem(e, &template, &r.sql, &file, format!("gold model `{n}`"), ""));
                                unplanned.insert(n.clone());
                                continue;
                            }
                        };
                        if is_ident(n) {
                            catalog::register_table(&ctx, Layer::Gold, n, catalog::empty(schema.clone(), n)?)?;
                        }
                        let varies = catalog::varies_between_runs(df.logical_plan());
                        let gates =
                            crate::quality::gates::compile(&g.spec.expectations, &schema).unwrap_or_else(|errors| {
                                for (name, message) in errors {
                                    let line = line_of(&g.file, &format!("\"{name}\""), g.line);
                                    diags.push(
                                        Diagnostic::new(&g.file, format!("gold model `{n}`, expectations"), message)
                                            .with_line(line),
                                    );
                                }
                                Vec::new()
                            });
                        if g.spec.merge.is_some() && r.incremental.as_ref().is_none_or(|q| q.unique_key.is_empty()) {
                            diags.push(
                                Diagnostic::new(
                                    &g.file,
                                    format!("gold model `{n}`"),
                                    "merge: only a keyed incremental model (config(materialized='incremental', \
                                     unique_key=...)) replaces rows; this one is rewritten or appended, so `merge` \
                                     would change nothing: remove it",
                                )
                                .with_line(line_of(&g.file, "merge", g.line)),
                            );
                        }
                        if let Some(q) = &r.incremental {
                            let subject = format!("gold model `{n}`, config(materialized='incremental')");
                            let line = line_of(&file, "is_incremental", None);
                            if g.spec.incremental.is_some() {
                                diags.push(Diagnostic::new(&g.file, &subject, "the model is incremental twice: by config() in its SQL and by `incremental` here; keep one").with_line(line_of(&g.file, "incremental", g.line)));
                            }
                            for k in q.unique_key.iter().filter(|k| schema.index_of(k).is_err()) {
                                diags.push(
                                    Diagnostic::new(
                                        &file,
                                        &subject,
                                        format!("unique_key `{k}` is not a column of the model's result"),
                                    )
                                    .with_line(line_of(&file, "unique_key", None)),
                                );
                            }
                            match catalog::read_only(&ctx, &q.sql, "a gold model").await {
                                Ok(df) => {
                                    let names = |s: &datafusion::common::DFSchema| {
                                        s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>()
                                    };
                                    let full: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                                    if names(df.schema()) != full {
                                        diags.push(Diagnostic::new(&file, &subject, format!("with is_incremental() true the model gives columns ({}), not the full build's ({})", names(df.schema()).join(", "), full.join(", "))).with_line(line));
                                    } else if let Ok(inc) = catalog::result_schema(&df, "a gold model")
                                        && let Some((f, g)) = inc
                                            .fields()
                                            .iter()
                                            .zip(schema.fields())
                                            .find(|(f, g)| !same_kind(f.data_type(), g.data_type()))
                                    {
                                        diags.push(Diagnostic::new(&file, &subject, format!("with is_incremental() true column `{}` is {}, not {} as in the full build", f.name(), f.data_type(), g.data_type())).with_line(line));
                                    }
                                }
                                Err(e) => {
                                    let d = sql_problem(
                                        e,
                                        &template,
                                        &q.sql,
                                        &file,
                                        subject,
                                        "with is_incremental() true, ",
                                    );
                                    diags.push(if d.line.is_some() { d } else { d.with_line(line) });
                                }
                            }
                        }
                        planned.push((n.clone(), g.clone()));
                        gold.insert(
                            n.clone(),
                            GoldModel {
                                name: n.clone(),
                                file,
                                sql: r.sql,
                                refs: r.refs,
                                owner: g
                                    .spec
                                    .owner
                                    .clone()
                                    .or_else(|| project_owner.clone())
                                    .unwrap_or_else(|| "unassigned".to_string()),
                                refresh,
                                sla,
                                description: g.spec.description.clone(),
                                gates,
                                checks: Vec::new(),
                                incremental: None,
                                incremental_query: r.incremental,
                                deletion_vectors: g.spec.merge == Some(crate::spec::MergeMode::DeletionVectors),
                                tags: g.spec.tags.clone(),
                                parquet: g.spec.outputs.iter().any(|o| o == "parquet"),
                                retries: g.spec.retries,
                                maintenance: maintenance_of(
                                    g.spec.maintenance.as_ref(),
                                    &schema,
                                    &g.file,
                                    &format!("gold model `{n}`"),
                                    g.line,
                                    &mut diags,
                                ),
                                schema,
                                varies,
                            },
                        );
                    }
                    Err(e) => {
                        diags.push(sql_problem(e, &template, &r.sql, &file, format!("gold model `{n}`"), ""));
                        unplanned.insert(n.clone());
                    }
                }
            }

            // Set- and table-level expectations, planned with every table known.
            for (n, t) in &specs.silver {
                let Some(table) = silver.get_mut(n) else { continue };
                // An `sla` that does not parse is reported above; a stand-in keeps a freshness
                // expectation that defaults to it from reporting a missing one as well.
                let stand_in = t.spec.sla.is_some().then_some(Duration { seconds: 0 });
                let owner = Owner { name: n, sla: table.sla.or(stand_in) };
                let subject = format!("silver table `{n}`, expectations");
                match compile_checks(&ctx, &t.spec.expectations, table.schema.clone(), owner).await? {
                    Ok(compiled) => {
                        if matches!(table.history, History::Versions { .. })
                            && let Some(c) = compiled.iter().find(|c| c.drops())
                        {
                            diags.push(
                                Diagnostic::new(&t.file, &subject, format!("expectation `{}`: `drop` is not available on an scd = 2 table (it would cut history)", c.name))
                                    .with_line(line_of(&t.file, &format!("\"{}\"", c.name), t.line)),
                            );
                        }
                        for c in &compiled {
                            for r in c.refs.iter().filter(|r| !specs.silver.contains_key(*r)) {
                                diags.push(
                                    Diagnostic::new(&t.file, &subject, format!("expectation `{}` reads `{r}`, which is not a silver table", c.name))
                                        .with_line(line_of(&t.file, &format!("\"{}\"", c.name), t.line))
                                        .with_hint("silver is promoted before gold is built: silver expectations may read silver tables only"),
                                );
                            }
                        }
                        table.depends_on = compiled
                            .iter()
                            .flat_map(|c| c.refs.iter().cloned())
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        table.checks = compiled;
                    }
                    Err(errors) => {
                        for (name, message) in errors.into_iter().filter(|(_, m)| !reads_any(m, &unplanned)) {
                            diags.push(Diagnostic::new(&t.file, &subject, message).with_line(line_of(
                                &t.file,
                                &format!("\"{name}\""),
                                t.line,
                            )));
                        }
                    }
                }
            }
            let rendered_refs: BTreeMap<String, Vec<String>> =
                gold.iter().map(|(n, m)| (n.clone(), m.refs.clone())).collect();
            let gold_schemas: BTreeMap<String, SchemaRef> =
                gold.iter().map(|(n, m)| (n.clone(), m.schema.clone())).collect();
            for (name, g) in planned {
                let Some(model) = gold.get_mut(&name) else { continue };
                let owner = Owner { name: &name, sla: model.sla };
                match compile_checks(&ctx, &g.spec.expectations, model.schema.clone(), owner).await? {
                    Ok(compiled) => {
                        let mut refs: BTreeSet<String> = model.refs.iter().cloned().collect();
                        refs.extend(compiled.iter().flat_map(|c| c.refs.iter().cloned()));
                        model.refs = refs.into_iter().collect();
                        model.checks = compiled;
                        if model.incremental_query.is_some()
                            && let Some(c) = model.checks.iter().find(|c| c.drops())
                        {
                            diags.push(Diagnostic::new(&g.file, format!("gold model `{name}`, expectations"), format!("expectation `{}`: `drop` on set-level kinds is not available on incremental models", c.name)).with_line(line_of(&g.file, &format!("\"{}\"", c.name), g.line)));
                        }
                        if let Some(inc) = &g.spec.incremental {
                            let subject = format!("gold model `{name}`, incremental");
                            let line = line_of(&g.file, "incremental", g.line);
                            let sql_refs: Vec<&String> =
                                rendered_refs.get(&name).map(|r| r.iter().collect()).unwrap_or_default();
                            let source =
                                inc.source.clone().or_else(|| (sql_refs.len() == 1).then(|| sql_refs[0].clone()));
                            let source_schema = source.as_ref().and_then(|s| {
                                silver.get(s).map(|t| t.schema.clone()).or_else(|| gold_schemas.get(s).cloned())
                            });
                            match (source, source_schema) {
                                (None, _) => diags.push(Diagnostic::new(&g.file, &subject, "the model reads several tables: name the one whose changes decide the partitions with `source`").with_line(line)),
                                (Some(s), None) => diags.push(Diagnostic::new(&g.file, &subject, format!("source `{s}` is not a silver or gold table")).with_line(line)),
                                (Some(s), Some(schema)) => {
                                    let col = &inc.partition_by;
                                    if model.schema.index_of(col).is_err() || schema.index_of(col).is_err() {
                                        diags.push(Diagnostic::new(&g.file, &subject, format!("partition_by `{col}` must be a column of the model's result and of `{s}`")).with_line(line));
                                    } else if !sql_refs.contains(&&s) {
                                        diags.push(Diagnostic::new(&g.file, &subject, format!("source `{s}` is not read by the model's SQL")).with_line(line));
                                    } else if let Some(c) = model.checks.iter().find(|c| c.drops()) {
                                        diags.push(Diagnostic::new(&g.file, &subject, format!("expectation `{}`: `drop` on set-level kinds is not available on incremental models", c.name)).with_line(line));
                                    } else {
                                        model.incremental = Some((col.clone(), s));
                                    }
                                }
                            }
                        }
                    }
                    Err(errors) => {
                        for (en, message) in errors.into_iter().filter(|(_, m)| !reads_any(m, &unplanned)) {
                            diags.push(
                                Diagnostic::new(&g.file, format!("gold model `{name}`, expectations"), message)
                                    .with_line(line_of(&g.file, &format!("\"{en}\""), g.line)),
                            );
                        }
                    }
                }
            }
            for m in gold.values() {
                if let Some((_, source)) = &m.incremental
                    && let Some(t) = silver.get_mut(source)
                {
                    t.change_feed = true;
                }
            }
            // Expectations add edges: order again, and report cycles they create.
            let silver_deps: BTreeMap<String, Vec<String>> =
                silver.iter().map(|(n, t)| (n.clone(), t.depends_on.clone())).collect();
            match topological_order(&silver_deps) {
                Ok(order) => silver_order = order,
                Err(cycle) => {
                    for n in &cycle {
                        if let Some(t) = specs.silver.get(n) {
                            let message = format!(
                                "its expectations and those of the tables they read make a cycle: {}",
                                cycle.join(" → ")
                            );
                            diags.push(
                                Diagnostic::new(&t.file, format!("silver table `{n}`"), message).with_line(t.line),
                            );
                        }
                    }
                }
            }
            let gold_deps: BTreeMap<String, Vec<String>> = gold
                .iter()
                .map(|(n, m)| (n.clone(), m.refs.iter().filter(|r| gold.contains_key(*r)).cloned().collect()))
                .collect();
            match topological_order(&gold_deps) {
                Ok(order) => gold_order = order,
                Err(cycle) => {
                    for n in &cycle {
                        if let Some(g) = specs.gold.get(n) {
                            let message =
                                format!("its SQL and expectations make a reference cycle: {}", cycle.join(" → "));
                            diags
                                .push(Diagnostic::new(&g.file, format!("gold model `{n}`"), message).with_line(g.line));
                        }
                    }
                }
            }
        }
        if !diags.is_empty() {
            return Err(Error::InvalidProject(diags));
        }
        Ok(Project {
            root: root.to_path_buf(),
            name,
            lake,
            sources,
            silver,
            silver_order,
            gold,
            gold_order,
            catchup,
            compact_above_files,
            vacuum,
            storage,
            lineage,
            notes,
        })
    }

    /// Opens the project's lake with its `[storage]` options.
    pub fn open_lake(&self) -> Result<crate::storage::Lake> {
        crate::storage::Lake::open_with(&self.lake, &self.root, &self.storage)
    }

    /// Uses `lake` instead of the configured location.
    pub fn with_lake(self, lake: Option<String>) -> Self {
        match lake {
            Some(lake) => Project { lake, ..self },
            None => self,
        }
    }

    /// The source, or an error listing known ones.
    pub fn source(&self, name: &str) -> Result<&Source> {
        self.sources.get(name).ok_or_else(|| Error::Unknown {
            kind: "source",
            name: name.to_string(),
            known: self.sources.keys().cloned().collect(),
        })
    }
}

/// Compiles `specs`' set- and table-level expectations with [`THIS`] standing for a table of
/// `schema`.
async fn compile_checks(
    ctx: &SessionContext,
    specs: &[crate::spec::ExpectationSpec],
    schema: SchemaRef,
    owner: Owner<'_>,
) -> Result<Result<Vec<TableCheck>, Vec<(String, String)>>> {
    ctx.deregister_table(THIS).map_err(|e| Error::sql("planning expectations", e))?;
    ctx.register_table(THIS, catalog::empty(schema, THIS)?).map_err(|e| Error::sql("planning expectations", e))?;
    Ok(checks::compile(ctx, specs, owner).await)
}

fn check_ident<T>(diags: &mut Vec<Diagnostic>, item: &Located<T>, kind: &str, name: &str) {
    if !is_ident(name) {
        diags.push(
            Diagnostic::new(&item.file, format!("{kind} `{name}`"), "invalid name")
                .with_line(item.line)
                .with_hint("names are lower-case letters, digits and `_`, starting with a letter"),
        );
    }
}

/// `[a-z][a-z0-9_]*` (also `_`-prefixed for internal names is refused by callers).
pub fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A vacuum policy from `vacuum_every` and `vacuum_retain`, each falling back to `default`'s
/// (retention: `7d`); a retention below 7 days is refused.
fn vacuum_policy(
    every: Option<&str>,
    retain: Option<&str>,
    default: Option<(Duration, Duration)>,
) -> std::result::Result<Option<(Duration, Duration)>, String> {
    let every = match every {
        Some(e) => Some(e.parse::<Duration>()?),
        None => default.map(|d| d.0),
    };
    let Some(every) = every else {
        return match retain {
            Some(_) => Err("vacuum_retain needs vacuum_every".into()),
            None => Ok(None),
        };
    };
    let (retain, text) = match retain {
        Some(r) => (r.parse::<Duration>()?, r),
        None => (default.map_or_else(|| "7d".parse::<Duration>(), |d| Ok(d.1))?, "default"),
    };
    if retain.seconds < crate::storage::MIN_RETENTION.as_secs() {
        return Err(format!(
            "vacuum_retain `{text}` is below 7 days (hint: time travel and slow readers need the files; run `medallion vacuum --force` by hand if you must)"
        ));
    }
    Ok(Some((every, retain)))
}

impl catalog::Registry for Project {
    fn published(&self) -> Vec<(Layer, &str, SchemaRef)> {
        let silver = self.silver.values().map(|t| (Layer::Silver, t.name.as_str(), Arc::clone(&t.schema)));
        silver.chain(self.gold.values().map(|g| (Layer::Gold, g.name.as_str(), Arc::clone(&g.schema)))).collect()
    }

    fn dead_letter_schema(&self) -> SchemaRef {
        crate::quality::quarantine::schema()
    }

    fn system(&self) -> Vec<(&'static str, SchemaRef)> {
        vec![
            (crate::quality::results::TABLE, crate::quality::results::schema()),
            (crate::runtime::events::TABLE, crate::runtime::events::schema()),
        ]
    }

    /// A silver table kept as the latest row per key (deletes or not), its key one column: every
    /// promotion, rebuild and replay leaves one row per key. Histories and event tables repeat
    /// keys.
    fn unique_key(&self, layer: Layer, name: &str) -> Option<String> {
        let table = self.silver.get(name).filter(|_| layer == Layer::Silver)?;
        match (&table.history, table.keys.as_slice()) {
            (crate::silver::history::History::Latest { .. }, [key]) => Some(key.clone()),
            _ => None,
        }
    }
}

/// A source's read options, checked: every problem as (key, message).
fn read_options(spec: &crate::spec::SourceSpec) -> std::result::Result<ReadOptions, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let mut read = ReadOptions { format: spec.format, ..Default::default() };
    if spec.format == SourceFormat::Parquet && spec.encoding.is_some() {
        errors.push(("encoding", "`encoding` is for text formats; Parquet strings are UTF-8".to_string()));
    }
    if let Some(e) = &spec.encoding {
        match e.parse::<Encoding>() {
            Ok(e) => read.encoding = e,
            Err(message) => errors.push(("encoding", message)),
        }
    }
    let csv_keys = [
        ("delimiter", spec.delimiter.is_some()),
        ("quote", spec.quote.is_some()),
        ("escape", spec.escape.is_some()),
        ("header", spec.header.is_some()),
        ("column_names", !spec.column_names.is_empty()),
        ("skip_rows", spec.skip_rows.is_some()),
    ];
    if spec.format != SourceFormat::Csv {
        for (key, _) in csv_keys.iter().filter(|(_, given)| *given) {
            errors.push((*key, format!("`{key}` is a CSV option; this source's format is not csv")));
        }
        return if errors.is_empty() { Ok(read) } else { Err(errors) };
    }
    let mut one_char = |key: &'static str, value: &Option<String>| -> Option<u8> {
        let v = value.as_deref()?;
        match v.as_bytes() {
            [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Some(*b),
            _ => {
                errors.push((key, format!("`{key}` must be one ASCII character (not a line break), not {v:?}")));
                None
            }
        }
    };
    let delimiter = one_char("delimiter", &spec.delimiter);
    let quote = one_char("quote", &spec.quote);
    let escape = one_char("escape", &spec.escape);
    read.csv = CsvOptions {
        delimiter: delimiter.unwrap_or(b','),
        quote: quote.unwrap_or(b'"'),
        escape,
        header: spec.header.unwrap_or(true),
        column_names: spec.column_names.clone(),
        skip_rows: spec.skip_rows.unwrap_or(0),
    };
    if read.csv.header && !spec.column_names.is_empty() {
        errors.push((
            "column_names",
            "`column_names` names the columns of a CSV without a header: set `header = false`".into(),
        ));
    }
    if read.csv.delimiter == read.csv.quote {
        errors.push(("delimiter", "the delimiter and the quote must differ".into()));
    }
    if errors.is_empty() { Ok(read) } else { Err(errors) }
}

/// A model's SQL that does not plan, as one problem, at the place in the model's `template`
/// that the `rendered` SQL it planned points at.
fn sql_problem(
    e: Error,
    template: &str,
    rendered: &str,
    file: &Path,
    subject: impl Into<String>,
    prefix: &str,
) -> Diagnostic {
    let Error::Sql { source, .. } = e else { return Diagnostic::new(file, subject, format!("{prefix}{e}")) };
    let problem = catalog::SqlProblem::of(&source);
    let position = match problem.span {
        Some((start, end)) => crate::gold::models::template_position(template, rendered, start, end),
        // Some paths (a HAVING clause) say "No field named amout." without a span: the line
        // that names it, if one does.
        None => problem
            .message
            .split_once("No field named ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(|name| name.trim_end_matches('.').replace('"', ""))
            .and_then(|name| crate::gold::models::template_find(template, &name)),
    };
    let d = Diagnostic::new(file, subject, format!("{prefix}SQL does not plan: {}", problem.message))
        .with_position(position);
    match problem.advice {
        Some(advice) => d.with_hint(advice),
        None => d,
    }
}

/// The project's `macros/*.sql` files (relative path, text), in name order.
fn macro_files(root: &Path) -> std::result::Result<Vec<(PathBuf, String)>, Diagnostic> {
    let dir = root.join("macros");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let unreadable = |e: std::io::Error| Diagnostic::new("macros", "macros", format!("cannot read the directory: {e}"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(unreadable)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql") && p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| p.clone());
            std::fs::read_to_string(&p)
                .map(|text| (rel.clone(), text))
                .map_err(|e| Diagnostic::new(&rel, "macros", format!("cannot read: {e}")))
        })
        .collect()
}

/// Whether two column types hold the same values (string views and strings are one kind).
fn same_kind(a: &datafusion::arrow::datatypes::DataType, b: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType::{LargeUtf8, Utf8, Utf8View};
    a == b || matches!((a, b), (Utf8 | Utf8View | LargeUtf8, Utf8 | Utf8View | LargeUtf8))
}

/// Whether an expectation's planning error is about one of `tables` not being there (a table
/// whose own problem is reported already).
fn reads_any(message: &str, tables: &BTreeSet<String>) -> bool {
    message.contains("not found")
        && tables.iter().any(|t| {
            [format!(".{t}'"), format!("'{t}'"), format!("`{t}`"), format!(".{t}`")].iter().any(|p| message.contains(p))
        })
}
