//! History: SCD type 2 scenarios (tests/fixtures/history/scd2.toml) and change-data apply.

use std::path::Path;

use medallion::orchestration::run::{RunOptions, RunSummary, run};
use medallion::project::Project;
use medallion::storage::delta::Table;
use medallion::storage::{Lake, Layer};
use serde::Deserialize;

use crate::common::{Rng, query, seeds, strings, write_gz};

const SCD2: &str = r#"[project]
name = "history"

[sources.customers]

[silver.dim_customers]
source = "customers"
primary_key = ["customer_id"]
order_by = "updated_at"
columns = [
  { name = "customer_id", type = "int64" },
  { name = "name", type = "string" },
  { name = "tier", type = "string" },
  { name = "updated_at", type = "timestamp" },
  { name = "op", type = "string", required = false },
]
history = { scd = 2, track = ["tier"], delete_when = "op = 'delete'" }
"#;

const CDC: &str = r#"[project]
name = "cdc"

[sources.accounts]

[silver.accounts]
primary_key = ["id"]
order_by = "seq"
columns = [
  { name = "id", type = "int64" },
  { name = "seq", type = "int64" },
  { name = "balance", type = "int64", required = false },
  { name = "op", type = "string", required = false },
]
history = { scd = 1, delete_when = "op = 'D'" }
"#;

/// `toml` as written and with its silver table merged with deletion vectors (issue 16): both must
/// behave the same.
fn with_and_without_deletion_vectors(toml: &str) -> [String; 2] {
    let dv = toml.replace("\nhistory = {", "\nmerge = \"deletion_vectors\"\nhistory = {");
    assert_ne!(dv, toml);
    [toml.to_string(), dv]
}

pub struct Lakehouse {
    pub dir: tempfile::TempDir,
    batches: usize,
}

impl Lakehouse {
    pub fn new(toml: &str) -> Lakehouse {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("medallion.toml"), toml).expect("write");
        Lakehouse { dir, batches: 0 }
    }

    /// Lands one bronze batch of JSON records for `source` and runs the pipeline.
    pub async fn run_with(&mut self, source: &str, records: &[String]) -> RunSummary {
        self.land(source, records);
        self.run().await
    }

    /// Lands one bronze batch of JSON records for `source`.
    pub fn land(&mut self, source: &str, records: &[String]) {
        self.batches += 1;
        let at = format!("2024-03-01T{:02}:00:00+00:00", self.batches);
        let batch = format!("b{:02}", self.batches);
        let text: String = records
            .iter()
            .map(|r| {
                format!(
                    "{}, \"_batch_id\": \"{batch}\", \"_ingested_at\": \"{at}\", \"_source\": \"{source}\"}}\n",
                    &r[..r.len() - 1]
                )
            })
            .collect();
        write_gz(&self.dir.path().join(format!("lake/bronze/{source}/2024-03-01/{batch}.ndjson.gz")), text.as_bytes());
    }

    /// Runs the pipeline; every node must succeed.
    pub async fn run(&self) -> RunSummary {
        let (project, lake) = self.open().await;
        let s = run(&project, &lake, &RunOptions { threads: 2, now: medallion::runtime::now(), ..Default::default() })
            .await
            .expect("run");
        assert!(s.ok(), "{:?}", s.failed);
        s
    }

    /// Rebuilds `table` from its bronze batches; every node must succeed.
    pub async fn rebuild(&self, table: &str) -> RunSummary {
        let (project, lake) = self.open().await;
        let rebuild = std::collections::BTreeSet::from([table.to_string()]);
        // Tiny slices: every key's records must meet in one slice, in ingest order.
        let opts =
            RunOptions { threads: 2, now: medallion::runtime::now(), rebuild, slice_bytes: 64, ..Default::default() };
        let s = run(&project, &lake, &opts).await.expect("run");
        assert!(s.ok(), "{:?}", s.failed);
        assert!(s.silver.iter().any(|p| p.table == table && p.rebuilt), "{:?}", s.silver);
        s
    }

    pub async fn open(&self) -> (Project, Lake) {
        let project = Project::load(self.dir.path()).await.expect("project loads");
        let lake = Lake::open(&project.lake, &project.root).expect("lake");
        (project, lake)
    }

    pub async fn rows(&self, sql: &str) -> Vec<String> {
        let (project, lake) = self.open().await;
        query(&project, &lake, sql).await.into_iter().map(|r| r.join(" ")).collect()
    }
}

#[derive(Deserialize)]
struct Scenarios {
    scenario: Vec<Scenario>,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    runs: Vec<Vec<String>>,
    expect: Vec<String>,
}

fn record(spec: &str) -> String {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (id, tier, day) = (parts[0], parts[1], parts[2].trim_start_matches('d'));
    let op = if parts.contains(&"delete") { r#""delete""# } else { "null" };
    let name = if parts.contains(&"rename") { "Renamed" } else { "Original" };
    format!(
        r#"{{"customer_id": {id}, "name": "{name}", "tier": "{tier}", "updated_at": "2024-01-{day:0>2}T00:00:00Z", "op": {op}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn scd2_scenarios_build_the_history_they_declare_one_commit_per_run() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/history/scd2.toml"))
            .expect("read");
    let scenarios: Scenarios = toml::from_str(&text).expect("valid scd2.toml");
    for (sc, toml) in scenarios.scenario.iter().flat_map(|sc| with_and_without_deletion_vectors(SCD2).map(|t| (sc, t)))
    {
        let mut lh = Lakehouse::new(&toml);
        for (i, batch) in sc.runs.iter().enumerate() {
            let records: Vec<String> = batch.iter().map(|r| record(r)).collect();
            let s = lh.run_with("customers", &records).await;
            let p = &s.silver[0];
            assert_eq!(p.read, p.promoted() + p.superseded + p.rejected, "{}: accounting", sc.name);
            assert_eq!(p.silver_version, Some(i as i64), "{}: one commit per run", sc.name);
        }
        let got = lh
            .rows(
                "SELECT customer_id, tier, CAST(date_part('day', valid_from) AS BIGINT), coalesce(CAST(CAST(date_part('day', valid_to) AS BIGINT) AS VARCHAR), '-'), \
                 CAST(is_current AS VARCHAR), CAST(valid_to IS NULL AS VARCHAR) FROM silver.dim_customers ORDER BY customer_id, valid_from",
            )
            .await;
        let want: Vec<String> = sc.expect.iter().map(|e| format!("{e} {c} {c}", c = e.ends_with(" -"))).collect();
        assert_eq!(got, want, "{}", sc.name);
        let sk = lh.rows("SELECT count(DISTINCT _sk) = count(*) FROM silver.dim_customers").await;
        assert_eq!(sk, vec!["true".to_string()], "{}: surrogate keys unique", sc.name);
    }
}

/// Issue 15: a rebuild from bronze gives what promoting the batches one by one gave, for SCD 2
/// histories and change-data tables (deletes and tombstones included).
#[tokio::test(flavor = "multi_thread")]
async fn rebuilds_of_scd2_and_change_data_tables_equal_promoting_batch_by_batch() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/history/scd2.toml"))
            .expect("read");
    let scenarios: Scenarios = toml::from_str(&text).expect("valid scd2.toml");
    let all = "SELECT * EXCLUDE (_ingested_at, valid_from, valid_to), CAST(valid_from AS VARCHAR) AS vf, \
               CAST(valid_to AS VARCHAR) AS vt FROM silver.dim_customers ORDER BY customer_id, valid_from";
    for (sc, toml) in scenarios.scenario.iter().flat_map(|sc| with_and_without_deletion_vectors(SCD2).map(|t| (sc, t)))
    {
        let mut lh = Lakehouse::new(&toml);
        for batch in &sc.runs {
            lh.run_with("customers", &batch.iter().map(|r| record(r)).collect::<Vec<_>>()).await;
        }
        let one_by_one = lh.rows(all).await;
        let s = lh.rebuild("dim_customers").await;
        let p = &s.silver[0];
        assert_eq!(
            (p.batches, p.read),
            (sc.runs.len(), sc.runs.iter().map(Vec::len).sum::<usize>() as u64),
            "{}",
            sc.name
        );
        assert_eq!(p.read, p.promoted() + p.superseded + p.rejected, "{}: accounting", sc.name);
        assert_eq!(lh.rows(all).await, one_by_one, "{}", sc.name);
    }

    for toml in with_and_without_deletion_vectors(CDC) {
        let mut lh = Lakehouse::new(&toml);
        lh.run_with("accounts", &[account(1, 1, Some(10)), account(2, 1, Some(20)), account(4, 1, Some(40))]).await;
        lh.run_with("accounts", &[account(1, 3, Some(30)), account(1, 2, Some(25)), account(2, 2, None)]).await;
        lh.run_with("accounts", &[account(4, 2, None), account(3, 1, Some(7))]).await;
        lh.run_with("accounts", &[account(2, 5, Some(50))]).await;
        let rows = "SELECT id, seq, balance FROM silver.accounts ORDER BY id";
        let one_by_one = lh.rows(rows).await;
        assert_eq!(one_by_one, vec!["1 3 30".to_string(), "2 5 50".into(), "3 1 7".into()]);
        lh.rebuild("accounts").await;
        assert_eq!(lh.rows(rows).await, one_by_one);
        // The rebuilt tombstones still stop a late record of the deleted key.
        let s = lh.run_with("accounts", &[account(4, 1, Some(41))]).await;
        assert_eq!((s.silver[0].inserted, s.silver[0].superseded), (0, 1));
        assert_eq!(lh.rows(rows).await, one_by_one);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scd2_surrogate_keys_are_stable_across_runs() {
    let mut lh = Lakehouse::new(SCD2);
    lh.run_with("customers", &[record("1 silver d1")]).await;
    let before = lh.rows("SELECT _sk FROM silver.dim_customers").await;
    lh.run_with("customers", &[record("1 gold d5"), record("2 gold d5")]).await;
    let after = lh.rows("SELECT _sk FROM silver.dim_customers WHERE customer_id = 1 AND tier = 'silver'").await;
    assert_eq!(before, after);
}

fn account(id: i64, seq: i64, balance: Option<i64>) -> String {
    match balance {
        Some(b) => format!(r#"{{"id": {id}, "seq": {seq}, "balance": {b}}}"#),
        None => format!(r#"{{"id": {id}, "seq": {seq}, "op": "D"}}"#),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn change_data_applies_in_sequence_order_with_deletes_and_late_records_ignored() {
    for toml in with_and_without_deletion_vectors(CDC) {
        let mut lh = Lakehouse::new(&toml);
        lh.run_with("accounts", &[account(1, 1, Some(10)), account(2, 1, Some(20))]).await;
        let s = lh.run_with("accounts", &[account(1, 3, Some(30)), account(1, 2, Some(25)), account(2, 2, None)]).await;
        let p = &s.silver[0];
        assert_eq!((p.read, p.inserted, p.updated, p.deleted, p.superseded), (3, 0, 1, 1, 1));
        assert_eq!(
            lh.rows("SELECT id, seq, balance FROM silver.accounts ORDER BY id").await,
            vec!["1 3 30".to_string()]
        );

        // Older than what the table holds (or than the delete): ignored. A new key: inserted.
        let s =
            lh.run_with("accounts", &[account(2, 1, Some(99)), account(1, 2, Some(5)), account(3, 1, Some(7))]).await;
        let p = &s.silver[0];
        assert_eq!((p.read, p.inserted, p.updated, p.deleted, p.superseded), (3, 1, 0, 0, 2));
        assert_eq!(
            lh.rows("SELECT id, seq, balance FROM silver.accounts ORDER BY id").await,
            vec!["1 3 30".to_string(), "3 1 7".into()]
        );

        // A newer record after the delete brings the key back; rerunning changes nothing.
        let s = lh.run_with("accounts", &[account(2, 5, Some(50))]).await;
        assert_eq!(s.silver[0].inserted, 1);
        let (_, lake) = lh.open().await;
        let version = Table::open(&lake, Layer::Silver, "accounts").await.expect("open").version();
        let (project, lake) = lh.open().await;
        let again =
            run(&project, &lake, &RunOptions { threads: 2, now: medallion::runtime::now(), ..Default::default() })
                .await
                .expect("run");
        assert!(again.silver.is_empty());
        assert_eq!(Table::open(&lake, Layer::Silver, "accounts").await.expect("open").version(), version);
        assert_eq!(
            lh.rows("SELECT id, balance FROM silver.accounts ORDER BY id").await,
            vec!["1 30".to_string(), "2 50".into(), "3 7".into()]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn time_travel_reads_past_versions_and_history_lists_commits() {
    use medallion::storage::delta::AsOf;
    let mut lh = Lakehouse::new(CDC);
    lh.run_with("accounts", &[account(1, 1, Some(10)), account(2, 1, Some(20))]).await;
    let first = lh.run_with("accounts", &[account(2, 2, None)]).await;
    assert_eq!(first.silver[0].deleted, 1);
    let (project, lake) = lh.open().await;
    let t = Table::open(&lake, Layer::Silver, "accounts").await.expect("open");
    let commits = t.commits().await.expect("commits");
    let summary: Vec<(i64, String, u64, u64)> =
        commits.iter().map(|c| (c.version, c.operation.clone(), c.rows.inserted, c.rows.deleted)).collect();
    // The first load creates the table with its rows in one commit (as on a cluster).
    assert_eq!(summary, vec![(1, "MERGE".to_string(), 0, 1), (0, "CREATE TABLE".into(), 2, 0)]);
    assert!(commits.iter().all(|c| c.run_id.is_some()));

    let v0 = Table::open_as_of(&lake, Layer::Silver, "accounts", AsOf::Version(0)).await.expect("v0");
    assert_eq!(v0.count_rows().await.expect("rows"), 2);
    let at = commits[1].timestamp.expect("time");
    let ctx = medallion::catalog::session_as_of(&lake, &project, Some(AsOf::Time(at))).await.expect("session");
    let n = ctx.sql("SELECT count(*) FROM accounts").await.expect("plan").collect().await.expect("run");
    assert_eq!(strings(n[0].column(0)), vec!["2".to_string()]);
    let before = medallion::catalog::session_as_of(&lake, &project, Some(AsOf::Time(at - chrono::Duration::days(1))))
        .await
        .expect("session");
    let n = before.sql("SELECT count(*) FROM accounts").await.expect("plan").collect().await.expect("run");
    assert_eq!(strings(n[0].column(0)), vec!["0".to_string()], "before the first commit the table reads as empty");
    let err = Table::open_as_of(&lake, Layer::Silver, "accounts", AsOf::Version(7))
        .await
        .expect_err("no such version")
        .to_string();
    assert_eq!(err, "silver/accounts has no version 7 (latest: 1)");
    assert_eq!("2024-03-01".parse::<AsOf>().map(|a| matches!(a, AsOf::Time(_))), Ok(true));
    assert!("yesterday".parse::<AsOf>().is_err());
}

const INCREMENTAL: &str = r#"[project]
name = "incremental"

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
columns = [
  { name = "order_id", type = "int64" },
  { name = "amount", type = "decimal(18,2)" },
  { name = "order_date", type = "date" },
  { name = "region", type = "string" },
]

[gold.by_day]
owner = "analytics"
refresh = "daily"
sla = "1d"
incremental = { partition_by = "order_date" }
expectations = [
  { name = "sums", reconcile = { expr = "sum(revenue)", with = "orders", with_expr = "sum(amount)" } },
  { name = "grain", unique = ["order_date", "region"] },
]
"#;

const BY_DAY: &str =
    "SELECT CAST(order_date AS VARCHAR), region, n, CAST(revenue AS VARCHAR) FROM gold.by_day ORDER BY 1, 2";
const FROM_SILVER: &str = "SELECT CAST(order_date AS VARCHAR), region, count(*), CAST(sum(amount) AS VARCHAR) FROM silver.orders GROUP BY 1, 2 ORDER BY 1, 2";

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_model_equals_a_full_refresh_after_random_increments() {
    for seed in seeds(&[7, 42, 1234]) {
        let mut rng = Rng(seed);
        let mut lh = Lakehouse::new(INCREMENTAL);
        std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
        // HAVING: not a model kept from changes (tests/it/aggregates.rs), so partitions are rebuilt.
        let sql = "SELECT order_date, region, count(*) AS n, sum(amount) AS revenue FROM orders \
                   GROUP BY order_date, region HAVING count(*) > 0";
        std::fs::write(lh.dir.path().join("gold/by_day.sql"), sql).expect("write");
        let mut incremental_steps = 0;
        for step in 0..8 {
            // Keys repeat across batches (updates), and an update may move a key to another day.
            let records: Vec<String> = (0..1 + rng.next(12))
                .map(|_| {
                    let (id, day, cents, region) = (1 + rng.next(40), 1 + rng.next(9), 100 + rng.next(10_000), ["uk", "us"][rng.next(2) as usize]);
                    format!(r#"{{"order_id": {id}, "amount": {}.{:02}, "order_date": "2024-01-{day:02}", "region": "{region}"}}"#, cents / 100, cents % 100)
                })
                .collect();
            let s = lh.run_with("orders", &records).await;
            let b = &s.gold[0];
            // Incremental unless the changes touched every published day (then a full build).
            if let Some(p) = b.partitions {
                assert!(step > 0 && p <= 9, "seed {seed} step {step}: {p} partitions");
                incremental_steps += 1;
            }
            assert_eq!(lh.rows(BY_DAY).await, lh.rows(FROM_SILVER).await, "seed {seed} step {step}");
        }
        assert!(incremental_steps >= 3, "seed {seed}: only {incremental_steps} incremental builds");
        let incremental = lh.rows(BY_DAY).await;
        let (project, lake) = lh.open().await;
        let opts = RunOptions { threads: 2, now: medallion::runtime::now(), full_refresh: true, ..Default::default() };
        let s = run(&project, &lake, &opts).await.expect("run");
        assert!(s.ok() && s.gold[0].partitions.is_none() && s.gold[0].rebuilt, "{:?}", s.failed);
        assert_eq!(lh.rows(BY_DAY).await, incremental, "seed {seed}: full refresh gives the same content");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_build_reconciles_the_touched_partitions_and_still_catches_a_mismatch_there() {
    let mut lh = Lakehouse::new(INCREMENTAL);
    std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
    // A model that loses order 999: the reconciliation with silver must catch it.
    // HAVING: not a model kept from changes, so the touched partitions are rebuilt and reconciled.
    let sql = "SELECT order_date, region, count(*) AS n, sum(amount) AS revenue FROM orders WHERE order_id <> 999 \
               GROUP BY order_date, region HAVING count(*) > 0";
    std::fs::write(lh.dir.path().join("gold/by_day.sql"), sql).expect("write");
    let day = |id: u32, d: u32, amount: &str| {
        format!(r#"{{"order_id": {id}, "amount": {amount}, "order_date": "2024-01-0{d}", "region": "uk"}}"#)
    };
    let first = lh.run_with("orders", &[day(1, 1, "5.00"), day(2, 2, "6.00"), day(3, 3, "7.00")]).await;
    assert!(first.ok() && first.gold[0].partitions.is_none(), "{:?}", first.failed);
    // Day 2 changes: an incremental build of one partition, reconciled on that partition only.
    let second = lh.run_with("orders", &[day(4, 2, "1.50")]).await;
    assert!(second.ok(), "{:?}", second.failed);
    assert_eq!(second.gold[0].partitions, Some(1));
    let sums = second.gold[0].expectations.iter().find(|e| e.name == "sums").expect("sums");
    assert_eq!(sums.observed.as_deref(), Some("7.5 vs 7.5, difference 0 (touched partitions)"));
    // Order 999 lands on day 3: the touched partition no longer reconciles, and nothing is published.
    let before = lh.rows(BY_DAY).await;
    lh.land("orders", &[day(999, 3, "2.00")]);
    let (project, lake) = lh.open().await;
    let third = run(&project, &lake, &RunOptions { threads: 2, now: medallion::runtime::now(), ..Default::default() })
        .await
        .expect("run");
    assert!(!third.ok(), "the mismatch in the touched partition must fail the gate");
    let failed = third.failed.iter().find(|f| f.node == "gold/by_day").expect("gold failed");
    let sums = failed.expectations.iter().find(|e| e.name == "sums").expect("sums");
    assert_eq!(sums.observed.as_deref(), Some("7 vs 9, difference 2 (touched partitions)"));
    assert_eq!(lh.rows(BY_DAY).await, before, "a failed gate publishes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_joins_each_order_to_the_tier_valid_on_its_day() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders");
    let mut lh = Lakehouse::new(&std::fs::read_to_string(example.join("medallion.toml")).expect("read"));
    std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
    for f in ["gold/daily_revenue.sql", "gold/revenue_by_tier.sql"] {
        std::fs::copy(example.join(f), lh.dir.path().join(f)).expect("copy");
    }
    let customer = |tier: &str, day: &str| {
        format!(r#"{{"customer_id": 1, "name": "Ann", "tier": "{tier}", "updated_at": "{day}T00:00:00Z"}}"#)
    };
    lh.land(
        "customers",
        &[customer("bronze", "2023-12-01"), customer("silver", "2024-01-10"), customer("gold", "2024-01-20")],
    );
    let order = |id: u32, day: &str, customer: u32| {
        format!(
            r#"{{"order_id": {id}, "customer_id": {customer}, "amount": 10, "currency": "USD", "order_date": "{day}", "region": "uk", "source": "web"}}"#
        )
    };
    let s = lh
        .run_with(
            "orders",
            &[
                order(1, "2024-01-09", 1),
                order(2, "2024-01-10", 1),
                order(3, "2024-01-19", 1),
                order(4, "2024-01-20", 1),
                order(5, "2024-01-20", 2),
            ],
        )
        .await;
    assert!(s.gold.iter().all(|b| b.expectations.iter().all(|e| e.passed())), "{:?}", s.gold);
    assert_eq!(
        lh.rows("SELECT CAST(order_date AS VARCHAR), tier, order_count FROM gold.revenue_by_tier ORDER BY 1, 2").await,
        vec![
            "2024-01-09 bronze 1",
            "2024-01-10 silver 1",
            "2024-01-19 silver 1",
            "2024-01-20 gold 1",
            "2024-01-20 unknown 1"
        ]
    );
    // Silver orders hold one row per order and no null order_id (its log's statistics): a
    // distinct count of the key counts rows. The history repeats its key (three versions of one
    // customer) and still counts distinct values.
    let explained = lh.rows("EXPLAIN SELECT count(DISTINCT order_id) FROM silver.orders").await.join("\n");
    assert!(explained.contains("count(Int64(1)) AS count(DISTINCT silver.orders.order_id)"), "{explained}");
    assert_eq!(lh.rows("SELECT count(DISTINCT order_id), count(*) FROM silver.orders").await, vec!["5 5"]);
    assert_eq!(lh.rows("SELECT count(DISTINCT customer_id), count(*) FROM silver.dim_customers").await, vec!["1 3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_into_an_scd2_table_places_the_fixed_record_in_history() {
    let strict = SCD2.replace(
        r#"{ name = "tier", type = "string" }"#,
        r#"{ name = "tier", type = "string", checks = ["tier IN ('bronze', 'silver', 'gold')"] }"#,
    );
    let mut lh = Lakehouse::new(&strict);
    let s = lh.run_with("customers", &[record("1 silver d1"), record("1 platinum d5"), record("1 gold d9")]).await;
    assert_eq!(s.silver[0].rejected, 1);
    std::fs::write(lh.dir.path().join("medallion.toml"), strict.replace("'gold')", "'gold', 'platinum')"))
        .expect("write");
    let (project, lake) = lh.open().await;
    let opts = medallion::silver::replay::ReplayOptions {
        run_id: "r".into(),
        now: medallion::runtime::now(),
        filter: None,
        dry_run: false,
        lock_wait: std::time::Duration::ZERO,
    };
    let r = medallion::silver::replay::replay(&lake, &project, &project.silver["dim_customers"], &opts)
        .await
        .expect("replay");
    assert_eq!((r.selected, r.inserted, r.superseded, r.rejected), (1, 1, 0, 0));
    let got = lh
        .rows("SELECT tier, CAST(date_part('day', valid_from) AS BIGINT), coalesce(CAST(CAST(date_part('day', valid_to) AS BIGINT) AS VARCHAR), '-') FROM silver.dim_customers ORDER BY valid_from")
        .await;
    assert_eq!(got, vec!["silver 1 5", "platinum 5 9", "gold 9 -"]);
    let marked = lh.rows("SELECT _replay_outcome FROM quarantine.dim_customers").await;
    assert_eq!(marked, vec!["promoted"]);
}
