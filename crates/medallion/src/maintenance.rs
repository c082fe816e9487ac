//! Table maintenance: compaction (optionally Z-ordered) with a checkpoint, and vacuum of files no
//! recent version references. Contents never change: only the files holding them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::runtime::lock;
use crate::storage::delta::{CommitMark, Table};
use crate::storage::{Lake, Layer, Maintenance};

pub use crate::storage::MIN_RETENTION;

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
    /// Rows deletion vectors had marked deleted that a purge dropped from the files (optimize).
    pub purged_rows: u64,
    /// Delta version after.
    pub version: Option<i64>,
}

impl Maintained {
    /// What an operation did to `t`: `before` is its (files, bytes) when the operation started.
    fn measure(t: &Table, before: (usize, u64), removed: u64, added: u64, purged_rows: u64) -> Result<Self> {
        let (files_before, bytes_before) = before;
        let (files_after, bytes_after) = t.files()?;
        Ok(Self {
            table: t.label.clone(),
            files_before,
            bytes_before,
            files_after,
            bytes_after,
            removed,
            added,
            purged_rows,
            version: t.version(),
        })
    }
}

/// Purges `t`'s deletion vectors (rewrites the files that have one without their deleted rows),
/// measuring files and bytes before and after.
async fn purge(t: Table) -> Result<(Table, Maintained)> {
    let before = t.files()?;
    let (deleted, _) = t.deleted_rows()?;
    let (t, removed, added) = t.purge().await?;
    let done = Maintained::measure(&t, before, removed, added, deleted)?;
    Ok((t, done))
}

/// Compacts `t` (Z-ordered by `zorder`) after purging its deletion vectors, measuring files and
/// bytes before and after.
async fn compact(t: Table, zorder: &[String], target_size: Option<u64>) -> Result<(Table, Maintained)> {
    let before = t.files()?;
    let (t, purged) = purge(t).await?;
    let (t, removed, added) = t.optimize(zorder, target_size).await?;
    let done = Maintained::measure(&t, before, purged.removed + removed, purged.added + added, purged.purged_rows)?;
    Ok((t, done))
}

/// Files a policy's compaction writes when neither the policy nor the table
/// (`delta.targetFileSize`) names a size: delta-rs's default.
const TARGET_SIZE: u64 = 100 << 20;

/// Packs `t`'s small files (under half of `target_size`) into files of about `target_size`
/// without their deleted rows, measuring files and bytes before and after. Unlike [`compact`], it
/// neither purges nor rewrites the larger files: after a run, a compaction costs the files written
/// since the last one. (Compact-then-optimize rewrote the whole table twice: at 20M records in 80
/// one-batch runs, the two compactions took 4.5 and 8.5 s and peaked at 872 MB.)
async fn compact_small(t: Table, target_size: u64) -> Result<(Table, Maintained)> {
    let before = t.files()?;
    let (deleted_before, _) = t.deleted_rows()?;
    let (t, removed, added) = t.compact_small(target_size).await?;
    let (deleted_after, _) = t.deleted_rows()?;
    let done = Maintained::measure(&t, before, removed, added, deleted_before.saturating_sub(deleted_after))?;
    Ok((t, done))
}

/// Whether `t`'s deletion vectors delete more than `share` of its files' rows.
fn purge_due(t: &Table, share: Option<f64>) -> Result<bool> {
    let Some(share) = share else { return Ok(false) };
    let (deleted, rows) = t.deleted_rows()?;
    Ok(deleted > 0 && deleted as f64 > share * rows as f64)
}

/// Vacuums `t`, measuring files and bytes before and after.
async fn sweep(t: Table, retain: Duration, force: bool, dry_run: bool) -> Result<(Table, Maintained)> {
    let before = t.files()?;
    let (t, deleted) = t.vacuum(retain, force, dry_run).await?;
    let done = Maintained::measure(&t, before, deleted.len() as u64, 0, 0)?;
    Ok((t, done))
}

/// Sweeps the files under `t`, a table never created, that are older than `retain` (a first write
/// killed before its commit left them: [`Table::sweep_uncreated`]); None when there are none.
async fn sweep_uncreated(t: &Table, retain: Duration, dry_run: bool) -> Result<Option<Maintained>> {
    let swept = t.sweep_uncreated(retain, dry_run).await?;
    if swept.is_empty() {
        return Ok(None);
    }
    tracing::info!(table = %t.label, files = swept.len(), dry_run, "files of a table never created swept");
    Ok(Some(Maintained {
        table: t.label.clone(),
        files_before: 0,
        bytes_before: 0,
        files_after: 0,
        bytes_after: 0,
        removed: swept.len() as u64,
        added: 0,
        purged_rows: 0,
        version: None,
    }))
}

/// The tables `only` names (a name: its silver or gold table and its dead letter; `silver/orders`,
/// as runs and errors name a table, or `silver.orders`: that one) or all of them.
fn tables(project: &Project, only: Option<&str>) -> Result<Vec<(Layer, String)>> {
    let mut out = Vec::new();
    for t in project.silver.keys() {
        out.extend([(Layer::Silver, t.clone()), (Layer::Quarantine, t.clone())]);
    }
    for m in project.gold.keys() {
        out.extend([(Layer::Gold, m.clone()), (Layer::Quarantine, m.clone())]);
    }
    if let Some(name) = only {
        let (layer, table) = Layer::split(name).map_or((None, name), |(l, n)| (Some(l), n));
        out.retain(|(l, n)| n == table && layer.is_none_or(|layer| *l == layer));
        if out.is_empty() {
            let known = project.silver.keys().chain(project.gold.keys()).cloned().collect();
            return Err(Error::Unknown { kind: "table", name: name.to_string(), known });
        }
    }
    Ok(out)
}

/// Compacts every table (or `only`), Z-ordering by `zorder` when given, into files of about
/// `target_size` bytes (default: delta-rs's, 100 MiB), after purging every deletion vector. Holds
/// the lake's lock (waiting up to `lock_wait` for another writer): a run's commit would conflict.
pub async fn optimize(
    lake: &Lake,
    project: &Project,
    only: Option<&str>,
    (zorder, target_size): (&[String], Option<u64>),
    lock_wait: Duration,
) -> Result<Vec<Maintained>> {
    let tables = tables(project, only)?;
    let lock = lock::acquire_waiting(lake, "optimize", lock_wait).await?;
    let optimized = async {
        let mut out = Vec::new();
        for (layer, name) in tables {
            let t = Table::open(lake, layer, &name).await?;
            if t.exists() {
                out.push(compact(t, if layer == Layer::Quarantine { &[] } else { zorder }, target_size).await?.1);
            }
        }
        Ok(out)
    };
    lock.release_after(optimized.await).await
}

/// Vacuums every table (or `only`), keeping the files of versions younger than `retain`; of a
/// table never created, removes the files older than `retain` (a first write killed before its
/// commit wrote them, and no commit will ever name them). Holds
/// the lake's lock (waiting up to `lock_wait` for another writer), unless it only lists
/// (`dry_run`): a full vacuum deletes files no commit names, and a run's or an ingest's files are
/// such files until it commits (with a short `--retain`, they would go).
pub async fn vacuum(
    lake: &Lake,
    project: &Project,
    only: Option<&str>,
    (retain, force, dry_run): (Duration, bool, bool),
    lock_wait: Duration,
) -> Result<Vec<Maintained>> {
    if retain < MIN_RETENTION && !force {
        return Err(Error::Refused {
            what: format!("vacuum with a retention of {}", crate::quality::checks::human(retain.as_secs() as i64)),
            why: format!(
                "time travel and readers still on older versions need their files for at least {}; pass --force to go below",
                crate::quality::checks::human(MIN_RETENTION.as_secs() as i64)
            ),
        });
    }
    let tables = tables(project, only)?;
    let lock = match dry_run {
        true => None,
        false => Some(lock::acquire_waiting(lake, "vacuum", lock_wait).await?),
    };
    let vacuumed = async {
        let mut out = Vec::new();
        for (layer, name) in tables {
            let t = Table::open(lake, layer, &name).await?;
            if t.exists() {
                out.push(sweep(t, retain, force, dry_run).await?.1);
            } else {
                out.extend(sweep_uncreated(&t, retain, dry_run).await?);
            }
        }
        if only.is_none() {
            out.extend(sweep_bronze(lake, retain, dry_run).await?);
        }
        Ok(out)
    };
    match lock {
        Some(lock) => lock.release_after(vacuumed.await).await,
        None => vacuumed.await,
    }
}

/// Where bronze batches are (`bronze/<source>/<date>/<batch>`).
const BRONZE: &str = "bronze";

/// Removes the bronze uploads a killed ingest left behind on a local lake, older than `retain`
/// (a batch is renamed into place whole, so they were never a batch and nothing lists them);
/// measured as `bronze` when there were any.
async fn sweep_bronze(lake: &Lake, retain: Duration, dry_run: bool) -> Result<Option<Maintained>> {
    let older_than = std::time::SystemTime::now().checked_sub(retain);
    let swept = lake.sweep_abandoned(BRONZE, older_than, dry_run)?;
    if swept.is_empty() {
        return Ok(None);
    }
    let batches = lake.list(BRONZE).await?;
    let bytes = batches.iter().map(|b| b.size).sum();
    Ok(Some(Maintained {
        table: BRONZE.to_string(),
        files_before: batches.len(),
        bytes_before: bytes,
        files_after: batches.len(),
        bytes_after: bytes,
        removed: swept.len() as u64,
        added: 0,
        purged_rows: 0,
        version: None,
    }))
}

/// A table's policy: its own for silver and gold tables (`maintenance = { … }`), its table's for a
/// dead letter (without Z-order), the project's for medallion's own tables.
fn policy(project: &Project, layer: Layer, name: &str) -> Maintenance {
    let default = || Maintenance {
        compact_above_files: project.compact_above_files,
        zorder: Vec::new(),
        target_size: None,
        vacuum: project.vacuum,
        purge_deleted_above: Some(crate::storage::PURGE_DELETED_ABOVE),
    };
    let of = |name: &str| {
        project
            .silver
            .get(name)
            .map(|t| t.maintenance.clone())
            .or_else(|| project.gold.get(name).map(|m| m.maintenance.clone()))
    };
    match layer {
        Layer::Silver | Layer::Gold => of(name).unwrap_or_else(default),
        Layer::Quarantine => of(name).map(|m| Maintenance { zorder: Vec::new(), ..m }).unwrap_or_else(default),
        Layer::System => default(),
    }
}

/// Commits between the checkpoints a run writes, for tables that do not set
/// `delta.checkpointInterval` (Spark's default; delta-rs's is 100): a run opens each of its tables
/// once from its log, and each commit since the last checkpoint costs that open about 1 ms.
const CHECKPOINT_EVERY: u64 = 10;

/// When each table was last vacuumed by policy, and what each was last checked at
/// (`_medallion/maintenance.json`).
const STATE: &str = "_medallion/maintenance.json";

/// A table as maintenance last left it: its latest commit then, and the policy it was checked
/// against. While both still hold, nothing can have become due but a vacuum (which goes by time),
/// so the table is not loaded: each load replays its log (10-40 ms for a 20-commit table, several
/// requests on an object store), and most of a run's tables (dead letters, medallion's own,
/// models not rebuilt) are not written by it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Checked {
    commit: CommitMark,
    compact_above_files: usize,
    purge_deleted_above: Option<f64>,
}

impl Checked {
    fn of(commit: CommitMark, p: &Maintenance) -> Checked {
        Checked { commit, compact_above_files: p.compact_above_files, purge_deleted_above: p.purge_deleted_above }
    }

    /// Whether `p` is the policy this check was made against and nothing was committed since.
    async fn still_holds(&self, lake: &Lake, p: &Maintenance) -> Result<bool> {
        let same =
            self.compact_above_files == p.compact_above_files && self.purge_deleted_above == p.purge_deleted_above;
        Ok(same && self.commit.is_latest(lake).await?)
    }
}

/// After a successful run: compacts every table holding more live files than its policy's
/// `compact_above_files` (Z-ordered by its `zorder`), purges the deletion vectors of one whose
/// deleted rows pass its `purge_deleted_above` share, and vacuums every table whose policy's
/// `vacuum_every` has passed since its last policy vacuum; then writes a checkpoint of every
/// table committed to `CHECKPOINT_EVERY` (10) times or more since its last one, whatever its policy.
/// Returns (compacted or purged, vacuumed).
pub async fn after_run(
    lake: &Lake,
    project: &Project,
    now: crate::runtime::Now,
) -> Result<(Vec<Maintained>, Vec<Maintained>)> {
    let mut candidates = tables(project, None)?;
    candidates.push((Layer::System, crate::quality::results::TABLE.to_string()));
    candidates.push((Layer::System, crate::runtime::events::TABLE.to_string()));
    // Kept models' states: rewritten every run, so their replaced files wait for vacuum.
    candidates.extend(project.gold.keys().map(|m| (Layer::System, crate::gold::aggregates::state_name(m))));
    let mut state: serde_json::Map<String, serde_json::Value> =
        lake.get(STATE).await?.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    // Lakes written before per-table state kept one time for all tables.
    let legacy = state.get("last_vacuum").and_then(|t| t.as_str()).and_then(|t| t.parse::<crate::runtime::Now>().ok());
    let mut vacuumed_at = state
        .remove("vacuumed")
        .and_then(|v| serde_json::from_value::<BTreeMap<String, String>>(v).ok())
        .unwrap_or_default();
    let mut checked: BTreeMap<String, Checked> =
        state.remove("checked").and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    let checked_before = checked.clone();
    // Tables the project no longer declares are forgotten.
    checked.retain(|label, _| candidates.iter().any(|(layer, name)| *label == format!("{layer}/{name}")));
    let (mut compacted, mut vacuumed) = (Vec::new(), Vec::new());
    // Every table that may have work is loaded, side by side: each load replays the table's log
    // (mostly synchronously), and a run commits to several.
    let loads = candidates.into_iter().map(|(layer, name)| {
        let p = policy(project, layer, &name);
        let label = format!("{layer}/{name}");
        let last = vacuumed_at.get(&label).and_then(|t| t.parse::<crate::runtime::Now>().ok()).or(legacy);
        let vacuum_due =
            p.vacuum.filter(|(every, _)| last.is_none_or(|l| (now - l).num_seconds() >= every.seconds as i64));
        let (lake, check) = (lake.clone(), checked.get(&label).cloned());
        tokio::spawn(async move {
            if vacuum_due.is_none()
                && let Some(c) = check
                && c.still_holds(&lake, &p).await?
            {
                return Ok(None);
            }
            let t = Table::open(&lake, layer, &name).await?;
            Ok::<_, Error>(Some((label, p, vacuum_due, t)))
        })
    });
    let opened = futures::future::join_all(loads).await;
    // The tables loaded: each is checkpointed if due.
    let mut loaded: Vec<Table> = Vec::new();
    // In the project's order, one at a time: compactions and vacuums are whole-table work.
    for load in opened {
        let Some((label, p, vacuum_due, mut t)) =
            load.map_err(|e| Error::Internal(format!("loading a table for maintenance: {e}")))??
        else {
            continue;
        };
        if !t.exists() {
            if let Some((_, retain)) = vacuum_due {
                vacuumed.extend(sweep_uncreated(&t, Duration::from_secs(retain.seconds), false).await?);
                vacuumed_at.insert(label.clone(), now.to_rfc3339());
            }
            checked.remove(&label);
            continue;
        }
        if p.compact_above_files > 0 && t.files()?.0 > p.compact_above_files {
            let (after, done) = if p.zorder.is_empty() && !t.partitioned()? {
                // As delta-rs's optimize sizes them: the policy's size, else the table's own.
                let target = p.target_size.or_else(|| t.target_file_size()).unwrap_or(TARGET_SIZE);
                compact_small(t, target).await?
            } else {
                compact(t, &p.zorder, p.target_size).await?
            };
            tracing::info!(table = %done.table, files_before = done.files_before, files_after = done.files_after, "compacted");
            compacted.push(done);
            t = after;
        } else if purge_due(&t, p.purge_deleted_above)? {
            let (after, done) = purge(t).await?;
            tracing::info!(table = %done.table, rows = done.purged_rows, files = done.removed, "deletion vectors purged");
            compacted.push(done);
            t = after;
        }
        if let Some((_, retain)) = vacuum_due {
            let (after, done) = sweep(t, Duration::from_secs(retain.seconds), false, false).await?;
            vacuumed.push(done);
            vacuumed_at.insert(label.clone(), now.to_rfc3339());
            t = after;
        }
        match t.commit_mark(lake).await? {
            Some(commit) => checked.insert(label, Checked::of(commit, &p)),
            None => checked.remove(&label),
        };
        loaded.push(t);
    }
    // Tables committed to in step (once each per run) come due in the same run: their checkpoints
    // are written side by side, each on its own task (~15 ms each for the benchmark's tables, most
    // of it the kernel replaying the log, synchronously).
    let due = loaded.into_iter().map(|t| {
        let lake = lake.clone();
        tokio::spawn(async move {
            if t.checkpoint_if_due(&lake, CHECKPOINT_EVERY).await? {
                tracing::debug!(table = %t.label, version = t.version(), "checkpoint written");
            }
            Ok::<_, Error>(())
        })
    });
    for done in futures::future::join_all(due).await {
        done.map_err(|e| Error::Internal(format!("checkpoint task: {e}")))??;
    }
    crate::runtime::faults::check("maintenance", "state")?;
    if !vacuumed.is_empty() || checked != checked_before {
        fn json(v: impl Serialize) -> Result<serde_json::Value> {
            serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))
        }
        if !vacuumed.is_empty() {
            state.remove("last_vacuum");
        }
        state.insert("vacuumed".into(), json(&vacuumed_at)?);
        state.insert("checked".into(), json(&checked)?);
        lake.put(STATE, serde_json::to_vec_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?).await?;
    }
    Ok((compacted, vacuumed))
}
