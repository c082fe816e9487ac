//! Publishing to silver, in one commit carrying the promotion's (or replay's) txn: rows merged
//! by key (the keyed copy-on-write merge or delta-rs's MERGE, newer wins), change data applied
//! with deletes and tombstones, an SCD 2 history replacing the table, an event table's new rows
//! appended, or a rebuild's rows streamed in to replace it (after its tombstones).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use super::history::{self, Rebuilt};
use super::spill::Spilled;
use super::table::SilverTable;
use crate::catalog;
use crate::error::{Error, Result};
use crate::storage::delta::{Gate, InMemory, KeyScan, Rows, Table, Txn, Upsert, WriteOptions, creation_properties};
use crate::storage::{Lake, Layer};

/// What a promotion (or a replay) writes to silver.
pub(crate) enum Publish {
    /// Rows (unique per key) merged by key.
    /// `scanned`: what the audit's scan of the table's keys found for these rows.
    Merge { rows: Vec<RecordBatch>, delete: Option<Arc<dyn PhysicalExpr>>, scanned: Option<KeyScan> },
    /// The table's whole new content (SCD 2 history), with what the run's records did.
    Replace { rows: Vec<RecordBatch>, counts: Rebuilt },
    /// Rows appended (an event table's new events).
    Append { rows: Vec<RecordBatch> },
}

impl Publish {
    /// Rows it writes.
    pub(crate) fn rows(&self) -> u64 {
        match self {
            Publish::Merge { rows, .. } | Publish::Replace { rows, .. } | Publish::Append { rows } => {
                rows.iter().map(|b| b.num_rows() as u64).sum()
            }
        }
    }
}

/// What publishing did.
pub(crate) struct Published {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Known for SCD 2 (records that changed nothing); for merges, derived by the caller.
    pub superseded: Option<u64>,
    pub version: Option<i64>,
}

impl Published {
    /// What a merge did.
    pub(crate) fn merged(m: Merged) -> Published {
        Published { inserted: m.inserted, updated: m.updated, deleted: m.deleted, superseded: None, version: m.version }
    }
}

/// Writes `plan` to `table` in one commit carrying `txn` (plus tombstones for deletes), once
/// `gate` opens: a keyed merge reads and writes meanwhile, the others wait before they start.
pub(crate) async fn publish(
    lake: &Lake,
    table: &SilverTable,
    plan: Publish,
    (txn, meta): (Txn, HashMap<String, serde_json::Value>),
    gate: Gate,
) -> Result<Published> {
    match plan {
        Publish::Merge { rows, delete: None, scanned } => {
            let merged = merge_into(lake, table, Candidate::Memory(rows, scanned), (txn, meta), gate).await?;
            Ok(Published::merged(merged))
        }
        Publish::Merge { rows, delete: Some(delete), .. } => {
            gate.pass().await?;
            Ok(Published::merged(apply_changes(lake, table, rows, &delete, txn, meta).await?))
        }
        Publish::Append { rows } => {
            gate.pass().await?;
            let inserted = rows.iter().map(|b| b.num_rows() as u64).sum();
            // An empty append still commits, so the txn records the promotion as done.
            let rows = if rows.is_empty() { vec![RecordBatch::new_empty(table.contract.schema.clone())] } else { rows };
            let version = write_rows(lake, table, rows, txn, meta, false).await?;
            Ok(Published { inserted, updated: 0, deleted: 0, superseded: None, version })
        }
        Publish::Replace { rows, counts } => {
            gate.pass().await?;
            let version = write_rows(lake, table, rows, txn, meta, true).await?;
            Ok(Published {
                inserted: counts.inserted,
                updated: counts.closed,
                deleted: 0,
                superseded: Some(counts.superseded),
                version,
            })
        }
    }
}

/// Appends `rows` to `table` (or replaces its content: `overwrite`) in one commit carrying `txn`.
async fn write_rows(
    lake: &Lake,
    table: &SilverTable,
    rows: Vec<RecordBatch>,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
    overwrite: bool,
) -> Result<Option<i64>> {
    let write = WriteOptions {
        overwrite,
        partition_by: table.partition_by.clone(),
        txn: Some(txn),
        metadata,
        change_feed: table.change_feed,
        deletion_vectors: table.deletion_vectors,
        ..Default::default()
    };
    Ok(Table::open(lake, Layer::Silver, &table.name).await?.write(rows, write).await?.version())
}

/// What a merge into silver did.
pub(crate) struct Merged {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub version: Option<i64>,
}

/// Rows to merge into silver (unique per key): in memory (with what an audit's scan of the
/// table's keys found for them, if one ran), or spilled to scratch files by a promotion too large
/// to hold (read in passes, a batch at a time, when the keyed merge applies).
pub(crate) enum Candidate {
    Memory(Vec<RecordBatch>, Option<KeyScan>),
    Spilled(Spilled),
}

/// Merges `rows` (unique per key) into `table` in one commit carrying `txn`, once `gate` opens:
/// creates the table on first write, and commits even when there is nothing to merge, so the txn
/// is recorded.
pub(crate) async fn merge_into(
    lake: &Lake,
    table: &SilverTable,
    rows: Candidate,
    (txn, metadata): (Txn, HashMap<String, serde_json::Value>),
    gate: Gate,
) -> Result<Merged> {
    let schema = table.contract.schema.clone();
    let unique: u64 = match &rows {
        Candidate::Memory(rows, _) => rows.iter().map(|b| b.num_rows() as u64).sum(),
        Candidate::Spilled(rows) => rows.count(),
    };
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if !silver.exists() {
        gate.pass().await?;
        return create(silver, table, rows, unique, txn, metadata).await;
    }
    let silver = declared_merge_mode(silver, table).await?;
    if unique == 0 {
        gate.pass().await?;
        return commit_nothing(silver, schema, txn, metadata).await;
    }
    let (rows, scanned): (Box<dyn Rows>, _) = match rows {
        Candidate::Memory(rows, scanned) => (Box::new(InMemory::new(schema, rows)), scanned),
        Candidate::Spilled(rows) => (Box::new(rows), None),
    };
    let bounds = key_bounds(rows.as_ref(), table)?;
    let upsert = Upsert {
        keys: table.keys.clone(),
        order_by: table.order_by.clone(),
        columns,
        bounds,
        txn: Some(txn),
        metadata,
        delete_column: None,
        scanned,
        gate,
    };
    let (silver, metrics) = silver.upsert_from(rows.as_ref(), upsert).await?;
    if metrics.num_source_rows as u64 != unique {
        return Err(Error::Internal(format!("merge read {} source rows, expected {unique}", metrics.num_source_rows)));
    }
    Ok(Merged {
        inserted: metrics.num_target_rows_inserted as u64,
        updated: metrics.num_target_rows_updated as u64,
        deleted: metrics.num_target_rows_deleted as u64,
        version: silver.version(),
    })
}

/// `silver` with the merge mode its contract declares: a `merge` written in the contract is
/// followed by an existing table too (the default is only for new ones: upgrading medallion never
/// changes what readers a table needs).
async fn declared_merge_mode(silver: Table, table: &SilverTable) -> Result<Table> {
    match table.declared_deletion_vectors {
        Some(on) => silver.with_deletion_vectors(on).await,
        None => Ok(silver),
    }
}

/// Publishes the files a cluster's executors wrote for `table` (`adds`, not committed; `unique`
/// rows, unique per key) in one commit carrying `txn`. A new table is created with them; a `rebuild` replaces the
/// table's content with them (its properties kept, a changed schema recorded); else they are
/// merged as [`merge_into`] merges rows: the keyed merge commits them as they are (reading their
/// key and order columns only), or, where it does not apply, they are read back and merged as
/// rows (and then deleted).
pub(crate) async fn publish_written(
    lake: &Lake,
    table: &SilverTable,
    (adds, unique): (&[String], u64),
    rebuild: bool,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Merged> {
    let schema = table.contract.schema.clone();
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    if !silver.exists() {
        let silver = create_written(silver, table, adds, txn, metadata).await?;
        return Ok(Merged { inserted: unique, updated: 0, deleted: 0, version: silver.version() });
    }
    if rebuild {
        let silver = silver.commit_files(adds, &schema, Some(txn), metadata).await?;
        return Ok(Merged { inserted: unique, updated: 0, deleted: 0, version: silver.version() });
    }
    let silver = declared_merge_mode(silver, table).await?;
    if unique == 0 {
        silver.discard_files(adds).await?;
        return commit_nothing(silver, schema, txn, metadata).await;
    }
    if let [key] = table.keys.as_slice()
        && let Some((merged, metrics)) =
            silver.upsert_written(adds, (key, &table.order_by), txn.clone(), metadata.clone()).await?
    {
        if metrics.num_source_rows as u64 != unique {
            return Err(Error::Internal(format!(
                "merge read {} rows of the written files, their statistics say {unique}",
                metrics.num_source_rows
            )));
        }
        return Ok(Merged {
            inserted: metrics.num_target_rows_inserted as u64,
            updated: metrics.num_target_rows_updated as u64,
            deleted: metrics.num_target_rows_deleted as u64,
            version: merged.version(),
        });
    }
    let rows = silver.read_written(adds, &schema).await?;
    let merged = merge_into(lake, table, Candidate::Memory(rows, None), (txn, metadata), Gate::open()).await?;
    if let Err(e) = silver.discard_files(adds).await {
        tracing::warn!(table = %table.name, "written files left for vacuum: {e}");
    }
    Ok(merged)
}

/// The table's first commit, of the files a cluster's executors wrote (`adds`), with a change data
/// feed and deletion vectors as the table declares (it is not partitioned).
async fn create_written(
    silver: Table,
    table: &SilverTable,
    adds: &[String],
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Table> {
    let properties = creation_properties(table.change_feed, table.deletion_vectors);
    silver.create_from_files(adds, &table.contract.schema, &properties, Some(txn), metadata).await
}

/// The table's first commit: `rows` (`inserted` of them), partitioned and with a change data
/// feed as the table declares.
async fn create(
    silver: Table,
    table: &SilverTable,
    rows: Candidate,
    inserted: u64,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Merged> {
    let write = creating(table, txn, metadata);
    let silver = match rows {
        Candidate::Memory(rows, _) => silver.write(rows, write).await?,
        Candidate::Spilled(rows) => silver.write_from(&rows, write).await?,
    };
    Ok(Merged { inserted, updated: 0, deleted: 0, version: silver.version() })
}

/// The table's first commit from a stream of rows (unique per key), as [`create`] writes it: its
/// version.
pub(crate) async fn create_streamed(
    silver: Table,
    table: &SilverTable,
    rows: SendableRecordBatchStream,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Option<i64>> {
    Ok(silver.write_stream(rows, creating(table, txn, metadata)).await?.version())
}

/// How a table's first commit writes: partitioned, with a change data feed and deletion vectors
/// as the table declares; its rows, which have no order, on every core at once.
fn creating(table: &SilverTable, txn: Txn, metadata: HashMap<String, serde_json::Value>) -> WriteOptions {
    WriteOptions {
        partition_by: table.partition_by.clone(),
        txn: Some(txn),
        metadata,
        change_feed: table.change_feed,
        deletion_vectors: table.deletion_vectors,
        any_order: true,
        ..Default::default()
    }
}

/// A commit that changes no row but records `txn`, so the promotion counts as done.
async fn commit_nothing(
    silver: Table,
    schema: SchemaRef,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Merged> {
    let write = WriteOptions { txn: Some(txn), metadata, ..Default::default() };
    let silver = silver.write(vec![RecordBatch::new_empty(schema)], write).await?;
    Ok(Merged { inserted: 0, updated: 0, deleted: 0, version: silver.version() })
}

/// Column flagging delete records in a change-data merge source.
const DELETE_FLAG: &str = "__medallion_delete";

/// SCD 1 with deletes (change-data apply): `rows` (latest per key) merged in `order_by` order,
/// delete records removing their key's row. A tombstone per deleted key (the delete's order value,
/// in `_medallion/tombstones/<table>`) makes older records arriving later superseded instead of
/// bringing the key back. Tombstones are committed first with the same txn, so a retry skips them.
pub(crate) async fn apply_changes(
    lake: &Lake,
    table: &SilverTable,
    rows: Vec<RecordBatch>,
    delete: &Arc<dyn PhysicalExpr>,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Merged> {
    let context = format!("applying changes to silver/{}", table.name);
    let schema = table.contract.schema.clone();
    let mut fields: Vec<datafusion::arrow::datatypes::Field> =
        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(datafusion::arrow::datatypes::Field::new(DELETE_FLAG, DataType::Boolean, false));
    let flagged_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    let mut flagged = Vec::with_capacity(rows.len());
    for b in &rows {
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(history::deletes(delete, b)?));
        flagged.push(RecordBatch::try_new(flagged_schema.clone(), cols).map_err(|e| Error::arrow(&context, e))?);
    }
    let ctx = SessionContext::new();
    let src = datafusion::datasource::MemTable::try_new(flagged_schema.clone(), vec![flagged])
        .map_err(|e| Error::sql(&context, e))?;
    ctx.register_table("r", Arc::new(src)).map_err(|e| Error::sql(&context, e))?;
    let tombs = Table::open(lake, Layer::System, &format!("tombstones/{}", table.name)).await?;
    let keys: Vec<String> = table.keys.iter().map(|k| crate::spec::ident(k)).collect();
    let order = crate::spec::ident(&table.order_by);
    let kept = if tombs.exists() {
        ctx.register_table("t", tombs.provider(&ctx).await?).map_err(|e| Error::sql(&context, e))?;
        let on: Vec<String> = keys.iter().map(|k| format!("r.{k} = t.{k}")).collect();
        let sql = format!(
            "SELECT r.* FROM r LEFT JOIN t ON {} WHERE t.{order} IS NULL OR r.{order} >= t.{order}",
            on.join(" AND ")
        );
        catalog::query(&ctx, &sql, &context).await?
    } else {
        catalog::query(&ctx, "SELECT * FROM r", &context).await?
    };
    // Tombstones for this run's deletes.
    if tombs.txn_version(&txn.app_id).await?.unwrap_or(0) < txn.version {
        ctx.deregister_table("k").map_err(|e| Error::sql(&context, e))?;
        let kept_table = datafusion::datasource::MemTable::try_new(flagged_schema.clone(), vec![kept.clone()])
            .map_err(|e| Error::sql(&context, e))?;
        ctx.register_table("k", Arc::new(kept_table)).map_err(|e| Error::sql(&context, e))?;
        let sql = format!("SELECT {}, {order} FROM k WHERE {DELETE_FLAG}", keys.join(", "));
        let deletes = ctx.sql(&sql).await.map_err(|e| Error::sql(&context, e))?;
        let meta = metadata.clone();
        if !tombs.exists() {
            let batches = deletes.collect().await.map_err(|e| Error::sql(&context, e))?;
            let batches = if batches.is_empty() { vec![RecordBatch::new_empty(tomb_schema(table)?)] } else { batches };
            tombs.write(batches, WriteOptions { txn: Some(txn.clone()), metadata: meta, ..Default::default() }).await?;
        } else {
            let mut columns = table.keys.clone();
            columns.push(table.order_by.clone());
            let upsert = Upsert {
                keys: table.keys.clone(),
                order_by: table.order_by.clone(),
                columns,
                bounds: Vec::new(),
                txn: Some(txn.clone()),
                metadata: meta,
                delete_column: None,
                scanned: None,
                gate: Gate::open(),
            };
            tombs.upsert(deletes, upsert).await?;
        }
    }
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let n_kept: u64 = kept.iter().map(|b| b.num_rows() as u64).sum();
    if !silver.exists() {
        // A new table: the non-delete records are its rows.
        let mut inserts = Vec::new();
        for b in &kept {
            let flags = b.column(b.num_columns() - 1).as_boolean();
            let keep = datafusion::arrow::compute::not(flags).map_err(|e| Error::arrow(&context, e))?;
            let b = datafusion::arrow::compute::filter_record_batch(b, &keep).map_err(|e| Error::arrow(&context, e))?;
            inserts.push(
                b.project(&(0..schema.fields().len()).collect::<Vec<_>>()).map_err(|e| Error::arrow(&context, e))?,
            );
        }
        let inserted = inserts.iter().map(|b| b.num_rows() as u64).sum();
        let inserts = if inserts.is_empty() { vec![RecordBatch::new_empty(schema)] } else { inserts };
        return create(silver, table, Candidate::Memory(inserts, None), inserted, txn, metadata).await;
    }
    if n_kept == 0 {
        return commit_nothing(silver, schema, txn, metadata).await;
    }
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let source = ctx.read_batches(kept).map_err(|e| Error::sql(&context, e))?;
    let upsert = Upsert {
        keys: table.keys.clone(),
        order_by: table.order_by.clone(),
        columns,
        bounds: Vec::new(),
        txn: Some(txn),
        metadata,
        delete_column: Some(DELETE_FLAG.to_string()),
        scanned: None,
        gate: Gate::open(),
    };
    let (silver, metrics) = silver.upsert(source, upsert).await?;
    Ok(Merged {
        inserted: metrics.num_target_rows_inserted as u64,
        updated: metrics.num_target_rows_updated as u64,
        deleted: metrics.num_target_rows_deleted as u64,
        version: silver.version(),
    })
}

/// A rebuild's tombstones (`deletes`: key and order columns of each key whose latest record is
/// a delete) replace the table's, in one commit carrying `txn`; skipped when it already landed.
pub(crate) async fn replace_tombstones(
    lake: &Lake,
    table: &SilverTable,
    deletes: Vec<RecordBatch>,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<()> {
    let tombs = Table::open(lake, Layer::System, &format!("tombstones/{}", table.name)).await?;
    if tombs.txn_version(&txn.app_id).await?.unwrap_or(0) >= txn.version {
        return Ok(());
    }
    let write = WriteOptions { overwrite: tombs.exists(), txn: Some(txn), metadata, ..Default::default() };
    let deletes = if deletes.is_empty() { vec![RecordBatch::new_empty(tomb_schema(table)?)] } else { deletes };
    tombs.write(deletes, write).await?;
    Ok(())
}

/// A rebuild's rows (`rows`, streamed) replace the table's content in one commit carrying `txn`,
/// laid out by the table's `partition_by` again (it may have changed).
pub(crate) async fn replace_streamed(
    lake: &Lake,
    table: &SilverTable,
    rows: SendableRecordBatchStream,
    txn: Txn,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Option<i64>> {
    let write = WriteOptions {
        overwrite: true,
        partition_by: table.partition_by.clone(),
        txn: Some(txn),
        metadata,
        change_feed: table.change_feed,
        replace_where: None,
        repartition: true,
        deletion_vectors: false,
        row_group_rows: None,
        file_bytes: None,
        any_order: true,
        gate: Gate::open(),
    };
    Ok(Table::open(lake, Layer::Silver, &table.name).await?.write_stream(rows, write).await?.version())
}

/// Key and order columns of a delete-tracking table's tombstones.
pub(crate) fn tomb_schema(table: &SilverTable) -> Result<SchemaRef> {
    let mut idx: Vec<usize> = table.keys.iter().filter_map(|k| table.contract.schema.index_of(k).ok()).collect();
    idx.push(table.contract.schema.index_of(&table.order_by).map_err(|e| Error::arrow("tombstone schema", e))?);
    Ok(Arc::new(table.contract.schema.project(&idx).map_err(|e| Error::arrow("tombstone schema", e))?))
}

/// For a single integer key, `target.k BETWEEN min AND max` of the source: lets the merge skip
/// target files whose key range cannot match.
fn key_bounds(rows: &dyn Rows, table: &SilverTable) -> Result<Vec<String>> {
    let [key] = table.keys.as_slice() else { return Ok(Vec::new()) };
    let Ok(idx) = table.contract.schema.index_of(key) else { return Ok(Vec::new()) };
    if table.contract.schema.field(idx).data_type() != &DataType::Int64 {
        return Ok(Vec::new());
    }
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for b in rows.pass(Some(&[idx]))? {
        let b = b?;
        let a = b.column(0).as_primitive::<Int64Type>();
        if a.null_count() == a.len() {
            continue;
        }
        if let (Some(min), Some(max)) = (datafusion::arrow::compute::min(a), datafusion::arrow::compute::max(a)) {
            lo = lo.min(min);
            hi = hi.max(max);
        }
    }
    Ok(if lo > hi { Vec::new() } else { vec![format!("target.{key} >= {lo}"), format!("target.{key} <= {hi}")] })
}
