//! Observability: the run log in `_medallion/runs/`, metrics, OpenLineage events and the HTML
//! report, all read from what a run wrote (the event log itself is [`crate::runtime::events`]).

pub mod lineage;
pub mod metrics;
pub mod report;
pub mod runlog;
