//! The library's one error type.
//!
//! User mistakes (a broken project, an unreadable lake, a bad SQL model) carry the file, table or
//! rule they are about. [`Error::Internal`] is reserved for bugs.

use std::path::PathBuf;

use url::Url;

use crate::spec::Diagnostic;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in medallion.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The project has one or more problems; each carries its own location.
    #[error("the project has {} problem(s):\n{}", .0.len(), render_diagnostics(.0))]
    InvalidProject(Vec<Diagnostic>),

    /// A file of the project (or an input file) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// A scratch file (a rebuild's rows spilled to local disk) could not be written or read.
    #[error("scratch file {}: {source} (hint: point TMPDIR at a local directory with room for the table)", path.display())]
    Scratch {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The lake location or its storage settings cannot be used.
    #[error("lake `{location}`: {message}")]
    InvalidLake {
        /// The configured location.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// The lake (object store) failed.
    #[error("lake storage error at `{location}`: {}", explain(cause))]
    Storage {
        /// Object path inside the lake.
        location: String,
        /// The cause (rendered in one line: the store's error code and message, or why it
        /// could not be reached).
        cause: object_store::Error,
    },

    /// A Delta table operation failed.
    #[error("delta table `{table}`: {source}")]
    Delta {
        /// Table, as `layer/name`.
        table: String,
        /// The cause.
        source: deltalake::DeltaTableError,
    },

    /// A SQL expression or query failed to plan or run.
    #[error("{context}: {source}")]
    Sql {
        /// What was being evaluated (table, column, rule or model file).
        context: String,
        /// The cause.
        source: datafusion::error::DataFusionError,
    },

    /// A query needed more memory than the process's limit lets its pool give and could not
    /// spill (see [`crate::runtime::memory`]).
    #[error(
        "{context}: the query needs more memory than the process's limit allows (raise it with --memory-limit or MEDALLION_MEMORY_LIMIT): {source}"
    )]
    MemoryLimit {
        /// What was being evaluated.
        context: String,
        /// DataFusion's "Resources exhausted", naming the largest consumers.
        source: datafusion::error::DataFusionError,
    },

    /// A gold model's template could not be rendered.
    #[error("gold model `{model}` ({}): {message}", file.display())]
    Template {
        /// The model.
        model: String,
        /// Its SQL file.
        file: PathBuf,
        /// The renderer's message.
        message: String,
    },

    /// An input file given to `ingest` is unusable as a whole (not a readable file at all).
    #[error("cannot ingest {input} into source `{source_name}`: {message}")]
    Ingest {
        /// The source.
        source_name: String,
        /// The input (path or `-`).
        input: String,
        /// What is wrong.
        message: String,
    },

    /// An HTTP source's API could not be read (after the retries it allows); what landed before
    /// stays, and the next fetch resumes at the page that failed.
    #[error("cannot fetch source `{source_name}`: {message}")]
    Fetch {
        /// The source.
        source_name: String,
        /// The request and what went wrong (never a credential).
        message: String,
    },

    /// A project could not be imported: a file it needs is missing or does not parse.
    #[error("cannot import {}: {message}", file.display())]
    Import {
        /// The dbt project's file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// `init` found a project where it would write one.
    #[error("{} already holds a project; init and import never overwrite one (hint: choose an empty directory)", path.display())]
    ProjectExists {
        /// The existing project file.
        path: PathBuf,
    },

    /// Another run is working on the same table right now.
    #[error("`{table}`: {message} (hint: wait for the other run to finish, then run again)")]
    Busy {
        /// The table, as `layer/name`.
        table: String,
        /// What collided.
        message: String,
    },

    /// A name given on the command line is not declared in the project.
    #[error("unknown {kind} `{name}`{}", hint(.known))]
    Unknown {
        /// What kind of thing (source, table).
        kind: &'static str,
        /// The name given.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },

    /// The run's record accounting does not add up: a bug or lost data, never acceptable.
    #[error(
        "accounting mismatch for `{table}`: read {read} != promoted {promoted} + superseded {superseded} + rejected {rejected}"
    )]
    Accounting {
        /// The silver table.
        table: String,
        /// Bronze records read.
        read: u64,
        /// Rows promoted.
        promoted: u64,
        /// Records superseded.
        superseded: u64,
        /// Records rejected.
        rejected: u64,
    },

    /// The tool's own state in the lake disagrees with a table (e.g. a table was deleted by hand).
    #[error("`{table}`: {message} (hint: {hint})")]
    InconsistentState {
        /// The table, as `layer/name`.
        table: String,
        /// What disagrees.
        message: String,
        /// How to resolve it.
        hint: String,
    },

    /// A silver table's contract no longer matches the published table, and its policy does not
    /// let the change in: nothing was promoted.
    #[error("the contract of {table} changed since the table was written: {}; nothing was promoted (hint: {hint})", changes.join("; "))]
    ContractChanged {
        /// `silver/<table>`.
        table: String,
        /// Each change, for people (`type of amount: decimal(18,2) → decimal(20,4)`).
        changes: Vec<String>,
        /// The command that resolves it.
        hint: String,
    },

    /// A `fail` expectation failed: nothing of this run was published for the node.
    #[error("quality gate failed for {node}: {failed}; nothing was published and dependents were not run")]
    GateFailed {
        /// `silver/<table>` or `gold/<model>`.
        node: String,
        /// The failed expectations with their counts.
        failed: String,
        /// Every expectation's result on the candidate data, boxed so that this module names no
        /// domain type: `quality::gates::results_of` reads it back.
        results: Box<dyn std::any::Any + Send + Sync>,
    },

    /// A rejection-rate gate held back some batches of a promotion (the rest was published).
    #[error(
        "rejection-rate gate for {node}: held back {batches}; they stay pending until the contract or the data is fixed, and dependents were not run"
    )]
    BatchesHeldBack {
        /// `silver/<table>`.
        node: String,
        /// The batches with their rejected shares.
        batches: String,
    },

    /// An operation refused for safety.
    #[error("refusing {what}: {why}")]
    Refused {
        /// What was asked.
        what: String,
        /// Why not.
        why: String,
    },

    /// Another process holds the lake.
    #[error("the lake is in use by {holder}\n  hint: {hint}")]
    Locked {
        /// Who.
        holder: String,
        /// What to do.
        hint: String,
    },

    /// Time travel to a version the table does not have.
    #[error("{table} has no version {asked} (latest: {})", latest.map_or("none".to_string(), |v| v.to_string()))]
    NoSuchVersion {
        /// `layer/name`.
        table: String,
        /// What was asked.
        asked: String,
        /// The latest version.
        latest: Option<i64>,
    },

    /// A Ballista cluster could not be reached, started or used.
    #[error("cluster: {what}: {message}")]
    Cluster {
        /// What failed: the scheduler at an address, an executor.
        what: String,
        /// Why.
        message: String,
    },

    /// A bug in medallion.
    #[error("internal error (this is a bug in medallion): {0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying the same work may succeed: storage errors, Delta commit conflicts, a
    /// concurrent recording of the same intent. Contract, SQL, gate and project errors are
    /// deterministic: a retry would fail the same way.
    pub fn is_transient(&self) -> bool {
        use deltalake::DeltaTableError as D;
        match self {
            Error::Storage { .. } | Error::Busy { .. } => true,
            Error::Delta {
                source: D::ObjectStore { .. } | D::VersionAlreadyExists(_) | D::Transaction { .. } | D::Io { .. },
                ..
            } => true,
            Error::Delta { source, .. } => store_failed(source),
            Error::Sql { source, .. } => store_failed(source) || job_cancelled(source),
            _ => false,
        }
    }

    /// A query's failure while evaluating `context`: [`Error::MemoryLimit`] when it ran out of the
    /// memory pool, else [`Error::Sql`].
    pub fn query(context: impl Into<String>, source: datafusion::error::DataFusionError) -> Self {
        Error::sql(context, source)
    }

    pub(crate) fn sql(context: impl Into<String>, source: datafusion::error::DataFusionError) -> Self {
        if matches!(source.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_)) {
            return Error::MemoryLimit { context: context.into(), source };
        }
        Error::Sql { context: context.into(), source }
    }

    pub(crate) fn delta(table: impl Into<String>, source: deltalake::DeltaTableError) -> Self {
        Error::Delta { table: table.into(), source }
    }

    pub(crate) fn arrow(context: impl Into<String>, source: datafusion::arrow::error::ArrowError) -> Self {
        Error::sql(context, datafusion::error::DataFusionError::ArrowError(Box::new(source), None))
    }
}

/// Whether `error` is a cluster job's that its scheduler cancelled: Ballista fails such a job
/// with the status `Cancelled`, which its client reports as "Job <id> failed: Cancelled". A
/// medallion scheduler cancels only a job that stalled after an executor was lost (`cluster`'s
/// stall watch), and the same work runs again on the cluster as it is (no commit was made for it).
fn job_cancelled(error: &datafusion::error::DataFusionError) -> bool {
    causes(error).any(|e| {
        let Some(datafusion::error::DataFusionError::Execution(text)) =
            e.downcast_ref::<datafusion::error::DataFusionError>()
        else {
            return false;
        };
        text.strip_prefix("Job ").and_then(|t| t.split_once(" failed: ")).is_some_and(|(id, why)| {
            !id.is_empty() && !id.contains(char::is_whitespace) && why.trim_end() == "Cancelled"
        })
    })
}

/// `error` and its causes, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// Whether `error` was caused by the object store failing to answer (a dropped connection, a 5xx
/// its client gave up on, a timeout), wherever the store's error sits in its chain of causes: a
/// Delta log read through the kernel, a query's Parquet read. A store that answered with a client
/// error (missing object, access denied, bad path) would answer the same again.
fn store_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    // The first cause that is the store's error (or a Parquet footer read's text of it) decides.
    causes(error)
        .find_map(|e| {
            // The kernel keeps the store's error without naming it as its source.
            let store = match e.downcast_ref::<buoyant_kernel::Error>() {
                Some(buoyant_kernel::Error::ObjectStore(store)) => Some(store),
                _ => e.downcast_ref::<object_store::Error>(),
            };
            if let Some(store) = store {
                return Some(match store {
                    object_store::Error::Generic { .. } => !answered_client_error(&store.to_string()),
                    object_store::Error::JoinError { .. } => true,
                    _ => false,
                });
            }
            // DataFusion's Parquet reader keeps only the text of a failed footer read ("Failed to
            // fetch metadata for file …: Object Store error: …").
            match e.downcast_ref::<datafusion::parquet::errors::ParquetError>() {
                Some(datafusion::parquet::errors::ParquetError::General(text)) => {
                    Some(text.contains("Object Store error: Generic") && !answered_client_error(text))
                }
                _ => None,
            }
        })
        .unwrap_or(false)
}

/// Whether a store's error text says the server answered with a 4xx status.
fn answered_client_error(text: &str) -> bool {
    text.split("status code: ").skip(1).any(|rest| rest.starts_with('4'))
}

fn render_diagnostics(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
}

fn hint(known: &[String]) -> String {
    if known.is_empty() { String::new() } else { format!(" (known: {})", known.join(", ")) }
}

/// One line saying why the store refused or could not be reached, from an `object_store` error
/// (whose text carries the whole HTTP exchange): the S3/GCS/Azure error code and message when the
/// store answered, else the transport's cause.
pub fn explain(error: &object_store::Error) -> String {
    let text = error.to_string();
    if !matches!(
        error,
        object_store::Error::Generic { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    ) {
        return text.lines().next().unwrap_or(&text).to_string();
    }
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim().to_string())
    };
    let code = tag("Code");
    let message = tag("Message").unwrap_or_default();
    let status = ["403 Forbidden", "404 Not Found", "401 Unauthorized"].into_iter().find(|s| text.contains(s));
    match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => format!("the bucket does not exist (NoSuchBucket: {message})"),
        (
            Some(
                c @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken" | "InvalidToken"),
            ),
            _,
        ) => {
            format!(
                "access denied ({c}: {message}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or [storage])"
            )
        }
        (Some(c), _) => format!("{c}: {message}"),
        (None, Some(s)) if s.starts_with("40") && s != "404 Not Found" => {
            format!(
                "access denied ({s}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or [storage])"
            )
        }
        (None, Some(s)) => format!("the bucket or container does not exist ({s})"),
        (None, None) if text.contains("error sending request") || text.contains("HTTP error") => {
            let retries =
                text.find("after ").map(|i| text[i..].split(',').next().unwrap_or("").to_string()).unwrap_or_default();
            let endpoint = text
                .find("http")
                .and_then(|i| Url::parse(text[i..].split_whitespace().next().unwrap_or("")).ok())
                .map_or_else(|| "the endpoint".to_string(), |u| u.origin().ascii_serialization());
            format!(
                "cannot reach {endpoint} ({})",
                if retries.is_empty() {
                    "connection failed".to_string()
                } else {
                    format!("connection failed {retries}")
                }
            )
        }
        (None, None) => text.lines().next().unwrap_or(&text).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: text.to_string().into() }
    }

    #[test]
    fn store_errors_are_one_line_naming_the_cause() {
        let missing = generic(
            "Error performing GET http://h/nosuch - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>",
        );
        assert_eq!(explain(&missing), "the bucket does not exist (NoSuchBucket: The specified bucket does not exist)");
        let denied = generic(
            "403 Forbidden: <Error>\n<Code>InvalidAccessKeyId</Code>\n<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>",
        );
        assert!(
            explain(&denied).starts_with("access denied (InvalidAccessKeyId: The AWS Access Key Id"),
            "{}",
            explain(&denied)
        );
        let down = generic(
            "Error performing GET http://127.0.0.1:1/x in 1.5s, after 6 retries, max_retries: 6, retry_timeout: 60s  - HTTP error: error sending request",
        );
        assert_eq!(explain(&down), "cannot reach http://127.0.0.1:1 (connection failed after 6 retries)");
        assert!(!explain(&down).contains('\n'));
    }

    /// A cluster job its scheduler cancelled (the stall watch's doing: an executor was lost) is
    /// run again by the node's retries; a job that failed on its own is not.
    #[test]
    fn a_cluster_job_cancelled_by_its_scheduler_is_transient_and_a_failed_one_is_not() {
        use datafusion::error::DataFusionError as F;
        let job = |why: &str| F::Execution(format!("Job Ab3dE9x failed: {why}"));
        assert!(Error::sql("gold model `daily_revenue`", job("Cancelled")).is_transient());
        assert!(
            Error::sql("q", F::Context("collecting".into(), Box::new(job("Cancelled")))).is_transient(),
            "wrapped by DataFusion"
        );
        assert!(Error::sql("q", F::External(Box::new(job("Cancelled")))).is_transient(), "wrapped as external");
        for why in [
            "Task failed due to runtime execution error: Arrow error: Divide by zero error",
            "Cancelled by the user; also",
            "Job was Cancelled",
        ] {
            assert!(!Error::sql("q", job(why)).is_transient(), "{why}");
        }
        assert!(!Error::sql("q", F::Execution("Job  failed: Cancelled".into())).is_transient(), "no job id");
        assert!(!Error::sql("q", F::Plan("Job x failed: Cancelled".into())).is_transient(), "not a job's status");
    }

    /// A store that dropped a connection fails a Delta log read (through the kernel) or a query's
    /// Parquet read wrapped in their own errors: the node is retried all the same. A store that
    /// answered "no" is not asked again.
    #[test]
    fn a_store_failure_inside_a_kernel_or_query_error_is_transient() {
        use datafusion::error::DataFusionError as F;
        use deltalake::DeltaTableError as D;
        let dropped = || {
            generic(
                "Error performing GET http://h/lake/t/_delta_log/00000000000000000000.json in 101ms, after 1 retries, max_retries: 6, retry_timeout: 60s  - HTTP error: error sending request",
            )
        };
        let forbidden = || {
            generic("Error performing GET http://h/x - Server returned non-2xx status code: 403 Forbidden: <Error/>")
        };
        let kernel = |e| Error::delta("gold/m", D::KernelError(buoyant_kernel::Error::ObjectStore(e)));
        let query = |e| Error::sql("the changes of silver/orders", F::External(Box::new(e)));
        assert!(kernel(dropped()).is_transient());
        assert!(query(dropped()).is_transient());
        assert!(Error::sql("q", F::ObjectStore(Box::new(dropped()))).is_transient());
        assert!(
            Error::sql("q", F::Context("reading".into(), Box::new(F::ObjectStore(Box::new(dropped()))))).is_transient()
        );
        assert!(!kernel(forbidden()).is_transient());
        assert!(!query(forbidden()).is_transient());
        let missing = object_store::Error::NotFound { path: "x".into(), source: "gone".into() };
        assert!(!query(missing).is_transient());
        assert!(!Error::delta("gold/m", D::KernelError(buoyant_kernel::Error::generic("bad log"))).is_transient());
        assert!(!Error::sql("q", F::Plan("no such column".into())).is_transient());
        let footer = |text: &str| {
            let text = format!("Failed to fetch metadata for file lake/silver/orders/part-0.parquet: {text}");
            Error::sql("q", F::ParquetError(Box::new(datafusion::parquet::errors::ParquetError::General(text))))
        };
        assert!(footer(&format!("Object Store error: {}", dropped())).is_transient());
        assert!(!footer(&format!("Object Store error: {}", forbidden())).is_transient());
        assert!(!footer("Parquet error: Invalid Parquet file. Corrupt footer").is_transient());
    }
}
