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

use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
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
    let store = table.object_store();
    let threads = super::cores();
    let shared = Arc::new(table.clone());
    let descriptors: Vec<_> = files.iter().map(|f| f.deletion_vector_descriptor()).collect();
    let vectors = dv::read_many(store.as_ref(), &Path::from(""), &descriptors).await?;
    let jobs: Vec<_> = files.iter().zip(vectors).map(|(f, v)| (v, f.object_store_path(), f.size())).collect();
    let mut rewritten = Vec::with_capacity(files.len());
    let mut stream = futures::stream::iter(jobs)
        .map(|(deleted, path, size)| {
            let table = Arc::clone(&shared);
            tokio::spawn(async move {
                let drop: Vec<u32> = deleted
                    .iter()
                    .map(|r| u32::try_from(r).map_err(|_| DeltaTableError::Generic(format!("{path}: row {r}"))))
                    .collect::<Result<_, _>>()?;
                keyed::rewrite(&table, path, size, &drop, false).await.map(|(adds, _, _)| adds)
            })
        })
        .buffered(threads);
    while let Some(joined) = stream.next().await {
        rewritten.push(joined.map_err(|e| DeltaTableError::Generic(format!("purge task: {e}")))??);
    }
    let mut actions = Vec::new();
    let removed = files.len() as u64;
    let mut added = 0u64;
    for (f, adds) in files.iter().zip(rewritten) {
        actions.push(Action::Remove(f.remove_action(false)));
        for a in adds {
            if let Action::Add(mut add) = a {
                add.data_change = false;
                actions.push(Action::Add(add));
                added += 1;
            }
        }
    }
    let operation = DeltaOperation::Optimize { predicate: Some("deletion vectors purged".into()), target_size: 0 };
    let commit =
        CommitBuilder::default().with_actions(actions).build(Some(&snapshot), table.log_store(), operation).await?;
    let mut out = table;
    out.update_incremental(Some(commit.version())).await?;
    Ok((out, removed, added))
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
    let small: Vec<_> =
        snapshot.log_data().iter().filter(|f| u64::try_from(f.size()).unwrap_or(u64::MAX) < target / 2).collect();
    // Bins of about `target` bytes, in log order.
    let mut bins: Vec<Vec<usize>> = vec![Vec::new()];
    let mut filled = 0u64;
    for (i, f) in small.iter().enumerate() {
        if filled >= target {
            bins.push(Vec::new());
            filled = 0;
        }
        if let Some(bin) = bins.last_mut() {
            bin.push(i);
        }
        filled += u64::try_from(f.size()).unwrap_or(0);
    }
    bins.retain(|b| b.len() > 1 || b.iter().any(|&i| small[i].deletion_vector_descriptor().is_some()));
    if bins.is_empty() {
        return Ok((table, 0, 0));
    }
    let store = table.object_store();
    let packed: Vec<usize> = bins.iter().flatten().copied().collect();
    let descriptors: Vec<_> = packed.iter().map(|&i| small[i].deletion_vector_descriptor()).collect();
    let vectors: std::collections::HashMap<usize, roaring::RoaringTreemap> =
        packed.iter().copied().zip(dv::read_many(store.as_ref(), &Path::from(""), &descriptors).await?).collect();
    let shared = Arc::new(table.clone());
    let jobs: Vec<Vec<(Path, i64, Vec<u32>)>> = bins
        .iter()
        .map(|bin| {
            bin.iter()
                .map(|&i| {
                    let path = small[i].object_store_path();
                    let drop: Vec<u32> = vectors[&i]
                        .iter()
                        .map(|r| u32::try_from(r).map_err(|_| DeltaTableError::Generic(format!("{path}: row {r}"))))
                        .collect::<Result<_, _>>()?;
                    Ok((path, small[i].size(), drop))
                })
                .collect::<Result<Vec<_>, DeltaTableError>>()
        })
        .collect::<Result<_, _>>()?;
    let mut stream = futures::stream::iter(jobs)
        .map(|files| {
            let table = Arc::clone(&shared);
            tokio::spawn(async move { keyed::rewrite_together(&table, files, false).await.map(|(adds, _, _)| adds) })
        })
        .buffered(super::cores());
    let mut actions: Vec<Action> = packed.iter().map(|&i| Action::Remove(small[i].remove_action(false))).collect();
    let removed = packed.len() as u64;
    let mut added = 0u64;
    while let Some(joined) = stream.next().await {
        for a in joined.map_err(|e| DeltaTableError::Generic(format!("compaction task: {e}")))?? {
            if let Action::Add(mut add) = a {
                add.data_change = false;
                actions.push(Action::Add(add));
                added += 1;
            }
        }
    }
    let operation =
        DeltaOperation::Optimize { predicate: None, target_size: i64::try_from(target).unwrap_or(i64::MAX) };
    let commit =
        CommitBuilder::default().with_actions(actions).build(Some(&snapshot), table.log_store(), operation).await?;
    let mut out = table;
    out.update_incremental(Some(commit.version())).await?;
    Ok((out, removed, added))
}
