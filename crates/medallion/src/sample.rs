//! A deterministic generator of dirty "orders" data, shaped like `shared/bench/gen_orders.py`:
//! one batch per day, re-sends of earlier orders, schema drift, and the same kinds of dirt. It
//! keeps its own bookkeeping of the expected results (what silver and gold must hold), computed
//! from how each record was made, never by running the contract.
//!
//! Used by `medallion init` for sample data and by the tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

const REGIONS: [(&str, &str); 8] = [
    ("us-east", "USD"),
    ("us-west", "USD"),
    ("eu-west", "EUR"),
    ("eu-central", "EUR"),
    ("uk", "GBP"),
    ("japan", "JPY"),
    ("canada", "CAD"),
    ("latam", "USD"),
];
const CURRENCIES: [&str; 5] = ["USD", "EUR", "GBP", "JPY", "CAD"];
const SOURCES: [&str; 5] = ["web", "mobile", "pos", "marketplace", "partner_api"];

/// Generator settings.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// Records in total.
    pub rows: u64,
    /// Batches (one per day from 2024-03-01).
    pub batches: u32,
    /// Seed.
    pub seed: u64,
}

/// One generated batch.
#[derive(Debug, Clone)]
pub struct SampleBatch {
    /// Batch id (uuid format).
    pub batch_id: String,
    /// Ingest date, `YYYY-MM-DD`.
    pub date: String,
    /// `_ingested_at`, RFC 3339 with microseconds.
    pub ingested_at: String,
    /// Records without provenance, one JSON object per line.
    pub records: Vec<String>,
}

/// What a correct pipeline must produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Records generated.
    pub records: u64,
    /// Records the contract accepts.
    pub valid: u64,
    /// Records the contract rejects.
    pub invalid: u64,
    /// Distinct order ids among valid records.
    pub silver_rows: u64,
    /// Distinct (order_date, region, currency) among silver rows.
    pub gold_rows: u64,
    /// Sum of silver amounts, in cents.
    pub amount_cents: i128,
}

/// A small, fast, seedable PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone)]
struct Order {
    customer_id: u64,
    date: String,
    region: usize,
    currency: &'static str,
    source: &'static str,
}

/// Generates the batches and the expected results.
pub fn generate(spec: &SampleSpec) -> (Vec<SampleBatch>, Expected) {
    let mut meta = Rng(spec.seed ^ 0x5EED);
    let batches = spec.batches.max(1);
    let per_batch = spec.rows / u64::from(batches);
    let extra = spec.rows % u64::from(batches);
    let mut out = Vec::new();
    let mut expected = Expected::default();
    // order_id → (batch index, cents, date, region, currency) of its latest valid version.
    let mut latest: HashMap<u64, (u32, i128, String, &'static str, &'static str)> = HashMap::new();
    let mut next_id: u64 = 1;
    let start = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap_or_default();
    let order_day0 = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default();
    for b in 0..batches {
        let mut rng = Rng(spec.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(b)));
        let day = start + chrono::Duration::days(i64::from(b));
        let secs = meta.below(3600);
        let micros = meta.below(1_000_000);
        let ingested_at = format!("{}T06:{:02}:{:02}.{micros:06}+00:00", day.format("%Y-%m-%d"), secs / 60, secs % 60);
        let batch_id = uuid_like(&mut meta);
        let n = per_batch + u64::from(u64::from(b) < extra);
        let mut records = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut in_batch: BTreeSet<u64> = BTreeSet::new();
        for _ in 0..n {
            // ~10% re-send an earlier order id (never twice in one batch).
            let resend = next_id > 1 && rng.chance(100);
            let mut id = if resend { 1 + rng.below(next_id - 1) } else { next_id };
            if resend && in_batch.contains(&id) {
                id = next_id;
            }
            if id == next_id {
                next_id += 1;
            }
            in_batch.insert(id);
            let mut base = Rng(spec.seed ^ id.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let region = usize::try_from(base.below(8)).unwrap_or(0);
            let order = Order {
                customer_id: 1 + base.below(250_000),
                date: (order_day0 + chrono::Duration::days(i64::try_from(base.below(60)).unwrap_or(0)))
                    .format("%Y-%m-%d")
                    .to_string(),
                region,
                currency: if base.chance(850) {
                    REGIONS[region].1
                } else {
                    CURRENCIES[usize::try_from(base.below(5)).unwrap_or(0)]
                },
                source: SOURCES[usize::try_from(base.below(5)).unwrap_or(0)],
            };
            let cents = i128::from(100 + rng.below(199_900));
            let third = rng.chance(50).then(|| [1u8, 2, 3, 4, 6, 7, 8, 9][usize::try_from(rng.below(8)).unwrap_or(0)]);
            let rounded = cents + i128::from(third.is_some_and(|d| d >= 5));
            let amount = match third {
                Some(d) => format!("{}.{:02}{d}", cents / 100, cents % 100),
                None => format!("{}.{:02}", cents / 100, cents % 100),
            };
            let (record, valid) = dirty_record(&mut rng, id, &order, &amount, b, batches);
            records.push(record);
            expected.records += 1;
            if valid {
                expected.valid += 1;
                latest.insert(id, (b, rounded, order.date.clone(), REGIONS[order.region].0, order.currency));
            } else {
                expected.invalid += 1;
            }
        }
        out.push(SampleBatch { batch_id, date: day.format("%Y-%m-%d").to_string(), ingested_at, records });
    }
    expected.silver_rows = latest.len() as u64;
    let mut groups: BTreeMap<(String, &str, &str), ()> = BTreeMap::new();
    for (_, cents, date, region, currency) in latest.values() {
        expected.amount_cents += cents;
        groups.insert((date.clone(), region, currency), ());
    }
    expected.gold_rows = groups.len() as u64;
    (out, expected)
}

/// Builds one record's JSON with at most one kind of dirt; returns it and whether the contract
/// accepts it.
fn dirty_record(rng: &mut Rng, id: u64, o: &Order, amount: &str, batch: u32, batches: u32) -> (String, bool) {
    let mut fields: Vec<(&str, String)> = vec![
        ("order_id", id.to_string()),
        ("customer_id", o.customer_id.to_string()),
        ("amount", amount.to_string()),
        ("currency", json(o.currency)),
        ("order_date", json(&o.date)),
        ("region", json(REGIONS[o.region].0)),
        ("source", json(o.source)),
    ];
    let roll = rng.below(1000);
    let valid = match roll {
        0..30 => {
            fields[2].1 = ["0", "0.0", "-12.5", "-0.01"][usize::try_from(rng.below(4)).unwrap_or(0)].to_string();
            false
        }
        30..40 => {
            fields[3].1 = json(&o.currency.to_lowercase());
            true
        }
        40..50 => {
            fields[3].1 = json(["AUD", "XYZ", "", "US$", "mxn"][usize::try_from(rng.below(5)).unwrap_or(0)]);
            false
        }
        50..55 => {
            if rng.chance(500) {
                fields[1].1 = json(&format!("C-{}", o.customer_id));
            } else {
                let d = chrono::NaiveDate::parse_from_str(&o.date, "%Y-%m-%d").unwrap_or_default();
                fields[4].1 = json(&d.format("%d/%m/%Y").to_string());
            }
            false
        }
        55..60 => {
            let i = usize::try_from(rng.below(3)).unwrap_or(0);
            let quoted = json(&fields[i].1);
            fields[i].1 = quoted;
            true
        }
        60..65 => {
            let i = usize::try_from(rng.below(7)).unwrap_or(0);
            if rng.chance(500) {
                fields.remove(i);
            } else {
                fields[i].1 = "null".into();
            }
            false
        }
        _ => true,
    };
    let mut s = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "\"{k}\": {v}");
    }
    if batch >= batches / 2 && rng.chance(800) {
        let _ =
            write!(s, ", \"tier\": \"{}\"", ["gold", "silver", "bronze"][usize::try_from(rng.below(3)).unwrap_or(0)]);
    }
    if batch >= batches * 3 / 4 && rng.chance(300) {
        let _ = write!(s, ", \"promo_code\": \"P{}\"", rng.below(1000));
    }
    s.push('}');
    (s, valid)
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn uuid_like(rng: &mut Rng) -> String {
    let a = rng.next();
    let b = rng.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Tiers of the sample customers.
const TIERS: [&str; 3] = ["bronze", "silver", "gold"];

/// Customer master data for the customers of `batches`' orders, as a CRM would export it: one
/// record per customer as of 2023-12-01, and later records (at midnight UTC, in January and
/// February 2024) for the customers whose tier changed; some change twice, some re-send an
/// unchanged tier.
pub fn customers(batches: &[SampleBatch], seed: u64) -> Vec<String> {
    let mut ids: Vec<u64> = batches
        .iter()
        .flat_map(|b| &b.records)
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .filter_map(|v| v.get("customer_id").and_then(serde_json::Value::as_u64))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut rng = Rng(seed ^ 0xC057);
    let mut out = Vec::new();
    let record = |id: u64, tier: &str, day: &str| {
        format!(
            r#"{{"customer_id": {id}, "name": "Customer {id}", "tier": "{tier}", "updated_at": "{day}T00:00:00Z"}}"#
        )
    };
    for id in ids {
        let mut tier = rng.below(3) as usize;
        out.push(record(id, TIERS[tier], "2023-12-01"));
        let changes = match rng.below(100) {
            0..=24 => 1,
            25..=29 => 2,
            _ => 0,
        };
        let mut day = 1 + rng.below(20);
        for _ in 0..changes {
            tier = (tier + 1 + rng.below(2) as usize) % 3;
            let date = if day <= 31 { format!("2024-01-{day:02}") } else { format!("2024-02-{:02}", day - 31) };
            out.push(record(id, TIERS[tier], &date));
            day += 5 + rng.below(20);
        }
        if rng.below(100) < 5 {
            out.push(record(id, TIERS[tier], "2024-02-28"));
        }
    }
    out
}

impl SampleBatch {
    /// The batch as bronze NDJSON, every record carrying its provenance (as other systems write it).
    pub fn bronze_ndjson(&self, source: &str) -> String {
        let mut s = String::new();
        for r in &self.records {
            let _ = writeln!(
                s,
                "{{\"_batch_id\": \"{}\", \"_ingested_at\": \"{}\", \"_source\": \"{source}\", {}",
                self.batch_id,
                self.ingested_at,
                &r[1..]
            );
        }
        s
    }

    /// The batch as plain NDJSON, as a producer would send it.
    pub fn landing_ndjson(&self) -> String {
        let mut s = self.records.join("\n");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_dirty() {
        let spec = SampleSpec { rows: 20_000, batches: 4, seed: 7 };
        let (a, ea) = generate(&spec);
        let (b, eb) = generate(&spec);
        assert_eq!(ea, eb);
        assert_eq!(a[3].records, b[3].records);
        assert_eq!(ea.records, 20_000);
        assert!(ea.invalid > 800 && ea.invalid < 1400, "{ea:?}");
        assert!(ea.silver_rows < ea.valid, "re-sends must exist: {ea:?}");
        for r in &a[0].records {
            let _: serde_json::Value = serde_json::from_str(r).expect("valid JSON");
        }
    }
}
