//! Contracts that change (issue 15): what the table records, what evolves in place, what is
//! refused or rebuilt, rebuilds equal to a fresh lake, and null markers with CSV dialects.

use std::collections::BTreeSet;

use medallion::Error;
use medallion::bronze::ingest::ingest;
use medallion::orchestration::run::RunOptions;
use medallion::silver::evolve::{self, Change, Verdict};
use medallion::storage::Layer;
use medallion::storage::delta::{AsOf, Table};

use crate::common::{Dir, copy_bronze, query, sample, write_gz};

/// Lands the sample's batches in `d`'s bronze.
fn land(d: &Dir, batches: &[medallion::sample::SampleBatch]) {
    for b in batches {
        let path = d.dir.path().join(format!("lake/bronze/orders/{}/{}.ndjson.gz", b.date, b.batch_id));
        write_gz(&path, b.bronze_ndjson("orders").as_bytes());
    }
}

/// A nullable column computed from another, and a gold model reading it.
fn add_channel(d: &Dir) {
    d.edit(
        "  { name = \"source\",      type = \"string\" },\n]",
        "  { name = \"source\",      type = \"string\" },\n  { name = \"channel\",     type = \"string\", required = false, transform = \"upper(source)\" },\n]",
    );
    let text = std::fs::read_to_string(d.dir.path().join("medallion.toml")).expect("read");
    d.configure(&format!("{text}\n[gold.by_channel]\nowner = \"analytics\"\nrefresh = \"daily\"\nsla = \"6h\"\n"));
    std::fs::write(
        d.dir.path().join("gold/by_channel.sql"),
        "SELECT channel, count(*) AS orders FROM {{ ref('orders') }} GROUP BY channel",
    )
    .expect("write model");
}

/// Every table of a lake, every column, in a form two lakes compare by (times and run ids out).
async fn tables(d: &Dir) -> Vec<(String, Vec<Vec<String>>)> {
    let queries = [
        // By name: a column added in place stands last in the table, in contract order in a fresh one.
        "SELECT order_id, customer_id, amount, currency, order_date, region, source, channel, _batch_id, _source, \
         CAST(_ingested_at AS VARCHAR) AS at FROM silver.orders ORDER BY order_id",
        "SELECT customer_id, name, tier, CAST(updated_at AS VARCHAR) AS u, CAST(valid_from AS VARCHAR) AS vf, \
         CAST(valid_to AS VARCHAR) AS vt, is_current, _sk FROM silver.dim_customers ORDER BY _sk",
        "SELECT _batch_id, _line, _raw, e['rule'], e['column'], e['message'] FROM (SELECT _batch_id, _line, _raw, unnest(_errors) AS e FROM quarantine.orders) ORDER BY 1, 2, 4, 5",
        "SELECT * FROM gold.daily_revenue ORDER BY order_date, region, currency",
        "SELECT * FROM gold.revenue_by_tier ORDER BY 1, 2",
        "SELECT * FROM gold.by_channel ORDER BY channel",
    ];
    let (project, lake) = d.open().await;
    let mut out = Vec::new();
    for q in queries {
        out.push((q.to_string(), query(&project, &lake, q).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_added_column_evolves_in_place_and_a_rebuild_equals_a_fresh_lake() {
    let d = Dir::example();
    let (batches, _) = sample(2_000, 4, 23);
    land(&d, &batches[..3]);
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let before = d.version(Layer::Silver, "orders").await.expect("silver written");

    add_channel(&d);
    let (project, lake) = d.open().await;
    let silver = Table::open(&lake, Layer::Silver, "orders").await.expect("open");
    let orders = &project.silver["orders"];
    let changes = evolve::changes(orders, &silver).await.expect("compare");
    assert_eq!(
        changes,
        vec![Change::AddedColumn { column: "channel".into(), ty: "string".into(), required: false }],
        "the table knows its contract"
    );
    assert_eq!(changes[0].describe(), "added column channel (string, nullable)");
    assert!(matches!(evolve::assess(orders, &silver).await.expect("assess"), Verdict::Evolve(_)));

    // The next run adds the column in place: old rows null, new rows carry it; gold reads it.
    land(&d, &batches[3..]);
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = s.silver.iter().find(|p| p.table == "orders").expect("orders promoted");
    assert_eq!(p.contract_changes, vec!["added column channel (string, nullable)".to_string()]);
    assert!(!p.rebuilt);
    let split = d.rows("SELECT channel IS NULL, count(*) > 0 FROM silver.orders GROUP BY 1 ORDER BY 1").await;
    assert_eq!(split, vec![vec!["false".to_string(), "true".into()], vec!["true".into(), "true".into()]]);
    assert!(!d.rows("SELECT * FROM gold.by_channel").await.is_empty());

    // The rebuild recomputes silver (and its dead letter) from bronze, then gold downstream.
    // Small slices: the rebuild resolves the table a part at a time, as a large one would.
    let opts =
        RunOptions { rebuild: BTreeSet::from(["orders".to_string()]), slice_bytes: 8 << 10, ..Default::default() };
    let rebuilt = d.run_with(opts).await;
    assert!(rebuilt.ok(), "{:?}", rebuilt.failed);
    let p = rebuilt.silver.iter().find(|p| p.table == "orders").expect("orders rebuilt");
    assert!(p.rebuilt && p.batches == 4 && p.slices > 4, "{p:?}");
    assert_eq!(p.read, p.promoted() + p.superseded + p.rejected, "accounting holds over the rebuild");
    assert_eq!(d.rows("SELECT count(*) FROM silver.orders WHERE channel IS NULL").await, vec![vec!["0".to_string()]]);
    assert!(rebuilt.gold.iter().all(|b| b.rebuilt && b.partitions.is_none()), "gold rebuilt from scratch");

    // A fresh lake over the same bronze with the new contract holds the same tables.
    let fresh = Dir::example();
    add_channel(&fresh);
    copy_bronze(d.dir.path(), fresh.dir.path());
    let s = fresh.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    for ((q, a), (_, b)) in tables(&d).await.into_iter().zip(tables(&fresh).await) {
        assert_eq!(a, b, "{q}");
    }

    // Time travel still reaches the table as the old contract wrote it.
    let (_, lake) = d.open().await;
    let old = Table::open_as_of(&lake, Layer::Silver, "orders", AsOf::Version(before)).await.expect("as of");
    let schema = old.arrow_schema().expect("schema").expect("exists");
    assert!(schema.field_with_name("channel").is_err(), "version {before} has no channel");

    // The next run promotes only what landed after the rebuild.
    let (more, _) = sample(500, 1, 99);
    land(&d, &more);
    let s = d.run().await;
    let p = s.silver.iter().find(|p| p.table == "orders").expect("promoted");
    assert_eq!((p.batches, p.rebuilt, p.read), (1, false, more[0].records.len() as u64), "{p:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_change_is_refused_until_rebuilt_or_rebuilds_by_policy() {
    let d = Dir::example();
    let (batches, _) = sample(1_000, 2, 5);
    land(&d, &batches);
    assert!(d.run().await.ok());
    let version = d.version(Layer::Silver, "orders").await;

    d.edit("type = \"decimal(18,2)\"", "type = \"decimal(20,2)\"");
    let (more, _) = sample(200, 1, 6);
    land(&d, &more);
    let s = d.run().await;
    let failure = s.failed.iter().find(|f| f.node == "silver/orders").expect("silver/orders refused");
    assert!(failure.error.contains("type of amount: decimal(18,2) → decimal(20,2)"), "{}", failure.error);
    assert!(failure.error.contains("medallion rebuild orders"), "{}", failure.error);
    assert_eq!(d.version(Layer::Silver, "orders").await, version, "nothing was written");
    assert!(s.skipped.contains(&"gold/daily_revenue".to_string()), "{:?}", s.skipped);

    // The rebuild policy takes the change by recomputing the table.
    d.edit("order_by = \"_ingested_at\"\n", "order_by = \"_ingested_at\"\non_contract_change = \"rebuild\"\n");
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = s.silver.iter().find(|p| p.table == "orders").expect("orders");
    assert!(p.rebuilt && p.batches == 3, "{p:?}");
    assert!(p.contract_changes.iter().any(|c| c.contains("decimal(20,2)")), "{:?}", p.contract_changes);
    let (_, lake) = d.open().await;
    let schema =
        Table::open(&lake, Layer::Silver, "orders").await.expect("open").arrow_schema().expect("s").expect("e");
    assert_eq!(schema.field_with_name("amount").expect("amount").data_type().to_string(), "Decimal128(20, 2)");
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_that_published_rows_break_are_refused_and_replay_works_after_an_added_column() {
    let d = Dir::example();
    let (batches, _) = sample(1_500, 2, 31);
    land(&d, &batches);
    let s = d.run().await;
    assert!(s.ok() && s.totals.rejected > 0, "{:?}", s.totals);

    // A stricter check that published rows fail: refused, with how many rows.
    d.edit("checks = [\"amount > 0\"]", "checks = [\"amount > 100000\"]");
    let (project, lake) = d.open().await;
    let silver = Table::open(&lake, Layer::Silver, "orders").await.expect("open");
    match evolve::assess(&project.silver["orders"], &silver).await.expect("assess") {
        Verdict::Refuse(changes) => {
            let text: Vec<String> = changes.iter().map(Change::describe).collect();
            assert!(text.iter().any(|c| c.contains("already published fail the new rules")), "{text:?}");
        }
        v => panic!("expected a refusal, got {v:?}"),
    }
    let replayed = d.try_replay(None, false).await;
    assert!(matches!(replayed, Err(Error::ContractChanged { .. })), "{replayed:?}");

    // A relaxed check: let in (published rows pass it) and recorded, so it is checked once.
    d.edit("checks = [\"amount > 100000\"]", "checks = [\"amount >= 0\"]");
    d.edit("revenue > 0 AND min_amount > 0", "revenue >= 0 AND min_amount >= 0");
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    // Nothing was pending: the run reports the change it let in, as a promotion of no batch.
    let [p] = s.silver.as_slice() else { panic!("one report: {:?}", s.silver) };
    assert_eq!((p.table.as_str(), p.batches, p.read), ("orders", 0, 0), "{p:?}");
    assert!(p.contract_changes.iter().any(|c| c.starts_with("checks of amount")), "{p:?}");
    assert!(p.added_columns.is_empty(), "{p:?}");
    // `amount > 0` is gone: records it rejected may pass, and the dead letter holds some.
    assert!(p.waiting_in_dead_letter.is_some_and(|n| n > 0), "{p:?}");
    let (project, lake) = d.open().await;
    let silver = Table::open(&lake, Layer::Silver, "orders").await.expect("open");
    assert_eq!(evolve::assess(&project.silver["orders"], &silver).await.expect("assess"), Verdict::Unchanged);
    // Which rule changes may let rejected records in: a dropped check, an optional column, a new
    // null marker; not a check added, a column made required or a marker removed.
    for (from, to, relaxes) in [
        ("checks = [\"amount >= 0\"]", "checks = [\"amount >= 0\", \"amount < 1e9\"]", false),
        ("checks = [\"amount >= 0\"]", "checks = []", true),
        (
            "{ name = \"region\",      type = \"string\" }",
            "{ name = \"region\", type = \"string\", required = false }",
            true,
        ),
        (
            "{ name = \"region\",      type = \"string\" }",
            "{ name = \"region\", type = \"string\", null_values = [\"n/a\"] }",
            true,
        ),
    ] {
        let before = std::fs::read_to_string(d.dir.path().join("medallion.toml")).expect("read");
        d.edit(from, to);
        let (project, _) = d.open().await;
        let changes = evolve::changes(&project.silver["orders"], &silver).await.expect("compare");
        assert!(!changes.is_empty() && changes.iter().all(|c| c.relaxes() == relaxes), "{to}: {changes:?}");
        d.configure(&before);
    }
    // And an added column: the replay promotes what now passes into the evolved table.
    add_channel(&d);
    let r = d.replay(None, false).await;
    assert!(r.promoted() > 0, "{r:?}");
    assert_eq!(r.selected, r.promoted() + r.superseded + r.rejected + r.dropped, "{r:?}");
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert!(d.rows("SELECT count(*) FROM silver.orders WHERE channel IS NOT NULL").await[0][0] != "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn null_markers_and_csv_dialects_land_nulls_where_configured() {
    let d = Dir::new(
        "[project]\nname = \"csv\"\n\n[sources.readings]\nformat = \"csv\"\ndelimiter = \";\"\nencoding = \"windows-1252\"\nskip_rows = 1\nnull_values = [\"NA\", \"NULL\"]\n\n[silver.readings]\nprimary_key = [\"id\"]\ncolumns = [\n  { name = \"id\", type = \"int64\" },\n  { name = \"station\", type = \"string\" },\n  { name = \"value\", type = \"float64\", required = false },\n  { name = \"day\", type = \"date\", required = false },\n  { name = \"count\", type = \"int64\", required = false, null_values = [] },\n]\n",
    );
    let (project, lake) = d.open().await;
    let source = &project.sources["readings"];
    // A title line, a header, then rows; `Café` in Windows-1252; NA, NULL and empty cells.
    let mut csv = b"exported by station software\nid;station;value;day;count\n".to_vec();
    csv.extend_from_slice(
        b"1;Caf\xe9;1.5;2024-03-01;3\n2;B;NA;NULL;4\n3;C;;NA;5\n4;D;2.0;2024-03-02;NA\n5;E;x;2024-03-03;6\n",
    );
    let out = ingest(&lake, "readings", source.read.clone(), "readings.csv", csv, medallion::runtime::now())
        .await
        .expect("ingest");
    assert_eq!((out.records, out.corrupt), (5, 0));
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let t = &s.totals;
    assert_eq!((t.read, t.promoted, t.rejected), (5, 3, 2), "NA is null where configured, rejected where not");
    assert_eq!(t.read, t.promoted + t.superseded + t.rejected);
    let rows = d
        .rows("SELECT id, station, CAST(value AS VARCHAR), CAST(day AS VARCHAR) FROM silver.readings ORDER BY id")
        .await;
    let null = || "".to_string();
    assert_eq!(
        rows,
        vec![
            vec!["1".to_string(), "Café".into(), "1.5".into(), "2024-03-01".into()],
            vec!["2".to_string(), "B".into(), null(), null()],
            vec!["3".to_string(), "C".into(), null(), null()],
        ]
    );
    // Dead-letter lines are the file's lines: title 1, header 2, rows from 3.
    let dead = d
        .rows("SELECT _line, e['column'], e['rule'] FROM (SELECT _line, unnest(_errors) AS e FROM quarantine.readings) ORDER BY _line")
        .await;
    assert_eq!(
        dead,
        vec![
            vec!["6".to_string(), "count".into(), "type".into()],
            vec!["7".to_string(), "value".into(), "type".into()]
        ]
    );
}

/// Bugs found on the same path (issue 15, item 7).
#[tokio::test(flavor = "multi_thread")]
async fn gold_expectations_compare_silver_strings_and_a_model_without_inputs_builds() {
    let d = Dir::example();
    let (batches, _) = sample(300, 1, 3);
    land(&d, &batches);
    // A row-level expectation comparing a string column read from silver (Utf8View at run time)
    // with a literal (Utf8 when planned).
    d.edit(
        "  { name = \"has_days\", row_count = { min = 1 }, action = \"fail\" },",
        "  { name = \"has_days\", row_count = { min = 1 }, action = \"fail\" },\n  { name = \"known_region\", expect = \"region <> 'nowhere'\", action = \"fail\" },",
    );
    let text = std::fs::read_to_string(d.dir.path().join("medallion.toml")).expect("read");
    d.configure(&format!("{text}\n[gold.calendar]\nowner = \"analytics\"\nrefresh = \"daily\"\nsla = \"1d\"\n"));
    std::fs::write(d.dir.path().join("gold/calendar.sql"), "SELECT 1 AS id, 'static' AS kind").expect("write");
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let calendar = s.gold.iter().find(|b| b.model == "calendar").expect("calendar built");
    assert!(calendar.rebuilt && !calendar.waiting && calendar.rows == 1, "{calendar:?}");
    let known = s.expectations().into_iter().find(|(_, e)| e.name == "known_region").expect("evaluated");
    assert_eq!(known.1.failing_rows, 0);
}

/// A new partitioning is a change that needs a rebuild; the rebuild lays the table out anew.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_applies_a_new_partitioning() {
    let d = Dir::example();
    let (batches, _) = sample(600, 2, 41);
    land(&d, &batches);
    assert!(d.run().await.ok());
    let before = d.rows("SELECT count(*), CAST(sum(amount) AS VARCHAR) FROM silver.orders").await;
    d.edit("order_by = \"_ingested_at\"\n", "order_by = \"_ingested_at\"\npartition_by = [\"region\"]\n");
    let s = d.run().await;
    let failure = s.failed.iter().find(|f| f.node == "silver/orders").expect("refused");
    assert!(failure.error.contains("partition_by: [] → [region]"), "{}", failure.error);
    let s = d.run_with(RunOptions { rebuild: BTreeSet::from(["orders".to_string()]), ..Default::default() }).await;
    assert!(s.ok(), "{:?}", s.failed);
    let dirs: Vec<String> = std::fs::read_dir(d.dir.path().join("lake/silver/orders"))
        .expect("table dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("region="))
        .collect();
    assert!(!dirs.is_empty(), "partitioned by region after the rebuild");
    assert_eq!(d.rows("SELECT count(*), CAST(sum(amount) AS VARCHAR) FROM silver.orders").await, before);
    assert!(d.run().await.ok(), "the next run sees no change");
}

/// A rebuild that resolves its table in slices and drops rows by a set-level expectation gives
/// what a fresh lake gives: the same rows, and the same rows in the dead letter with the same
/// reasons (contract rejects and dropped rows alike).
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_in_slices_drops_and_rejects_what_a_fresh_lake_does() {
    let d = Dir::example();
    let (batches, _) = sample(3_000, 5, 41);
    land(&d, &batches);
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);

    // A stricter `drop` rule: the rebuild judges every published row again.
    let stricter = |d: &Dir| {
        d.edit("min = \"2000-01-01\"", "min = \"2024-02-15\"");
        d.edit(
            "{ name = \"order_id_unique\", unique = \"order_id\", action = \"fail\" },",
            "{ name = \"order_id_unique\", unique = \"order_id\", action = \"fail\" },\n  \
             { name = \"one_order_per_customer\", unique = \"customer_id\", action = \"drop\" },",
        );
    };
    stricter(&d);
    let opts =
        RunOptions { rebuild: BTreeSet::from(["orders".to_string()]), slice_bytes: 4 << 10, ..Default::default() };
    let s = d.run_with(opts).await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = s.silver.iter().find(|p| p.table == "orders").expect("orders rebuilt");
    assert!(p.slices > 8, "{p:?}");
    let rule = p.expectations.iter().find(|e| e.name == "order_date_plausible").expect("rule ran");
    assert!(rule.failing_rows > 100, "{rule:?}");
    // Duplicates of a non-key column span slices: the set-level rule sees the whole new table.
    let set = p.expectations.iter().find(|e| e.name == "one_order_per_customer").expect("set rule ran");
    assert!(set.dropped > 0, "{set:?}");
    assert_eq!(p.read, p.promoted() + p.superseded + p.rejected, "accounting holds over the rebuild");

    let fresh = Dir::example();
    stricter(&fresh);
    copy_bronze(d.dir.path(), fresh.dir.path());
    let s = fresh.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let f = s.silver.iter().find(|p| p.table == "orders").expect("orders promoted");
    assert_eq!((f.inserted, f.superseded, f.rejected), (p.inserted, p.superseded, p.rejected));
    for q in [
        "SELECT order_id, customer_id, amount, currency, order_date, region, source, _batch_id FROM silver.orders ORDER BY order_id",
        "SELECT _batch_id, _line, _raw, e['rule'], e['column'], e['message'] FROM (SELECT _batch_id, _line, _raw, unnest(_errors) AS e FROM quarantine.orders) ORDER BY 1, 2, 3, 4, 5",
        "SELECT * FROM gold.daily_revenue ORDER BY order_date, region, currency",
    ] {
        assert_eq!(d.rows(q).await, fresh.rows(q).await, "{q}");
    }
    assert!(d.rows("SELECT 1 FROM quarantine.orders WHERE _raw LIKE '%2024-01-%' LIMIT 1").await.len() == 1);
}

/// Issue 22: Delta stores an empty partition value as null, so an empty string in a string
/// partition column is read as null (or rejected when the column is required), and every reader
/// sees the same value: the log's partition values hold null, never "".
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_string_in_a_partition_column_is_null_for_every_reader() {
    let d = Dir::example();
    d.edit("order_by = \"_ingested_at\"\n", "order_by = \"_ingested_at\"\npartition_by = [\"region\", \"source\"]\n");
    // region may be null, source may not (columns are required by default).
    d.edit(
        "{ name = \"region\",      type = \"string\" }",
        "{ name = \"region\", type = \"string\", required = false }",
    );
    let provenance = r#""_batch_id": "b1", "_ingested_at": "2026-12-01T00:00:00.000000+00:00", "_source": "orders""#;
    let record = |id: u32, region: &str, source: &str| {
        format!(
            r#"{{"order_id": {id}, "customer_id": 7, "amount": 10.5, "currency": "USD", "order_date": "2024-03-09", "region": "{region}", "source": "{source}", {provenance}}}"#
        )
    };
    let text = [record(1, "", "web"), record(2, "eu", "web"), record(3, "eu", "")].join("\n") + "\n";
    write_gz(&d.dir.path().join("lake/bronze/orders/2026-12-01/b1.ndjson.gz"), text.as_bytes());
    let s = d.run().await;
    let p = s.silver.iter().find(|p| p.table == "orders").expect("promoted");
    assert_eq!((p.read, p.inserted, p.rejected), (3, 2, 1), "{p:?}");
    assert_eq!(
        d.rows("SELECT order_id, region IS NULL FROM silver.orders ORDER BY order_id").await,
        vec![vec!["1".to_string(), "true".into()], vec!["2".into(), "false".into()]]
    );
    assert_eq!(
        d.rows("SELECT e['rule'], e['column'] FROM (SELECT unnest(_errors) AS e FROM quarantine.orders)").await,
        vec![vec!["required".to_string(), "source".into()]]
    );
    let log = std::fs::read_dir(d.dir.path().join("lake/silver/orders/_delta_log")).expect("log");
    for entry in log.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")) {
        let text = std::fs::read_to_string(entry.path()).expect("commit");
        assert!(!text.contains(r#""region":"""#), "an empty partition value in {}", entry.path().display());
    }
}

/// A `json` column keeps a value as its JSON text where a `string` column keeps only strings:
/// the same raw text reads otherwise (`"web"` quoted), so changing one to the other on a published
/// table is a contract change that needs a rebuild, though both are text to Delta.
#[tokio::test(flavor = "multi_thread")]
async fn a_string_column_turned_json_needs_a_rebuild() {
    let d = Dir::example();
    let record = r#"{"order_id": 1, "customer_id": 7, "amount": 10.5, "currency": "USD", "order_date": "2024-03-09", "region": "eu", "source": "web", "_batch_id": "b1", "_ingested_at": "2026-12-01T00:00:00.000000+00:00", "_source": "orders"}"#;
    write_gz(&d.dir.path().join("lake/bronze/orders/2026-12-01/b1.ndjson.gz"), format!("{record}\n").as_bytes());
    let s = d.run().await;
    assert_eq!(s.silver.iter().map(|p| p.inserted).sum::<u64>(), 1);
    d.edit("{ name = \"source\",      type = \"string\"", "{ name = \"source\",      type = \"json\"");
    let (project, lake) = d.open().await;
    let silver = Table::open(&lake, Layer::Silver, "orders").await.expect("open");
    let changes = evolve::changes(&project.silver["orders"], &silver).await.expect("compare");
    let described: Vec<String> = changes.iter().map(Change::describe).collect();
    assert_eq!(described, vec!["type of source: string → json"]);
    assert!(matches!(changes[0], Change::Rule { acceptance: false, .. }), "a rule change: {changes:?}");
}

/// Issue 17: a contract column can be read from a differently named raw field (dbt staging's
/// `id as order_id`); changing the field later is a contract change; two columns cannot read one
/// field.
#[tokio::test(flavor = "multi_thread")]
async fn a_column_can_be_read_from_a_differently_named_field() {
    let d = Dir::example();
    d.edit("{ name = \"order_id\",    type = \"int64\" }", "{ name = \"order_id\", from = \"id\", type = \"int64\" }");
    let provenance = r#""_batch_id": "b1", "_ingested_at": "2026-12-01T00:00:00.000000+00:00", "_source": "orders""#;
    let record = |id: &str| {
        format!(
            r#"{{"id": {id}, "customer_id": 7, "amount": 10.5, "currency": "USD", "order_date": "2024-03-09", "region": "eu", "source": "web", {provenance}}}"#
        )
    };
    let text = [record("1"), record("2"), record("\"x\"")].join("\n") + "\n";
    write_gz(&d.dir.path().join("lake/bronze/orders/2026-12-01/b1.ndjson.gz"), text.as_bytes());
    let s = d.run().await;
    let p = s.silver.iter().find(|p| p.table == "orders").expect("promoted");
    assert_eq!((p.read, p.inserted, p.rejected), (3, 2, 1), "{p:?}");
    assert_eq!(
        d.rows("SELECT order_id FROM silver.orders ORDER BY 1").await,
        vec![vec!["1".to_string()], vec!["2".into()]]
    );
    assert_eq!(
        d.rows("SELECT e['rule'], e['column'] FROM (SELECT unnest(_errors) AS e FROM quarantine.orders)").await,
        vec![vec!["type".to_string(), "order_id".into()]],
        "reasons name the contract column"
    );

    // Reading another field changes what the rows mean: refused until rebuilt.
    d.edit("from = \"id\"", "from = \"oid\"");
    let (project, lake) = d.open().await;
    let silver = Table::open(&lake, Layer::Silver, "orders").await.expect("open");
    let changes = evolve::changes(&project.silver["orders"], &silver).await.expect("compare");
    assert_eq!(changes.iter().map(Change::describe).collect::<Vec<_>>(), vec!["field of order_id: `id` → `oid`"]);

    // Two columns reading one field: a validate error.
    d.edit(
        "{ name = \"customer_id\", type = \"int64\" }",
        "{ name = \"customer_id\", from = \"oid\", type = \"int64\" }",
    );
    let err = medallion::project::Project::load(d.dir.path()).await.expect_err("invalid").to_string();
    assert!(err.contains("field `oid` is already read by another column"), "{err}");
}

/// A `json` column is read inside by SQL wherever a project writes SQL: a column's check, a row
/// expectation, a gold model (`->>`, `json_extract`, `json_array_length`; an array's elements made
/// rows by a wildcard and `unnest`, and kept as a list column) and a query.
#[tokio::test(flavor = "multi_thread")]
async fn json_columns_are_read_inside_by_checks_expectations_and_gold() {
    let d = Dir::new(
        r#"
[project]
name = "j"
lake = "./lake"

[sources.api]
format = "ndjson"

[silver.tickets]
source = "api"
primary_key = ["id"]
columns = [
  { name = "id", type = "int64" },
  { name = "items", type = "json", checks = ["json_array_length(items) <= 2"] },
]
expectations = [{ name = "has_items", expect = "json_array_length(items) > 0", action = "drop" }]

[gold.first_items]
sql = "gold/first_items.sql"
expectations = [{ name = "counted", expect = "json_array_length(items) = n", action = "fail" }]

[gold.lines]
sql = "gold/lines.sql"
expectations = [{ name = "one_of_its_skus", expect = "array_has(skus, sku)", action = "fail" }]
"#,
    );
    std::fs::create_dir_all(d.dir.path().join("gold")).expect("mkdir");
    std::fs::write(
        d.dir.path().join("gold/first_items.sql"),
        "SELECT id, items, items ->> '$[0].sku' AS sku, CAST(json_extract(items, '$[0].qty') AS BIGINT) AS qty, \
         json_array_length(items) AS n FROM {{ ref('tickets') }}",
    )
    .expect("sql");
    std::fs::write(
        d.dir.path().join("gold/lines.sql"),
        "SELECT id, item ->> 'sku' AS sku, CAST(item ->> 'qty' AS BIGINT) AS qty, items ->> '$[*].sku' AS skus \
         FROM (SELECT id, items, unnest(items -> '$[*]') AS item FROM {{ ref('tickets') }})",
    )
    .expect("sql");
    let lines = [
        r#"{"id": 1, "items": [{"sku": "A", "qty": 2}]}"#,
        r#"{"id": 2, "items": [{"sku": "B", "qty": 1}, {"sku": "C", "qty": 5}]}"#,
        r#"{"id": 3, "items": []}"#,
        r#"{"id": 4, "items": [1, 2, 3]}"#,
    ];
    d.bronze("api", "b1", "2024-03-01T00:00:00Z", &lines.map(str::to_string));
    let summary = d.run().await;
    assert!(summary.ok(), "{:?}", summary.failed);
    let gold = d.rows("SELECT id, sku, qty, n FROM gold.first_items ORDER BY id").await;
    assert_eq!(gold, [["1", "A", "2", "1"], ["2", "B", "1", "2"]]);
    let lines = d.rows("SELECT id, sku, qty, array_to_string(skus, ',') FROM gold.lines ORDER BY id, sku").await;
    assert_eq!(lines, [["1", "A", "2", "A"], ["2", "B", "1", "B,C"], ["2", "C", "5", "B,C"]]);
    let rejected = d.rows("SELECT _raw ->> 'id', _errors FROM quarantine.tickets ORDER BY 1").await;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0][0] == "3" && rejected[0][1].contains("has_items"), "{rejected:?}");
    assert!(rejected[1][0] == "4" && rejected[1][1].contains("json_array_length(items) <= 2"), "{rejected:?}");
    // A constant path that cannot be read is a problem of the project, before any data moves.
    std::fs::write(
        d.dir.path().join("gold/first_items.sql"),
        "SELECT id, items, items ->> '$[0' AS sku, 1 AS qty, 1 AS n FROM {{ ref('tickets') }}",
    )
    .expect("sql");
    let err = medallion::project::Project::load(d.dir.path()).await.expect_err("invalid").to_string();
    assert!(err.contains("gold/first_items.sql: gold model `first_items`: SQL does not plan:"), "{err}");
    assert!(err.contains("json_extract_string: path `$[0`: a `[` is not closed"), "{err}");
}

/// A value a transform, a check or an expectation cannot be evaluated on (a cast of text that is
/// no number, JSON functions over text that is no JSON) rejects its row with the error; the rows
/// beside it are promoted. It used to fail the table's promotion, run after run.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_an_expression_cannot_be_evaluated_on_rejects_its_row_only() {
    let d = Dir::new(
        r#"
[project]
name = "e"
lake = "./lake"

[sources.s]
format = "ndjson"

[silver.t]
source = "s"
primary_key = ["id"]
columns = [
  { name = "id", type = "int64" },
  { name = "code", type = "string", checks = ["CAST(code AS INT) > 0"] },
  { name = "label", type = "string", transform = "CAST(CAST(label AS INT) * 2 AS VARCHAR)" },
  { name = "payload", type = "string", checks = ["json_array_length(payload) > 0"] },
]
expectations = [{ name = "small_code", expect = "CAST(code AS INT) < 100", action = "drop" }]
"#,
    );
    let lines = [
        r#"{"id": 1, "code": "5", "label": "3", "payload": "[1]"}"#,
        r#"{"id": 2, "code": "x", "label": "3", "payload": "[1]"}"#,
        r#"{"id": 3, "code": "5", "label": "y", "payload": "[1]"}"#,
        r#"{"id": 4, "code": "5", "label": "3", "payload": "nope"}"#,
        r#"{"id": 5, "code": "500", "label": "3", "payload": "[1]"}"#,
        r#"{"id": 6, "code": "7", "label": "4", "payload": "[1, 2]"}"#,
    ];
    d.bronze("s", "b1", "2024-03-01T00:00:00Z", &lines.map(str::to_string));
    let summary = d.run().await;
    assert!(summary.ok(), "{:?}", summary.failed);
    assert_eq!(d.rows("SELECT id, label FROM t ORDER BY id").await, [["1", "6"], ["6", "8"]]);
    let rejected = d.rows("SELECT _raw ->> 'id', _errors FROM quarantine.t ORDER BY 1").await;
    let reason = |id: &str| rejected.iter().find(|r| r[0] == id).map(|r| r[1].clone()).unwrap_or_default();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    for (id, want) in [
        ("2", "check could not be evaluated for \"x\": "),
        ("2", "Cannot cast string 'x'"),
        ("3", "transform `CAST(CAST(label AS INT) * 2 AS VARCHAR)` failed for \"y\": "),
        ("4", "json_array_length: `nope` is not JSON"),
        ("5", "small_code"),
    ] {
        assert!(reason(id).contains(want), "{id}: {want} not in {}", reason(id));
    }
    // Values a check or transform could not be evaluated on are counted apart from those a check
    // found false, in the dead letter's rules and so in every summary of them.
    let rules =
        d.rows("SELECT e['rule'], e['column'] FROM (SELECT unnest(_errors) AS e FROM quarantine.t) ORDER BY 1").await;
    assert_eq!(
        rules,
        [
            ["CAST(code AS INT) > 0 (could not be evaluated)", "code"],
            ["json_array_length(payload) > 0 (could not be evaluated)", "payload"],
            ["small_code", ""],
            ["transform (could not be evaluated)", "label"],
        ]
    );
    assert!(
        summary
            .silver
            .iter()
            .flat_map(|p| &p.top_reasons)
            .any(|(r, n)| r == "CAST(code AS INT) > 0 (could not be evaluated) (code)" && *n == 1),
        "{:?}",
        summary.silver
    );
}
