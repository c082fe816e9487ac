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

use std::collections::BTreeMap;

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
    let read = |path: String| async move {
        let Some(bytes) = lake.get(&path).await? else { return Ok(None) };
        let item: T =
            serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("corrupt ledger entry {path}: {e}")))?;
        Ok::<_, Error>(Some(item))
    };
    let paths = lake.list(dir).await?.into_iter().map(|meta| meta.location.to_string());
    let items: Vec<Option<T>> =
        futures::stream::iter(paths.map(read)).buffer_unordered(READS_AT_ONCE).try_collect().await?;
    Ok(items.into_iter().flatten().map(|item| (item.number(), item)).collect())
}

async fn put<T: Numbered>(lake: &Lake, dir: &str, table: &str, item: &T) -> Result<()> {
    let path = format!("{dir}/{:010}.json", item.number());
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

/// Every intent of `table`, by number.
pub async fn intents(lake: &Lake, table: &str) -> Result<BTreeMap<i64, Intent>> {
    list(lake, &dir(table)).await
}

/// Records `intent`; refuses to replace an existing one.
pub async fn record(lake: &Lake, table: &str, intent: &Intent) -> Result<()> {
    put(lake, &dir(table), table, intent).await
}

/// Every replay intent of `table`, by number.
pub async fn replay_intents(lake: &Lake, table: &str) -> Result<BTreeMap<i64, ReplayIntent>> {
    list(lake, &replay_dir(table)).await
}

/// Records a replay intent; refuses to replace an existing one.
pub async fn record_replay(lake: &Lake, table: &str, intent: &ReplayIntent) -> Result<()> {
    put(lake, &replay_dir(table), table, intent).await
}
