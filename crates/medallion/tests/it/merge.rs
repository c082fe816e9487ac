//! The keyed copy-on-write merge against delta-rs's MERGE: same rows, same counts, same change
//! data feed, and untouched files left alone.

use std::sync::Arc;

use medallion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use medallion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use medallion::storage::delta::{Gate, MergeMetrics, Table, Txn, Upsert, WriteOptions};
use medallion::storage::{Lake, Layer};

use crate::common::strings;

pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("o", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]))
}

pub(crate) fn batch(rows: &[(i64, Option<i64>, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch")
}

pub(crate) fn upsert(version: i64) -> Upsert {
    Upsert {
        keys: vec!["k".into()],
        order_by: "o".into(),
        columns: vec!["k".into(), "o".into(), "v".into()],
        bounds: Vec::new(),
        delete_column: None,
        txn: Some(Txn { app_id: "test".into(), version }),
        metadata: Default::default(),
        scanned: None,
        gate: Gate::open(),
    }
}

/// A table of keys 1..=1000 (order 10) in four files of 250 keys, recording a change data feed.
async fn seeded(dir: &std::path::Path) -> (Lake, Table) {
    let lake = Lake::open(&dir.display().to_string(), dir).expect("lake");
    let mut table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
    for f in 0..4 {
        let rows: Vec<(i64, Option<i64>, &str)> = (f * 250 + 1..=f * 250 + 250).map(|k| (k, Some(10), "old")).collect();
        table = table
            .write(vec![batch(&rows)], WriteOptions { change_feed: true, ..Default::default() })
            .await
            .expect("seed");
    }
    (lake, table)
}

/// Keys 501..=1500: newer (update), as old (tie: superseded), older, without order (superseded
/// when matched, inserted when new), and new keys.
pub(crate) fn source() -> Vec<RecordBatch> {
    let rows: Vec<(i64, Option<i64>, &str)> = (501..=1500)
        .map(|k| match k % 4 {
            0 => (k, Some(11), "newer"),
            1 => (k, Some(10), "tie"),
            2 => (k, Some(9), "older"),
            _ => (k, None, "no order"),
        })
        .collect();
    vec![batch(&rows[..600]), batch(&rows[600..])]
}

pub(crate) async fn contents(lake: &Lake) -> Vec<(i64, Option<i64>, String)> {
    let t = Table::open(lake, Layer::Silver, "t").await.expect("open");
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", t.provider(&ctx).await.expect("provider")).expect("register");
    let batches = ctx.sql("SELECT k, o, v FROM t ORDER BY k").await.expect("plan").collect().await.expect("collect");
    let mut out = Vec::new();
    for b in &batches {
        let (k, o, v) =
            (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>(), strings(b.column(2)));
        for (r, v) in v.into_iter().enumerate() {
            out.push((k.value(r), o.is_valid(r).then(|| o.value(r)), v));
        }
    }
    out
}

/// Parquet data files in the table directory `dir` (committed or not).
fn data_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "parquet")).count()
}

/// A promotion's dead letter lands before its merge, written meanwhile: the keyed merge reads and
/// writes its files, then waits at its gate and commits once it opens; a gate that fails stops
/// the commit with its error, as it stops MERGE (which waits before it starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_commits_only_past_its_gate() {
    let dir = tempfile::tempdir().expect("dir");
    let (lake, table) = seeded(dir.path()).await;
    let before = table.version();
    let silver = dir.path().join("silver/t");
    let failed = || Gate::after(async { Err(medallion::Error::Internal("the dead letter did not land".into())) });
    let reopen = || Table::open(&lake, Layer::Silver, "t");

    let stopped = table.upsert_rows(source(), Upsert { gate: failed(), ..upsert(1) }).await;
    assert!(stopped.expect_err("keyed merge stopped").to_string().contains("the dead letter did not land"));
    let ctx = datafusion::prelude::SessionContext::new();
    let stopped = Upsert { gate: failed(), ..upsert(1) };
    let stopped = reopen().await.expect("open").upsert(ctx.read_batches(source()).expect("source"), stopped).await;
    assert!(stopped.expect_err("MERGE stopped").to_string().contains("the dead letter did not land"));
    assert_eq!(reopen().await.expect("open").version(), before, "nothing committed past a failed gate");

    let files = data_files(&silver);
    let (reached, waiting) = tokio::sync::oneshot::channel();
    let (opens, open) = tokio::sync::oneshot::channel::<()>();
    let gate = Gate::after(async move {
        let _ = reached.send(());
        open.await.map_err(|_| medallion::Error::Internal("never opened".into()))
    });
    let merging = tokio::spawn(reopen().await.expect("open").upsert_rows(source(), Upsert { gate, ..upsert(1) }));
    waiting.await.expect("the merge reaches its gate");
    assert!(data_files(&silver) > files, "the winners' files are written before the gate opens");
    assert_eq!(reopen().await.expect("open").version(), before, "and not committed");
    opens.send(()).expect("merge waiting");
    let (merged, metrics) = merging.await.expect("task").expect("merged");
    assert_eq!(merged.version(), before.map(|v| v + 1));
    assert_eq!((metrics.num_target_rows_inserted, metrics.num_target_rows_updated), (500, 125));
}

/// A write that would create a table (a first load's dead letter) and whose gate fails leaves no
/// file behind: the files it flushed before the gate's verdict are named by no commit of a table
/// that has none, which no vacuum would sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_of_a_new_table_leaves_no_file() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = Lake::open(&dir.path().display().to_string(), dir.path()).expect("lake");
    let table = Table::open(&lake, Layer::Quarantine, "t").await.expect("open");
    let rows: Vec<(i64, Option<i64>, String)> = (0..20_000).map(|k| (k, Some(k), format!("record {k:>40}"))).collect();
    let rows: Vec<(i64, Option<i64>, &str)> = rows.iter().map(|(k, o, v)| (*k, *o, v.as_str())).collect();
    let batches: Vec<RecordBatch> = rows.chunks(1_000).map(batch).collect();
    let (reached, waiting) = tokio::sync::oneshot::channel();
    let (refuses, refused) = tokio::sync::oneshot::channel::<()>();
    let gate = Gate::after(async move {
        let _ = reached.send(());
        let _ = refused.await;
        Err(medallion::Error::Internal("the audit failed".into()))
    });
    // Small files and row groups, as a dead letter's: several files are flushed before the end.
    let write = WriteOptions { row_group_rows: Some(1_000), file_bytes: Some(64 << 10), gate, ..Default::default() };
    let writing = tokio::spawn(table.write(batches, write));
    waiting.await.expect("the write reaches its gate");
    // Every row was handed to the writer; its files land as it encodes them.
    let written = dir.path().join("quarantine/t");
    for _ in 0..200 {
        if data_files(&written) > 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let flushed = data_files(&written);
    assert!(flushed > 1, "files are flushed before the gate's verdict: {flushed}");
    refuses.send(()).expect("write waiting");
    let stopped = writing.await.expect("task");
    assert!(stopped.expect_err("refused").to_string().contains("the audit failed"));
    assert_eq!(Table::open(&lake, Layer::Quarantine, "t").await.expect("open").version(), None);
    assert_eq!(data_files(&written), 0, "no file left of a table never created");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(data_files(&written), 0, "nor written after the write returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_merge_equals_delta_merge() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a_lake, a) = seeded(a_dir.path()).await;
    let (b_lake, b) = seeded(b_dir.path()).await;
    let before = a.version().expect("version");

    let (a, keyed): (Table, MergeMetrics) = a.upsert_rows(source(), upsert(1)).await.expect("keyed merge");
    let ctx = datafusion::prelude::SessionContext::new();
    let (b, merge) = b.upsert(ctx.read_batches(source()).expect("source"), upsert(1)).await.expect("MERGE");

    assert_eq!(contents(&a_lake).await, contents(&b_lake).await, "same rows as MERGE");
    assert_eq!(
        (keyed.num_source_rows, keyed.num_target_rows_inserted, keyed.num_target_rows_updated),
        (merge.num_source_rows, merge.num_target_rows_inserted, merge.num_target_rows_updated)
    );
    // 125 newer keys replace rows; 500 new keys are inserted (the 375 matched others are superseded).
    assert_eq!((keyed.num_target_rows_inserted, keyed.num_target_rows_updated), (500, 125));
    // The files of keys 1..=500 hold no source key: skipped from their statistics, not rewritten.
    assert_eq!((keyed.num_target_files_skipped_during_scan, keyed.num_target_files_removed), (2, 2));
    assert_eq!(a.txn_version("test").await.expect("txn"), Some(1));
    assert_eq!(a.recent_commits(Some(1)).await.expect("history")[0].operation, "MERGE");

    // The change data feed reports the same changed keys.
    let changed = |t: Table| async move {
        let b = t.changed_values("k", before).await.expect("cdf").expect("feed covers the range");
        let mut keys: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
        keys.sort_unstable();
        keys
    };
    let (ka, kb) = (changed(a).await, changed(b).await);
    assert_eq!(ka.len(), 625);
    assert_eq!(ka, kb);
}

/// A write that creates a table of rows in any order (silver's first load) encodes them on every
/// core at once, a file per core, and commits them as one creation: the same rows as the one-file
/// write, the table's properties, the txn and the commit's metadata; merges then work on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_from_rows_in_any_order_is_written_on_every_core() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    // 200,000 rows in batches that are not whole slices (a writer takes 65,536 rows at a time).
    let rows: Vec<(i64, Option<i64>, String)> =
        (1..=200_000).map(|k| (k, Some(k % 7), format!("v{}", k % 13))).collect();
    let batches = || -> Vec<RecordBatch> {
        rows.chunks(70_000)
            .map(|c| batch(&c.iter().map(|(k, o, v)| (*k, *o, v.as_str())).collect::<Vec<_>>()))
            .collect()
    };
    let meta = || std::collections::HashMap::from([("medallion".to_string(), serde_json::json!({ "run_id": "r1" }))]);
    let creating = |any_order| WriteOptions {
        any_order,
        change_feed: true,
        deletion_vectors: true,
        txn: Some(Txn { app_id: "test".into(), version: 1 }),
        metadata: meta(),
        ..Default::default()
    };
    let mut created = Vec::new();
    for (dir, any_order) in [(a_dir.path(), true), (b_dir.path(), false)] {
        let lake = Lake::open(&dir.display().to_string(), dir).expect("lake");
        let table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
        let table = table.write(batches(), creating(any_order)).await.expect("created");
        assert_eq!(table.version(), Some(0), "one commit creates the table");
        created.push((lake, table));
    }
    let (a, b) = (&created[0].1, &created[1].1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(a.files().expect("files").0, cores.min(4), "a file per core (4 slices)");
    assert_eq!(b.files().expect("files").0, 1, "delta-rs writes one");
    assert_eq!(contents(&created[0].0).await, contents(&created[1].0).await, "the same rows");
    assert_eq!(a.count_rows().await.expect("rows"), 200_000);
    assert!(a.change_feed() && a.deletion_vectors().expect("properties"));
    assert_eq!(a.txn_version("test").await.expect("txn"), Some(1));
    let info = a.last_commit_info().await.expect("info");
    assert_eq!(info.get("medallion").and_then(|m| m.get("run_id")), Some(&serde_json::json!("r1")));
    let history = a.commits().await.expect("history");
    assert_eq!(history[0].rows.inserted, 200_000, "the commit counts its rows");
    // Distinct keys are written plain; orders (7 values) and texts (13) get a dictionary.
    let table_dir = a_dir.path().join("silver").join("t");
    let first = dictionaries(&table_dir);
    assert_eq!(first.len(), cores.min(4), "the creation's files");
    assert_eq!(first.values().collect::<Vec<_>>(), vec![&[("k", false), ("o", true), ("v", true)]; first.len()]);

    // Keys 199,001..=201,000, newer: 1,000 updated with deletion vectors, 1,000 inserted. Their
    // orders are distinct: the merge writes them plain too.
    let newer: Vec<(i64, Option<i64>, &str)> = (199_001..=201_000).map(|k| (k, Some(k), "newer")).collect();
    let (a, merged) = created.swap_remove(0).1.upsert_rows(vec![batch(&newer)], upsert(2)).await.expect("merged");
    assert_eq!((merged.num_target_rows_updated, merged.num_target_rows_inserted), (1_000, 1_000));
    assert_eq!(a.count_rows().await.expect("rows"), 201_000);
    let merged: Vec<_> =
        dictionaries(&table_dir).into_iter().filter(|(f, _)| !first.contains_key(f)).map(|(_, d)| d).collect();
    assert_eq!(merged, vec![[("k", false), ("o", false), ("v", true)]], "the merge's new file");
}

/// Per Parquet file of the table directory `dir`: whether each of its columns (k, o, v) is
/// dictionary-encoded.
fn dictionaries(dir: &std::path::Path) -> std::collections::BTreeMap<String, [(&'static str, bool); 3]> {
    use medallion::parquet::basic::Encoding;
    use medallion::parquet::file::reader::{FileReader, SerializedFileReader};
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("table dir").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let reader = SerializedFileReader::new(std::fs::File::open(&path).expect("file")).expect("parquet");
        let group = reader.metadata().row_group(0);
        let dictionary = |i: usize| group.column(i).encodings().any(|e| e == Encoding::RLE_DICTIONARY);
        out.insert(path.display().to_string(), [("k", dictionary(0)), ("o", dictionary(1)), ("v", dictionary(2))]);
    }
    out
}
