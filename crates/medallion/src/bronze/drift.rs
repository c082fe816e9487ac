//! Schema drift of a source: which fields its records carry and with which JSON types, kept in
//! `_medallion/schema/<source>.json`. The first batch ever promoted is the baseline; a later batch
//! bringing a new field, or a new JSON type for a known field, is recorded as a drift event (in
//! the run log, and for `status`) with the batch that first showed it. Bronze still accepts it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::batches::BatchFile;
use super::decode::Kind;
use crate::error::{Error, Result};
use crate::storage::Lake;

/// Fields seen in one batch, with the kinds of their values.
pub type Observed = BTreeMap<String, BTreeSet<Kind>>;

/// A change in what a source's records carry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriftEvent {
    /// Source.
    pub source: String,
    /// Field.
    pub field: String,
    /// `new_field` or `new_type`.
    pub change: String,
    /// JSON types it arrived with (`string`, `number`, `bool`, `nested`; empty: only nulls).
    pub types: Vec<String>,
    /// Types known before (for `new_type`).
    pub known: Vec<String>,
    /// The batch that first showed it.
    pub batch_id: String,
    /// That batch's `_ingested_at`.
    pub ingested_at: Option<String>,
    /// The run that noticed it.
    pub run_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SourceSchema {
    /// Field → JSON types seen.
    fields: BTreeMap<String, BTreeSet<String>>,
    /// Every drift event, oldest first.
    drift: Vec<DriftEvent>,
}

fn path(source: &str) -> String {
    format!("_medallion/schema/{source}.json")
}

async fn load(lake: &Lake, source: &str) -> Result<Option<SourceSchema>> {
    let path = path(source);
    match lake.get(&path).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("corrupt schema record {path}: {e}"))),
    }
}

/// Compares what `batches` carried (`observed`, one per batch, in order) with what `source` is
/// known to carry, records the new, and returns the drift events.
pub async fn observe(
    lake: &Lake,
    source: &str,
    run_id: &str,
    batches: &[BatchFile],
    observed: &[Observed],
) -> Result<Vec<DriftEvent>> {
    let stored = load(lake, source).await?;
    let baseline = stored.is_none();
    let mut schema = stored.unwrap_or_default();
    let mut events = Vec::new();
    let mut changed = false;
    for (i, (file, fields)) in batches.iter().zip(observed).enumerate() {
        for (field, kinds) in fields {
            let types: BTreeSet<String> = kinds.iter().filter_map(|k| k.json_type()).map(str::to_string).collect();
            let event = |change: &str, types: Vec<String>, known: Vec<String>| DriftEvent {
                source: source.to_string(),
                field: field.clone(),
                change: change.to_string(),
                types,
                known,
                batch_id: file.batch_id.clone(),
                ingested_at: file.ingested_at.clone(),
                run_id: run_id.to_string(),
            };
            match schema.fields.get_mut(field) {
                None => {
                    if !(baseline && i == 0) {
                        events.push(event("new_field", types.iter().cloned().collect(), Vec::new()));
                    }
                    schema.fields.insert(field.clone(), types);
                    changed = true;
                }
                Some(known) => {
                    let new: Vec<String> = types.difference(known).cloned().collect();
                    if new.is_empty() {
                        continue;
                    }
                    // A field seen only as null so far gets its first type: not a change.
                    if !known.is_empty() {
                        events.push(event("new_type", new, known.iter().cloned().collect()));
                    }
                    known.extend(types);
                    changed = true;
                }
            }
        }
    }
    if changed {
        schema.drift.extend(events.iter().cloned());
        let bytes = serde_json::to_vec_pretty(&schema).map_err(|e| Error::Internal(e.to_string()))?;
        lake.put(&path(source), bytes).await?;
    }
    Ok(events)
}

/// Every drift event recorded for `source`, oldest first.
pub async fn recorded(lake: &Lake, source: &str) -> Result<Vec<DriftEvent>> {
    Ok(load(lake, source).await?.map(|s| s.drift).unwrap_or_default())
}
