//! The promotion ledger: which bronze batches each silver commit promoted.
//!
//! ```text
//! _medallion/ledger/silver/<table>/<N>.json   intent N: the batches promotion N covers
//!            │ written once its batches are validated, before any commit; never rewritten
//!            ▼
//! quarantine/<table>  commit with txn (medallion/silver/<table>, N)   (skipped if already there)
//! silver/<table>      commit with txn (medallion/silver/<table>, N)   ← intent N is done
//! ```
//!
//! Intent N is committed exactly when the silver table's recorded txn version for the app id is
//! ≥ N. A crash anywhere leaves at most one open intent (N = committed + 1), which the next run
//! resumes with exactly the same batches, so no batch is promoted twice and none is skipped.
//!
//! A run needs the batches every committed intent since the last rebuild covered: one read per
//! intent, which grows with the table's history (a table promoted daily for a year has 365, each
//! a GET on an object store). So every [`SUMMARY_EVERY`] committed intents, a run sums them up in
//! `_medallion/ledger/summary/silver/<table>.json` (the last intent it covers, the last rebuild,
//! the batches since), and the next runs read it and only the intents after it ([`promoted`]).
//! The summary is derived from committed intents alone, so a crash while writing it leaves the
//! previous one, as good; it names the silver table it describes (its Delta table id), so a table
//! deleted and made again ignores it.

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::BatchFile;
use crate::storage::Lake;

/// One promotion's intent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    /// Its number, also the txn version of its commits.
    pub version: i64,
    /// The run that wrote it.
    pub run_id: String,
    /// The batches it covers, oldest first.
    pub batches: Vec<BatchFile>,
    /// A rebuild: its batches are every batch of the source, and its commits replace the table
    /// and its dead letter; intents before it no longer count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuild: bool,
}

/// The application id of a silver table's commits.
pub fn app_id(table: &str) -> String {
    format!("medallion/silver/{table}")
}

fn dir(table: &str) -> String {
    format!("_medallion/ledger/silver/{table}")
}

/// One dead-letter replay's intent: the records (`_id`s) it covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayIntent {
    /// Its number, also the txn version of its silver and quarantine commits.
    pub version: i64,
    /// The run that wrote it.
    pub run_id: String,
    /// The dead-letter records it replays.
    pub ids: Vec<String>,
}

/// The application id of a silver table's replay commits (silver MERGE and quarantine rewrite).
pub fn replay_app_id(table: &str) -> String {
    format!("medallion/replay/{table}")
}

fn replay_dir(table: &str) -> String {
    format!("_medallion/ledger/replay/{table}")
}

/// A rebuild asked for and maybe not done yet: recorded when a run that rebuilds a table starts,
/// so that a run killed before the rebuild's intent was recorded still rebuilds it next time.
/// It is done once an intent marked `rebuild` numbered above `after` is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebuildRequest {
    /// The table's committed promotion when it was asked.
    pub after: i64,
    /// The run that asked.
    pub run_id: String,
}

fn rebuild_path(table: &str) -> String {
    format!("_medallion/ledger/rebuild/{table}.json")
}

/// Records that `table` is to be rebuilt (replacing an earlier request).
pub async fn request_rebuild(lake: &Lake, table: &str, request: &RebuildRequest) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(request).map_err(|e| Error::Internal(e.to_string()))?;
    lake.put(&rebuild_path(table), bytes).await
}

/// The rebuild asked for `table`, if any.
pub async fn rebuild_request(lake: &Lake, table: &str) -> Result<Option<RebuildRequest>> {
    let path = rebuild_path(table);
    let Some(bytes) = lake.get(&path).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Internal(format!("corrupt ledger entry {path}: {e}")))
}

/// Forgets the rebuild asked for `table` (once one is committed).
pub async fn clear_rebuild_request(lake: &Lake, table: &str) -> Result<()> {
    lake.delete(&rebuild_path(table)).await
}

/// Something kept in the ledger under a number.
trait Numbered: Serialize + serde::de::DeserializeOwned {
    fn number(&self) -> i64;
}

impl Numbered for Intent {
    fn number(&self) -> i64 {
        self.version
    }
}

impl Numbered for ReplayIntent {
    fn number(&self) -> i64 {
        self.version
    }
}

/// How many ledger entries are read at once: a table promoted daily for a year has 365, and an
/// object store answers each read in tens of milliseconds.
const READS_AT_ONCE: usize = 32;

async fn list<T: Numbered>(lake: &Lake, dir: &str) -> Result<BTreeMap<i64, T>> {
    let paths = lake.list(dir).await?.into_iter().map(|meta| meta.location.to_string());
    read_all(lake, paths).await
}

/// The entries at `paths`, by number (a path gone meanwhile is skipped).
async fn read_all<T: Numbered>(lake: &Lake, paths: impl Iterator<Item = String>) -> Result<BTreeMap<i64, T>> {
    let read = |path: String| async move {
        let Some(bytes) = lake.get(&path).await? else { return Ok(None) };
        let item: T =
            serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("corrupt ledger entry {path}: {e}")))?;
        Ok::<_, Error>(Some(item))
    };
    let items: Vec<Option<T>> =
        futures::stream::iter(paths.map(read)).buffer_unordered(READS_AT_ONCE).try_collect().await?;
    Ok(items.into_iter().flatten().map(|item| (item.number(), item)).collect())
}

/// The file name of entry `number`: names sort as numbers do.
fn entry_name(number: i64) -> String {
    format!("{number:010}.json")
}

async fn put<T: Numbered>(lake: &Lake, dir: &str, table: &str, item: &T) -> Result<()> {
    let path = format!("{dir}/{}", entry_name(item.number()));
    let bytes = serde_json::to_vec_pretty(item).map_err(|e| Error::Internal(e.to_string()))?;
    if lake.put_if_absent(&path, bytes).await? {
        Ok(())
    } else {
        Err(Error::Busy {
            table: format!("silver/{table}"),
            message: format!("{path} was just recorded by another run"),
        })
    }
}

/// What the intents of a silver table say ([`promoted`]).
#[derive(Debug, Default)]
pub struct Promoted {
    /// The highest intent number recorded, committed or not (0: none).
    pub last: i64,
    /// The intent numbered one past the committed ones, when recorded: a promotion that stopped
    /// before its commit.
    pub open: Option<Intent>,
    /// The newest committed rebuild's number (0: none).
    pub last_rebuild: i64,
    /// The batches (paths) the committed intents since the newest rebuild covered, its own
    /// included: every batch already promoted.
    pub done: HashSet<String>,
}

/// The committed intents of a table through one of them, summed up (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    /// The silver table's Delta table id.
    table_id: String,
    /// The last intent it covers.
    through: i64,
    /// [`Promoted::last_rebuild`] through it.
    last_rebuild: i64,
    /// [`Promoted::done`] through it, sorted.
    done: Vec<String>,
}

/// A run sums up the committed intents once this many were committed since the last summary.
pub const SUMMARY_EVERY: i64 = 10;

fn summary_path(table: &str) -> String {
    format!("_medallion/ledger/summary/silver/{table}.json")
}

/// What the intents of `table` say, its silver table having committed `committed` of them and
/// having the Delta table id `table_id` (None: no silver table). Reads its summary, when one
/// describes this table through at most `committed`, and the intents after it; writes a new
/// summary once [`SUMMARY_EVERY`] intents were committed since.
pub async fn promoted(lake: &Lake, table: &str, committed: i64, table_id: Option<&str>) -> Result<Promoted> {
    let summary = match table_id {
        Some(id) => summary(lake, table, id, committed).await,
        None => None,
    };
    let through = summary.as_ref().map_or(0, |s| s.through);
    let mut out = match summary {
        Some(s) => {
            Promoted { last: s.through, open: None, last_rebuild: s.last_rebuild, done: s.done.into_iter().collect() }
        }
        None => Promoted::default(),
    };
    let dir = dir(table);
    let after = lake.list_after(&dir, &format!("{dir}/{}", entry_name(through))).await?;
    let numbered: Vec<(i64, String)> = after
        .into_iter()
        .filter_map(|meta| {
            let n = meta.location.filename()?.strip_suffix(".json")?.parse::<i64>().ok()?;
            (n > through).then(|| (n, meta.location.to_string()))
        })
        .collect();
    out.last = numbered.iter().map(|(n, _)| *n).fold(out.last, i64::max);
    let wanted = numbered.into_iter().filter(|(n, _)| *n <= committed + 1).map(|(_, path)| path);
    for (n, intent) in read_all::<Intent>(lake, wanted).await? {
        if n > committed {
            out.open = Some(intent);
            continue;
        }
        if intent.rebuild {
            out.done.clear();
            out.last_rebuild = n;
        }
        out.done.extend(intent.batches.into_iter().map(|b| b.path));
    }
    if let Some(id) = table_id
        && committed - through >= SUMMARY_EVERY
    {
        let mut done: Vec<String> = out.done.iter().cloned().collect();
        done.sort();
        let summary = Summary { table_id: id.to_string(), through: committed, last_rebuild: out.last_rebuild, done };
        let bytes = serde_json::to_vec(&summary).map_err(|e| Error::Internal(e.to_string()))?;
        // Only a shortcut: without it, the next run reads the intents again.
        if let Err(e) = lake.put(&summary_path(table), bytes).await {
            tracing::warn!(table, "the ledger's summary was not written: {e}");
        }
    }
    Ok(out)
}

/// The summary of `table`'s intents, when there is one of the silver table `table_id` through at
/// most `committed` intents (a table restored to an older version has fewer).
async fn summary(lake: &Lake, table: &str, table_id: &str, committed: i64) -> Option<Summary> {
    let path = summary_path(table);
    let bytes = match lake.get(&path).await {
        Ok(bytes) => bytes?,
        Err(e) => {
            tracing::warn!(table, "the ledger's summary was not read, the intents are: {e}");
            return None;
        }
    };
    match serde_json::from_slice::<Summary>(&bytes) {
        Ok(s) if s.table_id == table_id && s.through <= committed => Some(s),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(table, "corrupt ledger summary {path}, the intents are read instead: {e}");
            None
        }
    }
}

/// Records `intent`; refuses to replace an existing one.
pub async fn record(lake: &Lake, table: &str, intent: &Intent) -> Result<()> {
    put(lake, &dir(table), table, intent).await
}

/// Opens the promotion of `intent` into silver `table`, before any of its commits: records it,
/// unless it is `resumed` (the run that died recorded it), then passes the node's `intent` fault
/// point.
pub async fn open(lake: &Lake, table: &str, intent: &Intent, resumed: bool) -> Result<()> {
    if !resumed {
        record(lake, table, intent).await?;
    }
    super::faults::check(&format!("silver/{table}"), "intent")
}

/// Every replay intent of `table`, by number.
pub async fn replay_intents(lake: &Lake, table: &str) -> Result<BTreeMap<i64, ReplayIntent>> {
    list(lake, &replay_dir(table)).await
}

/// Records a replay intent; refuses to replace an existing one.
pub async fn record_replay(lake: &Lake, table: &str, intent: &ReplayIntent) -> Result<()> {
    put(lake, &replay_dir(table), table, intent).await
}
