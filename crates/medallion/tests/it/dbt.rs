//! dbt-style gold models: `config(materialized='incremental')` with `is_incremental()` and
//! `{{ this }}`, keyed (delete+insert) and appending, macros from `macros/*.sql`, `--vars`.

use medallion::orchestration::run::{RunOptions, run};
use medallion::project::Project;

use crate::history::Lakehouse;

const PROJECT: &str = r#"[project]
name = "dbt_style"
owner = "analytics"
vars = { min_cents = 0 }

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
columns = [
  { name = "order_id", type = "int64" },
  { name = "cents", type = "int64" },
  { name = "region", type = "string" },
]

[gold.latest]
expectations = [{ name = "one_per_order", unique = ["order_id"] }]

[gold.versions]

[gold.by_region]
"#;

/// Keyed: each run adds the orders ingested since the last build and replaces their old rows.
const LATEST: &str = "{{ config(materialized='incremental', unique_key='order_id') }}
SELECT order_id, {{ dollars('cents') }} AS amount, region, _ingested_at
FROM {{ ref('orders') }}
WHERE cents >= {{ var('min_cents') }}
{% if is_incremental() %}
  AND _ingested_at > (SELECT max(_ingested_at) FROM {{ this }})
{% endif %}";

/// Keyless: every version of every order, appended.
const VERSIONS: &str = "{{ config(materialized='incremental') }}
SELECT order_id, cents, _ingested_at FROM {{ ref('orders') }}
{% if is_incremental() %}WHERE _ingested_at > (SELECT coalesce(max(_ingested_at), TIMESTAMP '1970-01-01') FROM {{ this }}){% endif %}";

const BY_REGION: &str = "{{ config(materialized='view') }}
SELECT region, count(*) AS n, sum(amount) AS amount FROM {{ ref('latest') }} GROUP BY region";

const MACROS: &str = "{% macro dollars(col) -%}
{{ col }} / 100
{%- endmacro %}
";

fn order(id: u32, cents: u32, region: &str) -> String {
    format!(r#"{{"order_id": {id}, "cents": {cents}, "region": "{region}"}}"#)
}

fn lakehouse() -> Lakehouse {
    lakehouse_with(PROJECT)
}

fn lakehouse_with(project: &str) -> Lakehouse {
    let lh = Lakehouse::new(project);
    let root = lh.dir.path();
    for (file, text) in [
        ("gold/latest.sql", LATEST),
        ("gold/versions.sql", VERSIONS),
        ("gold/by_region.sql", BY_REGION),
        ("macros/money.sql", MACROS),
    ] {
        std::fs::create_dir_all(root.join(file).parent().expect("parent")).expect("mkdir");
        std::fs::write(root.join(file), text).expect("write");
    }
    lh
}

const LATEST_ROWS: &str = "SELECT order_id, CAST(amount AS VARCHAR), region FROM gold.latest ORDER BY 1";
const FROM_SILVER: &str =
    "SELECT order_id, CAST(CAST(cents AS DOUBLE) / 100 AS VARCHAR), region FROM silver.orders ORDER BY 1";

#[tokio::test(flavor = "multi_thread")]
async fn a_dbt_incremental_model_adds_only_new_rows_and_equals_a_full_refresh() {
    let mut lh = lakehouse();
    let first = lh.run_with("orders", &[order(1, 100, "uk"), order(2, 250, "us"), order(3, 999, "uk")]).await;
    let status = |s: &medallion::orchestration::run::RunSummary, m: &str| {
        let b = s.gold.iter().find(|b| b.model == m).unwrap_or_else(|| panic!("{m} built"));
        (b.rebuilt, b.added, b.rows)
    };
    assert_eq!(status(&first, "latest"), (true, None, 3), "the first build is full");
    assert_eq!(lh.rows(LATEST_ROWS).await, lh.rows(FROM_SILVER).await);
    // Order 2 changes, order 4 is new: two rows computed, order 2's old row replaced.
    let second = lh.run_with("orders", &[order(2, 300, "us"), order(4, 5, "us")]).await;
    assert_eq!(status(&second, "latest"), (true, Some(2), 4));
    assert_eq!(status(&second, "versions"), (true, Some(2), 5), "the keyless model appends");
    // Order 2's old row went with the one file holding it, rewritten; the table was not.
    let (_, lake) = lh.open().await;
    let latest = medallion::storage::delta::Table::open(&lake, medallion::storage::Layer::Gold, "latest").await;
    let info = latest.expect("open").last_commit_info().await.expect("info");
    let metric =
        |name: &str| info.get("operationMetrics").and_then(|m| m.get(name)).and_then(serde_json::Value::as_i64);
    let changed =
        ["num_target_rows_deleted", "num_target_rows_inserted", "num_target_files_removed", "num_target_files_added"];
    assert_eq!(changed.map(metric), [Some(1), Some(2), Some(1), Some(2)], "{info:?}");
    assert_eq!(lh.rows(LATEST_ROWS).await, lh.rows(FROM_SILVER).await);
    assert_eq!(lh.rows("SELECT * FROM gold.by_region ORDER BY region").await, vec!["uk 2 10.99", "us 2 3.05"]);
    // Nothing new: up to date, nothing written.
    let third = lh.run().await;
    assert_eq!(status(&third, "latest"), (false, None, 4));
    // The same key twice in one build (dbt inserts both); here silver is latest-per-key, so once.
    let fourth = lh.run_with("orders", &[order(4, 7, "uk"), order(4, 8, "uk"), order(5, 1, "uk")]).await;
    assert_eq!(status(&fourth, "latest"), (true, Some(2), 5));
    let incremental = lh.rows(LATEST_ROWS).await;
    assert_eq!(incremental, lh.rows(FROM_SILVER).await);
    assert_eq!(
        lh.rows("SELECT count(*), count(DISTINCT order_id) FROM gold.versions").await,
        vec!["7 5"],
        "every version appended once"
    );
    // A full refresh computes the same table from scratch.
    let (project, lake) = lh.open().await;
    let opts = RunOptions { threads: 2, now: medallion::runtime::now(), full_refresh: true, ..Default::default() };
    let s = run(&project, &lake, &opts).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!(status(&s, "latest"), (true, None, 5));
    assert_eq!(lh.rows(LATEST_ROWS).await, incremental);
    // A changed SQL rebuilds in full rather than adding rows computed another way.
    let edited = LATEST.replace("AS amount", "AS amount /* edited */");
    std::fs::write(lh.dir.path().join("gold/latest.sql"), edited).expect("write");
    let s = lh.run_with("orders", &[order(6, 1, "us")]).await;
    assert_eq!(status(&s, "latest"), (true, None, 6));
}

async fn latest(lh: &Lakehouse) -> medallion::storage::delta::Table {
    let (_, lake) = lh.open().await;
    medallion::storage::delta::Table::open(&lake, medallion::storage::Layer::Gold, "latest").await.expect("open")
}

/// `merge = "deletion_vectors"`: a keyed build marks the replaced rows instead of rewriting the
/// files holding them; a switch back to copy-on-write purges the vectors, and the rows stay those
/// of silver throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_incremental_model_may_mark_replaced_rows_in_deletion_vectors() {
    let marked = PROJECT.replace("[gold.latest]\n", "[gold.latest]\nmerge = \"deletion_vectors\"\n");
    let mut lh = lakehouse_with(&marked);
    lh.run_with("orders", &[order(1, 100, "uk"), order(2, 250, "us"), order(3, 999, "uk")]).await;
    lh.run_with("orders", &[order(2, 300, "us"), order(4, 5, "us")]).await;
    assert_eq!(lh.rows(LATEST_ROWS).await, lh.rows(FROM_SILVER).await);
    let (_, lake) = lh.open().await;
    // The build's commit (the run's maintenance then purged a share of deleted rows this large).
    let table = medallion::storage::delta::Table::open_as_of(
        &lake,
        medallion::storage::Layer::Gold,
        "latest",
        medallion::storage::delta::AsOf::Version(1),
    )
    .await
    .expect("open");
    assert!(table.deletion_vectors().expect("config"));
    assert_eq!(table.deleted_rows().expect("vectors").0, 1, "order 2's old row, marked");
    let info = table.last_commit_info().await.expect("info");
    let copied =
        info.get("operationMetrics").and_then(|m| m.get("num_target_rows_copied")).and_then(serde_json::Value::as_i64);
    assert_eq!(copied, Some(0), "no row rewritten: {info:?}");
    // Back to copy-on-write (a full build: the project changed): the vectors go, and the next
    // keyed build rewrites the files holding its keys again.
    std::fs::write(lh.dir.path().join("medallion.toml"), PROJECT).expect("write");
    lh.run_with("orders", &[order(3, 1000, "uk")]).await;
    assert_eq!(lh.rows(LATEST_ROWS).await, lh.rows(FROM_SILVER).await);
    let table = latest(&lh).await;
    assert!(!table.deletion_vectors().expect("config"));
    lh.run_with("orders", &[order(1, 7, "us")]).await;
    assert_eq!(lh.rows(LATEST_ROWS).await, lh.rows(FROM_SILVER).await);
    let table = latest(&lh).await;
    assert_eq!(table.deleted_rows().expect("vectors").0, 0);
    let info = table.last_commit_info().await.expect("info");
    let rewritten = info
        .get("operationMetrics")
        .and_then(|m| m.get("num_target_files_removed"))
        .and_then(serde_json::Value::as_i64);
    assert_eq!(rewritten, Some(1), "{info:?}");
    // On a model that replaces no rows (`versions` appends), `merge` is a mistake `validate` names.
    let appending = PROJECT.replace("[gold.versions]\n", "[gold.versions]\nmerge = \"deletion_vectors\"\n");
    std::fs::write(lh.dir.path().join("medallion.toml"), appending).expect("write");
    let err = Project::load(lh.dir.path()).await.expect_err("invalid").to_string();
    assert!(err.contains("medallion.toml:20: gold model `versions`: merge: only a keyed incremental model"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_incremental_build_runs_expectations_on_the_table_it_leaves() {
    let mut lh = lakehouse();
    lh.run_with("orders", &[order(1, 100, "uk")]).await;
    // An incremental query that forgets to filter on {{ this }}: every row comes again and the
    // keyed replace keeps one per order; without a key the table would double.
    let sloppy = LATEST.replace("AND _ingested_at >", "OR _ingested_at >");
    std::fs::write(lh.dir.path().join("gold/latest.sql"), &sloppy).expect("write");
    lh.run().await; // the changed SQL: a full build
    let s = lh.run_with("orders", &[order(2, 5, "us")]).await;
    let b = s.gold.iter().find(|b| b.model == "latest").expect("latest");
    assert_eq!((b.added, b.rows), (Some(2), 2));
    let unique = b.expectations.iter().find(|e| e.name == "one_per_order").expect("checked");
    assert!(unique.passed(), "{unique:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vars_override_the_project_and_dbt_errors_point_at_their_file_and_line() {
    let lh = lakehouse();
    let vars = medallion::spec::vars_from_yaml("{min_cents: 200}").expect("yaml");
    let project = Project::load_with_vars(lh.dir.path(), vars).await.expect("loads");
    assert!(project.gold["latest"].sql.contains("cents >= 200"), "{}", project.gold["latest"].sql);
    assert!(project.gold["latest"].refs == vec!["orders".to_string()], "{:?}", project.gold["latest"].refs);
    let q = project.gold["latest"].incremental_query.as_ref().expect("incremental");
    assert_eq!(q.unique_key, vec!["order_id".to_string()]);

    let root = lh.dir.path();
    std::fs::write(root.join("macros/broken.sql"), "\n{% macro x() %}{{ 1 + }}{% endmacro %}\n").expect("write");
    std::fs::write(
        root.join("gold/versions.sql"),
        VERSIONS.replace("materialized='incremental'", "materialized='snapshot'"),
    )
    .expect("write");
    let problems = match Project::load(root).await {
        Err(medallion::Error::InvalidProject(d)) => d,
        other => panic!("expected problems, got {other:?}"),
    };
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    // Both problems in one pass, each at its file and line; the broken macro file is one problem.
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("macros/broken.sql:2: macros: unexpected end of variable block"), "{lines:#?}");
    assert!(lines[1].starts_with("gold/versions.sql:1: gold model `versions`: template error: config(materialized='snapshot') is not supported"), "{lines:#?}");
}
