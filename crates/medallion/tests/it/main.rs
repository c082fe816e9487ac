//! Integration tests of the library: whole runs over lakes in temporary directories.

// Tests say what they expected by failing: panics are their assertions (STYLE.md §3).
#![allow(clippy::panic)]

mod aggregates;
mod backlog;
mod bad_input;
mod common;
mod contracts;
mod dbt;
mod deletion_vectors;
mod events;
mod expectations;
mod formats;
mod gates;
mod history;
mod lineage;
mod merge;
mod pipeline;
mod recovery;
mod reopen;
mod replace;
mod replay;
mod written_files;
