//! Running a project: the order of work ([`dag`]), the promotion ledger ([`ledger`]), one writer
//! per lake ([`lock`]), node selection ([`select`]) and whole runs ([`run`]).

pub mod airflow;
pub mod dag;
pub mod faults;
pub mod ledger;
pub mod lock;
pub mod run;
pub mod schedule;
pub mod select;
