//! OpenLineage settings and delivery as a run sees them (the events' conformance to the spec's
//! schemas is checked by tests/lineage/run.sh with the published JSON schemas).

use medallion::orchestration::run::{RunOptions, run};
use medallion::project::Project;
use medallion::storage::Lake;

use crate::common::write_gz;

const PROJECT: &str = r#"[project]
name = "lin"

LINEAGE

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
columns = [
  { name = "order_id", type = "int64" },
  { name = "amount", type = "decimal(18,2)", checks = ["amount > 0"] },
]
"#;

fn project(lineage: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("medallion.toml"), PROJECT.replace("LINEAGE", lineage)).expect("write");
    let rows: String = (0..20)
        .map(|i| format!("{{\"order_id\": {i}, \"amount\": {}, \"_batch_id\": \"b1\", \"_ingested_at\": \"2024-03-01T10:00:00+00:00\", \"_source\": \"orders\"}}\n", i % 5))
        .collect();
    write_gz(&dir.path().join("lake/bronze/orders/2024-03-01/b1.ndjson.gz"), rows.as_bytes());
    dir
}

#[tokio::test]
async fn bad_lineage_settings_are_reported_with_their_line() {
    let cases = [
        ("[lineage]\nnamespace = \"x\"", "medallion.toml:4: [lineage]: needs `file`"),
        ("[lineage]\nurl = \"ftp://host/x\"", "scheme `ftp` is not http or https"),
        ("[lineage]\nurl = \"not a url\"", "url `not a url`: relative URL without a base"),
        ("[lineage]\nfile = \"l.jsonl\"\ntimeout = \"soon\"", "[lineage]: timeout:"),
        ("[lineage]\nfile = \"l.jsonl\"\napi_key = \"${UNCLOSED\"", "api_key: unterminated"),
        ("[lineage]\nfiel = \"l.jsonl\"", "unknown field `fiel`"),
    ];
    for (text, expected) in cases {
        let dir = project(text);
        let err = Project::load(dir.path()).await.expect_err(text).to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unset_api_key_variable_stops_the_run_before_it_writes() {
    let dir = project("[lineage]\nurl = \"http://127.0.0.1:9\"\napi_key = \"${MEDALLION_TEST_NEVER_SET}\"");
    let project = Project::load(dir.path()).await.expect("loads: the variable is only needed to run");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let err = run(&project, &lake, &RunOptions::default()).await.expect_err("no key").to_string();
    assert!(err.contains("environment variable `MEDALLION_TEST_NEVER_SET` is not set"), "{err}");
    assert!(!dir.path().join("lake/silver").exists(), "nothing promoted");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_backend_is_reported_but_never_fails_the_run() {
    // Port 9 (discard) on loopback: nothing listens, connections are refused.
    let dir = project("[lineage]\nfile = \"out/events.jsonl\"\nurl = \"http://127.0.0.1:9\"\ntimeout = \"1s\"");
    let project = Project::load(dir.path()).await.expect("loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let summary = run(&project, &lake, &RunOptions::default()).await.expect("run");
    assert!(summary.ok());
    assert_eq!((summary.totals.read, summary.totals.rejected), (20, 4));
    let report = summary.lineage.expect("lineage report");
    let lines = std::fs::read_to_string(dir.path().join("out/events.jsonl")).expect("file written");
    // Run START/COMPLETE + silver/orders START/COMPLETE, all in the file, none delivered.
    assert_eq!((report.events, lines.lines().count()), (4, 4));
    assert_eq!(report.failed, 4, "{report:?}");
    assert!(
        report.error.as_deref().is_some_and(|e| e.contains("POST http://127.0.0.1:9/api/v1/lineage")),
        "{report:?}"
    );
    let complete: serde_json::Value = serde_json::from_str(lines.lines().nth(2).expect("3rd")).expect("json");
    assert_eq!(
        (complete["eventType"].as_str(), complete["job"]["name"].as_str()),
        (Some("COMPLETE"), Some("lin.silver.orders"))
    );
    let quarantine = &complete["outputs"][1];
    assert_eq!(quarantine["outputFacets"]["outputStatistics"]["rowCount"], 4);
}
