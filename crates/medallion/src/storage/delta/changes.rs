//! The rows a merge-on-read table's commits changed, derived from its log: what a change data feed
//! holds, without writing one on every merge.
//!
//! A commit's actions say which rows it changed. A file added holds inserted rows (less any its
//! deletion vector deletes); a file removed held deleted rows (less those its vector had deleted);
//! a file removed and added again in one commit with a larger vector deleted the rows the new
//! vector adds (a merge-on-read update: its new versions are in the commit's added files).
//! Commits that change no data (compaction, purges: `dataChange = false`) are skipped. Reading
//! those rows, the deleted ones by position (only the pages holding them), gives the feed's
//! inserts and deletes (an update as a delete and an insert) in its shape, `_change_type`, at the
//! cost of reading back what the merge replaced, once, when a model needs it.
//!
//! Derived only where that is exact and cheaper than reading the table (else None, and the caller
//! reads the table): files readable as plain Parquet with no partition values in their paths
//! ([`super::scan`]'s condition), no schema or protocol change in the range, a commit log still
//! holding every commit of the range, every file read still stored (a vacuum may have deleted a
//! removed one), vectors that only grow, and whole files to read adding up to at most the table's
//! bytes (or a few megabytes): a copy-on-write commit (delta-rs's MERGE, for deletes) rewrites
//! whole files, and reading both the old and the new ones can cost more than a scan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::{Action, DeletionVectorDescriptor};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use roaring::RoaringTreemap;

/// Whole files to read below which changes are derived even when they outweigh the table: a few
/// megabytes read either way.
const WHOLE_READ_ANYWAY: i64 = 8 << 20;

/// Which rows of a file to read.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Pick {
    /// Every row.
    Every,
    /// Only these row numbers.
    Only(RoaringTreemap),
    /// Every row but these.
    AllBut(RoaringTreemap),
}

impl Pick {
    /// The selection reading exactly these rows of a `total`-row file (None: every row), and how
    /// many that is.
    fn selection(&self, total: usize) -> (Option<RowSelection>, usize) {
        match self {
            Pick::Every => (None, total),
            Pick::Only(rows) => {
                let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
                for r in rows.iter().map(|r| usize::try_from(r).unwrap_or(usize::MAX)) {
                    match ranges.last_mut() {
                        Some(last) if last.end == r => last.end = r + 1,
                        _ => ranges.push(r..r.saturating_add(1)),
                    }
                }
                // A row past the file's end is not read: the caller's count check reports it.
                let asked = usize::try_from(rows.len()).unwrap_or(usize::MAX);
                ranges.retain(|r| r.end <= total);
                (Some(RowSelection::from_consecutive_ranges(ranges.into_iter(), total)), asked)
            }
            Pick::AllBut(rows) => {
                let kept = super::scan::kept_ranges(rows, total);
                let n = kept.iter().map(ExactSizeIterator::len).sum();
                (Some(RowSelection::from_consecutive_ranges(kept.into_iter(), total)), n)
            }
        }
    }
}

/// The rows `pick` names of one file of `size` bytes, the columns of `schema` (in it); an error
/// unless exactly those rows were read. Only the pages holding them are read.
pub(super) async fn read(
    store: &Arc<dyn ObjectStore>,
    path: Path,
    size: i64,
    pick: &Pick,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, DeltaTableError> {
    let builder = super::keyed::open(store, path.clone(), size, matches!(pick, Pick::Only(_))).await?;
    let total = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    // Only the columns of `schema` (a file older than an added column lacks it: read as null).
    let wanted: Vec<usize> = (0..builder.schema().fields().len())
        .filter(|&i| schema.field_with_name(builder.schema().field(i).name()).is_ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let builder = builder.with_projection(mask);
    let (selection, expected) = pick.selection(total);
    let builder = match selection {
        Some(s) => builder.with_row_selection(s),
        None => builder,
    };
    let batches: Vec<RecordBatch> = builder.build()?.try_collect().await?;
    let got: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if got != expected {
        return Err(DeltaTableError::Generic(format!("{path}: {got} of {expected} rows read back")));
    }
    batches.into_iter().map(|b| super::keyed::conform(b, schema)).collect()
}

/// A change: rows of one file, inserted or deleted by one commit.
struct Change {
    path: Path,
    /// Its size as the log has it (None: not recorded).
    size: Option<i64>,
    pick: Pick,
    kind: &'static str,
}

/// The rows `table` changed after version `after` up to its snapshot's `latest` version, as a
/// change data feed gives them (the table's `columns`, None: all, and `_change_type`: `insert` or
/// `delete`);
/// None when they cannot be derived exactly and cheaply (see the module docs).
pub(super) async fn derive(
    table: &DeltaTable,
    after: i64,
    latest: i64,
    columns: Option<&[String]>,
) -> Result<Option<Vec<RecordBatch>>, DeltaTableError> {
    let snapshot = table.snapshot()?;
    if let Some(why) = super::scan::not_plain(snapshot) {
        tracing::debug!(why, "changes not derived from the log");
        return Ok(None);
    }
    let store = table.object_store();
    let log = table.log_store();
    let mut changes: Vec<Change> = Vec::new();
    for version in after + 1..=latest {
        let v = u64::try_from(version).map_err(|_| DeltaTableError::Generic("negative version".into()))?;
        let Some(bytes) = log.read_commit_entry(v).await? else {
            tracing::debug!(version, "commit no longer in the log: changes not derived");
            return Ok(None);
        };
        let Some(commit) = commit_changes(deltalake::logstore::get_actions(v, &bytes)?, store.as_ref()).await? else {
            tracing::debug!(version, "commit whose changes are not derived");
            return Ok(None);
        };
        changes.extend(commit);
    }
    if changes.is_empty() {
        return Ok(Some(Vec::new()));
    }
    // Files no longer live may have been vacuumed (and a remove may not record a size): their
    // sizes from the store, or no derivation.
    let live: HashSet<Path> = snapshot.log_data().iter().map(|f| f.object_store_path()).collect();
    let gone: Vec<usize> =
        (0..changes.len()).filter(|&i| changes[i].size.is_none() || !live.contains(&changes[i].path)).collect();
    let paths: Vec<Path> = gone.iter().map(|&i| changes[i].path.clone()).collect();
    let heads_of = Arc::clone(&store);
    let heads: Vec<Option<i64>> = futures::stream::iter(paths)
        .map(move |path| {
            let store = Arc::clone(&heads_of);
            async move {
                match store.head(&path).await {
                    Ok(meta) => Ok(i64::try_from(meta.size).ok()),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(DeltaTableError::from(e)),
                }
            }
        })
        .buffered(super::dv::FILES_AT_ONCE)
        .try_collect()
        .await?;
    for (&i, size) in gone.iter().zip(heads) {
        if size.is_none() {
            tracing::debug!(path = %changes[i].path, "a changed file is no longer stored: changes not derived");
            return Ok(None);
        }
        changes[i].size = size;
    }
    let whole: i64 = changes.iter().filter(|c| !matches!(c.pick, Pick::Only(_))).filter_map(|c| c.size).sum();
    let table_bytes: i64 = snapshot.log_data().iter().map(|f| f.size()).sum();
    if whole > table_bytes.max(WHOLE_READ_ANYWAY) {
        tracing::debug!(whole, table_bytes, "changes span most of the table: read in full instead");
        return Ok(None);
    }
    let mut schema: SchemaRef = Arc::new(snapshot.schema().as_ref().try_into_arrow()?);
    if let Some(columns) = columns {
        let keep: Vec<usize> =
            (0..schema.fields().len()).filter(|&i| columns.iter().any(|c| c == schema.field(i).name())).collect();
        schema = Arc::new(schema.project(&keep)?);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, false));
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    futures::stream::iter(changes)
        .map(move |c| {
            let (store, schema, out_schema) = (Arc::clone(&store), Arc::clone(&schema), Arc::clone(&out_schema));
            tokio::spawn(async move {
                let rows = read(&store, c.path, c.size.unwrap_or(0), &c.pick, &schema).await?;
                rows.into_iter()
                    .map(|b| {
                        let kind: ArrayRef = Arc::new(StringArray::from(vec![c.kind; b.num_rows()]));
                        let columns = b.columns().iter().cloned().chain([kind]).collect();
                        Ok(RecordBatch::try_new(Arc::clone(&out_schema), columns)?)
                    })
                    .collect::<Result<Vec<_>, DeltaTableError>>()
            })
        })
        .buffered(threads)
        .map(|joined| joined.map_err(|e| DeltaTableError::Generic(format!("reading changes: {e}")))?)
        .try_concat()
        .await
        .map(Some)
}

/// The changes of one commit's `actions` (None: a commit whose changes are not derived: a rebuild, a
/// schema or protocol change, a file at an absolute path, a vector that shrank or is no longer stored).
async fn commit_changes(actions: Vec<Action>, store: &dyn ObjectStore) -> Result<Option<Vec<Change>>, DeltaTableError> {
    /// One file of the commit: removed (with its vector then), added (with its vector and size).
    #[derive(Default)]
    struct Sides {
        removed: Option<(Option<DeletionVectorDescriptor>, Option<i64>)>,
        added: Option<(Option<DeletionVectorDescriptor>, i64)>,
    }
    let mut files: Vec<(Path, Sides)> = Vec::new();
    let mut at: HashMap<Path, usize> = HashMap::new();
    for action in actions {
        let (name, removed, added) = match action {
            Action::Metadata(_) | Action::Protocol(_) => return Ok(None),
            Action::CommitInfo(c) if rebuilt(&c.info) => return Ok(None),
            Action::Add(a) if a.data_change => (a.path, None, Some((a.deletion_vector, a.size))),
            Action::Remove(r) if r.data_change => (r.path, Some((r.deletion_vector, r.size)), None),
            _ => continue,
        };
        // Adds are written URL-encoded, delta-rs's removes decoded: the same file either way.
        let Some(path) = (!name.contains("://")).then(|| Path::from_url_path(&name).ok()).flatten() else {
            return Ok(None);
        };
        let i = *at.entry(path.clone()).or_insert_with(|| {
            files.push((path, Sides::default()));
            files.len() - 1
        });
        let sides = &mut files[i].1;
        sides.removed = removed.or(sides.removed.take());
        sides.added = added.or(sides.added.take());
    }
    // Every vector of the commit, read together: (before, after) per file.
    let descriptors: Vec<Option<DeletionVectorDescriptor>> = files
        .iter()
        .flat_map(|(_, s)| {
            [s.removed.as_ref().and_then(|(dv, _)| dv.clone()), s.added.as_ref().and_then(|(dv, _)| dv.clone())]
        })
        .collect();
    let vectors = match super::dv::read_many(store, &Path::from(""), &descriptors).await {
        Ok(v) => v,
        Err(DeltaTableError::ObjectStore { source: object_store::Error::NotFound { .. } }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut vectors = vectors.into_iter();
    let mut out = Vec::with_capacity(files.len());
    for (path, sides) in files {
        let (Some(before), Some(after)) = (vectors.next(), vectors.next()) else {
            return Err(DeltaTableError::Generic("deletion vectors: fewer read than asked".into()));
        };
        match (sides.removed, sides.added) {
            (Some(_), Some((_, size))) => {
                // The same file with a new vector: the rows it adds were deleted.
                if !before.is_subset(&after) {
                    return Ok(None);
                }
                let deleted = after - before;
                if !deleted.is_empty() {
                    out.push(Change { path, size: Some(size), pick: Pick::Only(deleted), kind: "delete" });
                }
            }
            (None, Some((_, size))) => out.push(Change { path, size: Some(size), pick: but(after), kind: "insert" }),
            (Some((_, size)), None) => out.push(Change { path, size, pick: but(before), kind: "delete" }),
            (None, None) => {}
        }
    }
    Ok(Some(out))
}

/// Whether a commit's `info` marks a rebuild of the table (its changes are everything, not what
/// the commit's actions or a change data feed record).
pub(super) fn rebuilt(info: &HashMap<String, serde_json::Value>) -> bool {
    info.get("medallion").and_then(|m| m.get("rebuild")) == Some(&serde_json::Value::Bool(true))
}

/// Every row but `deleted`.
fn but(deleted: RoaringTreemap) -> Pick {
    if deleted.is_empty() { Pick::Every } else { Pick::AllBut(deleted) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row numbers a selection of a `total`-row file reads.
    fn selected(pick: &Pick, total: usize) -> Vec<usize> {
        let (selection, _) = pick.selection(total);
        let Some(s) = selection else { return (0..total).collect() };
        let mut at = 0;
        let mut out = Vec::new();
        for sel in s.iter() {
            if !sel.skip {
                out.extend(at..at + sel.row_count);
            }
            at += sel.row_count;
        }
        out
    }

    #[test]
    fn a_pick_selects_exactly_its_rows_and_says_how_many() {
        let rows: RoaringTreemap = [0u64, 1, 2, 5, 9].into_iter().collect();
        assert_eq!(selected(&Pick::Only(rows.clone()), 10), vec![0, 1, 2, 5, 9]);
        assert_eq!(Pick::Only(rows.clone()).selection(10).1, 5);
        assert_eq!(selected(&Pick::AllBut(rows.clone()), 10), vec![3, 4, 6, 7, 8]);
        assert_eq!(Pick::AllBut(rows.clone()).selection(10).1, 5);
        assert_eq!(selected(&Pick::Every, 3), vec![0, 1, 2]);
        // A row past the end is not selected, but still counted: the read reports the shortfall.
        let past: RoaringTreemap = [1u64, 12].into_iter().collect();
        assert_eq!(selected(&Pick::Only(past.clone()), 10), vec![1]);
        assert_eq!(Pick::Only(past).selection(10).1, 2);
    }
}
