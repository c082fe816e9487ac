//! The lake: a root location with a fixed layout, accessed through `object_store`.
//!
//! ```text
//! <lake>/bronze/<source>/<YYYY-MM-DD>/<batch_id>.ndjson.gz   immutable raw batches (CSV: .csv.gz)
//! <lake>/silver/<table>/                                      Delta table
//! <lake>/quarantine/<table>/                                  Delta table: dead letter
//! <lake>/gold/<model>/                                        Delta table
//! <lake>/_medallion/                                          the tool's own state
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::error::{Error, Result};

/// The layer a Delta table belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Validated, deduplicated tables.
    Silver,
    /// Rejected records with their reasons.
    Quarantine,
    /// SQL models.
    Gold,
    /// medallion's own tables under `_medallion/` (expectation results).
    System,
}

impl Layer {
    /// Directory name in the lake.
    pub fn dir(self) -> &'static str {
        match self {
            Layer::Silver => "silver",
            Layer::Quarantine => "quarantine",
            Layer::Gold => "gold",
            Layer::System => "_medallion",
        }
    }

    /// The layer and name a table is given by: `silver/orders`, as runs, errors and events name
    /// it, or `silver.orders`, as SQL does; None for a bare name or anything but silver, gold
    /// and quarantine.
    pub fn split(label: &str) -> Option<(Layer, &str)> {
        let (layer, name) = label.split_once(['/', '.'])?;
        let layer = [Layer::Silver, Layer::Gold, Layer::Quarantine].into_iter().find(|l| l.dir() == layer)?;
        Some((layer, name))
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// An opened lake.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The lake's root.
    store: Arc<dyn ObjectStore>,
    /// The bucket's root (object-store lakes).
    bucket: Option<Arc<dyn ObjectStore>>,
    root_url: Url,
    display: String,
    /// Delta tables opened through this lake (and its clones), reopened by reading only the
    /// commits made since.
    opened: Arc<super::delta::Opened>,
}

impl Lake {
    /// Opens (creating if needed) the lake at `location`: a directory path, relative paths being
    /// resolved against `base` (the project directory), or a `file://` URL.
    pub fn open(location: &str, base: &Path) -> Result<Lake> {
        Lake::open_with(location, base, &BTreeMap::new())
    }

    /// Opens the lake at `location`: a directory, a `file://` URL or an object-store URL
    /// (`s3://bucket/prefix`, `gs://…`, `az://…`) configured by the environment and `options`
    /// (the project's `[storage]`; see `storage::cloud`). Nothing is read or written yet: see
    /// [`Lake::check`].
    pub fn open_with(location: &str, base: &Path, options: &BTreeMap<String, String>) -> Result<Lake> {
        let dir: PathBuf = if let Some(rest) = location.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if location.contains("://") {
            return Lake::open_object_store(location, options);
        } else if Path::new(location).is_absolute() {
            PathBuf::from(location)
        } else {
            base.join(location)
        };
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let dir = dir.canonicalize().map_err(|source| Error::Io { path: dir.clone(), source })?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|cause| Error::Storage { location: dir.display().to_string(), cause })?;
        let root_url = Url::from_directory_path(&dir)
            .map_err(|()| Error::Internal(format!("cannot make a URL of {}", dir.display())))?;
        Ok(Lake {
            store: Arc::new(store),
            bucket: None,
            root_url,
            display: dir.display().to_string(),
            opened: Default::default(),
        })
    }

    fn open_object_store(location: &str, options: &BTreeMap<String, String>) -> Result<Lake> {
        let mut root_url = Url::parse(location)
            .map_err(|e| Error::InvalidLake { location: location.to_string(), message: e.to_string() })?;
        if !root_url.path().ends_with('/') {
            root_url.set_path(&format!("{}/", root_url.path()));
        }
        let (bucket, prefix) = super::cloud::bucket_store(&root_url, options)?;
        let bucket: Arc<dyn ObjectStore> = Arc::new(super::object_cache::ObjectCache::new(bucket));
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::clone(&bucket)
        } else {
            Arc::new(PrefixStore::new(Arc::clone(&bucket), prefix))
        };
        Ok(Lake {
            store,
            bucket: Some(bucket),
            root_url,
            display: location.trim_end_matches('/').to_string(),
            opened: Default::default(),
        })
    }

    /// Proves the lake is reachable and readable with the configured credentials (one listing
    /// request): a wrong credential, a missing bucket or an unreachable endpoint is an error here,
    /// before anything is written. The listing is of `_medallion`'s first level: a recursive one
    /// would, on a local lake, walk and stat up to a thousand entries of the run log and the event
    /// log's history on every command.
    pub async fn check(&self) -> Result<()> {
        match self.store.list_with_delimiter(Some(&ObjectPath::from("_medallion"))).await {
            Ok(_) => Ok(()),
            Err(source) => {
                Err(Error::InvalidLake { location: self.display.clone(), message: crate::error::explain(&source) })
            }
        }
    }

    /// The store Delta tables are opened with (its root is the bucket), for object-store lakes;
    /// None for a local lake (delta-rs opens the directory itself).
    pub(crate) fn delta_backend(&self) -> Option<Arc<dyn ObjectStore>> {
        self.bucket.clone()
    }

    /// The Delta tables opened through this lake.
    pub(crate) fn opened(&self) -> &super::delta::Opened {
        &self.opened
    }

    /// Human-readable location.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// OpenLineage's (namespace, name) of `path` in the lake, and its URI: `file` and the absolute
    /// path for a local lake; `scheme://bucket` and the key for an object store.
    pub fn dataset(&self, path: &str) -> (String, String, String) {
        let url = self.root_url.join(path).unwrap_or_else(|_| self.root_url.clone());
        let uri = url.as_str().trim_end_matches('/').to_string();
        let key = url.path().trim_end_matches('/');
        match (url.scheme(), url.host_str()) {
            ("file", _) | (_, None) => ("file".to_string(), key.to_string(), uri),
            (scheme, Some(host)) => (format!("{scheme}://{host}"), key.trim_start_matches('/').to_string(), uri),
        }
    }

    /// URL of the Delta table `layer/name`.
    pub fn table_url(&self, layer: Layer, name: &str) -> Result<Url> {
        self.root_url
            .join(&format!("{}/{name}/", layer.dir()))
            .map_err(|e| Error::Internal(format!("table url for {layer}/{name}: {e}")))
    }

    /// Where the object at `path` is for a process that opens stores by URL (a cluster's
    /// executors): the store (`s3://bucket`, `file://`) and the object's path in it.
    pub fn locate(&self, path: &str) -> Result<(String, String)> {
        let url = self.root_url.join(path).map_err(|e| Error::Internal(format!("the URL of {path}: {e}")))?;
        let (store, object) = super::store_and_root(&url).map_err(Error::Internal)?;
        Ok((store, object.to_string()))
    }

    /// Reads an object, `None` if it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>> {
        let location = ObjectPath::from(path);
        match self.store.get(&location).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|source| storage(path, source))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(storage(path, source)),
        }
    }

    /// Reads bytes `range` of an object, `None` if it does not exist.
    pub async fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        if range.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        match self.store.get_range(&ObjectPath::from(path), range).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(storage(path, source)),
        }
    }

    /// Writes an object atomically, replacing any previous one.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&ObjectPath::from(path), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| storage(path, source))
    }

    /// Writes an object from parts as they come (one put when there is one part, a multipart
    /// upload past it), visible only once complete: `parts` ends with [`Part::Done`]; if it closes
    /// without it (the producer failed), the upload is aborted and nothing is written.
    pub async fn put_parts(&self, path: &str, mut parts: tokio::sync::mpsc::Receiver<Part>) -> Result<()> {
        let location = ObjectPath::from(path);
        let stopped = || Error::Internal(format!("the content of {path} stopped before its end; nothing was written"));
        let first = match parts.recv().await {
            Some(Part::Data(b)) => b,
            Some(Part::Done) => Bytes::new(),
            None => return Err(stopped()),
        };
        let second = match parts.recv().await {
            Some(Part::Done) => return self.put(path, first.to_vec()).await,
            Some(Part::Data(b)) => b,
            None => return Err(stopped()),
        };
        let upload = self.store.put_multipart(&location).await.map_err(|source| storage(path, source))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, first.len().max(5 << 20));
        w.put(first);
        w.put(second);
        loop {
            match parts.recv().await {
                Some(Part::Data(b)) => {
                    if let Err(source) = w.wait_for_capacity(4).await {
                        return Err(storage(path, source));
                    }
                    w.put(b);
                }
                Some(Part::Done) => return w.finish().await.map(|_| ()).map_err(|source| storage(path, source)),
                None => {
                    let _ = w.abort().await;
                    return Err(stopped());
                }
            }
        }
    }

    /// Writes an object only if none exists there; returns whether this call created it.
    pub async fn put_if_absent(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&ObjectPath::from(path), PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(storage(path, source)),
        }
    }

    /// An object's metadata (size, last modified by the store's clock), None when absent.
    pub async fn head(&self, path: &str) -> Result<Option<ObjectMeta>> {
        match self.store.head(&ObjectPath::from(path)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(storage(path, source)),
        }
    }

    /// The store's own clock, read by writing `probe` and reading back its modification time:
    /// comparable with [`ObjectMeta::last_modified`] of other objects whatever this machine's
    /// clock says.
    pub async fn store_now(&self, probe: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        self.put(probe, Vec::new()).await?;
        self.head(probe)
            .await?
            .map(|m| m.last_modified)
            .ok_or_else(|| Error::Internal(format!("{probe} vanished right after it was written")))
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.store.head(&ObjectPath::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(storage(path, source)),
        }
    }

    /// Every object under `prefix`, sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let location = ObjectPath::from(prefix);
        sorted(prefix, self.store.list(Some(&location))).await
    }

    /// Every object under `prefix` whose path sorts after `offset`, sorted by path (one request
    /// on an object store, which lists from the offset).
    pub async fn list_after(&self, prefix: &str, offset: &str) -> Result<Vec<ObjectMeta>> {
        let (location, offset) = (ObjectPath::from(prefix), ObjectPath::from(offset));
        sorted(prefix, self.store.list_with_offset(Some(&location), &offset)).await
    }

    /// Whether any object exists under `prefix` (reads at most one listing entry).
    pub async fn any_under(&self, prefix: &str) -> Result<bool> {
        let location = ObjectPath::from(prefix);
        match self.store.list(Some(&location)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(source)) => Err(storage(prefix, source)),
        }
    }

    /// Removes the uploads a killed process left under `prefix` of a local lake (see
    /// `storage::uploads`) last modified before `older_than`, unless `dry_run`: their paths under
    /// `prefix`. An object-store lake has none (an interrupted multipart upload is for the
    /// bucket's lifecycle rules to abort).
    pub fn sweep_abandoned(
        &self,
        prefix: &str,
        older_than: Option<std::time::SystemTime>,
        dry_run: bool,
    ) -> Result<Vec<String>> {
        if self.bucket.is_some() {
            return Ok(Vec::new());
        }
        let Ok(root) = self.root_url.to_file_path() else { return Ok(Vec::new()) };
        let dir = root.join(prefix);
        super::uploads::abandoned(&dir, older_than, dry_run).map_err(|source| Error::Io { path: dir, source })
    }

    /// Deletes an object if it exists.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(storage(path, source)),
        }
    }
}

/// The objects of a listing under `prefix`, sorted by path.
async fn sorted(
    prefix: &str,
    listing: futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> Result<Vec<ObjectMeta>> {
    let mut items: Vec<ObjectMeta> = listing.try_collect().await.map_err(|source| storage(prefix, source))?;
    items.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(items)
}

fn storage(path: &str, source: object_store::Error) -> Error {
    Error::Storage { location: path.to_string(), cause: source }
}

/// A part of an object written by [`Lake::put_parts`], or the end of it.
#[derive(Debug)]
pub enum Part {
    /// The next bytes.
    Data(Bytes),
    /// The object is complete.
    Done,
}

/// One bronze batch file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchFile {
    /// Object path in the lake.
    pub path: String,
    /// Batch id (the file's stem).
    pub batch_id: String,
    /// Size in bytes (compressed).
    pub size: u64,
    /// `_ingested_at` of its first record, if readable.
    pub ingested_at: Option<String>,
}

impl BatchFile {
    /// The ingest date of its partition (`bronze/<source>/<date>/<batch>.ndjson.gz` or `.csv.gz`).
    pub fn date(&self) -> Option<&str> {
        let mut parts = self.path.rsplit('/');
        parts.next()?;
        parts.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_label_splits_into_its_layer_and_name() {
        assert_eq!(Layer::split("silver/orders"), Some((Layer::Silver, "orders")));
        assert_eq!(Layer::split("gold.daily_revenue"), Some((Layer::Gold, "daily_revenue")));
        assert_eq!(Layer::split("quarantine/orders"), Some((Layer::Quarantine, "orders")));
        for not in ["orders", "bronze/orders", "_medallion/expectations", "medallion.expectations"] {
            assert_eq!(Layer::split(not), None, "{not}");
        }
    }

    #[tokio::test]
    async fn checking_a_lake_lists_the_first_level_of_medallions_directory_only() {
        // Every command checks its lake. A recursive listing walked (and, on a local lake,
        // stat'ed) up to a thousand entries of the run log and the event log's history each
        // time; it would also fail on the loop below, which a one-level listing never enters.
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(&dir.path().to_string_lossy(), dir.path()).expect("lake");
        lake.check().await.expect("a lake without `_medallion` yet");
        let runs = dir.path().join("_medallion/runs");
        std::fs::create_dir_all(&runs).expect("runs");
        std::fs::write(runs.join("r1.json"), "{}").expect("run log");
        std::os::unix::fs::symlink("..", runs.join("loop")).expect("symlink");
        lake.check().await.expect("checked");
    }
}
