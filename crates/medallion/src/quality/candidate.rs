//! Staging a run's candidate data in a session, for set- and table-level expectations
//! ([`super::checks`]): what the table would hold if this run were published.
//!
//! - gold (overwrite): the model's result rows;
//! - silver (merge): the published rows not replaced by this run, plus the run's rows that the
//!   MERGE would write (new keys, or newer than the published row by `order_by`): the same rule
//!   as [`crate::storage::delta::Table::upsert`];
//! - silver event tables (append): the published rows plus the run's new events.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::checks::{ROW_ID, ROWS, THIS};
use crate::error::{Error, Result};
use crate::spec::ident;

const INCOMING: &str = "__medallion_incoming";
/// The run's rows the merge would write (with `__medallion_new`: no published row has its key).
pub const WINNERS: &str = "__medallion_winners";
const NUMBERED: &str = "__medallion_numbered";
const DROPPED: &str = "__medallion_dropped";

/// Stages `batches` (of `schema`) as the whole candidate table.
pub async fn stage_rows(ctx: &SessionContext, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    replace(ctx, ROWS, memtable(schema, batches)?)?;
    stage_this(ctx, schema).await
}

/// What the merge staging's errors say it was doing.
const MERGE_CONTEXT: &str = "staging the merge candidate";

/// Stages the candidate of merging `batches` (unique per key) into `target` (a registered table
/// name) by `keys`, newer by `order_by`. `published`, when given, holds per row what the table
/// holds for its key (see `Table::published_orders`): the winners are then picked in memory,
/// without joining the table in SQL.
pub async fn stage_merge(
    ctx: &SessionContext,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    target: &str,
    keys: &[String],
    order_by: &str,
    published: Option<&[Option<Option<i64>>]>,
) -> Result<()> {
    let context = MERGE_CONTEXT;
    match published {
        Some(p) => replace(ctx, WINNERS, winners_in_memory(schema, batches, order_by, p)?)?,
        None => stage_winners_by_join(ctx, schema, batches, target, keys, order_by).await?,
    }
    let cols: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let same: Vec<String> = keys.iter().map(|k| format!("w.{k} = x.{k}", k = ident(k))).collect();
    let kept = cols.iter().map(|c| format!("x.{c}")).collect::<Vec<_>>().join(", ");
    let merged = format!(
        "SELECT {kept}, CAST(NULL AS BIGINT) AS {ROW_ID} FROM {target} AS x WHERE NOT EXISTS (SELECT 1 FROM {WINNERS} AS w WHERE {same}) \
         UNION ALL SELECT {cols}, {ROW_ID} FROM {WINNERS}",
        same = same.join(" AND "),
        cols = cols.join(", ")
    );
    let view = ctx.sql(&merged).await.map_err(|e| Error::sql(context, e))?.into_view();
    replace(ctx, ROWS, view)?;
    stage_this(ctx, schema).await
}

/// The winners of merging `batches` into `target`, by a join on the keys (any key types).
async fn stage_winners_by_join(
    ctx: &SessionContext,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    target: &str,
    keys: &[String],
    order_by: &str,
) -> Result<()> {
    replace(ctx, INCOMING, memtable(schema, batches)?)?;
    let context = MERGE_CONTEXT;
    let on: Vec<String> = keys.iter().map(|k| format!("s.{k} = t.{k}", k = ident(k))).collect();
    let target_keys: Vec<String> = keys.iter().map(|k| ident(k)).collect();
    let winners = format!(
        "SELECT s.*, t.__medallion_hit IS NULL AS __medallion_new FROM {INCOMING} AS s LEFT JOIN (SELECT {tk}, {o} AS __medallion_order, true AS __medallion_hit FROM {target}) AS t ON {on} \
         WHERE t.__medallion_hit IS NULL OR s.{o} > t.__medallion_order",
        tk = target_keys.join(", "),
        o = ident(order_by),
        on = on.join(" AND ")
    );
    let df = ctx.sql(&winners).await.map_err(|e| Error::sql(context, e))?;
    let with_id: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let rows = df.collect().await.map_err(|e| Error::sql(context, e))?;
    let winners = MemTable::try_new(with_id, vec![rows]).map_err(|e| Error::sql(context, e))?;
    replace(ctx, WINNERS, Arc::new(winners))?;
    ctx.deregister_table(INCOMING).map_err(|e| Error::sql(context, e))?;
    Ok(())
}

/// The winners of merging `batches` given what the table holds per row's key (`published`): rows
/// of new keys, and rows whose order value is greater than the published row's (both present).
fn winners_in_memory(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    order_by: &str,
    published: &[Option<Option<i64>>],
) -> Result<Arc<MemTable>> {
    let context = MERGE_CONTEXT;
    let with_id = with_row_id(schema);
    let mut fields: Vec<Field> = with_id.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("__medallion_new", DataType::Boolean, false));
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(batches.len());
    let mut offset = 0usize;
    for b in batches {
        let n = b.num_rows();
        let numbered = number(b, &with_id, offset as i64)?;
        let orders =
            b.column_by_name(order_by).ok_or_else(|| Error::Internal(format!("{context}: no column `{order_by}`")))?;
        let orders =
            datafusion::arrow::compute::cast(orders, &DataType::Int64).map_err(|e| Error::arrow(context, e))?;
        let orders = orders.as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::Internal(context.into()))?;
        let rows = published.get(offset..offset + n).ok_or_else(|| Error::Internal(format!("{context}: rows")))?;
        let wins: BooleanArray = rows
            .iter()
            .enumerate()
            .map(|(r, p)| {
                Some(match p {
                    None => true,
                    Some(Some(t)) => orders.is_valid(r) && orders.value(r) > *t,
                    Some(None) => false,
                })
            })
            .collect();
        let new: ArrayRef = Arc::new(BooleanArray::from(rows.iter().map(Option::is_none).collect::<Vec<bool>>()));
        let mut cols = numbered.columns().to_vec();
        cols.push(new);
        let all = RecordBatch::try_new(Arc::clone(&out_schema), cols).map_err(|e| Error::arrow(context, e))?;
        out.push(filter_record_batch(&all, &wins).map_err(|e| Error::arrow(context, e))?);
        offset += n;
    }
    if offset != published.len() {
        return Err(Error::Internal(format!("{context}: {offset} rows, {} published matches", published.len())));
    }
    Ok(Arc::new(MemTable::try_new(out_schema, vec![out]).map_err(|e| Error::sql(context, e))?))
}

/// Of the staged merge's winners, those of keys the published table does not hold.
pub async fn new_winners(ctx: &SessionContext) -> Result<u64> {
    super::checks::count(ctx, &format!("SELECT count(*) FROM {WINNERS} WHERE __medallion_new"), "counting new keys")
        .await
}

/// Stages the candidate of appending `batches` to `target` (a registered table name): the
/// published rows, then the new ones.
pub async fn stage_append(
    ctx: &SessionContext,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    target: &str,
) -> Result<()> {
    replace(ctx, INCOMING, memtable(schema, batches)?)?;
    let cols: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let appended = format!(
        "SELECT {cols}, CAST(NULL AS BIGINT) AS {ROW_ID} FROM {target} UNION ALL SELECT {cols}, {ROW_ID} FROM {INCOMING}",
        cols = cols.join(", ")
    );
    let view = ctx.sql(&appended).await.map_err(|e| Error::sql("staging the append candidate", e))?.into_view();
    replace(ctx, ROWS, view)?;
    stage_this(ctx, schema).await
}

/// Stages `rows` (the columns of `schema` plus [`ROW_ID`], read where they lie) as the whole
/// candidate table, less the rows whose id is in `dropped`.
pub async fn stage_numbered(
    ctx: &SessionContext,
    schema: &SchemaRef,
    rows: Arc<dyn TableProvider>,
    dropped: &BTreeSet<i64>,
) -> Result<()> {
    let context = "staging the candidate";
    replace(ctx, NUMBERED, rows)?;
    let sql = if dropped.is_empty() {
        format!("SELECT * FROM {NUMBERED}")
    } else {
        register_ids(ctx, DROPPED, dropped.iter().copied())?;
        format!("SELECT * FROM {NUMBERED} WHERE {ROW_ID} NOT IN (SELECT id FROM {DROPPED})")
    };
    let view = ctx.sql(&sql).await.map_err(|e| Error::sql(context, e))?.into_view();
    replace(ctx, ROWS, view)?;
    stage_this(ctx, schema).await
}

/// Splits `batches` into the rows whose position (numbered across batches, as staged) is not in
/// `ids`, and those that are.
pub fn split(batches: Vec<RecordBatch>, ids: &BTreeSet<i64>) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    if ids.is_empty() {
        return Ok((batches, Vec::new()));
    }
    let mut kept = Vec::with_capacity(batches.len());
    let mut removed = Vec::new();
    let mut offset = 0i64;
    for b in batches {
        let n = b.num_rows() as i64;
        let hit: Vec<bool> = (offset..offset + n).map(|i| ids.contains(&i)).collect();
        offset += n;
        if !hit.iter().any(|&h| h) {
            kept.push(b);
            continue;
        }
        let gone = BooleanArray::from(hit);
        let keep = datafusion::arrow::compute::not(&gone).map_err(|e| Error::arrow("dropping rows", e))?;
        removed.push(filter_record_batch(&b, &gone).map_err(|e| Error::arrow("dropping rows", e))?);
        kept.push(filter_record_batch(&b, &keep).map_err(|e| Error::arrow("dropping rows", e))?);
    }
    Ok((kept, removed))
}

async fn stage_this(ctx: &SessionContext, schema: &SchemaRef) -> Result<()> {
    let cols: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let view = ctx
        .sql(&format!("SELECT {} FROM {ROWS}", cols.join(", ")))
        .await
        .map_err(|e| Error::sql("staging the candidate", e))?
        .into_view();
    replace(ctx, THIS, view)
}

/// `schema` plus [`ROW_ID`].
pub fn with_row_id(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ROW_ID, DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

/// `batch` with [`ROW_ID`] numbering its rows from `first`, as `numbered` (a [`with_row_id`]
/// schema).
pub fn number(batch: &RecordBatch, numbered: &SchemaRef, first: i64) -> Result<RecordBatch> {
    let n = batch.num_rows() as i64;
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols.push(Arc::new(Int64Array::from_iter_values(first..first + n)));
    RecordBatch::try_new(Arc::clone(numbered), cols).map_err(|e| Error::arrow("numbering candidate rows", e))
}

/// Registers `ids` as the one-column (`id`) table `name`.
pub fn register_ids(ctx: &SessionContext, name: &str, ids: impl IntoIterator<Item = i64>) -> Result<()> {
    let context = "staging row ids";
    let ids_schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(Arc::clone(&ids_schema), vec![Arc::new(Int64Array::from_iter_values(ids))])
        .map_err(|e| Error::arrow(context, e))?;
    let table = MemTable::try_new(ids_schema, vec![vec![batch]]).map_err(|e| Error::sql(context, e))?;
    replace(ctx, name, Arc::new(table))
}

/// `batches` with [`ROW_ID`] numbering their rows from 0, as a table.
fn memtable(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Arc<MemTable>> {
    let with_id = with_row_id(schema);
    let mut offset = 0i64;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        out.push(number(b, &with_id, offset)?);
        offset += b.num_rows() as i64;
    }
    Ok(Arc::new(MemTable::try_new(with_id, vec![out]).map_err(|e| Error::sql("staging the candidate", e))?))
}

fn replace(ctx: &SessionContext, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
    ctx.deregister_table(name).map_err(|e| Error::sql(format!("staging `{name}`"), e))?;
    ctx.register_table(name, table).map(|_| ()).map_err(|e| Error::sql(format!("staging `{name}`"), e))
}
