//! A backlog larger than one slice (issue 20): promoted through scratch files, a slice at a time,
//! it gives exactly what the same promotion gives in memory.

use medallion::orchestration::run::{RunOptions, RunSummary};
use medallion::runtime::NodeStage;
use medallion::silver::promote::Promotion;
use medallion::storage::Layer;

use crate::common::{Dir, sample, write_gz};

/// The orders example without the set- and table-level expectations of `silver.orders` (their
/// audit stages the candidate in memory, so a table with them merges a backlog in memory), its
/// silver merging as `merge` says. Its incremental gold model makes the table record a change data
/// feed.
fn project(merge: &str, rate: &str) -> Dir {
    let d = Dir::example();
    let path = d.dir.path().join("medallion.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    let start = text.find("expectations = [\n  { name = \"order_date_plausible\"").expect("orders' expectations");
    let end = start + text[start..].find("]\n").expect("their end") + 2;
    let text = format!("{}{}", &text[..start], &text[end..]);
    let from = "order_by = \"_ingested_at\"\ncolumns = [\n  { name = \"order_id\"";
    assert!(text.contains(from));
    let to = format!("{rate}merge = \"{merge}\"\n{from}");
    d.configure(&text.replacen(from, &to, 1));
    d
}

/// Every table of a lake, every column but times and run ids, sorted.
async fn tables(d: &Dir) -> Vec<(&'static str, Vec<Vec<String>>)> {
    let queries = [
        "SELECT order_id, customer_id, amount, currency, order_date, region, source, _batch_id, _source, \
         CAST(_ingested_at AS VARCHAR) FROM silver.orders ORDER BY order_id",
        "SELECT customer_id, tier, CAST(valid_from AS VARCHAR), CAST(valid_to AS VARCHAR), is_current \
         FROM silver.dim_customers ORDER BY 1, 3",
        "SELECT _batch_id, _line, _raw, e['rule'], e['column'], e['message'] \
         FROM (SELECT _batch_id, _line, _raw, unnest(_errors) AS e FROM quarantine.orders) ORDER BY 1, 2, 4, 5",
        "SELECT * FROM gold.daily_revenue ORDER BY order_date, region, currency",
        "SELECT * FROM gold.revenue_by_tier ORDER BY 1, 2",
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push((q, d.rows(q).await));
    }
    out
}

/// What a promotion did, in a form two runs compare by.
fn counts(p: &Promotion) -> (usize, u64, u64, u64, u64, u64, Vec<String>) {
    let held = p.held_back.iter().map(|h| h.batch_id.clone()).collect();
    (p.batches, p.read, p.inserted, p.updated, p.superseded, p.rejected, held)
}

fn orders(s: &RunSummary) -> &Promotion {
    s.silver.iter().find(|p| p.table == "orders").expect("orders promoted")
}

async fn run(d: &Dir, slice_bytes: u64) -> RunSummary {
    d.run_with(RunOptions { slice_bytes, now: medallion::runtime::now(), ..Default::default() }).await
}

fn land(d: &Dir, batches: &[medallion::sample::SampleBatch]) {
    for b in batches {
        let path = d.dir.path().join(format!("lake/bronze/orders/{}/{}.ndjson.gz", b.date, b.batch_id));
        write_gz(&path, b.bronze_ndjson("orders").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_promoted_in_slices_equals_the_same_promotion_in_memory() {
    let (batches, _) = sample(3_000, 7, 41);
    for merge in ["deletion_vectors", "copy_on_write"] {
        let rate = "max_rejected_fraction = { per_batch = 0.5 }\n";
        let (memory, sliced) = (project(merge, rate), project(merge, rate));
        for d in [&memory, &sliced] {
            land(d, &batches[..4]);
        }
        // A first load: the table is created from the spilled winners.
        let (a, b) = (run(&memory, u64::MAX).await, run(&sliced, 2 << 10).await);
        assert!(a.ok() && b.ok(), "{:?} {:?}", a.failed, b.failed);
        assert_eq!((orders(&a).slices, orders(&b).slices > 4), (0, true), "{:?}", orders(&b));
        assert_eq!(counts(orders(&a)), counts(orders(&b)), "{merge}: first load");
        assert_eq!(tables(&memory).await, tables(&sliced).await, "{merge}: after the first load");

        // A backlog merged into the table (re-sent and late orders replace or lose to its rows),
        // with a batch a per-batch rejection-rate gate holds back.
        for d in [&memory, &sliced] {
            land(d, &batches[4..]);
            let bad: Vec<String> =
                (0..40).map(|i| format!(r#"{{"order_id": {i}, "amount": "n/a", "currency": "usd"}}"#)).collect();
            d.bronze("orders", "mostly-bad", "2099-01-01T00:00:00+00:00", &bad);
        }
        let (a, b) = (run(&memory, u64::MAX).await, run(&sliced, 2 << 10).await);
        let failures = |s: &RunSummary| s.failed.iter().map(|f| f.error.clone()).collect::<Vec<_>>();
        assert_eq!(failures(&a), failures(&b), "the held-back batch fails the node, after its commit");
        assert!(failures(&b).iter().all(|e| e.contains("held back mostly-bad")), "{:?}", b.failed);
        let (a, b) = (orders(&a), orders(&b));
        assert!(b.slices > 4 && b.updated > 0 && b.superseded > 0, "{b:?}");
        assert_eq!(b.held_back.iter().map(|h| h.batch_id.as_str()).collect::<Vec<_>>(), ["mostly-bad"]);
        assert_eq!(counts(a), counts(b), "{merge}: the backlog");
        assert_eq!(b.read, b.promoted() + b.superseded + b.rejected, "accounting holds");
        assert_eq!(tables(&memory).await, tables(&sliced).await, "{merge}: after the backlog");
        assert_eq!(feed(&memory).await, feed(&sliced).await, "{merge}: the change data feed");
    }
}

/// The change data feed's files of `silver.orders`: per change type, rows and their order ids' sum.
async fn feed(d: &Dir) -> Vec<Vec<String>> {
    let ctx = datafusion::prelude::SessionContext::new();
    let path = format!("{}/lake/silver/orders/_change_data/", d.dir.path().display());
    let df = ctx.read_parquet(path, Default::default()).await.expect("feed");
    ctx.register_table("feed", df.into_view()).expect("register");
    let sql = "SELECT _change_type, CAST(count(*) AS VARCHAR), CAST(sum(order_id) AS VARCHAR) FROM feed GROUP BY 1 ORDER BY 1";
    let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
    let mut rows = Vec::new();
    for b in &batches {
        let cols: Vec<Vec<String>> = b.columns().iter().map(crate::common::strings).collect();
        rows.extend((0..b.num_rows()).map(|r| cols.iter().map(|c| c[r].clone()).collect::<Vec<_>>()));
    }
    assert!(!rows.is_empty(), "the merge recorded changes");
    rows
}

/// A first load of a table whose set-level expectations need not read its rows (the example's
/// `unique` on its key, `row_count` and `freshness`; its `drop` range is row-level) streams its
/// winners into the new table, audited from what the writer counted before anything commits; it
/// equals the first load in memory: tables, counts, expectation results, the held-back batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_load_in_slices_with_expectations_equals_the_same_load_in_memory() {
    let (batches, _) = sample(3_000, 6, 43);
    let with_rate = |d: &Dir| {
        d.edit(
            "order_by = \"_ingested_at\"\n",
            "order_by = \"_ingested_at\"\nmax_rejected_fraction = { per_batch = 0.5 }\n",
        )
    };
    let (memory, sliced) = (Dir::example(), Dir::example());
    for d in [&memory, &sliced] {
        with_rate(d);
        land(d, &batches[..5]);
        let bad: Vec<String> =
            (0..40).map(|i| format!(r#"{{"order_id": {i}, "amount": "n/a", "currency": "usd"}}"#)).collect();
        d.bronze("orders", "mostly-bad", "2099-01-01T00:00:00+00:00", &bad);
        // A row the `drop` expectation removes (order_date before 2000), among valid ones.
        let row = |id: u32, date: &str| {
            format!(
                r#"{{"order_id": {id}, "customer_id": 1, "amount": 5, "currency": "usd", "order_date": "{date}", "region": "EU", "source": "web"}}"#
            )
        };
        let mut old: Vec<String> = (0..20).map(|i| row(900_000 + i, "2024-02-01")).collect();
        old.push(row(999_999, "1999-12-31"));
        d.bronze("orders", "old", "2024-03-01T00:00:00+00:00", &old);
    }
    let (a, b) = (run(&memory, u64::MAX).await, run(&sliced, 2 << 10).await);
    let failures = |s: &RunSummary| s.failed.iter().map(|f| f.error.clone()).collect::<Vec<_>>();
    assert_eq!(failures(&a), failures(&b), "{:?}", orders(&b));
    let (pa, pb) = (orders(&a), orders(&b));
    assert_eq!((pa.slices, pb.slices > 4, pb.rebuilt), (0, true, false), "{pb:?}");
    // Streamed: no winners resolved into scratch files first, as a rebuild's are.
    assert!(!pb.timings_ms.contains_key(&NodeStage::Dedup), "{pb:?}");
    assert_eq!(counts(pa), counts(pb));
    assert!(pb.rejected > 0 && pb.held_back.len() == 1, "{pb:?}");
    let results = |p: &Promotion| {
        p.expectations
            .iter()
            .map(|e| (e.name.clone(), e.rows_checked, e.failing_rows, e.passed(), e.observed.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(results(pa), results(pb));
    assert!(pb.expectations.iter().any(|e| e.name == "order_date_plausible" && e.failing_rows == 1));
    assert_eq!(tables(&memory).await, tables(&sliced).await, "after the first load");

    // The next run merges in memory into the table the sliced load created.
    for d in [&memory, &sliced] {
        land(d, &batches[5..]);
    }
    let (a, b) = (run(&memory, u64::MAX).await, run(&sliced, u64::MAX).await);
    assert_eq!(counts(orders(&a)), counts(orders(&b)));
    assert_eq!(tables(&memory).await, tables(&sliced).await, "after a merge");
}

/// A sliced first load's `freshness` is the newest value of the rows it would publish: taken as
/// the winners stream into the table, or, when a set-level `drop` removed rows (here the newest
/// batch's; such a load runs as a rebuild does), read from what remains. Both equal the same load
/// in memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_sliced_first_load_reports_the_newest_row_it_keeps() {
    let (batches, _) = sample(3_000, 6, 45);
    let newest = |s: &RunSummary| {
        let e = orders(s).expectations.iter().find(|e| e.name == "fresh_orders").expect("fresh_orders");
        e.observed.clone().unwrap_or_default()
    };
    // The late batch's rows share a customer and a day: the set-level `drop` removes them all.
    let drop = r#"{ name = "one_order_a_day", unique = ["customer_id", "order_date"], action = "drop" },"#;
    for dropping in [false, true] {
        let (memory, sliced) = (Dir::example(), Dir::example());
        for d in [&memory, &sliced] {
            if dropping {
                let first = r#"{ name = "order_date_plausible""#;
                d.edit(first, &format!("{drop}\n  {first}"));
            }
            land(d, &batches);
            let row = |id: u32| {
                format!(
                    r#"{{"order_id": {id}, "customer_id": 777777, "amount": 5, "currency": "usd", "order_date": "2024-02-01", "region": "EU", "source": "web"}}"#
                )
            };
            let late: Vec<String> = (0..20).map(|i| row(800_000 + i)).collect();
            d.bronze("orders", "late", "2030-01-01T00:00:00+00:00", &late);
        }
        let (a, b) = (run(&memory, u64::MAX).await, run(&sliced, 2 << 10).await);
        assert!(orders(&b).slices > 1, "{:?}", orders(&b));
        assert_eq!(orders(&b).timings_ms.contains_key(&NodeStage::Dedup), dropping, "{:?}", orders(&b));
        assert_eq!(newest(&a), newest(&b), "dropping: {dropping}");
        assert_eq!(newest(&b).starts_with("newest 2030-01-01T00:00:00Z"), !dropping, "{}", newest(&b));
        assert_eq!(counts(orders(&a)), counts(orders(&b)));
        // Rows removed by a set-level check have no line: sorted whole, as the order leaves ties.
        let sorted = |mut t: Vec<(&'static str, Vec<Vec<String>>)>| {
            t.iter_mut().for_each(|(_, rows)| rows.sort());
            t
        };
        let (tm, ts) = (sorted(tables(&memory).await), sorted(tables(&sliced).await));
        assert_eq!(tm, ts, "dropping: {dropping}");
    }
}

/// A sliced first load whose set-level expectation fails commits nothing (no silver table, no
/// dead letter, no intent: the next run is no resumed one), and the next run, the expectation
/// fixed, loads what the same load in memory loads. With a `drop` expectation besides, the load
/// runs as a rebuild does (its slices resolved two at a time): the same holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_sliced_first_load_that_fails_its_audit_commits_nothing() {
    let (batches, _) = sample(3_000, 6, 44);
    let warn = r#"{ name = "has_orders", row_count = { min = 1 }, action = "warn" }"#;
    let fail = r#"{ name = "has_orders", row_count = { max = 10 }, action = "fail" }"#;
    // Drops nothing here (every order has its own customer and day), but must read the rows.
    let drop = r#"{ name = "one_order_a_day", unique = ["customer_id", "order_date", "order_id"], action = "drop" },"#;
    for dropping in [false, true] {
        let (memory, sliced) = (Dir::example(), Dir::example());
        for d in [&memory, &sliced] {
            land(d, &batches);
            if dropping {
                let first = r#"{ name = "order_date_plausible""#;
                d.edit(first, &format!("{drop}\n  {first}"));
            }
        }
        sliced.edit(warn, fail);
        let failed = run(&sliced, 2 << 10).await;
        let errors: Vec<_> = failed.failed.iter().map(|f| f.error.clone()).collect();
        assert!(errors.iter().any(|e| e.contains("has_orders") && e.contains("rows = ")), "{errors:?}");
        assert_eq!(errors.len(), 1, "one error, no follow-on: {errors:?}");
        assert_eq!(sliced.version(Layer::Silver, "orders").await, None, "silver committed despite its audit");
        assert_eq!(sliced.version(Layer::Quarantine, "orders").await, None, "the dead letter committed");
        // Nor are the files the refused load wrote left behind (no vacuum sweeps a table without
        // a commit).
        let files = |layer: &str| {
            let dir = sliced.dir.path().join(format!("lake/{layer}/orders"));
            std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
        };
        assert_eq!((files("silver"), files("quarantine")), (0, 0), "dropping: {dropping}");

        sliced.edit(fail, warn);
        let (a, b) = (run(&memory, u64::MAX).await, run(&sliced, 2 << 10).await);
        let (pa, pb) = (orders(&a), orders(&b));
        assert!(pb.slices > 1 && !pb.resumed, "{pb:?}");
        assert_eq!(pb.timings_ms.contains_key(&NodeStage::Dedup), dropping, "{pb:?}");
        assert_eq!(counts(pa), counts(pb));
        assert_eq!(tables(&memory).await, tables(&sliced).await, "dropping: {dropping}");
    }
}
