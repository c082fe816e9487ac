//! Running a project: the order of work ([`dag`]), the promotion ledger ([`ledger`]), one writer
//! per lake ([`lock`]) and whole runs ([`run`]).

pub mod dag;
pub mod ledger;
pub mod lock;
pub mod run;
