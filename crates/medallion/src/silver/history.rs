//! How a silver table keeps changes: SCD type 1 (the latest version per key; with `delete_when`,
//! change-data apply with deletes) or SCD type 2 (every version, with `valid_from`, `valid_to`,
//! `is_current` and a stable surrogate key `_sk`).
//!
//! SCD 2 rebuilds each key's history from its events: the published versions (and the deletes
//! their gaps imply) plus this run's records, in `order_by` order. A record equal to the version
//! before it in the tracked columns opens nothing; one arriving out of order is placed where it
//! belongs; a delete closes the open version. The result replaces the table in one commit.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use super::contract::Contract;
use crate::error::{Error, Result};
use crate::spec::HistorySpec;

/// Output columns an SCD 2 table adds.
pub const VALID_FROM: &str = "valid_from";
/// End of a version (null: current).
pub const VALID_TO: &str = "valid_to";
/// Whether the version is the open one.
pub const IS_CURRENT: &str = "is_current";
/// Stable surrogate key: a hash of the business key and `valid_from`.
pub const SK: &str = "_sk";

/// A compiled history policy.
#[derive(Debug, Clone)]
pub enum History {
    /// SCD 1: latest per key; `delete` marks records that remove the key's row.
    Latest {
        /// The delete predicate.
        delete: Option<Arc<dyn PhysicalExpr>>,
    },
    /// SCD 2: every version.
    Versions {
        /// Indexes (in the contract schema) of the tracked columns.
        track: Vec<usize>,
        /// The delete predicate.
        delete: Option<Arc<dyn PhysicalExpr>>,
    },
    /// Events, appended: a record whose key was kept with an event time within `window` of its
    /// own is a duplicate (the first arrival wins).
    Events {
        /// Index (in the contract schema) of the event time column.
        time: usize,
        /// The window, in the time column's unit as [`super::dedup::time_values`] reads it
        /// (microseconds for timestamps and dates, the value itself for int64).
        window: i64,
    },
}

impl History {
    /// Compiles `spec` (None: SCD 1 without deletes) for a contract keyed by `keys`, ordered by
    /// `order_by`.
    pub fn compile(
        spec: Option<&HistorySpec>,
        contract: &Contract,
        keys: &[String],
        order_by: &str,
    ) -> Result<History, String> {
        let Some(spec) = spec else { return Ok(History::Latest { delete: None }) };
        let schema = &contract.schema;
        let delete = match &spec.delete_when {
            None => None,
            Some(sql) => Some(predicate(schema, sql).map_err(|e| format!("delete_when `{sql}`: {e}"))?),
        };
        match spec.scd {
            1 => {
                if spec.track.is_some() || !spec.exclude.is_empty() {
                    return Err("track and exclude apply to scd = 2 only".into());
                }
                Ok(History::Latest { delete })
            }
            2 => {
                let order = schema.field_with_name(order_by).map_err(|e| e.to_string())?.data_type();
                if !matches!(order, DataType::Int64 | DataType::Date32 | DataType::Timestamp(..)) {
                    return Err(format!(
                        "scd = 2 needs an order_by of type int64, date or timestamp (it becomes valid_from); `{order_by}` is {order}"
                    ));
                }
                let contract_cols = contract.column_names();
                for c in spec.track.iter().flatten().chain(&spec.exclude) {
                    if !contract_cols.contains(c) {
                        return Err(format!("column `{c}` is not in the contract"));
                    }
                }
                let track: Vec<String> = match &spec.track {
                    Some(t) => t.clone(),
                    None => {
                        contract_cols.into_iter().filter(|c| !keys.contains(c) && !spec.exclude.contains(c)).collect()
                    }
                };
                if track.is_empty() {
                    return Err("scd = 2 needs at least one tracked column".into());
                }
                let track = track.iter().filter_map(|c| schema.index_of(c).ok()).collect();
                Ok(History::Versions { track, delete })
            }
            n => Err(format!("scd must be 1 or 2, not {n}")),
        }
    }

    /// An event table deduplicated on `keys` within `spec.window` of the `spec.time` column.
    pub fn events(
        spec: &crate::spec::WindowDedupSpec,
        contract: &Contract,
        history: Option<&HistorySpec>,
        order_by: Option<&str>,
    ) -> Result<History, String> {
        if history.is_some() {
            return Err("an event table (`dedup`) keeps no `history`: remove one".into());
        }
        if order_by.is_some() {
            return Err("an event table (`dedup`) keeps the first arrival of an event: remove `order_by`".into());
        }
        let schema = &contract.schema;
        let time =
            schema.index_of(&spec.time).map_err(|_| format!("time column `{}` is not in the contract", spec.time))?;
        let window = spec.window.parse::<crate::spec::Duration>()?;
        let seconds = i64::try_from(window.seconds).map_err(|_| format!("window `{}` is too long", spec.window))?;
        let window = match schema.field(time).data_type() {
            DataType::Timestamp(..) | DataType::Date32 => seconds.saturating_mul(1_000_000),
            DataType::Int64 => seconds,
            other => {
                return Err(format!(
                    "the time column `{}` must be a timestamp, date or int64 (seconds), not {other}",
                    spec.time
                ));
            }
        };
        if window <= 0 {
            return Err("window must be longer than 0s".into());
        }
        Ok(History::Events { time, window })
    }

    /// The table's schema: the contract's, plus the SCD 2 columns.
    pub fn output_schema(&self, contract: &Contract, order_by: &str) -> SchemaRef {
        match self {
            History::Latest { .. } | History::Events { .. } => contract.schema.clone(),
            History::Versions { .. } => {
                let order =
                    contract.schema.field_with_name(order_by).map(|f| f.data_type().clone()).unwrap_or(DataType::Int64);
                let mut fields: Vec<Field> = contract.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(VALID_FROM, order.clone(), true));
                fields.push(Field::new(VALID_TO, order, true));
                fields.push(Field::new(IS_CURRENT, DataType::Boolean, true));
                fields.push(Field::new(SK, DataType::Utf8, true));
                Arc::new(Schema::new(fields))
            }
        }
    }

    /// The delete predicate, if any.
    pub fn delete(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        match self {
            History::Latest { delete } | History::Versions { delete, .. } => delete.as_ref(),
            History::Events { .. } => None,
        }
    }
}

fn predicate(schema: &SchemaRef, sql: &str) -> Result<Arc<dyn PhysicalExpr>, String> {
    let ctx = SessionContext::new();
    let first = |e: datafusion::error::DataFusionError| crate::catalog::error_line(&e);
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(first)?;
    let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(first)?;
    let expr = crate::catalog::division::floats(expr, &df_schema).map_err(first)?.data;
    let expr = ctx.create_physical_expr(expr, &df_schema).map_err(first)?;
    match expr.data_type(schema).map_err(first)? {
        DataType::Boolean => Ok(expr),
        other => Err(format!("must be a boolean expression, this one gives {other}")),
    }
}

/// Per row of `batch`: whether it is a delete (a null result is not).
pub fn deletes(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let out =
        expr.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| Error::sql("delete_when", e))?;
    let out = out.as_boolean();
    Ok((0..out.len()).map(|i| Some(out.is_valid(i) && out.value(i))).collect())
}

/// What rebuilding an SCD 2 history did with the run's records.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rebuilt {
    /// Records that became a version.
    pub inserted: u64,
    /// Deletes that closed an open version.
    pub closed: u64,
    /// Records that changed nothing (unchanged re-sends, deletes of nothing, ties lost).
    pub superseded: u64,
}

#[derive(Debug, Clone, Copy)]
enum What {
    /// A version: source (0 = published, 1 = incoming) and row in the stacked inputs.
    Version(usize),
    Delete,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    order: i64,
    /// Arrival rank: published events first, then incoming in record order.
    rank: usize,
    what: What,
    incoming: bool,
}

/// Rebuilds the full SCD 2 history: `published` (rows of the table, any string encoding) with
/// `incoming` (valid records in the contract schema, in arrival order) merged in.
#[allow(clippy::too_many_arguments)]
pub fn rebuild(
    contract: &Contract,
    out_schema: &SchemaRef,
    keys: &[String],
    order_by: &str,
    track: &[usize],
    delete: Option<&Arc<dyn PhysicalExpr>>,
    published: &[RecordBatch],
    incoming: &[RecordBatch],
) -> Result<(Vec<RecordBatch>, Rebuilt)> {
    let schema = &contract.schema;
    let n_cols = schema.fields().len();
    let context = "rebuilding SCD 2 history";
    // Stack everything into one batch of contract columns: published rows first.
    let mut parts: Vec<RecordBatch> = Vec::new();
    let mut valid_from: Vec<Option<i64>> = Vec::new();
    let mut valid_to: Vec<Option<i64>> = Vec::new();
    for b in published {
        let cols: Vec<ArrayRef> = (0..n_cols)
            .map(|i| cast(b.column(i), schema.field(i).data_type()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::arrow(context, e))?;
        parts.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::arrow(context, e))?);
        valid_from.extend(as_i64(b.column(n_cols), context)?);
        valid_to.extend(as_i64(b.column(n_cols + 1), context)?);
    }
    let n_published = valid_from.len();
    let mut is_delete: Vec<bool> = vec![false; n_published];
    for b in incoming {
        valid_from.extend(as_i64(
            b.column_by_name(order_by).ok_or_else(|| Error::Internal(format!("no column {order_by}")))?,
            context,
        )?);
        match delete {
            Some(expr) => is_delete.extend(deletes(expr, b)?.iter().map(|d| d == Some(true))),
            None => is_delete.extend(std::iter::repeat_n(false, b.num_rows())),
        }
        parts.push(b.clone());
    }
    let all = datafusion::arrow::compute::concat_batches(schema, &parts).map_err(|e| Error::arrow(context, e))?;
    let n = all.num_rows();
    let key_idx: Vec<usize> = keys.iter().filter_map(|k| schema.index_of(k).ok()).collect();
    let rows_of = |idx: &[usize]| -> Result<datafusion::arrow::row::Rows> {
        let conv =
            RowConverter::new(idx.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())
                .map_err(|e| Error::arrow(context, e))?;
        conv.convert_columns(&idx.iter().map(|&i| Arc::clone(all.column(i))).collect::<Vec<_>>())
            .map_err(|e| Error::arrow(context, e))
    };
    let key_rows = rows_of(&key_idx)?;
    let track_rows = rows_of(track)?;

    // Events per key.
    let mut by_key: HashMap<&[u8], Vec<Event>> = HashMap::new();
    let mut starts: HashMap<(&[u8], i64), ()> = HashMap::new();
    for r in 0..n_published {
        if let Some(from) = valid_from[r] {
            starts.insert((key_rows.row(r).data(), from), ());
        }
    }
    let mut counts = Rebuilt::default();
    for r in 0..n {
        let key = key_rows.row(r).data();
        let Some(order) = valid_from[r] else {
            // An incoming record without an ordering value cannot be placed in history.
            counts.superseded += u64::from(r >= n_published);
            continue;
        };
        let events = by_key.entry(key).or_default();
        let incoming = r >= n_published;
        events.push(Event {
            order,
            rank: r,
            what: if is_delete[r] { What::Delete } else { What::Version(r) },
            incoming,
        });
        // A published version closed where no version starts was closed by a delete.
        if !incoming
            && let Some(to) = valid_to[r]
            && !starts.contains_key(&(key, to))
        {
            events.push(Event { order: to, rank: r, what: What::Delete, incoming: false });
        }
    }

    // Walk each key's events in order; the later arrival wins a tie (unless it repeats the earlier).
    let mut versions: Vec<(usize, i64, Option<i64>)> = Vec::new();
    for events in by_key.values_mut() {
        events.sort_by_key(|e| (e.order, e.rank));
        let mut deduped: Vec<Event> = Vec::with_capacity(events.len());
        for e in events.iter() {
            if let Some(last) = deduped.last_mut()
                && last.order == e.order
            {
                // A re-sent version equal to the earlier one at the same instant changes nothing,
                // whether that one is published or arrived earlier in this run: so promoting
                // batches one by one and all at once (a rebuild) keep the same row (issue 15).
                let same = matches!((last.what, e.what), (What::Version(a), What::Version(b)) if track_rows.row(a) == track_rows.row(b));
                if same {
                    counts.superseded += u64::from(e.incoming);
                    continue;
                }
                counts.superseded += u64::from(last.incoming);
                *last = *e;
                continue;
            }
            deduped.push(*e);
        }
        let mut open: Option<(usize, i64, bool)> = None;
        let mut closed: Vec<(usize, i64, Option<i64>, bool)> = Vec::new();
        for e in &deduped {
            match e.what {
                What::Delete => match open.take() {
                    Some((row, from, inc)) => {
                        closed.push((row, from, Some(e.order), inc));
                        counts.closed += u64::from(e.incoming);
                    }
                    None => counts.superseded += u64::from(e.incoming),
                },
                What::Version(row) => {
                    if let Some((open_row, _, _)) = open
                        && track_rows.row(open_row) == track_rows.row(row)
                    {
                        counts.superseded += u64::from(e.incoming);
                        continue;
                    }
                    if let Some((open_row, from, inc)) = open.take() {
                        closed.push((open_row, from, Some(e.order), inc));
                    }
                    open = Some((row, e.order, e.incoming));
                }
            }
        }
        if let Some((row, from, inc)) = open {
            closed.push((row, from, None, inc));
        }
        for (row, from, to, inc) in closed {
            counts.inserted += u64::from(inc);
            versions.push((row, from, to));
        }
    }
    versions.sort_by(|a, b| key_rows.row(a.0).cmp(&key_rows.row(b.0)).then(a.1.cmp(&b.1)));

    // Assemble the output rows.
    let indices: Vec<(usize, usize)> = versions.iter().map(|(r, _, _)| (0, *r)).collect();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for c in all.columns() {
        cols.push(interleave(&[c.as_ref()], &indices).map_err(|e| Error::arrow(context, e))?);
    }
    let order_type = out_schema.field(n_cols).data_type();
    cols.push(from_i64(versions.iter().map(|v| Some(v.1)).collect(), order_type, context)?);
    cols.push(from_i64(versions.iter().map(|v| v.2).collect(), order_type, context)?);
    cols.push(Arc::new(versions.iter().map(|v| Some(v.2.is_none())).collect::<BooleanArray>()));
    let sk: StringArray = versions
        .iter()
        .map(|(r, from, _)| {
            let mut h = Sha256::new();
            h.update(key_rows.row(*r).as_ref());
            h.update(from.to_le_bytes());
            Some(h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
        })
        .collect();
    cols.push(Arc::new(sk));
    let batch = RecordBatch::try_new(out_schema.clone(), cols).map_err(|e| Error::arrow(context, e))?;
    Ok((vec![batch], counts))
}

fn as_i64(col: &ArrayRef, context: &str) -> Result<Vec<Option<i64>>> {
    let col = match col.data_type() {
        DataType::Timestamp(..) => {
            cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).and_then(|c| cast(&c, &DataType::Int64))
        }
        _ => cast(col, &DataType::Int64),
    }
    .map_err(|e| Error::arrow(context, e))?;
    let col = col.as_primitive::<Int64Type>();
    Ok((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i))).collect())
}

fn from_i64(values: Vec<Option<i64>>, ty: &DataType, context: &str) -> Result<ArrayRef> {
    let ints: ArrayRef = Arc::new(Int64Array::from(values));
    match ty {
        DataType::Timestamp(unit, tz) => {
            let plain = cast(&ints, &DataType::Timestamp(*unit, None)).map_err(|e| Error::arrow(context, e))?;
            cast(&plain, &DataType::Timestamp(*unit, tz.clone())).map_err(|e| Error::arrow(context, e))
        }
        DataType::Date32 => cast(&cast(&ints, &DataType::Int32).map_err(|e| Error::arrow(context, e))?, ty)
            .map_err(|e| Error::arrow(context, e)),
        _ => cast(&ints, ty).map_err(|e| Error::arrow(context, e)),
    }
}
