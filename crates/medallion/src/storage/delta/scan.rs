//! Reading a merge-on-read table on every core.
//!
//! delta-rs 1.1 reads a table whose files carry deletion vectors in one partition (it coalesces
//! the file scans to apply the vectors), so every full read of such a silver table (gold models,
//! audits, `sql`) ran on one core. This provider resolves the snapshot into plain Parquet file
//! scans instead, each file's vector applied as a row selection (DataFusion splits it by row group
//! and skips the pages holding no kept row), spread over the session's partitions.
//!
//! It reads what it can read exactly: no partition columns, no column mapping (reader features
//! only `deletionVectors` and `timestampNtz`), vectors stored beside the table, and a row count
//! in the statistics of every file with a vector. Any other table is read by delta-rs.
//!
//! The vectors are read, and the selections built, at the first scan of the table, not when the
//! provider is made: a session registers tables its queries may not read (a node's audit answered
//! from what the merge knows), and a scan of no column (`count(*)`) reads no file at all, its rows
//! counted from the log (each file's row count less its vector's cardinality).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use deltalake::kernel::DeletionVectorDescriptor;
use deltalake::table::state::DeltaTableState;
use deltalake::{DeltaTable, DeltaTableError, ObjectStore};
use object_store::path::Path;

/// Reader features whose tables this scan reads exactly.
const READER_FEATURES: [&str; 2] = ["deletionVectors", "timestampNtz"];

/// A provider reading `table` (as `delta`, delta-rs's provider for it, would) on every core when
/// its files carry deletion vectors; `delta` itself otherwise. Errors of its scans name `label`.
pub(super) async fn provider(
    table: &DeltaTable,
    label: &str,
    ctx: &SessionContext,
    delta: Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>, DeltaTableError> {
    let snapshot = table.snapshot()?;
    if !snapshot.log_data().iter().any(|f| f.deletion_vector_descriptor().is_some()) {
        return Ok(delta);
    }
    let files = live(snapshot, &[]);
    let protocol = snapshot.protocol();
    let features = protocol.min_reader_version() == 3 && protocol.reader_features().is_some();
    let counted = files.iter().all(|f| f.vector.is_none() || f.rows.is_some());
    if !features || not_plain(snapshot).is_some() || !counted || !snapshot.metadata().partition_columns().is_empty() {
        return Ok(delta);
    }
    let store = table.object_store();
    // The table's store under a name of its own in this session.
    let url = ObjectStoreUrl::parse(format!("medallion-table://{}", uuid::Uuid::new_v4().simple()))
        .map_err(|e| DeltaTableError::Generic(format!("scan: {e}")))?;
    ctx.runtime_env().register_object_store(url.as_ref(), Arc::clone(&store));
    Ok(Arc::new(VectoredScan {
        schema: delta.schema(),
        label: label.to_string(),
        url,
        store,
        files,
        scanned: tokio::sync::OnceCell::new(),
    }))
}

/// A live file of a snapshot, as its log describes it.
#[derive(Debug)]
struct Live {
    /// Relative to the table root, as the store is.
    path: Path,
    size: u64,
    /// Its values of the partition columns asked for, in their order (None: null).
    partition_values: Vec<Option<String>>,
    vector: Option<DeletionVectorDescriptor>,
    /// Its row count, from its statistics.
    rows: Option<u64>,
}

/// The live files of `snapshot`, with their values of `partition_columns`.
fn live(snapshot: &DeltaTableState, partition_columns: &[String]) -> Vec<Live> {
    snapshot
        .log_data()
        .iter()
        .map(|f| {
            let values = f.partition_values_map();
            Live {
                path: f.object_store_path(),
                size: u64::try_from(f.size()).unwrap_or(0),
                partition_values: partition_columns.iter().map(|c| values.get(c).cloned().flatten()).collect(),
                vector: f.deletion_vector_descriptor(),
                rows: f.num_records().and_then(|n| u64::try_from(n).ok()),
            }
        })
        .collect()
}

/// Each of `files` with, when it carries a vector, the rows the vector deletes and the file's row
/// count (the vectors read together, each vector file once); a vector on a file without a row
/// count is an error.
async fn with_vectors<'a>(
    store: &dyn ObjectStore,
    files: &'a [Live],
) -> Result<Vec<(&'a Live, Option<(roaring::RoaringTreemap, u64)>)>, DeltaTableError> {
    let descriptors: Vec<_> = files.iter().map(|f| f.vector.clone()).collect();
    let vectors = super::dv::read_many(store, &Path::from(""), &descriptors).await?;
    files
        .iter()
        .zip(vectors)
        .map(|(f, deleted)| match (&f.vector, f.rows) {
            (None, _) => Ok((f, None)),
            (Some(_), Some(rows)) => Ok((f, Some((deleted, rows)))),
            (Some(_), None) => Err(DeltaTableError::Generic(format!(
                "cannot be read as plain Parquet files: {} has a deletion vector and no row count",
                f.path
            ))),
        })
        .collect()
}

/// The selection reading the rows of a `rows`-row file that `deleted` keeps, built in one pass;
/// None when it keeps none.
fn kept_selection(deleted: &roaring::RoaringTreemap, rows: u64) -> Option<RowSelection> {
    let mut selectors: Vec<RowSelector> =
        Vec::with_capacity(usize::try_from(deleted.len().min(rows)).unwrap_or(0).saturating_mul(2) + 1);
    let (mut next, mut kept) = (0u64, 0u64);
    for d in deleted.iter().take_while(|&d| d < rows) {
        if d > next {
            selectors.push(RowSelector::select(usize::try_from(d - next).unwrap_or(usize::MAX)));
            kept += d - next;
        }
        match selectors.last_mut() {
            Some(s) if s.skip => s.row_count += 1,
            _ => selectors.push(RowSelector::skip(1)),
        }
        next = d + 1;
    }
    if next < rows {
        selectors.push(RowSelector::select(usize::try_from(rows - next).unwrap_or(usize::MAX)));
        kept += rows - next;
    }
    (kept > 0).then(|| RowSelection::from(selectors))
}

/// The ranges of the rows of a `rows`-row file that `deleted` keeps, in order.
fn kept_ranges(deleted: &roaring::RoaringTreemap, rows: usize) -> Vec<std::ops::Range<usize>> {
    let mut kept: Vec<std::ops::Range<usize>> = Vec::new();
    let mut next = 0usize;
    for d in deleted.iter().map(|d| usize::try_from(d).unwrap_or(usize::MAX)).take_while(|&d| d < rows) {
        if d > next {
            kept.push(next..d);
        }
        next = d + 1;
    }
    if next < rows {
        kept.push(next..rows);
    }
    kept
}

/// A table's live files resolved from its snapshot into plain Parquet files that anyone holding
/// the lake's store can read without the Delta log: a cluster's executors, which share nothing
/// with the driver but the object store. Carries no credential: only where the files are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveFiles {
    /// The store the paths are in: `s3://bucket`, `gs://bucket`, `file://`.
    pub store: String,
    /// The table's partition columns, in its order (their values are in the paths, not the files).
    pub partition_columns: Vec<String>,
    /// Every live file, with at least one kept row.
    pub files: Vec<LiveFile>,
}

/// One live data file of a table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveFile {
    /// The object's path in the store.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its partition values, as Delta records them, in `partition_columns` order (None: null).
    pub partition_values: Vec<Option<String>>,
    /// The rows its deletion vector keeps, as `[start, end)` ranges, and the rows in the file;
    /// None: every row (no vector).
    pub kept: Option<(Vec<(u64, u64)>, u64)>,
}

impl LiveFile {
    /// The row selection reading exactly the kept rows; None: read every row.
    pub fn selection(&self) -> Option<RowSelection> {
        let (ranges, rows) = self.kept.as_ref()?;
        let rows = usize::try_from(*rows).unwrap_or(usize::MAX);
        let ranges = ranges.iter().map(|&(s, e)| usize::try_from(s).unwrap_or(0)..usize::try_from(e).unwrap_or(0));
        Some(RowSelection::from_consecutive_ranges(ranges, rows))
    }
}

/// Why the files of `snapshot` cannot be read as plain Parquet files, None when they can: a
/// reader feature other than deletion vectors and timestamps without a zone, or column mapping.
fn not_plain(snapshot: &DeltaTableState) -> Option<String> {
    let protocol = snapshot.protocol();
    if let Some(f) =
        protocol.reader_features().and_then(|fs| fs.iter().find(|f| !READER_FEATURES.contains(&f.as_ref())))
    {
        return Some(format!("reader feature `{}`", f.as_ref()));
    }
    let config = snapshot.metadata().configuration();
    config.get("delta.columnMapping.mode").filter(|m| *m != "none").map(|mode| format!("column mapping `{mode}`"))
}

/// The live files of `table` (see [`LiveFiles`]). A table whose files cannot be read as plain
/// Parquet (column mapping, reader features other than deletion vectors and timestamps without
/// a zone, vectors without row counts) is an error naming why.
pub(super) async fn live_files(table: &DeltaTable) -> Result<LiveFiles, DeltaTableError> {
    let unreadable = |why: String| DeltaTableError::Generic(format!("cannot be read as plain Parquet files: {why}"));
    let snapshot = table.snapshot()?;
    if let Some(why) = not_plain(snapshot) {
        return Err(unreadable(why));
    }
    let (store, root) = crate::storage::store_and_root(table.table_url()).map_err(unreadable)?;
    let partition_columns = snapshot.metadata().partition_columns();
    let files = resolve(table, partition_columns, &root).await?;
    Ok(LiveFiles { store, partition_columns: partition_columns.to_vec(), files })
}

/// Every live file of `table` with at least one kept row, its path under `root`, its values of
/// `partition_columns`, and the rows its deletion vector keeps (the vectors read together, each
/// vector file once);
/// a vector on a file without a row count is an error.
async fn resolve(
    table: &DeltaTable,
    partition_columns: &[String],
    root: &Path,
) -> Result<Vec<LiveFile>, DeltaTableError> {
    let files = live(table.snapshot()?, partition_columns);
    let store = table.object_store();
    let mut resolved = Vec::with_capacity(files.len());
    for (f, vector) in with_vectors(store.as_ref(), &files).await? {
        let path = Path::from_iter(root.parts().chain(f.path.parts())).to_string();
        let partition_values = f.partition_values.clone();
        let Some((deleted, rows)) = vector else {
            resolved.push(LiveFile { path, size: f.size, partition_values, kept: None });
            continue;
        };
        let rows = usize::try_from(rows).unwrap_or(usize::MAX);
        let kept: Vec<(u64, u64)> =
            kept_ranges(&deleted, rows).into_iter().map(|r| (r.start as u64, r.end as u64)).collect();
        if !kept.is_empty() {
            resolved.push(LiveFile { path, size: f.size, partition_values, kept: Some((kept, rows as u64)) });
        }
    }
    Ok(resolved)
}

/// The live files of a snapshot, each read with the rows its vector keeps.
#[derive(Debug)]
struct VectoredScan {
    schema: SchemaRef,
    label: String,
    url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    files: Vec<Live>,
    /// The files to scan, each with its selection: resolved at the first scan, once.
    scanned: tokio::sync::OnceCell<Vec<PartitionedFile>>,
}

impl VectoredScan {
    /// The live rows, from the log alone: every file's row count less its vector's cardinality;
    /// None when a file's row count is unknown.
    fn live_rows(&self) -> Option<u64> {
        self.files.iter().try_fold(0u64, |sum, f| {
            let deleted = f.vector.as_ref().map_or(0, |v| u64::try_from(v.cardinality).unwrap_or(u64::MAX));
            Some(sum + f.rows?.saturating_sub(deleted))
        })
    }

    /// The files with at least one kept row, each with its selection (the vectors read together,
    /// each vector file once).
    async fn scanned(&self) -> Result<&[PartitionedFile], DeltaTableError> {
        let files = self
            .scanned
            .get_or_try_init(|| async {
                let mut scanned = Vec::with_capacity(self.files.len());
                for (f, vector) in with_vectors(self.store.as_ref(), &self.files).await? {
                    let file = PartitionedFile::new(f.path.to_string(), f.size);
                    match vector {
                        None => scanned.push(file),
                        Some((deleted, rows)) => scanned.extend(
                            kept_selection(&deleted, rows).map(|s| file.with_extension(ParquetRowSelection::new(s))),
                        ),
                    }
                }
                Ok::<_, DeltaTableError>(scanned)
            })
            .await?;
        Ok(files)
    }
}

#[async_trait]
impl TableProvider for VectoredScan {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used to skip row groups and pages; DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // No column read (`count(*)`): the live rows, counted from the log, no file opened.
        if projection.is_some_and(|p| p.is_empty())
            && filters.is_empty()
            && let Some(rows) = self.live_rows()
        {
            let rows = limit.map_or(rows, |l| rows.min(u64::try_from(l).unwrap_or(u64::MAX)));
            let schema = Arc::new(self.schema.project(&[])?);
            let options = RecordBatchOptions::new().with_row_count(Some(usize::try_from(rows).unwrap_or(usize::MAX)));
            let batch = RecordBatch::try_new_with_options(Arc::clone(&schema), Vec::new(), &options)?;
            return Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None)?);
        }
        let files = self
            .scanned()
            .await
            .map_err(|e| DataFusionError::External(format!("reading {}: {e}", self.label).into()))?;
        let mut source = ParquetSource::new(Arc::clone(&self.schema)).with_metadata_size_hint(super::FOOTER_HINT);
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let schema = DFSchema::try_from(Arc::clone(&self.schema))?;
            source = source.with_predicate(state.create_physical_expr(predicate, &schema)?);
        }
        let config = FileScanConfigBuilder::new(self.url.clone(), Arc::new(source))
            .with_file_groups(
                spread(files.to_vec(), state.config().target_partitions().clamp(1, files.len().max(1)))
                    .into_iter()
                    .filter(|g| !g.is_empty())
                    .collect(),
            )
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// `files` in `partitions` groups (at least one) of about equal bytes: largest first, each to
/// the lightest group, ties in the list's order, so every process computes the same groups.
/// Groups may be empty when there are fewer files.
pub fn spread(files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    let mut order = files;
    order.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions.max(1)];
    for f in order {
        if let Some(lightest) = groups.iter_mut().min_by_key(|g| g.0) {
            lightest.0 += f.object_meta.size;
            lightest.1.push(f);
        }
    }
    groups.into_iter().map(|g| FileGroup::new(g.1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selection a `rows`-row file with `deleted` rows is read with, as `resolve` makes it
    /// (None: the file is dropped, no row kept).
    fn kept_rows(deleted: &roaring::RoaringTreemap, rows: usize) -> Option<RowSelection> {
        let kept: Vec<(u64, u64)> =
            kept_ranges(deleted, rows).into_iter().map(|r| (r.start as u64, r.end as u64)).collect();
        let file =
            LiveFile { path: String::new(), size: 0, partition_values: Vec::new(), kept: Some((kept, rows as u64)) };
        file.kept.as_ref().is_some_and(|(k, _)| !k.is_empty()).then(|| file.selection()).flatten()
    }

    /// The rows a selection reads.
    fn selected(s: &RowSelection) -> Vec<usize> {
        let mut at = 0;
        let mut rows = Vec::new();
        for sel in s.iter() {
            if !sel.skip {
                rows.extend(at..at + sel.row_count);
            }
            at += sel.row_count;
        }
        rows
    }

    /// The selection a local scan builds in one pass reads the rows the ranges a cluster's
    /// executors are sent read: random vectors, runs of deleted rows, rows past the file's end.
    #[test]
    fn kept_selection_reads_what_the_kept_ranges_read() {
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for case in 0..300 {
            let rows = next() % 300;
            let density = next() % 100;
            let deleted: roaring::RoaringTreemap = (0..rows + 5).filter(|_| next() % 100 < density).collect();
            let fast = kept_selection(&deleted, rows);
            let ranges = kept_rows(&deleted, usize::try_from(rows).expect("small"));
            assert_eq!(fast.as_ref().map(selected), ranges.as_ref().map(selected), "case {case}: {rows} rows");
            if let Some(s) = &fast {
                assert_eq!(
                    s.row_count() as u64 + deleted.iter().filter(|&d| d < rows).count() as u64,
                    rows,
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn kept_rows_skip_exactly_the_deleted() {
        let deleted: roaring::RoaringTreemap = [0u64, 1, 5, 9].into_iter().collect();
        let s = kept_rows(&deleted, 10).expect("some kept");
        assert_eq!(s.row_count(), 6);
        let selected: Vec<usize> = s
            .iter()
            .scan(0usize, |at, sel| {
                let start = *at;
                *at += sel.row_count;
                Some((start, sel.row_count, sel.skip))
            })
            .filter(|&(_, _, skip)| !skip)
            .flat_map(|(start, n, _)| start..start + n)
            .collect();
        assert_eq!(selected, vec![2, 3, 4, 6, 7, 8]);
        let all: roaring::RoaringTreemap = (0u64..4).collect();
        assert!(kept_rows(&all, 4).is_none());
        assert_eq!(kept_rows(&roaring::RoaringTreemap::new(), 3).map(|s| s.row_count()), Some(3));
    }
}
