//! A whole run: ingest configured source paths, promote every silver table, rebuild gold models
//! in dependency order, and record the run in the run log.
//!
//! ```text
//! sources.paths ─ingest─▶ bronze ─promote─▶ silver + quarantine ─build─▶ gold (DAG order)
//!                                                   │ failure
//!                                                   └─▶ dependent gold models are not run
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::bronze::ingest::{FileInput, IngestOutcome, Input, land_input};
use crate::bronze::landing;
use crate::error::{Error, Result};
use crate::gold::build::{Build, BuildOptions, build};
use crate::observability::lineage::{Lineage, LineageReport};
use crate::observability::runlog;
use crate::project::Project;
use crate::quality::gates::{self, GateResult};
use crate::quality::results;
use crate::runtime::clock::later;
use crate::runtime::events::{Event, EventSink, Events};
use crate::runtime::{Now, lock, ms, new_run_id};
use crate::silver::promote::{PromoteOptions, Promotion, promote, request_rebuild};
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Files decoded in parallel.
    pub threads: usize,
    /// The clock: the run's start time.
    pub now: Now,
    /// Rebuild every selected silver table from bronze (a new version of it and of its dead
    /// letter, with the current contract) and every gold model from scratch (incremental ones
    /// included), even if up to date.
    pub full_refresh: bool,
    /// Silver tables to rebuild from bronze (`medallion rebuild`); the gold models downstream of
    /// a rebuilt table are then rebuilt from scratch.
    pub rebuild: BTreeSet<String>,
    /// Receives each event of the run as it happens.
    pub on_event: Option<EventSink>,
    /// Only these nodes (`bronze/x`, `silver/x`, `gold/x`; see [`crate::orchestration::select`]);
    /// None: every node.
    pub select: Option<BTreeSet<String>>,
    /// Retries of a node after a transient error (storage, Delta commit conflict).
    pub retries: u32,
    /// Wait before the first retry; doubled each time, plus up to half of it at random.
    pub backoff: std::time::Duration,
    /// A logical date: promote only the bronze batches of that date partition, and ingest
    /// nothing new (backfills and date-driven schedulers).
    pub date: Option<chrono::NaiveDate>,
    /// How long to wait for the lake's lock while another writer holds it (zero: fail at once).
    pub lock_wait: std::time::Duration,
    /// Compressed bronze bytes a promotion or a rebuild resolves at once (its memory; see
    /// [`PromoteOptions::slice_bytes`]).
    pub slice_bytes: u64,
    /// Where the run computes: in process, or on a Ballista cluster (bronze files decoded and
    /// validated, gold models' queries run, by its executors).
    pub engine: crate::catalog::Engine,
}

impl Default for RunOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        RunOptions {
            threads,
            now: chrono::Utc::now(),
            full_refresh: false,
            rebuild: BTreeSet::new(),
            on_event: None,
            select: None,
            retries: 2,
            backoff: std::time::Duration::from_millis(500),
            date: None,
            lock_wait: std::time::Duration::ZERO,
            slice_bytes: crate::runtime::memory::slice_bytes(crate::runtime::memory::limit()),
            engine: crate::catalog::Engine::InProcess,
        }
    }
}

/// A node that failed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFailure {
    /// `silver/<table>` or `gold/<model>`.
    pub node: String,
    /// The error.
    pub error: String,
    /// When a quality gate failed: every expectation's result on the candidate data.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expectations: Vec<GateResult>,
}

impl NodeFailure {
    fn new(node: String, error: Error) -> NodeFailure {
        let expectations = gates::results_of(&error);
        NodeFailure { node, error: error.to_string(), expectations }
    }
}

/// Totals over a run's silver promotions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Bronze records read.
    pub read: u64,
    /// Rows inserted or updated in silver.
    pub promoted: u64,
    /// Valid records that lost to newer ones.
    pub superseded: u64,
    /// Records sent to the dead letter.
    pub rejected: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Schema version of this record.
    pub schema_version: u32,
    /// Run id.
    pub run_id: String,
    /// Project name.
    pub project: String,
    /// Start (RFC 3339, UTC).
    pub started_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Inputs ingested from configured paths.
    pub ingested: Vec<IngestOutcome>,
    /// Silver promotions.
    pub silver: Vec<Promotion>,
    /// Gold builds.
    pub gold: Vec<Build>,
    /// Nodes that failed.
    pub failed: Vec<NodeFailure>,
    /// Nodes not run because something upstream failed.
    pub skipped: Vec<String>,
    /// Silver totals.
    pub totals: Totals,
    /// New fields or JSON types sources started carrying (schema drift), noticed in this run.
    pub drift: Vec<crate::bronze::drift::DriftEvent>,
    /// Tables compacted after the run (more files than `compact_above_files`), or purged of their
    /// deletion vectors (deleted rows past `purge_deleted_above`).
    pub compacted: Vec<crate::maintenance::Maintained>,
    /// Tables vacuumed after the run (the project's `vacuum_every` had passed).
    pub vacuumed: Vec<crate::maintenance::Maintained>,
    /// OpenLineage events emitted (when lineage is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<LineageReport>,
    /// medallion version.
    pub tool_version: String,
}

impl RunSummary {
    /// Whether every node succeeded.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Every expectation evaluated in the run, with its node: promoted, built and failed nodes.
    pub fn expectations(&self) -> Vec<(String, GateResult)> {
        let silver = self
            .silver
            .iter()
            .flat_map(|p| p.expectations.iter().map(move |e| (format!("silver/{}", p.table), e.clone())));
        let gold =
            self.gold.iter().flat_map(|b| b.expectations.iter().map(move |e| (format!("gold/{}", b.model), e.clone())));
        let failed = self.failed.iter().flat_map(|f| f.expectations.iter().map(move |e| (f.node.clone(), e.clone())));
        silver.chain(gold).chain(failed).collect()
    }
}

/// Runs the whole project. Errors that stop a node are recorded in the summary; an error
/// returned here means the run could not proceed at all (e.g. the lake is unreadable).
pub async fn run(project: &Project, lake: &Lake, opts: &RunOptions) -> Result<RunSummary> {
    let run_id = new_run_id(None, opts.now);
    let lock = lock::acquire_waiting(lake, &format!("run {run_id}"), opts.lock_wait).await?;
    let summary = run_locked(project, lake, opts, run_id).await;
    lock.release_after(summary).await
}

async fn run_locked(project: &Project, lake: &Lake, opts: &RunOptions, run_id: String) -> Result<RunSummary> {
    let t0 = Instant::now();
    let mut summary = RunSummary {
        schema_version: 1,
        run_id: run_id.clone(),
        project: project.name.clone(),
        started_at: opts.now.to_rfc3339(),
        duration_ms: 0,
        ingested: Vec::new(),
        silver: Vec::new(),
        gold: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        totals: Totals::default(),
        drift: Vec::new(),
        compacted: Vec::new(),
        vacuumed: Vec::new(),
        lineage: None,
        tool_version: crate::VERSION.to_string(),
    };
    // Nodes that failed or were skipped: what depends on them is skipped.
    let mut failed_nodes: BTreeSet<String> = BTreeSet::new();
    let lineage = Lineage::start(project, lake)?;
    let sink = match (&lineage, &opts.on_event) {
        (None, sink) => sink.clone(),
        (Some(l), sink) => {
            let (l, sink) = (Arc::clone(l), sink.clone());
            Some(EventSink(Arc::new(move |e: &Event| {
                if let Some(s) = &sink {
                    (s.0)(e);
                }
                l.on_event(e);
            })))
        }
    };
    let node_done = |node: &str| {
        if let Some(l) = &lineage {
            l.node_done(node);
        }
    };
    let events = Events::new(&run_id, sink);
    events.emit("run_started", None, |_| {});
    // The run's events are appended to the events table at its end: its log is replayed now,
    // beside the nodes' work, and the append then reads only the commits made since (`Opened`).
    let events_table = tokio::spawn({
        let lake = lake.clone();
        async move { Table::open(&lake, Layer::System, crate::runtime::events::TABLE).await.map(|_| ()) }
    });
    let skipped = |node: &str, summary: &mut RunSummary| {
        events.emit("node_skipped", Some(node), |e| {
            e.status = Some("skipped".into());
            e.error = Some("an upstream node failed".into());
        });
        summary.skipped.push(node.to_string());
    };
    let failed = |node: String, error: Error, attempts: u32, summary: &mut RunSummary| {
        let mut f = NodeFailure::new(node, error);
        if attempts > 1 {
            f.error = format!("{} (after {attempts} attempts)", f.error);
        }
        events.emit("node_failed", Some(&f.node), |e| {
            e.attempts = Some(attempts);
            e.status = Some("failed".into());
            e.error = Some(f.error.clone());
            e.expectations_failed = Some(f.expectations.iter().filter(|x| !x.passed()).count() as u64);
        });
        summary.failed.push(f);
    };

    let selected = |node: &str| opts.select.as_ref().is_none_or(|s| s.contains(node));
    for source in project.sources.values() {
        let node = format!("bronze/{}", source.name);
        if !selected(&node) || opts.date.is_some() {
            continue;
        }
        let (outcome, attempts) = attempt(opts, None, &node, || ingest_paths(project, lake, source, opts)).await;
        match outcome {
            Ok(outcomes) => {
                for o in &outcomes {
                    events.emit("node_finished", Some(&node), |e| {
                        e.attempts = Some(attempts);
                        e.status = Some(o.status.label().replace(' ', "_"));
                        e.rows_inserted = Some(o.records);
                        e.rows_rejected = Some(o.corrupt);
                        e.bytes = Some(o.bytes);
                        e.duration_ms = Some(o.duration_ms);
                    });
                }
                summary.ingested.extend(outcomes);
            }
            Err(e) => {
                failed_nodes.insert(node.clone());
                failed(node.clone(), e, attempts, &mut summary);
            }
        }
        node_done(&node);
    }

    // Rebuilds asked for are recorded before any node runs (a kill cannot lose them).
    for t in project.silver.values() {
        if (opts.full_refresh || opts.rebuild.contains(&t.name)) && selected(&format!("silver/{}", t.name)) {
            request_rebuild(lake, t, &run_id).await?;
        }
    }
    let promote_opts = PromoteOptions {
        run_id: run_id.clone(),
        now: opts.now,
        threads: opts.threads,
        date: opts.date.map(|d| d.format("%Y-%m-%d").to_string()),
        rebuild: opts.full_refresh,
        slice_bytes: opts.slice_bytes,
        engine: opts.engine.clone(),
    };
    let rebuild_opts = PromoteOptions { rebuild: true, ..promote_opts.clone() };
    // Silver tables and gold models as one DAG: a node starts once what it reads is done;
    // independent nodes run concurrently, at most `threads` at a time.
    let mut nodes: Vec<Node> = Vec::new();
    for name in &project.silver_order {
        if let Some(t) = project.silver.get(name) {
            let mut deps: Vec<String> = t.depends_on.iter().map(|d| format!("silver/{d}")).collect();
            deps.push(format!("bronze/{}", t.source));
            nodes.push(Node { id: format!("silver/{name}"), name: name.clone(), deps, gold: false });
        }
    }
    for name in &project.gold_order {
        if let Some(m) = project.gold.get(name) {
            let deps = m
                .refs
                .iter()
                .map(|r| if project.gold.contains_key(r) { format!("gold/{r}") } else { format!("silver/{r}") })
                .collect();
            nodes.push(Node { id: format!("gold/{name}"), name: name.clone(), deps, gold: true });
        }
    }
    let build_opts = BuildOptions {
        run_id: run_id.clone(),
        now: opts.now,
        full_refresh: opts.full_refresh,
        engine: opts.engine.clone(),
    };
    let refresh_opts = BuildOptions { full_refresh: true, ..build_opts.clone() };
    // Nodes whose content was replaced in this run (rebuilt silver, gold built from scratch
    // because of it): the gold models reading them are built from scratch too.
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut waiting: Vec<&Node> = Vec::new();
    for n in &nodes {
        if selected(&n.id) {
            waiting.push(n);
        } else {
            done.insert(n.id.clone());
        }
    }
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        // Skip what depends on a failure; start what is ready.
        let mut i = 0;
        while i < waiting.len() {
            let n = waiting[i];
            if n.deps.iter().any(|d| failed_nodes.contains(d)) {
                skipped(&n.id, &mut summary);
                failed_nodes.insert(n.id.clone());
                waiting.remove(i);
                continue;
            }
            let ready = n
                .deps
                .iter()
                .all(|d| done.contains(d) || d.starts_with("bronze/") || !nodes.iter().any(|m| &m.id == d));
            if ready && running.len() < opts.threads.max(1) {
                waiting.remove(i);
                events.emit("node_started", Some(&n.id), |_| {});
                let t = Instant::now();
                let work: Work<'_> = if n.gold {
                    let model = &project.gold[&n.name];
                    let build_opts = if n.deps.iter().any(|d| replaced.contains(d)) {
                        replaced.insert(n.id.clone());
                        &refresh_opts
                    } else {
                        &build_opts
                    };
                    Box::pin(async move {
                        let (r, a) =
                            attempt(opts, model.retries, &n.id, || build(lake, project, model, build_opts)).await;
                        (n, t, Done::Gold(r), a)
                    })
                } else {
                    let table = &project.silver[&n.name];
                    let promote_opts = if opts.rebuild.contains(&n.name) { &rebuild_opts } else { &promote_opts };
                    Box::pin(async move {
                        let (r, a) =
                            attempt(opts, table.retries, &n.id, || promote(lake, project, table, promote_opts)).await;
                        (n, t, Done::Silver(r), a)
                    })
                };
                running.push(work);
                continue;
            }
            i += 1;
        }
        let Some((n, t, outcome, attempts)) = futures::StreamExt::next(&mut running).await else { break };
        let node = n.id.clone();
        let mut ok = true;
        match outcome {
            Done::Silver(Ok(promotions)) => {
                if promotions.is_empty() {
                    events.emit("node_finished", Some(&node), |e| {
                        e.attempts = Some(attempts);
                        e.status = Some("up_to_date".into());
                        e.duration_ms = Some(ms(t));
                    });
                }
                for p in &promotions {
                    events.emit("node_finished", Some(&node), |e| {
                        e.attempts = Some(attempts);
                        e.status = Some("ok".into());
                        (e.rows_read, e.rows_inserted, e.rows_updated, e.rows_deleted) =
                            (Some(p.read), Some(p.inserted), Some(p.updated), Some(p.deleted));
                        (e.rows_superseded, e.rows_rejected, e.bytes) =
                            (Some(p.superseded), Some(p.rejected), Some(p.bytes));
                        e.duration_ms = Some(ms(t));
                        e.stages_ms = Some(p.timings_ms.iter().map(|(k, v)| (k.to_string(), *v)).collect());
                        e.version = p.silver_version;
                        e.expectations_failed = Some(p.expectations.iter().filter(|x| !x.passed()).count() as u64);
                    });
                }
                if promotions.iter().any(|p| p.rebuilt) {
                    replaced.insert(node.clone());
                }
                let held: Vec<String> =
                    promotions.iter().flat_map(|p| p.held_back.iter().map(|h| h.describe())).collect();
                summary.silver.extend(promotions);
                if !held.is_empty() {
                    failed(
                        node.clone(),
                        Error::BatchesHeldBack { node: node.clone(), batches: held.join(", ") },
                        attempts,
                        &mut summary,
                    );
                    ok = false;
                }
            }
            Done::Gold(Ok(b)) => {
                events.emit("node_finished", Some(&node), |e| {
                    e.attempts = Some(attempts);
                    let status =
                        match (b.rebuilt, b.partitions.is_some() || b.added.is_some() || b.maintained.is_some()) {
                            _ if b.waiting => "waiting",
                            (false, _) => "up_to_date",
                            (true, true) => "incremental",
                            (true, false) => "rebuilt",
                        };
                    e.status = Some(status.into());
                    // Rows written: a rebuilt model's rows; an up-to-date one writes none.
                    e.rows_inserted = b.rebuilt.then_some(b.rows);
                    e.rows_rejected = Some(b.dropped);
                    e.duration_ms = Some(b.duration_ms);
                    e.stages_ms = (!b.timings_ms.is_empty())
                        .then(|| b.timings_ms.iter().map(|(k, v)| (k.to_string(), *v)).collect());
                    e.version = b.version;
                    e.expectations_failed = Some(b.expectations.iter().filter(|x| !x.passed()).count() as u64);
                });
                summary.gold.push(b);
            }
            Done::Silver(Err(e)) | Done::Gold(Err(e)) => {
                failed(node.clone(), e, attempts, &mut summary);
                ok = false;
            }
        }
        node_done(&node);
        if ok {
            done.insert(node);
        } else {
            failed_nodes.insert(node);
        }
    }
    for n in waiting {
        // Unreachable with an acyclic DAG; never leave a node unaccounted for.
        skipped(&n.id, &mut summary);
    }
    // Report in DAG order, whatever order the nodes finished in.
    let rank = |id: String| nodes.iter().position(|n| n.id == id).unwrap_or(usize::MAX);
    summary.silver.sort_by_key(|p| (rank(format!("silver/{}", p.table)), p.intent));
    summary.gold.sort_by_key(|b| rank(format!("gold/{}", b.model)));
    summary.failed.sort_by_key(|f| rank(f.node.clone()));
    summary.skipped.sort_by_key(|s| rank(s.clone()));

    for p in &summary.silver {
        summary.drift.extend(p.drift.iter().cloned());
        summary.totals.read += p.read;
        summary.totals.promoted += p.promoted();
        summary.totals.superseded += p.superseded;
        summary.totals.rejected += p.rejected;
    }
    summary.duration_ms = ms(t0);
    events.emit("run_finished", None, |e| {
        e.status = Some(if summary.ok() { "ok" } else { "failed" }.into());
        let t = &summary.totals;
        (e.rows_read, e.rows_superseded, e.rows_rejected) = (Some(t.read), Some(t.superseded), Some(t.rejected));
        e.rows_inserted = Some(t.promoted);
        e.duration_ms = Some(summary.duration_ms);
    });
    if let Some(l) = &lineage {
        summary.lineage = Some(l.finish().await);
    }
    results::record(lake, &run_id, "run", opts.now, &summary.expectations()).await?;
    let tail = Instant::now();
    // A failed open is reported by the append's own.
    let _ = events_table.await;
    events.record(lake).await?;
    tracing::debug!(ms = ms(tail), "events recorded");
    // Maintenance follows successful runs only: a failed run is retried first, on the same files.
    // It is retried after a transient error like a node (each of its steps checks afresh whether
    // it is due, so a retry redoes none that committed).
    if summary.ok() {
        let tail = Instant::now();
        let (done, _) =
            attempt(opts, None, "maintenance", || crate::maintenance::after_run(lake, project, opts.now)).await;
        (summary.compacted, summary.vacuumed) = done?;
        tracing::debug!(ms = ms(tail), "maintenance checked");
    }
    runlog::record(lake, &summary.run_id, &summary).await?;
    Ok(summary)
}

/// Runs `work`, again after a transient error (up to `retries` times, else the run's, with
/// exponential backoff and jitter); returns its last outcome and the attempts made. Every node's
/// work is idempotent (ledger intents, txn versions, exactly-once ingest), so a retry never
/// duplicates.
async fn attempt<T, F, Fut>(opts: &RunOptions, retries: Option<u32>, node: &str, mut work: F) -> (Result<T>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match work().await {
            Err(e) if e.is_transient() && attempts <= retries.unwrap_or(opts.retries) => {
                let base = opts.backoff * 2u32.saturating_pow(attempts - 1);
                let half = u64::try_from(base.as_millis() / 2).unwrap_or(0);
                let jitter = std::time::Duration::from_millis(uuid::Uuid::new_v4().as_u64_pair().0 % (half + 1));
                tracing::warn!(node, attempt = attempts, error = %e, "transient error; retrying");
                tokio::time::sleep(base + jitter).await;
            }
            other => return (other, attempts),
        }
    }
}

/// A silver table or gold model in the run's DAG.
struct Node {
    /// `silver/<t>` or `gold/<m>`.
    id: String,
    name: String,
    /// Node ids it reads.
    deps: Vec<String>,
    gold: bool,
}

/// A node's work under way: the node, when it started, what it gave, the attempts it took.
type Work<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (&'a Node, Instant, Done, u32)> + Send + 'a>>;

/// What a node's work gave.
enum Done {
    Silver(Result<Vec<Promotion>>),
    Gold(Result<Build>),
}

/// Lands what is new for `source` now, outside a run (`ingest --follow`): its landing files
/// (exactly once per content) or its API's new pages. The caller holds the lake lock for an HTTP
/// source (its fetch state has one writer); file sources need none.
pub async fn land(
    project: &Project,
    lake: &Lake,
    source: &crate::project::Source,
    now: Now,
) -> Result<Vec<IngestOutcome>> {
    ingest_paths(project, lake, source, &RunOptions { now, ..Default::default() }).await
}

/// Ingests every file matching the source's configured paths (exactly once per content), or
/// fetches the new pages of its API.
async fn ingest_paths(
    project: &Project,
    lake: &Lake,
    source: &crate::project::Source,
    opts: &RunOptions,
) -> Result<Vec<IngestOutcome>> {
    crate::runtime::faults::check(&format!("bronze/{}", source.name), "ingest")?;
    if let Some(http) = &source.http {
        return crate::bronze::http::fetch(lake, &source.name, http, opts.now).await;
    }
    let (root, name) = (project.root.clone(), source.name.clone());
    let (patterns, follow) = (source.paths.clone(), source.follow_symlinks);
    let entries = tokio::task::spawn_blocking(move || landing::scan(&root, &name, &patterns, follow))
        .await
        .map_err(|e| Error::Internal(format!("listing landing files: {e}")))??;
    // Files land `threads` at a time (converting them is CPU work), each to its end even when
    // another fails; outcomes keep the files' order. Files given together get strictly increasing
    // ingest times in their (sorted) order, so duplicates across them resolve by that order, not by
    // which landing finished first: a file with the same bytes as an earlier one lands after it
    // (then finds its content landed), never beside it.
    use futures::StreamExt as _;
    let threads = opts.threads.max(1);
    let prepared: Vec<Result<Landing>> = futures::stream::iter(entries)
        .map(|entry| prepare_landing(lake, source, entry))
        .buffered(threads)
        .collect()
        .await;
    let prepared = prepared.into_iter().collect::<Result<Vec<Landing>>>()?;
    let mut outcomes: Vec<Option<Result<IngestOutcome>>> = Vec::new();
    let mut new: Vec<(usize, NewFile)> = Vec::new();
    for (i, landing) in prepared.into_iter().enumerate() {
        match landing {
            Landing::Done(outcome) => outcomes.push(Some(Ok(outcome))),
            Landing::New(file) => {
                new.push((i, file));
                outcomes.push(None);
            }
        }
    }
    let inputs: Vec<Arc<dyn Input>> = new.iter().map(|(_, f)| Arc::clone(&f.input) as Arc<dyn Input>).collect();
    let landed = landing::in_waves(&inputs, threads, |k| {
        let (i, file) = &new[k];
        land_new(lake, source, file, later(opts.now, *i))
    })
    .await;
    for ((i, _), outcome) in new.iter().zip(landed) {
        outcomes[*i] = Some(outcome);
    }
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::Internal("landing outcome missing".into())))).collect()
}

/// A landing file: answered already (skipped, unchanged) or new content to land.
enum Landing {
    Done(IngestOutcome),
    New(NewFile),
}

/// A landing file with content not yet in bronze.
struct NewFile {
    shown: String,
    /// Its whole or new content.
    input: Arc<FileInput>,
    /// The whole file as hashed, when only its new content lands (else its landing hashes it).
    whole: Option<landing::Seen>,
    note: Option<String>,
}

/// What landing `entry` takes: nothing (skipped with why, or its content unchanged since it
/// landed), or its whole or new content.
async fn prepare_landing(lake: &Lake, source: &crate::project::Source, entry: landing::Entry) -> Result<Landing> {
    let (path, shown) = match entry {
        landing::Entry::Skipped(skipped) => return Ok(Landing::Done(skipped)),
        landing::Entry::Read { path, shown } => (path, shown),
    };
    if let Some((batch_id, batch)) = landing::unchanged(lake, &source.name, &shown, &path).await? {
        return Ok(Landing::Done(IngestOutcome::already_ingested(&shown, batch_id, batch, 0, 0)));
    }
    let (input, note) = match landing::new_content(lake, &source.name, &source.read, &shown, &path).await? {
        landing::NewContent::Whole => (FileInput::new(path), None),
        landing::NewContent::Appended { start, head, note } => (FileInput::grown(path, start, head), Some(note)),
        landing::NewContent::Refused(why) => return Ok(Landing::Done(IngestOutcome::skipped(&shown, why))),
    };
    let input = Arc::new(input);
    let whole = if input.local_file().is_some() {
        None
    } else {
        let opened = Arc::clone(&input);
        // Opened first: a change from here on, during the hash too, is one its landing refuses.
        match tokio::task::spawn_blocking(move || opened.open().and_then(|_| landing::Seen::of_file(&opened.path)))
            .await
            .map_err(|e| Error::Internal(format!("hashing {shown}: {e}")))?
        {
            Ok(seen) => Some(seen),
            Err(e) => return Ok(Landing::Done(IngestOutcome::skipped(&shown, format!("cannot be read: {e}")))),
        }
    };
    Ok(Landing::New(NewFile { shown, input, whole, note }))
}

/// Lands a file's new content as a batch ingested at `now`, and remembers what landed: the whole
/// file's bytes, with its stamp when it was opened (unchanged through the landing, or nothing
/// landed).
async fn land_new(lake: &Lake, source: &crate::project::Source, file: &NewFile, now: Now) -> Result<IngestOutcome> {
    let NewFile { shown, input, whole, note } = file;
    let landed = land_input(lake, &source.name, &source.read, shown, Arc::clone(input) as Arc<dyn Input>, now).await;
    let (mut outcome, raw) = match landed {
        Ok(landed) => landed,
        // Input that cannot be landed (not gzip after all, a gzip bomb, changed meanwhile)
        // is skipped with why; the other files still land.
        Err(Error::Ingest { message, .. }) => return Ok(IngestOutcome::skipped(shown, message)),
        Err(e) => return Err(e),
    };
    let seen = match whole.clone().or_else(|| raw.map(landing::Seen::from)) {
        Some(seen) => seen,
        // A gzip stream unreadable part-way: its raw bytes were not all read.
        None => {
            let file = input.path.clone();
            tokio::task::spawn_blocking(move || landing::Seen::of_file(&file))
                .await
                .map_err(|e| Error::Internal(format!("hashing {shown}: {e}")))?
                .map_err(|source| Error::Io { path: input.path.clone(), source })?
        }
    };
    landing::remember(lake, &source.name, shown, seen, input.stamp(), (&outcome.batch_id, &outcome.path)).await?;
    if let Some(note) = note {
        outcome.note = Some(outcome.note.map_or_else(|| note.clone(), |damage| format!("{note}; {damage}")));
    }
    Ok(outcome)
}
