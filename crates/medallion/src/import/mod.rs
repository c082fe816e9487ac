//! Bringing projects from other tools: `medallion import dbt`.

pub mod dbt;
mod seed;
