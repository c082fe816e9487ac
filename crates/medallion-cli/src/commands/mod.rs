//! One module per verb; shared loading of the project and lake.

#[cfg(feature = "cluster")]
pub mod cluster;
mod groups;
pub mod ingest;
pub mod init;
pub mod maintain;
pub mod query;
pub mod replay;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod serve;
pub mod status;
pub mod test;
pub mod validate;

use anyhow::{Context, Result};
use medallion::project::Project;
use medallion::runtime::memory;
use medallion::silver::evolve::{self, Verdict};
use medallion::storage::Lake;

use crate::args::Global;

/// Loads the project (`--project`) with `--lake` applied, and opens its lake.
pub async fn open(g: &Global) -> Result<(Project, Lake)> {
    let project = load(g).await?.with_lake(g.lake.clone());
    let lake = project.open_lake().with_context(|| format!("cannot open the lake `{}`", project.lake))?;
    lake.check().await?;
    Ok((project, lake))
}

/// Loads the project (`--project`) with `--vars` applied.
pub async fn load(g: &Global) -> Result<Project> {
    let vars = match &g.vars {
        Some(text) => medallion::spec::vars_from_yaml(text)
            .map_err(|e| anyhow::anyhow!("invalid --vars/MEDALLION_VARS `{text}`: {e}"))?,
        None => Default::default(),
    };
    Ok(Project::load_with_vars(&g.project, vars).await?)
}

/// The clock: `--now`/`MEDALLION_NOW` when given, else the current time.
pub fn clock(g: &Global) -> Result<medallion::runtime::Now> {
    match &g.now {
        None => Ok(medallion::runtime::now()),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).with_context(|| {
            format!("invalid --now/MEDALLION_NOW `{text}`: expected an RFC 3339 time such as 2024-03-01T00:00:00Z")
        }),
    }
}

/// `--lock-wait`: how long a run waits for the lake's lock (zero when not given).
pub fn lock_wait(g: &Global) -> Result<std::time::Duration> {
    match &g.lock_wait {
        None => Ok(std::time::Duration::ZERO),
        Some(text) => text
            .parse::<medallion::spec::Duration>()
            .map(|d| std::time::Duration::from_secs(d.seconds))
            .map_err(|e| anyhow::anyhow!("invalid --lock-wait/MEDALLION_LOCK_WAIT `{text}`: {e}")),
    }
}

/// A span such as `250ms`, `5s` or `1m` for `option`.
pub fn span(text: &str, option: &str) -> Result<std::time::Duration> {
    let invalid = |e: String| anyhow::anyhow!("invalid {option} `{text}`: {e}");
    match text.trim().strip_suffix("ms") {
        Some(ms) => ms.trim().parse::<u64>().map(std::time::Duration::from_millis).map_err(|e| invalid(e.to_string())),
        None => text
            .parse::<medallion::spec::Duration>()
            .map(|d| std::time::Duration::from_secs(d.seconds))
            .map_err(invalid),
    }
}

/// Where gold models' queries run: `--cluster`/`MEDALLION_CLUSTER`'s scheduler, else in process.
pub fn engine(g: &Global) -> Result<medallion::catalog::Engine> {
    #[cfg(feature = "cluster")]
    if let Some(url) = &g.cluster {
        let cluster = medallion::cluster::Cluster::parse(url).context("invalid --cluster/MEDALLION_CLUSTER")?;
        return Ok(medallion::catalog::Engine::Cluster(cluster));
    }
    let _ = g;
    Ok(medallion::catalog::Engine::InProcess)
}

/// Compressed bronze bytes a promotion or a rebuild resolves at once: `--slice-size`, else what the
/// memory limit allows.
pub fn slice_size(g: &Global) -> Result<u64> {
    match &g.slice_size {
        None => Ok(memory::slice_bytes(memory::limit())),
        Some(text) => size(text, "--slice-size/MEDALLION_SLICE_SIZE"),
    }
}

/// Sets the process's memory limit from `--memory-limit`, if given (before any query runs).
pub fn set_memory_limit(g: &Global) -> Result<()> {
    let Some(text) = &g.memory_limit else { return Ok(()) };
    let bytes = size(text, "--memory-limit/MEDALLION_MEMORY_LIMIT")?;
    if bytes < memory::MIN_LIMIT {
        anyhow::bail!(
            "invalid --memory-limit/MEDALLION_MEMORY_LIMIT `{text}`: at least {} MiB",
            memory::MIN_LIMIT >> 20
        );
    }
    memory::set_limit(bytes);
    Ok(())
}

/// A size such as `64MiB` (units B, KiB, MiB, GiB; KB, MB, GB mean the same), more than 0.
pub fn size(text: &str, option: &str) -> Result<u64> {
    let invalid = || anyhow::anyhow!("invalid {option} `{text}`: expected a size such as 64MiB");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| invalid())?;
    let unit: u64 = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    n.checked_mul(unit).filter(|&b| b > 0).ok_or_else(invalid)
}

/// Files decoded in parallel.
pub fn threads(g: &Global) -> usize {
    g.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)).max(1)
}

/// A spinner on stderr with `message`, unless quiet, verbose or JSON output (indicatif also hides
/// it when stderr is not a terminal).
pub fn spinner(g: &Global, message: String) -> Option<indicatif::ProgressBar> {
    (g.quiet == 0 && g.verbose == 0 && g.format != crate::args::Format::Json).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(message);
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    })
}

/// Per silver table whose contract differs from the published table: the verdict of its
/// `on_contract_change` policy (the same one `run` would reach).
pub async fn contract_changes(project: &Project, lake: &Lake) -> Result<Vec<(String, Verdict)>> {
    let mut out = Vec::new();
    for t in project.silver.values() {
        let silver = medallion::storage::delta::Table::open(lake, medallion::storage::Layer::Silver, &t.name).await?;
        let verdict = evolve::assess(t, &silver).await?;
        if verdict != Verdict::Unchanged {
            out.push((t.name.clone(), verdict));
        }
    }
    Ok(out)
}

/// One line per changed table: what changed and what the next run does, or the command to run.
pub fn describe_contract_change(table: &str, verdict: &Verdict) -> (String, Vec<String>, String) {
    let (changes, next) = match verdict {
        Verdict::Unchanged => (&[][..], String::new()),
        Verdict::Evolve(c) => {
            let added = evolve::added_in_place(c);
            let next = if added.is_empty() {
                "the next run lets it in (every published row passes the new rules)".to_string()
            } else {
                format!(
                    "the next run takes it in place (rows already published hold null in {} until `medallion rebuild {table}`)",
                    added.join(", ")
                )
            };
            (&c[..], next)
        }
        Verdict::Rebuild(c) => {
            (&c[..], "the next run rebuilds it from bronze (on_contract_change = \"rebuild\")".to_string())
        }
        Verdict::Refuse(c) => (&c[..], format!("runs refuse to promote into it: run `medallion rebuild {table}`")),
    };
    (format!("silver/{table}"), changes.iter().map(evolve::Change::describe).collect(), next)
}
