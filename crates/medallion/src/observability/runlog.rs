//! The run log: one JSON document per run at `_medallion/runs/<run_id>.json` (run ids sort by
//! start time), holding the run's summary with its accounting (`orchestration::run::RunSummary`).

use crate::error::{Error, Result};
use crate::storage::Lake;

const DIR: &str = "_medallion/runs";

/// Stores the summary of run `run_id`.
pub async fn record(lake: &Lake, run_id: &str, summary: &impl serde::Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(summary).map_err(|e| Error::Internal(e.to_string()))?;
    lake.put(&format!("{DIR}/{run_id}.json"), bytes).await
}

/// The most recent runs' summaries as JSON, newest first.
pub async fn recent(lake: &Lake, limit: usize) -> Result<Vec<serde_json::Value>> {
    let mut items = lake.list(DIR).await?;
    items.reverse();
    let mut out = Vec::new();
    for meta in items.into_iter().take(limit) {
        let path = meta.location.to_string();
        if let Some(bytes) = lake.get(&path).await? {
            let v =
                serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("corrupt run log {path}: {e}")))?;
            out.push(v);
        }
    }
    Ok(out)
}
