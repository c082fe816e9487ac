//! Storage: the lake's object store ([`Lake`]) and its Delta tables ([`delta`]).
//!
//! Every read and write of the lake goes through `object_store`, so the same code serves a local
//! directory and an object-store URL (`cloud`), whose objects that never change (Delta logs'
//! commits and checkpoints, data files' footers) are read once per process (`object_cache`).
//! `delta` (with its `keyed` merge) and `cloud` are the only modules importing deltalake.

pub(crate) mod cloud;
pub mod delta;
mod lake;
mod object_cache;
mod policy;
pub(crate) mod uploads;

use datafusion::arrow::datatypes::{DataType, TimeUnit};

pub use crate::error::explain;
pub use lake::{BatchFile, Lake, Layer, Part};
pub use policy::{MIN_RETENTION, Maintenance, PURGE_DELETED_ABOVE};

/// The UTC microsecond timestamp type the lake stores: `_ingested_at`, timestamp columns, and the
/// times of its own tables (events, expectation results, dead letters).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// For a location `url`: the store it is in (`s3://bucket`, `file://`), as processes that open
/// stores by URL know it, and its path in that store.
pub(crate) fn store_and_root(url: &url::Url) -> std::result::Result<(String, object_store::path::Path), String> {
    let store = match url.host_str() {
        Some(host) => format!("{}://{host}", url.scheme()),
        None => format!("{}://", url.scheme()),
    };
    let root = object_store::path::Path::from_url_path(url.path()).map_err(|e| format!("path of {url}: {e}"))?;
    Ok((store, root))
}
