//! Keeping the latest record per primary key among a run's valid rows.
//!
//! Rows are compared on the order column (greatest wins), then by arrival: batches are fed oldest
//! first and rows in file order, so an exact tie goes to the later record. Keys and order values
//! use Arrow's row format, whose bytes compare like the values, so any key type works.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, interleave_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};
use crate::storage::delta::int_key_and_order;

/// Deduplicates `batches` (in arrival order) on `keys`, keeping the greatest `order_by`.
/// Returns the surviving rows (in arrival order) as batches of at most `batch_rows`.
///
/// Memory: the winners are taken batch by batch and each input batch is released as soon as its
/// winners are out (a batch without a loser is passed on as is), so the run's valid rows and
/// their deduplicated copy never coexist in full.
pub fn latest_per_key(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    keys: &[String],
    order_by: &str,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let key_idx: Vec<usize> = keys.iter().map(|k| index(schema, k)).collect::<Result<_>>()?;
    let order_idx = index(schema, order_by)?;
    let picks = match single_int_key(schema, &batches, &key_idx, order_idx)? {
        Some(picks) => picks,
        None => any_keys(schema, &batches, &key_idx, order_idx)?,
    };
    gather(schema, batches, picks, batch_rows)
}

/// `batches` as the latest row per key: as they are when they `already` are (the cluster's
/// executors kept only the latest per key after a shuffle on it), else [`latest_per_key`].
pub(crate) fn latest_unless(
    already: bool,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    keys: &[String],
    order_by: &str,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    if already {
        return Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect());
    }
    latest_per_key(schema, batches, keys, order_by, batch_rows)
}

/// The rows `picks` names (batch, row), in arrival order, as batches of at most `batch_rows`;
/// each input batch is released once its rows are out.
fn gather(
    schema: &SchemaRef,
    mut batches: Vec<RecordBatch>,
    picks: Vec<(u32, u32)>,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let batch_rows = batch_rows.max(1);
    let mut out = Vec::new();
    // Picks are distinct rows: as many as there are rows means no key repeats (the common case of
    // a daily batch), and every batch passes as it is.
    if picks.len() == batches.iter().map(RecordBatch::num_rows).sum::<usize>() {
        for batch in batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let n = batch_rows.min(batch.num_rows() - offset);
                out.push(batch.slice(offset, n));
                offset += n;
            }
        }
    } else {
        // The picked rows in arrival order: marked per batch, then read back (linear, where
        // sorting the picks took a 20th of a large promotion's time), and gathered into full
        // batches, however small the batches they come from (a large promotion's are a slice's
        // share of a chunk, a few thousand rows).
        let mut picked: Vec<Vec<bool>> = batches.iter().map(|b| vec![false; b.num_rows()]).collect();
        for (b, r) in picks {
            picked[b as usize][r as usize] = true;
        }
        let rows: Vec<(usize, usize)> = picked
            .iter()
            .enumerate()
            .flat_map(|(b, marks)| marks.iter().enumerate().filter(|(_, m)| **m).map(move |(r, _)| (b, r)))
            .collect();
        drop(picked);
        let mut released = 0;
        for part in rows.chunks(batch_rows) {
            let inputs: Vec<&RecordBatch> = batches.iter().collect();
            out.push(interleave_record_batch(&inputs, part).map_err(|e| Error::arrow("dedup output", e))?);
            // The batches whose rows are all out (rows come in batch order).
            let done = part.last().map_or(0, |&(b, _)| b);
            for batch in batches.iter_mut().take(done).skip(released) {
                *batch = RecordBatch::new_empty(Arc::clone(schema));
            }
            released = done;
        }
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(Arc::clone(schema)));
    }
    Ok(out)
}

type Fast = foldhash::fast::RandomState;

/// The best record of a key so far: (batch, row, its order value in the row format).
type Best = (u32, u32, Box<[u8]>);

/// Rows from which the common case's index is built on several threads.
const PARALLEL_ROWS: usize = 1 << 16;

/// The common case, without allocation per row: one non-null `int64` key and an order column
/// that converts to `int64` (timestamps, dates, integers). `None` when it does not apply.
fn single_int_key(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    key_idx: &[usize],
    order_idx: usize,
) -> Result<Option<Vec<(u32, u32)>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    int_key_picks(schema, batches, key_idx, order_idx, threads, PARALLEL_ROWS)
}

/// [`single_int_key`] on `threads` threads once there are `parallel_rows` rows: each thread
/// scans every row in arrival order and indexes the keys of its share (by a hash of the key), so
/// every key's rows are compared in the same order as on one thread.
fn int_key_picks(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    key_idx: &[usize],
    order_idx: usize,
    threads: usize,
    parallel_rows: usize,
) -> Result<Option<Vec<(u32, u32)>>> {
    let [k] = key_idx else { return Ok(None) };
    if !int_key_and_order(schema, batches, *k, order_idx) {
        return Ok(None);
    }
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut columns = Vec::with_capacity(batches.len());
    for (b, batch) in batches.iter().enumerate() {
        let orders = cast(batch.column(order_idx), &DataType::Int64).map_err(|e| Error::arrow("dedup order", e))?;
        columns.push((position(b)?, batch.column(*k).clone(), orders));
    }
    let parts = if total >= parallel_rows { threads.max(1) } else { 1 };
    let part_of = |key: i64| ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % parts;
    let share = |part: usize| {
        let mut best: HashMap<i64, (u32, u32, i64), Fast> =
            HashMap::with_capacity_and_hasher(total / parts + 1, Fast::default());
        for (b, keys, orders) in &columns {
            let keys = keys.as_primitive::<Int64Type>();
            let orders = orders.as_primitive::<Int64Type>();
            for r in 0..keys.len() {
                let key = keys.value(r);
                if parts > 1 && part_of(key) != part {
                    continue;
                }
                // A missing order value is older than any present one (as in the row format below).
                let o = if orders.is_null(r) { i64::MIN } else { orders.value(r) };
                let r = r as u32;
                best.entry(key)
                    .and_modify(|slot| {
                        if o >= slot.2 {
                            *slot = (*b, r, o);
                        }
                    })
                    .or_insert((*b, r, o));
            }
        }
        best.into_values().map(|(b, r, _)| (b, r)).collect::<Vec<_>>()
    };
    if parts == 1 {
        return Ok(Some(share(0)));
    }
    let share = &share;
    let picks = std::thread::scope(|scope| {
        let running: Vec<_> = (0..parts).map(|part| scope.spawn(move || share(part))).collect();
        running.into_iter().map(|t| t.join()).collect::<std::result::Result<Vec<_>, _>>()
    })
    .map_err(|_| Error::Internal("a dedup thread panicked".into()))?;
    Ok(Some(picks.concat()))
}

/// Any key and order types, through Arrow's row format (bytes compare like the values).
fn any_keys(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    key_idx: &[usize],
    order_idx: usize,
) -> Result<Vec<(u32, u32)>> {
    let key_conv =
        RowConverter::new(key_idx.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())
            .map_err(|e| Error::arrow("dedup keys", e))?;
    let order_conv = RowConverter::new(vec![SortField::new(schema.field(order_idx).data_type().clone())])
        .map_err(|e| Error::arrow("dedup order", e))?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut best: HashMap<Box<[u8]>, Best, Fast> = HashMap::with_capacity_and_hasher(total, Fast::default());
    for (b, batch) in batches.iter().enumerate() {
        let b = position(b)?;
        let key_cols: Vec<_> = key_idx.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = key_conv.convert_columns(&key_cols).map_err(|e| Error::arrow("dedup keys", e))?;
        let orders = order_conv
            .convert_columns(&[batch.column(order_idx).clone()])
            .map_err(|e| Error::arrow("dedup order", e))?;
        for r in 0..batch.num_rows() {
            let order = orders.row(r);
            let at = r as u32;
            match best.get_mut(keys.row(r).as_ref()) {
                Some(slot) => {
                    if order.as_ref() >= slot.2.as_ref() {
                        *slot = (b, at, order.as_ref().into());
                    }
                }
                None => {
                    best.insert(keys.row(r).as_ref().into(), (b, at, order.as_ref().into()));
                }
            }
        }
    }
    Ok(best.into_values().map(|(b, r, _)| (b, r)).collect())
}

/// Event times already kept, per key (in Arrow's row format), for window dedup.
#[derive(Debug, Default)]
pub struct Seen {
    times: HashMap<Box<[u8]>, Vec<i64>, Fast>,
    keys: Option<RowConverter>,
}

impl Seen {
    /// Whether `key` was kept with a time within `window` of `t`; if not, `t` is remembered.
    fn first(&mut self, key: &[u8], t: i64, window: i64) -> bool {
        match self.times.get_mut(key) {
            Some(times) if times.iter().any(|&k| k.abs_diff(t) <= window.unsigned_abs()) => false,
            Some(times) => {
                times.push(t);
                true
            }
            None => {
                self.times.insert(key.into(), vec![t]);
                true
            }
        }
    }

    fn converter(&mut self, schema: &SchemaRef, key_idx: &[usize]) -> Result<&RowConverter> {
        if self.keys.is_none() {
            let fields = key_idx.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
            self.keys = Some(RowConverter::new(fields).map_err(|e| Error::arrow("dedup keys", e))?);
        }
        self.keys.as_ref().ok_or_else(|| Error::Internal("dedup key converter".into()))
    }

    /// Remembers the (key, time) pairs of published rows (`batches` hold the key columns, then the
    /// time column, as a table read gives them: cast to `schema`'s types here).
    pub fn remember(&mut self, schema: &SchemaRef, keys: &[String], batches: &[RecordBatch]) -> Result<()> {
        let key_idx: Vec<usize> = keys.iter().map(|k| index(schema, k)).collect::<Result<_>>()?;
        self.converter(schema, &key_idx)?;
        for batch in batches {
            let times = time_values(batch.column(keys.len()))?;
            // Read back from Delta, strings may be views: the converter wants the contract's types.
            let key_cols = key_idx
                .iter()
                .enumerate()
                .map(|(i, &k)| cast(batch.column(i), schema.field(k).data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::arrow("dedup keys", e))?;
            let conv = self.keys.as_ref().ok_or_else(|| Error::Internal("dedup key converter".into()))?;
            let rows = conv.convert_columns(&key_cols).map_err(|e| Error::arrow("dedup keys", e))?;
            for r in 0..batch.num_rows() {
                if let Some(t) = times[r] {
                    self.times.entry(rows.row(r).as_ref().into()).or_default().push(t);
                }
            }
        }
        Ok(())
    }
}

/// Event times as i64: microseconds for timestamps (any unit) and dates, the value for int64;
/// None for nulls.
pub fn time_values(column: &dyn Array) -> Result<Vec<Option<i64>>> {
    use datafusion::arrow::datatypes::TimeUnit;
    let micros = match column.data_type() {
        DataType::Timestamp(..) => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => column.data_type().clone(),
    };
    let as_micros = cast(column, &micros).map_err(|e| Error::arrow("dedup time", e))?;
    let values = cast(&as_micros, &DataType::Int64).map_err(|e| Error::arrow("dedup time", e))?;
    let scale = if matches!(column.data_type(), DataType::Date32) { 86_400_000_000 } else { 1 };
    let values = values.as_primitive::<Int64Type>();
    Ok((0..values.len()).map(|i| (!values.is_null(i)).then(|| values.value(i).saturating_mul(scale))).collect())
}

/// Window dedup of an event table's new rows (`batches`, in arrival order): a row whose `keys`
/// were kept (before, in `seen`, or earlier in `batches`) with a time within `window` of its own
/// is dropped; the first arrival wins. A row without a time is kept. Returns the kept rows as
/// batches of at most `batch_rows`.
pub fn first_in_window(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    keys: &[String],
    time: usize,
    window: i64,
    seen: &mut Seen,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let key_idx: Vec<usize> = keys.iter().map(|k| index(schema, k)).collect::<Result<_>>()?;
    seen.converter(schema, &key_idx)?;
    let mut picks = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let b = position(b)?;
        let key_cols: Vec<_> = key_idx.iter().map(|&i| batch.column(i).clone()).collect();
        let conv = seen.keys.as_ref().ok_or_else(|| Error::Internal("dedup key converter".into()))?;
        let rows = conv.convert_columns(&key_cols).map_err(|e| Error::arrow("dedup keys", e))?;
        let times = time_values(batch.column(time))?;
        for (r, t) in times.into_iter().enumerate() {
            if t.is_none_or(|t| seen.first(rows.row(r).as_ref(), t, window)) {
                picks.push((b, r as u32));
            }
        }
    }
    gather(schema, batches, picks, batch_rows)
}

/// A batch number as u32 (row numbers are u32 too: a record batch never holds 4G rows).
fn position(b: usize) -> Result<u32> {
    u32::try_from(b).map_err(|_| Error::Internal(format!("dedup over more than {} batches", u32::MAX)))
}

fn index(schema: &SchemaRef, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| Error::Internal(format!("dedup column `{name}` not in the silver schema")))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    /// The schema of [`keyed`]'s rows: a key `k`, an order `o`, a value `v`.
    fn keyed_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("o", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    /// Rows of [`keyed_schema`].
    fn keyed(keys: Vec<i64>, orders: Vec<i64>, values: &[impl AsRef<str>]) -> RecordBatch {
        RecordBatch::try_new(
            keyed_schema(),
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(Int64Array::from(orders)),
                Arc::new(StringArray::from_iter_values(values)),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn keeps_greatest_order_and_later_arrival_on_ties() {
        let schema = keyed_schema();
        let b1 = keyed(vec![1, 2, 3], vec![5, 5, 5], &["a1", "b1", "c1"]);
        let b2 = keyed(vec![1, 2, 4], vec![4, 5, 1], &["a2", "b2", "d2"]);
        let out = latest_per_key(&schema, vec![b1.clone(), b2.clone()], &["k".into()], "o", 2).expect("dedup");
        assert!(out.iter().all(|b| b.num_rows() <= 2), "batches of at most batch_rows");
        assert_eq!(rows_of(&out), vec![(1, "a1".into()), (2, "b2".into()), (3, "c1".into()), (4, "d2".into())]);
        // The same through the general path (two key columns: k and v would differ, so use k twice).
        let picks = any_keys(&schema, &[b1, b2], &[0], 1).expect("dedup");
        let mut picks = picks;
        picks.sort_unstable();
        assert_eq!(picks, vec![(0, 0), (0, 2), (1, 1), (1, 2)]);
    }

    #[test]
    fn window_dedup_keeps_the_first_arrival_within_the_window_only() {
        use datafusion::arrow::array::TimestampMicrosecondArray;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("t", DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None), true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let s = 1_000_000i64;
        let batch = |k: Vec<i64>, t: Vec<Option<i64>>, v: Vec<&str>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(k)),
                    Arc::new(TimestampMicrosecondArray::from(t)),
                    Arc::new(StringArray::from(v)),
                ],
            )
            .expect("batch")
        };
        // Published: key 1 at 0 s.
        let mut seen = Seen::default();
        let published = batch(vec![1], vec![Some(0)], vec!["p"]).project(&[0, 1]).expect("project");
        seen.remember(&schema, &["k".into()], &[published]).expect("remember");
        let b1 = batch(
            vec![1, 1, 2, 2, 3, 3],
            vec![Some(60 * s), Some(7200 * s), Some(100 * s), Some(100 * s + 3599 * s), None, None],
            vec!["dup of published", "outside", "first", "inside", "no time a", "no time b"],
        );
        // Out of order: key 2 at 50 s arrives after 100 s (within the window: a duplicate); key 1
        // at 3601 s is within 1 h of 7200 s, kept in the first batch.
        let b2 = batch(
            vec![2, 1, 4],
            vec![Some(50 * s), Some(3601 * s), Some(0)],
            vec!["late dup", "dup of outside", "new"],
        );
        let out = first_in_window(&schema, vec![b1, b2], &["k".into()], 1, 3600 * s, &mut seen, 10).expect("dedup");
        let mut kept: Vec<String> = out
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(|i| b.column(2).as_string::<i32>().value(i).to_string()).collect::<Vec<_>>()
            })
            .collect();
        kept.sort();
        assert_eq!(kept, ["first", "new", "no time a", "no time b", "outside"]);
    }

    #[test]
    fn winners_from_many_small_batches_come_out_in_full_batches_in_arrival_order() {
        let schema = keyed_schema();
        // Ten batches of three rows, as a large promotion's slice reads them back: keys 0..29, and
        // each batch's first row repeats the key before it with an older order value (superseded).
        let batches: Vec<RecordBatch> = (0..10i64)
            .map(|b| {
                let keys = vec![(3 * b - 1).max(0), 3 * b + 1, 3 * b + 2];
                let values: Vec<String> = keys.iter().map(|k| format!("{b}-{k}")).collect();
                keyed(keys, vec![if b == 0 { 1 } else { 0 }, 1, 1], &values)
            })
            .collect();
        let out = latest_per_key(&schema, batches, &["k".into()], "o", 8).expect("dedup");
        let sizes: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [8, 8, 5], "full batches, not one a small input");
        let arrived: Vec<i64> =
            out.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        let mut expected = vec![0];
        expected.extend((0..10).flat_map(|b| [3 * b + 1, 3 * b + 2]));
        assert_eq!(arrived, expected, "in arrival order");
    }

    fn rows_of(out: &[RecordBatch]) -> Vec<(i64, String)> {
        let mut rows: Vec<(i64, String)> = out
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_primitive::<Int64Type>().clone();
                let v = b.column(2).as_string::<i32>().clone();
                (0..b.num_rows()).map(move |i| (k.value(i), v.value(i).to_string())).collect::<Vec<_>>()
            })
            .collect();
        rows.sort();
        rows
    }

    /// The index built on several threads picks exactly the rows one thread picks: greatest
    /// order, later arrival on ties, a missing order older than any.
    #[test]
    fn int_keys_on_several_threads_pick_what_one_thread_picks() {
        use datafusion::arrow::datatypes::{Field, Schema};

        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("at", DataType::Int64, true),
        ]));
        let mut seed: u64 = 7;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let batches: Vec<RecordBatch> = (0..7)
            .map(|_| {
                let n = 500 + next(500) as usize;
                let ids: Int64Array = (0..n).map(|_| next(800) as i64 - 400).collect();
                let at: Int64Array = (0..n).map(|_| (next(10) > 0).then(|| next(5) as i64)).collect();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(at)]).expect("batch")
            })
            .collect();
        let picks = |threads: usize, parallel_rows: usize| {
            let mut p = int_key_picks(&schema, &batches, &[0], 1, threads, parallel_rows).expect("dedup").expect("int");
            p.sort_unstable();
            p
        };
        let one = picks(1, usize::MAX);
        assert_eq!(one.len(), 800);
        for threads in [2, 3, 4] {
            assert_eq!(picks(threads, 0), one, "{threads} threads");
        }
    }
}
