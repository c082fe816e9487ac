//! Expectation results kept in the lake: the Delta table `_medallion/expectations`, one row per
//! expectation evaluated by a `run` or a `test`, queryable as `medallion.expectations`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::gates::GateResult;
use crate::error::{Error, Result};
use crate::runtime::Now;
use crate::storage::delta::{Table, WriteOptions};
use crate::storage::timestamp_type;
use crate::storage::{Lake, Layer};

/// Name of the table (under `_medallion/`).
pub const TABLE: &str = "expectations";

/// Schema of `_medallion/expectations`.
pub fn schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let count = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        text("run_id"),
        text("command"),
        Field::new("evaluated_at", timestamp_type(), true),
        text("node"),
        text("expectation"),
        text("kind"),
        text("action"),
        text("outcome"),
        count("rows_checked"),
        count("failing_rows"),
        count("dropped"),
        text("observed"),
        text("definition"),
        text("samples"),
    ]))
}

/// Appends `results` (node, result) of `command` (`run` or `test`) in one commit.
pub async fn record(lake: &Lake, run_id: &str, command: &str, at: Now, results: &[(String, GateResult)]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let n = results.len();
    let mut text: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut counts: Vec<Int64Builder> = (0..3).map(|_| Int64Builder::with_capacity(n)).collect();
    let mut at_col = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for (node, r) in results {
        let samples = if r.samples.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&r.samples)
                    .map_err(|e| Error::Internal(format!("samples of `{}`: {e}", r.name)))?,
            )
        };
        let action = format!("{:?}", r.action).to_lowercase();
        let values: [Option<&str>; 10] = [
            Some(run_id),
            Some(command),
            Some(node),
            Some(&r.name),
            Some(r.kind),
            Some(&action),
            Some(r.outcome.label()),
            r.observed.as_deref(),
            Some(&r.definition),
            samples.as_deref(),
        ];
        for (b, v) in text.iter_mut().zip(values) {
            b.append_option(v);
        }
        for (b, v) in counts.iter_mut().zip([r.rows_checked, r.failing_rows, r.dropped]) {
            b.append_value(i64::try_from(v).unwrap_or(i64::MAX));
        }
        at_col.append_value(at.timestamp_micros());
    }
    let mut t: Vec<ArrayRef> = text.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let mut c: Vec<ArrayRef> = counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let mut columns: Vec<ArrayRef> = t.drain(..2).collect();
    columns.push(Arc::new(at_col.finish()));
    columns.extend(t.drain(..5));
    columns.append(&mut c);
    columns.append(&mut t);
    let batch = RecordBatch::try_new(schema(), columns).map_err(|e| Error::arrow("building expectation results", e))?;
    Table::open(lake, Layer::System, TABLE).await?.write(vec![batch], WriteOptions::default()).await?;
    Ok(())
}
