//! Bringing projects from other tools and data from files: `medallion import dbt`, `medallion
//! import files`.

pub mod dbt;
pub mod files;
mod seed;
