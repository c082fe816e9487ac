//! Every expectation kind, passing and failing (cases in tests/fixtures/expectations/cases.toml);
//! `drop` on set-level kinds; results kept in `_medallion/expectations`; bad configurations.

use std::path::{Path, PathBuf};

use medallion::orchestration::run::{RunOptions, RunSummary, run};
use medallion::project::Project;
use medallion::runtime::Now;
use medallion::storage::delta::Table;
use medallion::storage::{Lake, Layer};
use serde::Deserialize;

use crate::common::{query, write_gz};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/expectations")
}

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
    bad: Vec<Bad>,
}

#[derive(Deserialize)]
struct Case {
    on: String,
    pass: String,
    fail: String,
}

#[derive(Deserialize)]
struct Bad {
    on: String,
    expectation: String,
    message: String,
    at: Option<String>,
}

fn cases() -> Cases {
    toml::from_str(&std::fs::read_to_string(fixture_dir().join("cases.toml")).expect("cases"))
        .expect("valid cases.toml")
}

const ORDERS: [&str; 4] = [
    r#"{"order_id": 1, "customer_id": 1, "amount": 10, "region": "uk", "email": "a@x"}"#,
    r#"{"order_id": 2, "customer_id": 2, "amount": 20, "region": "uk", "email": "b@x"}"#,
    r#"{"order_id": 3, "customer_id": 1, "amount": 5, "region": "us"}"#,
    r#"{"order_id": 4, "customer_id": 3, "amount": 7, "region": null, "email": "a@x"}"#,
];

/// A project of the fixture with `silver`/`gold` expectations, and its bronze data.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(silver: &str, gold: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("gold")).expect("mkdir");
        for f in ["gold/by_region.sql", "gold/downstream.sql"] {
            std::fs::copy(fixture_dir().join(f), dir.path().join(f)).expect("copy");
        }
        let f = Fixture { dir };
        f.configure(silver, gold);
        f.land("orders", "b1", "2024-03-01T00:00:00+00:00", &ORDERS);
        let customers = [
            r#"{"customer_id": 1, "name": "Ann"}"#,
            r#"{"customer_id": 2, "name": "Bob"}"#,
            r#"{"customer_id": 3, "name": "Cy"}"#,
        ];
        f.land("customers", "c1", "2024-03-01T00:00:00+00:00", &customers);
        f
    }

    fn configure(&self, silver: &str, gold: &str) {
        let text = std::fs::read_to_string(fixture_dir().join("medallion.toml")).expect("read");
        std::fs::write(self.dir.path().join("medallion.toml"), text.replace("SILVER", silver).replace("GOLD", gold))
            .expect("write");
    }

    fn land(&self, source: &str, batch: &str, at: &str, rows: &[&str]) {
        let text: String = rows
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

    async fn run(&self) -> (RunSummary, Project, Lake) {
        let project = Project::load(self.dir.path()).await.expect("project loads");
        let lake = Lake::open(&project.lake, &project.root).expect("lake");
        let s = run(&project, &lake, &RunOptions { threads: 2, now: at("2024-03-02T00:00:00Z"), ..Default::default() })
            .await
            .expect("run");
        (s, project, lake)
    }

    fn log_files(&self, layer: &str, table: &str) -> Vec<String> {
        let dir = self.dir.path().join(format!("lake/{layer}/{table}/_delta_log"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn at(text: &str) -> Now {
    text.parse().expect("timestamp")
}

fn place(on: &str, expectation: &str) -> (String, String) {
    match on {
        "silver" => (expectation.to_string(), String::new()),
        "gold" => (String::new(), expectation.to_string()),
        other => panic!("unknown table `{other}` in cases.toml"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_passes_and_fails_as_declared() {
    for case in cases().case {
        for (expectation, passes) in [(&case.pass, true), (&case.fail, false)] {
            let (silver, gold) = place(&case.on, expectation);
            let f = Fixture::new(&silver, &gold);
            let (s, _, lake) = f.run().await;
            let node = if case.on == "silver" { "silver/orders" } else { "gold/by_region" };
            let result = s
                .expectations()
                .into_iter()
                .find(|(n, e)| n == node && e.name == "c")
                .unwrap_or_else(|| panic!("{expectation}: no result in {:?}", s.failed));
            assert_eq!(result.1.passed(), passes, "{expectation}: {:?}", result.1);
            if passes {
                assert!(s.ok(), "{expectation}: {:?}", s.failed);
                continue;
            }
            // A failed `fail` gate publishes nothing for the table and runs nothing downstream.
            assert_eq!(s.failed.len(), 1, "{expectation}: {:?}", s.failed);
            assert_eq!(s.failed[0].node, node);
            assert!(
                s.failed[0].error.contains("quality gate failed") && s.failed[0].error.contains("`c`"),
                "{}",
                s.failed[0].error
            );
            let (table, layer, skipped) = if case.on == "silver" {
                ("orders", Layer::Silver, vec!["gold/by_region", "gold/downstream"])
            } else {
                ("by_region", Layer::Gold, vec!["gold/downstream"])
            };
            assert_eq!(s.skipped, skipped, "{expectation}");
            assert!(
                !Table::open(&lake, layer, table).await.expect("open").exists(),
                "{expectation}: {layer}/{table} was written"
            );
            assert!(!Table::open(&lake, Layer::Quarantine, table).await.expect("open").exists(), "{expectation}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_gate_on_a_published_table_adds_no_version_and_no_log_file() {
    let f = Fixture::new(r#"{ name = "email_unique", unique = "email", action = "warn" }"#, "");
    let (s, _, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let before: Vec<Vec<String>> =
        [("silver", "orders"), ("quarantine", "orders"), ("gold", "by_region"), ("gold", "downstream")]
            .iter()
            .map(|(l, t)| f.log_files(l, t))
            .collect();
    let version = |layer, name| {
        let lake = lake.clone();
        async move { Table::open(&lake, layer, name).await.expect("open").version() }
    };
    let (silver_v, gold_v) = (version(Layer::Silver, "orders").await, version(Layer::Gold, "by_region").await);

    // Same rule, now `fail`; a new batch brings order 5 with a rejected line and a duplicate email.
    f.configure(r#"{ name = "email_unique", unique = "email", action = "fail" }"#, "");
    f.land(
        "orders",
        "b2",
        "2024-03-01T12:00:00+00:00",
        &[r#"{"order_id": 5, "customer_id": 2, "amount": 1, "email": "b@x"}"#, r#"{"order_id": "x"}"#],
    );
    let (s, _, lake) = f.run().await;
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert!(s.failed[0].error.contains("`email_unique` (4 of 5 rows failed)"), "{}", s.failed[0].error);
    assert_eq!(s.skipped, vec!["gold/by_region".to_string(), "gold/downstream".into()]);
    let after: Vec<Vec<String>> =
        [("silver", "orders"), ("quarantine", "orders"), ("gold", "by_region"), ("gold", "downstream")]
            .iter()
            .map(|(l, t)| f.log_files(l, t))
            .collect();
    assert_eq!(after, before, "no commit may land after a failed gate");
    assert_eq!(Table::open(&lake, Layer::Silver, "orders").await.expect("open").version(), silver_v);
    assert_eq!(Table::open(&lake, Layer::Gold, "by_region").await.expect("open").version(), gold_v);
    // The failure and its sample rows are in the run log's results.
    let failed = &s.failed[0].expectations;
    let unique = failed.iter().find(|e| e.name == "email_unique").expect("result");
    assert_eq!((unique.failing_rows, unique.samples.len()), (4, 3));

    // The event log holds both runs, node by node.
    let project = Project::load(f.dir.path()).await.expect("load");
    let second = s.run_id.clone();
    let events = query(
        &project,
        &lake,
        &format!("SELECT type, coalesce(node, '-'), coalesce(status, '-'), CAST(coalesce(rows_read, -1) AS VARCHAR) FROM medallion.events WHERE run_id = '{second}' ORDER BY seq"),
    )
    .await;
    let row = |c: [&str; 4]| c.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Independent silver tables run concurrently: only the run's edges are ordered.
    assert_eq!(
        (events.first(), events.last()),
        (Some(&row(["run_started", "-", "-", "-1"])), Some(&row(["run_finished", "-", "failed", "0"])))
    );
    let mut sorted = events.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            row(["node_failed", "silver/orders", "failed", "-1"]),
            row(["node_finished", "silver/customers", "up_to_date", "-1"]),
            row(["node_skipped", "gold/by_region", "skipped", "-1"]),
            row(["node_skipped", "gold/downstream", "skipped", "-1"]),
            row(["node_started", "silver/customers", "-", "-1"]),
            row(["node_started", "silver/orders", "-", "-1"]),
            row(["run_finished", "-", "failed", "0"]),
            row(["run_started", "-", "-", "-1"]),
        ]
    );
    let runs = query(&project, &lake, "SELECT count(DISTINCT run_id), min(seq) FROM medallion.events").await;
    assert_eq!(runs, vec![vec!["2".to_string(), "0".into()]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_sends_this_runs_failing_rows_to_quarantine_and_keeps_published_ones() {
    let silver = r#"{ name = "email_unique", unique = "email", action = "drop" },
  { name = "known_customer", relationships = { column = "customer_id", to = "customers" }, action = "drop" }"#;
    let f = Fixture::new(silver, "");
    let (s, project, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = s.silver.iter().find(|p| p.table == "orders").expect("orders");
    // Orders 1 and 4 share a@x: both are this run's rows, both go.
    assert_eq!((p.read, p.inserted, p.superseded, p.rejected), (4, 2, 0, 2));
    let rules = query(
        &project,
        &lake,
        "SELECT _batch_id, _source_file, CAST(_line AS VARCHAR), e['rule'] FROM (SELECT *, unnest(_errors) AS e FROM quarantine.orders) ORDER BY _raw",
    )
    .await;
    assert_eq!(
        rules,
        vec![
            vec!["b1".to_string(), "bronze/orders/2024-03-01/b1.ndjson.gz".into(), "".into(), "email_unique".into()],
            vec!["b1".to_string(), "bronze/orders/2024-03-01/b1.ndjson.gz".into(), "".into(), "email_unique".into()],
        ]
    );
    let raw = query(&project, &lake, "SELECT _raw FROM quarantine.orders ORDER BY _raw").await;
    assert!(
        raw[0][0].starts_with(
            r#"{"order_id":1,"customer_id":1,"amount":10.00,"region":"uk","email":"a@x","_batch_id":"b1""#
        ),
        "{raw:?}"
    );
    assert_eq!(
        query(&project, &lake, "SELECT order_id FROM silver.orders ORDER BY order_id").await,
        vec![vec!["2".to_string()], vec!["3".into()]]
    );

    // Order 5 repeats published b@x and names an unknown customer: both reasons, and only it goes.
    f.land(
        "orders",
        "b2",
        "2024-03-01T12:00:00+00:00",
        &[
            r#"{"order_id": 5, "customer_id": 9, "amount": 1, "email": "b@x"}"#,
            r#"{"order_id": 6, "customer_id": 2, "amount": 2, "email": "c@x"}"#,
        ],
    );
    let (s, project, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = s.silver.iter().find(|p| p.table == "orders").expect("orders");
    assert_eq!((p.read, p.inserted, p.rejected), (2, 1, 1));
    let results: Vec<(String, u64, u64)> =
        p.expectations.iter().map(|e| (e.name.clone(), e.failing_rows, e.dropped)).collect();
    assert_eq!(results, vec![("email_unique".to_string(), 2, 1), ("known_customer".into(), 1, 1)]);
    let reasons = query(&project, &lake, "SELECT e['rule'] FROM (SELECT unnest(_errors) AS e FROM quarantine.orders WHERE _raw LIKE '%\"order_id\":5%') ORDER BY 1").await;
    assert_eq!(reasons, vec![vec!["email_unique".to_string()], vec!["known_customer".into()]]);
    assert_eq!(
        query(&project, &lake, "SELECT order_id FROM silver.orders ORDER BY order_id").await,
        vec![vec!["2".to_string()], vec!["3".into()], vec!["6".into()]]
    );
}

/// Reconciliations with the same table are aggregated together (one read of silver), and each
/// check still gets its own sides: a passing sum, a failing count, a repeated expression, one with
/// its own filter.
#[tokio::test(flavor = "multi_thread")]
async fn reconciliations_with_one_table_each_get_their_own_values() {
    let f = Fixture::new(
        "",
        r#"{ name = "sums", reconcile = { expr = "sum(total)", with = "orders", with_expr = "sum(amount)" }, action = "warn" },
           { name = "again", reconcile = { expr = "sum(total) - 2", with = "orders", with_expr = "sum(amount)" }, action = "warn" },
           { name = "counts", reconcile = { expr = "sum(n)", with = "orders", with_expr = "count(*) + 1" }, action = "warn" },
           { name = "big", reconcile = { expr = "sum(total)", with = "orders", with_expr = "sum(amount)", with_filter = "amount >= 10" }, action = "warn" }"#,
    );
    let (s, project, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let kept = query(
        &project,
        &lake,
        "SELECT expectation, outcome, observed FROM medallion.expectations WHERE node = 'gold/by_region' ORDER BY expectation",
    )
    .await;
    let row = |cells: [&str; 3]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        kept,
        vec![
            row(["again", "warn", "40 vs 42, difference 2"]),
            row(["big", "warn", "42 vs 30, difference 12"]),
            row(["counts", "warn", "4 vs 5, difference 1"]),
            row(["sums", "pass", "42 vs 42, difference 0"]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warn_publishes_and_every_result_is_kept_in_the_lake() {
    let f = Fixture::new(
        r#"{ name = "big", sql = "SELECT * FROM this WHERE amount >= 10", action = "warn" }"#,
        r#"{ name = "sums", reconcile = { expr = "sum(total)", with = "orders", with_expr = "sum(amount)" } }"#,
    );
    let (s, project, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!(query(&project, &lake, "SELECT count(*) FROM silver.orders").await, vec![vec!["4".to_string()]]);
    let kept = query(
        &project,
        &lake,
        "SELECT command, node, expectation, kind, action, outcome, CAST(failing_rows AS VARCHAR), coalesce(observed, '') FROM medallion.expectations ORDER BY node, expectation",
    )
    .await;
    let row = |cells: [&str; 8]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        kept,
        vec![
            row(["run", "gold/by_region", "sums", "reconcile", "fail", "pass", "0", "42 vs 42, difference 0"]),
            row(["run", "silver/orders", "big", "sql", "warn", "warn", "2", ""]),
        ]
    );
    let samples = query(&project, &lake, "SELECT samples FROM medallion.expectations WHERE expectation = 'big'").await;
    assert!(samples[0][0].contains(r#""order_id":1"#) && samples[0][0].contains(r#""order_id":2"#), "{samples:?}");
    // `medallion test` evaluates the same on the published tables and appends its results.
    let outcomes =
        medallion::orchestration::test::test(&lake, &project, &[], at("2024-03-02T00:00:00Z")).await.expect("test");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        query(&project, &lake, "SELECT count(*) FROM medallion.expectations WHERE command = 'test'").await,
        vec![vec!["2".to_string()]]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_expectations_are_validate_errors_on_their_line() {
    for bad in cases().bad {
        let (silver, gold) = place(&bad.on, &bad.expectation);
        let f = Fixture::new(&silver, &gold);
        let text = std::fs::read_to_string(f.dir.path().join("medallion.toml")).expect("read");
        let needle = bad.at.as_deref().unwrap_or(r#"name = "b""#);
        let line = text.lines().position(|l| l.contains(needle)).map(|i| i + 1).expect("needle");
        let err = Project::load(f.dir.path()).await.expect_err(&bad.expectation).to_string();
        let located = err.lines().find(|l| l.contains(&bad.message));
        let located = located.unwrap_or_else(|| panic!("{}: expected `{}` in\n{err}", bad.expectation, bad.message));
        assert!(
            located.trim_start().starts_with(&format!("medallion.toml:{line}: ")),
            "{}: wrong place: {located}",
            bad.expectation
        );
    }
}

/// Issue 16: on a merge, set-level checks are answered from what the merge knows where that is
/// sound (row count from the log plus new keys, uniqueness of the primary key, freshness the
/// run's winners prove), and from the table otherwise; the answers equal a full evaluation.
#[tokio::test(flavor = "multi_thread")]
async fn merge_audits_answer_from_the_log_and_the_winners_as_a_full_evaluation_would() {
    let toml = r#"[project]
name = "audits"

[sources.accounts]

[silver.accounts]
primary_key = ["id"]
order_by = "seq"
columns = [
  { name = "id", type = "int64" },
  { name = "seq", type = "int64" },
  { name = "at", type = "timestamp" },
]
expectations = [
  { name = "ids", unique = "id", action = "fail" },
  { name = "at_most_four", row_count = { max = 4 }, action = "warn" },
  { name = "fresh", freshness = { column = "at", max_age = "30d" }, action = "warn" },
]
"#;
    let now = chrono::Utc::now();
    let at = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    let rec = |id: i64, seq: i64, days: i64| format!(r#"{{"id": {id}, "seq": {seq}, "at": "{}"}}"#, at(days));
    let mut lh = crate::history::Lakehouse::new(toml);
    let result = |s: &RunSummary, name: &str| {
        let e = s.silver[0].expectations.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("{name}"));
        (e.violated, e.observed.clone().unwrap_or_default(), e.rows_checked)
    };
    lh.run_with("accounts", &[rec(1, 1, 0), rec(2, 1, 0), rec(3, 1, 0)]).await;
    // Updates and a new key, all stale: the count is the log's 3 plus 1 new; freshness is not
    // proven by the winners, so the table (id 1, fresh) answers.
    let s = lh.run_with("accounts", &[rec(2, 2, 400), rec(3, 2, 400), rec(4, 1, 400)]).await;
    assert_eq!(result(&s, "at_most_four"), (false, "rows = 4".to_string(), 4));
    assert!(!result(&s, "fresh").0, "{:?}", result(&s, "fresh"));
    assert_eq!(result(&s, "ids"), (false, "by the merge key".to_string(), 4));
    // One more key: five rows, the warning fires; fresh winners prove freshness.
    let s = lh.run_with("accounts", &[rec(5, 1, 0), rec(1, 0, 0)]).await;
    assert_eq!(result(&s, "at_most_four"), (true, "rows = 5".to_string(), 5));
    assert!(!result(&s, "fresh").0);
    // Only stale rows left anywhere: the table says so.
    let s = lh
        .run_with("accounts", &[rec(1, 9, 400), rec(5, 9, 400), rec(2, 9, 400), rec(3, 9, 400), rec(4, 9, 400)])
        .await;
    assert!(result(&s, "fresh").0, "{:?}", result(&s, "fresh"));
    assert!(result(&s, "fresh").1.starts_with("newest "), "{:?}", result(&s, "fresh"));
    let (project, lake) = lh.open().await;
    assert_eq!(query(&project, &lake, "SELECT count(*) FROM silver.accounts").await, vec![vec!["5".to_string()]]);
}

/// A freshness of the order column on a merge whose own rows are stale is answered from the
/// table's newest value (its log's statistics, then the file holding it, to the microsecond)
/// and the winners': the newer of the two, as a scan of the candidate gives it. Replacing the
/// newest row moves it.
#[tokio::test(flavor = "multi_thread")]
async fn freshness_of_the_order_column_takes_the_newer_of_the_table_and_the_winners() {
    let toml = r#"[project]
name = "fresh"

[sources.events]

[silver.events]
primary_key = ["id"]
order_by = "at"
columns = [
  { name = "id", type = "int64" },
  { name = "at", type = "timestamp" },
]
expectations = [
  { name = "fresh", freshness = { column = "at", max_age = "1d" }, action = "warn" },
]
"#;
    let now = chrono::Utc::now();
    let at = |days: i64, micros: i64| now - chrono::Duration::days(days) + chrono::Duration::microseconds(micros);
    let rec = |id: i64, t: chrono::DateTime<chrono::Utc>| {
        format!(r#"{{"id": {id}, "at": "{}"}}"#, t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    let newest =
        |t: chrono::DateTime<chrono::Utc>| format!("newest {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let mut lh = crate::history::Lakehouse::new(toml);
    let fresh = |s: &RunSummary| {
        let e = s.silver[0].expectations.iter().find(|e| e.name == "fresh").expect("fresh");
        (e.violated, e.observed.clone().unwrap_or_default())
    };
    lh.run_with("events", &[rec(1, at(10, 0)), rec(2, at(10, 0)), rec(3, at(3, 123_456))]).await;
    let (project, lake) = lh.open().await;
    let table = Table::open(&lake, Layer::Silver, "events").await.expect("open");
    assert_eq!(table.newest("at").await.expect("newest"), Some(Some(at(3, 123_456).timestamp_micros())));

    // Stale winners (an update, a new key): the newest is still the table's.
    let s = lh.run_with("events", &[rec(2, at(9, 0)), rec(4, at(20, 0))]).await;
    let (violated, observed) = fresh(&s);
    assert!(violated && observed.starts_with(&newest(at(3, 123_456))), "{observed}");
    // The newest row replaced by a newer stale one: the winner is the newest.
    let s = lh.run_with("events", &[rec(3, at(2, 7))]).await;
    let (violated, observed) = fresh(&s);
    assert!(violated && observed.starts_with(&newest(at(2, 7))), "{observed}");
    let table = Table::open(&lake, Layer::Silver, "events").await.expect("open");
    assert_eq!(table.newest("at").await.expect("newest"), Some(Some(at(2, 7).timestamp_micros())));
    // A full evaluation of the published table says the same.
    let outcomes = medallion::orchestration::test::test(&lake, &project, &[], now).await.expect("test");
    let full = outcomes.iter().find(|o| o.result.name == "fresh").expect("fresh");
    assert_eq!(full.result.observed.as_deref(), Some(observed.as_str()));
}

/// `count(DISTINCT key)` of a silver table counts rows only when its log shows the key never null:
/// a table whose key may be null (not `required`) keeps its null-key rows out of the count.
#[tokio::test]
async fn distinct_keys_count_rows_only_when_the_log_shows_no_null_key() {
    let dir = crate::common::Dir::new(
        r#"
[project]
name = "keys"
lake = "./lake"

[sources.s]
format = "ndjson"

[silver.required]
source = "s"
primary_key = ["id"]
order_by = "_ingested_at"
columns = [{ name = "id", type = "int64" }, { name = "v", type = "int64", required = false }]

[silver.optional]
source = "s"
primary_key = ["id"]
order_by = "_ingested_at"
columns = [{ name = "id", type = "int64", required = false }, { name = "v", type = "int64", required = false }]
"#,
    );
    let lines: Vec<String> =
        ["{\"id\": 1, \"v\": 1}", "{\"id\": null, \"v\": 2}", "{\"id\": 2, \"v\": 3}", "{\"id\": 2, \"v\": 4}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    dir.bronze("s", "00000000-0000-4000-8000-000000000001", "2024-03-01T00:00:00Z", &lines);
    dir.run().await;
    let (project, lake) = dir.open().await;
    let required = Table::open(&lake, Layer::Silver, "required").await.expect("open");
    let optional = Table::open(&lake, Layer::Silver, "optional").await.expect("open");
    assert!(required.never_null("id").expect("stats"), "the required key has no null");
    assert!(!optional.never_null("id").expect("stats"), "a null key landed in the optional table");
    let counted = |t: &str| format!("SELECT count(DISTINCT id), count(*) FROM silver.{t}");
    assert_eq!(query(&project, &lake, &counted("required")).await, vec![vec!["2".to_string(), "2".to_string()]]);
    let optional_counts = query(&project, &lake, &counted("optional")).await;
    assert_eq!(optional_counts[0][0], "2", "the null key is not a distinct key: {optional_counts:?}");
}
