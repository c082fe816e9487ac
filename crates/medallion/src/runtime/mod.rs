//! What every layer shares at run time and that is not the run itself: the clock ([`clock`]),
//! the fault-injection hook ([`faults`]), the memory budget ([`memory`]), the promotion and
//! replay ledger ([`ledger`]), one writer per lake ([`lock`]), the event log ([`events`]), and the
//! pure planning helpers of a run: DAG order ([`dag`]) and cron fires ([`schedule`]). It sits
//! below bronze, silver, quality and gold so that they use it without knowing the run that calls
//! them ([`crate::orchestration`]).

pub mod clock;
pub mod dag;
pub mod events;
pub mod faults;
pub mod ledger;
pub mod lock;
pub mod memory;
pub mod schedule;

pub use clock::{NodeStage, Now, Timings, ms, new_run_id, now};
