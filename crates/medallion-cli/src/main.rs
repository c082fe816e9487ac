//! The `medallion` binary: parses arguments, runs a command, renders errors, sets the exit code.
//!
//! Exit codes: 0 ok; 1 the command finished but something failed (a node of a run); 2 the tool
//! could not run (bad project, unreadable lake, bad arguments).

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

/// mimalloc instead of glibc's malloc: Arrow columns are allocated and freed by the hundred
/// megabytes, and glibc kept freed memory mapped (RSS) and spent ~19% of a 5M-record run in page
/// faults. Built without transparent huge pages (`no_thp`): mimalloc advised its arenas
/// `MADV_HUGEPAGE`, so every page it purged and touched again faulted in 2 MiB zeroed by the
/// kernel. In some hours a daily run (one batch into 4.3M silver rows) spent 45% of its CPU
/// clearing pages (system time 0.7-1.1 s, 0.26-0.30 s without); in others whole sequences of runs
/// took as long either way. Peak RSS is a fifth lower without.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What a command reports back.
pub enum Outcome {
    /// Everything went well.
    Ok,
    /// The command finished but something failed.
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    one_line_panics();
    init_tracing(cli.global.quiet, cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    let code = match result {
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::Failed) => 1,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            2
        }
    };
    exit_now(code, runtime)
}

/// Ends the process once a command is over, without tearing down what it leaves: every command
/// awaits its own work (commits, uploads, lineage deliveries) before it returns, and what is left
/// is memory for the kernel to take back at once. Dropping it instead (the runtime's threads
/// joined one by one, the allocator's heaps and the sessions' caches freed page by page) doubled
/// the time from a run's last log line to the process gone (8.1 against 4.0 ms, a no-op run's
/// median), in every process of a scheduled pipeline.
fn exit_now(code: u8, runtime: tokio::runtime::Runtime) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::mem::forget(runtime);
    std::process::exit(i32::from(code))
}

/// A panic in a task (delta-rs and object_store run writers on the runtime's worker threads; one
/// known case: object_store's multipart writer panics when aborted after a failed upload) is
/// reported in one line; the operation it belonged to fails with its own error.
fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        eprintln!(
            "warning: a task on thread `{thread}` panicked{at}: {payload} (a bug; the step it belonged to failed)"
        );
        // RUST_BACKTRACE=1 still gives the backtrace.
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{trace}");
        }
    }));
}

/// The error and its causes on one line, skipping a cause whose text the line already holds
/// (storage and Delta errors repeat their sources in their own message).
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    let g = &cli.global;
    commands::set_memory_limit(g)?;
    match cli.command {
        Command::Init { dir } => commands::init::run(g, &dir),
        Command::Import { from: args::ImportFrom::Dbt { dbt_project, dir } } => {
            commands::init::import_dbt(g, &dbt_project, &dir).await
        }
        Command::Import { from: args::ImportFrom::Files { mut paths } } => {
            let dir = paths.pop().unwrap_or_default();
            commands::init::import_files(g, &paths, &dir).await
        }
        Command::Validate => commands::validate::run(g).await,
        Command::Ingest { source, follow: true, interval, .. } => {
            commands::ingest::follow(g, source.as_deref(), &interval).await
        }
        Command::Ingest { source, files, .. } => {
            commands::ingest::run(g, source.as_deref().unwrap_or(""), &files).await
        }
        Command::Run { full_refresh, select, exclude, retries, date } => {
            commands::run::run(g, full_refresh, &select, &exclude, retries, date).await
        }
        Command::Backfill { from, to } => commands::run::backfill(g, from, to).await,
        Command::Retry => commands::run::retry(g).await,
        Command::Rebuild { tables } => commands::run::rebuild(g, &tables).await,
        Command::Schedule { once, metrics } => commands::schedule::schedule(g, once, metrics).await,
        Command::Serve { addr, max_body, flush_after, flush_records, flush_bytes } => {
            let push = commands::serve::PushOptions {
                max_body: &max_body,
                flush_after: &flush_after,
                flush_records,
                flush_bytes: &flush_bytes,
            };
            commands::serve::serve(g, &addr, push).await
        }
        Command::Docs { out } => commands::runs::docs(g, &out).await,
        Command::Optimize { table, zorder, target_size } => {
            commands::maintain::optimize(g, table.as_deref(), &zorder, target_size).await
        }
        Command::Vacuum { table, retain, force, dry_run } => {
            commands::maintain::vacuum(g, table.as_deref(), &retain, force, dry_run).await
        }
        #[cfg(feature = "cluster")]
        Command::Scheduler { bind, external_host, task_retries, executor_timeout } => {
            commands::cluster::scheduler(bind, external_host, task_retries, &executor_timeout).await
        }
        #[cfg(feature = "cluster")]
        Command::Executor { scheduler, bind, grpc_port, external_host, slots, work_dir } => {
            let at = commands::cluster::Executor { scheduler, bind, grpc_port, external_host, slots, work_dir };
            commands::cluster::executor(g, at).await
        }
        Command::Runs { run_id, limit } => commands::runs::runs(g, run_id.as_deref(), limit).await,
        Command::AirflowDag { out, schedule, retries, command, operator } => {
            commands::runs::airflow(g, out.as_deref(), schedule, retries, command, &operator).await
        }
        Command::Status => commands::status::run(g).await,
        Command::Test { select } => commands::test::run(g, &select).await,
        Command::Replay { table, filter, dry_run } => commands::replay::run(g, &table, filter, dry_run).await,
        Command::Quarantine { table } => commands::replay::summary(g, &table).await,
        Command::Show { table, limit, as_of, out } => {
            commands::query::show(g, &table, limit, as_of.as_deref(), out.as_deref()).await
        }
        Command::Sql { query, as_of, out } => commands::query::sql(g, &query, as_of.as_deref(), out.as_deref()).await,
        Command::History { table, limit } => commands::query::history(g, &table, limit).await,
    }
}

fn init_tracing(quiet: u8, verbose: u8) {
    // Other crates (delta-rs, DataFusion) log internal details users cannot act on: keep them one
    // level quieter than medallion's own messages.
    let directives = match (quiet, verbose) {
        (q, _) if q > 0 => "error",
        (_, 0) => "error,medallion=warn",
        (_, 1) => "warn,medallion=info",
        (_, 2) => "info,medallion=debug",
        _ => "debug,medallion=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDALLION_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
