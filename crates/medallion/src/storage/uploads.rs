//! Uploads a killed process left behind on a local lake: object_store's local store writes
//! `<file>#<n>` and renames it into place, and lists no such name, so neither a listing nor a
//! Delta vacuum ever sees one. Bronze batches and table files are swept alike.

use std::path::Path;
use std::time::SystemTime;

/// Whether `name` is a local store's staging name (`<file>#<digits>`).
pub(crate) fn is_staged(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The staged uploads under `dir` (not descending into `_delta_log`) last modified before
/// `older_than` (None: none is old enough), removed unless `dry_run`; their paths relative to
/// `dir`. A missing `dir` has none.
pub(crate) fn abandoned(dir: &Path, older_than: Option<SystemTime>, dry_run: bool) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let entries = match std::fs::read_dir(&at) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if meta.is_dir() {
                if name != "_delta_log" {
                    pending.push(entry.path());
                }
                continue;
            }
            let old = match (older_than, meta.modified()) {
                (Some(limit), Ok(at)) => at <= limit,
                _ => false,
            };
            if is_staged(&name) && old {
                if !dry_run {
                    std::fs::remove_file(entry.path())?;
                }
                let path = entry.path();
                out.push(path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_staged_files_are_swept() {
        let dir = tempfile::tempdir().expect("tmp");
        let day = dir.path().join("orders/2024-03-01");
        std::fs::create_dir_all(&day).expect("mkdir");
        for name in ["b1.ndjson.gz", "b1.ndjson.gz#3", "b2.csv.gz#12", "odd#name", "x#"] {
            std::fs::write(day.join(name), b"x").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("t/_delta_log")).expect("log");
        std::fs::write(dir.path().join("t/_delta_log/00.json#1"), b"x").expect("write");
        let now = SystemTime::now() + std::time::Duration::from_secs(1);

        assert!(abandoned(dir.path(), Some(SystemTime::UNIX_EPOCH), false).expect("young").is_empty());
        assert!(abandoned(dir.path(), None, false).expect("none").is_empty());
        let would = abandoned(dir.path(), Some(now), true).expect("dry run");
        assert_eq!(would, ["orders/2024-03-01/b1.ndjson.gz#3", "orders/2024-03-01/b2.csv.gz#12"]);
        assert!(day.join("b1.ndjson.gz#3").exists(), "a dry run deletes nothing");
        assert_eq!(abandoned(dir.path(), Some(now), false).expect("sweep"), would);
        let mut left: Vec<String> =
            std::fs::read_dir(&day).expect("ls").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, ["b1.ndjson.gz", "odd#name", "x#"]);
        assert!(dir.path().join("t/_delta_log/00.json#1").exists(), "the log is delta-rs's");
        assert!(abandoned(&dir.path().join("missing"), Some(now), false).expect("missing").is_empty());
    }
}
