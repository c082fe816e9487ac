//! Which landing files a source's `run` reads, and what of them it lands.
//!
//! The policy (each skipped entry is reported, with why, and stays where it is):
//!
//! - `paths` are relative to the project and stay inside it (a validate error otherwise).
//! - Regular files only: directories, FIFOs, sockets and devices are skipped; so are symlinks,
//!   unless the source sets `follow_symlinks = true` (a link may then lead anywhere: the way to
//!   land from a directory outside the project); a dangling link is skipped either way.
//! - Settled files only: a file whose size or modification time changes while `run` looks at it,
//!   or that carries a temporary name (`.name`, `~name`, `*.tmp`, `*.part`, `*.partial`,
//!   `*.crdownload`, `*._COPYING_`, `*.filepart`, `*.inprogress`), is skipped until a later run.
//!   Writers that rename a finished file into place are always read whole.
//! - A file that grew since it was landed (the same bytes, then more) lands its new bytes only:
//!   NDJSON as they are, CSV after the file's header (its `skip_rows` lines and header line, so
//!   the new rows keep their column names; `_line` then counts in the landed batch). A grown
//!   JSON-array or Parquet file is skipped with a message (new elements break the array; a
//!   Parquet footer is at its end), and so is a grown gzip file: write new rows to a new file.
//!   If the landed part ended inside a line (a writer paused mid-line past the settle time), that
//!   line lands again whole from its start (NDJSON: unless it was a whole JSON object already); its
//!   cut copy stays in bronze, a corrupt record or a CSV row the whole one supersedes.
//! - A file untouched since all of it landed (the same size, inode, mtime and ctime) is not read.
//! - An unreadable file is skipped; the others are still read.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::content::Print;
use super::ingest::{IngestOutcome, Input, ReadOptions};
use crate::error::{Error, Result};
use crate::spec::SourceFormat;
use crate::storage::Lake;

/// A file modified longer ago than this is settled without being watched.
const SETTLED_AFTER: Duration = Duration::from_secs(2);

/// How long a recently modified file is watched for a change of size or modification time.
const WATCH: Duration = Duration::from_millis(250);

/// Name patterns of files still being written by common tools.
const TEMPORARY_SUFFIXES: &[&str] =
    &[".tmp", ".part", ".partial", ".crdownload", "._COPYING_", ".filepart", ".inprogress", ".swp"];

/// Whether a `paths` pattern leaves the project directory (absolute, or through `..`).
pub fn leaves_project(pattern: &str) -> bool {
    let p = Path::new(pattern);
    p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
}

/// A landing entry: a file to read, or one skipped (with why).
#[derive(Debug)]
pub enum Entry {
    /// A settled regular file: its path, and its name as shown (relative to the project).
    Read {
        /// Where it is.
        path: PathBuf,
        /// Relative to the project.
        shown: String,
    },
    /// Not read.
    Skipped(IngestOutcome),
}

/// The entries matching `patterns` under `root`, in order, judged by the policy above.
pub fn scan(root: &Path, source: &str, patterns: &[String], follow_symlinks: bool) -> Result<Vec<Entry>> {
    let mut found = Vec::new();
    for pattern in patterns {
        let full = root.join(pattern);
        let paths = glob::glob(&full.to_string_lossy()).map_err(|e| Error::Ingest {
            source_name: source.to_string(),
            input: pattern.clone(),
            message: e.to_string(),
        })?;
        for path in paths {
            let path = match path {
                Ok(p) => p,
                Err(e) => {
                    let shown = e.path().strip_prefix(root).unwrap_or(e.path()).display().to_string();
                    found.push(Entry::Skipped(IngestOutcome::skipped(
                        &shown,
                        format!("cannot be listed: {}", e.error()),
                    )));
                    continue;
                }
            };
            let shown = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            found.push(judge(path, shown, follow_symlinks));
        }
    }
    Ok(settle(found))
}

/// A matched path judged by type and name.
fn judge(path: PathBuf, shown: String, follow_symlinks: bool) -> Entry {
    let skip = |why: String| Entry::Skipped(IngestOutcome::skipped(&shown, why));
    let link = match std::fs::symlink_metadata(&path) {
        Ok(m) => m.file_type().is_symlink(),
        Err(e) => return skip(format!("cannot be read: {e}")),
    };
    if link && !follow_symlinks {
        return skip("a symlink: not followed (set `follow_symlinks = true` on the source to read links)".into());
    }
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) if link => return skip("a dangling symlink".into()),
        Err(e) => return skip(format!("cannot be read: {e}")),
    };
    if !meta.is_file() {
        let what = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
        return skip(what.into());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.starts_with('.') || name.starts_with('~') || TEMPORARY_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return skip("a temporary name: still being written (it is read once renamed)".into());
    }
    Entry::Read { path, shown }
}

/// A file's size and modification time.
type Stamp = Option<(u64, Option<SystemTime>)>;

/// Files modified in the last [`SETTLED_AFTER`] are watched for [`WATCH`] (once, for all of
/// them): one that changes meanwhile is skipped as still being written.
fn settle(mut found: Vec<Entry>) -> Vec<Entry> {
    let stamp = |p: &Path| -> Stamp { std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok())) };
    // No time to compare with, or one in the future, counts as recent: watched.
    let recent = |s: &Stamp| {
        s.and_then(|(_, t)| t).is_none_or(|t| SystemTime::now().duration_since(t).map_or(true, |a| a < SETTLED_AFTER))
    };
    let watched: Vec<(usize, Stamp)> = found
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::Read { path, .. } => Some((i, stamp(path))).filter(|(_, s)| recent(s)),
            Entry::Skipped(_) => None,
        })
        .collect();
    if watched.is_empty() {
        return found;
    }
    std::thread::sleep(WATCH);
    for (i, before) in watched {
        if let Entry::Read { path, shown } = &found[i]
            && stamp(path) != before
        {
            let why = "still being written (its size or time changed while run looked): the next run reads it";
            found[i] = Entry::Skipped(IngestOutcome::skipped(shown, why));
        }
    }
    found
}

/// What was landed of a landing path last time: its first `bytes` bytes, by their hash; the
/// file's stamp then, and the batch that holds them.
#[derive(Debug, Serialize, Deserialize)]
struct Landed {
    path: String,
    bytes: u64,
    sha256: String,
    #[serde(default)]
    stamp: Option<FileStamp>,
    #[serde(default)]
    batch_id: Option<String>,
    #[serde(default)]
    batch_path: Option<String>,
}

/// A file's identity and last change as the filesystem keeps them: size, inode, modification and
/// status-change times (nanoseconds). The status-change time moves on every write, rename or
/// `touch` and cannot be set back by tools that preserve modification times (`cp -p`, `rsync
/// -t`), so an equal stamp means the same bytes, as git's index assumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    len: u64,
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path` now (None where the platform has no inode and ctime).
    pub fn of(path: &Path) -> Option<FileStamp> {
        FileStamp::of_metadata(&std::fs::metadata(path).ok()?)
    }

    /// The stamp a file's metadata gives (None where the platform has no inode and ctime).
    pub fn of_metadata(m: &std::fs::Metadata) -> Option<FileStamp> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            Some(FileStamp {
                len: m.len(),
                dev: m.dev(),
                ino: m.ino(),
                mtime_ns: ns(m.mtime(), m.mtime_nsec()),
                ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            None
        }
    }
}

/// A landing file untouched since all of it was landed (the same [`FileStamp`]): the batch that
/// holds it, as (batch id, path). The file is then not read again, so a run costs the files that
/// are new or changed, not every file kept in the landing directory.
pub async fn unchanged(lake: &Lake, source: &str, shown: &str, path: &Path) -> Result<Option<(String, String)>> {
    let Some(bytes) = lake.get(&landed_path(source, shown)).await? else { return Ok(None) };
    let Ok(before) = serde_json::from_slice::<Landed>(&bytes) else { return Ok(None) };
    let (Some(stamp), Some(id), Some(batch)) = (before.stamp, before.batch_id, before.batch_path) else {
        return Ok(None);
    };
    let now = FileStamp::of(path);
    Ok((now.as_ref() == Some(&stamp) && stamp.len == before.bytes).then_some((id, batch)))
}

/// What to land of a landing file.
#[derive(Debug)]
pub enum NewContent {
    /// All of it (first seen, rewritten, or unchanged: landing is exactly once per content).
    Whole,
    /// Only what was appended since it was landed: `head` (a CSV file's header lines), then the
    /// file from byte `start` on, with a note.
    Appended {
        /// Where the new bytes start.
        start: u64,
        /// Bytes landed before them: the CSV header, else nothing.
        head: Vec<u8>,
        /// What happened, for the run's output.
        note: String,
    },
    /// Nothing: it grew, and its format cannot land new bytes alone.
    Refused(String),
}

fn landed_path(source: &str, shown: &str) -> String {
    format!("_medallion/ingest/{source}/paths/{}.json", &hex(&Sha256::digest(shown.as_bytes()))[..32])
}

/// Compares the landing file at `path` (shown as `shown`) with what was landed of it.
pub async fn new_content(
    lake: &Lake,
    source: &str,
    read: &ReadOptions,
    shown: &str,
    path: &Path,
) -> Result<NewContent> {
    let Some(bytes) = lake.get(&landed_path(source, shown)).await? else { return Ok(NewContent::Whole) };
    let Ok(before) = serde_json::from_slice::<Landed>(&bytes) else { return Ok(NewContent::Whole) };
    let file = path.to_path_buf();
    let n = before.bytes;
    // CSV: the header lines, read only when the file grew.
    let header_lines = match read.format {
        SourceFormat::Csv => read.csv.skip_rows + usize::from(read.csv.header),
        _ => 0,
    };
    // The file's length, the hash of its first `n` bytes when it is longer, its first bytes (gzip
    // or not), its header lines and the landed part's last line when it has no line break.
    type Grown = (u64, Option<(Seen, [u8; 2], Vec<u8>, Option<Cut>)>);
    let prefix = tokio::task::spawn_blocking(move || -> std::io::Result<Grown> {
        let len = std::fs::metadata(&file)?.len();
        if len <= n {
            return Ok((len, None));
        }
        let seen = Seen::of_reader(std::fs::File::open(&file)?.take(n))?;
        // One read of the landed part's start: its first two bytes, then its header lines.
        let mut reader = std::io::BufReader::new(std::fs::File::open(&file)?.take(n.min(HEADER_LIMIT)));
        let start = std::io::BufRead::fill_buf(&mut reader)?;
        let magic = [start.first().copied().unwrap_or(0), start.get(1).copied().unwrap_or(0)];
        let mut head = Vec::new();
        for _ in 0..header_lines {
            if std::io::BufRead::read_until(&mut reader, b'\n', &mut head)? == 0 {
                break;
            }
        }
        let cut = cut_line(&file, n)?;
        Ok((len, Some((seen, magic, head, cut))))
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing {shown}: {e}")))?
    .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let (len, Some((prefix, magic, head, cut))) = prefix else { return Ok(NewContent::Whole) };
    if prefix.bytes != n || prefix.sha256 != before.sha256 {
        return Ok(NewContent::Whole);
    }
    let added = len - n;
    let refused = |why: &str| {
        Ok(NewContent::Refused(format!(
            "grew by {added} bytes since it was landed; {why}: write new rows to a new file"
        )))
    };
    if magic == [0x1f, 0x8b] {
        return refused("a gzip file is landed whole, and bytes appended to it are not a gzip stream of their own");
    }
    // A landed part ending inside a line (a writer that paused mid-line past the settle time): the
    // line lands again whole, from its start, unless it was a whole JSON object already. Its cut
    // copy stays in bronze (a corrupt record, or a CSV row that the whole one supersedes).
    let (start, recut) = match (&cut, read.format) {
        (Some(c), SourceFormat::Ndjson) if c.whole_json => (prefix.bytes, String::new()),
        (Some(c), SourceFormat::Ndjson | SourceFormat::Csv) if c.start >= head.len() as u64 => (
            c.start,
            format!(
                "; its last line was cut when it was landed ({} bytes without a line break), and lands again whole",
                prefix.bytes - c.start
            ),
        ),
        // Cut inside the CSV header lines: read it all again.
        (Some(_), SourceFormat::Csv) => return Ok(NewContent::Whole),
        _ => (prefix.bytes, String::new()),
    };
    match read.format {
        SourceFormat::Ndjson => Ok(NewContent::Appended {
            start,
            head: Vec::new(),
            note: format!(
                "grew by {added} bytes since it was landed: its new bytes landed, not the {n} landed before{recut}"
            ),
        }),
        SourceFormat::Csv if head.ends_with(b"\n") || header_lines == 0 => Ok(NewContent::Appended {
            start,
            note: format!(
                "grew by {added} bytes since it was landed: its new rows landed after its header, not the {n} bytes landed before{recut}"
            ),
            head,
        }),
        SourceFormat::Csv => refused("its header lines could not be read again"),
        SourceFormat::Json => refused("a JSON-array file is landed whole, and new elements would break its array"),
        SourceFormat::Parquet => refused("a Parquet file is landed whole (its footer is at its end)"),
    }
}

/// The most bytes read for a CSV file's header lines.
const HEADER_LIMIT: u64 = 1 << 20;

/// The most bytes looked back for the start of a landed part's last line.
const LINE_LIMIT: u64 = 16 << 20;

/// The last line of a landed part that does not end with a line break.
#[derive(Debug)]
struct Cut {
    /// Where the line starts.
    start: u64,
    /// Whether it is a whole JSON object (then it landed as a record).
    whole_json: bool,
}

/// The last line of the file's first `n` bytes when they do not end with a line break (blocking).
/// A line longer than [`LINE_LIMIT`], or the only line, starts at 0.
fn cut_line(file: &Path, n: u64) -> std::io::Result<Option<Cut>> {
    use std::io::{Seek, SeekFrom};
    if n == 0 {
        return Ok(None);
    }
    let from = n.saturating_sub(LINE_LIMIT);
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((n - from) as usize);
    f.take(n - from).read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(None);
    }
    let start = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => return Ok(Some(Cut { start: 0, whole_json: false })),
    };
    let line = &tail[(start - from) as usize..];
    let trimmed = line.trim_ascii();
    let whole_json = trimmed.starts_with(b"{") && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok();
    Ok(Some(Cut { start, whole_json }))
}

/// A landing file's whole content as [`remember`] records it.
#[derive(Debug, Clone)]
pub struct Seen {
    bytes: u64,
    sha256: String,
}

impl Seen {
    /// The length and hash of the file at `path` (read streaming; blocking).
    pub fn of_file(path: &Path) -> std::io::Result<Seen> {
        Seen::of_reader(std::fs::File::open(path)?)
    }

    fn of_reader(mut r: impl Read) -> std::io::Result<Seen> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    bytes += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Seen { bytes, sha256: hex(&hasher.finalize()) })
    }

    /// Whether two files had the same bytes.
    pub fn same_bytes(&self, other: &Seen) -> bool {
        self.bytes == other.bytes && self.sha256 == other.sha256
    }
}

impl From<Print> for Seen {
    fn from(print: Print) -> Seen {
        Seen { bytes: print.bytes, sha256: print.sha256 }
    }
}

/// Lands `inputs` given together (in their order, each with a later ingest time than the one
/// before) with `land` (given an input's index), `threads` at a time, in the [`waves`] that keep a
/// repeated input after its first copy; every input to its end, even when another fails. Returns
/// what `land` gave for each input, in the inputs' order.
pub async fn in_waves<T, Landed>(inputs: &[Arc<dyn Input>], threads: usize, land: impl Fn(usize) -> Landed) -> Vec<T>
where
    Landed: std::future::Future<Output = T>,
{
    use futures::StreamExt as _;
    let mut landed: Vec<Option<T>> = inputs.iter().map(|_| None).collect();
    for wave in waves(inputs, threads).await {
        let done: Vec<(usize, T)> = futures::stream::iter(wave)
            .map(|i| {
                let landing = land(i);
                async move { (i, landing.await) }
            })
            .buffered(threads.max(1))
            .collect()
            .await;
        for (i, outcome) in done {
            landed[i] = Some(outcome);
        }
    }
    // Every input is in exactly one wave.
    landed.into_iter().flatten().collect()
}

/// Inputs landed together go in two waves, `threads` at a time: first those whose raw bytes
/// repeat no earlier input's, then the repeats, which so find their content landed with the
/// earlier input's ingest time rather than race it for the batch. Only inputs sharing a size with
/// another are read to tell (blocking work, `threads` at a time); one that cannot be read goes in
/// the first wave, where landing it says why. Returns the two waves as indexes into `inputs`.
async fn waves(inputs: &[Arc<dyn Input>], threads: usize) -> [Vec<usize>; 2] {
    use futures::StreamExt as _;
    let sizes: Vec<Option<u64>> = inputs.iter().map(|i| i.size().ok()).collect();
    let mut count: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for size in sizes.iter().flatten() {
        *count.entry(*size).or_default() += 1;
    }
    let hashed: Vec<Option<Seen>> = futures::stream::iter(inputs.iter().zip(&sizes))
        .map(|(input, size)| {
            let shared = size.is_some_and(|s| count[&s] > 1);
            let input = Arc::clone(input);
            async move {
                if !shared {
                    return None;
                }
                tokio::task::spawn_blocking(move || input.open().and_then(Seen::of_reader).ok()).await.ok().flatten()
            }
        })
        .buffered(threads.max(1))
        .collect()
        .await;
    let mut waves: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (i, seen) in hashed.iter().enumerate() {
        let repeat = seen
            .as_ref()
            .is_some_and(|s| waves[0].iter().any(|&first| hashed[first].as_ref().is_some_and(|f| f.same_bytes(s))));
        waves[usize::from(repeat)].push(i);
    }
    waves
}

/// Records that `seen` (the whole file) of `shown` was landed, in the batch `landed_in` (id,
/// path); with the file's `stamp` when it stayed the same while it was read.
pub async fn remember(
    lake: &Lake,
    source: &str,
    shown: &str,
    seen: Seen,
    stamp: Option<FileStamp>,
    landed_in: (&str, &str),
) -> Result<()> {
    let landed = Landed {
        path: shown.to_string(),
        bytes: seen.bytes,
        sha256: seen.sha256,
        stamp: stamp.filter(|s| s.len == seen.bytes),
        batch_id: Some(landed_in.0.to_string()),
        batch_path: Some(landed_in.1.to_string()),
    };
    let bytes = serde_json::to_vec(&landed).map_err(|e| Error::Internal(e.to_string()))?;
    lake.put(&landed_path(source, shown), bytes).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_untouched_file_is_known_by_its_stamp_and_a_rewritten_one_is_read_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let lake = Lake::open("lake", dir.path()).expect("lake");
        let file = dir.path().join("a.ndjson");
        std::fs::write(&file, b"{\"id\": 1}\n").expect("write");
        let known = || unchanged(&lake, "s", "a.ndjson", &file);
        assert_eq!(known().await.expect("look"), None, "never landed");
        let seen = Seen::of_file(&file).expect("hash");
        let batch = ("b1", "bronze/s/2026-12-01/b1.ndjson.gz");
        remember(&lake, "s", "a.ndjson", seen.clone(), None, batch).await.expect("remember");
        assert_eq!(known().await.expect("look"), None, "landed while it changed: no stamp, read again");
        remember(&lake, "s", "a.ndjson", seen, FileStamp::of(&file), batch).await.expect("remember");
        assert_eq!(known().await.expect("look"), Some((batch.0.to_string(), batch.1.to_string())));
        // The same bytes written again, the modification time set back: the status-change time
        // moved, so it is read again (and then found landed by its content).
        let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
        std::fs::write(&file, b"{\"id\": 1}\n").expect("rewrite");
        std::fs::File::options().write(true).open(&file).and_then(|f| f.set_modified(mtime)).expect("set mtime");
        assert_eq!(known().await.expect("look"), None);
    }

    #[tokio::test]
    async fn a_repeat_lands_in_the_second_wave_and_only_shared_sizes_are_read() {
        struct Counted(bytes::Bytes, std::sync::atomic::AtomicUsize);
        impl Input for Counted {
            fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.0.open()
            }
            fn size(&self) -> std::io::Result<u64> {
                self.0.size()
            }
        }
        let inputs: Vec<Arc<Counted>> = ["aaaa", "bb", "aaaa", "abab", "ccc", "bb"]
            .iter()
            .map(|t| Arc::new(Counted(bytes::Bytes::from_static(t.as_bytes()), Default::default())))
            .collect();
        let dyns: Vec<Arc<dyn Input>> = inputs.iter().map(|i| Arc::clone(i) as Arc<dyn Input>).collect();
        assert_eq!(waves(&dyns, 2).await, [vec![0, 1, 3, 4], vec![2, 5]]);
        let opened: Vec<usize> = inputs.iter().map(|i| i.1.load(std::sync::atomic::Ordering::SeqCst)).collect();
        assert_eq!(opened, [1, 1, 1, 1, 0, 1], "the one size no other input has is not read");
    }

    #[test]
    fn paths_that_leave_the_project_are_told() {
        for p in ["/etc/*", "../outside/*", "data/../../x", "landing/../../*.csv"] {
            assert!(leaves_project(p), "{p}");
        }
        for p in ["landing/*.ndjson", "data/**/*.csv", "a..b/x"] {
            assert!(!leaves_project(p), "{p}");
        }
    }
}
