//! Keeping the latest record per primary key among a run's valid rows.
//!
//! Rows are compared on the order column (greatest wins), then by arrival: batches are fed oldest
//! first and rows in file order, so an exact tie goes to the later record. Keys and order values
//! use Arrow's row format, whose bytes compare like the values, so any key type works.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

/// Deduplicates `batches` (in arrival order) on `keys`, keeping the greatest `order_by`.
/// Returns the surviving rows (in no particular order) as batches of at most `batch_rows`.
pub fn latest_per_key(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    keys: &[String],
    order_by: &str,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let key_idx: Vec<usize> = keys.iter().map(|k| index(schema, k)).collect::<Result<_>>()?;
    let order_idx = index(schema, order_by)?;
    let key_conv = RowConverter::new(key_idx.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())
        .map_err(|e| Error::arrow("dedup keys", e))?;
    let order_conv = RowConverter::new(vec![SortField::new(schema.field(order_idx).data_type().clone())])
        .map_err(|e| Error::arrow("dedup order", e))?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut best: HashMap<Box<[u8]>, (usize, usize, Box<[u8]>)> = HashMap::with_capacity(total);
    for (b, batch) in batches.iter().enumerate() {
        let key_cols: Vec<_> = key_idx.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = key_conv.convert_columns(&key_cols).map_err(|e| Error::arrow("dedup keys", e))?;
        let orders = order_conv
            .convert_columns(&[batch.column(order_idx).clone()])
            .map_err(|e| Error::arrow("dedup order", e))?;
        for r in 0..batch.num_rows() {
            let order = orders.row(r);
            match best.get_mut(keys.row(r).as_ref()) {
                Some(slot) => {
                    if order.as_ref() >= slot.2.as_ref() {
                        *slot = (b, r, order.as_ref().into());
                    }
                }
                None => {
                    best.insert(keys.row(r).as_ref().into(), (b, r, order.as_ref().into()));
                }
            }
        }
    }
    let mut picks: Vec<(usize, usize)> = best.into_values().map(|(b, r, _)| (b, r)).collect();
    picks.sort_unstable();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut out = Vec::with_capacity(picks.len().div_ceil(batch_rows.max(1)));
    for part in picks.chunks(batch_rows.max(1)) {
        out.push(interleave_record_batch(&refs, part).map_err(|e| Error::arrow("dedup output", e))?);
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(Arc::clone(schema)));
    }
    Ok(out)
}

fn index(schema: &SchemaRef, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| Error::Internal(format!("dedup column `{name}` not in the silver schema")))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    #[test]
    fn keeps_greatest_order_and_later_arrival_on_ties() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("o", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let b1 = RecordBatch::try_new(schema.clone(), vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Int64Array::from(vec![5, 5, 5])),
            Arc::new(StringArray::from(vec!["a1", "b1", "c1"])),
        ]).expect("batch");
        let b2 = RecordBatch::try_new(schema.clone(), vec![
            Arc::new(Int64Array::from(vec![1, 2, 4])),
            Arc::new(Int64Array::from(vec![4, 5, 1])),
            Arc::new(StringArray::from(vec!["a2", "b2", "d2"])),
        ]).expect("batch");
        let out = latest_per_key(&schema, &[b1, b2], &["k".into()], "o", 2).expect("dedup");
        let mut rows: Vec<(i64, String)> = out
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_primitive::<Int64Type>().clone();
                let v = b.column(2).as_string::<i32>().clone();
                (0..b.num_rows()).map(move |i| (k.value(i), v.value(i).to_string())).collect::<Vec<_>>()
            })
            .collect();
        rows.sort();
        assert_eq!(rows, vec![(1, "a1".into()), (2, "b2".into()), (3, "c1".into()), (4, "d2".into())]);
    }
}
