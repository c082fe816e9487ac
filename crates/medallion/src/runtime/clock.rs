//! The run clock: points in time ([`Now`], read from an injected value, never from the wall clock
//! inside a step), run ids that sort by start time, and timing helpers.

use std::time::Instant;

/// A point in time, UTC.
pub type Now = chrono::DateTime<chrono::Utc>;

/// The current time (the default clock).
pub fn now() -> Now {
    chrono::Utc::now()
}

/// A new run id: `[<kind>-]<UTC start>-<random>`, so ids sort by start time.
pub fn new_run_id(kind: Option<&str>, now: Now) -> String {
    let id = format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    kind.map_or_else(|| id.clone(), |k| format!("{k}-{id}"))
}

/// `now` plus `i` microseconds: distinct, ordered ingest times for inputs given together.
pub fn later(now: Now, i: usize) -> Now {
    now + chrono::Duration::microseconds(i64::try_from(i).unwrap_or(i64::MAX))
}

/// Milliseconds since `t`, for timings and event latencies.
pub fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A stage of a node's work, ordered as a node goes through them: a silver table's
/// (`read_validate`, `dedup`, `history`, `audit`, `dead_letter`, `merge`: its dead letter lands
/// before the merge commits) and a gold model's (`prepare`, `query`, `expectations`,
/// `dead_letter`, `write`, `state`, `export`). Serialized by its snake-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStage {
    /// Silver: bronze read, coerced and checked.
    ReadValidate,
    /// Silver: the latest record per key kept.
    Dedup,
    /// Silver: SCD type 2 versions rebuilt.
    History,
    /// Silver: set-level expectations over the merge candidate.
    Audit,
    /// Gold: inputs opened, the model planned.
    Prepare,
    /// Gold: its SQL, or its groups brought forward from changes.
    Query,
    /// Gold: expectations over its rows.
    Expectations,
    /// Rejected or dropped rows written to the dead letter.
    DeadLetter,
    /// Silver: the upsert committed.
    Merge,
    /// Gold: its table written.
    Write,
    /// Gold: a kept model's state saved.
    State,
    /// Gold: its outputs exported.
    Export,
}

impl NodeStage {
    /// Its name, as events and `run -v` show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadValidate => "read_validate",
            Self::Dedup => "dedup",
            Self::History => "history",
            Self::Audit => "audit",
            Self::Prepare => "prepare",
            Self::Query => "query",
            Self::Expectations => "expectations",
            Self::DeadLetter => "dead_letter",
            Self::Merge => "merge",
            Self::Write => "write",
            Self::State => "state",
            Self::Export => "export",
        }
    }
}

impl std::fmt::Display for NodeStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Milliseconds per stage of a node, in the order it goes through them.
pub type Timings = std::collections::BTreeMap<NodeStage, u64>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage serializes as the name it shows.
    #[test]
    fn stages_serialize_by_their_names() {
        let all = [
            NodeStage::ReadValidate,
            NodeStage::Dedup,
            NodeStage::History,
            NodeStage::Audit,
            NodeStage::Prepare,
            NodeStage::Query,
            NodeStage::Expectations,
            NodeStage::DeadLetter,
            NodeStage::Merge,
            NodeStage::Write,
            NodeStage::State,
            NodeStage::Export,
        ];
        for s in all {
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::Value::from(s.name())), "{s:?}");
        }
    }
}
