//! Replacing a table's rows by key (dbt's `delete+insert`: a keyed incremental gold model) in
//! time that follows the rows replaced, not the table.
//!
//! Every published row whose key (one or more columns, of any type; a null part never matches,
//! as in SQL and dbt) is among the new rows' keys is removed, and the new rows are added, in one
//! commit:
//!
//! 1. The new rows' keys are put in a set, in Arrow's row format (so composite and string keys
//!    compare as bytes).
//! 2. With one integer key, files whose key range holds none of them are skipped; the others
//!    are scanned on the key columns only (rows their deletion vector already deletes match
//!    nothing).
//! 3. A file holding a matched row is rewritten without it (copy-on-write), or, on a table with
//!    `delta.enableDeletionVectors`, committed again with the row in its deletion vector. Files
//!    holding none are left alone.
//! 4. The new rows are written to a new file; everything lands in one commit with MERGE's
//!    metrics (rows inserted and deleted), so `history` shows what the build changed.
//!
//! Before this, such a build read every published row other than the new rows' keys and
//! rewrote the whole table each run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::parquet::arrow::ProjectionMask;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, LogicalFileView};
use deltalake::operations::merge::MergeMetrics;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde_json::Value;

use super::keyed::{conform, marked, may_hold, open, rewrite_each, winners, writable};
use super::{commit_properties, encodings, parquet_properties};

type Fast = foldhash::fast::RandomState;

/// The new rows' keys, in Arrow's row format.
struct Keys {
    converter: RowConverter,
    set: HashSet<Box<[u8]>, Fast>,
    /// The keys, sorted, when there is one signed integer key column (to skip files by their
    /// statistics).
    ints: Option<Vec<i64>>,
}

impl Keys {
    /// The keys of `rows` (in the table's schema) at columns `at`.
    fn of(rows: &[RecordBatch], schema: &Schema, at: &[usize]) -> Result<Keys, DeltaTableError> {
        let fields = at.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        let mut set = HashSet::with_hasher(Fast::default());
        let mut sorted: Vec<i64> = Vec::new();
        // Signed integers only: each converts to `i64` exactly, as Delta's statistics hold them.
        let one_int = at.len() == 1
            && matches!(
                schema.field(at[0]).data_type(),
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
            );
        for batch in rows {
            let columns: Vec<ArrayRef> = at.iter().map(|&i| Arc::clone(batch.column(i))).collect();
            let converted = converter.convert_columns(&columns)?;
            let ints = one_int.then(|| cast(&columns[0], &DataType::Int64)).transpose()?;
            let ints = ints.as_ref().map(|a| a.as_primitive::<Int64Type>());
            for r in present(&columns) {
                set.insert(converted.row(r).as_ref().into());
                sorted.extend(ints.map(|a| a.value(r)));
            }
        }
        sorted.sort_unstable();
        Ok(Keys { converter, set, ints: one_int.then_some(sorted) })
    }

    /// Whether a file with these statistics may hold one of the keys (`key`: its one column).
    fn may_be_in(&self, stats: Option<&Value>, key: &str) -> bool {
        self.ints.as_ref().is_none_or(|sorted| may_hold(sorted, stats, key))
    }
}

/// The rows of `columns` with no null part.
fn present(columns: &[ArrayRef]) -> impl Iterator<Item = usize> + '_ {
    let n = columns.first().map_or(0, |c| c.len());
    (0..n).filter(move |&r| columns.iter().all(|c| c.is_valid(r)))
}

/// Replaces the rows of `table` whose key (`keys`) is among `rows`' keys with `rows`, in one
/// commit carrying `metadata`; None when this path does not apply (a partitioned or constrained
/// table, one recording a change data feed, columns that differ from the table's): the caller
/// then writes the table's new content whole.
pub(super) async fn replace_keys(
    table: &DeltaTable,
    rows: &[RecordBatch],
    keys: &[String],
    metadata: HashMap<String, Value>,
) -> Result<Option<(DeltaTable, MergeMetrics)>, DeltaTableError> {
    let started = std::time::Instant::now();
    let schema: SchemaRef = Arc::new(table.snapshot()?.schema().as_ref().try_into_arrow()?);
    let same_columns =
        |b: &RecordBatch| b.schema().fields().iter().map(|f| f.name()).eq(schema.fields().iter().map(|f| f.name()));
    if !rows.iter().all(same_columns) {
        return Ok(None);
    }
    let Some(mode) = writable(table, &schema)? else { return Ok(None) };
    if mode.change_feed {
        return Ok(None);
    }
    let Ok(at) = keys.iter().map(|k| schema.index_of(k)).collect::<Result<Vec<usize>, _>>() else { return Ok(None) };
    let rows: Vec<RecordBatch> = rows.iter().map(|b| conform(b.clone(), &schema)).collect::<Result<_, _>>()?;
    let incoming = Arc::new(Keys::of(&rows, &schema, &at)?);

    // The files that may hold a key, and the rows of each that do.
    let snapshot = table.snapshot()?;
    let files: Vec<LogicalFileView> = snapshot.log_data().iter().collect();
    // (New rows whose every key has a null part replace nothing: no file is read.)
    let candidates: Vec<usize> = (0..files.len())
        .filter(|_| !incoming.set.is_empty())
        .filter(|&i| {
            let stats: Option<Value> = files[i].stats().and_then(|s| serde_json::from_str(&s).ok());
            incoming.may_be_in(stats.as_ref(), &keys[0])
        })
        .collect();
    let store = table.object_store();
    let descriptors: Vec<_> = candidates.iter().map(|&i| files[i].deletion_vector_descriptor()).collect();
    let deleted = super::dv::read_many(store.as_ref(), &Path::from(""), &descriptors).await?;
    let key_names: Arc<Vec<String>> = Arc::new(keys.to_vec());
    let jobs: Vec<_> = candidates
        .iter()
        .zip(deleted)
        .map(|(&i, deleted)| (i, files[i].object_store_path(), files[i].size(), deleted))
        .collect();
    let scanned = jobs.len();
    let scan_started = std::time::Instant::now();
    let touched: Vec<(usize, Vec<u32>, roaring::RoaringTreemap)> = futures::stream::iter(jobs)
        .map(|(i, path, size, deleted)| {
            let (store, incoming, schema, key_names) =
                (Arc::clone(&store), Arc::clone(&incoming), Arc::clone(&schema), Arc::clone(&key_names));
            tokio::spawn(async move {
                let hits = matched(&store, path, size, &deleted, &key_names, &schema, &incoming).await?;
                Ok::<_, DeltaTableError>((i, hits, deleted))
            })
        })
        .buffer_unordered(super::cores())
        .map(|joined| joined.map_err(|e| DeltaTableError::Generic(format!("replace scan task: {e}")))?)
        .try_filter(|(_, hits, _)| futures::future::ready(!hits.is_empty()))
        .try_collect()
        .await?;
    let scan_time = scan_started.elapsed();

    // Mark or rewrite the files holding matched rows.
    let rewrite_started = std::time::Instant::now();
    let mut actions = Vec::new();
    let (mut removed, mut added, mut copied) = (0usize, 0usize, 0usize);
    let deleted_rows: usize = touched.iter().map(|(_, hits, _)| hits.len()).sum();
    if mode.deletion_vectors {
        let mut vectors = Vec::with_capacity(touched.len());
        for (_, hits, deleted) in &touched {
            let mut vector = deleted.clone();
            vector.extend(hits.iter().map(|&r| u64::from(r)));
            vectors.push(vector);
        }
        let descriptors = super::dv::write(store.as_ref(), &Path::from(""), vectors).await?;
        for ((i, _, _), d) in touched.iter().zip(descriptors) {
            actions.extend(marked(&files[*i], d));
            (removed, added) = (removed + 1, added + 1);
        }
    } else {
        // Several files at once, each into one new file.
        let rewrites = touched.into_iter().map(|(i, hits, _)| (i, hits)).collect();
        for (i, adds, _, kept) in rewrite_each(table, &files, rewrites, false).await? {
            actions.push(Action::Remove(files[i].remove_action(true)));
            (removed, added, copied) = (removed + 1, added + adds.len(), copied + kept);
            actions.extend(adds);
        }
    }
    let rewrite_time = rewrite_started.elapsed();

    // The new rows, encoded on every core (a file per 100,000 rows, up to one per core).
    let inserted: usize = rows.iter().map(RecordBatch::num_rows).sum();
    let properties = encodings::plain_where_distinct(parquet_properties(), rows.first()).build();
    let mut writer = winners(table, properties, inserted as u64)?;
    for batch in &rows {
        writer.write(batch).await?;
    }
    let adds = writer.finish().await?;
    added += adds.len();
    actions.extend(adds.into_iter().map(Action::Add));

    let metrics = MergeMetrics {
        num_source_rows: inserted,
        num_target_rows_inserted: inserted,
        num_target_rows_updated: 0,
        num_target_rows_deleted: deleted_rows,
        num_target_rows_copied: copied,
        num_output_rows: inserted + copied,
        num_target_files_scanned: scanned,
        num_target_files_skipped_during_scan: files.len() - scanned,
        num_target_files_added: added,
        num_target_files_removed: removed,
        execution_time_ms: started.elapsed().as_millis() as u64,
        scan_time_ms: scan_time.as_millis() as u64,
        rewrite_time_ms: rewrite_time.as_millis() as u64,
    };
    let mut metadata = metadata;
    metadata.insert("operationMetrics".into(), serde_json::to_value(&metrics).unwrap_or(Value::Null));
    let on: Vec<String> = keys.iter().map(|k| format!("target.{k} = source.{k}")).collect();
    // No read predicate: every file that may hold a key was read, so a concurrent commit that
    // added or removed any file conflicts.
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(on.join(" AND ")),
        matched_predicates: vec![MergePredicate { action_type: "delete".into(), predicate: None }],
        not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
        not_matched_by_source_predicates: Vec::new(),
    };
    let commit = CommitBuilder::from(commit_properties(None, metadata))
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    let mut out = table.clone();
    out.update_incremental(Some(commit.version())).await?;
    Ok(Some((out, metrics)))
}

/// The rows of one file (not in `deleted`) whose key is among `incoming`: their positions, in
/// order. Reads the key columns only.
async fn matched(
    store: &Arc<dyn ObjectStore>,
    path: Path,
    size: i64,
    deleted: &roaring::RoaringTreemap,
    keys: &[String],
    schema: &Schema,
    incoming: &Keys,
) -> Result<Vec<u32>, DeltaTableError> {
    let builder = open(store, path.clone(), size, false).await?;
    let fields = builder.schema().fields().clone();
    let mut at = Vec::with_capacity(keys.len());
    for k in keys {
        at.push(
            fields
                .iter()
                .position(|f| f.name() == k)
                .ok_or_else(|| DeltaTableError::Generic(format!("{path}: no column `{k}`")))?,
        );
    }
    let mut roots = at.clone();
    roots.sort_unstable();
    roots.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.clone());
    let mut stream = builder.with_projection(mask).build()?;
    // Each key's place among the projected columns, and the type the new rows' keys have.
    let places: Vec<usize> = at.iter().map(|c| roots.iter().position(|r| r == c).unwrap_or(0)).collect();
    let types: Vec<DataType> =
        keys.iter().map(|k| schema.field_with_name(k).map(|f| f.data_type().clone())).collect::<Result<_, _>>()?;
    let (mut hits, mut row) = (Vec::new(), 0u32);
    while let Some(batch) = stream.try_next().await? {
        let columns: Vec<ArrayRef> =
            places.iter().zip(&types).map(|(&p, ty)| cast(batch.column(p), ty)).collect::<Result<_, _>>()?;
        let converted: Rows = incoming.converter.convert_columns(&columns)?;
        for r in present(&columns) {
            let position = row + r as u32;
            if !deleted.contains(u64::from(position)) && incoming.set.contains(converted.row(r).as_ref()) {
                hits.push(position);
            }
        }
        row += batch.num_rows() as u32;
    }
    Ok(hits)
}
