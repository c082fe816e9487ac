//! Observability: the run log in `_medallion/runs/`, the event log `_medallion/events`, metrics,
//! OpenLineage events and the HTML report.

pub mod events;
pub mod lineage;
pub mod metrics;
pub mod report;
pub mod runlog;
