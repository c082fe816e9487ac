//! Files written for a table by a process that does not commit (a cluster's executor), and the one
//! commit on the driver that publishes them.
//!
//! A written file is described by its Delta add action (path, size, statistics), carried as JSON
//! from the writer to the committer. Until a commit adds it, a file is not part of the table:
//! readers never see it, and `vacuum` removes it once it is older than the retention. A task that
//! dies after writing, and runs again, leaves such a file behind and nothing else: only the
//! actions the committer received are committed.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use deltalake::DeltaTableError;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, MetadataExt, StructField, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::{Value, json};
use url::Url;

use super::{LiveFile, LiveFiles, MergeMetrics, Table, Txn, commit_properties};
use crate::error::{Error, Result};

/// Writes Parquet files of `schema` under the table at `table_url` (which may not exist yet) and
/// hands out their add actions: nothing is committed.
pub struct FileWriter {
    label: String,
    schema: SchemaRef,
    writer: RecordBatchWriter,
}

impl FileWriter {
    /// A writer for the table at `table_url`. Its store is found as delta-rs finds one for a URL:
    /// local paths by default, object stores once registered
    /// (`storage::cloud::register_stores`).
    pub fn new(table_url: &Url, schema: SchemaRef) -> Result<FileWriter> {
        let label = table_url.to_string();
        let writer = RecordBatchWriter::try_new(table_url.as_str(), Arc::clone(&schema), None, None)
            .map_err(|e| Error::delta(&label, e))?;
        Ok(FileWriter { label, schema, writer })
    }

    /// Writes `batch`, whose columns are the schema's in its order, each cast to the schema's
    /// type where it differs (a query may give `Utf8View` where the table has `Utf8`).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = cast_to(&batch, &self.schema, &format!("rows written to {}", self.label))?;
        self.writer.write(batch).await.map_err(|e| Error::delta(&self.label, e))
    }

    /// Closes the files: their add actions, as JSON (none when no row was written).
    pub async fn finish(mut self) -> Result<Vec<String>> {
        let adds = self.writer.flush().await.map_err(|e| Error::delta(&self.label, e))?;
        adds.iter().map(|a| serde_json::to_string(a).map_err(|e| Error::Internal(format!("add action: {e}")))).collect()
    }
}

/// `batch`, whose columns are `schema`'s in its order, as a batch of `schema`: each column cast to
/// the schema's type where it differs (a query may give `Utf8View` where a table has `Utf8`); a
/// batch of another column count is an error (of `context`).
pub fn cast_to(batch: &RecordBatch, schema: &SchemaRef, context: &str) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    if batch.num_columns() != schema.fields().len() {
        let (given, wanted) = (batch.num_columns(), schema.fields().len());
        return Err(Error::Internal(format!("{context}: {given} columns for a schema of {wanted}")));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { cast(c, f.data_type()) })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow(context, e))?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::arrow(context, e))
}

fn parse(label: &str, adds: &[String]) -> Result<Vec<Add>> {
    adds.iter()
        .map(|a| serde_json::from_str(a).map_err(|e| Error::Internal(format!("{label}: a written file's action: {e}"))))
        .collect()
}

/// The files `adds` describe, each with its object path under the table's root.
fn parse_paths(label: &str, adds: &[String]) -> Result<Vec<(Path, Add)>> {
    parse(label, adds)?.into_iter().map(|a| Ok((object_path(label, &a)?, a))).collect()
}

/// The object path of the file `add` describes, under the table's root.
fn object_path(label: &str, add: &Add) -> Result<Path> {
    Path::from_url_path(&add.path).map_err(|e| Error::Internal(format!("{label}: file path {}: {e}", add.path)))
}

/// Rows in the files `adds` describe (from their statistics).
pub fn rows_in(adds: &[String]) -> Result<u64> {
    Ok(rows_of(&parse("written files", adds)?))
}

fn rows_of(adds: &[Add]) -> u64 {
    adds.iter()
        .filter_map(|a| a.stats.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()))
        .filter_map(|stats| stats.get("numRecords").and_then(Value::as_u64))
        .sum()
}

impl Table {
    /// The files `adds` (written for this table, not committed) as [`LiveFiles`]: a cluster reads
    /// them as the candidate before they are published.
    pub fn written_files(&self, adds: &[String]) -> Result<LiveFiles> {
        let (store, root) = crate::storage::store_and_root(self.inner.table_url())
            .map_err(|e| Error::Internal(format!("{}: {e}", self.label)))?;
        let files = parse_paths(&self.label, adds)?
            .into_iter()
            .map(|(path, a)| LiveFile {
                path: Path::from_iter(root.parts().chain(path.parts())).to_string(),
                size: u64::try_from(a.size).unwrap_or(0),
                partition_values: Vec::new(),
                kept: None,
            })
            .collect();
        Ok(LiveFiles { store, partition_columns: Vec::new(), files })
    }

    /// Replaces the table's content with the files `adds` describe, of `schema`, in one commit
    /// carrying `txn` (when given) and `metadata`: creates the table, or removes every live file
    /// (and records the new schema when it changed). The table's properties are kept.
    pub async fn commit_files(
        self,
        adds: &[String],
        schema: &Schema,
        txn: Option<Txn>,
        metadata: HashMap<String, Value>,
    ) -> Result<Table> {
        if !self.exists {
            return self.create_from_files(adds, schema, &[], txn, metadata).await;
        }
        let label = self.label.clone();
        let delta = |e| Error::delta(&label, e);
        let adds = parse(&label, adds)?;
        let rows = rows_of(&adds);
        let structure: StructType =
            schema.try_into_kernel().map_err(|e| Error::arrow(format!("schema of {label}"), e))?;
        let mut metadata = metadata;
        let mut metrics = json!({ "num_added_files": adds.len(), "num_added_rows": rows });
        let snapshot = self.inner.snapshot().map_err(delta)?.clone();
        let mut actions: Vec<Action> =
            snapshot.log_data().iter().map(|f| Action::Remove(f.remove_action(true))).collect();
        metrics["num_removed_files"] = json!(actions.len());
        if snapshot.schema().as_ref() != &structure {
            let changed = snapshot.metadata().clone().with_schema(&structure).map_err(|e| delta(e.into()))?;
            actions.push(Action::Metadata(changed));
        }
        actions.extend(adds.into_iter().map(Action::Add));
        metadata.insert("operationMetrics".into(), metrics);
        let operation = DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by: None, predicate: None };
        let commit = CommitBuilder::from(commit_properties(txn, metadata))
            .with_actions(actions)
            .build(Some(&snapshot), self.inner.log_store(), operation)
            .await
            .map_err(delta)?;
        let mut inner = self.inner;
        inner.update_incremental(Some(commit.version())).await.map_err(delta)?;
        Ok(Table { label, inner, exists: true })
    }

    /// Creates the table, of `schema`, with the files `adds` describe as its content and table
    /// `properties` (`delta.enableChangeDataFeed`, …), in one commit carrying `txn` (when given)
    /// and `metadata`.
    pub async fn create_from_files(
        self,
        adds: &[String],
        schema: &Schema,
        properties: &[(&str, &str)],
        txn: Option<Txn>,
        metadata: HashMap<String, Value>,
    ) -> Result<Table> {
        let adds = parse(&self.label, adds)?;
        let structure: StructType =
            schema.try_into_kernel().map_err(|e| Error::arrow(format!("schema of {}", self.label), e))?;
        self.create_with(adds, structure, properties, txn, metadata).await
    }

    /// [`Table::create_from_files`] of the files `adds` describe, of Delta schema `structure`.
    pub(super) async fn create_with(
        self,
        adds: Vec<Add>,
        structure: StructType,
        properties: &[(&str, &str)],
        txn: Option<Txn>,
        metadata: HashMap<String, Value>,
    ) -> Result<Table> {
        let label = self.label;
        let mut metadata = metadata;
        let metrics = json!({ "num_added_files": adds.len(), "num_added_rows": rows_of(&adds) });
        metadata.insert("operationMetrics".into(), metrics);
        let fields: Vec<StructField> = structure.fields().cloned().collect();
        let mut create = CreateBuilder::new()
            .with_log_store(self.inner.log_store())
            .with_columns(fields)
            .with_actions(adds.into_iter().map(Action::Add))
            .with_commit_properties(commit_properties(txn, metadata));
        if !properties.is_empty() {
            create = create.with_configuration(properties.iter().map(|&(k, v)| (k, Some(v))));
        }
        let inner = create.await.map_err(|e| Error::delta(&label, e))?;
        Ok(Table { label, inner, exists: true })
    }

    /// Merges the rows of the files `adds` describe (written for this table, not committed; unique
    /// per key) by `key`, newer `order_by` wins, without reading or writing them again when the
    /// keyed merge applies (see `keyed::upsert_written`): one commit carrying `txn`. Written files
    /// the commit leaves out are deleted after it. None when the keyed merge does not apply.
    pub async fn upsert_written(
        &self,
        adds: &[String],
        (key, order_by): (&str, &str),
        txn: Txn,
        metadata: HashMap<String, Value>,
    ) -> Result<Option<(Table, MergeMetrics)>> {
        let written = parse_paths(&self.label, adds)?;
        let label = self.label.clone();
        let merged =
            super::keyed::upsert_written(&self.inner, &label, written, (key, order_by), Some(txn), metadata).await?;
        let Some((inner, metrics, unpublished)) = merged else { return Ok(None) };
        let store = inner.object_store();
        for path in unpublished {
            if let Err(e) = store.delete(&path).await {
                tracing::warn!("{label}: a written file left for vacuum ({path}): {e}");
            }
        }
        Ok(Some((Table { label, inner, exists: true }, metrics)))
    }

    /// Every row of the files `adds` describe (written for this table, not committed), in the
    /// table's schema `schema`, file after file.
    pub async fn read_written(&self, adds: &[String], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        let store = self.inner.object_store();
        let mut out = Vec::new();
        for (path, add) in parse_paths(&self.label, adds)? {
            let read = async {
                let stream = super::keyed::open(&store, path, add.size, false).await?.build()?;
                let batches: Vec<RecordBatch> = stream.try_collect().await?;
                batches.into_iter().map(|b| super::keyed::conform(b, schema)).collect::<Result<Vec<_>, _>>()
            };
            out.extend(read.await.map_err(|e: DeltaTableError| Error::delta(&self.label, e))?);
        }
        Ok(out)
    }

    /// Deletes the files `adds` describe, written for this table and never committed (a build
    /// whose expectations stopped it): what `vacuum` would remove later, removed now.
    pub async fn discard_files(&self, adds: &[String]) -> Result<()> {
        self.discard_written(&parse(&self.label, adds)?).await
    }

    /// [`Table::discard_files`] for the add actions a writer returned.
    pub(super) async fn discard_written(&self, adds: &[Add]) -> Result<()> {
        let paths = adds.iter().map(|add| object_path(&self.label, add)).collect::<Result<Vec<_>>>()?;
        delete(self.inner.object_store().as_ref(), &self.label, paths).await
    }
}

/// After a write that was to create the table `label` (in `store`, rooted at the table) failed:
/// removes the data files under it while still no commit exists (those the write flushed before
/// it failed, and any an earlier failed creation left), which no vacuum would sweep. A table with
/// a commit is left alone; files it could not remove are logged (the write's error is the one to
/// report).
pub(super) async fn discard_uncreated(store: &dyn deltalake::ObjectStore, label: &str) {
    let discarded = async {
        let files = uncommitted(store, label, None).await?.unwrap_or_default();
        delete(store, label, files.into_iter().map(|m| m.location)).await
    };
    if let Err(left) = discarded.await {
        tracing::warn!(table = %label, "files of a failed first write left behind: {left}");
    }
}

/// The files under the table `label` (`store` rooted at it) while its log holds no commit, last
/// modified before `older_than` when given (outside `_delta_log`, which is delta-rs's); None once
/// it has a commit (then every file is a live one or vacuum's to judge).
async fn uncommitted(
    store: &dyn deltalake::ObjectStore,
    label: &str,
    older_than: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<Vec<object_store::ObjectMeta>>> {
    let storage = |cause| Error::Storage { location: label.to_string(), cause };
    let log = Path::from("_delta_log");
    let commits: Vec<_> = store.list(Some(&log)).try_collect().await.map_err(storage)?;
    if commits.iter().any(|m| m.location.extension().is_some_and(|x| x == "json" || x == "parquet")) {
        return Ok(None);
    }
    let files: Vec<_> = store.list(None).try_collect().await.map_err(storage)?;
    Ok(Some(
        files
            .into_iter()
            .filter(|m| !m.location.prefix_matches(&log) && older_than.is_none_or(|limit| m.last_modified <= limit))
            .collect(),
    ))
}

impl Table {
    /// For a table that was never created: removes (unless `dry_run`) the files under it older
    /// than `retain`, as vacuum does for a table's files no commit names. A first write killed
    /// before its commit (or whose commit failed) leaves them; with no commit, no vacuum of the
    /// table would ever run. Returns their paths; none once the table has a commit. The caller
    /// holds the lake's lock unless `dry_run`: a first write in progress has such files too.
    pub async fn sweep_uncreated(&self, retain: std::time::Duration, dry_run: bool) -> Result<Vec<String>> {
        let store = self.inner.object_store();
        let limit = chrono::Duration::from_std(retain).ok().and_then(|r| chrono::Utc::now().checked_sub_signed(r));
        // A retention beyond the calendar keeps everything.
        let Some(limit) = limit else { return Ok(Vec::new()) };
        let Some(files) = uncommitted(store.as_ref(), &self.label, Some(limit)).await? else {
            return Ok(Vec::new());
        };
        let mut swept: Vec<String> = files.iter().map(|m| m.location.to_string()).collect();
        if !dry_run {
            delete(store.as_ref(), &self.label, files.into_iter().map(|m| m.location)).await?;
        }
        swept.extend(self.sweep_staged(retain, dry_run)?);
        swept.sort();
        Ok(swept)
    }
}

/// Deletes `paths` of the table `label` from `store` (one already gone is no error).
async fn delete(store: &dyn deltalake::ObjectStore, label: &str, paths: impl IntoIterator<Item = Path>) -> Result<()> {
    for path in paths {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(cause) => return Err(Error::Storage { location: format!("{label}/{path}"), cause }),
        }
    }
    Ok(())
}
