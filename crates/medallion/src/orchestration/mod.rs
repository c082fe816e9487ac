//! Running a project: the order of work ([`dag`]), the promotion ledger ([`ledger`]) and whole
//! runs ([`run`]).

pub mod dag;
pub mod ledger;
pub mod run;
