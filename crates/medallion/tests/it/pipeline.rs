//! The orders pipeline end to end: counts and sums against the generator's own bookkeeping.

use crate::common::{Env, first_i64, sample};

#[tokio::test(flavor = "multi_thread")]
async fn all_batches_at_once_match_expectations_and_rerun_changes_nothing() {
    let env = Env::new().await;
    let (batches, expected) = sample(30_000, 6, 42);
    for b in &batches {
        env.land(b);
    }
    let s = env.run().await;
    let t = &s.totals;
    assert_eq!(t.read, expected.records);
    assert_eq!(t.rejected, expected.invalid);
    assert_eq!(t.promoted, expected.silver_rows);
    assert_eq!(t.superseded, expected.valid - expected.silver_rows);
    assert_eq!(t.read, t.promoted + t.superseded + t.rejected);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM quarantine.orders").await as u64, expected.invalid);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM gold.daily_revenue").await as u64, expected.gold_rows);
    assert_eq!(env.sum_cents("SELECT sum(revenue) FROM gold.daily_revenue").await, expected.amount_cents);
    assert_eq!(env.sum_cents("SELECT sum(amount) FROM silver.orders").await, expected.amount_cents);

    let versions = (s.silver[0].silver_version, s.gold[0].version);
    let again = env.run().await;
    assert!(again.silver.is_empty(), "nothing pending: {:?}", again.silver);
    assert_eq!(again.totals.read, 0);
    assert!(!again.gold[0].rebuilt);
    assert_eq!((versions.0, again.gold[0].version), (versions.0, versions.1));
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_batch_per_run_gives_the_same_tables() {
    let env = Env::new().await;
    let (batches, expected) = sample(12_000, 4, 7);
    let mut promoted = 0;
    let mut superseded = 0;
    let mut rejected = 0;
    for b in &batches {
        env.land(b);
        let s = env.run().await;
        assert_eq!(s.silver.len(), 1);
        promoted += s.totals.promoted;
        superseded += s.totals.superseded;
        rejected += s.totals.rejected;
    }
    assert_eq!(rejected, expected.invalid);
    // A key updated by a later run counts as promoted twice across runs (insert, then update).
    let updates = env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64;
    assert_eq!(updates, expected.silver_rows);
    assert_eq!(promoted + superseded, expected.valid);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM gold.daily_revenue").await as u64, expected.gold_rows);
    assert_eq!(env.sum_cents("SELECT sum(revenue) FROM gold.daily_revenue").await, expected.amount_cents);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_batch_arriving_late_never_overwrites_newer_rows() {
    let env = Env::new().await;
    let (batches, expected) = sample(12_000, 4, 11);
    // Newest first, one run each: the merge guard must keep the newest version of every key.
    for b in batches.iter().rev() {
        env.land(b);
        env.run().await;
    }
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
    assert_eq!(env.sum_cents("SELECT sum(amount) FROM silver.orders").await, expected.amount_cents);
}

#[tokio::test(flavor = "multi_thread")]
async fn init_sample_through_configured_paths_matches_the_generator() {
    // The three landing files are ingested in one run; re-sends across them must resolve in file
    // order (each file gets a later ingest time), as the generator's bookkeeping assumes.
    let dir = tempfile::tempdir().expect("tmp");
    medallion::init::init(dir.path()).expect("init");
    let project = medallion::project::Project::load(dir.path()).await.expect("load");
    let lake = medallion::storage::Lake::open(&project.lake, &project.root).expect("lake");
    let s = medallion::orchestration::run::run(&project, &lake, &Default::default()).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    let (_, expected) = sample(3_000, 3, 42);
    assert_eq!(s.ingested.len(), 4, "three order files and the customers");
    let orders = s.silver.iter().find(|p| p.table == "orders").expect("orders promoted");
    assert_eq!(orders.read, expected.records);
    assert_eq!(orders.rejected, expected.invalid);
    assert_eq!(orders.promoted(), expected.silver_rows);
    let customers = s.silver.iter().find(|p| p.table == "dim_customers").expect("customers promoted");
    assert_eq!((customers.rejected, customers.read), (0, customers.promoted() + customers.superseded));
    let ctx = medallion::catalog::session(&lake, &project).await.expect("session");
    let cents =
        ctx.sql("SELECT sum(revenue) FROM gold.daily_revenue").await.expect("plan").collect().await.expect("run");
    use medallion::arrow::array::AsArray;
    assert_eq!(
        cents[0].column(0).as_primitive::<medallion::arrow::datatypes::Decimal128Type>().value(0),
        expected.amount_cents
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_silver_table_merges_correctly() {
    let mut env = Env::new().await;
    if let Some(t) = env.project.silver.get_mut("orders") {
        t.partition_by = vec!["order_date".into()];
    }
    let (batches, expected) = sample(8_000, 4, 13);
    for b in &batches {
        env.land(b);
        env.run().await;
    }
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
    assert_eq!(env.sum_cents("SELECT sum(amount) FROM silver.orders").await, expected.amount_cents);
    let partitions = std::fs::read_dir(env.lake_dir().join("silver/orders"))
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("order_date="))
        .count();
    assert_eq!(partitions, 60, "one directory per order date");
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_pick_nodes_up_and_down_the_dag() {
    use medallion::orchestration::select::select;
    let env = crate::common::Env::new().await;
    let pick = |s: &[&str], e: &[&str]| {
        let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        let e: Vec<String> = e.iter().map(|x| x.to_string()).collect();
        select(&env.project, &s, &e).map(|set| set.into_iter().collect::<Vec<_>>()).map_err(|e| e.to_string())
    };
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        pick(&["orders+"], &[]).expect("ok"),
        v(&["bronze/orders", "gold/daily_revenue", "gold/revenue_by_tier", "silver/orders"])
    );
    assert_eq!(
        pick(&["+daily_revenue"], &[]).expect("ok"),
        v(&["bronze/orders", "gold/daily_revenue", "silver/orders"])
    );
    assert_eq!(
        pick(&["silver/dim_customers+"], &[]).expect("ok"),
        v(&["gold/revenue_by_tier", "silver/dim_customers"])
    );
    assert_eq!(pick(&["layer:gold"], &["tag:customers"]).expect("ok"), v(&["gold/daily_revenue"]));
    assert_eq!(pick(&["tag:finance"], &[]).expect("ok"), v(&["gold/daily_revenue", "gold/revenue_by_tier"]));
    assert_eq!(pick(&[], &["layer:gold", "layer:bronze"]).expect("ok"), v(&["silver/dim_customers", "silver/orders"]));
    let err = pick(&["ordres"], &[]).expect_err("unknown").to_string();
    assert!(err.contains("unknown node `ordres`"), "{err}");

    // A run with a selection runs only those nodes.
    let (batches, _) = crate::common::sample(2_000, 1, 5);
    env.land(&batches[0]);
    let opts = medallion::orchestration::run::RunOptions {
        threads: 2,
        select: Some(pick(&["silver/orders"], &[]).expect("ok").into_iter().collect()),
        ..Default::default()
    };
    let s = medallion::orchestration::run::run(&env.project, &env.lake, &opts).await.expect("run");
    assert_eq!((s.silver.len(), s.gold.len()), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn dated_runs_promote_one_date_partition_and_a_backfill_in_any_order_ends_the_same() {
    use medallion::orchestration::run::{RunOptions, run};
    let env = crate::common::Env::new().await;
    let (batches, expected) = sample(3_000, 3, 21);
    for b in &batches {
        env.land(b);
    }
    let day = |d: &str| RunOptions { threads: 2, date: Some(d.parse().expect("date")), ..Default::default() };
    let s = run(&env.project, &env.lake, &day(&batches[1].date)).await.expect("run");
    let p = s.silver.iter().find(|p| p.table == "orders").expect("orders");
    assert_eq!(p.batches, 1, "only {}'s batch", batches[1].date);
    // The other days, later and in reverse: newer records still win.
    for b in [&batches[2], &batches[0]] {
        let s = run(&env.project, &env.lake, &day(&b.date)).await.expect("run");
        assert_eq!(s.silver.iter().find(|p| p.table == "orders").map(|p| p.batches), Some(1));
    }
    let again = run(&env.project, &env.lake, &day(&batches[0].date)).await.expect("run");
    assert!(again.silver.is_empty(), "a date already promoted is a no-op");
    assert_eq!(env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64, expected.silver_rows);
    assert_eq!(env.sum_cents("SELECT sum(amount) FROM silver.orders").await, expected.amount_cents);
}

#[tokio::test(flavor = "multi_thread")]
async fn independent_nodes_run_together_and_dependents_wait_for_their_inputs() {
    let dir = tempfile::tempdir().expect("tmp");
    medallion::init::init(dir.path()).expect("init");
    let project = medallion::project::Project::load(dir.path()).await.expect("load");
    let lake = medallion::storage::Lake::open(&project.lake, &project.root).expect("lake");
    let opts = medallion::orchestration::run::RunOptions { threads: 2, ..Default::default() };
    let s = medallion::orchestration::run::run(&project, &lake, &opts).await.expect("run");
    assert!(s.ok(), "{:?}", s.failed);
    let events = crate::common::query(
        &project,
        &lake,
        &format!("SELECT seq, type, node FROM medallion.events WHERE run_id = '{}' ORDER BY seq", s.run_id),
    )
    .await;
    let seq = |kind: &str, node: &str| -> i64 {
        events
            .iter()
            .find(|e| e[1] == kind && e[2] == node)
            .map(|e| e[0].parse().expect("seq"))
            .unwrap_or_else(|| panic!("no {kind} for {node}: {events:?}"))
    };
    // Both silver tables start before either finishes (two at a time).
    let first_finish = seq("node_finished", "silver/orders").min(seq("node_finished", "silver/dim_customers"));
    assert!(
        seq("node_started", "silver/orders") < first_finish
            && seq("node_started", "silver/dim_customers") < first_finish,
        "{events:?}"
    );
    // A model starts only after every table it reads has finished.
    assert!(
        seq("node_started", "gold/revenue_by_tier")
            > seq("node_finished", "silver/orders").max(seq("node_finished", "silver/dim_customers"))
    );
    assert!(seq("node_started", "gold/daily_revenue") > seq("node_finished", "silver/orders"));
    // The summary stays in DAG order.
    assert_eq!(s.silver.iter().map(|p| p.table.as_str()).collect::<Vec<_>>(), ["dim_customers", "orders"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_session_opens_only_the_tables_the_query_names() {
    let env = Env::new().await;
    let (batches, expected) = sample(6_000, 2, 5);
    for b in &batches {
        env.land(b);
    }
    env.run().await;
    let registered = |ctx: &datafusion::prelude::SessionContext| {
        [
            "orders",
            "silver.orders",
            "gold.daily_revenue",
            "quarantine.orders",
            "medallion.events",
            "medallion.expectations",
        ]
        .into_iter()
        .filter(|t| ctx.table_exist(*t).expect("name"))
        .collect::<Vec<_>>()
    };
    let count = |ctx: datafusion::prelude::SessionContext, sql: &'static str| async move {
        first_i64(&ctx.sql(sql).await.expect("plan").collect().await.expect("run")) as u64
    };
    let session = |sql: &'static str| {
        let (lake, project) = (&env.lake, &env.project);
        async move { medallion::catalog::session_reading(lake, project, None, sql).await.expect("session") }
    };

    let sql = "SELECT count(*) FROM gold.daily_revenue";
    let ctx = session(sql).await;
    assert_eq!(registered(&ctx), ["gold.daily_revenue"]);
    assert_eq!(count(ctx, sql).await, expected.gold_rows);

    // Plain names, dead letters and the lake's own tables, in subqueries and a CTE.
    let sql = "WITH o AS (SELECT * FROM orders) SELECT (SELECT count(*) FROM o) + \
               (SELECT count(*) FROM quarantine.orders) + 0 * (SELECT count(*) FROM medallion.events)";
    let ctx = session(sql).await;
    assert_eq!(registered(&ctx), ["orders", "silver.orders", "quarantine.orders", "medallion.events"]);
    assert_eq!(count(ctx, sql).await, expected.silver_rows + expected.invalid);

    // What it cannot tell apart gets every table.
    for sql in ["SELECT count(*) FROM information_schema.tables", "SELEC nothing"] {
        assert_eq!(registered(&session(sql).await).len(), 6, "{sql}");
    }
}
