//! What `run` does to a table's files after a successful run: the compaction and vacuum policy
//! ([`Maintenance`]), validated by the project and carried out by `maintenance`.

use crate::spec::Duration;

/// The shortest retention `vacuum` accepts without `force` (Delta's default: 7 days).
pub const MIN_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// What `run` does to a table after a successful run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Maintenance {
    /// Compact when it holds more live files than this (0: never).
    pub compact_above_files: usize,
    /// Z-order compacted files by these columns.
    pub zorder: Vec<String>,
    /// Size of compacted files (None: the table's `delta.targetFileSize`, else delta-rs's default).
    pub target_size: Option<u64>,
    /// Vacuum (every, retain).
    pub vacuum: Option<(Duration, Duration)>,
    /// Purge deletion vectors (rewrite the files that have one without their deleted rows) when
    /// they delete more than this share of the table's file rows (None: never after a run).
    pub purge_deleted_above: Option<f64>,
}

/// The default `purge_deleted_above`: readers of a merge-on-read table read at most ~10% of rows
/// only to skip them before the next run rewrites them away.
pub const PURGE_DELETED_ABOVE: f64 = 0.1;
