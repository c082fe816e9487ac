//! Quality gates: expectations evaluated on a run's candidate data before anything is committed.
//!
//! ```text
//! candidate rows ─▶ row-level gates (vectorised, while streaming)
//!                ─▶ staged candidate table ─▶ set/table-level checks (SQL)
//!                     each failure: warn: record, publish
//!                               ├▶ drop: failing rows of this run to the dead letter, publish the rest
//!                               └▶ fail: publish nothing for the table; dependents not run
//! ```
//!
//! Every result is kept in `_medallion/expectations` ([`results`]).

pub mod audit;
pub mod candidate;
pub mod checks;
pub mod gates;
pub mod quarantine;
pub mod results;
