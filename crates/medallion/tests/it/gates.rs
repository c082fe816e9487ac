//! Quality gates: row-level expectations with warn / drop / fail, checked before any commit.

use medallion::orchestration::run::{RunSummary, run};
use medallion::project::Project;
use medallion::storage::delta::Table;
use medallion::storage::{Lake, Layer};

use crate::common::{query, write_gz};

const BASE: &str = r#"[project]
name = "gates"

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
columns = [
  { name = "order_id", type = "int64" },
  { name = "amount", type = "decimal(18,2)" },
  { name = "region", type = "string", required = false },
  { name = "email", type = "string", required = false },
]
expectations = [
  { name = "amount_cap", range = { column = "amount", max = 1000, min = 0, min_inclusive = false }, action = "drop" },
  { name = "known_region", accepted_values = { column = "region", values = ["uk", "us"] }, action = "warn" },
  { name = "email_shape", regex = { column = "email", pattern = "^[^@]+@[^@]+$" }, action = "drop" },
  SILVER_FAIL
]

[gold.by_region]
owner = "analytics"
refresh = "daily"
sla = "1d"
expectations = [
  { name = "region_present", not_null = "region", action = "drop" },
  { name = "big_enough", expect = "total > 5", action = "warn" },
  GOLD_FAIL
]

[gold.downstream]
owner = "analytics"
refresh = "daily"
sla = "1d"
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(silver_fail: &str, gold_fail: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let f = Fixture { dir };
        f.write(silver_fail, gold_fail);
        std::fs::create_dir_all(f.dir.path().join("gold")).expect("mkdir");
        std::fs::write(
            f.dir.path().join("gold/by_region.sql"),
            "SELECT region, sum(amount) AS total FROM orders GROUP BY region",
        )
        .expect("w");
        std::fs::write(f.dir.path().join("gold/downstream.sql"), "SELECT count(*) AS n FROM by_region").expect("w");
        let rows = [
            r#"{"order_id": 1, "amount": 10, "region": "uk", "email": "a@b"}"#,
            r#"{"order_id": 2, "amount": 5000, "region": "uk"}"#,
            r#"{"order_id": 3, "amount": 3, "region": "fr", "email": "nope"}"#,
            r#"{"order_id": 4, "amount": 2, "region": null}"#,
            r#"{"order_id": 5, "amount": 4, "region": "us"}"#,
        ];
        let text: String = rows
            .iter()
            .map(|r| format!("{}, \"_batch_id\": \"b1\", \"_ingested_at\": \"2024-03-01T00:00:00+00:00\", \"_source\": \"orders\"}}\n", &r[..r.len() - 1]))
            .collect();
        write_gz(&f.dir.path().join("lake/bronze/orders/2024-03-01/b1.ndjson.gz"), text.as_bytes());
        f
    }

    fn write(&self, silver_fail: &str, gold_fail: &str) {
        let text = BASE.replace("SILVER_FAIL", silver_fail).replace("GOLD_FAIL", gold_fail);
        std::fs::write(self.dir.path().join("medallion.toml"), text).expect("write");
    }

    async fn run(&self) -> (RunSummary, Project, Lake) {
        let project = Project::load(self.dir.path()).await.expect("project loads");
        let lake = Lake::open(&project.lake, &project.root).expect("lake");
        let s = run(&project, &lake, &Default::default()).await.expect("run");
        (s, project, lake)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn warn_publishes_and_records_drop_quarantines_with_the_expectation_name() {
    let f = Fixture::new("", "");
    let (s, project, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = &s.silver[0];
    let results: Vec<(String, u64, u64)> =
        p.expectations.iter().map(|e| (e.name.clone(), e.rows_checked, e.failing_rows)).collect();
    assert_eq!(results, vec![("amount_cap".into(), 5, 1), ("known_region".into(), 5, 1), ("email_shape".into(), 5, 1)]);
    assert_eq!((p.read, p.inserted, p.rejected), (5, 3, 2));
    let dead = query(
        &project,
        &lake,
        "SELECT l, e['rule'] AS rule FROM (SELECT _line AS l, unnest(_errors) AS e FROM quarantine.orders) ORDER BY l",
    )
    .await;
    assert_eq!(dead, vec![vec!["2".to_string(), "amount_cap".into()], vec!["3".into(), "email_shape".into()]]);
    // `fr` only warned: still published. The null region reaches gold, where it is dropped.
    let silver = query(&project, &lake, "SELECT order_id FROM silver.orders ORDER BY order_id").await;
    assert_eq!(silver, vec![vec!["1".to_string()], vec!["4".into()], vec!["5".into()]]);
    let g = &s.gold.iter().find(|b| b.model == "by_region").expect("built");
    assert_eq!(g.dropped, 1);
    // Writing the dropped rows is a stage of the build of its own.
    assert!(g.timings_ms.contains_key(&medallion::runtime::NodeStage::DeadLetter), "{:?}", g.timings_ms);
    assert_eq!(g.expectations.iter().map(|e| e.failing_rows).collect::<Vec<_>>(), vec![1, 2]);
    let gold = query(&project, &lake, "SELECT region FROM gold.by_region ORDER BY region").await;
    assert_eq!(gold, vec![vec!["uk".to_string()], vec!["us".into()]]);
    let gold_dead = query(
        &project,
        &lake,
        "SELECT _raw, e['rule'] FROM (SELECT _raw, unnest(_errors) AS e FROM quarantine.by_region)",
    )
    .await;
    assert_eq!(gold_dead, vec![vec!["{\"region\":null,\"total\":2.00}".to_string(), "region_present".into()]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_silver_gate_publishes_nothing_and_the_fixed_rule_retries_the_same_batches() {
    let f = Fixture::new(r#"{ name = "small_ids", expect = "order_id < 5" }"#, "");
    let (s, project, lake) = f.run().await;
    assert_eq!(s.failed.len(), 1);
    assert!(
        s.failed[0].error.contains("quality gate failed for silver/orders: `small_ids` (1 of 5 rows failed)"),
        "{}",
        s.failed[0].error
    );
    assert_eq!(s.skipped, vec!["gold/by_region".to_string(), "gold/downstream".into()]);
    for layer in [Layer::Silver, Layer::Quarantine] {
        assert!(!Table::open(&lake, layer, "orders").await.expect("open").exists(), "{layer} must not be written");
    }
    drop(project);
    // Fix the rule: the batch, still pending (no intent was recorded), is promoted by the next run.
    f.write(r#"{ name = "small_ids", expect = "order_id < 50" }"#, "");
    let (s, project, lake) = f.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert!(!s.silver[0].resumed);
    assert_eq!(s.silver[0].batches, 1);
    assert_eq!(query(&project, &lake, "SELECT count(*) FROM silver.orders").await, vec![vec!["3".to_string()]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_gold_gate_keeps_the_published_version_and_stops_dependents() {
    let f = Fixture::new("", "");
    let (s, _, lake) = f.run().await;
    assert!(s.ok());
    let before = Table::open(&lake, Layer::Gold, "by_region").await.expect("open").version();
    f.write("", r#"{ name = "tiny_totals", expect = "total < 5", action = "fail" }"#);
    let (s, _, lake) = f.run().await;
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert!(s.failed[0].error.contains("gold/by_region: `tiny_totals` (1 of 3 rows failed)"), "{}", s.failed[0].error);
    assert_eq!(s.skipped, vec!["gold/downstream".to_string()]);
    assert_eq!(Table::open(&lake, Layer::Gold, "by_region").await.expect("open").version(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_expectations_are_validate_errors_with_lines() {
    let f = Fixture::new(
        r#"{ name = "typo", expect = "amout > 0" },
  { name = "two_kinds", not_null = "amount", expect = "true" },"#,
        r#"{ name = "not_bool", expect = "total + 1" }"#,
    );
    let line_of = |needle: &str| {
        let text = std::fs::read_to_string(f.dir.path().join("medallion.toml")).expect("read");
        text.lines().position(|l| l.contains(needle)).map(|i| i + 1).expect("needle")
    };
    let text = Project::load(f.dir.path()).await.expect_err("invalid").to_string();
    let typo = format!(
        "medallion.toml:{}: silver table `orders`, expectations: expectation `typo`: column 'amout' not found (hint: possible column amount)",
        line_of("\"typo\"")
    );
    let two = format!(
        "medallion.toml:{}: silver table `orders`, expectations: expectation `two_kinds`: give exactly one of",
        line_of("\"two_kinds\"")
    );
    assert!(text.contains(&typo) && text.contains(&two), "{text}");
    // Gold models are planned once silver is valid.
    f.write("", r#"{ name = "not_bool", expect = "total + 1" }"#);
    let text = Project::load(f.dir.path()).await.expect_err("invalid").to_string();
    let not_bool = format!(
        "medallion.toml:{}: gold model `by_region`, expectations: expectation `not_bool`: must be a boolean expression",
        line_of("\"not_bool\"")
    );
    assert!(text.contains(&not_bool), "{text}");
}
