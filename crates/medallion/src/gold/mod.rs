//! Gold: SQL models over silver and other gold tables, rebuilt in dependency order and written as
//! Delta tables in one overwrite commit each.

pub mod aggregates;
pub mod build;
pub mod export;
pub mod extremes;
pub mod models;
