//! Rebuilding a silver table from every bronze batch of its source, in bounded memory.
//!
//! A rebuild judges every record again by the current contract and replaces the table, its dead
//! letter (and its tombstones) with one new version each. It never holds the whole table:
//!
//! 1. **Read**: bronze batches are decoded and validated several at once, as a promotion does.
//!    Valid rows are spilled to local scratch files, split into slices by a hash of the key, so
//!    all the records of a key land in one slice, in ingest order; rejects are spilled as
//!    dead-letter rows. A batch is released once spilled.
//! 2. **Resolve**: one slice at a time, the latest row per key (SCD 1; keys whose latest record
//!    is a delete become tombstones), the whole history (SCD 2) or the first arrival of each event
//!    within its window (event tables) is computed and spilled, every row numbered.
//! 3. **Audit**: set- and table-level expectations query the resolved files where they lie;
//!    `drop` ones name the rows they remove by number.
//! 4. **Publish**: the intent is recorded, then the dead letter, the tombstones and the table are
//!    replaced in that order, each in one commit carrying the intent's txn (a rerun after a kill
//!    skips the commits that landed), streamed from the scratch files.
//!
//! Memory is about one slice (`PromoteOptions::rebuild_slice_bytes` of compressed bronze) plus
//! the files being decoded; disk is about twice the typed table, under `TMPDIR`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, not, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

use super::dedup::{Seen, first_in_window, latest_per_key};
use super::history::{self, History, Rebuilt};
use super::promote::{
    FileResult, PromoteOptions, Promotion, TOP_REASONS, WRITE_BATCH_ROWS, accounting, commit_meta, count_reasons,
    most_frequent, per_batch_gate, per_run_gate, read_batches,
};
use super::publish::{replace_streamed, replace_tombstones, tomb_schema};
use super::spill::{self, Spill, SpillWriter};
use super::table::SilverTable;
use crate::bronze::drift;
use crate::catalog::{self, Registry};
use crate::error::{Error, Result};
use crate::quality::audit::audit_numbered;
use crate::quality::candidate::{number, register_ids, with_row_id};
use crate::quality::checks::ROW_ID;
use crate::quality::gates::{GateResult, enforce};
use crate::quality::quarantine;
use crate::runtime::ledger::{self, Intent};
use crate::runtime::{faults, ms};
use crate::spec::ident;
use crate::storage::delta::{Table, Txn, WriteOptions};
use crate::storage::{Lake, Layer};

/// Slices at most (each an open scratch file while batches are read, so bounded well below the
/// usual 1,024 file descriptors): past 256 × `rebuild_slice_bytes` of bronze (16 GiB at the
/// default), slices grow with the table.
const MAX_SLICES: u64 = 256;

/// Rebuilds `table` as `intent` (a rebuild over every bronze batch of its source) says.
pub(crate) async fn rebuild(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    intent: Intent,
    resumed: bool,
    opts: &PromoteOptions,
) -> Result<Promotion> {
    let node = format!("silver/{}", table.name);
    let mut p = Promotion {
        table: table.name.clone(),
        intent: intent.version,
        resumed,
        batches: intent.batches.len(),
        rebuilt: true,
        bytes: intent.batches.iter().map(|b| b.size).sum(),
        ..Default::default()
    };
    let spill = Spill::new(&format!("rebuild-{}", table.name.replace(['/', '\\'], "_")))?;

    // 1. Read: every batch validated, valid rows spilled by key slice, rejects spilled.
    let t = Instant::now();
    let slices = usize::try_from(p.bytes.div_ceil(opts.rebuild_slice_bytes.max(1)).clamp(1, MAX_SLICES)).unwrap_or(1);
    p.rebuild_slices = slices;
    let read = read_all(lake, table, &intent, slices, &spill, opts).await?;
    p.timings_ms.insert("read_validate", ms(t));
    p.read = read.read;

    // Gates over every record: a rebuild publishes every batch or none.
    if let Some(bounds) = &table.max_rejected_fraction {
        p.expectations.extend(per_batch_gate(bounds, &intent.batches, &read.per_batch));
        p.expectations.extend(per_run_gate(bounds, &read.per_batch));
    }
    let mut rules: Vec<GateResult> = table.contract.gates.iter().map(|g| g.result()).collect();
    for (res, (checked, failing)) in rules.iter_mut().zip(&read.gate_counts) {
        res.rows_checked += checked;
        res.failing_rows += failing;
    }
    rules.append(&mut p.expectations);
    p.expectations = rules;
    enforce(&node, &mut p.expectations)?;
    if read.valid + read.rejected != p.read {
        p.rejected = read.rejected;
        return Err(accounting(&p));
    }

    // 2. Resolve, slice by slice.
    let t = Instant::now();
    let rows_dir = spill.dir("rows")?;
    let out_schema = match &table.history {
        History::Latest { .. } | History::Events { .. } => table.contract.schema.clone(),
        History::Versions { .. } => table.schema.clone(),
    };
    let shared = Arc::new(table.clone());
    let (mut resolved_rows, mut tombstones, mut counts) = (0u64, Vec::new(), Rebuilt::default());
    for (i, path) in read.slices.into_iter().enumerate() {
        let (table, dir, schema) = (Arc::clone(&shared), rows_dir.clone(), out_schema.clone());
        let first = i64::try_from(resolved_rows).unwrap_or(i64::MAX);
        let r = tokio::task::spawn_blocking(move || resolve(&table, &schema, &path, &dir, i, first))
            .await
            .map_err(|e| Error::Internal(format!("rebuild task failed: {e}")))??;
        resolved_rows += r.rows;
        tombstones.extend(r.tombstones);
        counts.inserted += r.counts.inserted;
        counts.closed += r.counts.closed;
        counts.superseded += r.counts.superseded;
    }
    p.timings_ms.insert("dedup", ms(t));

    // 3. Audit the new table where it lies; rows `drop` expectations remove join the rejects.
    let t = Instant::now();
    let mut dropped = BTreeMap::new();
    if !table.checks.is_empty() {
        let ctx = catalog::session_for(lake, tables, &table.reads()).await?;
        let rows = scratch_table(&ctx, "__medallion_rebuilt", &rows_dir).await?;
        let audited = audit_numbered(&ctx, &table.checks, &out_schema, rows, opts.now).await?;
        p.expectations.extend(audited.results);
        enforce(&node, &mut p.expectations)?;
        dropped = audited.dropped;
    }
    let mut reasons = read.reasons;
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
        w.finish()?;
    }
    p.timings_ms.insert("audit", ms(t));

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
    if !resumed {
        ledger::record(lake, &table.name, &intent).await?;
    }
    faults::check(&node, "intent")?;
    let meta = commit_meta(&opts.run_id, &intent, table);
    let txn = Txn { app_id: ledger::app_id(&table.name), version: intent.version };
    let t = Instant::now();
    let q = Table::open(lake, Layer::Quarantine, &table.name).await?;
    p.quarantine_version = q.version();
    if (p.rejected > 0 || q.exists()) && q.txn_version(&txn.app_id).await?.unwrap_or(0) < intent.version {
        let ctx = SessionContext::new();
        scratch_table(&ctx, "rejected", &spill.dir("rejected")?).await?;
        let rejects = stream(&ctx, "SELECT * FROM rejected").await?;
        let write = WriteOptions {
            overwrite: q.exists(),
            txn: Some(txn.clone()),
            metadata: meta.clone(),
            ..Default::default()
        };
        p.quarantine_version = q.write_stream(rejects, write).await?.version();
    }
    p.timings_ms.insert("dead_letter", ms(t));
    if let History::Latest { delete: Some(_) } = &table.history {
        replace_tombstones(lake, table, tombstones, txn.clone(), meta.clone()).await?;
    }

    faults::check(&node, "merge")?;
    let t = Instant::now();
    let ctx = SessionContext::new();
    scratch_table(&ctx, "rebuilt", &rows_dir).await?;
    let columns: Vec<String> = out_schema.fields().iter().map(|f| ident(f.name())).collect();
    let mut sql = format!("SELECT {} FROM rebuilt", columns.join(", "));
    if !dropped.is_empty() {
        register_ids(&ctx, "dropped", dropped.keys().copied())?;
        sql.push_str(&format!(" WHERE {ROW_ID} NOT IN (SELECT id FROM dropped)"));
    }
    let rows = stream(&ctx, &sql).await?;
    p.silver_version = replace_streamed(lake, table, rows, txn, meta).await?;
    p.timings_ms.insert("merge", ms(t));
    p.drift = drift::observe(lake, &table.source, &opts.run_id, &intent.batches, &read.observed).await?;
    Ok(p)
}

/// What reading every batch gave.
struct Read {
    /// Per slice, its spilled valid rows.
    slices: Vec<PathBuf>,
    /// Records read, valid and rejected.
    read: u64,
    valid: u64,
    rejected: u64,
    /// Per batch: read, rejected.
    per_batch: Vec<(u64, u64)>,
    /// Per row-level expectation: rows checked, failing.
    gate_counts: Vec<(u64, u64)>,
    /// Reasons of the rejects, with counts.
    reasons: HashMap<String, u64>,
    observed: Vec<drift::Observed>,
}

/// Reads and validates every batch of `intent` (several at once, in order): valid rows spilled
/// into `slices` files by key, rejects into `rejected/` as dead-letter rows.
async fn read_all(
    lake: &Lake,
    table: &SilverTable,
    intent: &Intent,
    slices: usize,
    spill: &Spill,
    opts: &PromoteOptions,
) -> Result<Read> {
    let schema = table.contract.schema.clone();
    let keys: Vec<usize> = table
        .keys
        .iter()
        .map(|k| schema.index_of(k).map_err(|e| Error::arrow("the key of a rebuild", e)))
        .collect::<Result<_>>()?;
    let valid_dir = spill.dir("valid")?;
    let mut writers: Vec<SpillWriter> =
        (0..slices).map(|i| SpillWriter::create(&valid_dir, &i.to_string(), &schema)).collect::<Result<_>>()?;
    let mut rejects = SpillWriter::create(&spill.dir("rejected")?, "contract", &quarantine::schema())?;
    let mut out = Read {
        slices: Vec::new(),
        read: 0,
        valid: 0,
        rejected: 0,
        per_batch: Vec::with_capacity(intent.batches.len()),
        gate_counts: vec![(0, 0); table.contract.gates.len()],
        reasons: HashMap::new(),
        observed: Vec::with_capacity(intent.batches.len()),
    };
    let mut files = std::pin::pin!(read_batches(lake, table, &intent.batches, opts.threads));
    while let Some(FileResult { valid, rejected, read, gate_counts, observed, .. }) = files.try_next().await? {
        out.read += read;
        out.rejected += rejected.len() as u64;
        out.per_batch.push((read, rejected.len() as u64));
        for (total, (checked, failing)) in out.gate_counts.iter_mut().zip(gate_counts) {
            total.0 += checked;
            total.1 += failing;
        }
        out.observed.push(observed);
        for batch in &valid {
            out.valid += batch.num_rows() as u64;
            for (slice, rows) in by_slice(batch, &keys, slices)? {
                writers[slice].write(&rows)?;
            }
        }
        if !rejected.is_empty() {
            count_reasons(&mut out.reasons, &rejected);
            for batch in quarantine::to_batches(&rejected, opts.now.timestamp_micros(), &opts.run_id)? {
                rejects.write(&batch)?;
            }
        }
    }
    rejects.finish()?;
    out.slices = writers.into_iter().map(|w| w.finish().map(|(path, _)| path)).collect::<Result<_>>()?;
    Ok(out)
}

/// `batch` split by a hash of its `keys` columns into `slices` parts (the non-empty ones).
fn by_slice(batch: &RecordBatch, keys: &[usize], slices: usize) -> Result<Vec<(usize, RecordBatch)>> {
    if slices == 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let mut hashes = vec![0u64; batch.num_rows()];
    let columns: Vec<&dyn Array> = keys.iter().map(|&k| batch.column(k).as_ref()).collect();
    create_hashes(columns, &RandomState::with_seed(0), &mut hashes).map_err(|e| Error::sql("slicing a rebuild", e))?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); slices];
    for (row, h) in hashes.iter().enumerate() {
        rows[(h % slices as u64) as usize].push(u32::try_from(row).unwrap_or(u32::MAX));
    }
    rows.into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(slice, r)| {
            take_record_batch(batch, &UInt32Array::from(r))
                .map(|b| (slice, b))
                .map_err(|e| Error::arrow("slicing a rebuild", e))
        })
        .collect()
}

/// What resolving one slice gave.
struct Resolved {
    /// Rows of the new table, spilled.
    rows: u64,
    /// Key and order columns of the keys whose latest record is a delete (SCD 1).
    tombstones: Vec<RecordBatch>,
    /// What the history did with the records (SCD 2).
    counts: Rebuilt,
}

/// Resolves the valid rows spilled at `input` (blocking): the new table's rows of that slice,
/// numbered from `first`, spilled into `out_dir`. The input file is removed.
fn resolve(
    table: &SilverTable,
    out_schema: &SchemaRef,
    input: &Path,
    out_dir: &Path,
    slice: usize,
    first: i64,
) -> Result<Resolved> {
    let valid = spill::read_all(input)?;
    std::fs::remove_file(input).map_err(|source| Error::Scratch { path: input.to_path_buf(), source })?;
    let context = format!("rebuilding silver/{}", table.name);
    let schema = table.contract.schema.clone();
    let (rows, tombstones, counts) = match &table.history {
        History::Latest { delete } => {
            let latest = latest_per_key(&schema, valid, &table.keys, &table.order_by, WRITE_BATCH_ROWS)?;
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
            let kept = first_in_window(&schema, valid, &table.keys, *time, *window, &mut seen, WRITE_BATCH_ROWS)?;
            (kept, Vec::new(), Rebuilt::default())
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
                &valid,
            )?;
            (rows, Vec::new(), counts)
        }
    };
    let numbered = with_row_id(out_schema);
    let mut out = SpillWriter::create(out_dir, &slice.to_string(), &numbered)?;
    let mut next = first;
    for b in rows {
        out.write(&number(&b, &numbered, next)?)?;
        next += b.num_rows() as i64;
    }
    let (_, rows) = out.finish()?;
    Ok(Resolved { rows, tombstones, counts })
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
