//! The event log: what every run did, node by node, as the Delta table `_medallion/events`
//! (`medallion.events` in `sql`), and streamed to an optional sink while the run goes (the CLI
//! prints them as JSON Lines with `--format json`).
//!
//! Schema version 1, one row per event:
//!
//! | column | meaning |
//! |---|---|
//! | `schema_version` | 1 |
//! | `run_id`, `seq` | the run, and the event's order in it |
//! | `at` | when (UTC) |
//! | `type` | `run_started`, `node_started`, `node_finished`, `node_failed`, `node_skipped`, `run_finished` |
//! | `node` | `bronze/<source>`, `silver/<table>`, `gold/<model>` (null for run events) |
//! | `status` | `ok`, `ingested`, `already_ingested`, `rebuilt`, `incremental`, `up_to_date`, `waiting`, `failed`, `skipped` |
//! | `rows_read`, `rows_inserted`, `rows_updated`, `rows_deleted`, `rows_superseded`, `rows_rejected` | per transition |
//! | `bytes` | bronze bytes read (silver) |
//! | `duration_ms`, `stages_ms` | wall time, and per stage (JSON object) |
//! | `version` | the Delta version the node's commit produced |
//! | `expectations_failed` | expectations that did not pass (warn, drop or fail) |
//! | `attempts` | tries the node took (retries after transient errors + 1) |
//! | `error` | why a node failed or was skipped |
//! | `tool_version` | medallion's version |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::storage::delta::{Table, WriteOptions};
use crate::storage::timestamp_type;
use crate::storage::{Lake, Layer};

/// Name of the table (under `_medallion/`).
pub const TABLE: &str = "events";

/// Version of the event schema.
pub const SCHEMA_VERSION: u32 = 1;

/// One event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run.
    pub run_id: String,
    /// Order within the run.
    pub seq: u32,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Records read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_read: Option<u64>,
    /// Rows inserted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_inserted: Option<u64>,
    /// Rows updated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_updated: Option<u64>,
    /// Rows deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_deleted: Option<u64>,
    /// Records superseded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_superseded: Option<u64>,
    /// Records rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
    /// Bytes read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Wall time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Per stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages_ms: Option<BTreeMap<String, u64>>,
    /// Delta version produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Expectations that did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expectations_failed: Option<u64>,
    /// Attempts the node took (retries after transient errors + 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// medallion's version.
    pub tool_version: &'static str,
}

/// Where events go as they happen.
#[derive(Clone)]
pub struct EventSink(pub Arc<dyn Fn(&Event) + Send + Sync>);

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

/// The events of one run.
#[derive(Debug)]
pub struct Events {
    run_id: String,
    sink: Option<EventSink>,
    all: Mutex<Vec<Event>>,
}

impl Events {
    /// A log for `run_id`, streaming to `sink`.
    pub fn new(run_id: &str, sink: Option<EventSink>) -> Events {
        Events { run_id: run_id.to_string(), sink, all: Mutex::new(Vec::new()) }
    }

    /// Records an event of `kind` for `node`, filled in by `fill`.
    pub fn emit(&self, kind: &'static str, node: Option<&str>, fill: impl FnOnce(&mut Event)) {
        let Ok(mut all) = self.all.lock() else { return };
        let mut e = Event {
            schema_version: SCHEMA_VERSION,
            run_id: self.run_id.clone(),
            seq: u32::try_from(all.len()).unwrap_or(u32::MAX),
            at: chrono::Utc::now().to_rfc3339(),
            kind,
            node: node.map(str::to_string),
            tool_version: crate::VERSION,
            ..Default::default()
        };
        fill(&mut e);
        if let Some(sink) = &self.sink {
            (sink.0)(&e);
        }
        all.push(e);
    }

    /// Appends every event to `_medallion/events` in one commit.
    pub async fn record(&self, lake: &Lake) -> Result<()> {
        let events = self.all.lock().map(|a| a.clone()).unwrap_or_default();
        if events.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&events)?;
        Table::open(lake, Layer::System, TABLE).await?.write(vec![batch], WriteOptions::default()).await?;
        Ok(())
    }
}

/// Schema of `_medallion/events`.
pub fn schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let int = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        int("schema_version"),
        text("run_id"),
        int("seq"),
        Field::new("at", timestamp_type(), true),
        text("type"),
        text("node"),
        text("status"),
        int("rows_read"),
        int("rows_inserted"),
        int("rows_updated"),
        int("rows_deleted"),
        int("rows_superseded"),
        int("rows_rejected"),
        int("bytes"),
        int("duration_ms"),
        text("stages_ms"),
        int("version"),
        int("expectations_failed"),
        int("attempts"),
        text("error"),
        text("tool_version"),
    ]))
}

fn to_batch(events: &[Event]) -> Result<RecordBatch> {
    let n = events.len();
    let mut texts: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut ints: Vec<Int64Builder> = (0..13).map(|_| Int64Builder::with_capacity(n)).collect();
    let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let i = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
    for e in events {
        let stages = e.stages_ms.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default());
        for (b, v) in texts.iter_mut().zip([
            Some(e.run_id.as_str()),
            Some(e.kind),
            e.node.as_deref(),
            e.status.as_deref(),
            stages.as_deref(),
            e.error.as_deref(),
            Some(e.tool_version),
        ]) {
            b.append_option(v);
        }
        for (b, v) in ints.iter_mut().zip([
            Some(i64::from(e.schema_version)),
            Some(i64::from(e.seq)),
            i(e.rows_read),
            i(e.rows_inserted),
            i(e.rows_updated),
            i(e.rows_deleted),
            i(e.rows_superseded),
            i(e.rows_rejected),
            i(e.bytes),
            i(e.duration_ms),
            e.version,
            i(e.expectations_failed),
            e.attempts.map(i64::from),
        ]) {
            b.append_option(v);
        }
        at.append_option(chrono::DateTime::parse_from_rfc3339(&e.at).ok().map(|t| t.timestamp_micros()));
    }
    let t: Vec<ArrayRef> = texts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let v: Vec<ArrayRef> = ints.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let columns: Vec<ArrayRef> = vec![
        v[0].clone(),
        t[0].clone(),
        v[1].clone(),
        Arc::new(at.finish()),
        t[1].clone(),
        t[2].clone(),
        t[3].clone(),
        v[2].clone(),
        v[3].clone(),
        v[4].clone(),
        v[5].clone(),
        v[6].clone(),
        v[7].clone(),
        v[8].clone(),
        v[9].clone(),
        t[4].clone(),
        v[10].clone(),
        v[11].clone(),
        v[12].clone(),
        t[5].clone(),
        t[6].clone(),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| Error::arrow("building the event log", e))
}
