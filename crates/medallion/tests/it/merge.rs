//! The keyed copy-on-write merge against delta-rs's MERGE: same rows, same counts, same change
//! data feed, and untouched files left alone.

use std::sync::Arc;

use medallion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use medallion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use medallion::storage::delta::{MergeMetrics, Table, Txn, Upsert, WriteOptions};
use medallion::storage::{Lake, Layer};

use crate::common::strings;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("o", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]))
}

fn batch(rows: &[(i64, Option<i64>, &str)]) -> RecordBatch {
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

fn upsert(version: i64) -> Upsert {
    Upsert {
        keys: vec!["k".into()],
        order_by: "o".into(),
        columns: vec!["k".into(), "o".into(), "v".into()],
        bounds: Vec::new(),
        delete_column: None,
        txn: Some(Txn { app_id: "test".into(), version }),
        metadata: Default::default(),
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
fn source() -> Vec<RecordBatch> {
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

async fn contents(lake: &Lake) -> Vec<(i64, Option<i64>, String)> {
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

/// Issue 16 (spike): on a table with deletion vectors enabled, the keyed merge marks replaced rows
/// in deletion vectors and rewrites no file, and the table reads the same as copy-on-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_merge_with_deletion_vectors_reads_like_copy_on_write() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let seed = |dir: std::path::PathBuf, dv: bool| async move {
        let lake = Lake::open(&dir.display().to_string(), &dir).expect("lake");
        let mut table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
        for f in 0..4 {
            let rows: Vec<(i64, Option<i64>, &str)> =
                (f * 250 + 1..=f * 250 + 250).map(|k| (k, Some(10), "old")).collect();
            table = table
                .write(vec![batch(&rows)], WriteOptions { deletion_vectors: dv, ..Default::default() })
                .await
                .expect("seed");
        }
        (lake, table)
    };
    let (a_lake, a) = seed(a_dir.path().to_path_buf(), true).await;
    let (b_lake, b) = seed(b_dir.path().to_path_buf(), false).await;
    let (a, dv) = a.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let (b, cow) = b.upsert_rows(source(), upsert(1)).await.expect("copy-on-write");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await, "same rows");
    assert_eq!((dv.num_target_rows_inserted, dv.num_target_rows_updated), (500, 125));
    assert_eq!((cow.num_target_rows_copied, dv.num_target_rows_copied), (375, 0), "no row copied");
    // Again, into files that already have vectors: they grow, rows already deleted match nothing.
    let again: Vec<(i64, Option<i64>, &str)> = (490..=760).map(|k| (k, Some(12), "again")).collect();
    let (_, dv2) = a.upsert_rows(vec![batch(&again)], upsert(2)).await.expect("merge-on-read");
    let (_, cow2) = b.upsert_rows(vec![batch(&again)], upsert(2)).await.expect("copy-on-write");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await, "same rows after a second merge");
    assert_eq!(
        (dv2.num_target_rows_updated, dv2.num_target_rows_inserted),
        (cow2.num_target_rows_updated, cow2.num_target_rows_inserted)
    );
    let vectors = walk_names(a_dir.path(), "deletion_vector_");
    assert_eq!(vectors, 2, "one vector file per merge");
}

fn walk_names(dir: &std::path::Path, prefix: &str) -> usize {
    crate::common::walk(dir)
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .count()
}

/// Timing by hand (`--run-ignored only`): 1,000 keys spread over a 1M-row table of 8 files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn deletion_vectors_against_copy_on_write_timing() {
    for dv in [false, true] {
        let dir = tempfile::tempdir().expect("dir");
        let lake = Lake::open(&dir.path().display().to_string(), dir.path()).expect("lake");
        let mut table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
        for f in 0..8i64 {
            let rows: Vec<(i64, Option<i64>, &str)> =
                (f * 125_000 + 1..=f * 125_000 + 125_000).map(|k| (k, Some(10), "old")).collect();
            table = table
                .write(vec![batch(&rows)], WriteOptions { deletion_vectors: dv, ..Default::default() })
                .await
                .expect("seed");
        }
        let rows: Vec<(i64, Option<i64>, &str)> = (1..=1000).map(|i| (i * 997, Some(11), "new")).collect();
        let t = std::time::Instant::now();
        let (_, m) = table.upsert_rows(vec![batch(&rows)], upsert(1)).await.expect("merge");
        eprintln!(
            "deletion_vectors={dv}: {:?}, updated {}, copied {}, files removed {}",
            t.elapsed(),
            m.num_target_rows_updated,
            m.num_target_rows_copied,
            m.num_target_files_removed
        );
    }
}

/// Spike, what delta-rs does to a table with deletion vectors (`--run-ignored only`): optimize,
/// vacuum (retention 0, forced), and delta-rs's MERGE, each compared with copy-on-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn delta_rs_operations_on_a_deletion_vector_table() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let seed = |dir: std::path::PathBuf, dv: bool| async move {
        let lake = Lake::open(&dir.display().to_string(), &dir).expect("lake");
        let mut table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
        for f in 0..4 {
            let rows: Vec<(i64, Option<i64>, &str)> =
                (f * 250 + 1..=f * 250 + 250).map(|k| (k, Some(10), "old")).collect();
            table = table
                .write(vec![batch(&rows)], WriteOptions { deletion_vectors: dv, ..Default::default() })
                .await
                .expect("seed");
        }
        (lake, table)
    };
    let (a_lake, a) = seed(a_dir.path().to_path_buf(), true).await;
    let (b_lake, b) = seed(b_dir.path().to_path_buf(), false).await;
    let (a, _) = a.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let (b, _) = b.upsert_rows(source(), upsert(1)).await.expect("copy-on-write");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await);
    // delta-rs's MERGE on the DV table (a second key set).
    let ctx = datafusion::prelude::SessionContext::new();
    let again: Vec<(i64, Option<i64>, &str)> = (200..=700).map(|k| (k, Some(13), "merge")).collect();
    let a = match a.upsert(ctx.read_batches(vec![batch(&again)]).expect("src"), upsert(2)).await {
        Ok((a, _)) => a,
        Err(e) => panic!("MERGE on a DV table: {e}"),
    };
    let (b, _) = b.upsert(ctx.read_batches(vec![batch(&again)]).expect("src"), upsert(2)).await.expect("MERGE");
    eprintln!("MERGE on a DV table equals copy-on-write: {}", contents(&a_lake).await == contents(&b_lake).await);
    let (a, removed, added) = a.optimize(&[], None).await.expect("optimize");
    let (b, _, _) = b.optimize(&[], None).await.expect("optimize");
    eprintln!(
        "optimize ({removed} files removed, {added} added) keeps the DV table equal: {}",
        contents(&a_lake).await == contents(&b_lake).await
    );
    let (_, deleted) = a.vacuum(std::time::Duration::ZERO, true, false).await.expect("vacuum");
    let _ = b.vacuum(std::time::Duration::ZERO, true, false).await.expect("vacuum");
    eprintln!(
        "vacuum deleted {} files; the DV table still equal: {}; vector files left: {}",
        deleted.len(),
        contents(&a_lake).await == contents(&b_lake).await,
        walk_names(a_dir.path(), "deletion_vector_")
    );
}

/// Issue 16 (branch): a silver table with `merge = "deletion_vectors"` over batches that re-send
/// orders holds the same rows as copy-on-write after every run, and its files carry vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silver_table_with_deletion_vectors_equals_copy_on_write_run_after_run() {
    use crate::common::{Dir, write_gz};
    let toml = |merge: &str| {
        format!(
            r#"[project]
name = "dv"

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
order_by = "_ingested_at"
merge = "{merge}"
columns = [
  {{ name = "order_id", type = "int64" }},
  {{ name = "customer_id", type = "int64" }},
  {{ name = "amount", type = "decimal(18,2)" }},
  {{ name = "currency", type = "string" }},
]
"#
        )
    };
    let (dv, cow) = (Dir::new(&toml("deletion_vectors")), Dir::new(&toml("copy_on_write")));
    let (batches, _) = crate::common::sample(6_000, 4, 21);
    let rows = "SELECT * EXCLUDE (_ingested_at), CAST(_ingested_at AS VARCHAR) FROM silver.orders ORDER BY order_id";
    for b in &batches {
        for d in [&dv, &cow] {
            let path = d.dir.path().join(format!("lake/bronze/orders/{}/{}.ndjson.gz", b.date, b.batch_id));
            write_gz(&path, b.bronze_ndjson("orders").as_bytes());
            let s = d.run().await;
            assert!(s.ok(), "{:?}", s.failed);
        }
        assert_eq!(dv.rows(rows).await, cow.rows(rows).await, "after batch {}", b.batch_id);
    }
    assert!(walk_names(&dv.dir.path().join("lake/silver/orders"), "deletion_vector_") > 0, "vectors written");
    assert_eq!(walk_names(&cow.dir.path().join("lake/silver/orders"), "deletion_vector_"), 0);
    // A rebuild replaces the table (vectors and all) and keeps the table's setting: merges after
    // it still mark rows, and the rows still equal copy-on-write.
    for d in [&dv, &cow] {
        let s = d
            .run_with(medallion::orchestration::run::RunOptions {
                rebuild: std::collections::BTreeSet::from(["orders".to_string()]),
                now: medallion::runtime::now(),
                ..Default::default()
            })
            .await;
        assert!(s.ok(), "{:?}", s.failed);
    }
    assert_eq!(dv.rows(rows).await, cow.rows(rows).await, "after a rebuild");
    let (more, _) = crate::common::sample(3_000, 1, 22);
    for d in [&dv, &cow] {
        let path = d.dir.path().join(format!("lake/bronze/orders/{}/{}.ndjson.gz", more[0].date, more[0].batch_id));
        write_gz(&path, more[0].bronze_ndjson("orders").as_bytes());
        assert!(d.run().await.ok());
    }
    assert_eq!(dv.rows(rows).await, cow.rows(rows).await, "a merge after the rebuild");
    // Every version reads the same in both lakes (time travel applies each version's vectors).
    let (project, lake) = dv.open().await;
    let (cproject, clake) = cow.open().await;
    let last = medallion::storage::delta::Table::open(&lake, Layer::Silver, "orders")
        .await
        .expect("open")
        .version()
        .expect("v");
    for v in 0..=last {
        let q = "SELECT count(*), sum(order_id) FROM silver.orders";
        let at = || Some(medallion::storage::delta::AsOf::Version(v));
        let run = |ctx: datafusion::prelude::SessionContext| async move {
            let b = ctx.sql(q).await.expect("plan").collect().await.expect("run");
            (strings(b[0].column(0)), strings(b[0].column(1)))
        };
        let a = run(medallion::catalog::session_as_of(&lake, &project, at()).await.expect("session")).await;
        let b = run(medallion::catalog::session_as_of(&clake, &cproject, at()).await.expect("session")).await;
        assert_eq!(a, b, "version {v}");
    }
}
