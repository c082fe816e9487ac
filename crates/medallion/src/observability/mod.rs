//! Observability: the run log in `_medallion/runs/`.

pub mod runlog;
