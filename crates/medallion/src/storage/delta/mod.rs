//! Delta Lake access: with its `keyed` merge, the only module that imports deltalake.
//!
//! Every commit medallion makes carries an application transaction (`txn` app id + version):
//! delta-rs records it but does not refuse a second commit with the same one, so callers read
//! [`Table::txn_version`] first and skip a commit that already landed (a retry never duplicates).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, CommitInfo, StructField, Transaction};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::{Lake, Layer};
use crate::error::{Error, Result};

mod dv;
mod encodings;
mod files;
mod keyed;
mod newest;
mod parallel;
mod purge;
mod replace;
mod rows;
mod scan;
pub use deltalake::operations::merge::MergeMetrics;
pub use files::{FileWriter, cast_to, rows_in};
pub use keyed::KeyScan;
pub(crate) use keyed::int_key_and_order;
pub use rows::{InMemory, Pass, Rows};
pub use scan::{LiveFile, LiveFiles, spread};

/// Bytes read from the end of a Parquet file to find its metadata: the footer and the page index
/// in one read where they fit (a silver file's footer is a few KiB), instead of the footer's
/// length first and the metadata second. On an object store that is one request per file scanned
/// instead of two.
pub(crate) const FOOTER_HINT: usize = 64 << 10;

/// A Delta table of the lake, opened at its latest version (or not yet created).
#[derive(Debug, Clone)]
pub struct Table {
    /// `layer/name`, for messages.
    pub label: String,
    inner: DeltaTable,
    exists: bool,
}

/// A point in a table's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// A Delta version.
    Version(i64),
    /// The latest version committed at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// `12` (a version), `2024-03-01T12:00:00Z` (RFC 3339) or `2024-03-01` (the end of that day, UTC).
    fn from_str(s: &str) -> Result<AsOf, String> {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return if v >= 0 { Ok(AsOf::Version(v)) } else { Err(format!("version {v} is negative")) };
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Time(t.to_utc()));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            && let Some(end) = d.and_hms_micro_opt(23, 59, 59, 999_999)
        {
            return Ok(AsOf::Time(end.and_utc()));
        }
        Err(format!("`{s}` is neither a version (0, 1, …) nor a time (2024-03-01T12:00:00Z or 2024-03-01)"))
    }
}

/// One commit of a table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Commit {
    /// Delta version.
    pub version: i64,
    /// Commit time.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// `WRITE`, `MERGE`, `CREATE TABLE`…
    pub operation: String,
    /// Rows it inserted, updated, deleted or wrote (from the operation's metrics).
    pub rows: RowChanges,
    /// The medallion run that made it.
    pub run_id: Option<String>,
}

/// Row counts of a commit.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RowChanges {
    /// Rows added by a write, or inserted by a merge.
    pub inserted: u64,
    /// Rows updated by a merge.
    pub updated: u64,
    /// Rows deleted by a merge.
    pub deleted: u64,
}

/// An idempotency marker for one commit: `app_id` at `version`.
#[derive(Debug, Clone)]
pub struct Txn {
    /// Application id, e.g. `medallion/silver/orders`.
    pub app_id: String,
    /// Monotonic version of that application's progress.
    pub version: i64,
}

/// The tables opened through one [`Lake`] (shared by its clones). A run opens silver several
/// times (promotion, merge, gold, audits, maintenance), and loading a table from its log costs
/// a listing and a replay of every commit since the last checkpoint (10–40 ms each for the
/// benchmark's 20-commit tables); opening it again from here reads only the commits made since.
///
/// Each entry is anchored to the commit file of the version it was first loaded at: a table
/// whose anchor is gone or was rewritten (its directory deleted, or deleted and created again)
/// is loaded afresh. Time travel never comes from here ([`Table::open_as_of`] loads the version
/// it asks for on a copy).
#[derive(Debug, Default)]
pub(crate) struct Opened(std::sync::Mutex<HashMap<url::Url, (DeltaTable, CommitMark)>>);

/// One commit file of a table as the store describes it: what an `Opened` entry was first
/// loaded at, and what maintenance remembers of a table it checked (`_medallion/maintenance.json`),
/// to tell later, without loading the table, whether anything was committed since.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommitMark {
    path: String,
    size: u64,
    /// RFC 3339 with nanoseconds, as the store reported it.
    modified: String,
    e_tag: Option<String>,
}

impl CommitMark {
    /// The commit file at `path` as the store describes it now; None when it is gone.
    async fn read(lake: &Lake, path: String) -> Result<Option<CommitMark>> {
        Ok(lake.head(&path).await?.map(|m| CommitMark::described(path, m)))
    }

    /// The mark of the commit file at `path` as `meta` (a HEAD's or a listing's) describes it.
    fn described(path: String, meta: object_store::ObjectMeta) -> CommitMark {
        CommitMark {
            path,
            size: meta.size,
            modified: meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            e_tag: meta.e_tag,
        }
    }

    async fn of(lake: &Lake, label: &str, version: u64) -> Result<Option<CommitMark>> {
        CommitMark::read(lake, format!("{label}/_delta_log/{version:020}.json")).await
    }

    /// Whether the mark's commit file is still the one it was (not deleted, nor written again by
    /// a table deleted and created anew).
    async fn holds(&self, lake: &Lake) -> Result<bool> {
        Ok(CommitMark::read(lake, self.path.clone()).await?.as_ref() == Some(self))
    }

    /// Whether the mark's commit is still the table's latest: it holds, and no commit file sorts
    /// after it in the log (checkpoints and checksums written since change no data).
    pub async fn is_latest(&self, lake: &Lake) -> Result<bool> {
        Ok(matches!(self.newest_since(lake).await?, Some(None)))
    }

    /// None when the mark no longer holds; else the newest commit after it, with its version
    /// (None: none). One listing of the log from the mark's version on tells both, as it
    /// describes the mark's file too (size and tag: a listing's times are not a HEAD's); a store
    /// that gives no tag is asked with a HEAD first.
    async fn newest_since(&self, lake: &Lake) -> Result<Option<Option<(u64, CommitMark)>>> {
        let (log, file) = self.path.rsplit_once('/').unwrap_or(("", &self.path));
        let mark = commit_version(file).ok_or_else(|| Error::Internal(format!("commit mark {}", self.path)))?;
        // A mark made from a listing has the listing's time: it is only ever compared by size
        // and tag (below).
        let newest = |listed: Vec<object_store::ObjectMeta>| {
            let versioned = listed.into_iter().filter_map(|m| Some((commit_version(m.location.filename()?)?, m)));
            let newest = versioned.max_by_key(|(v, _)| *v).filter(|(v, _)| *v > mark);
            newest.map(|(v, m)| (v, CommitMark::described(m.location.to_string(), m)))
        };
        if self.e_tag.is_none() {
            if !self.holds(lake).await? {
                return Ok(None);
            }
            return Ok(Some(newest(lake.list_after(log, &self.path).await?)));
        }
        let listed = lake.list_after(log, &format!("{log}/{mark:020}")).await?;
        let held =
            listed.iter().any(|m| m.location.as_ref() == self.path && m.size == self.size && m.e_tag == self.e_tag);
        Ok(held.then(|| newest(listed)))
    }
}

/// The version of a commit file named `name` (`<20 digits>.json`); None for any other file of a
/// log.
fn commit_version(name: &str) -> Option<u64> {
    let version = name.strip_suffix(".json")?;
    version.bytes().all(|b| b.is_ascii_digit()).then_some(version).filter(|v| v.len() == 20)?.parse().ok()
}

impl Opened {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<url::Url, (DeltaTable, CommitMark)>> {
        // A panic while the map was held cannot leave an entry half-written: recover it.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The table at `url` opened before, brought forward to its latest commit; None when it was
    /// not opened before or its anchor no longer holds.
    async fn reopen(&self, lake: &Lake, url: &url::Url, label: &str) -> Result<Option<DeltaTable>> {
        let Some((mut inner, anchor)) = self.entries().get(url).cloned() else { return Ok(None) };
        let Some(newest) = anchor.newest_since(lake).await? else {
            self.entries().remove(url);
            return Ok(None);
        };
        // Loading lists the log from its checkpoint and reads `_last_checkpoint` even when
        // nothing was committed: the anchor's listing tells whether anything was.
        if let Some((version, newest)) = newest
            && inner.version().is_none_or(|in_hand| version > in_hand)
        {
            inner.load().await.map_err(|e| Error::delta(label, e))?;
            // Anchored again at the newest commit listed (of the table now in hand), so the
            // next listing starts there, not at the first open's version; a mark without a tag
            // stays where it was (it is checked with a HEAD and its time).
            let anchor = if newest.e_tag.is_some() { newest } else { anchor };
            self.entries().insert(url.clone(), (inner.clone(), anchor));
        }
        Ok(Some(inner))
    }

    /// Keeps `inner`, just loaded from its log, for the next [`Table::open`] of `url`.
    async fn remember(&self, lake: &Lake, url: url::Url, label: &str, inner: &DeltaTable) -> Result<()> {
        let Some(version) = inner.version() else { return Ok(()) };
        if let Some(anchor) = CommitMark::of(lake, label, version).await? {
            self.entries().insert(url, (inner.clone(), anchor));
        }
        Ok(())
    }
}

impl Table {
    /// Opens `layer/name`; a table that does not exist yet is returned with `exists() == false`.
    /// A table opened before through the same lake is brought forward from there: only the
    /// commits made since are read (see `Opened`).
    pub async fn open(lake: &Lake, layer: Layer, name: &str) -> Result<Table> {
        let label = format!("{layer}/{name}");
        let url = lake.table_url(layer, name)?;
        if let Some(inner) = lake.opened().reopen(lake, &url, &label).await? {
            return Ok(Table { label, inner, exists: true });
        }
        let mut builder = DeltaTableBuilder::from_url(url.clone()).map_err(|e| Error::delta(&label, e))?;
        if let Some(bucket) = lake.delta_backend() {
            builder = builder.with_storage_backend(bucket, url.clone());
        }
        let mut inner = builder.build().map_err(|e| Error::delta(&label, e))?;
        // The kernel refuses to open a missing location; a table exists once its log has an entry.
        let exists = lake.any_under(&format!("{label}/_delta_log")).await?
            && match inner.load().await {
                Ok(()) => true,
                Err(DeltaTableError::NotATable(_)) => false,
                Err(e) => return Err(Error::delta(&label, e)),
            };
        if exists {
            lake.opened().remember(lake, url, &label, &inner).await?;
        }
        Ok(Table { label, inner, exists })
    }

    /// Opens `layer/name` as it was at `as_of`; a table created later is returned with
    /// `exists() == false`; a version beyond the latest is an error.
    pub async fn open_as_of(lake: &Lake, layer: Layer, name: &str, as_of: AsOf) -> Result<Table> {
        let mut t = Table::open(lake, layer, name).await?;
        if !t.exists {
            return Ok(t);
        }
        let latest = t.version().unwrap_or(0);
        let version = match as_of {
            AsOf::Version(v) if v > latest => {
                return Err(Error::NoSuchVersion {
                    table: t.label.clone(),
                    asked: v.to_string(),
                    latest: Some(latest),
                });
            }
            AsOf::Version(v) => Some(v),
            AsOf::Time(at) => t
                .commits()
                .await?
                .into_iter()
                .filter(|c| c.timestamp.is_some_and(|ts| ts <= at))
                .map(|c| c.version)
                .max(),
        };
        let Some(version) = version else {
            return Ok(Table { exists: false, ..t });
        };
        if version != latest {
            let v = u64::try_from(version).map_err(|_| Error::Internal(format!("negative version {version}")))?;
            t.inner.load_version(v).await.map_err(|e| Error::delta(&t.label, e))?;
        }
        Ok(t)
    }

    /// Every commit up to the loaded version, newest first.
    pub async fn commits(&self) -> Result<Vec<Commit>> {
        self.recent_commits(None).await
    }

    /// The `limit` most recent commits (all when None), newest first.
    pub async fn recent_commits(&self, limit: Option<usize>) -> Result<Vec<Commit>> {
        let infos = self.commit_infos(limit).await?;
        let count = |m: Option<&Value>, k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_u64).unwrap_or(0);
        Ok(infos
            .into_iter()
            .map(|(version, c)| {
                let metrics = c.info.get("operationMetrics");
                let rows = RowChanges {
                    inserted: count(metrics, "num_target_rows_inserted") + count(metrics, "num_added_rows"),
                    updated: count(metrics, "num_target_rows_updated"),
                    deleted: count(metrics, "num_target_rows_deleted") + count(metrics, "num_deleted_rows"),
                };
                Commit {
                    version,
                    timestamp: c.timestamp.and_then(chrono::DateTime::from_timestamp_millis),
                    operation: c.operation.clone().unwrap_or_default(),
                    rows,
                    run_id: c
                        .info
                        .get("medallion")
                        .and_then(|m| m.get("run_id"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }
            })
            .collect())
    }

    /// The commit infos of the `limit` latest commits up to the version in hand (all when None),
    /// newest first, each with its version, read by version: a window without listing the log
    /// (delta-rs's `history` lists it from the window's start, a request on an object store), all
    /// of them after one listing. delta-rs's `history` also returns the commits made after the
    /// version in hand, which numbering from that version mislabelled. Commits removed by log
    /// cleanup are skipped.
    async fn commit_infos(&self, limit: Option<usize>) -> Result<Vec<(i64, CommitInfo)>> {
        let Some(latest) = self.version() else { return Ok(Vec::new()) };
        let delta = |e| Error::delta(&self.label, e);
        let log_store = self.inner.log_store();
        let versions: Vec<i64> = match limit {
            Some(limit) => {
                let first = latest.saturating_sub(i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1)).max(0);
                (first..=latest).rev().collect()
            }
            // Every commit the log still holds (cleanup removes the oldest): listed once.
            None => {
                let listed: Vec<_> = log_store
                    .object_store(None)
                    .list(Some(log_store.log_path()))
                    .try_collect()
                    .await
                    .map_err(|e| delta(DeltaTableError::from(e)))?;
                let mut versions: Vec<i64> = listed
                    .iter()
                    .filter_map(|m| i64::try_from(commit_version(m.location.filename()?)?).ok())
                    .filter(|v| *v <= latest)
                    .collect();
                versions.sort_unstable_by(|a, b| b.cmp(a));
                versions
            }
        };
        let reads = versions.into_iter().map(|version| {
            let log_store = Arc::clone(&log_store);
            async move {
                let entry = log_store.read_commit_entry(u64::try_from(version).unwrap_or_default()).await?;
                Ok::<_, DeltaTableError>((version, entry))
            }
        });
        let entries: Vec<_> = futures::stream::iter(reads).buffered(8).try_collect().await.map_err(delta)?;
        let mut infos = Vec::with_capacity(entries.len());
        for (version, entry) in entries {
            let actions =
                serde_json::Deserializer::from_slice(entry.as_deref().unwrap_or_default()).into_iter::<Action>();
            for action in actions {
                let action = action.map_err(|e| Error::delta(&self.label, DeltaTableError::from(e)))?;
                if let Action::CommitInfo(info) = action {
                    infos.push((version, info));
                    break;
                }
            }
        }
        Ok(infos)
    }

    /// The version of the newest commit that changed the table's contents: compactions, purges
    /// and vacuums after it leave the contents as they were (None: no commit). A reader that
    /// built from this version is up to date.
    pub async fn data_version(&self) -> Result<Option<i64>> {
        let Some(latest) = self.version() else { return Ok(None) };
        const MAINTENANCE: [&str; 4] = ["OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"];
        // Usually the newest commit is a data change: read one, then a few more.
        for limit in [1, 16] {
            let recent = self.recent_commits(Some(limit)).await?;
            if let Some(c) = recent.iter().find(|c| !MAINTENANCE.contains(&c.operation.as_str())) {
                return Ok(Some(c.version));
            }
        }
        Ok(Some(latest))
    }

    /// Whether the table has at least one commit.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Where the table is (`s3://bucket/lake/gold/x`, `file:///…`).
    pub fn url(&self) -> url::Url {
        self.inner.table_url().clone()
    }

    /// The commit file of the loaded version, as the store describes it now (None if the table
    /// does not exist or that file is gone).
    pub async fn commit_mark(&self, lake: &Lake) -> Result<Option<CommitMark>> {
        let Some(version) = self.version().and_then(|v| u64::try_from(v).ok()) else { return Ok(None) };
        CommitMark::of(lake, &self.label, version).await
    }

    /// Latest version, if the table exists.
    pub fn version(&self) -> Option<i64> {
        if self.exists { self.inner.version().and_then(|v| i64::try_from(v).ok()) } else { None }
    }

    /// The last recorded version for `app_id`, if any.
    pub async fn txn_version(&self, app_id: &str) -> Result<Option<i64>> {
        if !self.exists {
            return Ok(None);
        }
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        snapshot
            .transaction_version(self.inner.log_store().as_ref(), app_id)
            .await
            .map_err(|e| Error::delta(&self.label, e))
    }

    /// The `info` metadata of the latest commit (empty if none).
    pub async fn last_commit_info(&self) -> Result<HashMap<String, Value>> {
        if !self.exists {
            return Ok(HashMap::new());
        }
        Ok(self.commit_infos(Some(1)).await?.pop().map(|(_, c)| c.info).unwrap_or_default())
    }

    /// The newest value of `medallion.<key>` in the commit info of the last `limit` commits.
    pub async fn recent_info(&self, key: &str, limit: usize) -> Result<Option<Value>> {
        if !self.exists {
            return Ok(None);
        }
        // Every promotion records it, so the newest commit usually has it: read that one alone
        // first (a run reads this each time), the rest only when it does not.
        for window in [1, limit] {
            let infos = self.commit_infos(Some(window)).await?;
            let found = infos.into_iter().find_map(|(_, c)| c.info.get("medallion").and_then(|m| m.get(key)).cloned());
            if found.is_some() || window >= limit {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The table's schema as Arrow (None if the table does not exist).
    pub fn arrow_schema(&self) -> Result<Option<SchemaRef>> {
        if !self.exists {
            return Ok(None);
        }
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| Error::arrow(format!("schema of {}", self.label), e))?;
        Ok(Some(Arc::new(schema)))
    }

    /// Adds nullable `fields` to the table's schema in one metadata-only commit carrying
    /// `metadata`: rows already written read them as null.
    pub async fn add_columns(self, fields: &[Field], metadata: HashMap<String, Value>) -> Result<Table> {
        let label = self.label.clone();
        let fields = fields
            .iter()
            .map(|f| f.clone().with_nullable(true))
            .map(|f| (&f).try_into_kernel())
            .collect::<std::result::Result<Vec<StructField>, _>>()
            .map_err(|e| Error::arrow(format!("new columns of {label}"), e))?;
        let inner = self
            .inner
            .add_columns()
            .with_fields(fields)
            .with_commit_properties(commit_properties(None, metadata))
            .await
            .map_err(|e| Error::delta(&label, e))?;
        Ok(Table { label, inner, exists: true })
    }

    /// Number of live files and their total size in bytes.
    pub fn files(&self) -> Result<(usize, u64)> {
        if !self.exists {
            return Ok((0, 0));
        }
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        let log = snapshot.snapshot().log_data();
        let mut count = 0;
        let mut bytes = 0u64;
        for file in log.iter() {
            count += 1;
            bytes += u64::try_from(file.size()).unwrap_or(0);
        }
        Ok((count, bytes))
    }

    /// A DataFusion provider reading the table's live files through its log.
    pub async fn provider(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>> {
        self.inner.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(&self.label, e))?;
        let delta = self.inner.table_provider().await.map_err(|e| Error::sql(format!("reading {}", self.label), e))?;
        scan::provider(&self.inner, &self.label, ctx, delta).await.map_err(|e| Error::delta(&self.label, e))
    }

    /// The table's live files as plain Parquet files (see [`LiveFiles`]): what a cluster's
    /// executors read. A table not created yet has none.
    pub async fn live_files(&self) -> Result<LiveFiles> {
        if !self.exists {
            return Ok(LiveFiles { store: String::new(), partition_columns: Vec::new(), files: Vec::new() });
        }
        scan::live_files(&self.inner).await.map_err(|e| Error::delta(&self.label, e))
    }

    /// Number of rows at the latest version (0 if the table does not exist).
    pub async fn count_rows(&self) -> Result<u64> {
        if !self.exists {
            return Ok(0);
        }
        self.count_where("SELECT count(*) FROM t").await
    }

    /// The count `sql` (a `SELECT count(*) FROM t …` over this table as `t`) returns; 0 when the
    /// table does not exist.
    pub async fn count_where(&self, sql: &str) -> Result<u64> {
        if !self.exists {
            return Ok(0);
        }
        let ctx = SessionContext::new();
        let context = format!("checking {}", self.label);
        ctx.register_table("t", self.provider(&ctx).await?).map_err(|e| Error::sql(&context, e))?;
        let batches = ctx.sql(sql).await.map_err(|e| Error::sql(&context, e))?;
        let batches = batches.collect().await.map_err(|e| Error::sql(&context, e))?;
        use datafusion::arrow::array::AsArray;
        Ok(batches
            .first()
            .filter(|b| b.num_rows() > 0)
            .map_or(0, |b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0))
            .try_into()
            .unwrap_or(0))
    }

    /// Writes `batches` in one commit: appended, or replacing the table's content.
    pub async fn write(self, batches: Vec<RecordBatch>, write: WriteOptions) -> Result<Table> {
        if self.creates_in_parallel(&write) || write.gate.holds() {
            return self.write_stream(once::stream(batches)?, write).await;
        }
        let plan = once::plan(batches)?;
        self.write_plan(plan, write).await
    }

    /// Writes the rows of `stream` in one commit, as [`Table::write`] does, holding one batch at a
    /// time: the files are written as the batches arrive and committed at the end. A stream that
    /// yields no batch writes no row (and still commits).
    pub async fn write_stream(self, stream: SendableRecordBatchStream, mut write: WriteOptions) -> Result<Table> {
        let stream = std::mem::take(&mut write.gate).hold(stream);
        if self.creates_in_parallel(&write) {
            return self.create_in_parallel(stream, write).await;
        }
        let plan = once::stream_plan(stream)?;
        self.write_plan(plan, write).await
    }

    /// Whether `write` creates the table from rows in any order, unpartitioned and with the
    /// writer's defaults: [`Table::create_in_parallel`] then writes it.
    fn creates_in_parallel(&self, write: &WriteOptions) -> bool {
        write.any_order
            && !self.exists
            && write.partition_by.is_empty()
            && write.replace_where.is_none()
            && write.row_group_rows.is_none()
            && write.file_bytes.is_none()
    }

    /// Creates the table with the rows of `stream` as [`Table::write_stream`] would, their
    /// Parquet files encoded on every core at once ([`parallel`]: delta-rs's write encodes an
    /// unpartitioned table's rows on one), and commits them in one commit that creates the table.
    async fn create_in_parallel(self, mut stream: SendableRecordBatchStream, write: WriteOptions) -> Result<Table> {
        use deltalake::datafile::writer::{DeltaWriter as FileSink, WriterConfig};
        let label = self.label.clone();
        let delta = |e: DeltaTableError| Error::delta(&label, e);
        // The table's schema as Delta has it, and the files' as a reader of the table finds it.
        let given = stream.schema();
        let structure: deltalake::kernel::StructType =
            given.as_ref().try_into_kernel().map_err(|e| Error::arrow(format!("schema of {label}"), e))?;
        let schema: SchemaRef =
            Arc::new((&structure).try_into_arrow().map_err(|e| Error::arrow(format!("schema of {label}"), e))?);
        let context = format!("rows written to {label}");
        let rows = |batch: Option<datafusion::error::Result<RecordBatch>>| match batch {
            Some(batch) => cast_to(&batch.map_err(|e| Error::sql(&context, e))?, &schema, &context).map(Some),
            None => Ok(None),
        };
        // The first rows decide which columns get a dictionary.
        let first = rows(stream.next().await)?;
        let properties = encodings::plain_where_distinct(parquet_properties(), first.as_ref()).build();
        let config = WriterConfig::new(
            Arc::clone(&schema),
            Vec::new(),
            Some(properties),
            None,
            None,
            buoyant_kernel::table_properties::DataSkippingNumIndexedCols::NumColumns(
                deltalake::table::config::DEFAULT_NUM_INDEX_COLS,
            ),
            None,
        );
        let store = self.inner.object_store();
        let sinks = (0..cores()).map(|_| FileSink::new(Arc::clone(&store), config.clone())).collect();
        let stopped = |why: String| DeltaTableError::Generic(format!("a writer of the new table's rows: {why}"));
        let mut writers = parallel::Writers::start(sinks, stopped, |mut sink, mut rows| async move {
            while let Some(batch) = rows.recv().await {
                sink.write(&batch).await?;
            }
            sink.close().await
        });
        let written = async {
            let mut next = first;
            while let Some(batch) = next {
                writers.write(&batch).await.map_err(delta)?;
                next = rows(stream.next().await)?;
            }
            writers.finish().await.map_err(delta)
        };
        let adds = match written.await {
            Ok(adds) => adds,
            Err(e) => {
                // The rows stopped (a gate refused the commit, a reader or an encoder failed): once
                // every encoder is done, the files they wrote (a failed one's too) are removed.
                let _ = writers.finish().await;
                files::discard_uncreated(store.as_ref(), &label).await;
                return Err(e);
            }
        };
        let properties = creation_properties(write.change_feed, write.deletion_vectors);
        self.create_with(adds, structure, &properties, write.txn, write.metadata).await
    }

    /// Writes one pass over `rows` like [`Table::write`], holding a batch at a time (rows spilled
    /// to files are written without being read into memory at once).
    pub async fn write_from(self, rows: &dyn Rows, write: WriteOptions) -> Result<Table> {
        self.write_stream(rows::stream(rows)?, write).await
    }

    async fn write_plan(self, plan: datafusion::logical_expr::LogicalPlan, write: WriteOptions) -> Result<Table> {
        let label = self.label.clone();
        let mode = if write.overwrite { SaveMode::Overwrite } else { SaveMode::Append };
        let store = self.inner.object_store();
        let mut builder = self
            .inner
            .write(Vec::new())
            .with_input_plan(plan)
            .with_save_mode(mode)
            .with_commit_properties(commit_properties(write.txn, write.metadata));
        // A table is partitioned when it is created, or again when a rebuild replaces it.
        if (!self.exists && !write.partition_by.is_empty()) || (write.overwrite && write.repartition) {
            builder = builder.with_partition_columns(write.partition_by);
        }
        if !self.exists {
            let config = creation_properties(write.change_feed, write.deletion_vectors);
            if !config.is_empty() {
                builder = builder.with_configuration(config.into_iter().map(|(k, v)| (k, Some(v))));
            }
        }
        if let Some(bytes) = write.file_bytes.and_then(std::num::NonZeroU64::new) {
            builder = builder.with_target_file_size(Some(bytes));
        }
        if let Some(rows) = write.row_group_rows {
            let props = parquet_properties().set_max_row_group_row_count(Some(rows.max(1))).build();
            builder = builder.with_writer_properties(props);
        }
        match write.replace_where {
            Some(predicate) => builder = builder.with_save_mode(SaveMode::Overwrite).with_replace_where(predicate),
            None if write.overwrite => {
                builder = builder.with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            }
            None => {}
        }
        let inner = match builder.await {
            Ok(inner) => inner,
            Err(e) => {
                if !self.exists {
                    files::discard_uncreated(store.as_ref(), &label).await;
                }
                return Err(Error::delta(&label, e));
            }
        };
        Ok(Table { label, inner, exists: true })
    }

    /// The table's id (its metadata's `id`, given when it was created), if it exists.
    pub fn id(&self) -> Option<String> {
        if !self.exists {
            return None;
        }
        self.inner.snapshot().ok().map(|s| s.metadata().id().to_string())
    }

    /// The table property `key` of the loaded version (None when unset, or no version is loaded).
    fn property(&self, key: &str) -> Option<String> {
        self.inner.snapshot().ok().and_then(|s| s.metadata().configuration().get(key).cloned())
    }

    /// The size its writers should aim files at (`delta.targetFileSize`, in bytes), when set.
    pub fn target_file_size(&self) -> Option<u64> {
        self.property("delta.targetFileSize")?.parse().ok().filter(|&n| n > 0)
    }

    /// Whether the table records a change data feed (`delta.enableChangeDataFeed`).
    pub fn change_feed(&self) -> bool {
        self.property("delta.enableChangeDataFeed").as_deref() == Some("true")
    }

    /// The change data feed after version `after` (the table's columns, `_change_type`,
    /// `_commit_version`, `_commit_timestamp`), to query: a query reads only the columns it uses.
    /// None when the feed does not cover that range (the table was created without it, or a
    /// rebuild replaced the table since).
    pub async fn change_feed_after(&self, after: i64) -> Result<Option<Feed>> {
        let Some(latest) = self.version() else { return Ok(None) };
        if after >= latest {
            return Ok(Some(Feed::Unchanged));
        }
        if !self.change_feed() {
            return Ok(None);
        }
        // A rebuild replaced the table: its changes are everything, not what the feed holds.
        let since = usize::try_from(latest - after).unwrap_or(usize::MAX);
        let infos = self.commit_infos(Some(since)).await?;
        if infos.iter().any(|(_, c)| c.info.get("medallion").and_then(|m| m.get("rebuild")) == Some(&Value::Bool(true)))
        {
            tracing::info!(table = %self.label, "rebuilt since the last build; full refresh");
            return Ok(None);
        }
        let start = u64::try_from(after + 1).map_err(|_| Error::Internal("negative version".into()))?;
        let builder = self.inner.clone().scan_cdf().with_starting_version(start);
        // The files of the range are listed here, so a range the feed does not cover says so now
        // rather than when a query first scans it.
        if let Err(e) = builder.build(&SessionContext::new().state(), None).await {
            tracing::info!(table = %self.label, error = %e, "no change data feed for this range; full refresh");
            return Ok(None);
        }
        let provider = deltalake::delta_datafusion::DeltaCdfTableProvider::try_new(builder)
            .map_err(|e| Error::delta(&self.label, e))?;
        Ok(Some(Feed::Rows(Arc::new(provider))))
    }

    /// The rows that changed after version `after` (see [`Table::change_feed_after`]); empty
    /// when nothing changed, None when the feed does not cover that range.
    pub async fn changes(&self, after: i64) -> Result<Option<Vec<RecordBatch>>> {
        self.query_changes(after, "SELECT * FROM changes").await
    }

    /// Distinct values of `column` in the rows that changed after version `after` (inserted,
    /// updated (before and after) or deleted), read from the change data feed; None when the
    /// feed does not cover that range (e.g. the table was created without it).
    pub async fn changed_values(&self, column: &str, after: i64) -> Result<Option<RecordBatch>> {
        let none = || RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty()));
        let sql = format!("SELECT DISTINCT {} FROM changes", crate::spec::ident(column));
        let Some(out) = self.query_changes(after, &sql).await? else { return Ok(None) };
        let context = format!("changed values of {}.{column}", self.label);
        match out.first().map(RecordBatch::schema) {
            None => Ok(Some(none())),
            Some(schema) => datafusion::arrow::compute::concat_batches(&schema, &out)
                .map(Some)
                .map_err(|e| Error::arrow(&context, e)),
        }
    }

    /// The rows of `sql` over the change data feed after `after`, registered as `changes`: empty
    /// when nothing changed, None when the feed does not cover the range.
    async fn query_changes(&self, after: i64, sql: &str) -> Result<Option<Vec<RecordBatch>>> {
        let feed = match self.change_feed_after(after).await? {
            None => return Ok(None),
            Some(Feed::Unchanged) => return Ok(Some(Vec::new())),
            Some(Feed::Rows(feed)) => feed,
        };
        let context = format!("reading changes of {}", self.label);
        let ctx = SessionContext::new();
        ctx.register_table("changes", feed).map_err(|e| Error::sql(&context, e))?;
        let df = ctx.sql(sql).await.map_err(|e| Error::sql(&context, e))?;
        Ok(Some(df.collect().await.map_err(|e| Error::sql(&context, e))?))
    }

    /// Compacts small files (bin-packing), or Z-orders by `zorder` columns, in one commit; then
    /// writes a checkpoint so readers replay a short log. Returns (files removed, files added).
    pub async fn optimize(self, zorder: &[String], target_size: Option<u64>) -> Result<(Table, u64, u64)> {
        let label = self.label.clone();
        let kind = if zorder.is_empty() {
            deltalake::operations::optimize::OptimizeType::Compact
        } else {
            deltalake::operations::optimize::OptimizeType::ZOrder(zorder.to_vec())
        };
        // Snappy like every file medallion writes: delta-rs's optimize would write ZSTD, and every
        // later scan of a compacted table (the keyed merge's key scan first) would decode it.
        let mut builder = self.inner.optimize().with_type(kind).with_writer_properties(parquet_properties().build());
        if let Some(size) = target_size.and_then(std::num::NonZeroU64::new) {
            builder = builder.with_target_size(size);
        }
        let (inner, metrics) = builder.await.map_err(|e| Error::delta(&label, e))?;
        deltalake::protocol::checkpoints::create_checkpoint(&inner, None).await.map_err(|e| Error::delta(&label, e))?;
        Ok((Table { label, inner, exists: true }, metrics.num_files_removed, metrics.num_files_added))
    }

    /// Writes a checkpoint of the loaded version when `every` commits or more were made since the
    /// last one (the table's `delta.checkpointInterval` when it sets one), then removes the commits
    /// older than the table's `delta.logRetentionDuration` (30 days by default) that a checkpoint
    /// covers, unless the table sets `delta.enableExpiredLogCleanup` to false. Opening a table
    /// replays every commit since its last checkpoint, twice in delta-rs; a writer that leaves
    /// checkpointing to delta-rs's default gets one every 100 commits. Returns whether it wrote one.
    pub async fn checkpoint_if_due(&self, lake: &Lake, every: u64) -> Result<bool> {
        let Some(version) = self.version() else { return Ok(false) };
        let every = self
            .property("delta.checkpointInterval")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(every);
        let last = last_checkpoint(lake, &self.label).await?;
        let since = u64::try_from(version - last.unwrap_or(-1)).unwrap_or(0);
        if since < every {
            return Ok(false);
        }
        deltalake::protocol::checkpoints::create_checkpoint(&self.inner, None)
            .await
            .map_err(|e| Error::delta(&self.label, e))?;
        // `delta.enableExpiredLogCleanup` as delta-rs's own post-commit hook reads it.
        use deltalake::table::config::TablePropertiesExt;
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        if snapshot.table_config().enable_expired_log_cleanup() {
            deltalake::protocol::checkpoints::cleanup_metadata(&self.inner, None)
                .await
                .map_err(|e| Error::delta(&self.label, e))?;
        }
        Ok(true)
    }

    /// For each of `rows` (unique per `key`), what the table holds for its key: None (no row) or
    /// its `order_by` value (inner None: missing). Read like the keyed merge reads (key and order
    /// columns of the files whose statistics may hold a key, deletion vectors applied, several
    /// files at once); None when that merge does not apply (one non-null integer key, …). With
    /// it, what the scan found, for the merge of the same rows ([`Upsert::scanned`]).
    pub async fn published_orders(
        &self,
        rows: &[RecordBatch],
        key: &str,
        order_by: &str,
    ) -> Result<Option<(Vec<Option<Option<i64>>>, KeyScan)>> {
        if !self.exists || rows.is_empty() {
            return Ok(None);
        }
        keyed::published_orders(&self.inner, rows, key, order_by).await.map_err(|e| Error::delta(&self.label, e))
    }

    /// The greatest value of `column` (a timestamp or date) over the physical rows of the table's
    /// live files, in microseconds, from its log's statistics and a read of the file(s) holding
    /// it: rows deletion vectors delete count, so this is the newest live value only where the
    /// newest row is never deleted (the order column of a table whose rows are only replaced by
    /// newer ones). `Some(None)`: no value; None: the statistics do not tell.
    pub async fn newest(&self, column: &str) -> Result<Option<Option<i64>>> {
        if !self.exists {
            return Ok(Some(None));
        }
        newest::newest(&self.inner, column).await.map_err(|e| Error::delta(&self.label, e))
    }

    /// Whether `column` holds no null in the table's live rows, from its log: every live file's
    /// statistics count no null in it (a deletion vector only removes rows). False when a file
    /// has no statistics for it; true for a table not created yet.
    pub fn never_null(&self, column: &str) -> Result<bool> {
        if !self.exists {
            return Ok(true);
        }
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        Ok(snapshot.log_data().iter().all(|f| {
            let stats = f.stats().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
            stats.and_then(|s| s.get("nullCount")?.get(column)?.as_i64()) == Some(0)
        }))
    }

    /// The table's rows, from its log: the files' record counts less their deletion vectors'
    /// (None when a file has no record count; Some(0) when the table does not exist).
    pub fn live_rows(&self) -> Result<Option<u64>> {
        if !self.exists {
            return Ok(Some(0));
        }
        let (deleted, rows, complete) = purge::row_counts(&self.inner).map_err(|e| Error::delta(&self.label, e))?;
        Ok(complete.then(|| rows.saturating_sub(deleted)))
    }

    /// Rows the table's deletion vectors delete and the rows of its live files (deleted included):
    /// how much a reader reads only to skip.
    pub fn deleted_rows(&self) -> Result<(u64, u64)> {
        if !self.exists {
            return Ok((0, 0));
        }
        let (deleted, rows, _) = purge::row_counts(&self.inner).map_err(|e| Error::delta(&self.label, e))?;
        Ok((deleted, rows))
    }

    /// Rewrites every file that has a deletion vector without its deleted rows (contents
    /// unchanged, one commit without data change). Returns (files removed, files added).
    pub async fn purge(self) -> Result<(Table, u64, u64)> {
        let label = self.label.clone();
        if !self.exists {
            return Ok((self, 0, 0));
        }
        let (inner, removed, added) = purge::purge(self.inner).await.map_err(|e| Error::delta(&label, e))?;
        Ok((Table { label, inner, exists: true }, removed, added))
    }

    /// Packs the files under half of `target` bytes into files of about `target` bytes, without
    /// the rows their deletion vectors delete; larger files stay as they are (contents unchanged,
    /// one commit without data change). Unpartitioned tables. Returns (files removed, files added).
    pub async fn compact_small(self, target: u64) -> Result<(Table, u64, u64)> {
        let label = self.label.clone();
        if !self.exists {
            return Ok((self, 0, 0));
        }
        let (inner, removed, added) =
            purge::compact_small(self.inner, target).await.map_err(|e| Error::delta(&label, e))?;
        Ok((Table { label, inner, exists: true }, removed, added))
    }

    /// Whether the table is partitioned (false for a table not created yet).
    pub fn partitioned(&self) -> Result<bool> {
        if !self.exists {
            return Ok(false);
        }
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        Ok(!snapshot.metadata().partition_columns().is_empty())
    }

    /// Whether merges mark replaced rows in deletion vectors (`delta.enableDeletionVectors`).
    pub fn deletion_vectors(&self) -> Result<bool> {
        if !self.exists {
            return Ok(false);
        }
        let snapshot = self.inner.snapshot().map_err(|e| Error::delta(&self.label, e))?;
        Ok(snapshot.metadata().configuration().get("delta.enableDeletionVectors").is_some_and(|v| v == "true"))
    }

    /// The table with merges marking rows in deletion vectors or not, as `on` says: switched
    /// ([`Table::set_deletion_vectors`], a commit) only when it differs.
    pub async fn with_deletion_vectors(self, on: bool) -> Result<Table> {
        if self.deletion_vectors()? == on {
            return Ok(self);
        }
        tracing::info!(table = %self.label, deletion_vectors = on, "switching the table's merge mode");
        self.set_deletion_vectors(on).await
    }

    /// Switches merges to deletion vectors (upgrading the protocol to reader 3 / writer 7 with the
    /// `deletionVectors` feature) or back to copy-on-write (purging the vectors first; the
    /// protocol stays, so readers still need deletion-vector support). No row changes.
    pub async fn set_deletion_vectors(self, on: bool) -> Result<Table> {
        let label = self.label.clone();
        let t = if on { self } else { self.purge().await?.0 };
        let properties = HashMap::from([("delta.enableDeletionVectors".to_string(), on.to_string())]);
        let inner = t
            .inner
            .set_tbl_properties()
            .with_properties(properties)
            .with_raise_if_not_exists(false)
            .await
            .map_err(|e| Error::delta(&label, e))?;
        Ok(Table { label, inner, exists: true })
    }

    /// Deletes data and deletion-vector files no version newer than `retain` ago references, and
    /// files older than `retain` no commit ever named (time travel before that point stops
    /// working). Below the table's default retention (7 days) only with `force`.
    /// Returns the files deleted (or that would be, `dry_run`).
    pub async fn vacuum(self, retain: std::time::Duration, force: bool, dry_run: bool) -> Result<(Table, Vec<String>)> {
        let label = self.label.clone();
        let retain = chrono::Duration::from_std(retain).map_err(|e| Error::Internal(format!("retention: {e}")))?;
        let (inner, metrics) = self
            .inner
            .vacuum()
            .with_retention_period(retain)
            .with_enforce_retention_duration(!force)
            .with_dry_run(dry_run)
            // Full: every file under the table no retained version names, not only the ones a
            // remove action lists: files of a commit that never happened (a killed run's data or
            // deletion-vector files) too, once older than the retention.
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .await
            .map_err(|e| Error::delta(&label, e))?;
        let mut deleted = metrics.files_deleted;
        let vacuumed = Table { label, inner, exists: true };
        deleted.extend(vacuumed.sweep_staged(retain.to_std().unwrap_or_default(), dry_run)?);
        Ok((vacuumed, deleted))
    }

    /// On a local lake, the staging copies (`<file>#<n>`) of uploads a killed process left under
    /// the table, older than `retain`: removed unless `dry_run`, their paths returned. No store
    /// listing shows them ([`crate::storage::uploads`]); none on an object store.
    pub(super) fn sweep_staged(&self, retain: std::time::Duration, dry_run: bool) -> Result<Vec<String>> {
        let Ok(dir) = self.inner.table_url().to_file_path() else { return Ok(Vec::new()) };
        let older_than = std::time::SystemTime::now().checked_sub(retain);
        crate::storage::uploads::abandoned(&dir, older_than, dry_run).map_err(|e| {
            let why = format!("listing {} for abandoned uploads: {e}", dir.display());
            Error::delta(&self.label, DeltaTableError::Generic(why))
        })
    }

    /// Upserts `rows` (unique per key) like [`Table::upsert`]: through the keyed merge when it
    /// applies (one integer key, no delete column; see `keyed`), which reads `rows` in two passes
    /// and never holds them; else MERGE, with `rows` in memory. `MEDALLION_KEYED_MERGE=off` forces
    /// MERGE (to compare the two).
    pub async fn upsert_rows(self, rows: Vec<RecordBatch>, upsert: Upsert) -> Result<(Table, MergeMetrics)> {
        match rows.first() {
            Some(first) => self.upsert_from(&InMemory::new(first.schema(), rows), upsert).await,
            None => {
                let ctx = SessionContext::new();
                let source =
                    ctx.read_batches(rows).map_err(|e| Error::sql(format!("merge source for {}", self.label), e))?;
                self.upsert(source, upsert).await
            }
        }
    }

    /// Replaces the rows whose key (`keys`) is among `rows`' keys with `rows` (dbt's
    /// `delete+insert`), reading only the key columns of the files that may hold one and
    /// rewriting (or marking, with deletion vectors) only those that do; the commit carries
    /// `metadata`. `Ok(None)`, with nothing written, when the table is partitioned, constrained,
    /// records a change data feed or has other columns than `rows`: write the whole new content
    /// then.
    pub async fn replace_keys(
        &self,
        rows: &[RecordBatch],
        keys: &[String],
        metadata: HashMap<String, Value>,
    ) -> Result<Option<Table>> {
        if !self.exists {
            return Ok(None);
        }
        let replaced = replace::replace_keys(&self.inner, rows, keys, metadata).await;
        match replaced.map_err(|e| Error::delta(&self.label, e))? {
            Some((inner, _)) => Ok(Some(Table { label: self.label.clone(), inner, exists: true })),
            None => Ok(None),
        }
    }

    /// [`Table::upsert_rows`] over rows read in passes (e.g. spilled to scratch files): the keyed
    /// merge holds their key index, never the rows; MERGE collects them.
    pub async fn upsert_from(self, rows: &dyn Rows, mut upsert: Upsert) -> Result<(Table, MergeMetrics)> {
        let keyed_off = std::env::var("MEDALLION_KEYED_MERGE").is_ok_and(|v| v == "off");
        let scanned = upsert.scanned.take();
        if let ([key], None, true, false) = (upsert.keys.as_slice(), &upsert.delete_column, self.exists, keyed_off) {
            let merged = keyed::upsert(
                &self.inner,
                &self.label,
                rows,
                (key, &upsert.order_by),
                (upsert.txn.clone(), upsert.metadata.clone()),
                scanned,
                &mut upsert.gate,
            )
            .await?;
            if let Some((inner, metrics)) = merged {
                return Ok((Table { label: self.label, inner, exists: true }, metrics));
            }
        }
        // MERGE plans a join over a source in memory.
        let ctx = SessionContext::new();
        let rows = rows::collect(rows)?;
        let source = ctx.read_batches(rows).map_err(|e| Error::sql(format!("merge source for {}", self.label), e))?;
        self.upsert(source, upsert).await
    }

    /// Upserts `source` (unique per key) by `keys`: inserts new keys, and updates a matched row
    /// only when the source is newer by `order_by` (so an older record never overwrites a newer
    /// one, whatever order batches arrive in). `bounds` narrows the target scan.
    pub async fn upsert(self, source: DataFrame, mut upsert: Upsert) -> Result<(Table, MergeMetrics)> {
        // delta-rs's MERGE commits as it ends: what must land first lands before it starts.
        std::mem::take(&mut upsert.gate).pass().await?;
        let label = self.label.clone();
        let mut predicate: Vec<String> = upsert.keys.iter().map(|k| format!("target.{k} = source.{k}")).collect();
        predicate.extend(upsert.bounds);
        let guard = format!("source.{o} > target.{o}", o = upsert.order_by);
        let columns = upsert.columns;
        // With a delete column, a newer delete record removes the row and never inserts one.
        let (update_when, insert_when) = match &upsert.delete_column {
            Some(d) => (format!("{guard} AND NOT source.{d}"), Some(format!("NOT source.{d}"))),
            None => (guard.clone(), None),
        };
        let mut merge = self
            .inner
            .merge(source, predicate.join(" AND "))
            .with_source_alias("source")
            .with_target_alias("target")
            .with_commit_properties(commit_properties(upsert.txn, upsert.metadata));
        if let Some(d) = &upsert.delete_column {
            merge = merge
                .when_matched_delete(|del| del.predicate(format!("{guard} AND source.{d}")))
                .map_err(|e| Error::delta(&label, e))?;
        }
        let (inner, metrics) = merge
            .when_matched_update(|u| {
                columns.iter().fold(u.predicate(update_when), |u, c| u.update(c.as_str(), format!("source.{c}")))
            })
            .map_err(|e| Error::delta(&label, e))?
            .when_not_matched_insert(|i| {
                let i = match insert_when {
                    Some(p) => i.predicate(p),
                    None => i,
                };
                columns.iter().fold(i, |i, c| i.set(c.as_str(), format!("source.{c}")))
            })
            .map_err(|e| Error::delta(&label, e))?
            .await
            .map_err(|e| Error::delta(&label, e))?;
        Ok((Table { label, inner, exists: true }, metrics))
    }
}

/// Options of [`Table::write`].
#[derive(Debug, Default)]
pub struct WriteOptions {
    /// Replace the content (one commit) rather than append.
    pub overwrite: bool,
    /// Partition columns, used when the write creates the table.
    pub partition_by: Vec<String>,
    /// Idempotency marker.
    pub txn: Option<Txn>,
    /// Stored in the commit's `info`.
    pub metadata: HashMap<String, Value>,
    /// Replace only the rows matching this SQL predicate (every written row must match it).
    pub replace_where: Option<String>,
    /// When the write creates the table: record a change data feed (for incremental readers).
    pub change_feed: bool,
    /// Create the table with deletion vectors enabled (merges then mark replaced rows instead of
    /// rewriting files).
    pub deletion_vectors: bool,
    /// With `overwrite`: partition the replaced table by `partition_by` even if it exists (a
    /// rebuild after `partition_by` changed).
    pub repartition: bool,
    /// Rows per Parquet row group (None: the writer's default, about 1M): the writer holds a row
    /// group in memory until it is full, so wide rows (a dead letter's raw records) take fewer.
    pub row_group_rows: Option<usize>,
    /// Bytes a data file is written up to (None: delta-rs's 100 MiB): the writer holds a file's
    /// bytes until it is full and uploaded.
    pub file_bytes: Option<u64>,
    /// The rows have no order to keep (silver's): a write that creates an unpartitioned table
    /// then encodes them on every core at once, into a file per core, in any order.
    pub any_order: bool,
    /// What the commit waits for: the files are written meanwhile (see [`Gate::hold`]).
    pub gate: Gate,
}

/// Options of [`Table::upsert`].
#[derive(Debug)]
pub struct Upsert {
    /// Key columns.
    pub keys: Vec<String>,
    /// Column deciding which version is newer.
    pub order_by: String,
    /// Every column of the table.
    pub columns: Vec<String>,
    /// Extra conjuncts over `target.*` bounding the scan (key ranges).
    pub bounds: Vec<String>,
    /// A boolean source column marking delete records.
    pub delete_column: Option<String>,
    /// Idempotency marker.
    pub txn: Option<Txn>,
    /// Stored in the commit's `info`.
    pub metadata: HashMap<String, Value>,
    /// What an audit's scan of the table's keys found for these rows (see
    /// [`Table::published_orders`]): the keyed merge takes it instead of scanning again when it
    /// was taken of the same version for the same rows.
    pub scanned: Option<KeyScan>,
    /// What the commit waits for: the keyed merge reads and writes meanwhile; MERGE waits before
    /// it starts.
    pub gate: Gate,
}

/// What a commit waits for before it lands: another commit that must land first (a promotion's
/// dead letter before its merge), made meanwhile, or nothing ([`Gate::open`]). A gate that fails
/// stops the commit with its error.
#[derive(Default)]
pub struct Gate(Option<futures::future::BoxFuture<'static, Result<()>>>);

impl Gate {
    /// Nothing to wait for.
    pub fn open() -> Gate {
        Gate(None)
    }

    /// Wait for `landed`.
    pub fn after(landed: impl Future<Output = Result<()>> + Send + 'static) -> Gate {
        Gate(Some(Box::pin(landed)))
    }

    /// Whether there is something to wait for.
    pub fn holds(&self) -> bool {
        self.0.is_some()
    }

    /// Waits until the gate opens (its error when it does not).
    pub async fn pass(self) -> Result<()> {
        match self.0 {
            Some(landed) => landed.await,
            None => Ok(()),
        }
    }

    /// `rows`, ending only once the gate opens (a write of the stream commits after its end), or
    /// with the gate's error as its last item when it fails.
    pub fn hold(self, rows: SendableRecordBatchStream) -> SendableRecordBatchStream {
        if self.0.is_none() {
            return rows;
        }
        let schema = rows.schema();
        let end = futures::stream::once(self.pass()).filter_map(|passed| async move {
            passed.err().map(|e| Err(datafusion::error::DataFusionError::External(Box::new(e))))
        });
        Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows.chain(end)))
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Gate(waiting)" } else { "Gate(open)" })
    }
}

/// What changed in a table after a version, by its change data feed.
pub enum Feed {
    /// No commit since.
    Unchanged,
    /// The changed rows, as a table to query.
    Rows(Arc<dyn TableProvider>),
}

/// The cores this process may use: how many files the table operations scan or write at once.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The version of `label`'s last checkpoint, from `_delta_log/_last_checkpoint` (None when it is
/// missing or unreadable: a checkpoint is then due).
async fn last_checkpoint(lake: &Lake, label: &str) -> Result<Option<i64>> {
    let Some(bytes) = lake.get(&format!("{label}/_delta_log/_last_checkpoint")).await? else { return Ok(None) };
    Ok(serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v.get("version").and_then(Value::as_i64)))
}

/// The Parquet settings every data file medallion writes starts from: Snappy, as delta-rs writes.
fn parquet_properties() -> datafusion::parquet::file::properties::WriterPropertiesBuilder {
    use datafusion::parquet::{basic::Compression, file::properties::WriterProperties};
    WriterProperties::builder().set_compression(Compression::SNAPPY)
}

/// The table properties a table is created with: a change data feed, deletion vectors.
pub fn creation_properties(change_feed: bool, deletion_vectors: bool) -> Vec<(&'static str, &'static str)> {
    let mut properties = Vec::new();
    if change_feed {
        properties.push(("delta.enableChangeDataFeed", "true"));
    }
    if deletion_vectors {
        properties.push(("delta.enableDeletionVectors", "true"));
    }
    properties
}

/// A commit's properties: `metadata`, the app transaction of `txn`, and no cleanup of expired
/// commits after it. delta-rs would otherwise list the table's whole log after every commit to find
/// the commits past `delta.logRetentionDuration` (a request per commit on an object store, a stat
/// per entry on disk); they are removed when maintenance writes a checkpoint instead
/// ([`Table::checkpoint_if_due`]), as Spark removes them.
fn commit_properties(txn: Option<Txn>, metadata: HashMap<String, Value>) -> CommitProperties {
    let props = CommitProperties::default().with_metadata(metadata).with_cleanup_expired_logs(Some(false));
    match txn {
        Some(t) => props.with_application_transaction(Transaction::new(t.app_id, t.version)),
        None => props,
    }
}

/// The rows of a write as a single-use stream: each batch is released once the writer has taken
/// it, instead of a MemTable holding every row until the commit (at 5M records the deduplicated
/// rows and the Parquet writer's buffers coexisted in full). A second execution is an error, never
/// an empty input: rows are written once or the write fails.
mod once {
    use std::sync::{Arc, Mutex};

    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::SchemaRef;
    use datafusion::catalog::streaming::StreamingTable;
    use datafusion::datasource::provider_as_source;
    use datafusion::error::DataFusionError;
    use datafusion::execution::{SendableRecordBatchStream, TaskContext};
    use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::physical_plan::streaming::PartitionStream;
    use futures::StreamExt;

    use crate::error::{Error, Result};

    struct Once {
        schema: SchemaRef,
        rows: Mutex<Option<SendableRecordBatchStream>>,
    }

    impl std::fmt::Debug for Once {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Once").field("schema", &self.schema).finish_non_exhaustive()
        }
    }

    impl PartitionStream for Once {
        fn schema(&self) -> &SchemaRef {
            &self.schema
        }

        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            match self.rows.lock().ok().and_then(|mut b| b.take()) {
                Some(rows) => rows,
                None => Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&self.schema),
                    futures::stream::once(async {
                        Err(DataFusionError::Execution(
                            "the rows of this write were already read once; refusing to write them again".into(),
                        ))
                    }),
                )),
            }
        }
    }

    /// A plan reading `batches` once (an empty table when there are none).
    pub(super) fn plan(batches: Vec<RecordBatch>) -> Result<LogicalPlan> {
        stream_plan(stream(batches)?)
    }

    /// `batches` as a stream (at least one, possibly empty, gives the schema).
    pub(super) fn stream(batches: Vec<RecordBatch>) -> Result<SendableRecordBatchStream> {
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            return Err(Error::Internal("a write needs at least one (possibly empty) batch".into()));
        };
        let rows = futures::stream::iter(batches.into_iter().map(Ok)).boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }

    /// A plan reading `rows` once.
    pub(super) fn stream_plan(rows: SendableRecordBatchStream) -> Result<LogicalPlan> {
        let schema = rows.schema();
        let source = Arc::new(Once { schema: Arc::clone(&schema), rows: Mutex::new(Some(rows)) });
        let table =
            StreamingTable::try_new(schema, vec![source]).map_err(|e| Error::sql("staging rows to write", e))?;
        LogicalPlanBuilder::scan("rows", provider_as_source(Arc::new(table)), None)
            .and_then(LogicalPlanBuilder::build)
            .map_err(|e| Error::sql("staging rows to write", e))
    }
}
