//! Purging deletion vectors: rewriting the files of a table that carry one without their deleted
//! rows (Delta's "REORG … APPLY (PURGE)"), so readers stop reading rows only to drop them and the
//! next vacuum can delete the old files and their vectors.
//!
//! Merge-on-read keeps a merge's cost proportional to the rows it changes; the price is paid by
//! readers, who read every deleted row and skip it. Purging moves that cost back into one rewrite
//! when the table's deleted share grows past its policy (`maintenance.purge_deleted_above`) or at
//! `optimize`. The contents never change: every removed file is added again without its deleted
//! rows, in one commit without data change, like a compaction.

use std::sync::Arc;

use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, LogicalFileView};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use object_store::path::Path;

use super::{dv, keyed};

/// Rows a table's deletion vectors delete, the rows of its live files (deleted ones included),
/// and whether every file has a record count (when not, `rows` counts only those that have one).
pub(super) fn row_counts(table: &DeltaTable) -> Result<(u64, u64, bool), DeltaTableError> {
    let snapshot = table.snapshot()?;
    let (mut deleted, mut rows, mut complete) = (0u64, 0u64, true);
    for f in snapshot.log_data().iter() {
        match f.num_records() {
            Some(n) => rows += n as u64,
            None => complete = false,
        }
        if let Some(d) = f.deletion_vector_descriptor() {
            deleted += u64::try_from(d.cardinality).unwrap_or(0);
        }
    }
    Ok((deleted, rows, complete))
}

/// Rewrites every live file that has a deletion vector without its deleted rows, in one commit.
/// Returns the table after it and (files removed, files added); (0, 0) and no commit when no file
/// has a vector.
pub(super) async fn purge(table: DeltaTable) -> Result<(DeltaTable, u64, u64), DeltaTableError> {
    let snapshot = table.snapshot()?.clone();
    let files: Vec<_> = snapshot.log_data().iter().filter(|f| f.deletion_vector_descriptor().is_some()).collect();
    if files.is_empty() {
        return Ok((table, 0, 0));
    }
    if files.iter().any(|f| !f.partition_values_map().is_empty()) {
        // medallion writes vectors only into unpartitioned tables (its keyed merge); a partitioned
        // file's rows lack their partition columns, which a rewrite here would lose.
        return Err(DeltaTableError::Generic(
            "purging deletion vectors of a partitioned table is not supported; run a full rebuild".into(),
        ));
    }
    // Each file alone, into its own successor.
    let bins = files.into_iter().map(|f| vec![f]).collect();
    let operation = DeltaOperation::Optimize { predicate: Some("deletion vectors purged".into()), target_size: 0 };
    rewrite_bins(table, bins, operation).await
}

/// Compacts the table's small files: the live files under half of `target` bytes, in log order,
/// packed into files of about `target` bytes, each written without the rows its deletion vector
/// deletes, in one commit without data change. Larger files stay as they are, vectors included
/// (a table's policy purges them when its deleted share passes `purge_deleted_above`): a
/// compaction costs the files written since the last one, not the table. Unpartitioned tables
/// only. Returns the table and (files removed, files added); (0, 0) and no commit when there is
/// nothing to pack (no small file, or a lone one without a vector).
pub(super) async fn compact_small(table: DeltaTable, target: u64) -> Result<(DeltaTable, u64, u64), DeltaTableError> {
    let snapshot = table.snapshot()?.clone();
    if !snapshot.metadata().partition_columns().is_empty() {
        return Err(DeltaTableError::Generic("compacting small files of a partitioned table: use optimize".into()));
    }
    // Bins of about `target` bytes, in log order.
    let mut bins: Vec<Vec<LogicalFileView>> = vec![Vec::new()];
    let mut filled = 0u64;
    for f in snapshot.log_data().iter() {
        let size = u64::try_from(f.size()).unwrap_or(u64::MAX);
        if size >= target / 2 {
            continue;
        }
        if filled >= target {
            bins.push(Vec::new());
            filled = 0;
        }
        if let Some(bin) = bins.last_mut() {
            bin.push(f);
        }
        filled += size;
    }
    bins.retain(|b| b.len() > 1 || b.iter().any(|f| f.deletion_vector_descriptor().is_some()));
    if bins.is_empty() {
        return Ok((table, 0, 0));
    }
    let operation =
        DeltaOperation::Optimize { predicate: None, target_size: i64::try_from(target).unwrap_or(i64::MAX) };
    rewrite_bins(table, bins, operation).await
}

/// Rewrites each bin of files into one new file (a file's rows in order, bin after bin), without
/// the rows their deletion vectors delete, several bins at once, and commits it as one
/// `operation` without data change: every file of every bin removed, their successors added.
/// Returns the table and (files removed, files added).
async fn rewrite_bins(
    table: DeltaTable,
    bins: Vec<Vec<LogicalFileView>>,
    operation: DeltaOperation,
) -> Result<(DeltaTable, u64, u64), DeltaTableError> {
    let snapshot = table.snapshot()?.clone();
    let store = table.object_store();
    let descriptors: Vec<_> = bins.iter().flatten().map(|f| f.deletion_vector_descriptor()).collect();
    let mut vectors = dv::read_many(store.as_ref(), &Path::from(""), &descriptors).await?.into_iter();
    let mut actions = Vec::new();
    let mut jobs = Vec::with_capacity(bins.len());
    for bin in &bins {
        let mut files = Vec::with_capacity(bin.len());
        for f in bin {
            let path = f.object_store_path();
            // One per descriptor, in order (an empty one for a file without a vector).
            let deleted = vectors.next().ok_or_else(|| DeltaTableError::Generic(format!("{path}: no vector read")))?;
            let drop: Vec<u32> = deleted
                .iter()
                .map(|r| u32::try_from(r).map_err(|_| DeltaTableError::Generic(format!("{path}: row {r}"))))
                .collect::<Result<_, _>>()?;
            files.push((path, f.size(), drop));
            actions.push(Action::Remove(f.remove_action(false)));
        }
        jobs.push(files);
    }
    let removed = actions.len() as u64;
    let shared = Arc::new(table.clone());
    let mut stream = futures::stream::iter(jobs)
        .map(|files| {
            let table = Arc::clone(&shared);
            tokio::spawn(async move { keyed::rewrite_together(&table, files, false).await.map(|(adds, _, _)| adds) })
        })
        .buffered(super::cores());
    let mut added = 0u64;
    while let Some(joined) = stream.next().await {
        for a in joined.map_err(|e| DeltaTableError::Generic(format!("rewrite task: {e}")))?? {
            if let Action::Add(mut add) = a {
                add.data_change = false;
                actions.push(Action::Add(add));
                added += 1;
            }
        }
    }
    let commit =
        CommitBuilder::default().with_actions(actions).build(Some(&snapshot), table.log_store(), operation).await?;
    let mut out = table;
    out.update_incremental(Some(commit.version())).await?;
    Ok((out, removed, added))
}
