//! The object stores an executor reads the lake through, built on first use from the executor's
//! own configuration (the standard environment variables, and the `[storage]` options it was
//! started with), never from a plan: plans carry where the files are, not how to get in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use url::Url;

/// Stores by `scheme://bucket`, made when a task first reads from one.
#[derive(Debug)]
pub struct LakeStores {
    options: BTreeMap<String, String>,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl LakeStores {
    /// Stores configured by the environment and `options` (a project's `[storage]`).
    pub fn new(options: BTreeMap<String, String>) -> LakeStores {
        LakeStores { options, stores: RwLock::new(HashMap::new()) }
    }
}

/// A store's key: its scheme and authority (`s3://bucket`, `file://`).
fn key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), &url[url::Position::BeforeHost..url::Position::AfterPort])
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.stores.write().ok()?.insert(key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let removed = self.stores.write().ok().and_then(|mut s| s.remove(&key(url)));
        removed.ok_or_else(|| DataFusionError::Internal(format!("no object store registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = key(url);
        if let Some(store) = self.stores.read().ok().and_then(|s| s.get(&key).cloned()) {
            return Ok(store);
        }
        let store: Arc<dyn ObjectStore> = if url.scheme() == "file" {
            Arc::new(LocalFileSystem::new())
        } else {
            let root = Url::parse(&key).map_err(|e| DataFusionError::External(Box::new(e)))?;
            crate::storage::cloud::bucket_store(&root, &self.options)
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .0
        };
        if let Ok(mut stores) = self.stores.write() {
            stores.entry(key).or_insert_with(|| Arc::clone(&store));
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_keyed_by_scheme_and_bucket_and_made_once() {
        let stores = LakeStores::new(BTreeMap::new());
        let a = stores.get_store(&Url::parse("file:///tmp/x/y.parquet").expect("url")).expect("local");
        let b = stores.get_store(&Url::parse("file:///other").expect("url")).expect("local");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(key(&Url::parse("s3://bucket/lake/silver").expect("url")), "s3://bucket");
    }
}
