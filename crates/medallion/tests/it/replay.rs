//! Dead-letter replay after a contract fix, rejection-rate gates, schema-drift alerts.

use medallion::orchestration::run::{RunOptions, run};
use medallion::project::Project;
use medallion::storage::Layer;
use medallion::storage::delta::{Table, WriteOptions};

use crate::common::{Dir, copy_bronze, sample, write_gz};

const SILVER_ROWS: &str =
    "SELECT * EXCLUDE (_ingested_at), CAST(_ingested_at AS VARCHAR) FROM silver.orders ORDER BY order_id";

#[tokio::test(flavor = "multi_thread")]
async fn replay_after_a_contract_fix_gives_what_a_fresh_run_gives_and_twice_is_a_no_op() {
    let strict = Dir::example();
    let (batches, _) = sample(3_000, 3, 17);
    for b in &batches {
        let path = strict.dir.path().join(format!("lake/bronze/orders/{}/{}.ndjson.gz", b.date, b.batch_id));
        write_gz(&path, b.bronze_ndjson("orders").as_bytes());
    }
    let s = strict.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let quarantined = s.totals.rejected;

    // The fix: zero amounts are fine after all (gold's own gate agrees).
    let fix = ("checks = [\"amount > 0\"]", "checks = [\"amount >= 0\"]");
    let gold_fix = ("revenue > 0 AND min_amount > 0", "revenue >= 0 AND min_amount >= 0");
    strict.edit(fix.0, fix.1);
    strict.edit(gold_fix.0, gold_fix.1);
    let dry = strict.replay(None, true).await;
    assert_eq!((dry.selected, dry.intent), (quarantined, None));
    let zero = dry.by_reason.iter().find(|c| c.rule == "amount > 0").expect("amount reason");
    assert!(zero.passing > 0 && zero.passing <= zero.records, "{zero:?}");
    assert_eq!(dry.passing, dry.by_reason.iter().filter(|c| c.rule == "amount > 0").map(|c| c.passing).sum::<u64>());
    assert_eq!(strict.version(Layer::Silver, "orders").await, Some(0), "a dry run writes nothing");

    let r = strict.replay(None, false).await;
    assert_eq!((r.selected, r.passing, r.intent), (quarantined, dry.passing, Some(1)));
    assert_eq!(r.selected, r.promoted() + r.superseded + r.rejected + r.dropped, "{r:?}");
    assert!(r.promoted() > 0);

    // A fresh lake with the fixed contract over the same bronze holds the same silver rows.
    let fresh = Dir::example();
    fresh.edit(fix.0, fix.1);
    fresh.edit(gold_fix.0, gold_fix.1);
    copy_bronze(strict.dir.path(), fresh.dir.path());
    let s = fresh.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!(strict.rows(SILVER_ROWS).await, fresh.rows(SILVER_ROWS).await);
    let outstanding = "SELECT count(*) FROM quarantine.orders WHERE _replayed_at IS NULL";
    assert_eq!(strict.rows(outstanding).await, fresh.rows("SELECT count(*) FROM quarantine.orders").await);
    let marked = strict.rows("SELECT _replay_outcome, count(*) FROM quarantine.orders WHERE _replayed_at IS NOT NULL GROUP BY 1 ORDER BY 1").await;
    let promoted: u64 = marked.iter().filter(|m| m[0] == "promoted").map(|m| m[1].parse::<u64>().expect("n")).sum();
    assert_eq!(promoted, r.promoted(), "{marked:?}");
    assert_eq!(
        strict.rows("SELECT DISTINCT _replay_run_id FROM quarantine.orders WHERE _replayed_at IS NOT NULL").await,
        vec![vec!["replay-test".to_string()]]
    );

    // Twice: nothing passes any more, nothing is written.
    let versions = (strict.version(Layer::Silver, "orders").await, strict.version(Layer::Quarantine, "orders").await);
    let again = strict.replay(None, false).await;
    assert_eq!((again.passing, again.promoted(), again.intent), (0, 0, None));
    assert_eq!(
        (strict.version(Layer::Silver, "orders").await, strict.version(Layer::Quarantine, "orders").await),
        versions
    );
    // The pipeline still runs cleanly on top (gold reconciles with the replayed silver).
    let s = strict.run().await;
    assert!(s.ok(), "{:?}", s.failed);
}

const SMALL: &str = r#"[project]
name = "small"

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
columns = [
  { name = "order_id", type = "int64" },
  { name = "amount", type = "decimal(18,2)", checks = ["amount > 0"] },
]
RATE
"#;

fn orders(ids: std::ops::Range<i64>, bad: usize) -> Vec<String> {
    ids.enumerate()
        .map(|(i, id)| format!(r#"{{"order_id": {id}, "amount": {}}}"#, if i < bad { 0 } else { 5 }))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_never_lets_an_old_record_overwrite_a_newer_row_and_where_selects() {
    let d = Dir::new(&SMALL.replace("RATE", ""));
    // Order 1: zero (rejected) at 10:00, then 7 at 11:00. Order 2: zero at 11:00 after 3 at 10:00.
    d.bronze(
        "orders",
        "b1",
        "2024-03-01T10:00:00+00:00",
        &[
            r#"{"order_id": 1, "amount": 0}"#.into(),
            r#"{"order_id": 2, "amount": 3}"#.into(),
            r#"{"order_id": 3, "amount": 0}"#.into(),
        ],
    );
    d.bronze(
        "orders",
        "b2",
        "2024-03-01T11:00:00+00:00",
        &[r#"{"order_id": 1, "amount": 7}"#.into(), r#"{"order_id": 2, "amount": 0}"#.into()],
    );
    assert!(d.run().await.ok());
    d.edit("amount > 0", "amount >= 0");
    let only_b1 = d.replay(Some("_batch_id = 'b1'"), false).await;
    assert_eq!((only_b1.selected, only_b1.inserted, only_b1.updated, only_b1.superseded), (2, 1, 0, 1));
    let rest = d.replay(None, false).await;
    assert_eq!((rest.selected, rest.inserted, rest.updated, rest.superseded), (1, 0, 1, 0));
    assert_eq!(
        d.rows("SELECT order_id, amount, _batch_id FROM silver.orders ORDER BY order_id").await,
        vec![
            vec!["1".to_string(), "7.00".into(), "b2".into()],
            vec!["2".into(), "0.00".into(), "b2".into()],
            vec!["3".into(), "0.00".into(), "b1".into()]
        ]
    );
    assert_eq!(
        d.rows("SELECT _batch_id, _line, _replay_outcome FROM quarantine.orders ORDER BY _batch_id, _line").await,
        vec![
            vec!["b1".to_string(), "1".into(), "superseded".into()],
            vec!["b1".into(), "3".into(), "promoted".into()],
            vec!["b2".into(), "2".into(), "promoted".into()]
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_rate_gate_holds_back_a_batch_above_it_and_passes_one_below() {
    let d = Dir::new(&SMALL.replace("RATE", "max_rejected_fraction = 0.02"));
    d.bronze("orders", "b1", "2024-03-01T10:00:00+00:00", &orders(0..100, 3));
    d.bronze("orders", "b2", "2024-03-01T11:00:00+00:00", &orders(100..200, 1));
    let s = d.run().await;
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert!(s.failed[0].error.contains("held back b1 (3.00% rejected: 3 of 100)"), "{}", s.failed[0].error);
    let p = &s.silver[0];
    assert_eq!((p.batches, p.read, p.inserted, p.rejected), (1, 100, 99, 1));
    let gate = p.expectations.iter().find(|e| e.kind == "rejected_fraction").expect("gate result");
    assert_eq!(gate.outcome, medallion::quality::gates::Outcome::Fail);
    assert_eq!(
        d.rows("SELECT min(order_id), count(*) FROM silver.orders").await,
        vec![vec!["101".to_string(), "99".into()]]
    );

    // Unchanged, the next run holds it back again and commits nothing.
    let before = d.version(Layer::Silver, "orders").await;
    let s = d.run().await;
    assert_eq!(s.failed.len(), 1);
    assert_eq!(d.version(Layer::Silver, "orders").await, before);

    // Raised to 5%, the batch goes through.
    d.edit("max_rejected_fraction = 0.02", "max_rejected_fraction = 0.05");
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["196".to_string()]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_run_rejection_rate_fails_the_promotion_and_warn_only_records() {
    let d = Dir::new(&SMALL.replace("RATE", "max_rejected_fraction = { per_run = 0.015 }"));
    d.bronze("orders", "b1", "2024-03-01T10:00:00+00:00", &orders(0..100, 3));
    d.bronze("orders", "b2", "2024-03-01T11:00:00+00:00", &orders(100..200, 1));
    let s = d.run().await;
    assert_eq!(s.failed.len(), 1);
    assert!(
        s.failed[0].error.contains("`max_rejected_fraction.per_run` (4 of 200 rows failed)"),
        "{}",
        s.failed[0].error
    );
    assert_eq!(d.version(Layer::Silver, "orders").await, None);
    assert_eq!(d.version(Layer::Quarantine, "orders").await, None);

    // With a per-batch bound too, the per-run share is over what would be published: b2 alone.
    d.edit("{ per_run = 0.015 }", "{ per_batch = 0.02, per_run = 0.015 }");
    let s = d.run().await;
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].error.contains("held back b1"), "{}", s.failed[0].error);
    let per_run = s.silver[0].expectations.iter().find(|e| e.name == "max_rejected_fraction.per_run").expect("per run");
    assert_eq!((per_run.passed(), per_run.observed.as_deref()), (true, Some("1.00% rejected (1 of 100)")));

    d.edit("{ per_batch = 0.02, per_run = 0.015 }", "{ per_batch = 0.02, per_run = 0.015, action = \"warn\" }");
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    // b1 alone is left: 3% is above both bounds, and only warns.
    let outcomes: Vec<(&str, &str)> = s.silver[0]
        .expectations
        .iter()
        .filter(|e| e.kind == "rejected_fraction")
        .map(|e| (e.name.as_str(), e.outcome.label()))
        .collect();
    assert_eq!(outcomes, vec![("max_rejected_fraction.per_batch", "warn"), ("max_rejected_fraction.per_run", "warn")]);
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["196".to_string()]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_fields_and_changed_json_types_are_recorded_with_the_batch_that_brought_them() {
    let d = Dir::new(&SMALL.replace("RATE", ""));
    d.bronze("orders", "b1", "2024-03-01T10:00:00+00:00", &[r#"{"order_id": 1, "amount": 5, "note": null}"#.into()]);
    d.bronze(
        "orders",
        "b2",
        "2024-03-01T11:00:00+00:00",
        &[r#"{"order_id": 2, "amount": 5, "tier": "gold", "note": "x"}"#.into()],
    );
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let seen: Vec<(String, String, Vec<String>, String)> =
        s.drift.iter().map(|e| (e.field.clone(), e.change.clone(), e.types.clone(), e.batch_id.clone())).collect();
    // b1 is the baseline; `note` was only null there, so its first type is not a change.
    assert_eq!(seen, vec![("tier".to_string(), "new_field".to_string(), vec!["string".to_string()], "b2".to_string())]);

    d.bronze(
        "orders",
        "b3",
        "2024-03-01T12:00:00+00:00",
        &[r#"{"order_id": 3, "amount": "7.50", "tier": "silver"}"#.into()],
    );
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let e = &s.drift[0];
    assert_eq!(
        (e.field.as_str(), e.change.as_str(), e.types.clone(), e.known.clone(), e.batch_id.as_str()),
        ("amount", "new_type", vec!["string".to_string()], vec!["number".to_string()], "b3")
    );
    assert_eq!(s.drift.len(), 1, "{:?}", s.drift);
    let (_, lake) = d.open().await;
    let all = medallion::bronze::drift::recorded(&lake, "orders").await.expect("recorded");
    assert_eq!(all.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["tier", "amount"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn append_only_tables_are_compacted_after_runs_past_the_file_limit() {
    let d =
        Dir::new(&SMALL.replace("RATE", "").replace("name = \"small\"", "name = \"small\"\ncompact_above_files = 2"));
    let mut compacted = Vec::new();
    for (i, at) in ["10", "11", "12", "13"].iter().enumerate() {
        let base = i64::try_from(i).expect("i") * 100;
        d.bronze("orders", &format!("b{i}"), &format!("2024-03-01T{at}:00:00+00:00"), &orders(base..base + 10, 2));
        let s = d.run().await;
        assert!(s.ok(), "{:?}", s.failed);
        compacted.extend(s.compacted.iter().map(|m| m.table.clone()));
    }
    assert!(compacted.contains(&"quarantine/orders".to_string()), "{compacted:?}");
    assert!(compacted.contains(&"_medallion/events".to_string()), "{compacted:?}");
    let (_, lake) = d.open().await;
    let (files, _) = Table::open(&lake, Layer::Quarantine, "orders").await.expect("open").files().expect("files");
    assert!(files <= 2, "{files} files");
    assert_eq!(d.rows("SELECT count(*) FROM quarantine.orders").await, vec![vec!["8".to_string()]], "nothing lost");
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["32".to_string()]]);
}

/// Every table a run commits to gets a checkpoint once ten commits have piled up since its last
/// one, whatever its maintenance policy (compaction, which also writes one, is off; silver and
/// its dead letter have no policy at all), so an open replays at most ten commits; the
/// checkpointed tables read the same.
#[tokio::test(flavor = "multi_thread")]
async fn runs_checkpoint_every_table_every_ten_commits() {
    let no_policy = "maintenance = { compact_above_files = 0, purge_deleted_above = 1 }";
    let d = Dir::new(
        &SMALL.replace("RATE", no_policy).replace("name = \"small\"", "name = \"small\"\ncompact_above_files = 0"),
    );
    let last_checkpoint = |table: &str| {
        std::fs::read(d.dir.path().join(format!("lake/{table}/_delta_log/_last_checkpoint"))).ok().map(|b| {
            serde_json::from_slice::<serde_json::Value>(&b).expect("json")["version"].as_i64().expect("version")
        })
    };
    let tables = ["silver/orders", "quarantine/orders", "_medallion/events"];
    for i in 0..11i64 {
        let at = format!("2024-03-01T{:02}:00:00+00:00", 10 + i);
        d.bronze("orders", &format!("b{i}"), &at, &orders(i * 100..i * 100 + 10, 2));
        let s = d.run().await;
        assert!(s.ok() && s.compacted.is_empty(), "{:?} {:?}", s.failed, s.compacted);
        // Versions 0..=i: the tenth commit (version 9) is checkpointed, the eleventh is not.
        let want = (i >= 9).then_some(9);
        for table in tables {
            assert_eq!(last_checkpoint(table), want, "{table} after run {}", i + 1);
        }
    }
    let (_, lake) = d.open().await;
    assert_eq!(Table::open(&lake, Layer::Silver, "orders").await.expect("open").version(), Some(10));

    // A table that sets its own interval (50, by another writer: version 11) keeps it: silver is
    // checkpointed again at version 19, its dead letter is not.
    set_property(&lake, Layer::Quarantine, "orders", "delta.checkpointInterval", "50").await;
    for i in 11..20i64 {
        let at = format!("2024-03-02T{:02}:00:00+00:00", i);
        d.bronze("orders", &format!("b{i}"), &at, &orders(i * 100..i * 100 + 10, 2));
        assert!(d.run().await.ok());
    }
    assert_eq!((last_checkpoint("silver/orders"), last_checkpoint("quarantine/orders")), (Some(19), Some(9)));
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["160".to_string()]], "nothing lost");
    assert_eq!(d.rows("SELECT count(*) FROM quarantine.orders").await, vec![vec!["40".to_string()]]);
}

/// Commits past a table's log retention (`delta.logRetentionDuration`, 30 days) are removed when
/// maintenance writes a checkpoint, not after every commit: delta-rs's own cleanup lists the whole
/// log each time (a request per commit on an object store). The table reads the same after.
#[tokio::test(flavor = "multi_thread")]
async fn expired_commits_are_removed_at_checkpoints_not_after_every_commit() {
    expired_commits(false).await;
}

/// A table that sets `delta.enableExpiredLogCleanup = false` keeps its expired commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_log_cleanup_keeps_its_expired_commits() {
    expired_commits(true).await;
}

/// 20 runs into silver; after the first 10 (versions 0..=9, checkpointed at 9) its first nine
/// commits are made 40 days old, and, when `keep`, the table sets `delta.enableExpiredLogCleanup`
/// to false (by another writer: one more commit).
async fn expired_commits(keep: bool) {
    let no_policy = "maintenance = { compact_above_files = 0, purge_deleted_above = 1 }";
    let d = Dir::new(
        &SMALL.replace("RATE", no_policy).replace("name = \"small\"", "name = \"small\"\ncompact_above_files = 0"),
    );
    let log = d.dir.path().join("lake/silver/orders/_delta_log");
    let commit = |v: i64| log.join(format!("{v:020}.json"));
    let checkpoint = |v: i64| log.join(format!("{v:020}.checkpoint.parquet"));
    for i in 0..20i64 {
        if i == 10 {
            assert!(checkpoint(9).exists());
            let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
            for v in 0..9 {
                std::fs::File::options().write(true).open(commit(v)).expect("commit").set_modified(old).expect("mtime");
            }
            if keep {
                let (_, lake) = d.open().await;
                set_property(&lake, Layer::Silver, "orders", "delta.enableExpiredLogCleanup", "false").await;
            }
        }
        let at = format!("2024-03-01T{:02}:00:00+00:00", i);
        d.bronze("orders", &format!("b{i}"), &at, &orders(i * 100..i * 100 + 10, 2));
        assert!(d.run().await.ok(), "run {}", i + 1);
        if i == 10 {
            // A commit, no checkpoint due: the expired commits are still there.
            assert!((0..9).all(|v| commit(v).exists()), "expired commits removed after a commit");
        }
    }
    // Version 19 is checkpointed: the expired commits before checkpoint 9 go (unless kept), the
    // others stay.
    assert!(checkpoint(19).exists());
    if keep {
        assert!((0..9).all(|v| commit(v).exists()), "expired commits removed from a table that keeps them");
    } else {
        assert!((0..9).all(|v| !commit(v).exists()), "expired commits kept after a checkpoint");
    }
    assert!((9..20).all(|v| commit(v).exists()), "a commit inside the retention removed");
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["160".to_string()]], "nothing lost");
    let (_, lake) = d.open().await;
    let version = Table::open(&lake, Layer::Silver, "orders").await.expect("open").version();
    assert_eq!(version, Some(if keep { 20 } else { 19 }));
}

/// Every ten committed promotions a run sums up the ledger's intents; later runs read the summary
/// and the intents after it only: with the intents it covers gone, each batch is still promoted
/// once. A summary that names another table (one deleted and made again) is not used.
#[tokio::test(flavor = "multi_thread")]
async fn runs_read_the_ledger_summary_and_only_the_intents_after_it() {
    use medallion::runtime::ledger;
    let d = Dir::new(&SMALL.replace("RATE", ""));
    let path = d.dir.path().join("lake/_medallion/ledger/summary/silver/orders.json");
    let summary = || std::fs::read(&path).ok().map(|b| serde_json::from_slice::<serde_json::Value>(&b).expect("json"));
    let promoted = |s: &medallion::orchestration::run::RunSummary| {
        assert!(s.ok(), "{:?}", s.failed);
        s.silver.iter().find(|p| p.table == "orders").map_or(0, |p| p.batches)
    };
    for i in 0..12i64 {
        let at = format!("2024-03-01T{:02}:00:00+00:00", 10 + i);
        d.bronze("orders", &format!("b{i}"), &at, &orders(i * 100..i * 100 + 10, 2));
        assert_eq!(promoted(&d.run().await), 1);
        // Run 11 finds ten committed intents and sums them up; run 12 reads it.
        let through = summary().map(|s| s["through"].as_i64().expect("through"));
        assert_eq!(through, (i >= 10).then_some(10), "after run {}", i + 1);
    }
    assert_eq!(summary().expect("summary")["done"].as_array().expect("done").len(), 10);

    // The intents it covers are not read again.
    let intents = d.dir.path().join("lake/_medallion/ledger/silver/orders");
    for n in 1..=10 {
        std::fs::remove_file(intents.join(format!("{n:010}.json"))).expect("remove an intent");
    }
    d.bronze("orders", "b12", "2024-03-02T10:00:00+00:00", &orders(1200..1210, 2));
    assert_eq!(promoted(&d.run().await), 1, "only the new batch");
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["104".to_string()]]);
    assert_eq!(d.rows("SELECT count(*) FROM quarantine.orders").await, vec![vec!["26".to_string()]]);

    // Another table's summary (here: through every intent, nothing done) is not used.
    let (_, lake) = d.open().await;
    let silver = Table::open(&lake, Layer::Silver, "orders").await.expect("open");
    let (id, committed) = (silver.id().expect("id"), 13);
    let mut other = summary().expect("summary");
    (other["table_id"], other["through"], other["done"]) = ("another".into(), committed.into(), serde_json::json!([]));
    std::fs::write(&path, serde_json::to_vec(&other).expect("json")).expect("write");
    let read = ledger::promoted(&lake, "orders", committed, Some(&id)).await.expect("ledger");
    assert_eq!((read.last, read.done.len()), (13, 3), "the intents after the deleted ones");
    other["table_id"] = id.clone().into();
    std::fs::write(&path, serde_json::to_vec(&other).expect("json")).expect("write");
    let read = ledger::promoted(&lake, "orders", committed, Some(&id)).await.expect("ledger");
    assert_eq!((read.last, read.done.len()), (13, 0), "this table's summary is used");
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_checks_again_a_table_committed_to_by_another_writer_or_under_a_new_policy() {
    let project = |limit: usize| {
        SMALL
            .replace("RATE", "")
            .replace("name = \"small\"", &format!("name = \"small\"\ncompact_above_files = {limit}"))
    };
    let d = Dir::new(&project(3));
    for (i, at) in ["10", "11"].iter().enumerate() {
        let base = i64::try_from(i).expect("i") * 100;
        d.bronze("orders", &format!("b{i}"), &format!("2024-03-01T{at}:00:00+00:00"), &orders(base..base + 10, 2));
        let s = d.run().await;
        assert!(s.ok() && s.compacted.is_empty(), "{:?} {:?}", s.failed, s.compacted);
    }
    let (_, lake) = d.open().await;
    let files = |layer| {
        let lake = lake.clone();
        async move { Table::open(&lake, layer, "orders").await.expect("open").files().expect("files").0 }
    };
    assert_eq!((files(Layer::Silver).await, files(Layer::Quarantine).await), (2, 2));
    let state = || {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.dir.path().join("lake/_medallion/maintenance.json")).expect("state"),
        )
        .expect("json");
        v["checked"].clone()
    };
    let checked = state();
    assert!(checked["quarantine/orders"]["commit"].is_object(), "{checked}");

    // A run with nothing to do leaves the checks of the tables it did not write standing.
    let s = d.run().await;
    assert!(s.ok() && s.compacted.is_empty(), "{:?}", s.compacted);
    for table in ["silver/orders", "quarantine/orders"] {
        assert_eq!(state()[table], checked[table], "{table}");
    }

    // Another writer appends twice to the dead letter (4 files, over the limit of 3): the next run,
    // which writes nothing to it, sees the new commits and compacts it.
    let t = Table::open(&lake, Layer::Quarantine, "orders").await.expect("open");
    let ctx = datafusion::prelude::SessionContext::new();
    let rows = ctx.read_table(t.provider(&ctx).await.expect("provider")).expect("read").collect().await.expect("rows");
    let t = t.write(rows.clone(), WriteOptions::default()).await.expect("append");
    t.write(rows, WriteOptions::default()).await.expect("append");
    assert_eq!(files(Layer::Quarantine).await, 4);
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let compacted: Vec<_> = s.compacted.iter().map(|m| m.table.as_str()).collect();
    assert!(compacted.contains(&"quarantine/orders") && !compacted.contains(&"silver/orders"), "{compacted:?}");
    assert_eq!(files(Layer::Quarantine).await, 1);
    assert_ne!(state()["quarantine/orders"], checked["quarantine/orders"]);

    // A lower limit applies to tables nothing was committed to since their last check.
    d.configure(&project(1));
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert!(s.compacted.iter().any(|m| m.table == "silver/orders"), "{:?}", s.compacted);
    assert_eq!(files(Layer::Silver).await, 1);
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["16".to_string()]], "nothing lost");

    // A table the project no longer declares is forgotten.
    let with_refunds = format!(
        "{}\n[sources.refunds]\n\n[silver.refunds]\nprimary_key = [\"order_id\"]\ncolumns = [{{ name = \"order_id\", type = \"int64\" }}]\n",
        project(1)
    );
    d.configure(&with_refunds);
    d.bronze("refunds", "r0", "2024-03-01T12:00:00+00:00", &[r#"{"order_id": 1}"#.to_string()]);
    assert!(d.run().await.ok());
    assert!(state()["silver/refunds"]["commit"].is_object(), "{}", state());
    d.configure(&project(1));
    assert!(d.run().await.ok());
    assert!(state().get("silver/refunds").is_none() && state()["silver/orders"].is_object(), "{}", state());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_maintenance_policy_compacts_z_ordered_and_vacuums_on_its_own_schedule() {
    let policy = "primary_key = [\"order_id\"]\nmaintenance = { compact_above_files = 2, zorder = [\"amount\"], target_size = 1000000, vacuum_every = \"1d\" }";
    let d = Dir::new(&SMALL.replace("RATE", "").replace("primary_key = [\"order_id\"]", policy));
    let at = |t: &str| RunOptions { threads: 2, now: t.parse().expect("time"), ..Default::default() };
    let (project, lake) = d.open().await;
    let (mut compacted, mut vacuumed) = (Vec::new(), Vec::new());
    for (i, hour) in ["10", "11", "12", "13"].iter().enumerate() {
        let base = i64::try_from(i).expect("i") * 100;
        d.bronze("orders", &format!("b{i}"), &format!("2024-03-01T{hour}:00:00+00:00"), &orders(base..base + 10, 2));
        let s = run(&project, &lake, &at(&format!("2024-03-02T{hour}:00:00Z"))).await.expect("run");
        assert!(s.ok(), "{:?}", s.failed);
        compacted.extend(s.compacted.iter().map(|m| (m.table.clone(), m.files_before, m.files_after)));
        vacuumed.push(s.vacuumed.iter().map(|m| m.table.clone()).collect::<Vec<_>>());
    }
    let silver: Vec<_> = compacted.iter().filter(|(t, _, _)| t == "silver/orders").collect();
    assert!(!silver.is_empty() && silver.iter().all(|(_, before, after)| after < before), "{compacted:?}");
    let (files, _) = Table::open(&lake, Layer::Silver, "orders").await.expect("open").files().expect("files");
    assert!(files <= 2, "{files} files");
    // The policy's vacuum: due at the first run, not again within the day; the dead letter follows its
    // table; medallion's own tables keep the project's policy (none).
    assert_eq!(vacuumed[0], ["silver/orders", "quarantine/orders"]);
    assert!(vacuumed[1..].iter().all(Vec::is_empty), "{vacuumed:?}");
    let next_day = run(&project, &lake, &at("2024-03-03T11:00:00Z")).await.expect("run");
    assert_eq!(
        next_day.vacuumed.iter().map(|m| m.table.as_str()).collect::<Vec<_>>(),
        ["silver/orders", "quarantine/orders"]
    );
    assert_eq!(
        d.rows("SELECT count(*), CAST(sum(amount) AS VARCHAR) FROM silver.orders").await,
        vec![vec!["32".to_string(), "160.00".to_string()]]
    );
    assert_eq!(d.rows("SELECT count(*) FROM quarantine.orders").await, vec![vec!["8".to_string()]], "nothing lost");

    for (bad, message) in [
        ("maintenance = { zorder = [\"amout\"] }", "maintenance: zorder column `amout` is not a column of the table"),
        (
            "maintenance = { vacuum_every = \"1d\", vacuum_retain = \"1h\" }",
            "maintenance: vacuum_retain `1h` is below 7 days",
        ),
        ("maintenance = { compact_every = 3 }", "unknown field `compact_every`"),
    ] {
        d.configure(&SMALL.replace("RATE", bad));
        let err = Project::load(d.dir.path()).await.expect_err(bad).to_string();
        assert!(err.contains(message) && err.contains("medallion.toml:"), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vacuum_policy_runs_after_runs_when_due() {
    let d = Dir::new(&SMALL.replace("RATE", "").replace("name = \"small\"", "name = \"small\"\nvacuum_every = \"1d\""));
    d.bronze("orders", "b0", "2024-03-01T10:00:00+00:00", &orders(0..10, 1));
    let at = |t: &str| RunOptions { threads: 2, now: t.parse().expect("time"), ..Default::default() };
    let (project, lake) = d.open().await;
    let first = run(&project, &lake, &at("2024-03-02T00:00:00Z")).await.expect("run");
    assert!(first.vacuumed.iter().any(|m| m.table == "silver/orders"), "first run: due: {:?}", first.vacuumed);
    let soon = run(&project, &lake, &at("2024-03-02T06:00:00Z")).await.expect("run");
    assert!(soon.vacuumed.is_empty(), "not due yet");
    let later = run(&project, &lake, &at("2024-03-03T01:00:00Z")).await.expect("run");
    assert!(!later.vacuumed.is_empty(), "due again after a day");
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders").await, vec![vec!["9".to_string()]]);

    d.configure(
        &SMALL
            .replace("RATE", "")
            .replace("name = \"small\"", "name = \"small\"\nvacuum_every = \"1d\"\nvacuum_retain = \"1h\""),
    );
    let err = Project::load(d.dir.path()).await.expect_err("too short").to_string();
    assert!(err.contains("vacuum_retain `1h` is below 7 days"), "{err}");
}

/// A policy that names no file size packs files to the table's own `delta.targetFileSize` (set by
/// another writer), as delta-rs's optimize does: at a size every file already reaches, nothing is
/// packed.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_without_a_size_compacts_to_the_table_s_target_file_size() {
    let d =
        Dir::new(&SMALL.replace("RATE", "").replace("name = \"small\"", "name = \"small\"\ncompact_above_files = 2"));
    let files = |lake: medallion::storage::Lake| async move {
        Table::open(&lake, Layer::Quarantine, "orders").await.expect("open").files().expect("files").0
    };
    d.bronze("orders", "b0", "2024-03-01T10:00:00+00:00", &orders(0..10, 2));
    assert!(d.run().await.ok());
    let (_, lake) = d.open().await;
    set_property(&lake, Layer::Quarantine, "orders", "delta.targetFileSize", "2").await;
    for (i, at) in ["11", "12", "13"].iter().enumerate() {
        let base = 100 * (1 + i64::try_from(i).expect("i"));
        d.bronze(
            "orders",
            &format!("b{}", i + 1),
            &format!("2024-03-01T{at}:00:00+00:00"),
            &orders(base..base + 10, 2),
        );
        assert!(d.run().await.ok());
    }
    let (_, lake) = d.open().await;
    assert_eq!(files(lake).await, 4, "one file per run, none under half of 2 bytes");
    assert_eq!(d.rows("SELECT count(*) FROM quarantine.orders").await, vec![vec!["8".to_string()]]);
}

/// Sets `key` on `layer`/`table`, as another Delta writer would.
async fn set_property(lake: &medallion::storage::Lake, layer: Layer, table: &str, key: &str, value: &str) {
    let url = Table::open(lake, layer, table).await.expect("open").url();
    deltalake::open_table(url)
        .await
        .expect("open")
        .set_tbl_properties()
        .with_properties([(key.to_string(), value.to_string())].into())
        .await
        .expect("set a table property");
}
