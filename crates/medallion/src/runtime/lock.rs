//! One writer per lake: `_medallion/lock` is created with a conditional put (create-if-absent,
//! which object stores implement as `If-None-Match: *`), names its holder, and is refreshed by a
//! heartbeat while the holder works. A second `run` or `replay` fails fast naming the holder (or,
//! with a lock wait, waits its turn: parallel `run --date` tasks of a scheduler), unless the lock is stale: its heartbeat older than the timeout, or its process gone on
//! this same host (a `kill -9` does not block the next run).
//!
//! Staleness never compares two machines' clocks, nor a pinned one (`MEDALLION_NOW`): the age of
//! the last heartbeat is the store's own time (the modification time of a probe object written
//! now) minus the lock object's modification time, both stamped by the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Lake;

/// Where the lock lives in the lake.
pub const PATH: &str = "_medallion/lock";

/// An object written to read the store's clock when a held lock may be stale.
const CLOCK_PROBE: &str = "_medallion/lock.clock";

/// A lock whose heartbeat is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// How often a holder refreshes its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(20);

/// Who holds the lake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// What it is doing (`run 2024…`, `ingest orders`, `replay orders`).
    pub what: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it took the lock (RFC 3339, its machine's clock: for people, never compared).
    pub since: String,
    /// Its last heartbeat (RFC 3339, its machine's clock: for people, never compared).
    pub heartbeat: String,
    /// A random token telling this holder from any other.
    pub token: String,
}

impl Holder {
    fn new(what: &str) -> Holder {
        let now = chrono::Utc::now();
        Holder {
            what: what.to_string(),
            host: host(),
            pid: std::process::id(),
            since: now.to_rfc3339(),
            heartbeat: now.to_rfc3339(),
            token: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Whether its process is gone: it ran on this host and no longer does.
    fn gone(&self) -> bool {
        self.host == host() && self.pid != std::process::id() && !alive(self.pid)
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether process `pid` runs on this host (Linux `/proc`; elsewhere assumed alive).
fn alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The held lock; [`LakeLock::release`] gives it back.
#[derive(Debug)]
pub struct LakeLock {
    lake: Lake,
    holder: Holder,
    stop: Arc<AtomicBool>,
}

/// Takes the lake's lock for `what`, waiting up to `wait` while another writer holds it (polling
/// with jittered backoff, so N processes started together take turns); then fails naming the
/// holder.
pub async fn acquire_waiting(lake: &Lake, what: &str, wait: Duration) -> Result<LakeLock> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match acquire(lake, what).await {
            Err(Error::Locked { .. }) if start.elapsed() + pause <= wait => {
                let jitter =
                    Duration::from_millis(uuid::Uuid::new_v4().as_u64_pair().0 % (pause.as_millis() as u64 / 2 + 1));
                tracing::info!(
                    what,
                    waited_ms = start.elapsed().as_millis() as u64,
                    "the lake is locked by another writer; waiting"
                );
                tokio::time::sleep(pause + jitter).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Takes the lake's lock for `what`, or fails naming the holder.
pub async fn acquire(lake: &Lake, what: &str) -> Result<LakeLock> {
    let holder = Holder::new(what);
    let bytes = serde_json::to_vec_pretty(&holder).map_err(|e| Error::Internal(e.to_string()))?;
    for _ in 0..3 {
        if lake.put_if_absent(PATH, bytes.clone()).await? {
            let stop = Arc::new(AtomicBool::new(false));
            heartbeat(lake.clone(), holder.clone(), Arc::clone(&stop));
            return Ok(LakeLock { lake: lake.clone(), holder, stop });
        }
        let Some((current, beat)) = read_with_time(lake).await? else { continue };
        if !current.gone() && !silent(lake, beat).await? {
            return Err(Error::Locked {
                holder: format!(
                    "{} (pid {} on {}, since {}, last heartbeat {})",
                    current.what, current.pid, current.host, current.since, current.heartbeat
                ),
                hint: format!(
                    "wait for it to finish; a lock whose heartbeat is older than {}s, or whose process is gone from this host, is taken over",
                    STALE_AFTER.as_secs()
                ),
            });
        }
        tracing::warn!(holder = %current.what, pid = current.pid, host = %current.host, "taking over a stale lake lock");
        // Remove the stale lock only if it is still the one we judged stale.
        if read(lake).await?.as_ref() == Some(&current) {
            lake.delete(PATH).await?;
        }
    }
    Err(Error::Locked {
        holder: "another process (the lock changed hands while taking it over)".into(),
        hint: "retry".into(),
    })
}

/// Whether a heartbeat stamped `beat` by the store is older than [`STALE_AFTER`] by the store's
/// clock now.
async fn silent(lake: &Lake, beat: chrono::DateTime<chrono::Utc>) -> Result<bool> {
    let now = lake.store_now(CLOCK_PROBE).await?;
    Ok((now - beat).to_std().is_ok_and(|age| age > STALE_AFTER))
}

/// The lock's holder and when the store last wrote it.
async fn read_with_time(lake: &Lake) -> Result<Option<(Holder, chrono::DateTime<chrono::Utc>)>> {
    let Some(meta) = lake.head(PATH).await? else { return Ok(None) };
    Ok(read(lake).await?.map(|h| (h, meta.last_modified)))
}

async fn read(lake: &Lake) -> Result<Option<Holder>> {
    match lake.get(PATH).await? {
        None => Ok(None),
        // An unreadable lock (a torn write by a foreign tool) is treated as stale.
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Holder {
            what: "unreadable lock".into(),
            host: String::new(),
            pid: 0,
            since: String::new(),
            heartbeat: String::new(),
            token: String::new(),
        }))),
    }
}

fn heartbeat(lake: Lake, mut holder: Holder, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // Refresh only while the lock is still ours.
            match read(&lake).await {
                Ok(Some(current)) if current.token == holder.token => {}
                _ => return,
            }
            holder.heartbeat = chrono::Utc::now().to_rfc3339();
            if let Ok(bytes) = serde_json::to_vec_pretty(&holder) {
                let _ = lake.put(PATH, bytes).await;
            }
        }
    });
}

impl LakeLock {
    /// Who holds it (this process).
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Gives the lock back after work that gave `out`, and returns `out`: a failed release never
    /// hides the work's own error, nor turns committed work into a failure (the lock left behind
    /// is taken over once stale; a warning says so).
    pub async fn release_after<T>(self, out: Result<T>) -> Result<T> {
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the lake lock; the next writer takes it over once it is stale");
        }
        out
    }

    /// Gives the lock back (if it is still ours).
    pub async fn release(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if read(&self.lake).await?.is_some_and(|h| h.token == self.holder.token) {
            self.lake.delete(PATH).await?;
        }
        Ok(())
    }
}
