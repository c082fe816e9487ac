//! Gold models kept from their source's change data feed (`gold::aggregates`): after any batch
//! they hold exactly what their SQL gives over silver.

use medallion::orchestration::run::{RunOptions, run};

use crate::history::{Lakehouse, Rng};

/// The project, its silver table merged by `merge` and partitioned by `partition_by`.
fn project(merge: &str, partition_by: &str) -> String {
    format!(
        r#"[project]
name = "kept"

[sources.orders]

[silver.orders]
primary_key = ["order_id"]
merge = "{merge}"
partition_by = [{partition_by}]
history = {{ scd = 1, delete_when = "op = 'D'" }}
columns = [
  {{ name = "order_id", type = "int64" }},
  {{ name = "op", type = "string" }},
  {{ name = "amount", type = "decimal(18,2)" }},
  {{ name = "qty", type = "int64" }},
  {{ name = "order_date", type = "date" }},
  {{ name = "region", type = "string" }},
]

[gold.by_day]
owner = "analytics"
refresh = "daily"
sla = "1d"
incremental = {{ partition_by = "order_date" }}
"#
    )
}

/// Every aggregate kept, a WHERE, a qualified and a plain group key, nullable inputs and keys.
const MODEL: &str = "SELECT o.order_date, region, COUNT(*) AS n, COUNT(amount) AS priced, SUM(amount) AS revenue, \
     ROUND(AVG(amount), 2) AS avg_amount, AVG(amount) AS exact_avg, AVG(qty) AS avg_qty, SUM(qty) AS units, \
     MIN(amount) AS lo, MAX(amount) AS hi, MIN(qty) AS fewest, MAX(op) AS last_op \
     FROM orders AS o WHERE qty IS NULL OR qty < 9 GROUP BY o.order_date, region ORDER BY 1, 2";

/// The same model with one more aggregate: a changed SQL starts from the source again.
fn changed_model() -> String {
    MODEL.replace(" FROM orders", ", MAX(qty) AS most FROM orders")
}

/// Re-sent orders (moving between days and regions, losing or gaining their amount), deletes,
/// and a removed minimum or maximum now and then: after each run, the model equals its SQL over
/// silver, built from the changes on most runs; also after its state is lost and after its SQL
/// changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_kept_from_changes_equals_its_query_after_random_batches() {
    // Partitioned silver merges through delta-rs's MERGE, whose change feed is its own.
    for (merge, partition_by) in
        [("deletion_vectors", ""), ("copy_on_write", ""), ("deletion_vectors", "\"order_date\"")]
    {
        for seed in [3u64, 99] {
            let mut rng = Rng(seed);
            let mut lh = Lakehouse::new(&project(merge, partition_by));
            let sql_file = lh.dir.path().join("gold/by_day.sql");
            std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
            std::fs::write(&sql_file, MODEL).expect("write");
            let mut model = MODEL.to_string();
            let mut kept_runs = 0;
            for step in 0..12 {
                // Step 4 adds 40 new orders to one group at once: more than the values it keeps.
                let (count, ids) = if step == 4 { (40, 100..140) } else { (1 + rng.next(15), 0..0) };
                let mut ids = ids;
                let records: Vec<String> = (0..count)
                    .map(|_| {
                        let id = ids.next().unwrap_or_else(|| 1 + rng.next(30));
                        let op = if rng.next(8) == 0 { r#""D""# } else { r#""U""# };
                        let amount = match rng.next(10) {
                            0 => "null".to_string(),
                            _ => {
                                let cents = 1 + rng.next(5_000);
                                format!("{}.{:02}", cents / 100, cents % 100)
                            }
                        };
                        let qty = if rng.next(9) == 0 { "null".to_string() } else { (1 + rng.next(10)).to_string() };
                        let region = ["\"uk\"", "\"us\"", "null"][rng.next(3) as usize];
                        let (region, day) = if id >= 100 { ("\"uk\"", 1) } else { (region, 1 + rng.next(4)) };
                        format!(
                            r#"{{"order_id": {id}, "op": {op}, "amount": {amount}, "qty": {qty}, "order_date": "2024-01-0{day}", "region": {region}}}"#
                        )
                    })
                    .collect();
                if step == 6 {
                    // The state is lost (as if the run died before saving it): rebuilt from silver.
                    std::fs::remove_dir_all(lh.dir.path().join("lake/_medallion/aggregates/by_day")).expect("state");
                }
                if step == 9 {
                    model = changed_model();
                    assert_ne!(model, MODEL);
                    std::fs::write(&sql_file, &model).expect("write");
                }
                let s = lh.run_with("orders", &records).await;
                let b = &s.gold[0];
                let what = format!("{merge} [{partition_by}], seed {seed}, step {step}");
                if step == 6 || step == 9 {
                    assert_eq!(b.maintained, None, "{what}: built from silver");
                }
                if b.maintained.is_some() {
                    kept_runs += 1;
                }
                let expected = lh.rows(&model.replace("FROM orders", "FROM silver.orders")).await;
                assert!(!expected.is_empty(), "{what}");
                assert_eq!(lh.rows("SELECT * FROM gold.by_day ORDER BY 1, 2").await, expected, "{what}");
            }
            assert!(kept_runs >= 8, "{merge}, seed {seed}: {kept_runs} of 12 runs kept from changes");
            // A full refresh computes the state from silver: the same rows.
            let kept = lh.rows("SELECT * FROM gold.by_day ORDER BY 1, 2").await;
            let (project, lake) = lh.open().await;
            let opts =
                RunOptions { threads: 2, now: medallion::runtime::now(), full_refresh: true, ..Default::default() };
            let s = run(&project, &lake, &opts).await.expect("run");
            assert!(s.ok() && s.gold[0].rebuilt && s.gold[0].maintained.is_none(), "{:?}", s.failed);
            assert_eq!(lh.rows("SELECT * FROM gold.by_day ORDER BY 1, 2").await, kept, "{merge}, seed {seed}");
        }
    }
}

/// A removed minimum comes from the group's kept least values; a group whose kept values are all
/// removed is recomputed from silver, the other groups keep their state.
#[tokio::test(flavor = "multi_thread")]
async fn removed_extremes_are_replaced_from_kept_values_or_recomputed() {
    let mut lh = Lakehouse::new(&project("deletion_vectors", ""));
    std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
    std::fs::write(lh.dir.path().join("gold/by_day.sql"), MODEL).expect("write");
    let order = |id: u32, amount: &str, day: u32| {
        format!(
            r#"{{"order_id": {id}, "op": "U", "amount": {amount}, "qty": 1, "order_date": "2024-01-0{day}", "region": "uk"}}"#
        )
    };
    // Day 1: 20 orders of 1.00 … 20.00, more than the 16 least and greatest values kept.
    let mut first: Vec<String> = (1..=20).map(|i| order(i, &format!("{i}.00"), 1)).collect();
    first.extend([order(30, "1.00", 2), order(31, "5.00", 2)]);
    lh.run_with("orders", &first).await;
    let extremes =
        "SELECT CAST(order_date AS VARCHAR), CAST(lo AS VARCHAR), CAST(hi AS VARCHAR) FROM gold.by_day ORDER BY 1";
    // Day 2's least value rises above the other: taken from the kept values.
    let s = lh.run_with("orders", &[order(30, "7.00", 2)]).await;
    assert_eq!(s.gold[0].maintained, Some(2), "one preimage, one postimage");
    assert_eq!(lh.rows(extremes).await, vec!["2024-01-01 1.00 20.00".to_string(), "2024-01-02 5.00 7.00".into()]);
    // Day 1's 16 least values all rise: its kept least values are gone, and it is recomputed.
    let raised: Vec<String> = (1..=16).map(|i| order(i, &format!("{}.00", 100 + i), 1)).collect();
    let s = lh.run_with("orders", &raised).await;
    assert_eq!(s.gold[0].maintained, Some(32));
    assert_eq!(lh.rows(extremes).await, vec!["2024-01-01 17.00 116.00".to_string(), "2024-01-02 5.00 7.00".into()]);
    let expected = lh.rows(&MODEL.replace("FROM orders", "FROM silver.orders")).await;
    assert_eq!(lh.rows("SELECT * FROM gold.by_day ORDER BY 1, 2").await, expected);
}
