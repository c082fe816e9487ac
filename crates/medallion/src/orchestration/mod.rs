//! Running a project, the one module that knows the whole run: node selection ([`select`]), whole
//! runs ([`run`]: ingest, the DAG with retries, events, maintenance), `medallion test`
//! ([`mod@test`]) and the Airflow export ([`airflow`]). The shared run state it drives lives in
//! [`crate::runtime`].

pub mod airflow;
pub mod run;
pub mod select;
pub mod test;
