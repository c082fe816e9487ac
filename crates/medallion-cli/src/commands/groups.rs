//! Group commit for `serve --flush-after`: pushes to a source are buffered and landed together as
//! one bronze batch when the group is `--flush-after` old, holds `--flush-records` records or
//! `--flush-bytes` bytes, or the server stops (SIGTERM). Every push is answered only once its
//! group's batch is in the lake: a kill loses only pushes not yet acknowledged, and a client that
//! sends again lands once (each body is exactly once per content, see `ingest_group`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use medallion::bronze::ingest::{IngestOutcome, ReadOptions, ingest_group};
use medallion::storage::Lake;
use tokio::sync::oneshot;

/// When a group is landed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Age of its first push.
    pub after: Duration,
    /// Records in it.
    pub records: u64,
    /// Bytes of bodies in it.
    pub bytes: usize,
}

type Answer = Result<IngestOutcome, String>;

/// A group being filled.
struct Open {
    id: u64,
    read: ReadOptions,
    bodies: Vec<Bytes>,
    waiters: Vec<oneshot::Sender<Answer>>,
    records: u64,
    bytes: usize,
}

/// The open groups, one per source.
pub struct Groups {
    lake: Lake,
    limits: Limits,
    open: Mutex<HashMap<String, Open>>,
    ids: AtomicU64,
}

impl Groups {
    pub fn new(lake: Lake, limits: Limits) -> Arc<Groups> {
        Arc::new(Groups { lake, limits, open: Mutex::new(HashMap::new()), ids: AtomicU64::new(0) })
    }

    /// Adds a checked body (`records` records) to `source`'s group; answers once it has landed.
    pub async fn push(self: &Arc<Self>, source: &str, read: &ReadOptions, body: Bytes, records: u64) -> Answer {
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut open = self.open.lock().map_err(|_| "the push buffer is poisoned".to_string())?;
            let group = open.entry(source.to_string()).or_insert_with(|| {
                let id = self.ids.fetch_add(1, Ordering::Relaxed);
                let (groups, source) = (Arc::clone(self), source.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(groups.limits.after).await;
                    groups.flush_if(&source, id).await;
                });
                Open { id, read: read.clone(), bodies: Vec::new(), waiters: Vec::new(), records: 0, bytes: 0 }
            });
            group.records += records;
            group.bytes += body.len();
            group.bodies.push(body);
            group.waiters.push(tx);
            if group.records >= self.limits.records || group.bytes >= self.limits.bytes {
                open.remove(source)
            } else {
                None
            }
        };
        if let Some(group) = full {
            tokio::spawn(Arc::clone(self).land(source.to_string(), group));
        }
        rx.await.unwrap_or_else(|_| Err("the server stopped before the push landed".into()))
    }

    /// Lands `source`'s group if it is still group `id` (a full one was landed already).
    async fn flush_if(self: Arc<Self>, source: &str, id: u64) {
        let group = match self.open.lock() {
            Ok(mut open) if open.get(source).is_some_and(|g| g.id == id) => open.remove(source),
            _ => None,
        };
        if let Some(group) = group {
            self.land(source.to_string(), group).await;
        }
    }

    /// Lands every open group now (shutdown), answering their pushes.
    pub async fn flush_all(self: &Arc<Self>) {
        let groups: Vec<(String, Open)> = match self.open.lock() {
            Ok(mut open) => open.drain().collect(),
            Err(_) => Vec::new(),
        };
        for (source, group) in groups {
            Arc::clone(self).land(source, group).await;
        }
    }

    async fn land(self: Arc<Self>, source: String, group: Open) {
        let input = format!("POST /ingest/{source}");
        let landed = ingest_group(&self.lake, &source, &group.read, &input, group.bodies, chrono::Utc::now()).await;
        match landed {
            Ok(outcomes) => {
                for (tx, outcome) in group.waiters.into_iter().zip(outcomes) {
                    let _ = tx.send(Ok(outcome));
                }
            }
            Err(e) => {
                for tx in group.waiters {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        }
    }
}
