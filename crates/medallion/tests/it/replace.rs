//! Replacing rows by key (a keyed dbt-style incremental gold model's delete+insert): only the
//! files holding a replaced key are read past their key columns and rewritten (or marked, with
//! deletion vectors), and the table reads as if it had been rewritten whole.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use medallion::storage::delta::{Table, WriteOptions};
use medallion::storage::{Lake, Layer};
use serde_json::Value;

fn rows(rows: &[(Option<&str>, i64, &str)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, true),
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]));
    let region: StringArray = rows.iter().map(|r| r.0).collect();
    let id: Int64Array = rows.iter().map(|r| Some(r.1)).collect();
    let v: StringArray = rows.iter().map(|r| Some(r.2)).collect();
    RecordBatch::try_new(schema, vec![Arc::new(region), Arc::new(id), Arc::new(v)]).expect("batch")
}

fn region(id: i64) -> &'static str {
    if id % 2 == 0 { "us" } else { "eu" }
}

/// A table of 4 files: ids 1-10, 11-20, 21-30, 31-40, region by parity, all "old".
async fn seeded(lake: &Lake, write: impl Fn() -> WriteOptions) -> Table {
    let mut table = Table::open(lake, Layer::Gold, "m").await.expect("open");
    for f in 0..4 {
        let file: Vec<(Option<&str>, i64, &str)> =
            (f * 10 + 1..=f * 10 + 10).map(|id| (Some(region(id)), id, "old")).collect();
        table = table.write(vec![rows(&file)], write()).await.expect("seed");
    }
    table
}

async fn contents(table: &Table) -> Vec<String> {
    let ctx = SessionContext::new();
    ctx.register_table("t", table.provider(&ctx).await.expect("provider")).expect("register");
    let batches = ctx.sql("SELECT region, id, v FROM t").await.expect("sql").collect().await.expect("rows");
    let mut rows = batches
        .iter()
        .flat_map(|b| {
            let (r, i, v) = (b.column(0), b.column(1), b.column(2));
            (0..b.num_rows()).map(move |n| {
                let text = |a: &datafusion::arrow::array::ArrayRef| {
                    datafusion::arrow::util::display::array_value_to_string(a, n).expect("text")
                };
                format!("{} {} {}", text(r), text(i), text(v))
            })
        })
        .collect::<Vec<_>>();
    rows.sort();
    rows
}

async fn metric(table: &Table, name: &str) -> i64 {
    let info = table.last_commit_info().await.expect("info");
    info.get("operationMetrics").and_then(|m| m.get(name)).and_then(Value::as_i64).unwrap_or(-1)
}

/// A composite key with a null part: the rows with the new rows' keys are replaced in the two
/// files holding them, the other two files are left as they are, and a null key part matches
/// nothing; with deletion vectors the same rows read back and no file is rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_replaced_by_key_in_the_files_holding_the_keys_only() {
    for dv in [false, true] {
        let dir = tempfile::tempdir().expect("dir");
        let lake = Lake::open(&dir.path().display().to_string(), dir.path()).expect("lake");
        let table = seeded(&lake, || WriteOptions { deletion_vectors: dv, ..Default::default() }).await;
        let new = rows(&[
            (Some("eu"), 3, "new"),  // replaces file 1's row
            (Some("us"), 3, "new"),  // no such key (3 is in eu): added
            (None, 4, "null"),       // a null part never matches: ("us", 4) stays
            (Some("us"), 40, "new"), // replaces file 4's row
            (Some("eu"), 41, "new"), // new
        ]);
        let files_before: Vec<String> = walk(dir.path());
        let replaced = table.replace_keys(&[new], &["region".into(), "id".into()], Default::default()).await;
        let table = replaced.expect("replace").expect("applies");
        let mut want: Vec<String> = (1..=40)
            .filter(|id| *id != 3 && *id != 40)
            .map(|id| format!("{} {id} old", region(id)))
            .chain(["eu 3 new", "us 3 new", " 4 null", "us 40 new", "eu 41 new"].map(String::from))
            .collect();
        want.sort();
        assert_eq!(contents(&table).await, want, "dv={dv}");
        assert_eq!(
            (metric(&table, "num_target_rows_deleted").await, metric(&table, "num_target_rows_inserted").await),
            (2, 5),
            "dv={dv}"
        );
        assert_eq!(metric(&table, "num_target_files_removed").await, 2, "dv={dv}: the two files holding keys");
        // Copy-on-write rewrote two files (and wrote one of new rows); merge-on-read wrote only
        // the new rows' file and a vector file. Every file there before is still there.
        let files_after = walk(dir.path());
        assert!(files_before.iter().all(|f| files_after.contains(f)), "dv={dv}");
        let new_data = files_after.iter().filter(|f| f.ends_with(".parquet") && !files_before.contains(f)).count();
        assert_eq!(new_data, if dv { 1 } else { 3 }, "dv={dv}: {files_after:?}");
        assert_eq!(files_after.iter().filter(|f| f.contains("deletion_vector_")).count(), usize::from(dv));
        // A key with a null part is never replaced, even by the same key.
        let (again, keys) = ([rows(&[(None, 4, "again")])], ["region".to_string(), "id".to_string()]);
        let table = table.replace_keys(&again, &keys, Default::default()).await.expect("replace").expect("applies");
        let got = contents(&table).await;
        assert!(got.contains(&" 4 null".to_string()) && got.contains(&" 4 again".to_string()), "dv={dv}: {got:?}");
        assert_eq!(metric(&table, "num_target_rows_deleted").await, 0, "dv={dv}");
    }
}

/// One integer key: files whose key statistics hold none of the new keys are not read; a
/// partitioned table is left to the caller, unwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_key_skips_files_by_their_statistics_and_partitioned_tables_are_declined() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = Lake::open(&dir.path().display().to_string(), dir.path()).expect("lake");
    let table = seeded(&lake, WriteOptions::default).await;
    let new = rows(&[(Some("x"), 12, "new"), (Some("x"), 15, "new")]);
    let table =
        table.replace_keys(&[new], &["id".into()], Default::default()).await.expect("replace").expect("applies");
    assert_eq!(metric(&table, "num_target_files_scanned").await, 1);
    assert_eq!(metric(&table, "num_target_rows_deleted").await, 2);
    let got = contents(&table).await;
    assert_eq!(got.len(), 40);
    assert!(got.contains(&"x 12 new".to_string()) && !got.contains(&"us 12 old".to_string()), "{got:?}");

    let other = tempfile::tempdir().expect("dir");
    let lake = Lake::open(&other.path().display().to_string(), other.path()).expect("lake");
    let table = seeded(&lake, || WriteOptions { partition_by: vec!["region".into()], ..Default::default() }).await;
    let version = table.version();
    let declined = table.replace_keys(&[rows(&[(Some("eu"), 1, "new")])], &["id".into()], Default::default()).await;
    assert!(declined.expect("no error").is_none());
    let table = Table::open(&lake, Layer::Gold, "m").await.expect("open");
    assert_eq!(table.version(), version, "nothing written");
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under").display().to_string());
            }
        }
    }
    out.sort();
    out
}
