//! A test hook for failure handling: `MEDALLION_FAULT_AT=<node>:<step>[:<times>|abort[<n>]]` (e.g.
//! `silver/orders:merge:1`) makes that step of that node fail with a transient storage error the
//! first `times` times (default 1) the process reaches it, or with `abort` kills the process there
//! (as `kill -9` would), the `n`th time it gets there (default the first). Steps:
//! `bronze/<source>:ingest` (before landing), `bronze/<source>:batch` (marker written, batch not
//! yet), `bronze/<source>:page` (an HTTP source's page landed, its fetch state not moved past it),
//! `silver/<table>:intent` (intent recorded, nothing committed), `silver/<table>:dead_letter` (the
//! dead letter about to be written while the merge reads and writes; nothing committed),
//! `silver/<table>:merge` (dead letter committed, silver not), `gold/<model>:write` (silver
//! committed, gold not), `gold/<model>:export` (gold committed, its Parquet export not),
//! `gold/<model>:exporting` (the export reading the table's rows), `silver/<table>:replay` (a
//! replay's MERGE committed, its dead-letter rewrite not), `cluster/scan:execute` (an executor
//! starts reading a shipped table's files), `cluster/scheduler:stall` (a scheduler takes the first
//! job it sees running for stalled and cancels it), `maintenance:state` (the maintenance after a run
//! compacted, vacuumed and checkpointed what was due, and has not recorded what it checked). Unset,
//! it costs one environment lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

static REACHED: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

/// Fails if the hook names `node`'s `step` and has not fired its count yet.
pub fn check(node: &str, step: &str) -> Result<()> {
    let Ok(spec) = std::env::var("MEDALLION_FAULT_AT") else { return Ok(()) };
    let mut parts = spec.rsplitn(3, ':').collect::<Vec<_>>();
    parts.reverse();
    let (target, times, abort) = match parts.as_slice() {
        [n, s, a] if a.strip_prefix("abort").is_some_and(|t| t.is_empty() || t.parse::<u32>().is_ok()) => {
            (format!("{n}:{s}"), a["abort".len()..].parse::<u32>().unwrap_or(1), true)
        }
        [n, s, t] if t.parse::<u32>().is_ok() => (format!("{n}:{s}"), t.parse::<u32>().unwrap_or(1), false),
        _ => (spec.clone(), 1, false),
    };
    let here = format!("{node}:{step}");
    if target != here {
        return Ok(());
    }
    let mut reached = REACHED.lock().map_err(|_| Error::Internal("fault hook poisoned".into()))?;
    let count = reached.get_or_insert_with(HashMap::new).entry(here.clone()).or_insert(0);
    *count += 1;
    if abort {
        if *count == times {
            eprintln!("MEDALLION_FAULT_AT={spec}: aborting");
            std::process::abort();
        }
        return Ok(());
    }
    if *count > times {
        return Ok(());
    }
    Err(Error::Storage {
        location: here,
        cause: object_store::Error::Generic {
            store: "fault injection",
            source: format!("MEDALLION_FAULT_AT={spec} (time {count})").into(),
        },
    })
}
