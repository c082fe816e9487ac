//! Table maintenance: compaction (optionally Z-ordered) with a checkpoint, and vacuum of files no
//! recent version references. Contents never change: only the files holding them.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

/// The shortest retention `vacuum` accepts without `force` (Delta's default: 7 days).
pub const MIN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What maintenance did to one table.
#[derive(Debug, Clone, Serialize)]
pub struct Maintained {
    /// `layer/name`.
    pub table: String,
    /// Live data files and their bytes, before and after.
    pub files_before: usize,
    /// Bytes before.
    pub bytes_before: u64,
    /// Files after.
    pub files_after: usize,
    /// Bytes after.
    pub bytes_after: u64,
    /// Files rewritten away (optimize) or deleted from storage (vacuum).
    pub removed: u64,
    /// Files written (optimize).
    pub added: u64,
    /// Delta version after.
    pub version: Option<i64>,
}

impl Maintained {
    /// What an operation did to `t`: `before` is its (files, bytes) when the operation started.
    fn measure(t: &Table, before: (usize, u64), removed: u64, added: u64) -> Result<Self> {
        let (files_before, bytes_before) = before;
        let (files_after, bytes_after) = t.files()?;
        Ok(Self { table: t.label.clone(), files_before, bytes_before, files_after, bytes_after, removed, added, version: t.version() })
    }
}

/// The tables `only` (a name: its silver or gold table and its dead letter) or all of them.
fn tables(project: &Project, only: Option<&str>) -> Result<Vec<(Layer, String)>> {
    let mut out = Vec::new();
    for t in project.silver.keys() {
        out.extend([(Layer::Silver, t.clone()), (Layer::Quarantine, t.clone())]);
    }
    for m in project.gold.keys() {
        out.extend([(Layer::Gold, m.clone()), (Layer::Quarantine, m.clone())]);
    }
    if let Some(name) = only {
        out.retain(|(_, n)| n == name);
        if out.is_empty() {
            let known = project.silver.keys().chain(project.gold.keys()).cloned().collect();
            return Err(Error::Unknown { kind: "table", name: name.to_string(), known });
        }
    }
    Ok(out)
}

/// Compacts every table (or `only`), Z-ordering by `zorder` when given, into files of about
/// `target_size` bytes (default: delta-rs's, 100 MiB).
pub async fn optimize(lake: &Lake, project: &Project, only: Option<&str>, zorder: &[String], target_size: Option<u64>) -> Result<Vec<Maintained>> {
    let mut out = Vec::new();
    for (layer, name) in tables(project, only)? {
        let t = Table::open(lake, layer, &name).await?;
        if !t.exists() {
            continue;
        }
        let before = t.files()?;
        let (t, removed, added) = t.optimize(if layer == Layer::Quarantine { &[] } else { zorder }, target_size).await?;
        out.push(Maintained::measure(&t, before, removed, added)?);
    }
    Ok(out)
}

/// Vacuums every table (or `only`), keeping the files of versions younger than `retain`.
pub async fn vacuum(lake: &Lake, project: &Project, only: Option<&str>, retain: Duration, force: bool, dry_run: bool) -> Result<Vec<Maintained>> {
    if retain < MIN_RETENTION && !force {
        return Err(Error::Refused {
            what: format!("vacuum with a retention of {}", crate::quality::checks::human(retain.as_secs() as i64)),
            why: format!(
                "time travel and readers still on older versions need their files for at least {}; pass --force to go below",
                crate::quality::checks::human(MIN_RETENTION.as_secs() as i64)
            ),
        });
    }
    let mut out = Vec::new();
    for (layer, name) in tables(project, only)? {
        let t = Table::open(lake, layer, &name).await?;
        if !t.exists() {
            continue;
        }
        let before = t.files()?;
        let (t, deleted) = t.vacuum(retain, force, dry_run).await?;
        out.push(Maintained::measure(&t, before, deleted.len() as u64, 0)?);
    }
    Ok(out)
}

/// After a run: compacts the append-only tables (dead letters, expectation results, the event
/// log) that hold more than `project.compact_above_files` files. Returns what it compacted.
pub async fn compact_appended(lake: &Lake, project: &Project) -> Result<Vec<Maintained>> {
    let limit = project.compact_above_files;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut candidates: Vec<(Layer, String)> = project.silver.keys().chain(project.gold.keys()).map(|n| (Layer::Quarantine, n.clone())).collect();
    candidates.push((Layer::System, crate::quality::results::TABLE.to_string()));
    candidates.push((Layer::System, crate::observability::events::TABLE.to_string()));
    let mut out = Vec::new();
    for (layer, name) in candidates {
        let t = Table::open(lake, layer, &name).await?;
        let before = t.files()?;
        if !t.exists() || before.0 <= limit {
            continue;
        }
        let (t, removed, added) = t.optimize(&[], None).await?;
        let done = Maintained::measure(&t, before, removed, added)?;
        tracing::info!(table = %done.table, files_before = done.files_before, files_after = done.files_after, "compacted");
        out.push(done);
    }
    Ok(out)
}

/// When the last policy vacuum ran (`_medallion/maintenance.json`).
const STATE: &str = "_medallion/maintenance.json";

/// After a run: vacuums every table if the project's `vacuum_every` has passed since the last
/// policy vacuum. Returns what it vacuumed (empty when not due or not configured).
pub async fn vacuum_if_due(lake: &Lake, project: &Project, now: crate::orchestration::run::Now) -> Result<Vec<Maintained>> {
    let Some((every, retain)) = project.vacuum else { return Ok(Vec::new()) };
    let last: Option<crate::orchestration::run::Now> = match lake.get(STATE).await? {
        Some(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("last_vacuum").and_then(|t| t.as_str()).and_then(|t| t.parse().ok())),
        None => None,
    };
    if last.is_some_and(|l| (now - l).num_seconds() < every.seconds as i64) {
        return Ok(Vec::new());
    }
    let done = vacuum(lake, project, None, Duration::from_secs(retain.seconds), false, false).await?;
    let state = serde_json::json!({ "last_vacuum": now.to_rfc3339() });
    lake.put(STATE, serde_json::to_vec_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?).await?;
    Ok(done)
}
