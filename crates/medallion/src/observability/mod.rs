//! Observability: the run log in `_medallion/runs/` and the event log `_medallion/events`.

pub mod events;
pub mod metrics;
pub mod report;
pub mod runlog;
