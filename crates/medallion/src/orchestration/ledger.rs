//! The promotion ledger: which bronze batches each silver commit promoted.
//!
//! ```text
//! _medallion/ledger/silver/<table>/<N>.json   intent N: the batches promotion N covers
//!            │ written before any commit; never rewritten once written
//!            ▼
//! quarantine/<table>  commit with txn (medallion/silver/<table>, N)   (skipped if already there)
//! silver/<table>      commit with txn (medallion/silver/<table>, N)   ← intent N is done
//! ```
//!
//! Intent N is committed exactly when the silver table's recorded txn version for the app id is
//! ≥ N. A crash anywhere leaves at most one open intent (N = committed + 1), which the next run
//! resumes with exactly the same batches, so no batch is promoted twice and none is skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bronze::batches::BatchFile;
use crate::error::{Error, Result};
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
}

/// The application id of a silver table's commits.
pub fn app_id(table: &str) -> String {
    format!("medallion/silver/{table}")
}

fn dir(table: &str) -> String {
    format!("_medallion/ledger/silver/{table}")
}

/// Every intent of `table`, by number.
pub async fn intents(lake: &Lake, table: &str) -> Result<BTreeMap<i64, Intent>> {
    let mut out = BTreeMap::new();
    for meta in lake.list(&dir(table)).await? {
        let path = meta.location.to_string();
        let Some(bytes) = lake.get(&path).await? else { continue };
        let intent: Intent = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("corrupt ledger entry {path}: {e}")))?;
        out.insert(intent.version, intent);
    }
    Ok(out)
}

/// Records `intent`; refuses to replace an existing one.
pub async fn record(lake: &Lake, table: &str, intent: &Intent) -> Result<()> {
    let path = format!("{}/{:010}.json", dir(table), intent.version);
    let bytes = serde_json::to_vec_pretty(intent).map_err(|e| Error::Internal(e.to_string()))?;
    if lake.put_if_absent(&path, bytes).await? {
        Ok(())
    } else {
        Err(Error::Busy {
            table: format!("silver/{table}"),
            message: format!("promotion {} was just recorded by another run ({path})", intent.version),
        })
    }
}
