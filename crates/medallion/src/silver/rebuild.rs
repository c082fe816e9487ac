//! Rebuilding a silver table from every bronze batch of its source, in bounded memory.
//!
//! A rebuild judges every record again by the current contract and replaces the table, its dead
//! letter (and its tombstones) with one new version each. It never holds the whole table:
//!
//! 1. **Read**: bronze batches are decoded and validated several at once, as a promotion does.
//!    Valid rows are spilled to local scratch files, split into slices by a hash of the key, so
//!    all the records of a key land in one slice, in ingest order; rejects are spilled as
//!    dead-letter rows. A batch is released once spilled.
//! 2. **Resolve**: a slice a thread as far as the memory limit pays for them
//!    ([`slices::resolve_each`]), the latest row per key (SCD 1; keys whose latest record is a
//!    delete become tombstones), the whole history (SCD 2) or the first arrival of each event
//!    within its window (event tables) is computed and spilled, every row numbered.
//! 3. **Audit**: set- and table-level expectations query the resolved files where they lie;
//!    `drop` ones name the rows they remove by number.
//! 4. **Publish**: the intent is recorded, then the dead letter, the tombstones and the table are
//!    replaced in that order, each in one commit carrying the intent's txn (a rerun after a kill
//!    skips the commits that landed), streamed from the scratch files.
//!
//! A first load larger than one slice of a table [`super::backlog`] does not cover (one whose
//! expectations must read its rows, among others) takes the same steps (`first_load_in_slices`):
//! as a promotion, not a rebuild (a per-batch gate holds batches back, the table is created as a
//! new one, its commits are not marked as a rebuild).
//!
//! Memory is about a slice a thread (`PromoteOptions::slice_bytes` of compressed bronze) plus
//! the files being decoded; disk is about twice the typed table, under `TMPDIR`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::dedup::{Seen, first_in_window, latest_unless};
use super::history::{self, History, Rebuilt};
use super::promote::{
    PromoteOptions, Promotion, TOP_REASONS, WRITE_BATCH_ROWS, accounting, commit_meta, count_reasons, most_frequent,
};
use super::provenance;
use super::publish::{create_streamed, replace_streamed, replace_tombstones, tomb_schema};
use super::rejects::{DeadLetter, Rejects};
use super::slices;
use super::spill::{self, Spill, SpillWriter, Spilled};
use super::table::SilverTable;
use crate::bronze::drift;
use crate::catalog::{self, Registry};
use crate::error::{Error, Result};
use crate::quality::audit::{Keyed, audit_numbered};
use crate::quality::candidate::{number, register_ids, with_row_id};
use crate::quality::checks::ROW_ID;
use crate::quality::checks::newest_of;
use crate::quality::gates::enforce;
use crate::quality::quarantine;
use crate::runtime::ledger::{self, Intent};
use crate::runtime::{NodeStage, ms};
use crate::spec::ident;
use crate::storage::delta::{Gate, Table, Txn};
use crate::storage::{Lake, Layer};

/// Rebuilds `table` as `intent` (a rebuild over every bronze batch of its source) says; or, for
/// an intent that is not a rebuild, makes the first version of a table that does not exist yet
/// from a promotion larger than one slice ([`first_load_in_slices`]): the same steps, as a
/// promotion (a per-batch gate holds batches back, the table is created as a new one).
pub(crate) async fn rebuild(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    mut intent: Intent,
    resumed: bool,
    opts: &PromoteOptions,
) -> Result<Promotion> {
    let node = format!("silver/{}", table.name);
    let mut p = Promotion {
        table: table.name.clone(),
        intent: intent.version,
        resumed,
        batches: intent.batches.len(),
        rebuilt: intent.rebuild,
        ..Default::default()
    };
    let spill = Spill::new(&format!("rebuild-{}", table.name.replace(['/', '\\'], "_")))?;

    // 1. Read: every batch validated, valid rows spilled by key slice, rejects spilled; judged.
    //    A rebuild publishes every batch or none.
    let hold_back = !intent.rebuild;
    let Some((read, held_back_gate)) =
        slices::read_judged(lake, table, &mut intent, &spill, opts, hold_back, &mut p).await?
    else {
        return Ok(p);
    };

    // 2. Resolve, a slice a thread as far as the memory limit allows.
    let t = Instant::now();
    let rows_dir = spill.dir("rows")?;
    let out_schema = match &table.history {
        History::Latest { .. } | History::Events { .. } => table.contract.schema.clone(),
        History::Versions { .. } => table.schema.clone(),
    };
    let shared = Arc::new(table.clone());
    let already = read.latest;
    let (dir, schema) = (rows_dir.clone(), out_schema.clone());
    // The columns `freshness` expectations read: their newest values are taken as rows resolve
    // (latest per key: the audit below knows such a candidate without reading it).
    let fresh: Vec<String> = match table.history {
        History::Latest { .. } => table.checks.iter().filter_map(|c| c.freshness_of()).map(String::from).collect(),
        _ => Vec::new(),
    };
    let mut newest: Vec<(String, Option<i64>)> = fresh.iter().map(|c| (c.clone(), None)).collect();
    let resolved = slices::resolve_each(read.slices, opts, move |i, paths| {
        resolve(&shared, &schema, (paths, already), (&dir, &fresh), i)
    })
    .await?;
    let (mut resolved_rows, mut tombstones, mut counts) = (0u64, Vec::new(), Rebuilt::default());
    for r in resolved {
        resolved_rows += r.rows;
        tombstones.extend(r.tombstones);
        counts.inserted += r.counts.inserted;
        counts.closed += r.counts.closed;
        counts.superseded += r.counts.superseded;
        for ((_, all), slice) in newest.iter_mut().zip(r.newest) {
            *all = (*all).max(slice);
        }
    }
    p.timings_ms.insert(NodeStage::Dedup, ms(t));

    // 3. Audit the new table where it lies; rows `drop` expectations remove join the rejects.
    let t = Instant::now();
    let mut dropped = BTreeMap::new();
    if !table.checks.is_empty() {
        let ctx = catalog::session_for(lake, tables, &table.reads()).await?;
        let rows = scratch_table(&ctx, "__medallion_rebuilt", &rows_dir).await?;
        // Latest per key: one row per key by construction.
        let keyed = matches!(table.history, History::Latest { .. }).then_some(Keyed {
            keys: &table.keys,
            rows: resolved_rows,
            newest: &newest,
        });
        let audited = audit_numbered(&ctx, &table.checks, &out_schema, rows, opts.now, keyed).await?;
        p.expectations.extend(audited.results);
        enforce(&node, &mut p.expectations)?;
        dropped = audited.dropped;
    }
    p.expectations.extend(held_back_gate);
    let mut reasons = read.reasons;
    let mut rejects = vec![read.rejects];
    if !dropped.is_empty() {
        let removed = dropped_rows(&rows_dir, &dropped).await?;
        let file_of = |batch_id: &str| {
            intent.batches.iter().find(|b| b.batch_id == batch_id).map(|b| b.path.clone()).unwrap_or_default()
        };
        let rejected = quarantine::from_rows(&removed, dropped.values().cloned().collect(), &table.source, file_of)?;
        count_reasons(&mut reasons, &rejected);
        let mut w = SpillWriter::create(&spill.dir("rejected")?, "dropped", &quarantine::schema())?;
        for batch in quarantine::to_batches(&rejected, opts.now.timestamp_micros(), &opts.run_id)? {
            w.write(&batch)?;
        }
        rejects.push(w.finish()?.0);
    }
    p.timings_ms.insert(NodeStage::Audit, ms(t));

    // What the new table holds, and what became of every record.
    let n_dropped = dropped.len() as u64;
    p.rejected = read.rejected + n_dropped;
    p.top_reasons = most_frequent(reasons, TOP_REASONS);
    match &table.history {
        History::Latest { .. } | History::Events { .. } => {
            p.inserted = resolved_rows.saturating_sub(n_dropped);
            p.superseded = read.valid.saturating_sub(n_dropped).saturating_sub(p.inserted);
        }
        History::Versions { .. } => {
            p.inserted = counts.inserted.saturating_sub(n_dropped);
            p.updated = counts.closed;
            p.superseded = counts.superseded;
        }
    }
    if p.read != p.promoted() + p.superseded + p.rejected {
        return Err(accounting(&p));
    }

    // 4. Publish: intent, dead letter, tombstones, table.
    ledger::open(lake, &table.name, &intent, resumed).await?;
    let meta = commit_meta(&opts.run_id, &intent, table);
    let txn = Txn { app_id: ledger::app_id(&table.name), version: intent.version };
    let rejects = Rejects::Spilled(Spilled::new(quarantine::schema(), rejects, p.rejected));
    let letter = DeadLetter::open(lake, (&table.name, &node), rejects, intent.rebuild, (txn.clone(), meta.clone()));
    let (dead_letter, gate) = letter.await?.spawn();
    let spilled = (rows_dir.as_path(), &out_schema, &dropped);
    let published = publish_rebuilt(lake, table, spilled, (tombstones, intent.rebuild), (txn, meta), gate).await;
    // The dead letter's own error, when it failed (the gate then stopped silver's commit).
    dead_letter.landed(&mut p).await?;
    let (silver_version, merge_ms) = published?;
    p.silver_version = silver_version;
    p.timings_ms.insert(NodeStage::Merge, merge_ms);
    p.drift = drift::observe(lake, &table.source, &opts.run_id, &intent.batches, &read.observed).await?;
    Ok(p)
}

/// Publishes a rebuild (or a first load in slices): its tombstones (SCD 1 with deletes), then the
/// rows spilled under `rows_dir` (less the `dropped` row ids) replacing silver's (`rebuild`) or
/// creating it, in one commit once `gate` opens. Returns silver's version and the time (ms).
async fn publish_rebuilt(
    lake: &Lake,
    table: &SilverTable,
    (rows_dir, out_schema, dropped): (&Path, &SchemaRef, &BTreeMap<i64, Vec<quarantine::Reason>>),
    (tombstones, rebuild): (Vec<RecordBatch>, bool),
    (txn, meta): (Txn, HashMap<String, serde_json::Value>),
    gate: Gate,
) -> Result<(Option<i64>, u64)> {
    if let History::Latest { delete: Some(_) } = &table.history {
        replace_tombstones(lake, table, tombstones, txn.clone(), meta.clone()).await?;
    }
    let t = Instant::now();
    let ctx = SessionContext::new();
    scratch_table(&ctx, "rebuilt", rows_dir).await?;
    let columns: Vec<String> = out_schema.fields().iter().map(|f| ident(f.name())).collect();
    let mut sql = format!("SELECT {} FROM rebuilt", columns.join(", "));
    if !dropped.is_empty() {
        register_ids(&ctx, "dropped", dropped.keys().copied())?;
        sql.push_str(&format!(" WHERE {ROW_ID} NOT IN (SELECT id FROM dropped)"));
    }
    let rows = gate.hold(stream(&ctx, &sql).await?);
    let version = if rebuild {
        replace_streamed(lake, table, rows, txn, meta).await?
    } else {
        let silver = Table::open(lake, Layer::Silver, &table.name).await?;
        create_streamed(silver, table, rows, txn, meta).await?
    };
    Ok((version, ms(t)))
}

/// What resolving one slice gave.
struct Resolved {
    /// Rows of the new table, spilled.
    rows: u64,
    /// Key and order columns of the keys whose latest record is a delete (SCD 1).
    tombstones: Vec<RecordBatch>,
    /// What the history did with the records (SCD 2).
    counts: Rebuilt,
    /// The newest value of each column asked for, over the rows (micros; None: no value).
    newest: Vec<Option<i64>>,
}

/// Resolves the valid rows spilled at `inputs` (blocking; files in ingest order): the new table's
/// rows of that slice, spilled into `out_dir`, numbered by [`first_row`], with their newest value
/// of each of the `fresh` columns. Rows `already` the latest per key (deduplicated on the cluster's
/// executors) are not deduplicated again. The input files are removed.
fn resolve(
    table: &SilverTable,
    out_schema: &SchemaRef,
    (inputs, already): (&[PathBuf], bool),
    (out_dir, fresh): (&Path, &[String]),
    slice: usize,
) -> Result<Resolved> {
    let valid = slices::take_all(inputs)?;
    let context = format!("rebuilding silver/{}", table.name);
    let schema = table.contract.schema.clone();
    let (rows, tombstones, counts) = match &table.history {
        History::Latest { delete } => {
            // Deduplicated with provenance still a dictionary: the gather copies a key a row.
            let spilled = provenance::spilled_schema(&schema);
            let latest = latest_unless(already, &spilled, valid, &table.keys, &table.order_by, WRITE_BATCH_ROWS)?;
            let latest = provenance::decode_all(latest, &schema)?;
            match delete {
                None => (latest, Vec::new(), Rebuilt::default()),
                Some(expr) => {
                    let tomb = tomb_schema(table)?;
                    let idx: Vec<usize> = tomb.fields().iter().filter_map(|f| schema.index_of(f.name()).ok()).collect();
                    let (mut kept, mut deletes) = (Vec::new(), Vec::new());
                    for b in latest {
                        let flags = history::deletes(expr, &b)?;
                        let keep = not(&flags).map_err(|e| Error::arrow(&context, e))?;
                        kept.push(filter_record_batch(&b, &keep).map_err(|e| Error::arrow(&context, e))?);
                        let gone = filter_record_batch(&b, &flags).map_err(|e| Error::arrow(&context, e))?;
                        deletes.push(gone.project(&idx).map_err(|e| Error::arrow(&context, e))?);
                    }
                    (kept, deletes, Rebuilt::default())
                }
            }
        }
        History::Events { time, window } => {
            let mut seen = Seen::default();
            let spilled = provenance::spilled_schema(&schema);
            let kept = first_in_window(&spilled, valid, &table.keys, *time, *window, &mut seen, WRITE_BATCH_ROWS)?;
            (provenance::decode_all(kept, &schema)?, Vec::new(), Rebuilt::default())
        }
        History::Versions { track, delete } => {
            let (rows, counts) = history::rebuild(
                &table.contract,
                &table.schema,
                &table.keys,
                &table.order_by,
                track,
                delete.as_ref(),
                &[],
                &provenance::decode_all(valid, &schema)?,
            )?;
            (rows, Vec::new(), counts)
        }
    };
    let newest = fresh.iter().map(|c| newest_of(&rows, c)).collect::<Result<_>>()?;
    let numbered = with_row_id(out_schema);
    let mut out = SpillWriter::create(out_dir, &slice.to_string(), &numbered)?;
    let mut next = first_row(slice);
    for b in rows {
        out.write(&number(&b, &numbered, next)?)?;
        next += b.num_rows() as i64;
    }
    let (_, rows) = out.finish()?;
    Ok(Resolved { rows, tombstones, counts, newest })
}

/// The number of the first row of slice `slice`: the slice in the high bits, so slices resolved at
/// once number their rows apart (a slice holds fewer than 2^40 rows, there are at most 256).
fn first_row(slice: usize) -> i64 {
    i64::try_from(slice).unwrap_or(i64::MAX >> 40) << 40
}

/// Registers the spilled files of `dir` as the table `name` of `ctx`.
async fn scratch_table(
    ctx: &SessionContext,
    name: &str,
    dir: &Path,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let context = format!("reading scratch files in {}", dir.display());
    let location = format!("{}/", dir.display());
    let options = ArrowReadOptions { file_extension: spill::EXTENSION, ..Default::default() };
    ctx.register_arrow(name, &location, options).await.map_err(|e| Error::sql(&context, e))?;
    ctx.table_provider(name).await.map_err(|e| Error::sql(&context, e))
}

/// The rows of `sql` as a stream, led by an empty batch so that a write of no rows still has its
/// schema.
async fn stream(ctx: &SessionContext, sql: &str) -> Result<SendableRecordBatchStream> {
    let context = "streaming a rebuild's rows";
    let rows = ctx.sql(sql).await.map_err(|e| Error::sql(context, e))?;
    let rows = rows.execute_stream().await.map_err(|e| Error::sql(context, e))?;
    let schema = rows.schema();
    let first = futures::stream::once(futures::future::ready(Ok(RecordBatch::new_empty(Arc::clone(&schema)))));
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, first.chain(rows))))
}

/// The rows of `dir` whose number is in `dropped`, in number order, without the number.
async fn dropped_rows(dir: &Path, dropped: &BTreeMap<i64, Vec<quarantine::Reason>>) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    let rows = scratch_table(&ctx, "rebuilt", dir).await?;
    register_ids(&ctx, "dropped", dropped.keys().copied())?;
    let columns: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != ROW_ID)
        .map(|f| format!("r.{}", ident(f.name())))
        .collect();
    let sql = format!(
        "SELECT {} FROM rebuilt AS r JOIN dropped AS d ON r.{ROW_ID} = d.id ORDER BY r.{ROW_ID}",
        columns.join(", ")
    );
    catalog::query(&ctx, &sql, "reading rows removed by expectations").await
}

/// Whether `intent` (not a rebuild) makes the first version of `table` from more than one slice
/// of bronze: such a promotion runs as [`rebuild`] does, whatever the table's kind and gates.
pub(crate) async fn first_load_in_slices(
    lake: &Lake,
    table: &SilverTable,
    intent: &Intent,
    opts: &PromoteOptions,
) -> Result<bool> {
    let bytes: u64 = intent.batches.iter().map(|b| b.size).sum();
    Ok(!intent.rebuild && bytes > opts.slice_bytes && !Table::open(lake, Layer::Silver, &table.name).await?.exists())
}
