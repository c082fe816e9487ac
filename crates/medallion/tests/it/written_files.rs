//! Files written for a table by a process that does not commit (a cluster's executor), published
//! by one commit elsewhere: the table is created, replaced, changes schema; files never committed
//! are not read, and are deleted when the build is abandoned.

use std::collections::HashMap;
use std::sync::Arc;

use medallion::arrow::array::{Int64Array, RecordBatch, StringArray};
use medallion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use medallion::storage::delta::{FileWriter, Table, rows_in};
use medallion::storage::{Lake, Layer};

fn schema(with_name: bool) -> SchemaRef {
    let mut fields = vec![Field::new("id", DataType::Int64, true)];
    if with_name {
        fields.push(Field::new("name", DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

fn rows(ids: std::ops::Range<i64>, with_name: bool) -> RecordBatch {
    let mut columns: Vec<Arc<dyn medallion::arrow::array::Array>> =
        vec![Arc::new(Int64Array::from_iter_values(ids.clone()))];
    if with_name {
        columns.push(Arc::new(StringArray::from_iter_values(ids.map(|i| format!("n{i}")))));
    }
    RecordBatch::try_new(schema(with_name), columns).expect("batch")
}

/// Files written by `parts` separate writers (as tasks would), their add actions.
async fn written(table: &Table, parts: &[RecordBatch]) -> Vec<String> {
    let mut adds = Vec::new();
    for part in parts {
        let mut writer = FileWriter::new(&table.url(), part.schema()).expect("writer");
        writer.write(part.clone()).await.expect("write");
        adds.extend(writer.finish().await.expect("finish"));
    }
    adds
}

fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet")))
        .count()
}

#[tokio::test]
async fn written_files_are_published_by_one_commit_and_abandoned_ones_deleted() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = Lake::open(&dir.path().display().to_string(), dir.path()).expect("lake");
    let meta = || HashMap::from([("medallion".to_string(), serde_json::json!({ "run_id": "r" }))]);

    // Created with the files of two writers; an empty writer writes no file.
    let table = Table::open(&lake, Layer::Gold, "m").await.expect("open");
    let mut adds = written(&table, &[rows(0..10, false), rows(10..25, false)]).await;
    adds.extend(FileWriter::new(&table.url(), schema(false)).expect("writer").finish().await.expect("empty"));
    assert_eq!((adds.len(), rows_in(&adds).expect("rows")), (2, 25));
    // Not part of the table before the commit.
    assert!(!Table::open(&lake, Layer::Gold, "m").await.expect("open").exists());
    let table = table.commit_files(&adds, &schema(false), None, meta()).await.expect("create");
    assert_eq!((table.version(), table.count_rows().await.expect("count")), (Some(0), 25));

    // Replaced, with a new column, in one commit.
    let adds = written(&table, &[rows(100..103, true)]).await;
    let table = table.commit_files(&adds, &schema(true), None, meta()).await.expect("replace");
    let reopened = Table::open(&lake, Layer::Gold, "m").await.expect("open");
    assert_eq!((reopened.version(), reopened.count_rows().await.expect("count")), (Some(1), 3));
    assert_eq!(reopened.arrow_schema().expect("schema").expect("exists").fields().len(), 2);
    let info = reopened.last_commit_info().await.expect("info");
    assert_eq!(info.get("medallion").and_then(|m| m.get("run_id")), Some(&serde_json::json!("r")));

    // A build stopped before its commit: its files are deleted, the table is unchanged.
    let on_disk = parquet_files(&dir.path().join("gold/m"));
    let abandoned = written(&table, &[rows(0..5, true)]).await;
    assert_eq!(parquet_files(&dir.path().join("gold/m")), on_disk + 1);
    table.discard_files(&abandoned).await.expect("discard");
    assert_eq!(parquet_files(&dir.path().join("gold/m")), on_disk);
    let reopened = Table::open(&lake, Layer::Gold, "m").await.expect("open");
    assert_eq!((reopened.version(), reopened.count_rows().await.expect("count")), (Some(1), 3));
}

/// Files a cluster's executors wrote for a silver table (the latest record per key, in two
/// files), merged by key without reading them again: the same rows, counts and change data feed
/// as merging the same rows from memory, copy-on-write and with deletion vectors. Source rows the
/// table holds as new or newer are superseded inside the written files (a vector on the new file,
/// or the file rewritten without them and the written one deleted); the txn is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_files_merge_like_the_same_rows() {
    use medallion::arrow::array::AsArray;
    use medallion::arrow::datatypes::Int64Type;
    use medallion::storage::delta::Txn;

    use crate::deletion_vectors::seeded_with;
    use crate::merge::{contents, source, upsert};

    for deletion_vectors in [false, true] {
        let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (a_lake, a) = seeded_with(a_dir.path(), deletion_vectors, true).await;
        let (b_lake, b) = seeded_with(b_dir.path(), deletion_vectors, true).await;
        let before = a.version().expect("version");
        let (a, from_rows) = a.upsert_rows(source(), upsert(1)).await.expect("rows merged");
        let adds = written(&b, &source()).await;
        let txn = Txn { app_id: "test".into(), version: 1 };
        let (b, from_files) =
            b.upsert_written(&adds, ("k", "o"), txn, HashMap::new()).await.expect("merged").expect("keyed");
        let mode = if deletion_vectors { "deletion vectors" } else { "copy-on-write" };
        assert_eq!(contents(&a_lake).await, contents(&b_lake).await, "{mode}: same rows");
        assert_eq!(
            (from_files.num_source_rows, from_files.num_target_rows_inserted, from_files.num_target_rows_updated),
            (from_rows.num_source_rows, from_rows.num_target_rows_inserted, from_rows.num_target_rows_updated),
            "{mode}"
        );
        assert_eq!(b.txn_version("test").await.expect("txn"), Some(1), "{mode}");
        let changed = |t: Table| async move {
            let b = t.changed_values("k", before).await.expect("cdf").expect("feed covers the range");
            let mut keys: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
            keys.sort_unstable();
            keys
        };
        assert_eq!(changed(a).await, changed(b).await, "{mode}: same change feed");
        // The first written file holds superseded rows: kept with a vector, or replaced and
        // deleted; the second, only new keys, is committed as it is.
        let on_disk: Vec<bool> = adds
            .iter()
            .map(|a| {
                serde_json::from_str::<serde_json::Value>(a).expect("add")["path"].as_str().expect("path").to_string()
            })
            .map(|p| b_dir.path().join("silver/t").join(p).exists())
            .collect();
        assert_eq!(on_disk, vec![deletion_vectors, true], "{mode}");
    }
}

/// Where the keyed merge does not apply (here a partitioned table), merging written files says so
/// (the caller then merges their rows) and leaves the table as it was; the files read back whole,
/// in the table's schema, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_files_the_keyed_merge_cannot_take_read_back_whole() {
    use medallion::storage::delta::{Txn, WriteOptions};

    use crate::merge::{batch, contents, schema};

    let dir = tempfile::tempdir().expect("dir");
    let lake = Lake::open(&dir.path().display().to_string(), dir.path()).expect("lake");
    let seed: Vec<(i64, Option<i64>, &str)> =
        (1..=10).map(|k| (k, Some(10), if k % 2 == 0 { "a" } else { "b" })).collect();
    let options = WriteOptions { partition_by: vec!["v".into()], ..Default::default() };
    let table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
    let table = table.write(vec![batch(&seed)], options).await.expect("seed");
    let before = contents(&lake).await;
    let parts = [batch(&[(5, Some(11), "a"), (20, Some(1), "b")]), batch(&[(21, None, "a")])];
    let adds = written(&table, &parts).await;
    let txn = Txn { app_id: "test".into(), version: 1 };
    let merged = table.upsert_written(&adds, ("k", "o"), txn, HashMap::new()).await.expect("no error");
    assert!(merged.is_none(), "a partitioned table is not the keyed merge's");
    assert_eq!(contents(&lake).await, before, "nothing committed");
    assert_eq!(table.txn_version("test").await.expect("txn"), None);
    let back = table.read_written(&adds, &schema()).await.expect("read back");
    assert_eq!(back, parts.to_vec());
}
