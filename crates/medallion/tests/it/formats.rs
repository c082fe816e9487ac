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

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_landing_file_that_grows_lands_its_new_rows_under_its_header() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            (
                "medallion.toml",
                "[project]\nname = \"seeds\"\n\n[sources.people]\nformat = \"csv\"\nskip_rows = 1\npaths = [\"seeds/people.csv\", \"seeds/later.csv.gz\"]\n",
            ),
            (
                "silver/people.toml",
                "primary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"name\", type = \"string\" },\n]\n",
            ),
            ("seeds/people.csv", "exported 2024-03-01\nname,id\nAda,1\nBob,2\n"),
        ],
    );
    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let names = |lake: Lake, project: Project| async move {
        let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
        let b = ctx.sql("SELECT name FROM people ORDER BY id").await.expect("plan").collect().await.expect("run");
        b.iter().flat_map(|b| strings(b.column(0))).collect::<Vec<_>>()
    };
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert_eq!((s.ok(), s.totals.promoted), (true, 2), "{:?}", s.failed);
    // Rows appended (the columns in the header's order, not the contract's): only they land.
    let path = dir.path().join("seeds/people.csv");
    let grown = std::fs::read_to_string(&path).expect("read") + "Cy,3\nBob,2\n";
    std::fs::write(&path, grown).expect("append");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!((s.totals.read, s.totals.promoted, s.totals.rejected), (2, 2, 0), "{:?}", s.totals);
    let note = s.ingested.iter().find_map(|i| i.note.clone()).unwrap_or_default();
    assert!(note.contains("its new rows landed after its header"), "{note}");
    assert_eq!(s.ingested.iter().map(|i| i.records).sum::<u64>(), 2);
    assert_eq!(names(lake.clone(), project.clone()).await, vec!["Ada", "Bob", "Cy"]);
    // A gzip file that grows is not cut in the middle of its stream: skipped, with why.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"x\nname,id\nDee,4\n").expect("gz");
    let gz = gz.finish().expect("gz");
    std::fs::write(dir.path().join("seeds/later.csv.gz"), &gz).expect("gz");
    run(&project, &lake, &Default::default()).await.expect("run");
    std::fs::write(dir.path().join("seeds/later.csv.gz"), [gz.as_slice(), b"Eve,5\n"].concat()).expect("grow");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    let skipped = s.ingested.iter().filter_map(|i| i.note.clone()).collect::<Vec<_>>().join("; ");
    assert!(skipped.contains("a gzip file is landed whole"), "{:?}", s.ingested);
    assert_eq!(names(lake, project).await, vec!["Ada", "Bob", "Cy", "Dee"]);
}
