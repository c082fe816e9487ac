//! The newest value of a table's timestamp or date column, from its log's statistics instead of a
//! scan of the table: a freshness audit of a run whose own rows are stale (a backfill) then reads
//! one file's column, not every file.
//!
//! The statistics are an upper bound of a file's live rows (rows its deletion vector deletes still
//! count) and Delta keeps timestamps to the millisecond. So the caller vouches that the newest
//! physical row is live (true of the order column of a table whose rows are only ever replaced by
//! strictly newer ones), and the files whose maximum is within a millisecond of the greatest are
//! read for the exact value.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::parquet::arrow::ProjectionMask;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use serde_json::Value;

use super::keyed::open;

/// Microseconds a statistic may be off from the value it stands for (Delta's millisecond).
const STAT_PRECISION_MICROS: i64 = 1_000;

/// The greatest value of `column` (a timestamp or date) over the physical rows of `table`'s live
/// files, in microseconds since the epoch: `Some(None)` when no row has a value; None when the
/// statistics do not tell (a file without them, a partition column, another type).
pub(super) async fn newest(table: &DeltaTable, column: &str) -> Result<Option<Option<i64>>, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let files: Vec<_> = snapshot.log_data().iter().collect();
    let mut bounds: Vec<(usize, i64)> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let Some(stats) = f.stats().and_then(|s| serde_json::from_str::<Value>(&s).ok()) else { return Ok(None) };
        let records = stats.get("numRecords").and_then(Value::as_i64);
        let nulls = stats.get("nullCount").and_then(|n| n.get(column)).and_then(Value::as_i64);
        if records.is_some() && records == nulls {
            continue; // no value in this file
        }
        let Some(bound) = stats.get("maxValues").and_then(|m| m.get(column)).and_then(Value::as_str).and_then(micros)
        else {
            return Ok(None);
        };
        bounds.push((i, bound));
    }
    let Some(greatest) = bounds.iter().map(|(_, b)| *b).max() else { return Ok(Some(None)) };
    let store = table.object_store();
    let mut newest: Option<i64> = None;
    for (i, _) in bounds.into_iter().filter(|(_, b)| *b >= greatest - STAT_PRECISION_MICROS) {
        let builder = open(&store, files[i].object_store_path(), files[i].size(), false).await?;
        let Some(at) = builder.schema().fields().iter().position(|f| f.name() == column) else { return Ok(None) };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [at]);
        let mut stream = builder.with_projection(mask).build()?;
        while let Some(batch) = stream.try_next().await? {
            let values = cast(batch.column(0), &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            if let Some(m) = max(values.as_primitive::<TimestampMicrosecondType>()) {
                newest = Some(newest.map_or(m, |n| n.max(m)));
            }
        }
    }
    Ok(Some(newest))
}

/// A statistic of a timestamp (`2024-03-04T01:38:59.629Z`, or without zone) or date
/// (`2024-02-29`) in microseconds since the epoch.
pub(super) fn micros(stat: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(stat) {
        return Some(t.timestamp_micros());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(stat, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_micros());
    }
    let day = chrono::NaiveDate::parse_from_str(stat, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_read_as_microseconds() {
        assert_eq!(micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(micros("1970-01-01T00:00:01.500"), Some(1_500_000));
        assert_eq!(micros("1970-01-02"), Some(86_400_000_000));
        assert_eq!(micros("soon"), None);
    }
}
