//! Promoting a backlog in bounded memory: a first load, or a run that finds many days of bronze
//! pending. Held in memory, a promotion's valid rows, their deduplicated copy and the writer's
//! buffers grow with the input (1.5 GB at 5M records of the benchmark's orders); past one slice of
//! compressed bronze ([`PromoteOptions::slice_bytes`]) a promotion runs here instead:
//!
//! 1. **Read**: batches are decoded and validated several at once, their valid rows spilled to
//!    local scratch files split by key into slices, their rejects spilled as dead-letter rows
//!    ([`super::slices`]); a batch whose rejected share fails a per-batch gate is held back, as in
//!    memory. Gates are evaluated over every record read, before anything is committed.
//! 2. **Publish**: the intent is recorded, the dead letter streamed into its commit, then silver:
//!    - a new table takes the winners as they are resolved, one slice at a time (the latest row
//!      per key: all records of a key meet in one slice, in ingest order, so a slice's winners are
//!      the promotion's), the next slice resolving on another core while the writer encodes this
//!      one; one commit.
//!    - an existing table gets the winners spilled first, then merged by the keyed merge reading
//!      them in two passes (keys and order values to find what they replace, then every column
//!      to write them); one commit.
//!
//!    Each commit carries the intent's txn, so a run killed at any point finishes the same way.
//!
//! Memory is about one slice plus the batches being decoded (and, into an existing table, the
//! merge's key index); scratch disk about twice the typed rows, under `TMPDIR`, removed when the
//! promotion ends. Results equal the in-memory promotion's: same winners, same commits, same
//! accounting (`tests/it/backlog.rs`).
//!
//! A new table's set- and table-level expectations, when what its writer counts answers them all
//! (`unique` on the key, `row_count`, `freshness`; none `drop`: see [`applies`]), are judged once
//! its rows are written, from those counts: the intent is recorded, and the dead letter (written
//! meanwhile, its commit held) and silver commit, only if they pass.
//!
//! Tables this does not cover (change-data apply (`delete_when`), SCD 2 histories, event tables,
//! tables with other set- or table-level expectations, or any into an existing table, whose
//! audit stages the merge candidate in memory): a first load larger than one slice runs as a
//! rebuild of nothing does ([`super::rebuild::first_load_in_slices`]); a large promotion into an
//! existing one stays in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use super::dedup::latest_unless;
use super::history::History;
use super::promote::{
    PromoteOptions, Promotion, TOP_REASONS, WRITE_BATCH_ROWS, accounting, commit_meta, most_frequent,
};
use super::provenance;
use super::publish::{Candidate, create_streamed, merge_into};
use super::rejects::{DeadLetter, Rejects};
use super::slices;
use super::spill::{Spill, SpillWriter, Spilled};
use super::table::SilverTable;
use crate::bronze::drift;
use crate::error::{Error, Result};
use crate::quality::audit::{Keyed, audit_unread};
use crate::quality::checks::newest_of;
use crate::quality::gates::{GateResult, enforce};
use crate::quality::quarantine;
use crate::runtime::ledger::{self, Intent};
use crate::runtime::{NodeStage, Now, ms};
use crate::storage::delta::{Gate, Table, Txn};
use crate::storage::{Lake, Layer};

/// Whether a promotion of `intent`'s batches into `table` runs here: more than one slice of bronze,
/// into a table this module covers.
/// A table with set- or table-level expectations is covered when it does not exist yet and
/// they are answered by what its writer counts ([`audit_unread`]): they are then audited once its
/// rows are written, before anything commits.
pub(crate) async fn applies(lake: &Lake, table: &SilverTable, intent: &Intent, opts: &PromoteOptions) -> Result<bool> {
    let bytes: u64 = intent.batches.iter().map(|b| b.size).sum();
    if intent.rebuild || bytes <= opts.slice_bytes || !matches!(table.history, History::Latest { delete: None }) {
        return Ok(false);
    }
    if table.checks.is_empty() {
        return Ok(true);
    }
    Ok(table.checks.iter().all(|c| c.known_without_rows(&table.keys))
        && !Table::open(lake, Layer::Silver, &table.name).await?.exists())
}

/// Promotes the batches of `intent` (not a rebuild) into `table` through scratch files.
pub(crate) async fn promote(
    lake: &Lake,
    table: &SilverTable,
    mut intent: Intent,
    resumed: bool,
    opts: &PromoteOptions,
) -> Result<Promotion> {
    let node = format!("silver/{}", table.name);
    let mut p = Promotion { table: table.name.clone(), intent: intent.version, resumed, ..Default::default() };
    let spill = Spill::new(&format!("promote-{}", table.name.replace(['/', '\\'], "_")))?;

    // 1. Read and judge.
    let Some((read, held_back_gate)) =
        slices::read_judged(lake, table, &mut intent, &spill, opts, true, &mut p).await?
    else {
        return Ok(p);
    };
    p.top_reasons = most_frequent(read.reasons, TOP_REASONS);

    // 2. Publish: intent, dead letter, table. With expectations to audit (a new table's), the
    //    intent is recorded, and the dead letter commits, once the table's rows are written and
    //    pass them: the dead letter is written meanwhile, its commit held until then.
    let meta = commit_meta(&opts.run_id, &intent, table);
    let txn = Txn { app_id: ledger::app_id(&table.name), version: intent.version };
    let rejects = Rejects::Spilled(Spilled::new(quarantine::schema(), vec![read.rejects], p.rejected));
    let letter = DeadLetter::open(lake, (&table.name, &node), rejects, intent.rebuild, (txn.clone(), meta.clone()));
    let letter = letter.await?;
    let verdict = Arc::new(Mutex::new(None));
    let (letter, audit) = if table.checks.is_empty() {
        ledger::open(lake, &table.name, &intent, resumed).await?;
        (letter, None)
    } else {
        let (passed, on_passing) = tokio::sync::oneshot::channel();
        let stopped = format!("{node}: stopped before its expectations passed");
        let held = Gate::after(async move { on_passing.await.map_err(|_| Error::Internal(stopped)) });
        let verdict = Arc::clone(&verdict);
        let audit = Audit { lake: lake.clone(), intent: intent.clone(), resumed, now: opts.now, passed, verdict };
        (letter.held(held), Some(audit))
    };
    let (dead_letter, gate) = letter.spawn();

    // 3. Resolve and merge (silver's commit waits for the dead letter's). A new table takes the
    //    winners as each slice is resolved (the next slice resolves on another core while the
    //    writer encodes); an existing one gets them spilled first, since the keyed merge reads
    //    them twice.
    let slices = (read.slices, read.latest);
    let merged = merge(lake, table, &mut p, slices, (&spill, opts), (txn, meta), (gate, audit)).await;
    // The audit's results go before the held-back gate's (as a promotion in memory has them). A
    // dead letter held for the audit fails when the audit stopped the commits, or when the merge
    // failed before its audit: then the audit's error, or the merge's, is the one to report.
    let verdict = verdict.lock().unwrap_or_else(PoisonError::into_inner).take();
    let merged = match verdict {
        Some(Verdict { results, stopped }) => {
            p.expectations.extend(results);
            if let Some(e) = stopped {
                let _ = dead_letter.landed(&mut p).await;
                enforce(&node, &mut p.expectations)?;
                return Err(e);
            }
            merged
        }
        None if !table.checks.is_empty() => match merged {
            Err(e) => {
                let _ = dead_letter.landed(&mut p).await;
                return Err(e);
            }
            ok => ok,
        },
        None => merged,
    };
    p.expectations.extend(held_back_gate);
    // The dead letter's own error, when it failed (the gate then stopped the merge).
    dead_letter.landed(&mut p).await?;
    let unique = merged?;
    p.superseded = read.valid.saturating_sub(p.promoted());
    if p.promoted() > unique {
        return Err(accounting(&p));
    }
    p.drift = drift::observe(lake, &table.source, &opts.run_id, &intent.batches, &read.observed).await?;
    if p.read != p.promoted() + p.superseded + p.rejected {
        return Err(accounting(&p));
    }
    Ok(p)
}

/// Resolves the winners of `slices` (`already` the latest per key: see [`latest`]; into an existing
/// table, a slice per thread of `opts` as far as the memory limit allows) and publishes them to
/// silver in one commit once `gate` opens: the rows it resolved.
async fn merge(
    lake: &Lake,
    table: &SilverTable,
    p: &mut Promotion,
    (slices, already): (Vec<Vec<PathBuf>>, bool),
    (spill, opts): (&Spill, &PromoteOptions),
    (txn, meta): (Txn, HashMap<String, serde_json::Value>),
    (gate, audit): (Gate, Option<Audit>),
) -> Result<u64> {
    let t = Instant::now();
    let shared = Arc::new(table.clone());
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    if silver.exists() && audit.is_some() {
        return Err(Error::Internal(format!(
            "silver/{}: expectations audited unread on an existing table",
            table.name
        )));
    }
    if silver.exists() {
        let (table_of, out_dir) = (Arc::clone(&shared), spill.dir("latest")?);
        let spilled =
            slices::resolve_each(slices, opts, move |i, paths| latest_spilled(&table_of, paths, already, &out_dir, i))
                .await?;
        let unique = spilled.iter().map(|(_, rows)| rows).sum();
        let resolved = spilled.into_iter().map(|(path, _)| path).collect();
        p.timings_ms.insert(NodeStage::Dedup, ms(t));
        let t = Instant::now();
        let winners = Spilled::new(table.contract.schema.clone(), resolved, unique);
        let merged = merge_into(lake, table, Candidate::Spilled(winners), (txn, meta), gate).await?;
        (p.inserted, p.updated, p.deleted, p.silver_version) =
            (merged.inserted, merged.updated, merged.deleted, merged.version);
        p.timings_ms.insert(NodeStage::Merge, ms(t));
        Ok(unique)
    } else {
        let fresh = table.checks.iter().filter_map(|c| c.freshness_of()).map(|c| (c.to_string(), None)).collect();
        let tally = Arc::new(Mutex::new(Tally { rows: 0, newest: fresh }));
        let gate = match audit {
            Some(audit) => Gate::after(audit.judge(Arc::clone(&shared), Arc::clone(&tally), gate)),
            None => gate,
        };
        let winners = gate.hold(resolving(Arc::clone(&shared), slices, already, Arc::clone(&tally)));
        p.silver_version = create_streamed(silver, table, winners, txn, meta).await?;
        p.inserted = tally.lock().unwrap_or_else(PoisonError::into_inner).rows;
        p.timings_ms.insert(NodeStage::Merge, ms(t));
        Ok(p.inserted)
    }
}

/// What the winners streamed into a new table were: their rows, and their newest value of each
/// column a `freshness` expectation reads (micros; None: no value).
struct Tally {
    rows: u64,
    newest: Vec<(String, Option<i64>)>,
}

impl Tally {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        for (column, newest) in &mut self.newest {
            *newest = (*newest).max(newest_of(std::slice::from_ref(batch), column)?);
        }
        Ok(())
    }
}

/// The audit of a new table's expectations, made from what its writer counted ([`Tally`]) once
/// its rows are written: they pass, and the intent is recorded and the dead letter's held commit
/// may land; they fail, and nothing commits.
struct Audit {
    lake: Lake,
    intent: Intent,
    resumed: bool,
    now: Now,
    /// Opens the dead letter's commit.
    passed: tokio::sync::oneshot::Sender<()>,
    /// Where the verdict is left for the promotion.
    verdict: Arc<Mutex<Option<Verdict>>>,
}

/// What an [`Audit`] found.
struct Verdict {
    results: Vec<GateResult>,
    /// The error that stopped the commits (a failed `fail` expectation's among them).
    stopped: Option<Error>,
}

impl Audit {
    /// Audits `table`'s rows as `tally` counted them, then waits for `landed` (the dead letter):
    /// the gate of silver's commit.
    async fn judge(self, table: Arc<SilverTable>, tally: Arc<Mutex<Tally>>, landed: Gate) -> Result<()> {
        let Audit { lake, intent, resumed, now, passed, verdict } = self;
        let node = format!("silver/{}", table.name);
        let (rows, newest) = {
            let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            (tally.rows, tally.newest.clone())
        };
        let mut results = Vec::new();
        let stopped = async {
            results = audit_unread(&table.checks, now, Keyed { keys: &table.keys, rows, newest: &newest }).await?;
            enforce(&node, &mut results)?;
            ledger::open(&lake, &table.name, &intent, resumed).await
        }
        .await
        .err();
        let failed = stopped.is_some();
        *verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(Verdict { results, stopped });
        if failed {
            return Err(Error::Internal(format!("{node}: stopped by its audit")));
        }
        let _ = passed.send(());
        landed.pass().await
    }
}

/// The latest row per key of the valid rows spilled at `inputs` (blocking; files in ingest order),
/// which `already` are when the cluster's executors deduplicated them. The input files are
/// removed.
fn latest(table: &SilverTable, inputs: &[PathBuf], already: bool) -> Result<Vec<RecordBatch>> {
    let valid = slices::take_all(inputs)?;
    // Deduplicated with provenance still a dictionary: the gather copies a key a row.
    let schema = &table.contract.schema;
    let spilled = provenance::spilled_schema(schema);
    let latest = latest_unless(already, &spilled, valid, &table.keys, &table.order_by, WRITE_BATCH_ROWS)?;
    provenance::decode_all(latest, schema)
}

/// [`latest`], spilled into `<out_dir>/<slice>.arrow`: its path and rows.
fn latest_spilled(
    table: &SilverTable,
    inputs: &[PathBuf],
    already: bool,
    out_dir: &Path,
    slice: usize,
) -> Result<(PathBuf, u64)> {
    let mut out = SpillWriter::create(out_dir, &slice.to_string(), &table.contract.schema)?;
    for b in &latest(table, inputs, already)? {
        out.write(b)?;
    }
    out.finish()
}

/// Batches of winners in flight between the resolving thread and the writer.
const IN_FLIGHT: usize = 4;

/// The winners of every slice at `slices` as a stream, resolved on a blocking thread one slice at
/// a time (`already` the latest per key: see [`latest`]), a few batches ahead of the reader;
/// `written` counts the rows it yields. A resolving thread that stops early (an error, a panic)
/// ends the stream with an error, never with fewer rows.
fn resolving(
    table: Arc<SilverTable>,
    slices: Vec<Vec<PathBuf>>,
    already: bool,
    tally: Arc<Mutex<Tally>>,
) -> SendableRecordBatchStream {
    let schema = table.contract.schema.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(IN_FLIGHT);
    let resolver = tokio::task::spawn_blocking(move || {
        for paths in &slices {
            let batches = match latest(&table, paths, already) {
                Ok(batches) => batches,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return false;
                }
            };
            for b in batches.into_iter().filter(|b| b.num_rows() > 0) {
                if tx.blocking_send(Ok(b)).is_err() {
                    return false;
                }
            }
        }
        true
    });
    let stream = futures::stream::unfold(Some((rx, resolver)), move |state| {
        let tally = Arc::clone(&tally);
        async move {
            let (mut rx, resolver) = state?;
            match rx.recv().await {
                Some(Ok(b)) => match tally.lock().unwrap_or_else(PoisonError::into_inner).add(&b) {
                    Ok(()) => Some((Ok(b), Some((rx, resolver)))),
                    Err(e) => Some((Err(DataFusionError::External(Box::new(e))), None)),
                },
                Some(Err(e)) => Some((Err(DataFusionError::External(Box::new(e))), None)),
                None => match resolver.await {
                    Ok(true) => None,
                    _ => Some((
                        Err(DataFusionError::Execution("resolving a slice of winners stopped early".into())),
                        None,
                    )),
                },
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}
