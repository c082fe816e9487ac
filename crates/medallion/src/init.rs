//! `medallion init`: a working orders project with sample data, so `medallion run` works at once.
//!
//! The project is the repository's `examples/orders`, with its `paths` line switched on so that
//! `run` ingests the sample files written under `landing/`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sample::{SampleSpec, generate};

const MEDALLION_TOML: &str = include_str!("../../../examples/orders/medallion.toml");
const DAILY_REVENUE_SQL: &str = include_str!("../../../examples/orders/gold/daily_revenue.sql");
const GITIGNORE: &str = include_str!("../../../examples/orders/.gitignore");
const PATHS_OFF: &str = "# paths = [\"landing/*.ndjson\"]";
const PATHS_ON: &str = "paths = [\"landing/*.ndjson\"]";

/// Files written by [`init`], relative to the project directory.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>> {
    let main = dir.join("medallion.toml");
    if main.exists() {
        return Err(Error::ProjectExists { path: main });
    }
    if !MEDALLION_TOML.contains(PATHS_OFF) {
        return Err(Error::Internal("the example project lost its paths line".into()));
    }
    let (batches, _) = generate(&SampleSpec { rows: 3_000, batches: 3, seed: 42 });
    let mut files: Vec<(PathBuf, String)> = vec![
        ("medallion.toml".into(), MEDALLION_TOML.replace(PATHS_OFF, PATHS_ON)),
        ("gold/daily_revenue.sql".into(), DAILY_REVENUE_SQL.to_string()),
        (".gitignore".into(), GITIGNORE.replace("landing/\n", "")),
    ];
    for b in &batches {
        files.push((format!("landing/orders-{}.ndjson", b.date).into(), b.landing_ndjson()));
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(&path, text).map_err(|source| Error::Io { path: path.clone(), source })?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}
