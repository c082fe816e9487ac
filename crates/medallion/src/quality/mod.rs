//! Quality gates: expectations evaluated on a run's candidate data before anything is committed.
//!
//! ```text
//! candidate rows ─▶ every gate (vectorised) ─▶ warn: count, publish
//!                                           ├▶ drop: failing rows to the dead letter, publish the rest
//!                                           └▶ fail: publish nothing for the table; dependents not run
//! ```

pub mod gates;
pub mod test;
