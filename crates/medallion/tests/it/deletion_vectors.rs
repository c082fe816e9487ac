//! Deletion vectors (issue 16): merge-on-read silver tables read like copy-on-write ones through
//! every operation medallion runs on them, and purges and vacuum leave them whole.

use medallion::storage::delta::{Table, WriteOptions};
use medallion::storage::{Lake, Layer};

use crate::common::{Rng, first_i64, seeds, strings};
use crate::merge::{batch, contents, source, upsert};

/// On a table with deletion vectors enabled, the keyed merge marks replaced rows
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

/// A merge with more winning rows than one file takes is written by several writers at once (one
/// per core, up to a file per 100,000 rows), and every row arrives once, in both modes; a
/// superseded source row stays out. Its change data feed, written the same way, has every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_merge_is_written_by_several_writers_and_loses_no_row() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for (dv, feed) in [(true, false), (false, false), (true, true)] {
        let dir = tempfile::tempdir().expect("dir");
        let (lake, table) = seeded_with(dir.path(), dv, feed).await;
        let before = table.version().expect("version");
        // Keys 1..=250,000: 1..=1000 replace the seed's rows but key 7 (older), the rest are new.
        let rows: Vec<(i64, Option<i64>, &str)> =
            (1..=250_000).map(|k| (k, Some(if k == 7 { 9 } else { 11 }), "new")).collect();
        let source = vec![batch(&rows[..70_000]), batch(&rows[70_000..])];
        let (table, m) = table.upsert_rows(source, upsert(1)).await.expect("merge");
        assert_eq!((m.num_target_rows_inserted, m.num_target_rows_updated), (249_000, 999), "dv={dv}");
        // Merge-on-read commits the 4 seed files again with vectors; copy-on-write rewrites the
        // one holding key 7 (the others lose every row).
        let written = m.num_target_files_added - if dv { m.num_target_files_removed } else { 1 };
        assert_eq!(written, cores.min(2), "dv={dv}: files of the winners");
        let got = contents(&lake).await;
        assert_eq!(got.len(), 250_000, "dv={dv}");
        assert!(got.iter().enumerate().all(|(i, r)| r.0 == i as i64 + 1), "dv={dv}: each key once");
        assert_eq!(got[6], (7, Some(10), "old".to_string()), "dv={dv}: the superseded row stays out");
        assert!(got.iter().filter(|r| r.0 != 7).all(|r| r.1 == Some(11) && r.2 == "new"), "dv={dv}");
        if feed {
            let changes = table.changes(before).await.expect("changes").expect("a feed");
            let kinds = crate::common::strings(
                &datafusion::arrow::compute::concat(
                    &changes
                        .iter()
                        .map(|b| b.column_by_name("_change_type").expect("type").as_ref())
                        .collect::<Vec<_>>(),
                )
                .expect("concat"),
            );
            let count = |k: &str| kinds.iter().filter(|t| *t == k).count();
            assert_eq!((count("insert"), count("update_preimage"), count("update_postimage")), (249_000, 999, 999));
            let cdc =
                crate::common::walk(dir.path()).iter().filter(|p| p.to_string_lossy().contains("_change_data")).count();
            assert_eq!(cdc, cores.min(2), "change data files written at once");
        }
    }
}

/// A table with deletion vectors is read on several partitions (delta-rs 1.1 reads it on one),
/// and filtered, projected, limited and aggregated reads equal copy-on-write's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vectored_table_is_read_on_several_partitions_like_copy_on_write() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a_lake, a) = seeded(a_dir.path(), true).await;
    let (b_lake, b) = seeded(b_dir.path(), false).await;
    let (a, _) = a.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let (b, _) = b.upsert_rows(source(), upsert(1)).await.expect("copy-on-write");
    // Every row of one file replaced: its selection keeps none.
    let all_of_first: Vec<(i64, Option<i64>, &str)> = (1..=250).map(|k| (k, Some(30), "all")).collect();
    let (a, _) = a.upsert_rows(vec![batch(&all_of_first)], upsert(2)).await.expect("merge-on-read");
    let (b, _) = b.upsert_rows(vec![batch(&all_of_first)], upsert(2)).await.expect("copy-on-write");
    assert!(walk_names(a_dir.path(), "deletion_vector_") > 0);
    let queries = [
        "SELECT count(*), sum(k), min(v), max(o) FROM t",
        "SELECT k, v FROM t WHERE k BETWEEN 120 AND 260 ORDER BY k",
        "SELECT v, count(*) FROM t WHERE o >= 11 GROUP BY v ORDER BY v",
        "SELECT k FROM t WHERE v = 'all' ORDER BY k LIMIT 3",
        "SELECT count(*) FROM t WHERE v = 'all'",
    ];
    let run = |table: Table, sql: &'static str| async move {
        let config = datafusion::prelude::SessionConfig::new().with_target_partitions(4);
        let ctx = datafusion::prelude::SessionContext::new_with_config(config);
        ctx.register_table("t", table.provider(&ctx).await.expect("provider")).expect("register");
        let df = ctx.sql(sql).await.expect("plan");
        let plan = df.clone().create_physical_plan().await.expect("physical plan");
        let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.expect("collect");
        (datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string(), shown)
    };
    for sql in queries {
        let ((got, plan), (want, _)) = (run(a.clone(), sql).await, run(b.clone(), sql).await);
        assert_eq!(got, want, "{sql}");
        assert!(plan.contains("DataSourceExec: file_groups={4 groups"), "{sql}: {plan}");
    }
    // Reading no column, the live rows are counted from the log: no file is scanned.
    for sql in ["SELECT count(*) FROM t", "SELECT count(*) AS n FROM (SELECT 1 AS one FROM t LIMIT 700) AS l"] {
        let ((got, plan), (want, _)) = (run(a.clone(), sql).await, run(b.clone(), sql).await);
        assert_eq!(got, want, "{sql}");
        assert!(!plan.contains("file_groups"), "{sql}: {plan}");
    }
    drop((a_lake, b_lake));
}

/// A vectored table's provider reads its vectors at its first scan, not when it is made (a
/// session registers tables its queries may not read), and a count reads neither vectors nor
/// files: with them gone, counting still answers from the log and reading rows fails, naming the
/// table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vectored_table_reads_its_vectors_at_its_first_scan_and_counts_from_its_log() {
    let dir = tempfile::tempdir().expect("dir");
    let (lake, t) = merged_twice(dir.path(), 240..=260).await;
    let ctx = datafusion::prelude::SessionContext::new();
    let count = |ctx: datafusion::prelude::SessionContext, sql: &'static str| async move {
        Ok::<_, datafusion::error::DataFusionError>(first_i64(&ctx.sql(sql).await?.collect().await?))
    };
    ctx.register_table("t", t.provider(&ctx).await.expect("provider")).expect("register");
    let live = count(ctx.clone(), "SELECT count(k) FROM t").await.expect("a scan");
    assert!(live >= 1000, "{live}");
    let gone: Vec<_> = vector_files(dir.path()).into_iter().chain(parquet_files(dir.path())).collect();
    assert!(gone.len() > 4, "{gone:?}");
    for f in &gone {
        std::fs::remove_file(f).expect("remove");
    }
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", t.provider(&ctx).await.expect("a provider made without the vectors")).expect("register");
    assert_eq!(count(ctx.clone(), "SELECT count(*) FROM t").await.expect("counted from the log"), live);
    let err = count(ctx, "SELECT count(k) FROM t").await.expect_err("its rows are gone").to_string();
    assert!(err.contains("reading silver/t"), "{err}");
    drop(lake);
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

/// [`seeded`] with deletion vectors, then merged twice: [`source`], and the keys `again` at
/// order 12.
async fn merged_twice(dir: &std::path::Path, again: std::ops::RangeInclusive<i64>) -> (Lake, Table) {
    let (lake, t) = seeded(dir, true).await;
    let (t, _) = t.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let again: Vec<(i64, Option<i64>, &str)> = again.map(|k| (k, Some(12), "again")).collect();
    let (t, _) = t.upsert_rows(vec![batch(&again)], upsert(2)).await.expect("merge-on-read");
    (lake, t)
}

/// A table of keys 1..=1000 (order 10) in four files of 250 keys, with deletion vectors or not.
async fn seeded(dir: &std::path::Path, deletion_vectors: bool) -> (Lake, Table) {
    seeded_with(dir, deletion_vectors, false).await
}

pub(crate) async fn seeded_with(dir: &std::path::Path, deletion_vectors: bool, change_feed: bool) -> (Lake, Table) {
    let lake = Lake::open(&dir.display().to_string(), dir).expect("lake");
    let mut table = Table::open(&lake, Layer::Silver, "t").await.expect("open");
    for f in 0..4 {
        let rows: Vec<(i64, Option<i64>, &str)> = (f * 250 + 1..=f * 250 + 250).map(|k| (k, Some(10), "old")).collect();
        let options = WriteOptions { deletion_vectors, change_feed, ..Default::default() };
        table = table.write(vec![batch(&rows)], options).await.expect("seed");
    }
    (lake, table)
}

/// delta-rs's MERGE (the fallback for deletes, composite keys, partitions), its optimize and
/// vacuum run on files that carry vectors and read like copy-on-write; a vector file no commit
/// names is never read and is deleted by vacuum, a live one never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_rs_merge_optimize_and_vacuum_on_vectored_files_read_like_copy_on_write() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a_lake, a) = seeded(a_dir.path(), true).await;
    let (b_lake, b) = seeded(b_dir.path(), false).await;
    let (a, _) = a.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let (b, _) = b.upsert_rows(source(), upsert(1)).await.expect("copy-on-write");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await);
    assert!(a.deleted_rows().expect("deleted").0 > 0, "vectors in use");
    // An orphan: a vector file written by a merge whose commit never happened.
    let live = vector_files(a_dir.path());
    std::fs::copy(&live[0], a_dir.path().join("silver/t/deletion_vector_00000000-0000-4000-8000-000000000000.bin"))
        .expect("orphan");
    // delta-rs's MERGE with a delete column, over files with vectors.
    let ctx = datafusion::prelude::SessionContext::new();
    let mut again: Vec<(i64, Option<i64>, &str)> = (200..=700).map(|k| (k, Some(13), "merge")).collect();
    again.extend((701..=720).map(|k| (k, Some(14), "delete")));
    let with_delete = |u: medallion::storage::delta::Upsert| medallion::storage::delta::Upsert {
        delete_column: Some("d".into()),
        ..u
    };
    let source = |ctx: &datafusion::prelude::SessionContext| {
        ctx.read_batches(vec![batch(&again)])
            .expect("src")
            .with_column("d", datafusion::prelude::col("v").eq(datafusion::prelude::lit("delete")))
            .expect("d")
    };
    let (a, _) = a.upsert(source(&ctx), with_delete(upsert(2))).await.expect("MERGE on vectored files");
    let (b, _) = b.upsert(source(&ctx), with_delete(upsert(2))).await.expect("MERGE");
    let merged = contents(&a_lake).await;
    assert_eq!(merged, contents(&b_lake).await, "MERGE");
    assert!(!merged.iter().any(|r| (701..=720).contains(&r.0)), "deleted");
    // delta-rs's optimize, then a vacuum keeping nothing old.
    let before = parquet_files(a_dir.path());
    let (a, _, _) = a.optimize(&[], None).await.expect("optimize");
    let (b, _, _) = b.optimize(&[], None).await.expect("optimize");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await, "optimize");
    // Compacted files are Snappy like every other (delta-rs's optimize defaults to ZSTD, which
    // made every later key scan of a compacted table decode ZSTD).
    let compacted: Vec<_> = parquet_files(a_dir.path()).into_iter().filter(|p| !before.contains(p)).collect();
    assert!(!compacted.is_empty(), "optimize wrote files");
    for path in &compacted {
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let reader = SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("parquet");
        let row_group = reader.metadata().row_group(0);
        for column in row_group.columns() {
            assert_eq!(column.compression(), datafusion::parquet::basic::Compression::SNAPPY, "{}", path.display());
        }
    }
    let still = a.deleted_rows().expect("deleted").0;
    let (_, deleted) = a.vacuum(std::time::Duration::ZERO, true, false).await.expect("vacuum");
    let _ = b.vacuum(std::time::Duration::ZERO, true, false).await.expect("vacuum");
    assert_eq!(contents(&a_lake).await, merged, "vacuum");
    assert!(deleted.iter().any(|d| d.contains("00000000-0000-4000-8000")), "orphan vector deleted: {deleted:?}");
    let left = vector_files(a_dir.path()).len();
    assert_eq!(left > 0, still > 0, "live vectors kept ({still} rows still deleted by vectors, {left} files)");
}

/// A purge rewrites every vectored file without its deleted rows in one commit without data
/// change: same contents, no vector left, older versions still read as they did, and a vacuum
/// then removes the old files and their vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_drops_deleted_rows_from_files_and_keeps_the_contents() {
    let dir = tempfile::tempdir().expect("dir");
    let (lake, t) = merged_twice(dir.path(), 490..=760).await;
    let before = contents(&lake).await;
    let (deleted, rows) = t.deleted_rows().expect("share");
    assert_eq!(rows - deleted, before.len() as u64);
    let v = t.version().expect("v");
    let (t, removed, added) = t.purge().await.expect("purge");
    // Keys 501..=750 (the third file) are all replaced: that file goes without a successor.
    assert_eq!((removed, added), (4, 3), "files removed, added");
    assert_eq!(t.deleted_rows().expect("share"), (0, before.len() as u64));
    assert_eq!(contents(&lake).await, before, "purged");
    assert_eq!(t.version(), Some(v + 1), "one commit");
    let last = t.recent_commits(Some(1)).await.expect("history");
    assert_eq!(last[0].operation, "OPTIMIZE");
    let (t, again_removed, _) = t.purge().await.expect("purge again");
    assert_eq!((again_removed, t.version()), (0, Some(v + 1)), "nothing to purge: no commit");
    let (_, gone) = t.vacuum(std::time::Duration::ZERO, true, false).await.expect("vacuum");
    assert!(gone.iter().any(|g| g.contains("deletion_vector_")), "{gone:?}");
    assert!(vector_files(dir.path()).is_empty());
    assert_eq!(contents(&lake).await, before, "vacuumed");
}

/// A process killed while it wrote a file leaves object_store's staging copy (`<name>#<n>`), which
/// no listing shows: a vacuum removes those older than its retention (a dry run names them), and
/// leaves the log and the live files alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_removes_uploads_a_killed_process_left_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let (lake, t) = seeded(dir.path(), true).await;
    let (t, _) = t.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let before = contents(&lake).await;
    let table = dir.path().join("silver/t");
    let left = ["deletion_vector_0a1b.bin#1", "part-00001-x.snappy.parquet#12"];
    for name in left {
        std::fs::write(table.join(name), b"partial").expect("write");
    }
    std::fs::create_dir_all(table.join("_delta_log")).expect("log dir");
    std::fs::write(table.join("_delta_log/00000000000000000009.json#1"), b"partial").expect("write");
    let (t, named) = t.vacuum(std::time::Duration::from_secs(3600), true, true).await.expect("dry run");
    assert!(!named.iter().any(|n| n.contains('#')), "younger than the retention: {named:?}");
    let (t, named) = t.vacuum(std::time::Duration::ZERO, true, true).await.expect("dry run");
    for name in left {
        assert!(named.iter().any(|n| n == name), "{name} in {named:?}");
        assert!(table.join(name).exists(), "a dry run removes nothing");
    }
    let (_, gone) = t.vacuum(std::time::Duration::ZERO, true, false).await.expect("vacuum");
    for name in left {
        assert!(gone.iter().any(|n| n == name) && !table.join(name).exists(), "{name}: {gone:?}");
    }
    assert!(table.join("_delta_log/00000000000000000009.json#1").exists(), "the log is left alone");
    assert_eq!(contents(&lake).await, before, "the table reads the same");
}

/// With a change data feed, the merge-on-read writes the same feed as copy-on-write: the replaced
/// rows (read back by their positions) as preimages, the winners as postimages and inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_on_read_writes_the_same_change_data_feed() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a_lake, a) = seeded_with(a_dir.path(), true, true).await;
    let (b_lake, b) = seeded_with(b_dir.path(), false, true).await;
    let (a, m) = a.upsert_rows(source(), upsert(1)).await.expect("merge-on-read");
    let (b, _) = b.upsert_rows(source(), upsert(1)).await.expect("copy-on-write");
    assert_eq!(m.num_target_rows_copied, 0, "the keyed merge-on-read ran, no row copied");
    let again: Vec<(i64, Option<i64>, &str)> = (490..=760).map(|k| (k, Some(12), "again")).collect();
    let (a, _) = a.upsert_rows(vec![batch(&again)], upsert(2)).await.expect("merge-on-read");
    let (b, _) = b.upsert_rows(vec![batch(&again)], upsert(2)).await.expect("copy-on-write");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await);
    assert_eq!(vector_files(a_dir.path()).len(), 2, "vectors, not rewrites");
    let feed = |dir: std::path::PathBuf| async move {
        let ctx = datafusion::prelude::SessionContext::new();
        let path = format!("{}/silver/t/_change_data/", dir.display());
        let df = ctx.read_parquet(path, Default::default()).await.expect("feed");
        ctx.register_table("feed", df.into_view()).expect("register");
        let sql = "SELECT k, o, v, _change_type FROM feed ORDER BY k, _change_type, o, v";
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        batches
            .iter()
            .flat_map(|b| {
                let cols: Vec<Vec<String>> = b.columns().iter().map(strings).collect();
                (0..b.num_rows()).map(move |r| cols.iter().map(|c| c[r].clone()).collect::<Vec<_>>().join(" "))
            })
            .collect::<Vec<String>>()
    };
    let (fa, fb) = (feed(a_dir.path().to_path_buf()).await, feed(b_dir.path().to_path_buf()).await);
    assert_eq!(fa.iter().filter(|r| r.ends_with("update_preimage")).count(), 125 + 271);
    assert_eq!(fa, fb, "same change data feed");
    let changed = |t: Table| async move { t.changed_values("k", 3).await.expect("cdf").expect("covered").num_rows() };
    assert_eq!(changed(a).await, changed(b).await);
}

/// An audit's scan of the table's keys (`published_orders`) serves the merge of the same rows into
/// the same version: the merge reads no target file (here the files holding replaced rows are
/// gone, and it still commits), and gives the rows a merge that scans gives. Taken of another
/// version, or for other rows, it is not used: the merge scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audits_key_scan_serves_the_merge_of_the_same_rows() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a_lake, a) = seeded_with(a_dir.path(), true, false).await;
    let (b_lake, b) = seeded_with(b_dir.path(), true, false).await;
    let rows = source();
    let (orders, scanned) = a.published_orders(&rows, "k", "o").await.expect("scan").expect("keyed");
    assert_eq!(orders.iter().filter(|o| o.is_some()).count(), 500, "keys 501..=1000 are published");
    let (b, unscanned) = b.upsert_rows(rows.clone(), upsert(1)).await.expect("merge scanning");

    // The scanned files are gone from the store: only the audit's scan can tell the merge where the
    // replaced rows are.
    let parquet: Vec<_> = crate::common::walk(&a_dir.path().join("silver/t"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> =
        parquet.iter().map(|p| (p.clone(), std::fs::read(p).expect("read"))).collect();
    for p in &parquet {
        std::fs::remove_file(p).expect("remove");
    }
    let (a, m) = a.upsert_rows(rows.clone(), upsert_scanned(1, scanned)).await.expect("merge taking the scan");
    for (p, bytes) in saved {
        std::fs::write(p, bytes).expect("restore");
    }
    assert_eq!(
        (m.num_target_rows_inserted, m.num_target_rows_updated, m.num_target_files_scanned),
        (unscanned.num_target_rows_inserted, unscanned.num_target_rows_updated, unscanned.num_target_files_scanned)
    );
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await, "the same rows as a merge that scans");

    // A scan of the version before, or of other rows, is not taken: the merge scans (and gives
    // the same rows again).
    let again: Vec<(i64, Option<i64>, &str)> = (490..=760).map(|k| (k, Some(12), "again")).collect();
    let (_, stale) = b.published_orders(&[batch(&again)], "k", "o").await.expect("scan").expect("keyed");
    let newest: Vec<(i64, Option<i64>, &str)> = (500..=520).map(|k| (k, Some(13), "newest")).collect();
    let (b, _) = b.upsert_rows(vec![batch(&newest)], upsert(2)).await.expect("merge");
    let (b, _) = b.upsert_rows(vec![batch(&again)], upsert_scanned(3, stale)).await.expect("stale scan");
    let (a, _) = a.upsert_rows(vec![batch(&newest)], upsert(2)).await.expect("merge");
    let (_, other) = a.published_orders(&[batch(&again[..100])], "k", "o").await.expect("scan").expect("keyed");
    let (_, m) = a.upsert_rows(vec![batch(&again)], upsert_scanned(3, other)).await.expect("other rows' scan");
    assert_eq!(m.num_target_rows_updated, 271 - 21, "keys 500..=520 are newer in the table");
    assert_eq!(contents(&a_lake).await, contents(&b_lake).await);
    drop(b);
}

fn upsert_scanned(version: i64, scanned: medallion::storage::delta::KeyScan) -> medallion::storage::delta::Upsert {
    medallion::storage::delta::Upsert { scanned: Some(scanned), ..upsert(version) }
}

/// The data files under `dir`/silver/t.
fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir.join("silver/t")).expect("table dir");
    entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect()
}

fn vector_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    crate::common::walk(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("deletion_vector_")))
        .collect()
}

/// A silver table with `merge = "deletion_vectors"` over batches that re-send
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

const ACCOUNTS: &str = r#"[project]
name = "accounts"

[sources.accounts]

[silver.accounts]
primary_key = ["id"]
order_by = "seq"
merge = "MERGE_MODE"
columns = [
  { name = "id", type = "int64" },
  { name = "seq", type = "int64" },
  { name = "balance", type = "int64", checks = ["balance >= 0"] },
  { name = "note", type = "string", required = false },
]
maintenance = { purge_deleted_above = 0.15 }
"#;

/// The property: random sequences of batches (updates, late arrivals, re-sent records, rejects),
/// with optimize, a replay of the dead letter after a contract fix and a rebuild between runs,
/// give the same silver and dead letter with deletion vectors as with copy-on-write after every
/// step; the after-run policy purges on its threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_give_the_same_silver_as_copy_on_write() {
    use crate::history::Lakehouse;
    let silver = "SELECT id, seq, balance, coalesce(note, '-') FROM silver.accounts ORDER BY id";
    let dead = "SELECT count(*), count(_replayed_at) FROM quarantine.accounts";
    let mut purged = 0;
    for seed in seeds(&[7, 1_234_567, 987_654_321]) {
        let mut rng = Rng(seed);
        let mut dv = Lakehouse::new(&ACCOUNTS.replace("MERGE_MODE", "deletion_vectors"));
        let mut cow = Lakehouse::new(&ACCOUNTS.replace("MERGE_MODE", "copy_on_write"));
        let mut seq = 1_000i64;
        let mut fixed = false;
        for step in 0..9 {
            let n = 20 + rng.next(60);
            let records: Vec<String> = (0..n)
                .map(|_| {
                    let id = 1 + rng.next(150);
                    seq += 1;
                    // Mostly newer; some late (older than what silver may hold); a few rejected.
                    let s = if rng.next(5) == 0 { seq - 1 - rng.next(900) as i64 } else { seq };
                    let balance = if rng.next(12) == 0 { -1 - rng.next(3) as i64 } else { rng.next(1000) as i64 };
                    let note = if rng.next(3) == 0 { "null".to_string() } else { format!("\"s{step}\"") };
                    format!(r#"{{"id": {id}, "seq": {s}, "balance": {balance}, "note": {note}}}"#)
                })
                .collect();
            for lh in [&mut dv, &mut cow] {
                lh.land("accounts", &records);
                let s = lh.run().await;
                purged += s.compacted.iter().filter(|c| c.purged_rows > 0).count();
            }
            let (_, lake) = dv.open().await;
            let t = Table::open(&lake, Layer::Silver, "accounts").await.expect("open");
            let (deleted, rows) = t.deleted_rows().expect("share");
            assert!(deleted as f64 <= 0.15 * rows as f64, "after a run, the policy keeps the deleted share ≤ 15%");
            match if step == 5 { 2 } else { rng.next(5) } {
                0 => {
                    for lh in [&dv, &cow] {
                        let (project, lake) = lh.open().await;
                        medallion::maintenance::optimize(&lake, &project, None, (&[], None), std::time::Duration::ZERO)
                            .await
                            .expect("optimize");
                    }
                }
                1 if !fixed => {
                    fixed = true;
                    for lh in [&dv, &cow] {
                        let toml = lh.dir.path().join("medallion.toml");
                        let text = std::fs::read_to_string(&toml).expect("read");
                        std::fs::write(&toml, text.replace("balance >= 0", "balance >= -2")).expect("fix");
                        let (project, lake) = lh.open().await;
                        let opts = medallion::silver::replay::ReplayOptions {
                            run_id: format!("replay-{step}"),
                            now: medallion::runtime::now(),
                            filter: None,
                            dry_run: false,
                            lock_wait: std::time::Duration::ZERO,
                        };
                        medallion::silver::replay::replay(&lake, &project, &project.silver["accounts"], &opts)
                            .await
                            .expect("replay");
                    }
                }
                2 => {
                    for lh in [&dv, &cow] {
                        lh.rebuild("accounts").await;
                    }
                }
                _ => {}
            }
            assert_eq!(dv.rows(silver).await, cow.rows(silver).await, "seed {seed}, step {step}");
            assert_eq!(dv.rows(dead).await, cow.rows(dead).await, "dead letter: seed {seed}, step {step}");
        }
    }
    assert!(purged > 0, "the after-run policy purged vectors");
}

/// `merge` written in the contract switches an existing table (to deletion vectors: the protocol
/// is upgraded; back to copy-on-write: the vectors are purged first); the default alone never
/// changes an existing table, so upgrading medallion does not change what readers a lake needs.
/// The rows equal a lake that stayed copy-on-write throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_merge_mode_switches_an_existing_table_and_the_default_does_not() {
    use crate::common::{Dir, write_gz};
    let toml = |merge: &str| {
        format!(
            r#"[project]
name = "switch"

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
order_by = "_ingested_at"
{merge}
columns = [
  {{ name = "order_id", type = "int64" }},
  {{ name = "amount", type = "decimal(18,2)" }},
]
maintenance = {{ purge_deleted_above = 1 }}
"#
        )
    };
    let cow_line = "merge = \"copy_on_write\"";
    let (lake, reference) = (Dir::new(&toml(cow_line)), Dir::new(&toml(cow_line)));
    let (batches, _) = crate::common::sample(4_000, 5, 33);
    let silver =
        "SELECT order_id, CAST(amount AS VARCHAR), CAST(_ingested_at AS VARCHAR) FROM silver.orders ORDER BY 1";
    let vectors = |d: &Dir| vector_files(&d.dir.path().join("lake/silver/orders")).len();
    let reader_v3 = |d: &Dir| {
        let log = d.dir.path().join("lake/silver/orders/_delta_log");
        crate::common::walk(&log)
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"minReaderVersion\":3")))
    };
    for (i, b) in batches.iter().enumerate() {
        match i {
            // The file drops the line: the default (deletion vectors) is not applied to the table.
            1 => lake.configure(&toml("")),
            // Declared: the table switches before this run's merge.
            2 => lake.configure(&toml("merge = \"deletion_vectors\"")),
            // Back: the vectors are purged, merges rewrite files again.
            4 => lake.configure(&toml(cow_line)),
            _ => {}
        }
        for d in [&lake, &reference] {
            let path = d.dir.path().join(format!("lake/bronze/orders/{}/{}.ndjson.gz", b.date, b.batch_id));
            write_gz(&path, b.bronze_ndjson("orders").as_bytes());
            let s = d.run().await;
            assert!(s.ok(), "{:?}", s.failed);
        }
        assert_eq!(lake.rows(silver).await, reference.rows(silver).await, "after batch {i}");
        let (_, l) = lake.open().await;
        let t = Table::open(&l, Layer::Silver, "orders").await.expect("open");
        let (deleted, _) = t.deleted_rows().expect("share");
        match i {
            0 | 1 => assert!(!reader_v3(&lake) && vectors(&lake) == 0, "batch {i}: still copy-on-write"),
            2 | 3 => assert!(t.deletion_vectors().expect("dv") && deleted > 0, "batch {i}: merge-on-read"),
            _ => assert!(!t.deletion_vectors().expect("dv") && deleted == 0, "batch {i}: copy-on-write, purged"),
        }
    }
}

/// A policy's compaction packs the small files, each without the rows its vector deletes, and
/// leaves the larger files as they are, vectors included: the contents never change, and a
/// compaction costs the files written since the last one, not the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_small_files_drops_their_deleted_rows_and_leaves_large_files_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let (lake, t) = merged_twice(dir.path(), 1..=300).await;
    let before = contents(&lake).await;
    let live = t.live_files().await.expect("files").files;
    let vectored = |files: &[medallion::storage::delta::LiveFile]| files.iter().filter(|f| f.kept.is_some()).count();
    assert!(live.len() >= 5 && vectored(&live) >= 3, "{} files, {} with vectors", live.len(), vectored(&live));
    // The largest file is "large": just over half the target.
    let largest = live.iter().map(|f| f.size).max().expect("a file");
    let (t, removed, added) = t.compact_small(2 * largest - 2).await.expect("compact");
    assert_eq!(contents(&lake).await, before, "contents unchanged");
    let after = t.live_files().await.expect("files").files;
    // Every file but the largest packed, in files of about the target (a file whose rows are all
    // deleted is not live, and packed too).
    assert!(removed as usize >= live.len() - 1 && added >= 1 && added < removed, "{removed} files packed into {added}");
    assert_eq!(after.len() as u64, 1 + added, "the largest file and the packed ones");
    let kept = after.iter().find(|f| f.size == largest).expect("the largest file stays");
    assert_eq!(kept.kept.is_some(), live.iter().find(|f| f.size == largest).expect("largest").kept.is_some());
    assert_eq!(vectored(&after), usize::from(kept.kept.is_some()), "packed files carry no vector");
    // Nothing left to pack: no commit.
    let version = t.version();
    let (t, removed, added) = t.compact_small(2 * largest - 2).await.expect("compact");
    assert_eq!((removed, added, t.version()), (0, 0, version));
}

/// The keyed merge skips a file's order column when its statistics put every row below the
/// batch's least order: a row as new as a file's newest still keeps the file's order column
/// read, so an older row of that file is replaced and the equal one is not; a batch newer than
/// every file (its order column skipped) replaces both. Both merge modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_as_new_as_a_file_s_newest_row_is_decided_by_each_row_s_order() {
    use crate::history::Lakehouse;
    let balances = "SELECT id, seq, balance FROM silver.accounts ORDER BY id";
    for mode in ["deletion_vectors", "copy_on_write"] {
        let mut lh = Lakehouse::new(&ACCOUNTS.replace("MERGE_MODE", mode));
        let rows = |list: &[(i64, i64, i64)]| -> Vec<String> {
            list.iter().map(|(id, seq, b)| format!(r#"{{"id": {id}, "seq": {seq}, "balance": {b}}}"#)).collect()
        };
        lh.land("accounts", &rows(&[(1, 5, 100), (2, 10, 200)]));
        assert!(lh.run().await.ok(), "{mode}");
        // Both keys at seq 10: id 1 (at 5) is replaced, id 2 (at 10, as new) is kept.
        lh.land("accounts", &rows(&[(1, 10, 101), (2, 10, 201)]));
        assert!(lh.run().await.ok(), "{mode}");
        assert_eq!(lh.rows(balances).await, ["1 10 101", "2 10 200"], "{mode}");
        // Newer than every file: both replaced.
        lh.land("accounts", &rows(&[(1, 11, 102), (2, 11, 202)]));
        assert!(lh.run().await.ok(), "{mode}");
        assert_eq!(lh.rows(balances).await, ["1 11 102", "2 11 202"], "{mode}");
    }
}
