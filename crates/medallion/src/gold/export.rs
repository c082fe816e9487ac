//! A gold model published also as one plain Parquet file, `<lake>/exports/<model>.parquet`, for
//! readers without Delta (`outputs = ["parquet"]`).
//!
//! The file is replaced in one step: it is uploaded whole (a multipart upload on object stores, a
//! staged file renamed into place on a local lake) and becomes visible complete, so a reader sees
//! the previous export or the new one, never a part. Its footer records the Delta version it
//! holds (`medallion.delta_version`): a build that wrote nothing new still exports when the file
//! is missing or older than the table (an export that failed after its commit is redone).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::storage::delta::{Table, cast_to};
use crate::storage::{Lake, Part};

/// Where exports go in the lake.
pub const EXPORTS: &str = "exports";
/// The footer key holding the Delta version an export was written from.
const VERSION_KEY: &str = "medallion.delta_version";
/// Bytes sent to the upload at once.
const PART_BYTES: usize = 8 << 20;

/// The export's path in the lake.
pub fn path_of(model: &str) -> String {
    format!("{EXPORTS}/{model}.parquet")
}

/// Exports `table` (gold model `model`) unless the export already holds its version. Returns
/// whether it wrote.
pub async fn ensure(lake: &Lake, table: &Table, model: &str) -> Result<bool> {
    let Some(version) = table.version() else { return Ok(false) };
    if exported_version(lake, model).await? == Some(version) {
        return Ok(false);
    }
    export(lake, table, model, version).await?;
    Ok(true)
}

/// The Delta version the export of `model` holds (None: no export, or not one of ours).
pub async fn exported_version(lake: &Lake, model: &str) -> Result<Option<i64>> {
    let path = path_of(model);
    let Some(meta) = lake.head(&path).await? else { return Ok(None) };
    let size = meta.size;
    if size < 12 {
        return Ok(None);
    }
    let Some(tail) = lake.get_range(&path, size - 8..size).await? else { return Ok(None) };
    if &tail[4..] != b"PAR1" {
        return Ok(None);
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 8 > size {
        return Ok(None);
    }
    let Some(footer) = lake.get_range(&path, size - 8 - len..size - 8).await? else { return Ok(None) };
    let Ok(metadata) = ParquetMetaDataReader::decode_metadata(&footer) else { return Ok(None) };
    Ok(metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == VERSION_KEY))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse().ok()))
}

/// Writes the rows of `table` at `version` to the export of `model`, replacing it in one step.
async fn export(lake: &Lake, table: &Table, model: &str, version: i64) -> Result<()> {
    let context = format!("exporting gold/{model} to {}", path_of(model));
    let ctx = SessionContext::new();
    let df = ctx.read_table(table.provider(&ctx).await?).map_err(|e| Error::sql(&context, e))?;
    let mut stream = df.execute_stream().await.map_err(|e| Error::sql(&context, e))?;
    let schema = plain(&stream.schema());
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), version.to_string())]))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
        .map_err(|e| Error::Internal(format!("{context}: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Part>(2);
    let path = path_of(model);
    let upload = lake.put_parts(&path, rx);
    let produce = async {
        // The sender is the producer's: dropped when it stops, an error included, so the upload
        // sees the end and aborts rather than waiting for parts that never come.
        let tx = tx;
        while let Some(batch) = stream.next().await {
            // Tests fail the table's read here, as a store gone mid-export does.
            crate::runtime::faults::check(&format!("gold/{model}"), "exporting")?;
            let batch = batch.map_err(|e| Error::sql(&context, e))?;
            let batch = cast_to(&batch, &schema, &context)?;
            writer.write(&batch).map_err(|e| Error::Internal(format!("{context}: {e}")))?;
            if writer.inner().len() >= PART_BYTES {
                // Bytes already written are final: the writer counts its offsets itself.
                let part = bytes::Bytes::from(std::mem::take(writer.inner_mut()));
                tx.send(Part::Data(part)).await.map_err(|_| Error::Internal(format!("{context}: upload stopped")))?;
            }
        }
        let rest = writer.into_inner().map_err(|e| Error::Internal(format!("{context}: {e}")))?;
        if !rest.is_empty() {
            tx.send(Part::Data(bytes::Bytes::from(rest)))
                .await
                .map_err(|_| Error::Internal(format!("{context}: upload stopped")))?;
        }
        tx.send(Part::Done).await.map_err(|_| Error::Internal(format!("{context}: upload stopped")))?;
        Ok::<(), Error>(())
    };
    let (produced, uploaded) = futures::join!(produce, upload);
    produced?;
    uploaded
}

/// `schema` with string and binary views as plain strings and binaries, which every Parquet
/// reader knows.
fn plain(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}
