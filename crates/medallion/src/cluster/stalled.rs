//! A scheduler's watch for jobs that can no longer finish.
//!
//! Ballista 55 can leave a job running with nothing to run: when an executor dies while another
//! is fetching its shuffle output, the scheduler's two recoveries (resubmit the fetching stage,
//! roll back the stages the dead executor served) race, a task's status is ignored, and no stage
//! of the job ever becomes runnable again. The driver waits for the job for good (seen in the
//! cluster check: a gold write whose executor was killed, the survivor idle for 10 minutes).
//!
//! The watch looks at the running jobs every [`LOOK_EVERY`]. A job is stalled when, at
//! [`LOOKS`] looks in a row, it has no task running and none to run while no task of any job
//! runs and executors are registered. Executors that are alive ask for work every 50 ms while
//! idle, so a job that could run a stage has done so well within that time. A stalled job is
//! cancelled: its driver's node gets the job's error (`Job <id> failed: Cancelled`), which its
//! retries take for transient, so the node runs again within the run (past them, the next run).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

/// How often the running jobs are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// Looks in a row at which a job had nothing running nor to run, on an idle cluster, that make
/// it stalled.
const LOOKS: u32 = 3;

/// What one look saw of the cluster.
#[derive(Debug)]
pub(super) struct Look<J> {
    /// Jobs with no task running and none to run, not finished.
    pub idle: Vec<J>,
    /// A task of some job runs, or no executor is registered: nothing is stalled now.
    pub busy: bool,
    /// Jobs with a task running.
    pub running: Vec<J>,
}

/// Per job, the looks in a row at which it was idle on an idle cluster, after `look`.
pub(super) fn count<J: Eq + Hash>(before: HashMap<J, u32>, look: Look<J>) -> HashMap<J, u32> {
    if look.busy {
        return HashMap::new();
    }
    let mut before = before;
    look.idle
        .into_iter()
        .map(|job| {
            let n = before.remove(&job).unwrap_or(0) + 1;
            (job, n)
        })
        .collect()
}

/// The jobs `counts` call stalled.
pub(super) fn stalled<J: Clone>(counts: &HashMap<J, u32>) -> Vec<J> {
    counts.iter().filter(|(_, n)| **n >= LOOKS).map(|(job, _)| job.clone()).collect()
}

/// Watches `scheduler`'s running jobs until the process ends, cancelling stalled ones.
///
/// A test hook: with `MEDALLION_FAULT_AT=cluster/scheduler:stall[:<times>]` the watch looks every
/// 200 ms and takes the first job it sees running for stalled (the first `times` times, default
/// once): the cancel path and the driver's retry run without an executor lost at the right moment.
pub(super) async fn watch(scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>) {
    let forced = std::env::var("MEDALLION_FAULT_AT").is_ok_and(|f| f.starts_with("cluster/scheduler:stall"));
    let mut counts = HashMap::new();
    let mut every = tokio::time::interval(if forced { Duration::from_millis(200) } else { LOOK_EVERY });
    let why = format!(
        "at {LOOKS} looks {}s apart it had no task running and none to run while the cluster was idle \
         (Ballista lost track of its stages, likely after an executor was lost); the driver's node runs it again",
        LOOK_EVERY.as_secs()
    );
    loop {
        every.tick().await;
        let look = look(&scheduler).await;
        let running = look.running.first().cloned();
        counts = count(counts, look);
        let mut jobs: Vec<_> = stalled(&counts).into_iter().map(|job| (job, why.as_str())).collect();
        if forced
            && jobs.is_empty()
            && let Some(job) = running
            && crate::runtime::faults::check("cluster/scheduler", "stall").is_err()
        {
            jobs.push((job, "taken for stalled by MEDALLION_FAULT_AT"));
        }
        for (job, why) in jobs {
            tracing::warn!("Cancelling job {job}: {why}");
            counts.remove(&job);
            if let Err(e) = scheduler.cancel_job(job.clone()).await {
                tracing::error!("Failed to cancel stalled job {job}: {e}");
            }
        }
    }
}

async fn look(scheduler: &SchedulerServer<LogicalPlanNode, PhysicalPlanNode>) -> Look<ballista_core::JobId> {
    let executors = scheduler.state.executor_manager.get_executors_state().await.map_or(0, |e| e.len());
    let mut look = Look { idle: Vec::new(), busy: executors == 0, running: Vec::new() };
    for (job, info) in scheduler.state.task_manager.get_running_job_cache().iter() {
        let graph = info.execution_graph.read().await;
        if !graph.running_tasks().is_empty() {
            look.busy = true;
            look.running.push(job.clone());
        } else if graph.available_tasks() == 0 && !graph.is_successful() {
            look.idle.push(job.clone());
        }
    }
    look
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looks(seen: &[(&[&'static str], bool)]) -> HashMap<&'static str, u32> {
        seen.iter().fold(HashMap::new(), |counts, (idle, busy)| {
            count(counts, Look { idle: idle.to_vec(), busy: *busy, running: Vec::new() })
        })
    }

    #[test]
    fn a_job_idle_on_an_idle_cluster_look_after_look_is_stalled() {
        let counts = looks(&[(&["a", "b"], false), (&["a"], false), (&["a"], false)]);
        assert_eq!(stalled(&counts), vec!["a"], "b ran between looks: {counts:?}");
        let counts = looks(&[(&["a"], false), (&["a"], false)]);
        assert!(stalled(&counts).is_empty(), "two looks are not enough: {counts:?}");
    }

    #[test]
    fn a_busy_cluster_or_a_look_the_job_was_not_idle_starts_the_count_again() {
        // Another job's task running: a job waiting for a slot is not stalled.
        let counts = looks(&[(&["a"], false), (&["a"], false), (&["a"], true), (&["a"], false), (&["a"], false)]);
        assert!(stalled(&counts).is_empty(), "{counts:?}");
        // The job itself ran something in between.
        let counts = looks(&[(&["a"], false), (&["a"], false), (&[], false), (&["a"], false), (&["a"], false)]);
        assert!(stalled(&counts).is_empty(), "{counts:?}");
        let counts =
            looks(&[(&["a"], false), (&["a"], false), (&[], false), (&["a"], false), (&["a"], false), (&["a"], false)]);
        assert_eq!(stalled(&counts), vec!["a"]);
    }
}
