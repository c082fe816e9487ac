//! Bringing projects from other tools and data from files: `medallion import dbt`, `medallion
//! import files`.

pub mod dbt;
pub mod files;
mod seed;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What an import wrote and left out.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Files written, relative to the new project.
    pub files: Vec<PathBuf>,
    /// What was not translated, with the file it is about.
    pub untranslated: Vec<(PathBuf, String)>,
    /// Choices made for the user (an inferred key), with the file they concern.
    pub notes: Vec<(PathBuf, String)>,
}

/// The `.gitignore` of an imported project: the lake is data, not source.
const GITIGNORE: &str = "lake/\n";

/// Writes `bytes` to `rel` under `to`, making its directory.
fn write_file(to: &Path, rel: &Path, bytes: &[u8]) -> Result<()> {
    let path = to.join(rel);
    make_parent(&path)?;
    std::fs::write(&path, bytes).map_err(|source| Error::Io { path, source })
}

/// Makes the directory `path` goes in.
fn make_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })
        }
        None => Ok(()),
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A TOML key: bare when it can be.
fn key(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        quote(s)
    }
}
