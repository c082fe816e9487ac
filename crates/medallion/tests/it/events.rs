//! Event tables (`dedup = { time, window }`): appended, an event id seen within the window of its
//! event time dropped as superseded, across runs, out of order, through rebuild and replay.

use std::collections::BTreeSet;

use medallion::orchestration::run::RunOptions;
use medallion::storage::Layer;

use crate::common::{Dir, copy_bronze};

const EVENTS: &str = r#"[project]
name = "events"

[sources.clicks]

[silver.clicks]
primary_key = ["event_id"]
columns = [
  { name = "event_id", type = "string" },
  { name = "event_ts", type = "timestamp" },
  { name = "page", type = "string" },
  { name = "ms", type = "int64", checks = ["ms >= 0"] },
]
dedup = { time = "event_ts", window = "1h" }
expectations = [{ name = "some_clicks", row_count = { min = 1 }, action = "fail" }]
"#;

const ROWS: &str =
    "SELECT event_id, to_char(event_ts, '%Y-%m-%dT%H:%M:%SZ'), page, ms FROM silver.clicks ORDER BY 1, 2";

fn click(id: &str, at: &str, page: &str, ms: i64) -> String {
    format!(r#"{{"event_id": "{id}", "event_ts": "2024-03-01T{at}:00Z", "page": "{page}", "ms": {ms}}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_within_the_window_are_superseded_across_runs_rebuilds_and_replays() {
    let d = Dir::new(EVENTS);
    d.bronze(
        "clicks",
        "b1",
        "2024-03-01T11:00:00Z",
        &[
            click("e1", "10:00", "home", 5),
            click("e1", "10:30", "home, resent", 5), // within 1 h of the first: superseded
            click("e2", "10:00", "cart", 7),
            click("e3", "10:00", "pay", -1), // rejected by the check
        ],
    );
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = &s.silver[0];
    assert_eq!((p.read, p.inserted, p.updated, p.superseded, p.rejected), (4, 2, 0, 1, 1), "{p:?}");

    d.bronze(
        "clicks",
        "b2",
        "2024-03-01T13:00:00Z",
        &[
            click("e1", "12:00", "home again", 1), // 2 h after e1's first: a new event
            click("e2", "09:30", "cart, late", 7), // out of order, 30 min before the kept one
            click("e4", "08:00", "new", 2),
            click("e4", "09:01", "new, far", 2),  // 61 min after: a new event
            click("e2", "11:01", "cart, far", 7), // 61 min after e2's kept one: a new event
        ],
    );
    let s = d.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = &s.silver[0];
    assert_eq!((p.read, p.inserted, p.updated, p.superseded, p.rejected), (5, 4, 0, 1, 0), "{p:?}");
    let expected = [
        ["e1", "10:00", "home", "5"],
        ["e1", "12:00", "home again", "1"],
        ["e2", "10:00", "cart", "7"],
        ["e2", "11:01", "cart, far", "7"],
        ["e4", "08:00", "new", "2"],
        ["e4", "09:01", "new, far", "2"],
    ];
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|[id, at, page, ms]| {
            vec![id.to_string(), format!("2024-03-01T{at}:00Z"), page.to_string(), ms.to_string()]
        })
        .collect();
    assert_eq!(d.rows(ROWS).await, expected, "appended, window-deduplicated");

    // A run with nothing new appends nothing.
    let s = d.run().await;
    assert!(s.ok() && s.silver.iter().all(|p| p.inserted == 0), "{:?}", s.silver);
    let version = d.version(Layer::Silver, "clicks").await;

    // Replay: the rejected click passes once the check is loosened; a copy of it inside the
    // window would then be superseded, so replaying twice adds it once.
    d.edit("checks = [\"ms >= 0\"]", "checks = [\"ms >= -1\"]");
    let r = d.try_replay_of("clicks", None, false).await.expect("replay");
    assert_eq!((r.selected, r.promoted(), r.superseded), (1, 1, 0), "{r:?}");
    let r = d.try_replay_of("clicks", None, false).await.expect("replay");
    assert_eq!(r.selected, 0, "{r:?}");
    assert!(d.version(Layer::Silver, "clicks").await > version);
    let with_e3 = d.rows(ROWS).await;
    assert_eq!(with_e3.len(), 7);
    assert!(with_e3.iter().any(|r| r[0] == "e3" && r[3] == "-1"), "{with_e3:?}");

    // A rebuild from bronze with the loosened contract equals a fresh lake over the same bronze
    // (the window applied across every batch, in arrival order).
    let s = d
        .run_with(RunOptions {
            rebuild: BTreeSet::from(["clicks".to_string()]),
            now: medallion::runtime::now(),
            ..Default::default()
        })
        .await;
    assert!(s.ok(), "{:?}", s.failed);
    let p = &s.silver[0];
    assert_eq!((p.read, p.inserted, p.superseded, p.rejected), (9, 7, 2, 0), "{p:?}");
    assert_eq!(d.rows(ROWS).await, with_e3);
    let fresh = Dir::new(&EVENTS.replace("ms >= 0", "ms >= -1"));
    copy_bronze(d.dir.path(), fresh.dir.path());
    let s = fresh.run().await;
    assert!(s.ok(), "{:?}", s.failed);
    assert_eq!(fresh.rows(ROWS).await, with_e3);
}

#[tokio::test(flavor = "multi_thread")]
async fn event_tables_are_checked_by_validate() {
    for (change, message) in [
        ("dedup = { time = \"event_ts\", window = \"1h\" }", "dedup: an event table (`dedup`) keeps no `history`"),
        ("dedup = { time = \"page\", window = \"1h\" }", "must be a timestamp, date or int64"),
        ("dedup = { time = \"nope\", window = \"1h\" }", "time column `nope` is not in the contract"),
        ("dedup = { time = \"event_ts\", window = \"soon\" }", "invalid duration `soon`"),
    ] {
        let mut toml = EVENTS.replace("dedup = { time = \"event_ts\", window = \"1h\" }", change);
        if message.contains("history") {
            toml.push_str("history = { scd = 1 }\n");
            toml = toml.replace(
                "expectations = [{ name = \"some_clicks\", row_count = { min = 1 }, action = \"fail\" }]\n",
                "",
            );
            toml.push_str("expectations = []\n");
        }
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("medallion.toml"), toml).expect("write");
        let err = medallion::project::Project::load(dir.path()).await.expect_err("invalid");
        assert!(err.to_string().contains(message), "{change}: {err}");
    }
}
