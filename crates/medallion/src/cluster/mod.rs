//! Running on an Apache DataFusion Ballista cluster (cargo feature `cluster`).
//!
//! A run pointed at a scheduler (`--cluster df://host:port`) is the driver: it reads the Delta
//! logs, resolves each table a query reads into its live Parquet files ([`ShippedTable`]), and
//! hands the query's logical plan to the scheduler, which plans it into stages and runs them on
//! the executors (Ballista's shuffle and task retries). A gold model's rows are written by the
//! executors as files of its table (`cluster::write`), audited where they are, and published by the
//! driver's one Delta commit; other results come back to the driver, which audits them and makes
//! the commit, with its app transaction, as in-process. Silver's bronze files travel the same way
//! through a [`NodeCodec`] of its own: validated and deduplicated on the executors, merged by the
//! driver.
//!
//! Executors share nothing with the driver but the object store: they open it with their own
//! configuration (the environment, their `[storage]`), so plans carry paths, never credentials.

mod codec;
mod process;
mod scan;
mod stalled;
mod stores;
mod write;

use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{Partitioning, PlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};

pub use codec::{LogicalCodec, NodeCodec, Nodes, PhysicalCodec};
pub use process::{ExecutorOptions, MIN_EXECUTOR_TIMEOUT, SchedulerOptions, run_executor, run_scheduler};
pub use scan::{ShippedScan, ShippedTable, ticket_numbers, tickets};
pub use stores::LakeStores;
pub use write::{Planner, Target, WriteExec, WriteNode, write};

/// The methods of `ExecutionPlan` every plan node of ours with one child writes alike: its `name`,
/// its `properties` (a field of that name), its child (the field named), no wish for its input
/// to be repartitioned (each task works on the partition it has), and no physical expressions
/// (what the node evaluates travels in its own terms).
macro_rules! one_child_node {
    ($name:literal, $child:ident) => {
        fn name(&self) -> &str {
            $name
        }

        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![&self.$child]
        }

        fn benefits_from_input_partitioning(&self) -> Vec<bool> {
            vec![false]
        }

        fn apply_expressions(
            &self,
            _: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion>,
        ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
    };
}
pub(crate) use one_child_node;

/// The one input of a node of ours that has exactly one (`what` names the node in the error).
pub fn single<T: Clone>(inputs: &[T], what: &str) -> datafusion::error::Result<T> {
    match inputs {
        [one] => Ok(one.clone()),
        _ => Err(datafusion::error::DataFusionError::Internal(format!("{what} takes 1 input, not {}", inputs.len()))),
    }
}

/// The properties of a plan node of ours: its output `schema` in `partitions` partitions (with
/// none of DataFusion's guarantees about their content), bounded, emitting as `emission`.
pub fn node_properties(schema: SchemaRef, partitions: usize, emission: EmissionType) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        emission,
        Boundedness::Bounded,
    ))
}

/// A Ballista scheduler queries are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    url: String,
}

impl Cluster {
    /// `df://host:port` (or `host:port`).
    pub fn parse(text: &str) -> Result<Cluster> {
        let bad = |why: &str| Error::Cluster { what: format!("`{text}`"), message: why.to_string() };
        let rest = text.strip_prefix("df://").unwrap_or(text);
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("expected df://host:port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("expected df://host:port"));
        }
        Ok(Cluster { url: format!("df://{rest}") })
    }

    /// `df://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A session whose queries run on `cluster`, with `state`'s rules (medallion's SQL semantics).
pub async fn session(cluster: &Cluster, state: SessionState) -> Result<SessionContext> {
    session_with(cluster, state, Nodes::new()).await
}

/// A session whose queries run on `cluster`, with `state`'s rules, whose plans may hold the
/// tables of `nodes` (which the scheduler and executors must carry too).
pub async fn session_with(cluster: &Cluster, state: SessionState, nodes: Nodes) -> Result<SessionContext> {
    let config = planning(state.config().clone())
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::with_nodes(nodes.clone())))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::with_nodes(nodes)));
    let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
    // Ballista connects when the first query runs, and reports a refused connection as a
    // transport error: reach the scheduler first, to say which one is missing.
    let address = cluster.url.trim_start_matches("df://");
    let reached =
        tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect(address)).await;
    if let Some(why) = match reached {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 10s".to_string()),
    } {
        return Err(Error::Cluster {
            what: format!("the scheduler at {}", cluster.url),
            message: format!("cannot connect ({why})"),
        });
    }
    let ctx = SessionContext::remote_with_state(&cluster.url, state)
        .await
        .map_err(|e| Error::Cluster { what: format!("the scheduler at {}", cluster.url), message: e.to_string() })?;
    // Ballista puts its own function list in place of the session's: medallion's come back.
    crate::functions::add_to(&mut *ctx.state_ref().write())
        .map_err(|e| Error::sql("a cluster session's functions", e))?;
    Ok(ctx)
}

/// The planner settings every query on a cluster runs with (the driver's, and the scheduler's
/// defaults).
fn planning(config: SessionConfig) -> SessionConfig {
    config
        // Ballista 55's adaptive planner re-plans a join with an empty side without end (a job
        // of 11,000+ stages for the example's join with an empty dimension): the static planner.
        .with_ballista_adaptive_query_planner(false)
        // The scheduler swaps a hash join's inputs once a stage's size is known, which DataFusion
        // 55 refuses once dynamic filters exist (and Ballista then waits on the job forever). The
        // umbrella option: it overrides the join-only one when both are set.
        .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false)
        // The scheduler turns round-robin repartitioning off for every job it plans, and logs a
        // warning each time it does (a line per query in its log): off from the start.
        .with_round_robin_repartition(false)
}
