//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// medallion: bronze → silver → gold pipelines on a Delta Lake lakehouse, with nothing lost.
///
/// A project is a directory with `medallion.toml` (sources, silver contracts, gold models) and SQL
/// files. Data goes to the lake: a local directory (default `./lake` in the project) or an object store
/// (`s3://bucket/prefix`; credentials from the standard AWS_* variables and `[storage]`).
#[derive(Debug, Parser)]
#[command(name = "medallion", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Project directory (holding medallion.toml).
    #[arg(long, short = 'p', global = true, env = "MEDALLION_PROJECT", default_value = ".", value_name = "DIR")]
    pub project: PathBuf,
    /// Lake location, overriding the project's `lake`: a directory, or s3://bucket/prefix (gs://, az:// with those features).
    #[arg(long, global = true, env = "MEDALLION_LAKE", value_name = "LAKE")]
    pub lake: Option<String>,
    /// Output format on stdout: human-readable text, JSON Lines (one object per line with a `type`), or CSV
    /// (the rows of `sql` and `show`; other commands print text).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Less output on stderr (errors only).
    #[arg(long, short = 'q', global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// More output on stderr: -v stage timings, -vv debug, -vvv trace.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Files landed and decoded in parallel, slices of a large promotion or rebuild resolved at
    /// once (as far as the memory limit allows), and tables or models run at once (default: the
    /// number of cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// How long run, backfill, retry, schedule, replay, optimize and vacuum wait for the lake's lock
    /// while another writer holds it (e.g. `10m`, for parallel `run --date` tasks); default: fail at
    /// once naming the holder.
    #[arg(long, global = true, env = "MEDALLION_LOCK_WAIT", value_name = "DURATION")]
    pub lock_wait: Option<String>,
    /// Memory the process may use (e.g. `2GiB`; at least 128MiB; default: three quarters of the
    /// machine's or its cgroup's): queries (gold models, audits, sql) share a pool of this size,
    /// spilling sorts and aggregations to scratch files under TMPDIR past it, and promotions
    /// resolve bronze in smaller slices when it is low. Not a cap on resident memory: decoding
    /// and writers hold what they hold (see the README's "Memory budget").
    #[arg(long, global = true, env = "MEDALLION_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// Compressed bronze a promotion or a rebuild resolves at once (e.g. `16MiB`; units B, KiB,
    /// MiB, GiB; default: 16MiB, down to 4MiB under a low --memory-limit): resolving one costs
    /// about 10 times this; a larger backlog is split by key into slices that wait in scratch
    /// files under TMPDIR.
    #[arg(long, global = true, alias = "rebuild-slice", env = "MEDALLION_SLICE_SIZE", value_name = "SIZE")]
    pub slice_size: Option<String>,
    /// Values for `var()` in gold models, over the project's `[vars]`: a YAML or JSON mapping, as dbt's
    /// `--vars` (e.g. `--vars '{start_date: 2024-01-01, min_amount: 10}'`).
    #[arg(long, global = true, env = "MEDALLION_VARS", value_name = "YAML")]
    pub vars: Option<String>,
    /// Compute on an Apache DataFusion Ballista cluster (bronze files decoded, validated and
    /// deduplicated, gold models' queries, `sql`): its scheduler, `df://host:port` (see `medallion
    /// scheduler` and `medallion executor`).
    #[cfg(feature = "cluster")]
    #[arg(long, global = true, env = "MEDALLION_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Pin the clock (RFC 3339): ingest times, freshness checks, run ids. For tests and replays.
    #[arg(long, global = true, env = "MEDALLION_NOW", value_name = "TIME", hide = true)]
    pub now: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables for people.
    Text,
    /// JSON Lines for programs.
    Json,
    /// CSV with a header row (`sql`, `show`); text elsewhere.
    Csv,
}

/// Where `import` reads from.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// A dbt project: seeds become CSV sources and silver contracts, models gold models (their SQL as
    /// it is), schema.yml tests expectations, macros and vars come along. What cannot be translated is
    /// printed file by file; the new project is validated before the command returns.
    Dbt {
        /// The dbt project (holding dbt_project.yml).
        dbt_project: PathBuf,
        /// Where to write the medallion project (must not hold one).
        dir: PathBuf,
    },
    /// Data files (CSV, TSV, NDJSON; gzip allowed): per file, a source landing a copy of it from
    /// `landing/` and a silver table whose contract is inferred from its first 100,000 records
    /// (the type that reads 99% of a column's values, a `format` for numbers and dates written
    /// otherwise such as `1.234,56` or `31/12/2024`, null markers such as `NA` in typed columns, a
    /// key; a CSV file's delimiter, and Windows-1252 for text that is not UTF-8). The choices are
    /// printed; the new project is validated before the command returns.
    Files {
        /// The files, then the directory to write the project in (must not hold one).
        #[arg(required = true, num_args = 2..)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a working orders project with sample data in DIR (then: cd DIR && medallion run).
    Init {
        /// Directory to create the project in.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Bring a project from another tool (dbt), or your own data files, as a new medallion project.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Check the project: every problem is reported at once, with its file and line.
    Validate,
    /// Land raw files (or stdin, `-`) in a source's bronze layer, exactly once per content; for an
    /// HTTP source, without files: fetch its new pages. With --follow: keep landing what arrives.
    Ingest {
        /// The source, as declared in `[sources.<name>]` (with --follow: default every source with
        /// `paths` or `http`).
        #[arg(required_unless_present = "follow")]
        source: Option<String>,
        /// Files to ingest, --threads at a time, each ingested after the one before it; `-` reads
        /// standard input. Gzip is detected.
        files: Vec<String>,
        /// Stay up: land new and grown landing files, and fetch HTTP sources, every --interval,
        /// until SIGTERM or Ctrl-C (which finish the file or page under way first). Promotion is
        /// `run`'s or `schedule`'s job.
        #[arg(long, conflicts_with = "files")]
        follow: bool,
        /// With --follow: how often to look (default 5s).
        #[arg(long, default_value = "5s", value_name = "DURATION", requires = "follow")]
        interval: String,
    },
    /// Run the pipeline: ingest configured paths, promote pending bronze batches to silver, rebuild gold.
    ///
    /// Exit code 1 when a node failed (rejected records alone are not a failure).
    Run {
        /// Rebuild every selected silver table from bronze with the current contract (as
        /// `medallion rebuild`) and every gold model from scratch, incremental ones included.
        #[arg(long)]
        full_refresh: bool,
        /// Only these nodes: `orders`, `silver/orders`, `orders+` (and downstream), `+daily_revenue`
        /// (and upstream), `layer:gold`, `tag:finance`.
        #[arg(long, short = 's', num_args = 1..)]
        select: Vec<String>,
        /// Leave these nodes out (same syntax as --select).
        #[arg(long, num_args = 1..)]
        exclude: Vec<String>,
        /// Retries of a node after a transient error (storage, Delta commit conflict), with
        /// exponential backoff and jitter; contract, SQL and gate errors are never retried.
        #[arg(long, default_value_t = 2, value_name = "N")]
        retries: u32,
        /// A logical date (YYYY-MM-DD): promote only that bronze date partition, ingest nothing new.
        #[arg(long, value_name = "DATE")]
        date: Option<chrono::NaiveDate>,
    },
    /// Run each date of a range in order (`run --date` per day); rerunning resumes where it stopped.
    Backfill {
        /// First date (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        from: chrono::NaiveDate,
        /// Last date, included.
        #[arg(long, value_name = "DATE")]
        to: chrono::NaiveDate,
    },
    /// Run again only the nodes that failed or were not run in the last run (like `dbt retry`).
    Retry,
    /// Recompute silver tables from every bronze batch with the current contract, then the gold
    /// models downstream: what a contract change needs (see README "Changing a contract").
    ///
    /// Each table gets one new Delta version (readers see the old or the new table; time travel
    /// to the old one works until vacuum) and a new dead letter, every record judged again.
    /// Interrupted, it finishes at the next `run` or `rebuild`; batches landed later are promoted
    /// by the next `run` as usual.
    Rebuild {
        /// Silver tables (all when none are named).
        tables: Vec<String>,
    },
    /// Stay up and run what is due: sources with a `schedule`, gold models by their `refresh`.
    ///
    /// Missed fires are caught up once (or each, with `catchup = true` in `[project]`). SIGTERM or
    /// Ctrl-C stops it after the current run finishes.
    Schedule {
        /// Run what is due now, then exit (for cron or a test).
        #[arg(long)]
        once: bool,
        /// Also serve Prometheus metrics at this address (e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Write the pipeline report: one self-contained index.html (lineage, tables, runs, charts,
    /// rejection reasons, expectation results).
    Docs {
        /// Output directory.
        #[arg(long, default_value = "medallion-docs", value_name = "DIR")]
        out: PathBuf,
    },
    /// Purge deletion vectors (rewrite files without their deleted rows), then compact small files
    /// of every table (or one), optionally Z-ordering silver and gold by columns; writes a
    /// checkpoint. Contents do not change.
    Optimize {
        /// A silver table or gold model (with its dead letter), or one layer's (`silver/orders`,
        /// `quarantine.orders`); all when omitted.
        table: Option<String>,
        /// Z-order by these columns (e.g. order_date) so filters on them skip files.
        #[arg(long, value_delimiter = ',', value_name = "COLS")]
        zorder: Vec<String>,
        /// Target file size in bytes (smaller files prune better with --zorder).
        #[arg(long, value_name = "BYTES")]
        target_size: Option<u64>,
    },
    /// Delete data and deletion-vector files no version younger than --retain references, and
    /// older files no commit named, also under a table never created (a killed first load's); time
    /// travel before that stops working. Contents do not change.
    Vacuum {
        /// A silver table or gold model (with its dead letter), or one layer's (`silver/orders`,
        /// `quarantine.orders`); all when omitted.
        table: Option<String>,
        /// Keep the files of versions younger than this (e.g. 7d, 30d).
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        retain: String,
        /// Allow a retention below 7 days.
        #[arg(long)]
        force: bool,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve Prometheus metrics of the lake at http://ADDR/metrics (rows per transition, runs,
    /// freshness lag against SLAs, dead-letter backlog), and take pushed records at
    /// `POST /ingest/<source>`: each body (NDJSON, a JSON array, CSV or Parquet as the source reads
    /// them; gzip allowed) lands as one bronze batch, exactly once per content, before the answer.
    ///
    /// With MEDALLION_PUSH_TOKEN set, pushes need `Authorization: Bearer <token>`. Answers are JSON:
    /// 200 with the batch id; 400 a body with no readable record, or not UTF-8 from a source
    /// declaring no other encoding; 401, 404 an unknown source, 405, 413 a body over --max-body.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
        addr: String,
        /// Largest request body `POST /ingest/<source>` accepts (e.g. 64MiB, the default; units B, KiB,
        /// MiB, GiB); larger ones get 413.
        #[arg(long, default_value = "64MiB", value_name = "SIZE")]
        max_body: String,
        /// Group commit: land the pushes to a source together, as one batch, once the first of
        /// them is this old (e.g. 500ms, 2s); each push is still answered only once its batch is
        /// in the lake. Default 0: every push is its own batch.
        #[arg(long, default_value = "0s", value_name = "DURATION")]
        flush_after: String,
        /// With --flush-after: land a group at once when it holds this many records.
        #[arg(long, default_value_t = 50_000, value_name = "N")]
        flush_records: u64,
        /// With --flush-after: land a group at once when its bodies reach this size.
        #[arg(long, default_value = "64MiB", value_name = "SIZE")]
        flush_bytes: String,
    },
    /// Run a Ballista scheduler for `--cluster` runs, until stopped. Executors register with it;
    /// drivers (`run --cluster df://HOST:PORT`) send it their queries. A job left with no task
    /// running and none to run for 20-30s while the cluster is idle is cancelled (logged), so its
    /// driver fails instead of waiting for good.
    #[cfg(feature = "cluster")]
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "ADDR")]
        bind: std::net::SocketAddr,
        /// Host name executors and drivers reach it at (default: the bind address).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Times a failed task is retried (on another executor when one is free) before its job fails.
        #[arg(long, default_value_t = 3, value_name = "N")]
        task_retries: usize,
        /// An executor silent this long is lost and its tasks run again elsewhere (at least 10s:
        /// a busy executor reports every 5s).
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        executor_timeout: String,
    },
    /// Run a Ballista executor, until stopped: it runs the tasks its scheduler gives it, reading the
    /// lake with its own credentials (the AWS_* variables, and the `[storage]` of --project when it
    /// holds a medallion.toml); plans never carry them.
    #[cfg(feature = "cluster")]
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "ADDR")]
        scheduler: String,
        /// Address its Arrow Flight service (shuffle data) listens on.
        #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR")]
        bind: std::net::SocketAddr,
        /// Port of its gRPC service (tasks).
        #[arg(long, default_value_t = 50052, value_name = "PORT")]
        grpc_port: u16,
        /// Host name the scheduler and other executors reach it at (default: what the scheduler sees).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Tasks run at once (default: the number of cores).
        #[arg(long, value_name = "N")]
        slots: Option<usize>,
        /// Directory for shuffle files (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
    },
    /// Recent runs (from the run log), or one run's nodes (from the event log).
    Runs {
        /// A run id: show its nodes.
        run_id: Option<String>,
        /// Most recent runs shown.
        #[arg(long, short = 'n', default_value_t = 10)]
        limit: usize,
    },
    /// Write an Airflow DAG (Python) with one task per node, dependencies mirrored.
    AirflowDag {
        /// Output file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Airflow schedule.
        #[arg(long, default_value = "@daily")]
        schedule: String,
        /// Airflow task retries.
        #[arg(long, default_value_t = 2)]
        retries: u32,
        /// The medallion command on the Airflow workers (with --operator medallion, the default
        /// means the binary of the workers' `pip install medallion`).
        #[arg(long, default_value = "medallion")]
        command: String,
        /// `bash`: BashOperator tasks (workers need only the binary); `medallion`:
        /// MedallionRunOperator from `pip install medallion` (run summary in XCom, failed nodes in
        /// the task error, tables as OpenLineage datasets).
        #[arg(long, default_value = "bash", value_parser = ["bash", "medallion"])]
        operator: String,
    },
    /// Every table's rows, version, files, dead letter, rejected share, age against its SLA, and schema drift.
    Status,
    /// Evaluate every expectation on the published tables; exit 1 if a `fail` expectation fails.
    Test {
        /// Only these tables (`orders` or `silver/orders`); all when omitted.
        #[arg(long, short = 's', num_args = 1..)]
        select: Vec<String>,
    },
    /// Re-validate a silver table's dead-letter records against the current contract and promote
    /// those that now pass (after a rule or coercion was fixed).
    ///
    /// Records that pass go through the normal silver path (dedup, expectations, MERGE where a
    /// replayed old record never overwrites a newer one) and are marked replayed in the dead
    /// letter; the others stay with their reasons updated. Running it twice promotes nothing twice.
    Replay {
        /// The silver table.
        table: String,
        /// Only records matching this SQL condition over the dead letter's columns
        /// (e.g. "_batch_id = 'b1'" or "array_has(_errors['rule'], 'type')").
        #[arg(long = "where", value_name = "SQL")]
        filter: Option<String>,
        /// Only report how many records would pass, by the reasons they had.
        #[arg(long)]
        dry_run: bool,
    },
    /// Summarise a table's dead letter: records by reason, batch and day, with sample records.
    ///
    /// Type errors on texts exports write for a missing value (`NA`, `N/A`, `NULL`, …) get a hint
    /// naming the `null_values` that would read them as null (then `medallion replay`); type
    /// errors on dates or numbers written otherwise (`31/12/2024`, `1.234,56`), one naming the
    /// column `format` that reads them (then `medallion rebuild`).
    Quarantine {
        /// The silver table or gold model.
        table: String,
    },
    /// Print rows of a table: `orders`, `silver.orders`, `quarantine.orders`, `gold.daily_revenue`.
    Show {
        /// `orders`, `silver.orders` (or `silver/orders`, as runs name it), `gold.daily_revenue`,
        /// `quarantine.orders`.
        table: String,
        /// Rows to print.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// The table as it was: a Delta version (`3`) or a time (`2024-03-01T12:00:00Z`, `2024-03-01`).
        #[arg(long, value_name = "VERSION|TIME")]
        as_of: Option<String>,
        /// Write the rows to this file instead of stdout: `.parquet`, `.csv` or `.ndjson`/`.jsonl`.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Run a SQL query (DataFusion) over the lake's tables, dead letters (`quarantine.x`), expectation
    /// results (`medallion.expectations`) and the event log (`medallion.events`).
    Sql {
        /// The query.
        query: String,
        /// Every table as it was at this time (`2024-03-01T12:00:00Z`, `2024-03-01`).
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Write the rows to this file instead of stdout: `.parquet`, `.csv` or `.ndjson`/`.jsonl`.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// A table's commits: version, time, operation, rows changed and the run that made each.
    History {
        /// `orders`, `silver.orders` (or `silver/orders`, as runs name it), `gold.daily_revenue`,
        /// `quarantine.orders`.
        table: String,
        /// Most recent commits shown.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
    },
}
