//! Promoting pending bronze batches of a source into a silver table, exactly once.
//!
//! Accounting is exact per promotion: `read = inserted + updated + superseded + rejected`, where
//! superseded counts valid records that lost to a newer one (in the same run, or already in
//! silver). A mismatch fails the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::json;

use super::contract::Contract;
use super::dedup::{Seen, first_in_window, latest_unless, time_values};
use super::evolve::{self, Change, Verdict};
use super::history::{self, History, Rebuilt};
use super::publish::{Publish, publish};
use super::rejects::{DeadLetter, Rejects};
use super::slices::Slicer;
use super::table::SilverTable;
use super::validate::{Origin, validate};
use crate::bronze::batches::{self, BatchFile};
use crate::bronze::csv_batch::{CsvBatch, CsvSource};
use crate::bronze::decode::{BatchFormat, Kind, for_each_chunk};
use crate::bronze::drift::{self, DriftEvent, Observed};
use crate::catalog::{self, Registry};
use crate::error::{Error, Result};
use crate::quality::audit::{Stage, audit};
use crate::quality::gates::{GateResult, enforce};
use crate::quality::quarantine::{self, Reason, Rejected};
use crate::runtime::ledger::{self, Intent};
use crate::runtime::{NodeStage, Now, Timings, ms};
use crate::spec::{Action, RejectedFractionSpec};
use crate::storage::delta::{KeyScan, Table, Txn};
use crate::storage::{Lake, Layer};

/// Rejected records shown for a held-back batch.
const SAMPLES: usize = 3;

/// Reasons kept in [`Promotion::top_reasons`].
pub const TOP_REASONS: usize = 3;

/// The `n` most frequent reasons of `rejected` as `rule (column)` with their counts (a record
/// with several reasons counts for each), most frequent first, then by name.
pub fn top_reasons(rejected: &[Rejected], n: usize) -> Vec<(String, u64)> {
    let mut counts = HashMap::new();
    count_reasons(&mut counts, rejected);
    most_frequent(counts, n)
}

/// Adds the reasons of `rejected` to `counts` (keyed `rule (column)`).
pub(crate) fn count_reasons(counts: &mut HashMap<String, u64>, rejected: &[Rejected]) {
    for r in rejected {
        for reason in &r.reasons {
            let key = match &reason.column {
                Some(c) => format!("{} ({c})", reason.rule),
                None => reason.rule.clone(),
            };
            *counts.entry(key).or_default() += 1;
        }
    }
}

/// The `n` largest of `counts`, most frequent first, then by name.
pub(crate) fn most_frequent(counts: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(n);
    counts
}

/// Rows per batch written to Delta.
pub(crate) const WRITE_BATCH_ROWS: usize = 131_072;

/// What one promotion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Promotion {
    /// Silver table.
    pub table: String,
    /// Ledger number (txn version) of the promotion.
    pub intent: i64,
    /// Whether it resumed an interrupted promotion.
    pub resumed: bool,
    /// Batches covered.
    pub batches: usize,
    /// Bronze records read (rows and unreadable lines).
    pub read: u64,
    /// Bronze bytes read (compressed).
    pub bytes: u64,
    /// New keys written.
    pub inserted: u64,
    /// Existing keys replaced by a newer record (SCD 2: versions closed by a delete).
    pub updated: u64,
    /// Keys removed by a delete record (SCD 1 with `delete_when`).
    pub deleted: u64,
    /// Valid records that lost to a newer record.
    pub superseded: u64,
    /// Records sent to the dead letter.
    pub rejected: u64,
    /// Silver version after the commit.
    pub silver_version: Option<i64>,
    /// Quarantine version after this promotion's commit (if any rejects).
    pub quarantine_version: Option<i64>,
    /// Expectation results over the promotion's candidate rows.
    pub expectations: Vec<GateResult>,
    /// Batches a rejection-rate gate (`fail`) kept out of this promotion: they stay pending.
    pub held_back: Vec<HeldBack>,
    /// New fields or JSON types the source's records started carrying.
    pub drift: Vec<DriftEvent>,
    /// Stage timings in milliseconds.
    pub timings_ms: Timings,
    /// Whether it rebuilt the table from every bronze batch (replacing it and its dead letter).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rebuilt: bool,
    /// Slices of a rebuild or of a promotion larger than one: parts of its records (by key)
    /// resolved apart.
    #[serde(skip_serializing_if = "is_zero")]
    pub slices: usize,
    /// The most frequent reasons of this promotion's rejects (`rule (column)`, records), at most
    /// [`TOP_REASONS`], most frequent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_reasons: Vec<(String, u64)>,
    /// How the contract differed from the published table (taken in place, or why it rebuilt).
    /// A promotion of no batch that only took a contract change in reports it too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contract_changes: Vec<String>,
    /// Columns taken in place: rows promoted before hold null in them until a rebuild.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added_columns: Vec<String>,
    /// When a rule change let in relaxes the rules (a check dropped, a column made optional, a
    /// null marker added): the records waiting in the dead letter, some of which may pass now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_in_dead_letter: Option<u64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Promotion {
    /// Records applied to silver (inserted + updated + deleted).
    pub fn promoted(&self) -> u64 {
        self.inserted + self.updated + self.deleted
    }
}

/// A batch whose rejected share exceeded `max_rejected_fraction.per_batch`.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBack {
    /// Bronze file.
    pub path: String,
    /// Batch id.
    pub batch_id: String,
    /// Records read.
    pub read: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Its most frequent reasons (`rule (column)`, records).
    pub top_reasons: Vec<(String, u64)>,
    /// A few of its rejected records, as they came.
    pub samples: Vec<String>,
}

impl HeldBack {
    /// `file`, of which `read` records were read and `rejected` rejected.
    pub(crate) fn new(file: &BatchFile, read: u64, rejected: &[Rejected]) -> HeldBack {
        HeldBack {
            path: file.path.clone(),
            batch_id: file.batch_id.clone(),
            read,
            rejected: rejected.len() as u64,
            top_reasons: top_reasons(rejected, TOP_REASONS),
            samples: rejected.iter().take(SAMPLES).map(|r| r.raw.clone()).collect(),
        }
    }

    /// `<batch> (3.00% rejected: 30 of 1000)`.
    pub fn describe(&self) -> String {
        describe_batch(&self.batch_id, self.read, self.rejected)
    }
}

/// `<batch> (3.00% rejected: 30 of 1000)`.
fn describe_batch(batch_id: &str, read: u64, rejected: u64) -> String {
    format!("{batch_id} ({:.2}% rejected: {rejected} of {read})", 100.0 * fraction(rejected, read))
}

pub(crate) fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// Settings of a promotion.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// Run id, recorded in intents and the dead letter.
    pub run_id: String,
    /// The run's clock: failure time of dead-letter rows, `now` of freshness expectations.
    pub now: Now,
    /// Files decoded in parallel, and slices resolved at once as far as the memory limit allows.
    pub threads: usize,
    /// Only pending batches of this bronze date partition (`YYYY-MM-DD`); None: all.
    pub date: Option<String>,
    /// Rebuild the table from every bronze batch of its source with the current contract: one
    /// new version of the table and of its dead letter (`medallion rebuild`, `run --full-refresh`).
    pub rebuild: bool,
    /// Compressed bronze bytes a promotion or a rebuild resolves at once per thread, which bounds
    /// its memory: past this size its records are split by key into slices of about this size,
    /// spilled to local scratch files, and resolved a slice a thread as far as the memory limit
    /// pays for them (`silver::backlog`, `silver::rebuild`). A run derives it from its memory
    /// limit ([`crate::runtime::memory::slice_bytes`]: 16 MiB, about 800k of the benchmark's
    /// orders, unless the limit is low).
    pub slice_bytes: u64,
    /// Where bronze files are decoded and validated: in process, or by a cluster's executors
    /// (one task per file; see `silver::distributed`, cargo feature `cluster`).
    pub engine: crate::catalog::Engine,
}

/// Promotes every pending batch of `table`'s source (resuming an interrupted promotion first).
/// When the contract no longer matches the table, its `on_contract_change` policy decides
/// ([`evolve::reconcile`]): columns added in place, a rebuild, or a refusal.
#[tracing::instrument(skip_all, fields(table = %table.name))]
pub async fn promote(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    opts: &PromoteOptions,
) -> Result<Vec<Promotion>> {
    let app = ledger::app_id(&table.name);
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let mut committed = silver.txn_version(&app).await?.unwrap_or(0);
    let ledger::Promoted { last, open, last_rebuild, mut done } =
        ledger::promoted(lake, &table.name, committed, silver.id().as_deref()).await?;
    if last > committed + 1 {
        return Err(Error::InconsistentState {
            table: format!("silver/{}", table.name),
            message: format!(
                "the ledger records {last} promotions but the table has only {committed} (was the table deleted or restored by hand?)"
            ),
            hint: format!(
                "to rebuild silver/{t} from bronze, delete silver/{t}, quarantine/{t} and _medallion/ledger/silver/{t} together",
                t = table.name
            ),
        });
    }
    // A rebuild asked for by a run that was killed before it recorded the rebuild's intent.
    let requested = match ledger::rebuild_request(lake, &table.name).await? {
        Some(r) if r.after < committed && last_rebuild > r.after => {
            ledger::clear_rebuild_request(lake, &table.name).await?;
            false
        }
        Some(_) => true,
        None => false,
    };
    // An interrupted rebuild is finished as it was started, before the contract is compared.
    let (silver, verdict) = if open.as_ref().is_some_and(|i| i.rebuild) {
        (silver, Verdict::Unchanged)
    } else {
        evolve::reconcile(table, silver, opts.rebuild || requested, &opts.run_id).await?
    };
    let mut rebuild = opts.rebuild || requested || matches!(verdict, Verdict::Rebuild(_));
    let changes: Vec<String> = match &verdict {
        Verdict::Evolve(c) | Verdict::Rebuild(c) | Verdict::Refuse(c) => c.iter().map(Change::describe).collect(),
        Verdict::Unchanged => Vec::new(),
    };
    let added_columns: Vec<String> = match &verdict {
        Verdict::Evolve(c) => evolve::added_in_place(c).into_iter().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let waiting = match &verdict {
        Verdict::Evolve(c) if c.iter().any(Change::relaxes) => {
            Some(super::dead_letter::outstanding(lake, &table.name).await?).filter(|n| *n > 0)
        }
        _ => None,
    };
    // Batches already promoted (`done`): those of committed intents since the last rebuild.
    let mut out = Vec::new();
    if let Some(open) = open {
        tracing::info!(intent = open.version, rebuild = open.rebuild, "resuming an interrupted promotion");
        out.push(run_intent(lake, tables, table, open.clone(), true, opts).await?);
        if open.rebuild {
            done.clear();
            rebuild = false;
        }
        done.extend(open.batches.iter().map(|b| b.path.clone()));
        committed += 1;
    }
    let listed = batches::list(lake, &table.source).await?;
    let pending: Vec<BatchFile> = if rebuild {
        listed
    } else {
        listed
            .into_iter()
            .filter(|b| !done.contains(&b.path) && opts.date.as_deref().is_none_or(|d| b.date() == Some(d)))
            .collect()
    };
    if pending.is_empty() && !rebuild {
        match out.first_mut() {
            Some(first) => {
                (first.contract_changes, first.added_columns, first.waiting_in_dead_letter) =
                    (changes, added_columns, waiting)
            }
            None if let Verdict::Evolve(c) = &verdict => {
                // Added columns were committed with the contract; rules alone need a commit of it.
                let silver = if added_columns.is_empty() {
                    evolve::record(table, silver, c, &opts.run_id).await?
                } else {
                    silver
                };
                // Nothing promoted, but the table changed: the run reports it.
                out.push(Promotion {
                    table: table.name.clone(),
                    intent: committed,
                    silver_version: silver.version(),
                    contract_changes: changes,
                    added_columns,
                    waiting_in_dead_letter: waiting,
                    ..Default::default()
                });
            }
            None => {}
        }
        return Ok(out);
    }
    let pending = batches::order_by_ingestion(lake, pending).await?;
    let intent = Intent { version: committed + 1, run_id: opts.run_id.clone(), batches: pending, rebuild };
    let mut p = run_intent(lake, tables, table, intent, false, opts).await?;
    (p.contract_changes, p.added_columns, p.waiting_in_dead_letter) = (changes, added_columns, waiting);
    out.push(p);
    if out.iter().any(|p| p.rebuilt) {
        ledger::clear_rebuild_request(lake, &table.name).await?;
    }
    Ok(out)
}

/// Records that `table` is to be rebuilt, before a run starts any node: a run killed before the
/// rebuild's intent is recorded still rebuilds it at the next `run` or `rebuild`.
pub async fn request_rebuild(lake: &Lake, table: &SilverTable, run_id: &str) -> Result<()> {
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let after = silver.txn_version(&ledger::app_id(&table.name)).await?.unwrap_or(0);
    ledger::request_rebuild(lake, &table.name, &ledger::RebuildRequest { after, run_id: run_id.to_string() }).await
}

/// What decoding and validating one file gave.
pub(crate) struct FileResult {
    /// Valid rows (none when they were spilled as they came: see `sliced`).
    pub valid: Vec<RecordBatch>,
    /// How many rows were valid.
    pub valid_rows: u64,
    /// Read with a [`Slicer`]: the scratch file of each slice the valid rows went to.
    pub sliced: Vec<(usize, std::path::PathBuf)>,
    /// The input line of each valid row.
    pub valid_lines: Vec<u64>,
    /// Rejected records.
    pub rejected: Vec<Rejected>,
    /// Records read (rows and unreadable lines).
    pub read: u64,
    /// Per row-level expectation: rows checked, rows failing.
    pub gate_counts: Vec<(u64, u64)>,
    /// Fields the records carried (contract columns and others), with their kinds.
    pub observed: Observed,
    /// Its valid rows are already the latest per key across every file of its read (the
    /// cluster's executors deduplicated them; `valid_rows` still counts what they dropped).
    pub latest: bool,
    /// The executors wrote the latest records as files of the table instead of returning them:
    /// their add actions (all in the first result of a read, none in the others).
    pub written: Option<Vec<String>>,
}

impl FileResult {
    /// Nothing read yet, for a contract with `gates` row-level expectations.
    pub(crate) fn empty(gates: usize) -> FileResult {
        FileResult {
            valid: Vec::new(),
            valid_rows: 0,
            sliced: Vec::new(),
            valid_lines: Vec::new(),
            rejected: Vec::new(),
            read: 0,
            gate_counts: vec![(0, 0); gates],
            observed: Observed::new(),
            latest: false,
            written: None,
        }
    }
}

/// Promotes the batches of `intent`. A new intent is recorded in the ledger once its batches are
/// validated (after a rejection-rate gate may have held some back) and before any commit; a
/// resumed one was recorded by the run it interrupted.
async fn run_intent(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    mut intent: Intent,
    resumed: bool,
    opts: &PromoteOptions,
) -> Result<Promotion> {
    // Large promotions run in slices: into a simple table by `backlog`, a first load of any other
    // table as a rebuild of nothing does.
    // On a cluster whose executors write the latest records, a promotion or a rebuild of any size
    // is one read: its rows never come here, so there is nothing to slice.
    let executors_write = writes_winners(table, opts)
        && !(intent.rebuild && Table::open(lake, Layer::Silver, &table.name).await?.partitioned()?);
    if intent.rebuild && !executors_write {
        return super::rebuild::rebuild(lake, tables, table, intent, resumed, opts).await;
    }
    if !executors_write && super::backlog::applies(lake, table, &intent, opts).await? {
        return super::backlog::promote(lake, table, intent, resumed, opts).await;
    }
    if !executors_write && super::rebuild::first_load_in_slices(lake, table, &intent, opts).await? {
        return super::rebuild::rebuild(lake, tables, table, intent, resumed, opts).await;
    }
    let mut p = Promotion {
        table: table.name.clone(),
        intent: intent.version,
        resumed,
        batches: intent.batches.len(),
        rebuilt: intent.rebuild,
        ..Default::default()
    };
    let app = ledger::app_id(&table.name);
    let txn = Txn { app_id: app.clone(), version: intent.version };
    let t0 = Instant::now();

    let mut results: Vec<FileResult> = read_batches(lake, table, &intent.batches, opts, None).try_collect().await?;
    p.timings_ms.insert(NodeStage::ReadValidate, ms(t0));
    // The files the executors wrote, when they did: committed below, or deleted if the promotion
    // stops before its merge.
    let written: Option<Vec<String>> = match !results.is_empty() && results.iter().all(|r| r.written.is_some()) {
        true => Some(results.iter_mut().filter_map(|r| r.written.take()).flatten().collect()),
        false => None,
    };
    // Their rows, from their statistics.
    let written_rows = written.as_deref().map(crate::storage::delta::rows_in).transpose()?.unwrap_or(0);
    let mut merging = false;
    let promoted = async {
        let node = format!("silver/{}", table.name);
        let mut rate_results = Vec::new();
        if let Some(bounds) = &table.max_rejected_fraction {
            if let Some(mut r) = per_batch_gate(bounds, &intent.batches, &counts(&results)) {
                if !r.passed() && bounds.action == Action::Fail && !resumed {
                    // Hold the offending batches back: they stay pending for the next run.
                    let limit = bounds.per_batch.unwrap_or(1.0);
                    let mut kept = Vec::new();
                    for (file, res) in intent.batches.drain(..).zip(results.drain(..)) {
                        let rejected = res.rejected.len() as u64;
                        if fraction(rejected, res.read) > limit {
                            p.held_back.push(HeldBack::new(&file, res.read, &res.rejected));
                        } else {
                            kept.push((file, res));
                        }
                    }
                    (intent.batches, results) = kept.into_iter().unzip();
                    p.batches = intent.batches.len();
                    r.settle();
                    rate_results.push(r);
                } else {
                    // Resumed intents keep their batches: the gate then stops the whole promotion.
                    p.expectations.push(r);
                }
            }
            if intent.batches.is_empty() {
                p.expectations.extend(rate_results);
                return Ok(p);
            }
            // Over what would be published (held-back batches excluded).
            p.expectations.extend(per_run_gate(bounds, &counts(&results)));
        }

        p.bytes = intent.batches.iter().map(|b| b.size).sum();
        let mut valid = Vec::new();
        let mut rejected = Vec::new();
        let mut observed = Vec::with_capacity(results.len());
        let mut row_results: Vec<GateResult> = table.contract.gates.iter().map(|g| g.result()).collect();
        // Valid records: those that came back, and (from a cluster whose executors kept only the
        // latest per key) those superseded there.
        let mut valid_rows = 0;
        let latest = results.iter().all(|r| r.latest);
        for r in results {
            observed.push(r.observed);
            p.read += r.read;
            valid_rows += r.valid_rows;
            valid.extend(r.valid);
            rejected.extend(r.rejected);
            for (res, (checked, failing)) in row_results.iter_mut().zip(r.gate_counts) {
                res.rows_checked += checked;
                res.failing_rows += failing;
            }
        }
        row_results.append(&mut p.expectations);
        p.expectations = row_results;
        // Write-audit-publish: a failed `fail` gate stops here, before any commit. The intent stays
        // open, so the next run retries exactly these batches (after the data or the rule is fixed).
        enforce(&node, &mut p.expectations)?;
        let contract_rejected = rejected.len() as u64;
        if valid_rows + contract_rejected != p.read {
            p.rejected = contract_rejected;
            return Err(accounting(&p));
        }

        let file_of = |batch_id: &str| {
            intent.batches.iter().find(|b| b.batch_id == batch_id).map(|b| b.path.clone()).unwrap_or_default()
        };
        // Set-level expectations audit the candidate: a rebuild's is the executors' files alone,
        // queried where they lie; a merge's is the table with them merged, read back for it.
        if let Some(adds) = written.as_ref().filter(|_| !table.checks.is_empty()) {
            let t = Instant::now();
            let silver = Table::open(lake, Layer::Silver, &table.name).await?;
            if intent.rebuild {
                let audited = audit_written(lake, tables, table, &silver, (adds, written_rows), opts).await?;
                p.expectations.extend(audited);
                enforce(&node, &mut p.expectations)?;
            } else {
                valid = silver.read_written(adds, &table.contract.schema).await?;
            }
            p.timings_ms.insert(NodeStage::Audit, ms(t));
        }
        // What to publish: merged rows (SCD 1) or the rebuilt history (SCD 2); the executors'
        // files (of a table without set-level `drop` expectations).
        let (plan, dropped) = if written.is_some() && (intent.rebuild || table.checks.is_empty()) {
            (None, Vec::new())
        } else {
            let (plan, _, dropped) =
                plan(lake, tables, table, (valid, latest), opts.now, file_of, &mut p.expectations, &mut p.timings_ms)
                    .await?;
            (Some(plan), dropped)
        };
        let table_dropped = dropped.len() as u64;
        rejected.extend(dropped);
        p.expectations.extend(rate_results);
        ledger::open(lake, &table.name, &intent, resumed).await?;
        p.rejected = rejected.len() as u64;
        p.top_reasons = top_reasons(&rejected, TOP_REASONS);

        // The dead letter lands before silver's commit: a resumed intent skips a dead letter
        // its rejects already landed in, so it must never follow the merge. It is written while
        // the merge reads and writes; the merge's commit waits at the gate.
        let meta = commit_meta(&opts.run_id, &intent, table);
        let rejects =
            Rejects::Records { rows: rejected, failed_at: opts.now.timestamp_micros(), run_id: opts.run_id.clone() };
        let letter = DeadLetter::open(lake, (&table.name, &node), rejects, intent.rebuild, (txn.clone(), meta.clone()));
        let (dead_letter, gate) = letter.await?.spawn();
        let t3 = Instant::now();
        let published = match (&written, plan) {
            (Some(adds), _) => match gate.pass().await {
                Ok(()) => {
                    merging = true;
                    let written = (adds.as_slice(), written_rows);
                    super::publish::publish_written(lake, table, written, intent.rebuild, txn, meta)
                        .await
                        .map(|merged| (written_rows, super::publish::Published::merged(merged)))
                }
                Err(e) => Err(e),
            },
            (None, Some(plan)) => {
                let rows = plan.rows();
                publish(lake, table, plan, (txn, meta), gate).await.map(|published| (rows, published))
            }
            (None, None) => Err(Error::Internal(format!("{node}: nothing to publish"))),
        };
        // The dead letter's own error, when it failed (the gate then stopped the merge).
        dead_letter.landed(&mut p).await?;
        let (unique, published) = published?;
        (p.inserted, p.updated, p.deleted, p.silver_version) =
            (published.inserted, published.updated, published.deleted, published.version);
        p.superseded = match published.superseded {
            Some(n) => n,
            None => valid_rows.saturating_sub(table_dropped).saturating_sub(p.promoted()),
        };
        if published.superseded.is_none() && p.promoted() > unique {
            return Err(accounting(&p));
        }
        p.timings_ms.insert(NodeStage::Merge, ms(t3));
        p.drift = drift::observe(lake, &table.source, &opts.run_id, &intent.batches, &observed).await?;
        if p.read != p.promoted() + p.superseded + p.rejected {
            return Err(accounting(&p));
        }
        Ok::<_, Error>(p)
    }
    .await;
    if let (Err(_), Some(adds), false) = (&promoted, &written, merging) {
        let silver = Table::open(lake, Layer::Silver, &table.name).await?;
        if let Err(e) = silver.discard_files(adds).await {
            tracing::warn!(table = %table.name, "files the executors wrote, left for vacuum: {e}");
        }
    }
    promoted
}

/// The set- and table-level expectations of `table` (none of them `drop`) over the files a
/// cluster's executors wrote for its rebuild (`adds`, of `rows` rows): queried on the cluster,
/// `this` being those files, one row per key by construction.
async fn audit_written(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    silver: &Table,
    (adds, rows): (&[String], u64),
    opts: &PromoteOptions,
) -> Result<Vec<GateResult>> {
    use crate::quality::checks::{MergeFacts, THIS, TableCheck, evaluate};
    let ctx = catalog::session_on(lake, tables, &opts.engine).await?;
    catalog::register_written(&ctx, THIS, silver, &table.contract.schema, adds)?;
    let checks: Vec<&TableCheck> = table.checks.iter().collect();
    let facts = MergeFacts { keys: &table.keys, rows: Some(rows), winners: THIS, newest: None, winners_newest: &[] };
    evaluate(&ctx, &checks, opts.now, Some(&facts)).await
}

/// Whether a cluster's executors write this promotion's latest records (see
/// `distributed::writes_winners`).
fn writes_winners(table: &SilverTable, opts: &PromoteOptions) -> bool {
    #[cfg(feature = "cluster")]
    if matches!(opts.engine, crate::catalog::Engine::Cluster(_)) {
        return super::distributed::writes_winners(table);
    }
    let _ = (table, opts);
    false
}

/// Prepares what `valid` records change in `table` (with whether they already are the latest per
/// key): SCD 2 rebuilds the history, SCD 1 dedups (latest per key) and audits the merge
/// candidate. Also returns the rows `drop` expectations removed, as rows and as dead-letter
/// records.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    (valid, latest): (Vec<RecordBatch>, bool),
    now: Now,
    file_of: impl Fn(&str) -> String,
    expectations: &mut Vec<GateResult>,
    timings: &mut Timings,
) -> Result<(Publish, Vec<RecordBatch>, Vec<Rejected>)> {
    match &table.history {
        History::Versions { track, delete } => {
            let t = Instant::now();
            let (rows, counts) =
                rebuild_versions(lake, tables, table, track, delete.as_ref(), &valid, now, expectations).await?;
            timings.insert(NodeStage::History, ms(t));
            Ok((Publish::Replace { rows, counts }, Vec::new(), Vec::new()))
        }
        History::Latest { delete } => {
            let (rows, removed, dropped, scanned) =
                dedup_and_audit(lake, tables, table, (valid, latest), now, file_of, expectations, timings).await?;
            Ok((Publish::Merge { rows, delete: delete.clone(), scanned }, removed, dropped))
        }
        History::Events { .. } => {
            let (rows, removed, dropped, _) =
                dedup_and_audit(lake, tables, table, (valid, latest), now, file_of, expectations, timings).await?;
            Ok((Publish::Append { rows }, removed, dropped))
        }
    }
}

/// The published (key, time) pairs of an event table that a window dedup of `valid` needs: those
/// within `window` of the new rows' time range (file statistics prune the rest, so the cost
/// follows the batch and the window, not the table).
async fn published_events(
    lake: &Lake,
    table: &SilverTable,
    valid: &[RecordBatch],
    time: usize,
    window: i64,
) -> Result<Seen> {
    use datafusion::prelude::{col, lit};
    use datafusion::scalar::ScalarValue;
    let mut seen = Seen::default();
    let mut range: Option<(i64, i64)> = None;
    for b in valid {
        for t in time_values(b.column(time))?.into_iter().flatten() {
            range = Some(range.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
        }
    }
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let Some((lo, hi)) = range else { return Ok(seen) };
    if !silver.exists() {
        return Ok(seen);
    }
    let schema = table.contract.schema.clone();
    let field = schema.field(time);
    let (lo, hi) = (lo.saturating_sub(window), hi.saturating_add(window));
    let bound = |v: i64| match field.data_type() {
        datafusion::arrow::datatypes::DataType::Timestamp(_, tz) => {
            ScalarValue::TimestampMicrosecond(Some(v), tz.clone())
        }
        datafusion::arrow::datatypes::DataType::Date32 => {
            ScalarValue::Date32(i32::try_from(v.div_euclid(86_400_000_000)).ok())
        }
        _ => ScalarValue::Int64(Some(v)),
    };
    let context = format!("reading the event times of silver/{}", table.name);
    let ctx = SessionContext::new();
    let t = col(datafusion::common::Column::new_unqualified(field.name()));
    let mut columns: Vec<datafusion::prelude::Expr> =
        table.keys.iter().map(|k| col(datafusion::common::Column::new_unqualified(k))).collect();
    columns.push(t.clone());
    let rows = ctx
        .read_table(silver.provider(&ctx).await?)
        .and_then(|df| df.filter(t.between(lit(bound(lo)), lit(bound(hi)))))
        .and_then(|df| df.select(columns))
        .map_err(|e| Error::sql(&context, e))?
        .collect()
        .await
        .map_err(|e| Error::sql(&context, e))?;
    seen.remember(&schema, &table.keys, &rows)?;
    Ok(seen)
}

/// SCD 2: the table's history rebuilt with `valid` merged in, audited by the table's set- and
/// table-level expectations (results appended; a failed `fail` one is an error).
#[allow(clippy::too_many_arguments)]
async fn rebuild_versions(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    track: &[usize],
    delete: Option<&Arc<dyn PhysicalExpr>>,
    valid: &[RecordBatch],
    now: Now,
    expectations: &mut Vec<GateResult>,
) -> Result<(Vec<RecordBatch>, Rebuilt)> {
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let published = if silver.exists() {
        let ctx = SessionContext::new();
        let df = ctx
            .read_table(silver.provider(&ctx).await?)
            .map_err(|e| Error::sql(format!("reading silver/{}", table.name), e))?;
        df.collect().await.map_err(|e| Error::sql(format!("reading silver/{}", table.name), e))?
    } else {
        Vec::new()
    };
    let (rows, counts) = history::rebuild(
        &table.contract,
        &table.schema,
        &table.keys,
        &table.order_by,
        track,
        delete,
        &published,
        valid,
    )?;
    if table.checks.is_empty() {
        return Ok((rows, counts));
    }
    let ctx = catalog::session_for(lake, tables, &table.reads()).await?;
    let audited = audit(&ctx, &table.checks, &table.schema, rows, Stage::Rows, now).await?;
    expectations.extend(audited.results);
    enforce(&format!("silver/{}", table.name), expectations)?;
    Ok((audited.kept, counts))
}

/// Deduplicates `valid` (latest per key, or an event table's window dedup) and audits the merge candidate with the table's set-
/// and table-level expectations (results appended to `expectations`; a failed `fail` one is an
/// error): the rows to merge, and the rows `drop` expectations removed, as rows and as
/// dead-letter records; and what the audit's scan of the table's keys found for the rows to
/// merge, when it scanned and dropped none (the merge then need not scan again).
#[allow(clippy::too_many_arguments)]
async fn dedup_and_audit(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    (valid, latest): (Vec<RecordBatch>, bool),
    now: Now,
    file_of: impl Fn(&str) -> String,
    expectations: &mut Vec<GateResult>,
    timings: &mut Timings,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>, Vec<Rejected>, Option<KeyScan>)> {
    let t = Instant::now();
    let schema = table.contract.schema.clone();
    let deduped = match &table.history {
        History::Events { time, window } => {
            let mut seen = published_events(lake, table, &valid, *time, *window).await?;
            first_in_window(&schema, valid, &table.keys, *time, *window, &mut seen, WRITE_BATCH_ROWS)?
        }
        _ => latest_unless(latest, &schema, valid, &table.keys, &table.order_by, WRITE_BATCH_ROWS)?,
    };
    timings.insert(NodeStage::Dedup, ms(t));
    if table.checks.is_empty() {
        return Ok((deduped, Vec::new(), Vec::new(), None));
    }
    // Set- and table-level expectations see the table as the merge would leave it.
    let t = Instant::now();
    let ctx = catalog::session_for(lake, tables, &table.reads()).await?;
    let target = format!("silver.{}", table.name);
    // The candidate is the table with the rows merged (or appended).
    let (mut published, mut scanned) = (None, None);
    let stage = match &table.history {
        History::Events { .. } => Stage::Append { target: &target },
        _ => {
            let t = Table::open(lake, Layer::Silver, &table.name).await?;
            let published_rows = t.live_rows()?;
            // One integer key: what the table holds per key, read like the keyed merge reads.
            if let [key] = table.keys.as_slice() {
                (published, scanned) = t.published_orders(&deduped, key, &table.order_by).await?.unzip();
            }
            // The newest order value, for a freshness of the order column: the table's newest
            // row is live when rows are only ever replaced by newer ones (no deletes).
            let fresh_order = table.checks.iter().any(|c| c.freshness_of() == Some(table.order_by.as_str()));
            let newest = match &table.history {
                History::Latest { delete: None } if fresh_order => t.newest(&table.order_by).await?,
                _ => None,
            };
            Stage::Merge {
                target: &target,
                keys: &table.keys,
                order_by: &table.order_by,
                published_rows,
                published: published.as_deref(),
                newest,
            }
        }
    };
    let audited = audit(&ctx, &table.checks, &schema, deduped, stage, now).await?;
    expectations.extend(audited.results);
    enforce(&format!("silver/{}", table.name), expectations)?;
    let dropped = quarantine::from_rows(&audited.removed, audited.reasons, &table.source, file_of)?;
    timings.insert(NodeStage::Audit, ms(t));
    let scanned = scanned.filter(|_| audited.removed.is_empty());
    Ok((audited.kept, audited.removed, dropped, scanned))
}

/// Records read and rejected per validated batch.
fn counts(results: &[FileResult]) -> Vec<(u64, u64)> {
    results.iter().map(|r| (r.read, r.rejected.len() as u64)).collect()
}

/// The per-batch rejection-rate gate over validated `batches`, with their `counts` (read,
/// rejected).
pub(crate) fn per_batch_gate(
    bounds: &RejectedFractionSpec,
    batches: &[BatchFile],
    counts: &[(u64, u64)],
) -> Option<GateResult> {
    let read: u64 = counts.iter().map(|c| c.0).sum();
    bounds.per_batch.map(|limit| {
        let mut r = GateResult::new(
            "max_rejected_fraction.per_batch",
            "rejected_fraction",
            bounds.action,
            &format!("rejected / read <= {limit} in every batch"),
        );
        r.rows_checked = read;
        let over: Vec<String> = batches
            .iter()
            .zip(counts)
            .filter(|&(_, &(read, rejected))| fraction(rejected, read) > limit)
            .map(|(file, &(read, rejected))| {
                r.failing_rows += rejected;
                describe_batch(&file.batch_id, read, rejected)
            })
            .collect();
        r.violated = !over.is_empty();
        r.observed = Some(if over.is_empty() {
            format!("every batch at most {:.2}%", 100.0 * limit)
        } else {
            format!("{} of {} batches above {:.2}%: {}", over.len(), counts.len(), 100.0 * limit, over.join(", "))
        });
        r
    })
}

/// The per-run rejection-rate gate over the validated batches of a promotion, with their
/// `counts` (read, rejected).
pub(crate) fn per_run_gate(bounds: &RejectedFractionSpec, counts: &[(u64, u64)]) -> Option<GateResult> {
    let read: u64 = counts.iter().map(|c| c.0).sum();
    let rejected: u64 = counts.iter().map(|c| c.1).sum();
    bounds.per_run.map(|limit| {
        let mut r = GateResult::new(
            "max_rejected_fraction.per_run",
            "rejected_fraction",
            bounds.action,
            &format!("rejected / read <= {limit} over the promotion"),
        );
        r.rows_checked = read;
        r.violated = fraction(rejected, read) > limit;
        if r.violated {
            r.failing_rows = rejected;
        }
        r.observed = Some(format!("{:.2}% rejected ({rejected} of {read})", 100.0 * fraction(rejected, read)));
        r
    })
}

pub(crate) fn accounting(p: &Promotion) -> Error {
    Error::Accounting {
        table: p.table.clone(),
        read: p.read,
        promoted: p.promoted(),
        superseded: p.superseded,
        rejected: p.rejected,
    }
}

/// What a promotion's commits record: the run, the intent and its batches, the contract, and
/// whether it rebuilt the table (incremental readers of the change feed then start over).
pub(crate) fn commit_meta(run_id: &str, intent: &Intent, table: &SilverTable) -> HashMap<String, serde_json::Value> {
    let batches: Vec<&String> = intent.batches.iter().map(|b| &b.batch_id).collect();
    let mut meta =
        json!({ "run_id": run_id, "intent": intent.version, "batches": batches, "contract": table.record.to_json() });
    if intent.rebuild {
        meta["rebuild"] = json!(true);
    }
    HashMap::from([("medallion".to_string(), meta)])
}

/// Reads, decodes and validates `batches` of `table`'s source, `opts.threads` files at once, each
/// file's chunks on the cores the files leave idle (one batch per run decodes on every core), or
/// on a cluster's executors when `opts.engine` is one; results in batch order. With a `slicer`,
/// valid rows are spilled by slice as they are validated (as they come back from the cluster),
/// never held for a whole batch.
pub(crate) fn read_batches<'a>(
    lake: &'a Lake,
    table: &'a SilverTable,
    batches: &'a [BatchFile],
    opts: &PromoteOptions,
    slicer: Option<Arc<Slicer>>,
) -> futures::stream::BoxStream<'a, Result<FileResult>> {
    #[cfg(feature = "cluster")]
    if let crate::catalog::Engine::Cluster(cluster) = &opts.engine {
        let cluster = cluster.clone();
        return futures::stream::once(async move {
            let results = super::distributed::read(lake, table, batches, &cluster, slicer).await?;
            Ok::<_, Error>(futures::stream::iter(results.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed();
    }
    let threads = opts.threads.max(1);
    let workers = (threads / batches.len().clamp(1, threads)).max(1);
    futures::stream::iter(batches.iter().cloned().enumerate())
        .map(move |(i, file)| read_batch(lake, table, file, workers, slicer.clone().map(|s| (s, i))))
        .buffered(threads)
        .boxed()
}

/// Reads, decodes and validates one bronze batch of `table`'s source, its chunks on `workers`
/// threads; with a slicer, its valid rows are spilled as the `n`th batch's.
async fn read_batch(
    lake: &Lake,
    table: &SilverTable,
    file: BatchFile,
    workers: usize,
    slicer: Option<(Arc<Slicer>, usize)>,
) -> Result<FileResult> {
    let gz =
        lake.get(&file.path).await?.ok_or_else(|| Error::Internal(format!("bronze batch {} vanished", file.path)))?;
    let (origin, format) = origin_of(&file, &table.source, &table.csv, &gz);
    let contract = Arc::clone(&table.contract);
    tokio::task::spawn_blocking(move || match slicer {
        None => process(&contract, &gz, &format, &origin, workers, None),
        Some((slicer, n)) => {
            let mut spilled = slicer.batch(n);
            let mut out = process(&contract, &gz, &format, &origin, workers, Some(&mut |b| spilled.write(&b)))?;
            out.sliced = spilled.finish()?;
            Ok(out)
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("validation task failed: {e}")))?
}

/// Where the records of bronze batch `file` of `source` (reading CSV as `csv` says now) come
/// from, and how they are decoded, its bytes being `gz` (a CSV batch's description may also give
/// its ingest time).
pub(crate) fn origin_of(file: &BatchFile, source: &str, csv: &CsvSource, gz: &[u8]) -> (Origin, BatchFormat) {
    let mut origin = Origin {
        batch_id: file.batch_id.clone(),
        source: source.to_string(),
        file: file.path.clone(),
        ingested_at: file.ingested_at.clone(),
    };
    if !crate::bronze::is_csv_batch(&origin.file) {
        return (origin, BatchFormat::NdjsonGz);
    }
    let described = CsvBatch::from_gzip(gz);
    origin.ingested_at = origin.ingested_at.take().or_else(|| described.as_ref().map(|b| b.ingested_at.clone()));
    let format = BatchFormat::CsvGz(
        described
            .unwrap_or_else(|| CsvBatch::undescribed(&origin.batch_id, &origin.source, origin.ingested_at.as_deref())),
        csv.clone(),
    );
    (origin, format)
}

/// Decodes and validates one file of records (blocking), its chunks on `workers` threads: a
/// bronze batch or dead-letter records being replayed (plain NDJSON). Results are the same
/// whatever `workers` is. Valid rows go to `sink` as each chunk is validated, in order, when there
/// is one; else they are kept in the result.
pub(crate) fn process(
    contract: &Contract,
    bytes: &[u8],
    format: &BatchFormat,
    origin: &Origin,
    workers: usize,
    mut sink: Option<&mut dyn FnMut(RecordBatch) -> Result<()>>,
) -> Result<FileResult> {
    let names = contract.field_names();
    let decoding = super::paths::Decoding::of(&contract.columns);
    let mut out = FileResult::empty(contract.gates.len());
    let per_chunk = |mut chunk: crate::bronze::decode::RawChunk| {
        decoding.resolve(&mut chunk);
        let mut observed = Observed::new();
        for (name, field) in names.iter().zip(&chunk.fields) {
            let mut seen = [false; 6];
            for k in &field.kinds {
                seen[*k as usize] = true;
            }
            let kinds = observed.entry(name.clone()).or_default();
            kinds.extend(Kind::ALL.into_iter().filter(|k| seen[*k as usize] && *k != Kind::Missing));
        }
        for (name, kind) in &chunk.other_keys {
            observed.entry(name.clone()).or_default().insert(*kind);
        }
        Ok((chunk.rows() as u64, observed, validate(contract, &chunk, origin)?))
    };
    let bad = for_each_chunk(bytes, format, &decoding.fields, workers, per_chunk, &mut |(rows, observed, v)| {
        out.read += rows;
        for (name, kinds) in observed {
            out.observed.entry(name).or_default().extend(kinds);
        }
        out.valid_rows += v.valid.num_rows() as u64;
        if v.valid.num_rows() > 0 {
            match sink.as_mut() {
                Some(sink) => sink(v.valid)?,
                None => out.valid.push(v.valid),
            }
        }
        out.valid_lines.extend(v.valid_lines);
        out.rejected.extend(v.rejected);
        for (total, (checked, failing)) in out.gate_counts.iter_mut().zip(v.gate_counts) {
            total.0 += checked;
            total.1 += failing;
        }
        Ok(())
    })?;
    let file_ts = origin.ingested_at.as_deref().and_then(super::coerce::parse_timestamp);
    out.read += bad.len() as u64;
    for b in bad {
        out.rejected.push(Rejected {
            raw: b.raw,
            reasons: vec![Reason { column: None, rule: b.rule.to_string(), message: b.message }],
            batch_id: origin.batch_id.clone(),
            source: origin.source.clone(),
            source_file: origin.file.clone(),
            line: b.line,
            ingested_at: file_ts,
            stored: None,
        });
    }
    Ok(out)
}
