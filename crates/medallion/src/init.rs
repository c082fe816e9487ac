//! `medallion init`: a working orders project with sample data, so `medallion run` works at once.
//!
//! The project is the repository's `examples/orders`, with its `paths` line switched on so that
//! `run` ingests the sample files written under `landing/`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sample::{SampleSpec, generate};

const MEDALLION_TOML: &str = include_str!("../../../examples/orders/medallion.toml");
const DAILY_REVENUE_SQL: &str = include_str!("../../../examples/orders/gold/daily_revenue.sql");
const REVENUE_BY_TIER_SQL: &str = include_str!("../../../examples/orders/gold/revenue_by_tier.sql");
const GITIGNORE: &str = include_str!("../../../examples/orders/.gitignore");
const PATHS: [(&str, &str); 2] = [
    ("# paths = [\"landing/orders-*.ndjson\"]", "paths = [\"landing/orders-*.ndjson\"]"),
    ("# paths = [\"landing/customers*.ndjson\"]", "paths = [\"landing/customers*.ndjson\"]"),
];

/// Files written by [`init`], relative to the project directory.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>> {
    let main = dir.join("medallion.toml");
    if main.exists() {
        return Err(Error::ProjectExists { path: main });
    }
    let mut toml = MEDALLION_TOML.to_string();
    for (off, on) in PATHS {
        if !toml.contains(off) {
            return Err(Error::Internal(format!("the example project lost its line `{off}`")));
        }
        toml = toml.replace(off, on);
    }
    let (batches, _) = generate(&SampleSpec { rows: 3_000, batches: 3, seed: 42 });
    let mut customers = crate::sample::customers(&batches, 42).join("\n");
    customers.push('\n');
    let mut files: Vec<(PathBuf, String)> = vec![
        ("medallion.toml".into(), toml),
        ("gold/daily_revenue.sql".into(), DAILY_REVENUE_SQL.to_string()),
        ("gold/revenue_by_tier.sql".into(), REVENUE_BY_TIER_SQL.to_string()),
        ("landing/customers.ndjson".into(), customers),
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
