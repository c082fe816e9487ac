//! # medallion
//!
//! Medallion-architecture pipelines (bronze → silver → gold) on a Delta Lake lakehouse.
//!
//! A [`project::Project`] declares bronze sources, silver contracts and gold SQL models. A run
//! ([`orchestration::run::run`]) lands raw input in bronze ([`bronze`]), validates and promotes it
//! into silver ([`silver`]), and rebuilds gold models ([`gold`]). Every bronze record ends up
//! promoted, superseded by a newer duplicate, or in the dead letter with its reasons.
//!
//! ## Glossary
//! - **layer**: bronze (raw, immutable), silver (typed, deduplicated), gold (SQL models);
//!   quarantine holds the dead letter of each silver table.
//! - **source**: a named stream of raw records landing in bronze.
//! - **batch**: one immutable bronze file, `bronze/<source>/<date>/<batch_id>.ndjson.gz` (a CSV
//!   source's: `<batch_id>.csv.gz`, the file's text).
//! - **contract**: a silver table's typed columns, transforms and checks.
//! - **promotion**: one pass of pending batches into a silver table, recorded as an intent in the
//!   ledger and committed with a Delta application transaction.
//! - **expectation / gate**: a row rule with an action (warn, drop, fail) checked on a run's
//!   candidate data before it is committed.
//! - **model**: a gold SQL query over silver and gold tables.
//! - **run**: one execution of the whole project, recorded in the run log.
//!
//! ## Cargo features
//! The local-filesystem lake is always available.
//! - `s3` (default), `gcs`, `azure`: object-store lakes (`s3://`, `gs://`, `az://`).
//! - `cluster`: computing on an Apache DataFusion Ballista cluster ([`cluster`]): the scheduler
//!   and executor processes, a driver's session on them, bronze files validated there
//!   (`silver::distributed`) and gold queries run there.

#![warn(missing_docs)]

pub mod bronze;
pub mod catalog;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod error;
pub mod functions;
pub mod gold;
pub mod import;
pub mod init;
pub mod maintenance;
pub mod observability;
pub mod orchestration;
pub mod project;
pub mod quality;
pub mod runtime;
pub mod sample;
pub mod silver;
pub mod spec;
pub mod storage;
#[cfg(test)]
mod testing;

pub use error::{Error, Result};

/// This library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Arrow version medallion is built with, for callers that handle its record batches.
pub use datafusion::arrow;
pub use datafusion::parquet;
