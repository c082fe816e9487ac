//! A table opened again through the same lake is brought forward from its last open instead of
//! being loaded from its log: it must still see every commit made since, by this lake or by
//! another process, and a table whose directory was deleted, or deleted and created again, must
//! be read afresh, never from what was remembered.

use std::sync::Arc;

use medallion::arrow::array::{Int64Array, RecordBatch};
use medallion::arrow::datatypes::{DataType, Field, Schema};
use medallion::storage::delta::{Table, WriteOptions};
use medallion::storage::{Lake, Layer};

fn ids(range: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(range))]).expect("batch")
}

async fn append(lake: &Lake, range: std::ops::Range<i64>) {
    let t = Table::open(lake, Layer::Silver, "t").await.expect("open");
    t.write(vec![ids(range)], WriteOptions::default()).await.expect("write");
}

/// (exists, version, rows) of `silver/t` opened through `lake`.
async fn seen(lake: &Lake) -> (bool, Option<i64>, u64) {
    let t = Table::open(lake, Layer::Silver, "t").await.expect("open");
    let rows = if t.exists() { t.count_rows().await.expect("count") } else { 0 };
    (t.exists(), t.version(), rows)
}

/// A lake in a new directory, and another process's view of it, which remembers nothing of the
/// first's opens.
fn two_views() -> (tempfile::TempDir, Lake, Lake) {
    let dir = tempfile::tempdir().expect("dir");
    let here = dir.path().display().to_string();
    let lake = Lake::open(&here, dir.path()).expect("lake");
    let other = Lake::open(&here, dir.path()).expect("lake");
    (dir, lake, other)
}

#[tokio::test]
async fn a_reopened_table_sees_every_commit_and_a_recreated_one_is_read_afresh() {
    let (dir, lake, other) = two_views();

    assert_eq!(seen(&lake).await, (false, None, 0));
    append(&lake, 0..10).await;
    assert_eq!(seen(&lake).await, (true, Some(0), 10));
    // Commits by this lake and by another one are both seen, one after the other.
    append(&other, 10..15).await;
    assert_eq!(seen(&lake).await, (true, Some(1), 15));
    append(&lake, 15..17).await;
    append(&other, 17..20).await;
    assert_eq!(seen(&lake).await, (true, Some(3), 20));
    // A clone shares what was opened and sees the same.
    assert_eq!(seen(&lake.clone()).await, (true, Some(3), 20));

    // Deleted: the table is gone, not remembered.
    std::fs::remove_dir_all(dir.path().join("silver/t")).expect("delete");
    assert_eq!(seen(&lake).await, (false, None, 0));

    // Created again elsewhere, up to the version first remembered and past it: its own rows.
    append(&other, 100..103).await;
    assert_eq!(seen(&lake).await, (true, Some(0), 3));
    std::fs::remove_dir_all(dir.path().join("silver/t")).expect("delete");
    for start in [200, 210, 220, 230, 240] {
        append(&other, start..start + 2).await;
    }
    assert_eq!(seen(&lake).await, (true, Some(4), 10));
}

/// (version, rows inserted) of the `limit` latest commits of `t`, newest first.
async fn recent(t: &Table, limit: usize) -> Vec<(i64, u64)> {
    t.recent_commits(Some(limit)).await.expect("commits").iter().map(|c| (c.version, c.rows.inserted)).collect()
}

#[tokio::test]
async fn a_tables_recent_commits_are_those_up_to_the_version_in_hand_each_with_its_own_version() {
    let (_dir, lake, other) = two_views();
    for range in [0..10, 10..15, 15..17] {
        append(&lake, range).await;
    }
    let t = Table::open(&lake, Layer::Silver, "t").await.expect("open");
    assert_eq!(recent(&t, 2).await, vec![(2, 2), (1, 5)]);

    // Another writer commits after `t` was opened: `t` still describes its own version.
    append(&other, 17..20).await;
    assert_eq!(recent(&t, 1).await, vec![(2, 2)]);
    assert_eq!(recent(&t, 5).await, vec![(2, 2), (1, 5), (0, 10)]);
    let all: Vec<_> = t.commits().await.expect("commits").iter().map(|c| (c.version, c.rows.inserted)).collect();
    assert_eq!(all, vec![(2, 2), (1, 5), (0, 10)]);
    let now = Table::open(&lake, Layer::Silver, "t").await.expect("open");
    assert_eq!(recent(&now, 2).await, vec![(3, 3), (2, 2)]);
}
