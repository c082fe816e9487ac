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

#[tokio::test(flavor = "multi_thread")]
async fn a_line_cut_when_it_was_landed_lands_again_whole_once_the_file_grows() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            ("medallion.toml", "[project]\nname = \"cut\"\n\n[sources.events]\npaths = [\"landing/events.ndjson\"]\n"),
            (
                "silver/events.toml",
                "primary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"name\", type = \"string\" },\n]\n",
            ),
            // A writer paused in the middle of its second line.
            ("landing/events.ndjson", "{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"na"),
        ],
    );
    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert_eq!((s.totals.read, s.totals.promoted, s.totals.rejected), (2, 1, 1), "{:?}", s.totals);
    // The writer finishes the line and adds one: the cut line lands whole, then the new one.
    let path = dir.path().join("landing/events.ndjson");
    let grown = std::fs::read_to_string(&path).expect("read") + "me\": \"b\"}\n{\"id\": 3, \"name\": \"c\"}\n";
    std::fs::write(&path, grown).expect("append");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert_eq!((s.totals.read, s.totals.promoted, s.totals.rejected), (2, 2, 0), "{:?}", s.totals);
    let note = s.ingested.iter().find_map(|i| i.note.clone()).unwrap_or_default();
    assert!(note.contains("its last line was cut when it was landed"), "{note}");
    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let rows = ctx.sql("SELECT name FROM events ORDER BY id").await.expect("plan").collect().await.expect("run");
    assert_eq!(rows.iter().flat_map(|b| strings(b.column(0))).collect::<Vec<_>>(), ["a", "b", "c"]);
    // A landed last line that was a whole object is not landed again.
    let grown = std::fs::read_to_string(&path).expect("read") + "{\"id\": 4, \"name\": \"d\"}";
    std::fs::write(&path, grown).expect("append");
    run(&project, &lake, &Default::default()).await.expect("run");
    let grown = std::fs::read_to_string(&path).expect("read") + "\n{\"id\": 5, \"name\": \"e\"}\n";
    std::fs::write(&path, grown).expect("append");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert_eq!((s.totals.read, s.totals.promoted, s.totals.superseded), (1, 1, 0), "{:?}", s.totals);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_row_cut_when_it_was_landed_is_replaced_by_the_whole_row() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            (
                "medallion.toml",
                "[project]\nname = \"cut\"\n\n[sources.people]\nformat = \"csv\"\npaths = [\"people.csv\"]\n",
            ),
            (
                "silver/people.toml",
                "primary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"name\", type = \"string\" },\n]\n",
            ),
            ("people.csv", "id,name\n1,Ada\n2,Bo"),
        ],
    );
    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    run(&project, &lake, &Default::default()).await.expect("run");
    let path = dir.path().join("people.csv");
    std::fs::write(&path, "id,name\n1,Ada\n2,Bob\n3,Cy\n").expect("append");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert_eq!((s.totals.read, s.totals.promoted, s.totals.rejected), (2, 2, 0), "{:?}", s.totals);
    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let rows = ctx.sql("SELECT name FROM people ORDER BY id").await.expect("plan").collect().await.expect("run");
    assert_eq!(rows.iter().flat_map(|b| strings(b.column(0))).collect::<Vec<_>>(), ["Ada", "Bob", "Cy"]);
}

/// Issue 19: a Parquet source lands its rows (typed values, nulls, nested columns) with
/// provenance; a gold model with `outputs = ["parquet"]` is also one plain Parquet file holding
/// the table's rows and version, rewritten only when the table changes, and redone when missing.
#[tokio::test(flavor = "multi_thread")]
async fn parquet_in_and_parquet_out() {
    use std::sync::Arc;

    use medallion::arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Int64Array, ListArray, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use medallion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};

    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            (
                "medallion.toml",
                "[project]\nname = \"pq\"\n\n[sources.sales]\nformat = \"parquet\"\npaths = [\"landing/*.parquet\"]\n\n[silver.sales]\nprimary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"amount\", type = \"decimal(10,2)\" },\n  { name = \"day\", type = \"date\" },\n  { name = \"at\", type = \"timestamp\" },\n  { name = \"paid\", type = \"bool\", required = false },\n  { name = \"note\", type = \"string\", required = false },\n]\n\n[gold.by_day]\noutputs = [\"parquet\"]\n",
            ),
            (
                "gold/by_day.sql",
                "SELECT day, count(*) AS n, sum(amount) AS total, max(note) AS note FROM sales GROUP BY day",
            ),
        ],
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("paid", DataType::Boolean, true),
        Field::new("note", DataType::Utf8, true),
        Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(
                Decimal128Array::from(vec![Some(1250), Some(999), None]).with_precision_and_scale(10, 2).expect("dec"),
            ),
            Arc::new(Date32Array::from(vec![19_723, 19_723, 19_724])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    1_704_067_200_000_000,
                    1_704_067_260_000_000,
                    1_704_153_600_000_000,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(StringArray::from(vec![Some("a \"quoted\" note"), None, Some("ünï")])),
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
        ],
    )
    .expect("batch");
    std::fs::create_dir_all(dir.path().join("landing")).expect("mkdir");
    let file = std::fs::File::create(dir.path().join("landing/sales-1.parquet")).expect("create");
    let mut w = medallion::parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    std::fs::write(dir.path().join("landing/broken.parquet"), b"PAR1 not really").expect("broken");

    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!((s.totals.read, s.totals.promoted, s.totals.rejected), (3, 2, 1), "amount null is required");
    let broken = s.ingested.iter().find(|i| i.input.contains("broken")).expect("broken listed");
    assert!(broken.note.as_deref().unwrap_or_default().contains("is not a readable Parquet file"), "{broken:?}");
    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let rows = ctx
        .sql("SELECT id, CAST(amount AS VARCHAR), CAST(day AS VARCHAR), CAST(at AS VARCHAR), CAST(paid AS VARCHAR), note FROM sales ORDER BY id")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let cells: Vec<Vec<String>> = (0..6).map(|c| strings(rows[0].column(c))).collect();
    assert_eq!(cells[1], vec!["12.50", "9.99"]);
    assert_eq!(cells[2], vec!["2024-01-01", "2024-01-01"]);
    assert_eq!(cells[3][0], "2024-01-01T00:00:00Z");
    assert_eq!(cells[5], vec!["a \"quoted\" note", ""], "a null string reads as null");

    // The export: the table's rows, its version in the footer.
    let export = dir.path().join("lake/exports/by_day.parquet");
    let read_export = || {
        let f = std::fs::File::open(&export).expect("exported");
        let r = medallion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).expect("parquet");
        let version = r
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == "medallion.delta_version").and_then(|k| k.value.clone()));
        let rows: usize = r.build().expect("reader").map(|b| b.expect("batch").num_rows()).sum();
        (rows, version)
    };
    assert_eq!(read_export(), (1, Some("0".to_string())));
    let modified = std::fs::metadata(&export).expect("meta").modified().expect("mtime");
    // Up to date: not rewritten.
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert!(s.ok() && !s.gold[0].rebuilt, "{:?}", s.gold);
    assert_eq!(std::fs::metadata(&export).expect("meta").modified().expect("mtime"), modified);
    // Missing (an export that failed after its commit): redone by the next run.
    std::fs::remove_file(&export).expect("rm");
    run(&project, &lake, &Default::default()).await.expect("run");
    assert_eq!(read_export(), (1, Some("0".to_string())));
    // A new day: a new version, a new export, and no staging file left beside it.
    let more = RecordBatch::try_new(batch.schema(), batch.columns().to_vec()).expect("batch").slice(2, 1);
    let more = RecordBatch::try_new(
        more.schema(),
        more.columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 1 {
                    Arc::new(Decimal128Array::from(vec![Some(500)]).with_precision_and_scale(10, 2).expect("dec")) as _
                } else {
                    Arc::clone(c)
                }
            })
            .collect(),
    )
    .expect("batch");
    let file = std::fs::File::create(dir.path().join("landing/sales-2.parquet")).expect("create");
    let mut w = medallion::parquet::arrow::ArrowWriter::try_new(file, more.schema(), None).expect("writer");
    w.write(&more).expect("write");
    w.close().expect("close");
    let s = run(&project, &lake, &Default::default()).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!(read_export(), (2, Some("1".to_string())));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("lake/exports"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["by_day.parquet"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn landing_files_land_in_parallel_each_content_once_and_in_their_order() {
    let dir = tempfile::tempdir().expect("tmp");
    // Six files, a.csv and d.csv (and f.csv) with the same bytes; latest ingest wins the dedup.
    let same = "id,name\n1,first\n";
    write(
        dir.path(),
        &[
            (
                "medallion.toml",
                "[project]\nname = \"p\"\n\n[sources.people]\nformat = \"csv\"\npaths = [\"in/*.csv\"]\n",
            ),
            (
                "silver/people.toml",
                "primary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"name\", type = \"string\" },\n]\n",
            ),
            ("in/a.csv", same),
            ("in/b.csv", "id,name\n1,second\n2,x\n"),
            ("in/c.csv", "id,name\n1,third\n"),
            ("in/d.csv", same),
            ("in/e.csv", "id,name\n2,y\n"),
            ("in/f.csv", same),
        ],
    );
    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let opts = medallion::orchestration::run::RunOptions { threads: 3, now: now(), ..Default::default() };
    let s = run(&project, &lake, &opts).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    let got: Vec<(&str, String)> = s.ingested.iter().map(|i| (i.input.as_str(), format!("{:?}", i.status))).collect();
    let want = ["Ingested", "Ingested", "Ingested", "AlreadyIngested", "Ingested", "AlreadyIngested"];
    assert_eq!(got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(), want, "{got:?}");
    assert!(got.iter().map(|g| g.0).eq(["in/a.csv", "in/b.csv", "in/c.csv", "in/d.csv", "in/e.csv", "in/f.csv"]));
    let batch = |i: usize| s.ingested[i].batch_id.clone();
    assert_eq!((batch(3), batch(5)), (batch(0), batch(0)), "a repeat names the batch of its first copy");
    assert_eq!(s.totals.read, 5);
    // Ingest times follow the files' order, whichever landing finished first: c.csv's row wins.
    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let b = ctx.sql("SELECT name FROM people ORDER BY id").await.expect("plan").collect().await.expect("run");
    assert_eq!(b.iter().flat_map(|b| strings(b.column(0))).collect::<Vec<_>>(), vec!["third", "y"]);
}

/// Issue 20: a CSV file lands as its own text (UTF-8), its provenance and dialect in the gzip
/// header; the same content pushed later, or landed as NDJSON by a push first, lands once.
/// Silver's provenance and the dead letter's record are what the NDJSON landing gave.
#[tokio::test(flavor = "multi_thread")]
async fn a_csv_file_lands_as_its_text_once_whichever_way_its_content_came() {
    use std::io::Read;

    use medallion::bronze::csv_batch::CsvBatch;
    use medallion::bronze::ingest::{IngestStatus, ingest_group};

    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[(
            "medallion.toml",
            "[project]\nname = \"p\"\n\n[sources.people]\nformat = \"csv\"\ndelimiter = \";\"\nencoding = \"windows-1252\"\n\n[silver.people]\nprimary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"name\", type = \"string\" },\n]\n",
        )],
    );
    let project = Project::load(dir.path()).await.expect("project loads");
    let lake = Lake::open(&project.lake, &project.root).expect("lake");
    let read = project.sources["people"].read.clone();
    let a = b"id;name\r\n1;Zo\xeb\r\nx;bad\r\n".to_vec();
    let landed = ingest(&lake, "people", read.clone(), "a.csv", a.clone(), now()).await.expect("csv");
    assert_eq!((landed.status.clone(), landed.records), (IngestStatus::Ingested, 2));
    assert!(landed.path.ends_with(&format!("{}.csv.gz", landed.batch_id)), "{}", landed.path);
    let gz = std::fs::read(dir.path().join("lake").join(&landed.path)).expect("batch");
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).expect("plain gzip");
    assert_eq!(text, "id;name\r\n1;Zoë\r\nx;bad\r\n");
    let described = CsvBatch::from_gzip(&gz).expect("described");
    assert_eq!((described.batch_id.as_str(), described.source.as_str()), (landed.batch_id.as_str(), "people"));
    assert_eq!(described.dialect.delimiter, ';');
    let pushed = ingest_group(&lake, "people", &read, "push", vec![a.into()], now()).await.expect("push");
    assert_eq!(
        (pushed[0].status.clone(), pushed[0].path.clone()),
        (IngestStatus::AlreadyIngested, landed.path.clone())
    );
    // Pushed first (NDJSON), then the same content as a file: landed already.
    let b = b"id;name\r\n2;Bo\r\n".to_vec();
    let pushed = ingest_group(&lake, "people", &read, "push", vec![b.clone().into()], now()).await.expect("push");
    assert!(pushed[0].path.ends_with(".ndjson.gz"), "{}", pushed[0].path);
    let again = ingest(&lake, "people", read, "b.csv", b, now()).await.expect("csv");
    assert_eq!((again.status, again.path), (IngestStatus::AlreadyIngested, pushed[0].path.clone()));

    let s = run(&project, &lake, &Default::default()).await.expect("run");
    let t = &s.totals;
    assert_eq!((t.read, t.promoted, t.rejected), (3, 2, 1), "{t:?}");
    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let q = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let rows = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
            rows.iter().flat_map(|b| (0..b.num_columns()).flat_map(|c| strings(b.column(c)))).collect::<Vec<_>>()
        }
    };
    let silver = q("SELECT name, _batch_id, _source, CAST(_ingested_at AS VARCHAR) FROM people WHERE id = 1").await;
    assert_eq!(silver[..3], ["Zoë".to_string(), landed.batch_id.clone(), "people".into()]);
    // The header's time to the second (the cast drops trailing zeros of the fraction).
    assert!(silver[3].replace(' ', "T").starts_with(&described.ingested_at[..19]), "{}", silver[3]);
    let dead = q("SELECT CAST(_line AS VARCHAR), _raw FROM quarantine.people").await;
    assert_eq!(dead[0], "3");
    let raw: serde_json::Value = serde_json::from_str(&dead[1]).expect("raw is JSON");
    assert_eq!(raw["id"], "x");
    assert_eq!(raw["_line"], 3);
    assert_eq!(raw["_batch_id"], landed.batch_id.as_str());
    assert_eq!(raw["_ingested_at"], described.ingested_at.as_str());
}
