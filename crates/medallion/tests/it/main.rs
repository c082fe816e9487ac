//! Integration tests of the library: whole runs over lakes in temporary directories.

mod bad_input;
mod common;
mod expectations;
mod formats;
mod gates;
mod history;
mod lineage;
mod merge;
mod pipeline;
mod recovery;
mod replay;
