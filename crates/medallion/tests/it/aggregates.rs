//! Gold models kept from their source's change data feed (`gold::aggregates`): after any batch
//! they hold exactly what their SQL gives over silver.

use medallion::orchestration::run::{RunOptions, run};

use crate::common::{Rng, seeds};
use crate::history::Lakehouse;

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
        for seed in seeds(&[3, 99]) {
            let mut rng = Rng(seed);
            let mut lh = Lakehouse::new(&project(merge, partition_by));
            let sql_file = lh.dir.path().join("gold/by_day.sql");
            std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
            std::fs::write(&sql_file, MODEL).expect("write");
            let mut model = MODEL.to_string();
            let mut kept_runs = 0;
            let mut filled = 0;
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
                // A first batch of deletes leaves silver empty, and the model with it.
                filled += usize::from(!expected.is_empty());
                assert_eq!(lh.rows("SELECT * FROM gold.by_day ORDER BY 1, 2").await, expected, "{what}");
            }
            assert!(filled >= 10, "{merge}, seed {seed}: {filled} of 12 runs compared rows");
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

/// A join model: orders joined to their customers' tier, grouped by an expression of the joined
/// table.
const JOINED: &str = "SELECT o.order_date, coalesce(c.tier, 'unknown') AS tier, COUNT(*) AS n, \
     SUM(o.amount) AS revenue, MIN(o.qty) AS fewest, MAX(c.name) AS last_name \
     FROM orders AS o LEFT JOIN customers AS c ON o.qty = c.customer_id \
     WHERE c.tier IS NULL OR c.tier <> 'gone' \
     GROUP BY o.order_date, coalesce(c.tier, 'unknown') ORDER BY 1, 2";

/// A model reading the clock: never kept (each row would keep the day of the run that applied it)
/// nor built by partition (a partition no change touched may hold other rows today).
const DATED: &str = "SELECT order_date, COUNT(*) AS n FROM orders WHERE order_date < current_date GROUP BY order_date";

/// A model joining the source to a table that has not changed is kept from the source's
/// changes; a run that changes the joined table builds it from silver again. After each run it
/// equals its SQL over silver. A model calling `current_date` is built in full every run, also
/// when nothing changed.
#[tokio::test(flavor = "multi_thread")]
async fn a_join_model_is_kept_while_the_joined_tables_stand() {
    // As in the example: by_day's incremental declaration gives silver.orders its change feed,
    // and by_tier, declared as a plain model, is kept from it.
    let toml = project("deletion_vectors", "")
        + r#"
[gold.by_tier]
owner = "analytics"
refresh = "daily"
sla = "1d"

[gold.dated]
owner = "analytics"
refresh = "daily"
sla = "1d"
incremental = { partition_by = "order_date" }

[sources.customers]

[silver.customers]
primary_key = ["customer_id"]
columns = [
  { name = "customer_id", type = "int64" },
  { name = "name", type = "string" },
  { name = "tier", type = "string" },
]
"#;
    for seed in seeds(&[5, 17]) {
        let mut rng = Rng(seed);
        let mut lh = Lakehouse::new(&toml);
        std::fs::create_dir_all(lh.dir.path().join("gold")).expect("mkdir");
        std::fs::write(lh.dir.path().join("gold/by_tier.sql"), JOINED).expect("write");
        std::fs::write(lh.dir.path().join("gold/by_day.sql"), MODEL).expect("write");
        std::fs::write(lh.dir.path().join("gold/dated.sql"), DATED).expect("write");
        let (mut kept_runs, mut idle_runs) = (0, 0);
        let mut filled = 0;
        for step in 0..12 {
            // Customers change at steps 0, 5 and 8: those runs start from silver again.
            let customers_change = matches!(step, 0 | 5 | 8);
            if customers_change {
                let tiers = ["\"gold\"", "\"silver\"", "\"gone\"", "null"];
                let mut customers = Vec::new();
                for id in 1..=8 {
                    if rng.next(3) > 0 {
                        let tier = tiers[rng.next(4) as usize];
                        customers.push(format!(r#"{{"customer_id": {id}, "name": "c{id}-{step}", "tier": {tier}}}"#));
                    }
                }
                lh.land("customers", &customers);
            }
            // Step 3 puts 40 orders in a group of their own, more than the 16 least quantities it
            // keeps; step 7 raises the 16 least: the group's kept values are all gone, and it is
            // recomputed.
            let heap = |id: u32, qty: u32| {
                format!(
                    r#"{{"order_id": {id}, "op": "U", "amount": 1.00, "qty": {qty}, "order_date": "2024-01-09", "region": "uk"}}"#
                )
            };
            let orders: Vec<String> = match step {
                3 => (100..140).map(|id| heap(id, id - 80)).collect(),
                7 => (100..116).map(|id| heap(id, id + 100)).collect(),
                _ => (0..1 + rng.next(15)).map(|_| {
                    let id = 1 + rng.next(30);
                    let op = if rng.next(8) == 0 { "D" } else { "U" };
                    let cents = 1 + rng.next(5_000);
                    let qty = if rng.next(9) == 0 { "null".to_string() } else { (1 + rng.next(10)).to_string() };
                    let day = 1 + rng.next(4);
                    format!(
                        r#"{{"order_id": {id}, "op": "{op}", "amount": {}.{:02}, "qty": {qty}, "order_date": "2024-01-0{day}", "region": "uk"}}"#,
                        cents / 100,
                        cents % 100
                    )
                })
                .collect(),
            };
            let s = lh.run_with("orders", &orders).await;
            let b = s.gold.iter().find(|b| b.model == "by_tier").expect("by_tier built");
            let what = format!("seed {seed}, step {step}");
            if customers_change {
                assert_eq!(b.maintained, None, "{what}: the joined table changed, built from silver");
            } else if b.rebuilt {
                assert!(b.maintained.is_some(), "{what}: kept from the changes");
                kept_runs += 1;
            } else {
                // Deletes of keys silver never held change nothing: the model is up to date.
                let orders = s.silver.iter().find(|t| t.table == "orders").expect("orders promoted");
                assert_eq!((orders.inserted, orders.updated, orders.deleted), (0, 0, 0), "{what}: {b:?}");
                idle_runs += 1;
            }
            let expected = lh
                .rows(
                    &JOINED
                        .replace("FROM orders", "FROM silver.orders")
                        .replace("JOIN customers", "JOIN silver.customers"),
                )
                .await;
            // A first batch of deletes leaves silver empty, and the model with it.
            filled += usize::from(!expected.is_empty());
            assert_eq!(lh.rows("SELECT * FROM gold.by_tier ORDER BY 1, 2").await, expected, "{what}");
            let dated = s.gold.iter().find(|b| b.model == "dated").expect("dated built");
            assert!(dated.rebuilt && dated.maintained.is_none() && dated.partitions.is_none(), "{what}: {dated:?}");
        }
        assert_eq!(kept_runs + idle_runs, 9, "seed {seed}");
        assert!(kept_runs >= 7, "seed {seed}: {kept_runs} of 9 runs kept from changes");
        assert!(filled >= 10, "seed {seed}: {filled} of 12 runs compared rows");
        // Nothing new: the models are up to date, but the one reading the clock is built again
        // (tomorrow the same rows give other results).
        let s = lh.run().await;
        let built = |m: &str| s.gold.iter().find(|b| b.model == m).map(|b| b.rebuilt);
        assert_eq!((built("by_tier"), built("by_day"), built("dated")), (Some(false), Some(false), Some(true)));
    }
}
