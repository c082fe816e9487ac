//! Other source formats and a project spread over several files.

use medallion::bronze::ingest::ingest;
use medallion::orchestration::run::run;
use medallion::project::Project;
use medallion::runtime::now;
use medallion::spec::SourceFormat;
use medallion::storage::Lake;

use crate::common::strings;

fn write(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_and_json_sources_with_tables_in_their_own_files() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            (
                "medallion.toml",
                "[project]\nname = \"split\"\n\n[sources.people]\nformat = \"csv\"\n\n[sources.visits]\nformat = \"json\"\n",
            ),
            (
                "silver/people.toml",
                "primary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"name\", type = \"string\", transform = \"trim(name)\" },\n  { name = \"active\", type = \"bool\" },\n  { name = \"joined\", type = \"date\", required = false },\n]\n",
            ),
            (
                "silver/visits.toml",
                "primary_key = [\"visit_id\"]\norder_by = \"seen_at\"\ncolumns = [\n  { name = \"visit_id\", type = \"int64\" },\n  { name = \"person_id\", type = \"int64\" },\n  { name = \"seen_at\", type = \"timestamp\" },\n]\nchecks = [\"visit_id <> person_id\"]\n",
            ),
            ("gold/visits_per_person.toml", "owner = \"web\"\nrefresh = \"on_run\"\nsla = \"30m\"\n"),
            (
                "gold/visits_per_person.sql",
                "SELECT p.name, count(v.visit_id) AS visits FROM {{ ref('people') }} p LEFT JOIN visits v ON v.person_id = p.id GROUP BY p.name",
            ),
        ],
    );
    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let t = now();
    let people =
        "id,name,active,joined\n1, Ada ,yes,2024-01-02\n2,Bob,0,\nx,Bad,maybe,2024-13-01\n3,Cy,true,2024-02-03,extra\n";
    let p = ingest(&lake, "people", SourceFormat::Csv, "people.csv", people.as_bytes().to_vec(), t).await.expect("csv");
    assert_eq!((p.records, p.corrupt), (4, 0));
    // Visit 11 is sent twice: the later `seen_at` wins even though it comes first.
    let visits = r#"[{"visit_id": 10, "person_id": 1, "seen_at": "2024-03-01T10:00:00Z"},
        {"visit_id": 11, "person_id": 1, "seen_at": "2024-03-02T10:00:00+02:00"},
        {"visit_id": 11, "person_id": 2, "seen_at": "2024-03-01T10:00:00Z"},
        {"visit_id": 12, "person_id": 12, "seen_at": "2024-03-01T10:00:00Z"},
        "not an object"]"#;
    let v =
        ingest(&lake, "visits", SourceFormat::Json, "visits.json", visits.as_bytes().to_vec(), t).await.expect("json");
    assert_eq!((v.records, v.corrupt), (5, 1));

    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    let t = &s.totals;
    assert_eq!((t.read, t.promoted, t.superseded, t.rejected), (9, 5, 1, 3));

    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let names = ctx.sql("SELECT name FROM people ORDER BY id").await.expect("plan").collect().await.expect("run");
    assert_eq!(strings(names[0].column(0)), vec!["Ada", "Bob", "Cy"]);
    let owner =
        ctx.sql("SELECT person_id FROM visits WHERE visit_id = 11").await.expect("plan").collect().await.expect("run");
    assert_eq!(strings(owner[0].column(0)), vec!["1"]);
    let gold = ctx
        .sql("SELECT name, visits FROM gold.visits_per_person ORDER BY name")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    assert_eq!(strings(gold[0].column(0)), vec!["Ada", "Bob", "Cy"]);
    assert_eq!(strings(gold[0].column(1)), vec!["2", "0", "0"]);
    let rules = ctx
        .sql("SELECT _source, array_to_string(array_sort(array_agg(e['rule'])), ',') FROM (SELECT _source, unnest(_errors) AS e FROM quarantine.people UNION ALL SELECT _source, unnest(_errors) AS e FROM quarantine.visits) GROUP BY _source ORDER BY _source")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    assert_eq!(strings(rules[0].column(0)), vec!["people", "visits"]);
    assert_eq!(strings(rules[0].column(1)), vec!["type,type,type", "corrupt_record,visit_id <> person_id"]);
}
