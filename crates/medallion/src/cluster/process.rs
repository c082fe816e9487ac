//! `medallion scheduler` and `medallion executor`: Ballista's scheduler and executor processes,
//! carrying medallion's plan codecs, and (executors) the lake's object stores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::RuntimeProducer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::utils::default_config_producer;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use super::codec::{LogicalCodec, Nodes, PhysicalCodec};
use super::stores::LakeStores;
use crate::error::{Error, Result};

/// A scheduler to start.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens for drivers and executors.
    pub bind: SocketAddr,
    /// The host executors and drivers reach it at (default: the bind address).
    pub external_host: Option<String>,
    /// Times a task is retried on another executor before its job fails.
    pub task_retries: usize,
    /// An executor silent this long is lost: its tasks run again elsewhere (at least
    /// [`MIN_EXECUTOR_TIMEOUT`]).
    pub executor_timeout: Duration,
    /// The plan nodes of higher layers it plans and ships (as its executors must carry).
    pub nodes: Nodes,
}

impl SchedulerOptions {
    /// Refuses options a scheduler cannot keep: an executor timeout under [`MIN_EXECUTOR_TIMEOUT`].
    pub fn check(&self) -> Result<()> {
        if self.executor_timeout < MIN_EXECUTOR_TIMEOUT {
            return Err(failed(
                "the scheduler",
                format!(
                    "an executor timeout of {:?} is too short: a busy executor reports every {:?}, so it \
                     must be at least {:?}",
                    self.executor_timeout, BUSY_POLL, MIN_EXECUTOR_TIMEOUT
                ),
            ));
        }
        Ok(())
    }
}

/// An executor to start.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler: `host:port`.
    pub scheduler: (String, u16),
    /// The address it binds (its Arrow Flight port serves shuffle data).
    pub bind: SocketAddr,
    /// Its gRPC port (tasks from the scheduler).
    pub grpc_port: u16,
    /// The host other executors and the scheduler reach it at (default: what the scheduler sees).
    pub external_host: Option<String>,
    /// Tasks it runs at once.
    pub slots: usize,
    /// Where it keeps shuffle files (default: a temporary directory).
    pub work_dir: Option<String>,
    /// Object-store options (a project's `[storage]`), over the environment's.
    pub storage: BTreeMap<String, String>,
    /// The plan nodes of higher layers it runs (as its scheduler carries).
    pub nodes: Nodes,
}

/// How often a busy executor tells its scheduler it is alive. Executors ask for tasks (see
/// `run_scheduler`), and under that policy the asking is the heartbeat: Ballista 55 asks at once
/// while a slot is free and every 5 s while all are busy (`HEARTBEAT_POLL_INTERVAL`).
const BUSY_POLL: Duration = Duration::from_secs(5);

/// The shortest executor timeout a scheduler takes: twice a busy executor's poll, so that one late
/// poll on a loaded machine does not drop an executor while it works (its tasks rolled back and run
/// again).
pub const MIN_EXECUTOR_TIMEOUT: Duration = Duration::from_secs(2 * BUSY_POLL.as_secs());

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster { what: what.to_string(), message: e.to_string() }
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    options.check()?;
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.external_host.unwrap_or_else(|| options.bind.ip().to_string()),
        task_max_failures: options.task_retries + 1,
        executor_timeout_seconds: options.executor_timeout.as_secs().max(1),
        expire_dead_executor_interval_seconds: (options.executor_timeout.as_secs() / 4).clamp(1, 15),
        no_executors_grace_period_seconds: options.executor_timeout.as_secs().max(1),
        override_config_producer: Some(Arc::new(|| super::planning(default_config_producer()))),
        override_session_builder: Some(Arc::new(super::write::scheduler_state)),
        // Executors ask for tasks (pull) instead of the scheduler counting their free slots
        // (push): Ballista 55's push mode loses a slot for good when an executor dies after its
        // map stages finished (the retried task's status is ignored, its slot never refunded), and
        // a cluster of one-slot executors then waits forever.
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        override_logical_codec: Some(Arc::new(LogicalCodec::with_nodes(options.nodes.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::with_nodes(options.nodes))),
        ..SchedulerConfig::default()
    };
    config.validate().map_err(|e| failed("the scheduler", e))?;
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| failed("the scheduler's state", e))?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .map_err(|e| failed("the scheduler", e))?;
    // Jobs Ballista can no longer finish are cancelled, so their drivers do not wait for good.
    tokio::spawn(super::stalled::watch(scheduler.clone()));
    start_grpc_service(options.bind, scheduler).await.map_err(|e| failed("the scheduler", e))
}

/// Ballista's functions and medallion's (the tasks' plans name them). Ballista's registry does
/// not implement `register_udf` (it answers "not implemented"): its map is filled directly.
fn functions() -> ballista_core::registry::BallistaFunctionRegistry {
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    for udf in crate::functions::udfs() {
        registry.scalar_functions.insert(udf.name().to_string(), udf);
    }
    registry
}

/// Runs an executor until the process is stopped (SIGTERM, Ctrl-C).
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    // Tasks that write files open the lake by URL through delta-rs: the same buckets.
    crate::storage::cloud::register_stores(options.storage.clone());
    let stores = Arc::new(LakeStores::new(options.storage));
    let work_dir = options.work_dir.clone();
    let runtime: RuntimeProducer = Arc::new(move |_| {
        // The executor's tasks share its memory pool (`--memory-limit`), spilling past it.
        let mut builder = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::clone(&stores) as _)
            .with_memory_pool(crate::runtime::memory::query_pool());
        if let Some(dir) = &work_dir {
            builder = builder.with_temp_file_path(dir.clone());
        }
        Ok(Arc::new(builder.build()?))
    });
    let config = ExecutorProcessConfig {
        scheduler_host: options.scheduler.0,
        scheduler_port: options.scheduler.1,
        bind_host: options.bind.ip().to_string(),
        port: options.bind.port(),
        grpc_port: options.grpc_port,
        external_host: options.external_host,
        vcores: options.slots.max(1),
        work_dir: options.work_dir,
        print_thread_info: false,
        // As the scheduler's (see `run_scheduler`).
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        override_runtime_producer: Some(runtime),
        override_function_registry: Some(Arc::new(functions())),
        override_logical_codec: Some(Arc::new(LogicalCodec::with_nodes(options.nodes.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::with_nodes(options.nodes))),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(|e| failed("the executor", e))
}
