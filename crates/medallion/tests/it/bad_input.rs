//! Bad bronze input: nothing is lost, every bad line is in the dead letter with a located reason.

use medallion::arrow::array::AsArray;

use crate::common::{Env, strings, write_gz};

#[tokio::test(flavor = "multi_thread")]
async fn bad_lines_and_a_truncated_file_land_in_the_dead_letter() {
    let env = Env::new().await;
    let good = r#"{"_batch_id": "b1", "_ingested_at": "2024-03-01T06:00:00.000000+00:00", "_source": "orders", "order_id": 1, "customer_id": 2, "amount": 10.5, "currency": "usd", "order_date": "2024-01-15", "region": "uk", "source": "web"}"#;
    let bad_type = r#"{"_batch_id": "b1", "_ingested_at": "2024-03-01T06:00:00.000000+00:00", "_source": "orders", "order_id": "C-9", "customer_id": 2, "amount": -1, "currency": "AUD", "order_date": "15/01/2024", "region": "uk", "source": "web", "tier": "gold"}"#;
    let nan = r#"{"_batch_id": "b1", "_ingested_at": "2024-03-01T06:00:00.000000+00:00", "_source": "orders", "order_id": 3, "customer_id": 2, "amount": "nan", "currency": "EUR", "order_date": "2024-01-15", "region": "uk", "source": "web"}"#;
    let mut text = format!("{good}\nnot json at all\n{bad_type}\n").into_bytes();
    text.extend_from_slice(b"{\"order_id\": \xff\xfe}\n");
    text.extend_from_slice(format!("{nan}\n").as_bytes());
    write_gz(&env.lake_dir().join("bronze/orders/2024-03-01/b1.ndjson.gz"), &text);

    // A second batch whose gzip stream is cut in half: what was readable is still processed.
    let mut many = String::new();
    for i in 0..4000 {
        many.push_str(&format!(
            "{{\"_batch_id\": \"b2\", \"_ingested_at\": \"2024-03-02T06:00:00.000000+00:00\", \"_source\": \"orders\", \"order_id\": {}, \"customer_id\": 2, \"amount\": 1.25, \"currency\": \"GBP\", \"order_date\": \"2024-01-16\", \"region\": \"uk\", \"source\": \"pos\", \"pad\": \"{}\"}}\n",
            100 + i,
            "x".repeat(i % 97)
        ));
    }
    let path = env.lake_dir().join("bronze/orders/2024-03-02/b2.ndjson.gz");
    write_gz(&path, many.as_bytes());
    let full = std::fs::read(&path).expect("read");
    std::fs::write(&path, &full[..full.len() / 2]).expect("truncate");

    let s = env.run().await;
    let t = &s.totals;
    assert_eq!(t.read, t.promoted + t.superseded + t.rejected);
    let silver = env.scalar_i64("SELECT count(*) FROM silver.orders").await as u64;
    assert!(silver > 1 && silver < 4001, "{silver}");
    assert_eq!(t.promoted, silver);

    let rows = env
        .query("SELECT _line, _source_file, array_to_string(array_distinct(list_sort(list_extract_rules)), ',') AS rules, _raw FROM (SELECT _line, _source_file, _raw, array_agg(e['rule']) AS list_extract_rules FROM (SELECT _line, _source_file, _raw, unnest(_errors) AS e FROM quarantine.orders) GROUP BY _line, _source_file, _raw) ORDER BY _source_file, _line")
        .await;
    let mut found = Vec::new();
    for b in &rows {
        let files = strings(b.column(1));
        let rules = strings(b.column(2));
        for i in 0..b.num_rows() {
            found.push((
                b.column(0).as_primitive::<medallion::arrow::datatypes::Int64Type>().value(i),
                files[i].rsplit('/').next().unwrap_or_default().to_string(),
                rules[i].clone(),
            ));
        }
    }
    let b1: Vec<_> = found.iter().filter(|f| f.1 == "b1.ndjson.gz").cloned().collect();
    assert_eq!(
        b1,
        vec![
            (2, "b1.ndjson.gz".into(), "invalid_json".into()),
            (3, "b1.ndjson.gz".into(), "amount > 0,currency IN ('USD', 'EUR', 'GBP', 'JPY', 'CAD'),type".into()),
            (4, "b1.ndjson.gz".into(), "invalid_utf8".into()),
            (5, "b1.ndjson.gz".into(), "finite".into()),
        ]
    );
    let b2_rules: Vec<&str> = found.iter().filter(|f| f.1 == "b2.ndjson.gz").map(|f| f.2.as_str()).collect();
    assert_eq!(b2_rules.last(), Some(&"unreadable_file"));
    // The raw record keeps every field, drift included.
    let raw = env.query("SELECT _raw FROM quarantine.orders WHERE _line = 3 AND _source_file LIKE '%b1%'").await;
    assert!(strings(raw[0].column(0))[0].contains("\"tier\": \"gold\""));
    // And the valid record of b1 is promoted with its currency upper-cased.
    let cur = env.query("SELECT currency FROM silver.orders WHERE order_id = 1").await;
    assert_eq!(strings(cur[0].column(0)), vec!["USD".to_string()]);
}
