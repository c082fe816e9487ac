//! Exactly-once: re-ingesting is a no-op; an interrupted promotion is resumed with the same batches.

use medallion::bronze::ingest::{IngestStatus, ingest};
use medallion::runtime::ledger::{self, Intent};
use medallion::spec::SourceFormat;
use medallion::storage::Layer;
use medallion::storage::delta::Table;

use crate::common::{Env, sample, walk};

#[tokio::test(flavor = "multi_thread")]
async fn ingesting_the_same_content_twice_lands_one_batch() {
    let env = Env::new().await;
    let (batches, expected) = sample(2_000, 1, 3);
    let content = batches[0].landing_ndjson().into_bytes();
    let now = medallion::runtime::now();
    let first =
        ingest(&env.lake, "orders", SourceFormat::Ndjson, "a.ndjson", content.clone(), now).await.expect("ingest");
    assert_eq!(first.status, IngestStatus::Ingested);
    assert_eq!(first.records, expected.records);
    let second =
        ingest(&env.lake, "orders", SourceFormat::Ndjson, "copy.ndjson", content.clone(), now).await.expect("ingest");
    assert_eq!(second.status, IngestStatus::AlreadyIngested);
    assert_eq!(second.batch_id, first.batch_id);
    // The second landing's own upload was abandoned: nothing of it is in bronze.
    assert_eq!(walk(&env.lake_dir().join("bronze")), vec![env.lake_dir().join(&first.path)]);

    // A crash after the marker but before the batch landed: the next ingest completes that batch.
    std::fs::remove_file(env.lake_dir().join(&first.path)).expect("rm");
    let third = ingest(&env.lake, "orders", SourceFormat::Ndjson, "a.ndjson", content, now).await.expect("ingest");
    assert_eq!((third.status, third.batch_id.as_str()), (IngestStatus::Recovered, first.batch_id.as_str()));
    assert_eq!(walk(&env.lake_dir().join("bronze")), vec![env.lake_dir().join(&first.path)], "that batch alone");

    let s = env.run().await;
    assert_eq!(s.totals.read, expected.records);
    assert_eq!(s.totals.rejected, expected.invalid);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
}

/// Issue 22: ingest streams its input (one pass: convert, hash and upload in parts): a batch
/// larger than one part lands whole and reads back record for record; a store refusing the upload
/// part-way is the error said; an input that changes while it is read lands nothing, and claims
/// nothing: its next landing lands it.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::result_large_err)] // the decoder's callback returns medallion's Result
async fn ingest_streams_large_inputs_in_parts_and_lands_nothing_from_a_changing_one() {
    use std::io::Write;
    use std::sync::Arc;

    use medallion::bronze::ingest::{FileInput, Input, ingest_from};

    let env = Env::new().await;
    // ~40 MB of records whose text barely compresses: the gzip batch spans several 8 MiB parts.
    let path = env.dir.path().join("big.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let n = 150_000u64;
    for i in 0..n {
        let noise: String = (0..16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect();
        writeln!(f, r#"{{"order_id": {i}, "region": "{noise}"}}"#).expect("write");
    }
    f.flush().expect("flush");
    drop(f);
    let input = Arc::new(FileInput::new(&path));
    let now = medallion::runtime::now();
    let out = ingest_from(&env.lake, "orders", SourceFormat::Ndjson, "big.ndjson", input, now).await.expect("ingest");
    assert_eq!((out.status, out.records, out.corrupt), (IngestStatus::Ingested, n, 0));
    let gz = std::fs::read(env.lake_dir().join(&out.path)).expect("batch");
    assert!(gz.len() > 16 << 20, "several parts: {} bytes", gz.len());
    let mut rows = 0u64;
    let bad = medallion::bronze::decode::decode_batch(&gz, &["order_id".to_string()], |c| {
        rows += c.rows() as u64;
        Ok(())
    })
    .expect("decode");
    assert_eq!((rows, bad.len()), (n, 0));

    // The store refusing the upload part-way (here: `bronze/orders` is a file, not a directory)
    // is the error said, not the conversion it stopped; no marker claims the content.
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(lake.join("bronze")).expect("mkdir");
    std::fs::write(lake.join("bronze/orders"), b"in the way").expect("write");
    let blocked = medallion::storage::Lake::open("lake", dir.path()).expect("lake");
    let input = Arc::new(FileInput::new(&path));
    let err = ingest_from(&blocked, "orders", SourceFormat::Ndjson, "big.ndjson", input, now)
        .await
        .expect_err("the store refuses")
        .to_string();
    assert!(err.contains("bronze/orders/") && !err.contains("the upload stopped"), "{err}");
    assert!(!lake.join("_medallion/ingest/orders").exists(), "no marker: {err}");

    // A file written to while it lands (its stamp moves after it was opened): refused, and no
    // batch object appears.
    struct Changing(FileInput);
    impl Input for Changing {
        fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            let r = self.0.open()?;
            std::fs::OpenOptions::new().append(true).open(&self.0.path)?.write_all(b"{\"order_id\": 9}\n")?;
            Ok(r)
        }
        fn size(&self) -> std::io::Result<u64> {
            self.0.size()
        }
        fn changed(&self) -> bool {
            self.0.changed()
        }
    }
    let moving = env.dir.path().join("moving.ndjson");
    std::fs::write(&moving, "{\"order_id\": 1}\n").expect("write");
    let before = walk(&env.lake_dir().join("bronze")).len();
    let changing = Arc::new(Changing(FileInput::new(&moving)));
    let err = ingest_from(&env.lake, "orders", SourceFormat::Ndjson, "moving", changing, now)
        .await
        .expect_err("changed")
        .to_string();
    assert!(err.contains("changed while it was being landed"), "{err}");
    assert_eq!(walk(&env.lake_dir().join("bronze")).len(), before, "no batch landed");
    // Settled, it lands (no marker was left claiming its content).
    let out = ingest_from(&env.lake, "orders", SourceFormat::Ndjson, "moving", Arc::new(FileInput::new(&moving)), now)
        .await
        .expect("ingest");
    assert_eq!((out.status, out.records), (IngestStatus::Ingested, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_intent_is_resumed_with_exactly_its_batches() {
    let env = Env::new().await;
    let (batches, expected) = sample(9_000, 3, 5);
    env.land(&batches[0]);
    env.run().await;
    // A run that recorded its intent for batch 2 and then died; batch 3 arrives afterwards.
    env.land(&batches[1]);
    let pending = medallion::bronze::batches::list(&env.lake, "orders").await.expect("list");
    let b2: Vec<_> = pending.into_iter().filter(|b| b.batch_id == batches[1].batch_id).collect();
    let b2 = medallion::bronze::batches::order_by_ingestion(&env.lake, b2).await.expect("order");
    ledger::record(&env.lake, "orders", &Intent { version: 2, run_id: "crashed".into(), batches: b2, rebuild: false })
        .await
        .expect("intent");
    env.land(&batches[2]);

    let s = env.run().await;
    assert_eq!(s.silver.len(), 2, "the open intent, then the new batch");
    assert!(s.silver[0].resumed && s.silver[0].intent == 2 && s.silver[0].batches == 1);
    assert!(!s.silver[1].resumed && s.silver[1].intent == 3 && s.silver[1].batches == 1);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM quarantine.orders").await as u64, expected.invalid);
    assert_eq!(env.sum_cents("SELECT sum(revenue) FROM gold.daily_revenue").await, expected.amount_cents);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silver_table_deleted_by_hand_is_reported_not_silently_repromoted() {
    let env = Env::new().await;
    let (batches, _) = sample(3_000, 3, 9);
    for b in &batches {
        env.land(b);
        env.run().await;
    }
    std::fs::remove_dir_all(env.lake_dir().join("silver/orders")).expect("rm");
    let s = medallion::orchestration::run::run(&env.project, &env.lake, &Default::default()).await.expect("run");
    assert_eq!(s.failed.len(), 1);
    assert!(
        s.failed[0].error.contains("the ledger records 3 promotions but the table has only 0"),
        "{}",
        s.failed[0].error
    );
    assert_eq!(s.skipped, vec!["gold/daily_revenue".to_string(), "gold/revenue_by_tier".into()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_only_rejects_still_completes_its_promotion() {
    let env = Env::new().await;
    let (batches, _) = sample(2_000, 1, 21);
    env.land(&batches[0]);
    env.run().await;
    let bad = "{\"_batch_id\": \"b9\", \"_ingested_at\": \"2030-01-01T00:00:00.000000+00:00\", \"_source\": \"orders\", \"order_id\": \"C-1\"}\nnot json\n";
    crate::common::write_gz(&env.lake_dir().join("bronze/orders/2030-01-01/b9.ndjson.gz"), bad.as_bytes());
    let s = env.run().await;
    assert_eq!((s.totals.read, s.totals.rejected, s.totals.promoted), (2, 2, 0));
    // The promotion is recorded as done: the next runs find nothing pending and no open intent.
    for _ in 0..2 {
        let again = env.run().await;
        assert!(again.silver.is_empty(), "{:?}", again.silver);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_batch_with_only_rejects_creates_an_empty_silver_table_and_no_gold() {
    let env = Env::new().await;
    crate::common::write_gz(&env.lake_dir().join("bronze/orders/2030-01-01/b1.ndjson.gz"), b"[1]\n{}\n");
    let s = env.try_run().await;
    assert_eq!((s.totals.read, s.totals.rejected), (2, 2));
    assert_eq!(s.silver[0].silver_version, Some(0));
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await, 0);
    // The example warns on an empty silver table, and refuses to publish an empty gold one.
    let warned: Vec<_> = s.silver[0].expectations.iter().filter(|e| !e.passed()).map(|e| e.name.as_str()).collect();
    assert_eq!(warned, ["has_orders", "fresh_orders"]);
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].error.contains("gold/daily_revenue: `has_days` (rows = 0)"), "{}", s.failed[0].error);
    assert!(!Table::open(&env.lake, Layer::Gold, "daily_revenue").await.expect("open").exists());
    let (batches, expected) = sample(2_000, 1, 22);
    env.land(&batches[0]);
    let s = env.run().await;
    assert_eq!(s.silver.len(), 1);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
}

/// `optimize` and `vacuum` are writers too: while another holds the lake they fail naming it and
/// delete nothing (a run's data files are named by no commit until it commits: a short retention
/// would take them); a dry run only lists; with a lock wait they take their turn.
#[tokio::test(flavor = "multi_thread")]
async fn optimize_and_vacuum_take_the_lakes_lock() {
    use std::time::Duration;

    use medallion::maintenance;
    use medallion::runtime::lock::{self, PATH};
    let env = Env::new().await;
    let (batches, _) = sample(500, 2, 7);
    for b in &batches {
        env.land(b);
    }
    assert!(env.run().await.ok());
    // A file another writer is writing, before its commit.
    let pending = env.lake_dir().join("silver/orders/part-00000-in-flight.snappy.parquet");
    std::fs::write(&pending, b"PAR1 being written").expect("write");

    let zero = Duration::ZERO;
    let held = lock::acquire(&env.lake, "run by someone else").await.expect("lock");
    let err = maintenance::vacuum(&env.lake, &env.project, None, (zero, true, false), zero)
        .await
        .expect_err("locked")
        .to_string();
    assert!(err.contains("the lake is in use by run by someone else (pid"), "{err}");
    assert!(pending.exists(), "vacuum deleted a file while another writer held the lake");
    let err =
        maintenance::optimize(&env.lake, &env.project, None, (&[], None), zero).await.expect_err("locked").to_string();
    assert!(err.contains("the lake is in use by run by someone else (pid"), "{err}");
    let listed =
        maintenance::vacuum(&env.lake, &env.project, None, (zero, true, true), zero).await.expect("a dry run lists");
    assert!(listed.iter().any(|m| m.table == "silver/orders" && m.removed >= 1), "{listed:?}");
    assert!(pending.exists());

    // Waiting its turn: the holder lets go after a moment.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await.expect("release");
    });
    let vacuumed = maintenance::vacuum(&env.lake, &env.project, None, (zero, true, false), Duration::from_secs(30))
        .await
        .expect("vacuum once the lake is free");
    release.await.expect("released");
    assert!(vacuumed.iter().any(|m| m.table == "silver/orders" && m.removed >= 1), "{vacuumed:?}");
    assert!(!pending.exists());
    assert!(!env.lake.exists(PATH).await.expect("exists"), "vacuum gives the lock back");
    maintenance::optimize(&env.lake, &env.project, None, (&[], None), zero).await.expect("optimize");
    assert!(!env.lake.exists(PATH).await.expect("exists"), "optimize gives the lock back");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_writer_per_lake_and_stale_locks_are_taken_over() {
    use medallion::runtime::lock::{self, Holder, PATH};
    let env = Env::new().await;
    // A live holder (this very process): a run fails fast, naming it.
    let held = lock::acquire(&env.lake, "run by someone else").await.expect("lock");
    let err = medallion::orchestration::run::run(&env.project, &env.lake, &Default::default())
        .await
        .expect_err("locked")
        .to_string();
    assert!(err.contains("the lake is in use by run by someone else (pid"), "{err}");
    held.release().await.expect("release");
    assert!(medallion::orchestration::run::run(&env.project, &env.lake, &Default::default()).await.is_ok());
    assert!(!env.lake.exists(PATH).await.expect("exists"), "a run gives the lock back");

    // Left behind by a killed process of this host, or silent for too long elsewhere: taken over.
    // Silence is judged by the store's clock (the lock file's modification time), never by the
    // clock a holder wrote: a holder whose machine runs hours behind is not stale (issue 22).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let now = chrono::Utc::now();
    let skewed = (now - chrono::Duration::hours(5)).to_rfc3339();
    let holder = |what: &str, host: &str, pid: u32, beat: &str| Holder {
        what: what.into(),
        host: host.into(),
        pid,
        since: beat.into(),
        heartbeat: beat.into(),
        token: what.into(),
    };
    let file = env.dir.path().join("lake").join(PATH);
    let cases = [
        (holder("killed run", &host, 4_000_000, &now.to_rfc3339()), None, true),
        (holder("silent run", "elsewhere", 1, &now.to_rfc3339()), Some(600), true),
        (holder("busy run", "elsewhere", 1, &now.to_rfc3339()), None, false),
        (holder("busy run, clock 5 h behind", "elsewhere", 1, &skewed), None, false),
        (holder("busy run, written 60 s ago", "elsewhere", 1, &skewed), Some(60), false),
    ];
    for (holder, written_ago, stale) in cases {
        env.lake.put(PATH, serde_json::to_vec(&holder).expect("json")).await.expect("put");
        if let Some(secs) = written_ago {
            let f = std::fs::File::options().write(true).open(&file).expect("lock file");
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs)).expect("mtime");
        }
        let got = lock::acquire(&env.lake, "next run").await;
        assert_eq!(got.is_ok(), stale, "{holder:?}: {:?}", got.as_ref().err());
        if let Ok(l) = got {
            assert_eq!(l.holder().what, "next run");
            l.release().await.expect("release");
        }
        env.lake.delete(PATH).await.expect("clean");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grouped_pushes_land_each_body_once_across_groups_and_single_ingests() {
    use medallion::bronze::ingest::{ReadOptions, ingest_group};
    let env = Env::new().await;
    let read = ReadOptions::from(SourceFormat::Ndjson);
    let body = |ids: &[u32]| -> bytes::Bytes {
        ids.iter().map(|i| format!("{{\"order_id\": {i}}}\n")).collect::<String>().into()
    };
    let (a, b, c) = (body(&[1, 2]), body(&[3]), body(&[4, 5, 6]));
    let now = medallion::runtime::now();
    let group =
        |bodies: Vec<bytes::Bytes>| ingest_group(&env.lake, "orders", &read, "POST /ingest/orders", bodies, now);

    // A body twice in one group lands once.
    let first = group(vec![a.clone(), b.clone(), a.clone()]).await.expect("group");
    let statuses: Vec<_> = first.iter().map(|o| (o.status.clone(), o.records)).collect();
    assert_eq!(
        statuses,
        [(IngestStatus::Ingested, 2), (IngestStatus::Ingested, 1), (IngestStatus::AlreadyIngested, 0)]
    );
    assert!(first.iter().all(|o| o.batch_id == first[0].batch_id), "one batch");
    // The same content ingested alone finds it landed.
    let alone = ingest(&env.lake, "orders", SourceFormat::Ndjson, "a.ndjson", a.to_vec(), now).await.expect("ingest");
    assert_eq!((alone.status, alone.batch_id.as_str()), (IngestStatus::AlreadyIngested, first[0].batch_id.as_str()));
    // A group with a landed body and a new one lands only the new one, in a batch of its own.
    let second = group(vec![b.clone(), c.clone()]).await.expect("group");
    assert_eq!(
        (second[0].status.clone(), second[0].batch_id.as_str()),
        (IngestStatus::AlreadyIngested, first[0].batch_id.as_str())
    );
    assert_eq!((second[1].status.clone(), second[1].records), (IngestStatus::Ingested, 3));
    assert_ne!(second[1].batch_id, first[0].batch_id);
    // A group that died after its markers, before its batch landed: the body sent again lands.
    std::fs::remove_file(env.lake_dir().join(&second[1].path)).expect("rm");
    let third = group(vec![c.clone()]).await.expect("group");
    assert_eq!((third[0].status.clone(), third[0].records), (IngestStatus::Ingested, 3));

    let mut ids = Vec::new();
    for f in walk(&env.lake_dir().join("bronze/orders")) {
        let text = std::io::read_to_string(flate2::read::GzDecoder::new(std::fs::File::open(&f).expect("open")))
            .expect("gunzip");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            ids.push(v["order_id"].as_u64().expect("id"));
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "every record in bronze once");
}
