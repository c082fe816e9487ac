//! Object-store lakes: `s3://bucket/prefix` (also S3-compatible stores: MinIO, Ceph, R2, …),
//! `gs://bucket/prefix` and `az://container/prefix` (`abfss://…` too), each behind its cargo
//! feature (`s3`, `gcs`, `azure`).
//!
//! Credentials and settings come from the standard environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_ENDPOINT`, `AWS_REGION`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …), instance
//! metadata and web identity, through `object_store`'s builders; the project's `[storage]` options
//! override them (`endpoint`, `region`, `allow_http`, `virtual_hosted_style_request`, …, values may
//! reference `${ENV_VAR}`).
//!
//! Delta commits are safe with concurrent writers: every commit file is created with a conditional
//! put (`If-None-Match: *` on S3), so two writers can never both commit the same version; the loser
//! sees "version already exists" and retries on the new snapshot. medallion never uses delta-rs's
//! unsafe rename, and refuses stores configured without conditional put.

use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use deltalake::logstore::{LogStore, LogStoreFactory, StorageConfig, default_logstore, logstore_factories};
#[cfg(feature = "cluster")]
use deltalake::logstore::{ObjectStoreFactory, object_store_factories};
use object_store::{BackoffConfig, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// Options that would make Delta commits unsafe or that medallion manages itself.
const REFUSED: &[(&str, &str)] = &[
    ("aws_s3_allow_unsafe_rename", "medallion never commits by rename; it needs conditional put"),
    ("allow_unsafe_rename", "medallion never commits by rename; it needs conditional put"),
    ("aws_s3_locking_provider", "locking providers (DynamoDB) are not supported; use a store with conditional put"),
];

/// Whether a `[storage]` option holds a secret (its value is never shown).
fn is_secret(key: &str) -> bool {
    ["secret", "token", "password", "sas", "credential", "private_key", "service_account_key", "access_key"]
        .iter()
        .any(|s| key.contains(s))
}

/// The bucket's store (its root is the bucket) for `url`, an object-store lake location, and the
/// lake's prefix inside the bucket.
pub fn bucket_store(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
    let bad = |message: String| Error::InvalidLake { location: url.to_string(), message };
    let (scheme, prefix) = ObjectStoreScheme::parse(url).map_err(|e| bad(e.to_string()))?;
    let mut resolved = Vec::with_capacity(options.len());
    for (key, value) in options {
        let k = key.to_ascii_lowercase();
        if let Some((_, why)) = REFUSED.iter().find(|(r, _)| *r == k) {
            return Err(bad(format!("[storage] {key}: {why}")));
        }
        if k.ends_with("conditional_put") && value.trim().eq_ignore_ascii_case("disabled") {
            return Err(bad(format!(
                "[storage] {key} = \"disabled\": two writers could both commit the same Delta version"
            )));
        }
        let value = crate::spec::env::expand(value).map_err(|e| bad(format!("[storage] {key}: {e}")))?;
        resolved.push((k, value));
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(60),
    };
    // A store's error may quote an option's value: never a secret's.
    let secrets: Vec<&str> = resolved.iter().filter(|(k, _)| is_secret(k)).map(|(_, v)| v.as_str()).collect();
    let redacted = |e: object_store::Error| {
        let mut text = e.to_string();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(s, "***");
        }
        bad(text)
    };
    macro_rules! build {
        ($builder:ty, $key:ty) => {{
            let mut b = <$builder>::from_env().with_url(url.as_str()).with_retry(retry);
            for (k, v) in &resolved {
                let key: $key = k.parse().map_err(|_| bad(format!("[storage] unknown option `{k}`")))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(redacted)?) as Arc<dyn ObjectStore>
        }};
    }
    let store = match scheme {
        #[cfg(feature = "s3")]
        ObjectStoreScheme::AmazonS3 => build!(object_store::aws::AmazonS3Builder, object_store::aws::AmazonS3ConfigKey),
        #[cfg(feature = "gcs")]
        ObjectStoreScheme::GoogleCloudStorage => {
            build!(object_store::gcp::GoogleCloudStorageBuilder, object_store::gcp::GoogleConfigKey)
        }
        #[cfg(feature = "azure")]
        ObjectStoreScheme::MicrosoftAzure => {
            build!(object_store::azure::MicrosoftAzureBuilder, object_store::azure::AzureConfigKey)
        }
        other => {
            let _ = (&resolved, &retry);
            return Err(bad(format!(
                "{other:?} lakes are not supported by this build (cargo features: s3, gcs, azure)"
            )));
        }
    };
    register_log_stores();
    Ok((store, prefix))
}

/// Delta log stores for object-store schemes: delta-rs's default log store, which creates each
/// commit file with `PutMode::Create` (a conditional put) and never renames.
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                logstore_factories().insert(url, Arc::new(ConditionalPut));
            }
        }
    });
}

/// Object-store schemes medallion opens lakes on.
const SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"];

#[cfg(feature = "cluster")]
/// Lets delta-rs open object-store locations by URL alone in this process, each bucket built as
/// [`bucket_store`] builds it with `options` (a project's `[storage]`) over the environment: what
/// a process that writes tables' files without opening them (a cluster's executor) needs.
pub fn register_stores(options: BTreeMap<String, String>) {
    let factory = Arc::new(BucketStores { options });
    for scheme in SCHEMES {
        if let Ok(url) = Url::parse(&format!("{scheme}://")) {
            object_store_factories().insert(url, Arc::clone(&factory) as Arc<dyn ObjectStoreFactory>);
        }
    }
    register_log_stores();
}

#[cfg(feature = "cluster")]
struct BucketStores {
    options: BTreeMap<String, String>,
}

#[cfg(feature = "cluster")]
impl ObjectStoreFactory for BucketStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        _: &StorageConfig,
    ) -> deltalake::DeltaResult<(Arc<dyn ObjectStore>, object_store::path::Path)> {
        bucket_store(url, &self.options).map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))
    }
}

#[derive(Debug)]
struct ConditionalPut;

impl LogStoreFactory for ConditionalPut {
    fn with_options(
        &self,
        prefixed_store: Arc<dyn ObjectStore>,
        root_store: Arc<dyn ObjectStore>,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_or_unknown_options_are_refused() {
        let url = Url::parse("s3://bucket/lake/").expect("url");
        let refuse = |k: &str, v: &str| {
            bucket_store(&url, &BTreeMap::from([(k.to_string(), v.to_string())])).expect_err(k).to_string()
        };
        assert!(refuse("aws_s3_allow_unsafe_rename", "true").contains("never commits by rename"));
        assert!(refuse("conditional_put", "disabled").contains("could both commit the same Delta version"));
        assert!(refuse("endpoit", "http://x").contains("unknown option `endpoit`"));
        assert!(
            refuse("secret_access_key", "${MEDALLION_TEST_UNSET_SECRET}")
                .contains("`MEDALLION_TEST_UNSET_SECRET` is not set")
        );
        // Issue 22: a malformed secret is located, never shown.
        let e = refuse("secret_access_key", "SEKRET${typo");
        assert!(e.contains("secret_access_key: unterminated `${` at character 7") && !e.contains("SEKRET"), "{e}");
        assert!(
            bucket_store(
                &url,
                &BTreeMap::from([
                    ("endpoint".to_string(), "http://127.0.0.1:9".to_string()),
                    ("allow_http".to_string(), "true".to_string())
                ])
            )
            .is_ok()
        );
    }
}
