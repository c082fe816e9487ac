//! Prometheus metrics of a lake, gathered from the event log and the tables' commits at scrape
//! time (so they survive restarts and count every run, whoever started it).
//!
//! - `medallion_rows_total{node, kind}`: records read, inserted (gold: rows written by rebuilds),
//!   updated, deleted, superseded, rejected per transition, over every run;
//! - `medallion_runs_total{status}` and `medallion_last_run_duration_seconds`;
//! - `medallion_last_commit_timestamp_seconds{table}` and `medallion_freshness_lag_seconds{table}`
//!   (now minus the last commit), with `medallion_sla_seconds{table}` where one is declared;
//! - `medallion_dead_letter_outstanding{table}`.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use prometheus::{Encoder, Gauge, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::catalog;
use crate::error::{Error, Result};
use crate::project::Project;
use crate::runtime::Now;
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

fn metric<T>(r: std::result::Result<T, prometheus::Error>) -> Result<T> {
    r.map_err(|e| Error::Internal(format!("metrics: {e}")))
}

/// The metrics in Prometheus' text exposition format.
pub async fn gather(lake: &Lake, project: &Project, now: Now) -> Result<String> {
    let registry = Registry::new();
    let rows = metric(IntCounterVec::new(
        Opts::new("medallion_rows_total", "Records per transition and outcome, over every run"),
        &["node", "kind"],
    ))?;
    let runs = metric(IntCounterVec::new(Opts::new("medallion_runs_total", "Runs by outcome"), &["status"]))?;
    let last_duration = metric(Gauge::new("medallion_last_run_duration_seconds", "Wall time of the last run"))?;
    let committed = metric(IntGaugeVec::new(
        Opts::new("medallion_last_commit_timestamp_seconds", "Time of the table's last commit"),
        &["table"],
    ))?;
    let lag = metric(IntGaugeVec::new(
        Opts::new("medallion_freshness_lag_seconds", "Seconds since the table's last commit"),
        &["table"],
    ))?;
    let sla = metric(IntGaugeVec::new(Opts::new("medallion_sla_seconds", "The table's declared SLA"), &["table"]))?;
    let dead = metric(IntGaugeVec::new(
        Opts::new("medallion_dead_letter_outstanding", "Records waiting in the dead letter"),
        &["table"],
    ))?;
    for c in [Box::new(rows.clone()) as Box<dyn prometheus::core::Collector>, Box::new(runs.clone())] {
        metric(registry.register(c))?;
    }
    for c in [
        Box::new(last_duration.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(committed.clone()),
        Box::new(lag.clone()),
        Box::new(sla.clone()),
        Box::new(dead.clone()),
    ] {
        metric(registry.register(c))?;
    }

    let ctx = catalog::session(lake, project).await?;
    let context = "gathering metrics from the event log";
    let sql = "SELECT node, sum(rows_read), sum(rows_inserted), sum(rows_updated), sum(rows_deleted), sum(rows_superseded), sum(rows_rejected) \
               FROM medallion.events WHERE type = 'node_finished' AND node IS NOT NULL GROUP BY node";
    for b in catalog::query(&ctx, sql, context).await? {
        let nodes = cast(b.column(0), &DataType::Utf8).map_err(|e| Error::arrow(context, e))?;
        let nodes = nodes.as_string::<i32>();
        for (i, kind) in ["read", "inserted", "updated", "deleted", "superseded", "rejected"].iter().enumerate() {
            let col = cast(b.column(i + 1), &DataType::Int64).map_err(|e| Error::arrow(context, e))?;
            let col = col.as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                if col.is_valid(r) {
                    rows.with_label_values(&[nodes.value(r), kind]).inc_by(u64::try_from(col.value(r)).unwrap_or(0));
                }
            }
        }
    }
    let sql = "SELECT status, count(*) FROM medallion.events WHERE type = 'run_finished' GROUP BY status";
    for b in catalog::query(&ctx, sql, context).await? {
        let status = cast(b.column(0), &DataType::Utf8).map_err(|e| Error::arrow(context, e))?;
        let status = status.as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            runs.with_label_values(&[status.value(r)]).inc_by(u64::try_from(n.value(r)).unwrap_or(0));
        }
    }
    let sql = "SELECT duration_ms FROM medallion.events WHERE type = 'run_finished' ORDER BY at DESC LIMIT 1";
    for b in catalog::query(&ctx, sql, context).await? {
        let d = b.column(0).as_primitive::<Int64Type>();
        if b.num_rows() > 0 && d.is_valid(0) {
            last_duration.set(d.value(0) as f64 / 1000.0);
        }
    }

    let tables = project
        .silver
        .values()
        .map(|t| (Layer::Silver, t.name.clone(), t.sla.map(|d| d.seconds)))
        .chain(project.gold.values().map(|m| (Layer::Gold, m.name.clone(), m.sla.map(|s| s.seconds))));
    for (layer, name, declared) in tables {
        let label = format!("{layer}/{name}");
        let t = Table::open(lake, layer, &name).await?;
        if let Some(at) = t.recent_commits(Some(1)).await?.first().and_then(|c| c.timestamp) {
            committed.with_label_values(&[&label]).set(at.timestamp());
            lag.with_label_values(&[&label]).set((now - at).num_seconds());
        }
        if let Some(s) = declared {
            sla.with_label_values(&[&label]).set(i64::try_from(s).unwrap_or(i64::MAX));
        }
        if layer == Layer::Silver {
            let n = crate::silver::dead_letter::outstanding(lake, &name).await?;
            dead.with_label_values(&[&label]).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    let mut out = Vec::new();
    metric(TextEncoder::new().encode(&registry.gather(), &mut out))?;
    String::from_utf8(out).map_err(|e| Error::Internal(format!("metrics: {e}")))
}
