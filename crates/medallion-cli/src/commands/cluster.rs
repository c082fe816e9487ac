//! `medallion scheduler` and `medallion executor`: the processes of a Ballista cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use medallion::cluster::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};

use crate::Outcome;
use crate::args::Global;

/// Runs a scheduler until the process is stopped.
pub async fn scheduler(
    bind: SocketAddr,
    external_host: Option<String>,
    task_retries: usize,
    executor_timeout: &str,
) -> Result<Outcome> {
    let executor_timeout = super::span(executor_timeout, "--executor-timeout")?;
    let nodes = medallion::silver::cluster_nodes();
    let options = SchedulerOptions { bind, external_host, task_retries, executor_timeout, nodes };
    options.check()?;
    eprintln!("medallion scheduler listening on {bind}");
    run_scheduler(options).await?;
    Ok(Outcome::Ok)
}

/// `medallion executor`'s arguments.
pub struct Executor {
    pub scheduler: String,
    pub bind: SocketAddr,
    pub grpc_port: u16,
    pub external_host: Option<String>,
    pub slots: Option<usize>,
    pub work_dir: Option<PathBuf>,
}

/// Runs an executor until the process is stopped.
pub async fn executor(g: &Global, at: Executor) -> Result<Outcome> {
    let (host, port) = at
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("invalid --scheduler `{}`: expected HOST:PORT", at.scheduler))?;
    // The project's [storage] when --project holds one: the same rules as the driver's.
    let storage =
        if g.project.join("medallion.toml").exists() { super::load(g).await?.storage } else { Default::default() };
    let slots = at.slots.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    eprintln!("medallion executor on {} (gRPC port {}, {slots} slots), scheduler {host}:{port}", at.bind, at.grpc_port);
    let options = ExecutorOptions {
        scheduler: (host, port),
        bind: at.bind,
        grpc_port: at.grpc_port,
        external_host: at.external_host,
        slots,
        work_dir: at.work_dir.map(|d| d.display().to_string()),
        storage,
        nodes: medallion::silver::cluster_nodes(),
    };
    run_executor(options).await?;
    Ok(Outcome::Ok)
}
