//! OpenLineage: every run and every node it runs as OpenLineage `RunEvent`s (START, then
//! COMPLETE or FAIL), written to a JSON Lines file and/or POSTed to a backend such as Marquez.
//!
//! Jobs: the run is the job `<project>`; each node is `<project>.<layer>.<name>` (for example
//! `orders.silver.orders`) with a `parent` facet pointing at the run. Datasets use OpenLineage's
//! naming: tables of a local lake are `file` + absolute path, of an object store `s3://bucket` +
//! key prefix. Facets (all from the spec's published facet schemas, versions below):
//! `processing_engine`, `parent`, `errorMessage` on runs; `jobType`, `sql` (gold) on jobs;
//! `schema`, `dataSource` on datasets; `inputStatistics` (records, bytes read from bronze) and
//! `outputStatistics` (rows written; rows rejected into the dead letter) at COMPLETE.
//!
//! Emission never fails a run: the events are handed to a background task, and what could not be
//! delivered is counted in the run summary ([`LineageReport`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::runtime::events::Event;
use crate::spec::{Action, Diagnostic};
use crate::storage::{Lake, Layer};

pub use crate::project::lineage::{DEFAULT_ENDPOINT, LineageConfig};

/// The `producer` of every event.
pub const PRODUCER: &str = concat!("urn:medallion:", env!("CARGO_PKG_VERSION"));
/// The RunEvent schema the events follow.
pub const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// The facet schemas used, with the versions emitted.
const FACETS: &[(&str, &str)] = &[
    ("ProcessingEngineRunFacet", "1-1-1"),
    ("ParentRunFacet", "1-1-0"),
    ("ErrorMessageRunFacet", "1-0-1"),
    ("JobTypeJobFacet", "2-0-3"),
    ("SQLJobFacet", "1-1-0"),
    ("SchemaDatasetFacet", "1-2-0"),
    ("DatasourceDatasetFacet", "1-0-1"),
    ("InputStatisticsInputDatasetFacet", "1-0-0"),
    ("OutputStatisticsOutputDatasetFacet", "1-0-2"),
];

/// What the run's lineage emission did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LineageReport {
    /// Events produced.
    pub events: u64,
    /// The file they were appended to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The endpoint they were POSTed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Deliveries that failed (after retries), over file and endpoint.
    pub failed: u64,
    /// The first failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The emitter of one run: fed the run's events, delivers OpenLineage events in the background.
#[derive(Debug)]
pub struct Lineage {
    namespace: String,
    pipeline: String,
    /// The run that started this one (an Airflow task), from `OPENLINEAGE_PARENT_ID`.
    outer: Option<Outer>,
    jobs: HashMap<String, JobDef>,
    state: Mutex<State>,
    /// Taken (closed) by [`Lineage::finish`].
    tx: Mutex<Option<mpsc::UnboundedSender<Value>>>,
    worker: Mutex<Option<tokio::task::JoinHandle<LineageReport>>>,
}

#[derive(Debug, Default)]
struct State {
    run: Option<Uuid>,
    nodes: HashMap<String, NodeRun>,
    /// Events handed to the worker.
    sent: u64,
}

#[derive(Debug)]
struct NodeRun {
    id: Uuid,
    ended: bool,
    read: u64,
    bytes: u64,
    written: u64,
    rejected: u64,
}

/// A parent run outside medallion: `OPENLINEAGE_PARENT_ID` as `<namespace>/<job name>/<run id>`,
/// the convention of OpenLineage's integrations (Airflow's `lineage_parent_id` macro gives it).
#[derive(Debug, Clone, PartialEq)]
struct Outer {
    namespace: String,
    name: String,
    run: Uuid,
}

impl Outer {
    fn parse(text: &str) -> Option<Outer> {
        let (rest, run) = text.trim().rsplit_once('/')?;
        let (namespace, name) = rest.split_once('/')?;
        let run = Uuid::parse_str(run).ok()?;
        (!namespace.is_empty() && !name.is_empty()).then(|| Outer {
            namespace: namespace.into(),
            name: name.into(),
            run,
        })
    }

    fn facet_parts(&self) -> (Value, Value) {
        (json!({ "runId": self.run.to_string() }), json!({ "namespace": self.namespace, "name": self.name }))
    }
}

/// A node as an OpenLineage job.
#[derive(Debug)]
struct JobDef {
    name: String,
    job_type: &'static str,
    sql: Option<String>,
    inputs: Vec<Dataset>,
    outputs: Vec<Dataset>,
}

/// A dataset a job reads or writes, and which of the node's counts describe it.
#[derive(Debug, Clone)]
struct Dataset {
    namespace: String,
    name: String,
    uri: String,
    schema: Option<SchemaRef>,
    counts: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Counts {
    /// Records and bytes read (a silver node's bronze input).
    Read,
    /// Rows written (the node's table).
    Written,
    /// Rows rejected (the dead letter).
    Rejected,
    /// None (tables read whole, source files).
    None,
}

impl Lineage {
    /// Starts the emitter of a run when lineage is configured (the project's `[lineage]` or
    /// `OPENLINEAGE_URL`); an `api_key` referencing an unset variable is an error.
    pub fn start(project: &Project, lake: &Lake) -> Result<Option<Arc<Lineage>>> {
        let Some(config) = LineageConfig::resolve(project.lineage.as_ref(), |k| std::env::var(k).ok()) else {
            return Ok(None);
        };
        let invalid = |message: String| {
            Error::InvalidProject(vec![Diagnostic::new(crate::spec::PROJECT_FILE, "[lineage]", message)])
        };
        let api_key = config
            .api_key
            .as_deref()
            .map(crate::spec::env::expand)
            .transpose()
            .map_err(|e| invalid(format!("api_key: {e}")))?;
        let post = match &config.url {
            Some(url) => {
                let endpoint = format!("{}/{}", url.trim_end_matches('/'), config.endpoint.trim_start_matches('/'));
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .user_agent(concat!("medallion/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| invalid(format!("cannot make an HTTP client: {e}")))?;
                Some(Post { client, endpoint, api_key })
            }
            None => None,
        };
        let namespace = config.namespace.clone().unwrap_or_else(|| project.name.clone());
        let outer = match std::env::var("OPENLINEAGE_PARENT_ID") {
            Ok(text) if !text.trim().is_empty() => {
                let outer = Outer::parse(&text);
                if outer.is_none() {
                    tracing::warn!(value = %text, "OPENLINEAGE_PARENT_ID is not <namespace>/<job>/<run uuid>: ignored");
                }
                outer
            }
            _ => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(deliver(rx, config.file.clone(), post));
        Ok(Some(Arc::new(Lineage {
            namespace,
            pipeline: project.name.clone(),
            outer,
            jobs: jobs(project, lake),
            state: Mutex::new(State::default()),
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        })))
    }

    /// Takes one event of the run: starts, failures and the run's end are emitted at once; a
    /// node's finished events are added up until [`Lineage::node_done`].
    pub fn on_event(&self, e: &Event) {
        let Ok(mut state) = self.state.lock() else { return };
        match (e.kind, e.node.as_deref()) {
            ("run_started", _) => {
                let id = Uuid::new_v4();
                state.run = Some(id);
                self.send(&mut state, self.run_event("START", &e.at, id, None));
            }
            ("run_finished", _) => {
                let Some(id) = state.run else { return };
                let failed = e.status.as_deref() == Some("failed");
                let error = failed.then(|| "one or more nodes failed".to_string());
                let kind = if failed { "FAIL" } else { "COMPLETE" };
                self.send(&mut state, self.run_event(kind, &e.at, id, error.as_deref()));
            }
            ("node_started", Some(node)) => {
                self.begin(&mut state, node, &e.at);
            }
            ("node_finished", Some(node)) => {
                self.begin(&mut state, node, &e.at);
                if let Some(n) = state.nodes.get_mut(node) {
                    n.read += e.rows_read.unwrap_or(0);
                    n.bytes += e.bytes.unwrap_or(0);
                    n.written +=
                        e.rows_inserted.unwrap_or(0) + e.rows_updated.unwrap_or(0) + e.rows_deleted.unwrap_or(0);
                    n.rejected += e.rows_rejected.unwrap_or(0);
                }
            }
            ("node_failed", Some(node)) => {
                self.begin(&mut state, node, &e.at);
                let Some(n) = state.nodes.get_mut(node).filter(|n| !n.ended) else { return };
                n.ended = true;
                let id = n.id;
                if let Some(event) = self.node_event("FAIL", &e.at, state.run, node, id, None, e.error.as_deref()) {
                    self.send(&mut state, event);
                }
            }
            // A skipped node never ran: no run to report.
            _ => {}
        }
    }

    /// A node's work is over and all its finished events were given: emits its COMPLETE.
    pub fn node_done(&self, node: &str) {
        let Ok(mut state) = self.state.lock() else { return };
        let Some(n) = state.nodes.get_mut(node).filter(|n| !n.ended) else { return };
        n.ended = true;
        let counts = (n.read, n.bytes, n.written, n.rejected);
        let id = n.id;
        let at = chrono::Utc::now().to_rfc3339();
        if let Some(event) = self.node_event("COMPLETE", &at, state.run, node, id, Some(counts), None) {
            self.send(&mut state, event);
        }
    }

    /// Stops taking events and waits for every one to be delivered.
    pub async fn finish(&self) -> LineageReport {
        let sent = self.state.lock().map(|s| s.sent).unwrap_or(0);
        drop(self.tx.lock().ok().and_then(|mut t| t.take()));
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        let mut report = match worker {
            Some(w) => w.await.unwrap_or_else(|e| LineageReport { error: Some(e.to_string()), ..Default::default() }),
            None => LineageReport::default(),
        };
        report.events = sent;
        report
    }

    fn send(&self, state: &mut State, event: Value) {
        if let Ok(tx) = self.tx.lock()
            && let Some(tx) = tx.as_ref()
            && tx.send(event).is_ok()
        {
            state.sent += 1;
        }
    }

    /// A node's START, once (at its first event).
    fn begin(&self, state: &mut State, node: &str, at: &str) {
        if state.nodes.contains_key(node) {
            return;
        }
        let id = Uuid::new_v4();
        state.nodes.insert(node.to_string(), NodeRun { id, ended: false, read: 0, bytes: 0, written: 0, rejected: 0 });
        if let Some(event) = self.node_event("START", at, state.run, node, id, None, None) {
            self.send(state, event);
        }
    }

    fn run_event(&self, kind: &str, at: &str, id: Uuid, error: Option<&str>) -> Value {
        let mut run_facets = serde_json::Map::new();
        run_facets.insert("processing_engine".into(), processing_engine());
        if let Some(outer) = &self.outer {
            let (run, job) = outer.facet_parts();
            let root = json!({ "run": run, "job": job });
            run_facets
                .insert("parent".into(), facet("ParentRunFacet", json!({ "run": run, "job": job, "root": root })));
        }
        if let Some(message) = error {
            run_facets.insert("errorMessage".into(), error_message(message));
        }
        json!({
            "eventType": kind,
            "eventTime": event_time(at),
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT_SCHEMA,
            "run": { "runId": id.to_string(), "facets": run_facets },
            "job": { "namespace": self.namespace, "name": self.pipeline, "facets": { "jobType": job_type("PIPELINE") } },
            "inputs": [],
            "outputs": [],
        })
    }

    /// `counts`: (read, bytes, written, rejected) for COMPLETE.
    #[allow(clippy::too_many_arguments)]
    fn node_event(
        &self,
        kind: &str,
        at: &str,
        parent: Option<Uuid>,
        node: &str,
        id: Uuid,
        counts: Option<(u64, u64, u64, u64)>,
        error: Option<&str>,
    ) -> Option<Value> {
        let job = self.jobs.get(node)?;
        let run_id = parent?;
        let mut run_facets = serde_json::Map::new();
        run_facets.insert("processing_engine".into(), processing_engine());
        let parent_job = json!({ "namespace": self.namespace, "name": self.pipeline });
        let parent_run = json!({ "runId": run_id.to_string() });
        // The root is the outermost run: the one that started medallion, if any.
        let (root_run, root_job) = match &self.outer {
            Some(outer) => outer.facet_parts(),
            None => (parent_run.clone(), parent_job.clone()),
        };
        run_facets.insert(
            "parent".into(),
            facet(
                "ParentRunFacet",
                json!({ "run": parent_run, "job": parent_job, "root": { "run": root_run, "job": root_job } }),
            ),
        );
        if let Some(message) = error {
            run_facets.insert("errorMessage".into(), error_message(message));
        }
        let mut job_facets = serde_json::Map::new();
        job_facets.insert("jobType".into(), job_type(job.job_type));
        if let Some(sql) = &job.sql {
            job_facets.insert("sql".into(), facet("SQLJobFacet", json!({ "query": sql, "dialect": "datafusion" })));
        }
        let (read, bytes, written, rejected) = counts.unwrap_or_default();
        let dataset = |d: &Dataset, output: bool| {
            let mut facets = serde_json::Map::new();
            facets.insert(
                "dataSource".into(),
                facet("DatasourceDatasetFacet", json!({ "name": d.namespace, "uri": d.uri })),
            );
            if let Some(schema) = &d.schema {
                facets.insert("schema".into(), schema_facet(schema));
            }
            let mut out = json!({ "namespace": d.namespace, "name": d.name, "facets": facets });
            if counts.is_some() {
                let stats = match d.counts {
                    Counts::Read => Some(json!({ "rowCount": read, "size": bytes })),
                    Counts::Written => Some(json!({ "rowCount": written })),
                    Counts::Rejected => Some(json!({ "rowCount": rejected })),
                    Counts::None => None,
                };
                if let Some(stats) = stats {
                    let (key, def, name) = if output {
                        ("outputFacets", "OutputStatisticsOutputDatasetFacet", "outputStatistics")
                    } else {
                        ("inputFacets", "InputStatisticsInputDatasetFacet", "inputStatistics")
                    };
                    out[key] = json!({ name: facet(def, stats) });
                }
            }
            out
        };
        Some(json!({
            "eventType": kind,
            "eventTime": event_time(at),
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT_SCHEMA,
            "run": { "runId": id.to_string(), "facets": run_facets },
            "job": { "namespace": self.namespace, "name": job.name, "facets": job_facets },
            "inputs": job.inputs.iter().map(|d| dataset(d, false)).collect::<Vec<_>>(),
            "outputs": job.outputs.iter().map(|d| dataset(d, true)).collect::<Vec<_>>(),
        }))
    }
}

/// An event time as RFC 3339 in UTC with microseconds (`…T06:00:00.123456Z`).
fn event_time(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map_or_else(|_| chrono::Utc::now(), |t| t.with_timezone(&chrono::Utc))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A facet of the spec's facet schema `def`, with `_producer` and `_schemaURL`.
fn facet(def: &str, body: Value) -> Value {
    let version = FACETS.iter().find(|(d, _)| *d == def).map_or("1-0-0", |(_, v)| v);
    let mut body = body;
    body["_producer"] = json!(PRODUCER);
    body["_schemaURL"] = json!(format!("https://openlineage.io/spec/facets/{version}/{def}.json#/$defs/{def}"));
    body
}

fn processing_engine() -> Value {
    facet(
        "ProcessingEngineRunFacet",
        json!({ "version": crate::VERSION, "name": "medallion", "openlineageAdapterVersion": crate::VERSION }),
    )
}

fn error_message(message: &str) -> Value {
    facet("ErrorMessageRunFacet", json!({ "message": message, "programmingLanguage": "rust" }))
}

fn job_type(kind: &str) -> Value {
    facet("JobTypeJobFacet", json!({ "processingType": "BATCH", "integration": "MEDALLION", "jobType": kind }))
}

fn schema_facet(schema: &SchemaRef) -> Value {
    let fields: Vec<Value> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| json!({ "name": f.name(), "type": sql_type(f.data_type()), "ordinal_position": i + 1 }))
        .collect();
    facet("SchemaDatasetFacet", json!({ "fields": fields }))
}

/// A column type as Delta/Spark readers name it.
fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "int".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp".into(),
        DataType::Timestamp(_, None) => "timestamp_ntz".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// Every node of the project as a job, with what it reads and writes.
fn jobs(project: &Project, lake: &Lake) -> HashMap<String, JobDef> {
    let table = |layer: Layer, name: &str, schema: Option<SchemaRef>, counts: Counts| {
        let (namespace, name, uri) = lake.dataset(&format!("{}/{name}", layer.dir()));
        Dataset { namespace, name, uri, schema, counts }
    };
    let silver_or_gold = |name: &str| match (project.silver.get(name), project.gold.get(name)) {
        (Some(t), _) => Some(table(Layer::Silver, name, Some(t.schema.clone()), Counts::None)),
        (None, Some(m)) => Some(table(Layer::Gold, name, Some(m.schema.clone()), Counts::None)),
        (None, None) => None,
    };
    let bronze = |source: &str, counts: Counts| {
        let (namespace, name, uri) = lake.dataset(&format!("bronze/{source}"));
        Dataset { namespace, name, uri, schema: None, counts }
    };
    let job = |layer: &str, name: &str| format!("{}.{layer}.{name}", project.name);
    let mut jobs = HashMap::new();
    for s in project.sources.values() {
        let inputs = s
            .paths
            .iter()
            .map(|p| {
                let path = project.root.join(p).to_string_lossy().into_owned();
                Dataset {
                    namespace: "file".into(),
                    uri: format!("file://{path}"),
                    name: path,
                    schema: None,
                    counts: Counts::None,
                }
            })
            .collect();
        let outputs = vec![bronze(&s.name, Counts::Written)];
        jobs.insert(
            format!("bronze/{}", s.name),
            JobDef { name: job("bronze", &s.name), job_type: "INGEST", sql: None, inputs, outputs },
        );
    }
    for t in project.silver.values() {
        let mut inputs = vec![bronze(&t.source, Counts::Read)];
        inputs.extend(t.depends_on.iter().filter_map(|d| silver_or_gold(d)));
        let outputs = vec![
            table(Layer::Silver, &t.name, Some(t.schema.clone()), Counts::Written),
            table(Layer::Quarantine, &t.name, Some(crate::quality::quarantine::schema()), Counts::Rejected),
        ];
        jobs.insert(
            format!("silver/{}", t.name),
            JobDef { name: job("silver", &t.name), job_type: "TABLE", sql: None, inputs, outputs },
        );
    }
    for m in project.gold.values() {
        let inputs = m.refs.iter().filter_map(|r| silver_or_gold(r)).collect();
        let mut outputs = vec![table(Layer::Gold, &m.name, Some(m.schema.clone()), Counts::Written)];
        let drops =
            m.gates.iter().map(|g| g.action).chain(m.checks.iter().map(|c| c.action)).any(|a| a == Action::Drop);
        if drops {
            outputs.push(table(
                Layer::Quarantine,
                &m.name,
                Some(crate::quality::quarantine::schema()),
                Counts::Rejected,
            ));
        }
        jobs.insert(
            format!("gold/{}", m.name),
            JobDef { name: job("gold", &m.name), job_type: "MODEL", sql: Some(m.sql.clone()), inputs, outputs },
        );
    }
    jobs
}

/// An HTTP backend.
#[derive(Debug)]
struct Post {
    client: reqwest::Client,
    endpoint: String,
    api_key: Option<String>,
}

/// Retries of a POST after a transient failure (connection, timeout, 429, 5xx).
const POST_RETRIES: u32 = 3;

/// Delivers events in order until the run drops its sender.
async fn deliver(mut rx: mpsc::UnboundedReceiver<Value>, file: Option<PathBuf>, post: Option<Post>) -> LineageReport {
    let mut report = LineageReport {
        file: file.as_ref().map(|f| f.display().to_string()),
        url: post.as_ref().map(|p| p.endpoint.clone()),
        ..Default::default()
    };
    let fail = |report: &mut LineageReport, error: String| {
        report.failed += 1;
        if report.error.is_none() {
            tracing::warn!(%error, "OpenLineage event not delivered");
            report.error = Some(error);
        }
    };
    let mut out = None;
    let mut backend_down = false;
    while let Some(event) = rx.recv().await {
        let line = event.to_string();
        if let Some(path) = &file {
            if out.is_none() {
                out = open_append(path).map_err(|e| fail(&mut report, format!("{}: {e}", path.display()))).ok();
            }
            if let Some(f) = out.as_mut() {
                use std::io::Write;
                if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                    fail(&mut report, format!("{}: {e}", path.display()));
                }
            }
        }
        // A backend that stays down after the retries is not tried again in this run: the run
        // does not wait out every remaining event's retries.
        if let Some(post) = &post {
            if backend_down {
                fail(&mut report, String::new());
            } else if let Err(e) = send(post, line).await {
                backend_down = true;
                fail(&mut report, format!("POST {}: {e}", post.endpoint));
            }
        }
    }
    report
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

async fn send(post: &Post, body: String) -> std::result::Result<(), String> {
    let mut attempt = 0;
    loop {
        let mut request =
            post.client.post(&post.endpoint).header("content-type", "application/json").body(body.clone());
        if let Some(key) = &post.api_key {
            request = request.bearer_auth(key);
        }
        let outcome = match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let transient = status.is_server_error() || status.as_u16() == 429;
                (transient, format!("{status}: {}", text.lines().next().unwrap_or("")))
            }
            Err(e) => (e.is_timeout() || e.is_connect() || e.is_request(), e.to_string()),
        };
        attempt += 1;
        if !outcome.0 || attempt > POST_RETRIES {
            return Err(outcome.1);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200 * 2u64.pow(attempt - 1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outer_parent_is_read_from_the_integrations_convention() {
        let run = "0195f2a4-7d1b-7c3e-9a8b-2f6c1d0e4b5a";
        let outer = Outer::parse(&format!("airflow/dag.task/{run}")).expect("parsed");
        assert_eq!((outer.namespace.as_str(), outer.name.as_str()), ("airflow", "dag.task"));
        assert_eq!(outer.run.to_string(), run);
        // A job name with slashes keeps them; a namespace, a name and a UUID are all needed.
        assert_eq!(Outer::parse(&format!("ns/a/b/{run}")).map(|o| o.name), Some("a/b".to_string()));
        for bad in ["", "ns/job", "ns/job/not-a-uuid", &format!("/job/{run}"), &format!("ns//{run}")] {
            assert_eq!(Outer::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_environment_configures_lineage_when_the_project_does_not() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(LineageConfig::resolve(None, vars(&[])), None);
        let c = LineageConfig::resolve(
            None,
            vars(&[("OPENLINEAGE_URL", "http://marquez:5000"), ("OPENLINEAGE_API_KEY", "a$b")]),
        )
        .expect("configured");
        assert_eq!(
            (c.url.as_deref(), c.endpoint.as_str(), c.api_key.as_deref()),
            (Some("http://marquez:5000"), DEFAULT_ENDPOINT, Some("a$$b"))
        );
        assert_eq!(
            crate::spec::env::expand(c.api_key.as_deref().unwrap_or_default()).as_deref(),
            Ok("a$b"),
            "a key from the environment is taken literally"
        );
        let project = LineageConfig {
            namespace: Some("ns".into()),
            file: Some("/x".into()),
            url: None,
            endpoint: DEFAULT_ENDPOINT.into(),
            api_key: None,
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(
            LineageConfig::resolve(Some(&project), vars(&[("OPENLINEAGE_URL", "http://other")])),
            Some(project.clone())
        );
        assert_eq!(LineageConfig::resolve(Some(&project), vars(&[("OPENLINEAGE_DISABLED", "TRUE")])), None);
    }

    #[test]
    fn facets_name_their_schema_and_types_read_like_delta() {
        let f = facet("SQLJobFacet", json!({ "query": "SELECT 1" }));
        assert_eq!(f["_schemaURL"], "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet");
        assert_eq!(f["_producer"], PRODUCER);
        assert_eq!(sql_type(&DataType::Decimal128(18, 2)), "decimal(18,2)");
        assert_eq!(sql_type(&DataType::Utf8View), "string");
        assert_eq!(
            sql_type(&DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))),
            "timestamp"
        );
    }
}
