//! Upserting by one integer key without delta-rs's MERGE: a merge that needs no join, writing
//! either copy-on-write or merge-on-read (deletion vectors).
//!
//! The silver promotion's common case (one non-null `int64` key, an order column that converts to
//! `int64`, an unpartitioned table without constraints, with only the writer features this module
//! keeps: deletion vectors and the change data feed) is merged here:
//!
//! 1. The source (unique per key) is indexed in a hash map.
//! 2. Target files whose key range (from their statistics) holds no source key are skipped; the
//!    others are scanned on the key and order columns only (rows their deletion vector already
//!    deletes match nothing).
//! 3. Copy-on-write: only files holding a row the source replaces are rewritten, each into one new
//!    file (the table's layout is kept: a Z-ordered file stays clustered), several at once,
//!    streaming: a worker holds one record batch of one file, never the table. Merge-on-read
//!    (the table has `delta.enableDeletionVectors`): no file is rewritten; the replaced rows'
//!    positions join each file's deletion vector (one vector file per merge), and the file is
//!    committed again with its new descriptor. With a change data feed, the replaced rows are read
//!    back by position (their pages only) as the feed's preimages.
//! 4. The winning source rows are written to new files, and everything lands in one commit
//!    (removes, adds, the change data feed's file when the table records one, the txn) carrying
//!    MERGE's operation metrics.
//!
//! delta-rs's MERGE plans a join of the whole target against the source and rewrites every
//! touched file through DataFusion; at 4.3M silver rows it took ~2 s a run and held the joined
//! rows. The rule is the one that MERGE applied (`Table::upsert`): a matched target row is
//! replaced when the source's order value is greater (both present), otherwise the source row is
//! superseded; unmatched source rows are inserted. A source key matching several target rows
//! (never the case for tables medallion writes) replaces them all, or is superseded if any is as
//! new.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
// ParquetObjectReader is deprecated in parquet 59 in favour of hand-written readers; it is what
// delta-rs 1.1 reads with too.
use datafusion::parquet::arrow::ProjectionMask;
#[allow(deprecated)]
use datafusion::parquet::arrow::async_reader::{
    ParquetObjectReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use datafusion::parquet::arrow::async_writer::AsyncArrowWriter;
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, AddCDCFile, DeletionVectorDescriptor};
use deltalake::operations::merge::MergeMetrics;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::Value;

use super::parallel::{Writers, file_count, slices};
use super::rows::{InMemory, Rows};
use super::{Gate, Txn, commit_properties, encodings};
use crate::error::{Error, Result};

type Fast = foldhash::fast::RandomState;

/// Rows decoded per step while scanning and rewriting target files.
const READ_BATCH_ROWS: usize = 65_536;

/// What happens to a source row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// No target row has its key.
    Insert,
    /// It replaces the target rows with its key.
    Update,
    /// A target row with its key is as new or newer.
    Superseded,
}

/// The source rows, indexed by key (the rows themselves are read again to write the winners).
struct Source {
    /// Order value of each row (None: missing).
    orders: Vec<Option<i64>>,
    /// Keys, sorted, for range tests against file statistics.
    sorted: Vec<i64>,
    /// The least order value when every row has one: a target file whose rows are all older by
    /// its statistics is then scanned without its order column.
    least_order: Option<i64>,
    /// The row of each key in `sorted`.
    rows: Vec<u32>,
    /// How a key finds its row.
    lookup: Lookup,
}

/// A key's way to its source row.
enum Lookup {
    /// The keys as bits over their range, when that is small enough: a key's rank among the set
    /// bits is its place in `sorted`. Most target keys are not in the source; a bit tells them so
    /// without probing a map, which misses the cache, and a hit costs a popcount.
    Bits(KeyBits),
    /// Key → row, for keys spread too thinly for bits.
    Map(HashMap<i64, u32, Fast>),
}

impl Source {
    /// The source of `keys` (row `i` has key `keys[i]`) with their `orders`; None if a key repeats
    /// or the rows cannot all be numbered in a `u32`.
    fn new(keys: Vec<i64>, orders: Vec<Option<i64>>) -> Option<Source> {
        u32::try_from(keys.len()).ok()?;
        let mut pairs: Vec<(i64, u32)> = keys.into_iter().zip(0u32..).collect();
        // Keys often arrive in order already (new rows of an increasing key).
        if !pairs.is_sorted_by_key(|p| p.0) {
            pairs.sort_unstable_by_key(|p| p.0);
        }
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let (sorted, rows): (Vec<i64>, Vec<u32>) = pairs.into_iter().unzip();
        let lookup = match KeyBits::new(&sorted) {
            Some(bits) => Lookup::Bits(bits),
            None => Lookup::Map(sorted.iter().copied().zip(rows.iter().copied()).collect()),
        };
        // None when a row has no order value (or there is no row).
        let least_order =
            orders.iter().try_fold(None::<i64>, |m, o| o.map(|o| Some(m.map_or(o, |m| m.min(o))))).flatten();
        Some(Source { orders, sorted, rows, least_order, lookup })
    }

    /// The source row with key `k`.
    #[inline]
    fn row_of(&self, k: i64) -> Option<u32> {
        match &self.lookup {
            Lookup::Bits(bits) => bits.rank(k).map(|at| self.rows[at]),
            Lookup::Map(map) => map.get(&k).copied(),
        }
    }

    /// Whether `other` has the same keys at the same row numbers.
    fn same_keys(&self, other: &Source) -> bool {
        self.sorted == other.sorted && self.rows == other.rows
    }
}

/// A set of sorted keys as one bit per value between the least and the greatest, with the number
/// of keys before each word, so a key's place among them is one popcount away.
struct KeyBits {
    least: i64,
    words: Vec<u64>,
    /// Set bits in the words before each word.
    before: Vec<u32>,
}

impl KeyBits {
    /// Bits for `sorted` keys, unless their range needs more than [`KeyBits::MAX_BYTES`] or more
    /// than [`KeyBits::MAX_BITS_A_KEY`] (a few keys spread thin: their map is small enough to stay
    /// in cache, the bits are not).
    const MAX_BYTES: u64 = 16 << 20;
    /// A batch's re-sent keys spread over the whole table: 250k keys over 20M values is 80 bits a
    /// key, still one load per probe where the map missed the cache on every one (40% of the key
    /// scan of a 17M-row table).
    const MAX_BITS_A_KEY: u64 = 1024;

    fn new(sorted: &[i64]) -> Option<KeyBits> {
        let (&least, &greatest) = (sorted.first()?, sorted.last()?);
        let span = u64::try_from(i128::from(greatest) - i128::from(least) + 1).ok()?;
        if span / 8 > Self::MAX_BYTES || span / Self::MAX_BITS_A_KEY > sorted.len() as u64 {
            return None;
        }
        let mut words = vec![0u64; usize::try_from(span.div_ceil(64)).ok()?];
        for &k in sorted {
            let at = k.abs_diff(least);
            words[(at / 64) as usize] |= 1 << (at % 64);
        }
        // At most 8 * MAX_BYTES bits are set: the counts fit a u32.
        let mut seen = 0u32;
        let before = words
            .iter()
            .map(|w| {
                let b = seen;
                seen += w.count_ones();
                b
            })
            .collect();
        Some(KeyBits { least, words, before })
    }

    /// The place of `k` among the keys (its index in the sorted keys), None if it is not one.
    #[inline]
    fn rank(&self, k: i64) -> Option<usize> {
        if k < self.least {
            return None;
        }
        let at = k.abs_diff(self.least);
        let w = usize::try_from(at / 64).ok()?;
        let word = *self.words.get(w)?;
        let bit = 1u64 << (at % 64);
        (word & bit != 0).then(|| self.before[w] as usize + (word & (bit - 1)).count_ones() as usize)
    }
}

/// A target row whose key is in the source.
#[derive(Clone, Copy)]
struct Hit {
    row: u32,
    source: u32,
    order: Option<i64>,
}

/// What scanning a table version's key column for a candidate's keys found (`published_orders`,
/// for an audit), kept for the merge that follows: when it merges the same rows into the same
/// version, the table's key column is read once per promotion instead of twice.
pub struct KeyScan {
    version: u64,
    /// The candidate's rows, indexed by key, as the scan looked them up.
    source: Arc<Source>,
    /// Per file holding a candidate key (by path), its hits.
    hits: Vec<(String, Vec<Hit>)>,
    /// Each scanned file's deletion vector, by path.
    deleted: HashMap<String, Arc<roaring::RoaringTreemap>>,
    scanned: usize,
}

impl std::fmt::Debug for KeyScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyScan")
            .field("version", &self.version)
            .field("keys", &self.source.orders.len())
            .field("files_hit", &self.hits.len())
            .field("scanned", &self.scanned)
            .finish()
    }
}

impl KeyScan {
    fn new(version: u64, source: Arc<Source>, files: &[deltalake::kernel::LogicalFileView], found: Found) -> KeyScan {
        let path = |i: usize| files[i].object_store_path().to_string();
        let (hits, deleted, scanned) = found;
        KeyScan {
            version,
            source,
            hits: hits.into_iter().map(|(i, h)| (path(i), h)).collect(),
            deleted: deleted.into_iter().map(|(i, d)| (path(i), d)).collect(),
            scanned,
        }
    }

    /// What it found, as [`find_hits`] would find it for `source` in `files` of table `version`;
    /// None unless it was taken of that version for the same keys in the same row order.
    fn found_for(self, version: u64, files: &[deltalake::kernel::LogicalFileView], source: &Source) -> Option<Found> {
        // The same keys at the same row numbers: the hits' row numbers mean the same rows.
        if self.version != version || !self.source.same_keys(source) {
            return None;
        }
        let at: HashMap<String, usize> =
            files.iter().enumerate().map(|(i, f)| (f.object_store_path().to_string(), i)).collect();
        let hits = self.hits.into_iter().map(|(p, h)| at.get(&p).map(|&i| (i, h))).collect::<Option<Vec<_>>>()?;
        let deleted =
            self.deleted.into_iter().map(|(p, d)| at.get(&p).map(|&i| (i, d))).collect::<Option<HashMap<_, _>>>()?;
        Some((hits, deleted, self.scanned))
    }
}

/// The merge, when this path applies: `None` when it does not (the caller uses MERGE).
pub(super) async fn upsert(
    table: &DeltaTable,
    label: &str,
    rows: &dyn Rows,
    (key, order_by): (&str, &str),
    (txn, metadata): (Option<Txn>, HashMap<String, Value>),
    scanned: Option<KeyScan>,
    gate: &mut Gate,
) -> Result<Option<(DeltaTable, MergeMetrics)>> {
    let started = std::time::Instant::now();
    let delta = |e: DeltaTableError| Error::delta(label, e);
    let schema: SchemaRef = rows.schema();
    let Some(mode) = applies(table, &schema, key, order_by).map_err(delta)? else { return Ok(None) };
    let Some(source) = index(rows, key, order_by)? else { return Ok(None) };
    let source = Arc::new(source);
    let mut merge = change_target(table, mode, &source, (key, order_by), &schema, scanned).await.map_err(delta)?;

    // The source rows that win.
    // The first batch of the one pass over them decides the encodings.
    let mut pass = rows.pass(None)?.peekable();
    let sample = pass.peek().and_then(|b| b.as_ref().ok());
    let properties = encodings::plain_where_distinct(keyed_writer_properties(key), sample).build();
    let mut writer = winners(table, properties, rows.count()).map_err(delta)?;
    let mut offset = 0usize;
    for b in pass {
        let b = &b?;
        let n = b.num_rows();
        let fates = &merge.fate[offset..offset + n];
        offset += n;
        let out = if fates.contains(&Fate::Superseded) {
            let wins: BooleanArray = fates.iter().map(|f| Some(*f != Fate::Superseded)).collect();
            filter_record_batch(b, &wins).map_err(|e| Error::arrow("merge source rows", e))?
        } else {
            b.clone()
        };
        merge.inserted += fates.iter().filter(|f| **f == Fate::Insert).count();
        writer.write(&out).await.map_err(delta)?;
        if mode.change_feed {
            let insert: BooleanArray = fates.iter().map(|f| Some(*f == Fate::Insert)).collect();
            let update: BooleanArray = fates.iter().map(|f| Some(*f == Fate::Update)).collect();
            merge.inserts.push(filter_record_batch(b, &insert).map_err(|e| Error::arrow("merge change feed", e))?);
            merge.postimages.push(filter_record_batch(b, &update).map_err(|e| Error::arrow("merge change feed", e))?);
        }
    }
    merge.start_changes(&table.object_store(), &schema, key);
    let adds: Vec<Action> = writer.finish().await.map_err(delta)?.into_iter().map(Action::Add).collect();
    merge.added += adds.len();
    merge.actions.extend(adds);
    std::mem::take(gate).pass().await?;
    let committed = commit(table, merge, &schema, source.orders.len(), started, (key, order_by), txn, metadata);
    Ok(Some(committed.await.map_err(delta)?))
}

/// The writers of a merge's winning rows (about `rows` of them) to files of `table`: one file per
/// 100,000 rows, up to one per core, each encoded on its own task ([`Writers`]).
pub(super) fn winners(
    table: &DeltaTable,
    properties: WriterProperties,
    rows: u64,
) -> Result<Writers<DeltaTableError>, DeltaTableError> {
    let writers = (0..file_count(rows))
        .map(|_| Ok(RecordBatchWriter::for_table(table)?.with_writer_properties(properties.clone())))
        .collect::<Result<Vec<_>, DeltaTableError>>()?;
    Ok(Writers::start(writers, writer_stopped, |mut writer, mut rows| async move {
        while let Some(batch) = rows.recv().await {
            writer.write(batch).await?;
        }
        writer.flush().await
    }))
}

/// The error of a merge's writer that ended without one of its own.
fn writer_stopped(why: String) -> DeltaTableError {
    DeltaTableError::Generic(format!("a writer of the merge's rows: {why}"))
}

/// The merge of rows already written to files of the table (by a cluster's executors; `written`,
/// each file's path and add action, not committed, their rows unique per key), when this path
/// applies: the winning rows' files are committed as they are, a file with rows the table already
/// holds newer gets them marked in a deletion vector (merge-on-read) or is rewritten without them
/// (copy-on-write). `None` when the
/// path does not apply (the caller reads the files back and merges their rows). Also returns the
/// written files that are not part of the commit (rewritten, or all their rows superseded): the
/// caller deletes them once the commit landed.
pub(super) async fn upsert_written(
    table: &DeltaTable,
    label: &str,
    written: Vec<(Path, Add)>,
    (key, order_by): (&str, &str),
    txn: Option<Txn>,
    metadata: HashMap<String, Value>,
) -> Result<Option<(DeltaTable, MergeMetrics, Vec<Path>)>> {
    let started = std::time::Instant::now();
    let delta = |e: DeltaTableError| Error::delta(label, e);
    let arrow: Result<Schema, _> = table.snapshot().map_err(delta)?.schema().as_ref().try_into_arrow();
    let schema: SchemaRef = Arc::new(arrow.map_err(|e| Error::arrow(format!("the schema of {label}"), e))?);
    let Some(mode) = applies(table, &schema, key, order_by).map_err(delta)? else { return Ok(None) };
    let store = table.object_store();
    let Some((source, counts)) = index_files(&store, &written, key, order_by).await.map_err(delta)? else {
        return Ok(None);
    };
    let source = Arc::new(source);
    let mut merge = change_target(table, mode, &source, (key, order_by), &schema, None).await.map_err(delta)?;

    // Each written file: committed as it is, with a vector of its superseded rows, rewritten
    // without them, or left out (every row superseded).
    let mut unpublished = Vec::new();
    let mut vectors: Vec<(Add, roaring::RoaringTreemap)> = Vec::new();
    let mut offset = 0usize;
    for ((path, add), n) in written.into_iter().zip(counts) {
        let fates = &merge.fate[offset..offset + n];
        offset += n;
        let rows_of = |fate: Fate| -> Vec<u32> { (0..n as u32).filter(|&r| fates[r as usize] == fate).collect() };
        merge.inserted += fates.iter().filter(|f| **f == Fate::Insert).count();
        if mode.change_feed {
            for (fate, into) in [(Fate::Insert, &mut merge.inserts), (Fate::Update, &mut merge.postimages)] {
                let rows = rows_of(fate);
                if !rows.is_empty() {
                    into.extend(read_rows(&store, path.clone(), add.size, &rows, &schema).await.map_err(delta)?);
                }
            }
        }
        let superseded = rows_of(Fate::Superseded);
        if superseded.is_empty() {
            merge.added += 1;
            merge.actions.push(Action::Add(add));
        } else if superseded.len() == n {
            unpublished.push(path);
        } else if mode.deletion_vectors {
            vectors.push((add, superseded.iter().map(|&r| u64::from(r)).collect()));
        } else {
            let (adds, _, _) = rewrite(table, path.clone(), add.size, &superseded, false).await.map_err(delta)?;
            merge.added += adds.len();
            merge.actions.extend(adds);
            unpublished.push(path);
        }
    }
    if !vectors.is_empty() {
        let (adds, vectors): (Vec<Add>, Vec<_>) = vectors.into_iter().unzip();
        let descriptors = super::dv::write(store.as_ref(), &Path::from(""), vectors).await.map_err(delta)?;
        for (mut add, d) in adds.into_iter().zip(descriptors) {
            add.deletion_vector = Some(d);
            add.stats = add.stats.map(|s| loose_stats(&s));
            merge.added += 1;
            merge.actions.push(Action::Add(add));
        }
    }
    let committed = commit(table, merge, &schema, source.orders.len(), started, (key, order_by), txn, metadata);
    let (table, metrics) = committed.await.map_err(delta)?;
    Ok(Some((table, metrics, unpublished)))
}

/// A merge in the making: what it does to the target's files (worked out before the winners are
/// written), then the winners' files and change data as they are added.
struct Merge {
    /// Each source row's fate.
    fate: Vec<Fate>,
    /// Removes and adds so far.
    actions: Vec<Action>,
    /// Change data: the replaced target rows, the source rows replacing them, the new ones.
    preimages: Vec<RecordBatch>,
    postimages: Vec<RecordBatch>,
    inserts: Vec<RecordBatch>,
    change_feed: bool,
    /// The change data files being written, once the changes are all known.
    changes: Vec<tokio::task::JoinHandle<Result<Option<AddCDCFile>, DeltaTableError>>>,
    inserted: usize,
    updated: usize,
    copied: usize,
    removed: usize,
    added: usize,
    files: usize,
    scanned: usize,
    scan_time: std::time::Duration,
    rewrite_time: std::time::Duration,
}

impl Merge {
    /// Starts writing the change data (when the table records a feed) on tasks of their own, so
    /// it is encoded while the winners' files are: as many files as [`file_count`] says, fed
    /// slices in turn, the `key` column without a dictionary. [`commit`] commits them.
    fn start_changes(&mut self, store: &Arc<dyn ObjectStore>, schema: &SchemaRef, key: &str) {
        if !self.change_feed || !self.changes.is_empty() {
            return;
        }
        let changes = [
            ("update_preimage", std::mem::take(&mut self.preimages)),
            ("update_postimage", std::mem::take(&mut self.postimages)),
            ("insert", std::mem::take(&mut self.inserts)),
        ];
        let rows: usize = changes.iter().flat_map(|(_, b)| b).map(RecordBatch::num_rows).sum();
        let files = file_count(rows as u64);
        let mut parts: Vec<Vec<(&'static str, RecordBatch)>> = vec![Vec::new(); files];
        let mut next = 0;
        for (kind, batches) in changes {
            for slice in batches.iter().flat_map(slices) {
                parts[next % files].push((kind, slice));
                next += 1;
            }
        }
        let properties = keyed_writer_properties(key).build();
        for part in parts {
            let (store, schema, properties) = (Arc::clone(store), Arc::clone(schema), properties.clone());
            self.changes.push(tokio::spawn(async move { write_changes(&store, &schema, part, properties).await }));
        }
    }
}

/// Finds the target rows `source` matches (or takes what `scanned` found of them), decides each
/// source row's fate, and marks (deletion vectors) or rewrites (copy-on-write) the target files
/// holding rows it replaces.
async fn change_target(
    table: &DeltaTable,
    mode: Mode,
    source: &Arc<Source>,
    (key, order_by): (&str, &str),
    schema: &SchemaRef,
    scanned: Option<KeyScan>,
) -> Result<Merge, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let store = table.object_store();
    let files: Vec<_> = snapshot.log_data().iter().collect();
    let threads = super::cores();

    let scan_started = std::time::Instant::now();
    let (hits, deleted, scanned) = match scanned.and_then(|s| s.found_for(snapshot.version(), &files, source)) {
        Some(found) => found,
        None => find_hits(&store, &files, source, key, order_by).await?,
    };
    let scan_time = scan_started.elapsed();

    // Each source row's fate, then the target rows to drop: those a newer source row replaces.
    let mut fate = vec![Fate::Insert; source.orders.len()];
    for (_, file_hits) in &hits {
        for h in file_hits {
            let replaces = matches!((source.orders[h.source as usize], h.order), (Some(s), Some(t)) if s > t);
            let f = &mut fate[h.source as usize];
            *f = match (*f, replaces) {
                (Fate::Superseded, _) | (_, false) => Fate::Superseded,
                _ => Fate::Update,
            };
        }
    }
    let mut rewrites: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut updated = 0usize;
    for (i, file_hits) in hits {
        let mut drop: Vec<u32> =
            file_hits.iter().filter(|h| fate[h.source as usize] == Fate::Update).map(|h| h.row).collect();
        if !drop.is_empty() {
            drop.sort_unstable();
            updated += drop.len();
            rewrites.push((i, drop));
        }
    }

    // Merge-on-read: the replaced rows are marked in each file's deletion vector, no file is
    // rewritten; the same file is committed again with its new vector (stats no longer tight).
    let rewrite_started = std::time::Instant::now();
    let mut actions = Vec::new();
    let mut preimages = Vec::new();
    let (mut removed, mut added, mut copied) = (0usize, 0usize, 0usize);
    if mode.deletion_vectors {
        let mut vectors = Vec::with_capacity(rewrites.len());
        for (i, drop) in &rewrites {
            // `drop` is sorted: built as one bitmap, then unioned (a row at a time costs far more).
            let dropped = roaring::RoaringTreemap::from_sorted_iter(drop.iter().map(|&r| u64::from(r)))
                .map_err(|e| DeltaTableError::Generic(format!("merge: replaced rows out of order: {e}")))?;
            vectors.push(match deleted.get(i) {
                Some(d) => d.as_ref() | &dropped,
                None => dropped,
            });
        }
        let descriptors = super::dv::write(store.as_ref(), &Path::from(""), vectors).await?;
        if mode.change_feed {
            // The feed's preimages: the replaced rows, read back by position (only their pages).
            let jobs: Vec<(Path, i64, Vec<u32>)> = rewrites
                .iter()
                .map(|(i, drop)| (files[*i].object_store_path(), files[*i].size(), drop.clone()))
                .collect();
            preimages = futures::stream::iter(jobs)
                .map(|(path, size, drop)| {
                    let (store, schema) = (Arc::clone(&store), Arc::clone(schema));
                    tokio::spawn(async move { read_rows(&store, path, size, &drop, &schema).await })
                })
                .buffer_unordered(threads)
                .map(|joined| joined.map_err(|e| DeltaTableError::Generic(format!("merge preimage task: {e}")))?)
                .try_concat()
                .await?;
        }
        for ((i, _), d) in rewrites.drain(..).zip(descriptors) {
            actions.extend(marked(&files[i], d));
            (removed, added) = (removed + 1, added + 1);
        }
    }
    // Rewrite the files with replaced rows, several at once; keep the replaced rows for the feed.
    for (i, adds, pre, kept) in rewrite_each(table, &files, rewrites, mode.change_feed).await? {
        actions.push(Action::Remove(files[i].remove_action(true)));
        removed += 1;
        added += adds.len();
        actions.extend(adds);
        preimages.extend(pre);
        copied += kept;
    }
    Ok(Merge {
        fate,
        actions,
        preimages,
        postimages: Vec::new(),
        inserts: Vec::new(),
        change_feed: mode.change_feed,
        changes: Vec::new(),
        inserted: 0,
        updated,
        copied,
        removed,
        added,
        files: files.len(),
        scanned,
        scan_time,
        rewrite_time: rewrite_started.elapsed(),
    })
}

/// Commits `merge` (of `sources` source rows, begun at `started`) in one commit: its actions, its
/// change data file when the table records a feed, the txn, and MERGE's operation metrics.
#[allow(clippy::too_many_arguments)]
async fn commit(
    table: &DeltaTable,
    mut merge: Merge,
    schema: &SchemaRef,
    sources: usize,
    started: std::time::Instant,
    (key, order_by): (&str, &str),
    txn: Option<Txn>,
    metadata: HashMap<String, Value>,
) -> Result<(DeltaTable, MergeMetrics), DeltaTableError> {
    merge.start_changes(&table.object_store(), schema, key);
    let mut actions = std::mem::take(&mut merge.actions);
    for changes in std::mem::take(&mut merge.changes) {
        let written = changes.await.map_err(|e| DeltaTableError::Generic(format!("merge change data task: {e}")))?;
        if let Some(cdc) = written? {
            actions.push(Action::Cdc(cdc));
        }
    }
    let metrics = MergeMetrics {
        num_source_rows: sources,
        num_target_rows_inserted: merge.inserted,
        num_target_rows_updated: merge.updated,
        num_target_rows_deleted: 0,
        num_target_rows_copied: merge.copied,
        num_output_rows: merge.inserted + merge.updated + merge.copied,
        num_target_files_scanned: merge.scanned,
        num_target_files_skipped_during_scan: merge.files - merge.scanned,
        num_target_files_added: merge.added,
        num_target_files_removed: merge.removed,
        execution_time_ms: started.elapsed().as_millis() as u64,
        scan_time_ms: merge.scan_time.as_millis() as u64,
        rewrite_time_ms: merge.rewrite_time.as_millis() as u64,
    };
    let mut metadata = metadata;
    metadata.insert("operationMetrics".into(), serde_json::to_value(&metrics).unwrap_or(Value::Null));
    let props = commit_properties(txn, metadata);
    let on = format!("target.{key} = source.{key}");
    // No read predicate: the merge read every file that may hold a key, so a concurrent commit that
    // added or removed any file conflicts (the lake lock makes that rare; the retry re-reads).
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(on),
        matched_predicates: vec![MergePredicate {
            action_type: "update".into(),
            predicate: Some(format!("source.{order_by} > target.{order_by}")),
        }],
        not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
        not_matched_by_source_predicates: Vec::new(),
    };
    let commit = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    let mut out = table.clone();
    out.update_incremental(Some(commit.version())).await?;
    Ok((out, metrics))
}

/// How the keyed merge writes a table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode {
    /// The table records a change data feed.
    pub(super) change_feed: bool,
    /// Replaced rows are marked in deletion vectors instead of files being rewritten.
    pub(super) deletion_vectors: bool,
}

/// Writer table features the keyed merge keeps: it writes deletion vectors and the change data
/// feed itself; append-only tables, constraints and column invariants are refused from the
/// configuration and schema (delta-rs lists the legacy ones on every table-features protocol).
const WRITER_FEATURES: [&str; 6] =
    ["deletionVectors", "changeDataFeed", "appendOnly", "invariants", "checkConstraints", "timestampNtz"];

/// `stats` with `tightBounds` false: a file with deleted rows keeps the bounds of all its rows.
pub(super) fn loose_stats(stats: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, Value>>(stats) {
        Ok(mut m) => {
            m.insert("tightBounds".into(), Value::Bool(false));
            Value::Object(m).to_string()
        }
        Err(_) => stats.to_string(),
    }
}

/// Whether the keyed merge handles `table`, and how; None when it does not.
fn applies(table: &DeltaTable, schema: &Schema, key: &str, order_by: &str) -> Result<Option<Mode>, DeltaTableError> {
    let (Ok(k), Ok(o)) = (schema.index_of(key), schema.index_of(order_by)) else { return Ok(None) };
    if !int_key_and_order_types(schema, k, o) {
        return Ok(None);
    }
    writable(table, schema)
}

/// Whether this module's writers (and [`super::replace`]'s) keep everything `table` asks of a
/// writer, for rows of `schema`, and how they write it; None when they do not: constraints,
/// invariants, column mapping, append-only, partitions, other writer features, a schema that
/// differs, or vectors on a table that no longer writes them.
pub(super) fn writable(table: &DeltaTable, schema: &Schema) -> Result<Option<Mode>, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let config = snapshot.metadata().configuration();
    let constrained = config.iter().any(|(k, v)| {
        k.starts_with("delta.constraints.")
            || (k == "delta.appendOnly" && v == "true")
            || k == "delta.columnMapping.mode"
    });
    let change_feed = config.get("delta.enableChangeDataFeed").is_some_and(|v| v == "true");
    let deletion_vectors = config.get("delta.enableDeletionVectors").is_some_and(|v| v == "true");
    // A table-features protocol: only with features this writer keeps (a row-tracking or
    // column-mapping table, say, goes through MERGE, which knows them or refuses them).
    let protocol = snapshot.protocol();
    let writer_ok = protocol.min_writer_version() <= 4
        || protocol.writer_features().is_some_and(|fs| fs.iter().all(|f| WRITER_FEATURES.contains(&f.as_ref())));
    let invariants = snapshot.schema().fields().any(|f| f.metadata().contains_key("delta.invariants"));
    if constrained || invariants || !writer_ok || !snapshot.metadata().partition_columns().is_empty() {
        return Ok(None);
    }
    // Same columns in the same order (a table whose schema differs goes through MERGE's casts).
    let columns: Vec<String> = snapshot.schema().fields().map(|f| f.name().to_string()).collect();
    if columns.iter().map(String::as_str).ne(schema.fields().iter().map(|f| f.name().as_str())) {
        return Ok(None);
    }
    if !deletion_vectors && snapshot.log_data().iter().any(|f| f.deletion_vector_descriptor().is_some()) {
        return Ok(None);
    }
    Ok(Some(Mode { change_feed, deletion_vectors }))
}

/// Whether `batches` have a non-null `int64` key at column `k` and an order column at `o` that
/// converts to `int64` (integers, dates, timestamps): the shape the dedup and this merge handle
/// with an `i64` hash map.
pub(crate) fn int_key_and_order(schema: &Schema, batches: &[RecordBatch], k: usize, o: usize) -> bool {
    int_key_and_order_types(schema, k, o) && batches.iter().all(|b| b.column(k).null_count() == 0)
}

/// Whether `schema` has an `int64` key at column `k` and an order column at `o` that converts to
/// `int64`.
fn int_key_and_order_types(schema: &Schema, k: usize, o: usize) -> bool {
    let orderable = matches!(
        schema.field(o).data_type(),
        DataType::Int64 | DataType::Int32 | DataType::Date32 | DataType::Timestamp(_, _)
    );
    schema.field(k).data_type() == &DataType::Int64 && orderable
}

/// The source indexed by key, from one pass over its key and order columns (None if a key is
/// null or repeats: the caller deduplicates first, and MERGE handles null keys).
fn index(rows: &dyn Rows, key: &str, order_by: &str) -> Result<Option<Source>> {
    let schema = rows.schema();
    let (Ok(k), Ok(o)) = (schema.index_of(key), schema.index_of(order_by)) else { return Ok(None) };
    let total = usize::try_from(rows.count()).unwrap_or(usize::MAX);
    if u32::try_from(total).is_err() {
        return Ok(None);
    }
    let (mut keys, mut orders) = (Vec::with_capacity(total), Vec::with_capacity(total));
    // The projection keeps the order asked for: key first, then order (the same column twice if
    // the key orders itself).
    for b in rows.pass(Some(&[k, o]))? {
        let b = b?;
        if b.column(0).null_count() > 0 {
            return Ok(None);
        }
        keys.extend_from_slice(b.column(0).as_primitive::<Int64Type>().values());
        let ords = cast(b.column(1), &DataType::Int64).map_err(|e| Error::arrow("merge source order", e))?;
        push_orders(&mut orders, ords.as_primitive::<Int64Type>());
    }
    Ok(Source::new(keys, orders))
}

/// Appends the values of `ords` to `orders` (None where null).
fn push_orders(orders: &mut Vec<Option<i64>>, ords: &datafusion::arrow::array::Int64Array) {
    orders.extend((0..ords.len()).map(|r| ords.is_valid(r).then(|| ords.value(r))));
}

/// The rows of `written` files indexed by key, numbered across the files in order, from their key
/// and order columns, and each file's row count (None if a key is null or repeats: the caller
/// merges the rows another way).
async fn index_files(
    store: &Arc<dyn ObjectStore>,
    written: &[(Path, Add)],
    key: &str,
    order_by: &str,
) -> Result<Option<(Source, Vec<usize>)>, DeltaTableError> {
    let (mut keys, mut orders, mut counts) = (Vec::new(), Vec::new(), Vec::with_capacity(written.len()));
    for (path, add) in written {
        let (mut stream, (k, o)) = key_and_order(store, path, add.size, key, order_by).await?;
        let before = orders.len();
        while let Some(batch) = stream.try_next().await? {
            let column = batch.column(k).as_primitive::<Int64Type>();
            if column.null_count() > 0 {
                return Ok(None);
            }
            keys.extend_from_slice(column.values());
            push_orders(&mut orders, cast(batch.column(o), &DataType::Int64)?.as_primitive::<Int64Type>());
        }
        counts.push(orders.len() - before);
    }
    Ok(Source::new(keys, orders).map(|s| (s, counts)))
}

/// Whether a file whose statistics are `stats` may hold one of `sorted` keys (true without stats).
pub(super) fn may_hold(sorted: &[i64], stats: Option<&Value>, key: &str) -> bool {
    let bound = |stats: &Value, which: &str| stats.get(which).and_then(|v| v.get(key)).and_then(Value::as_i64);
    let Some(stats) = stats else { return true };
    let (Some(lo), Some(hi)) = (bound(stats, "minValues"), bound(stats, "maxValues")) else { return true };
    let at = sorted.partition_point(|&k| k < lo);
    at < sorted.len() && sorted[at] <= hi
}

/// A reader of one target file, `READ_BATCH_ROWS` rows per batch; with `page_index`, the page
/// index is loaded too, so a row selection reads only the pages holding its rows.
#[allow(deprecated)]
pub(super) async fn open(
    store: &Arc<dyn ObjectStore>,
    path: Path,
    size: i64,
    page_index: bool,
) -> Result<ParquetRecordBatchStreamBuilder<ParquetObjectReader>, DeltaTableError> {
    use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
    let reader = ParquetObjectReader::new(Arc::clone(store), path)
        .with_file_size(u64::try_from(size).unwrap_or(0))
        .with_footer_size_hint(super::FOOTER_HINT);
    let options = ArrowReaderOptions::new().with_page_index(page_index);
    Ok(ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?.with_batch_size(READ_BATCH_ROWS))
}

/// The target rows whose key is in `source`: per file that holds one (index into `files`), its
/// hits; each scanned file's deletion vector (rows it already deletes match nothing); and how many
/// files were scanned (those whose key statistics may hold a source key), several at once.
type Found = (Vec<(usize, Vec<Hit>)>, HashMap<usize, Arc<roaring::RoaringTreemap>>, usize);

async fn find_hits(
    store: &Arc<dyn ObjectStore>,
    files: &[deltalake::kernel::LogicalFileView],
    source: &Arc<Source>,
    key: &str,
    order_by: &str,
) -> Result<Found, DeltaTableError> {
    let threads = super::cores();
    // Each file's statistics, read once: for its key range here, its order bound in `scan`.
    let mut stats: Vec<Option<Value>> =
        files.iter().map(|f| f.stats().and_then(|s| serde_json::from_str(&s).ok())).collect();
    let candidates: Vec<usize> =
        (0..files.len()).filter(|&i| may_hold(&source.sorted, stats[i].as_ref(), key)).collect();
    let scanned = candidates.len();
    let descriptors: Vec<_> = candidates.iter().map(|&i| files[i].deletion_vector_descriptor()).collect();
    let vectors: Vec<Arc<roaring::RoaringTreemap>> =
        super::dv::read_many(store.as_ref(), &Path::from(""), &descriptors).await?.into_iter().map(Arc::new).collect();
    let jobs: Vec<_> = candidates
        .iter()
        .zip(&vectors)
        .map(|(&i, deleted)| (i, files[i].object_store_path(), files[i].size(), Arc::clone(deleted), stats[i].take()))
        .collect();
    let deleted: HashMap<usize, Arc<roaring::RoaringTreemap>> = candidates.into_iter().zip(vectors).collect();
    let hits = futures::stream::iter(jobs)
        .map(|(i, path, size, deleted, stats)| {
            let (store, source) = (Arc::clone(store), Arc::clone(source));
            let (key, order_by) = (key.to_string(), order_by.to_string());
            tokio::spawn(async move {
                let file = TargetFile { path, size, stats, deleted: &deleted };
                scan(store, file, &key, &order_by, &source).await.map(|h| (i, h))
            })
        })
        .buffer_unordered(threads)
        .map(|joined| joined.map_err(|e| DeltaTableError::Generic(format!("merge scan task: {e}")))?)
        .try_filter(|(_, h)| futures::future::ready(!h.is_empty()))
        .try_collect()
        .await?;
    Ok((hits, deleted, scanned))
}

/// For each row of `rows` (numbered across batches, unique per key), what the published table
/// holds for its key: None (no row), `Some(order)` (its order value; `Some(None)` when a row
/// lacks one, or several rows have the key and one lacks it; else the greatest). None when the
/// keyed merge does not apply (the caller joins in SQL instead).
pub(super) async fn published_orders(
    table: &DeltaTable,
    rows: &[RecordBatch],
    key: &str,
    order_by: &str,
) -> Result<Option<(Vec<Option<Option<i64>>>, KeyScan)>, DeltaTableError> {
    let Some(first) = rows.first() else { return Ok(None) };
    if applies(table, &first.schema(), key, order_by)?.is_none() {
        return Ok(None);
    }
    let rows = InMemory::new(first.schema(), rows.to_vec());
    let Ok(Some(source)) = index(&rows, key, order_by) else { return Ok(None) };
    let snapshot = table.snapshot()?;
    let files: Vec<_> = snapshot.log_data().iter().collect();
    let source = Arc::new(source);
    let found = find_hits(&table.object_store(), &files, &source, key, order_by).await?;
    let mut out: Vec<Option<Option<i64>>> = vec![None; source.orders.len()];
    for h in found.0.iter().flat_map(|(_, h)| h) {
        let o = &mut out[h.source as usize];
        *o = match (*o, h.order) {
            (None, t) => Some(t),
            (Some(None), _) | (_, None) => Some(None),
            (Some(Some(a)), Some(b)) => Some(Some(a.max(b))),
        };
    }
    Ok(Some((out, KeyScan::new(snapshot.version(), source, &files, found))))
}

/// A reader of the key and order columns of one file, and where they are in its batches (the same
/// column twice when the key orders itself).
#[allow(deprecated)]
async fn key_and_order(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: i64,
    key: &str,
    order_by: &str,
) -> Result<(ParquetRecordBatchStream<ParquetObjectReader>, (usize, usize)), DeltaTableError> {
    let (stream, (k, o), _) = key_and_maybe_order(store, path, size, key, order_by, |_| None).await?;
    Ok((stream, (k, o.unwrap_or(k))))
}

/// A reader of the key column of one file and, unless `bound` gives the greatest order value its
/// rows may have (from the order column's type), of its order column; where they are in its
/// batches, and that value.
#[allow(deprecated)]
async fn key_and_maybe_order(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: i64,
    key: &str,
    order_by: &str,
    bound: impl FnOnce(&DataType) -> Option<i64>,
) -> Result<(ParquetRecordBatchStream<ParquetObjectReader>, (usize, Option<usize>), Option<i64>), DeltaTableError> {
    let builder = open(store, path.clone(), size, false).await?;
    let fields = builder.schema().fields();
    let position = |name: &str| {
        fields
            .iter()
            .position(|f| f.name() == name)
            .ok_or_else(|| DeltaTableError::Generic(format!("{path}: no column `{name}`")))
    };
    let (k, o) = (position(key)?, position(order_by)?);
    if let Some(bound) = bound(fields[o].data_type()) {
        let mask = ProjectionMask::roots(builder.parquet_schema(), [k]);
        return Ok((builder.with_projection(mask).build()?, (0, None), Some(bound)));
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [k, o]);
    let columns = match k.cmp(&o) {
        std::cmp::Ordering::Less => (0, Some(1)),
        std::cmp::Ordering::Greater => (1, Some(0)),
        std::cmp::Ordering::Equal => (0, Some(0)),
    };
    Ok((builder.with_projection(mask).build()?, columns, None))
}

/// One target file to scan: where it is, its statistics and its deletion vector.
struct TargetFile<'a> {
    path: Path,
    size: i64,
    stats: Option<Value>,
    deleted: &'a roaring::RoaringTreemap,
}

/// The greatest order value a row of a file may have, by its statistics, in the unit its order
/// column casts to `int64` in; None unless the statistics say, every row has an order value, and
/// the type is an integer, a date or a timestamp of milli- or microseconds. Delta keeps
/// timestamps to the millisecond, so a microsecond timestamp's statistic may be up to 999 below
/// the value. Statistics of a file with deleted rows still bound its live rows.
fn greatest_order(stats: Option<&Value>, order_by: &str, ty: &DataType) -> Option<i64> {
    use datafusion::arrow::datatypes::TimeUnit;
    let stats = stats?;
    if stats.get("nullCount")?.get(order_by)?.as_i64()? != 0 {
        return None;
    }
    let max = stats.get("maxValues")?.get(order_by)?;
    let micros = || super::newest::micros(max.as_str()?);
    match ty {
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => max.as_i64(),
        DataType::Date32 => micros()?.checked_div(86_400_000_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => micros()?.checked_add(999),
        DataType::Timestamp(TimeUnit::Millisecond, _) => micros()?.checked_div(1_000),
        _ => None,
    }
}

/// The rows of one target file whose key is in the source (reads the key and order columns only).
///
/// When the file's statistics put every order value below the source's least (the common case of
/// ordering by `_ingested_at`: a new batch is newer than the table), only the key column is read:
/// each hit then carries the greatest value its row may have as its order. The merge only
/// compares a source's order with a hit's (`>`), and every source order exceeds that value, so
/// every decision is the one the exact values would give.
async fn scan(
    store: Arc<dyn ObjectStore>,
    file: TargetFile<'_>,
    key: &str,
    order_by: &str,
    source: &Source,
) -> Result<Vec<Hit>, DeltaTableError> {
    let below_source = |ty: &DataType| {
        let least = source.least_order?;
        greatest_order(file.stats.as_ref(), order_by, ty).filter(|greatest| *greatest < least)
    };
    let (mut stream, (k, o), bound) =
        key_and_maybe_order(&store, &file.path, file.size, key, order_by, below_source).await?;
    let mut hits = Vec::new();
    let mut row = 0u32;
    while let Some(batch) = stream.try_next().await? {
        let keys = batch.column(k).as_primitive::<Int64Type>();
        let orders = o.map(|o| cast(batch.column(o), &DataType::Int64)).transpose()?;
        let orders = orders.as_ref().map(|o| o.as_primitive::<Int64Type>());
        for r in 0..batch.num_rows() {
            if keys.is_valid(r)
                && let Some(s) = source.row_of(keys.value(r))
                && !file.deleted.contains(u64::from(row) + r as u64)
            {
                let order = match orders {
                    Some(orders) => orders.is_valid(r).then(|| orders.value(r)),
                    None => bound,
                };
                hits.push(Hit { row: row + r as u32, source: s, order });
            }
        }
        row += batch.num_rows() as u32;
    }
    Ok(hits)
}

/// `file`'s remove, and its add as the log has it committed again with `vector` (its statistics
/// no longer tight): how a merge-on-read write marks rows.
pub(super) fn marked(file: &deltalake::kernel::LogicalFileView, vector: DeletionVectorDescriptor) -> [Action; 2] {
    #[allow(deprecated)]
    let mut add = file.add_action();
    add.data_change = true;
    add.deletion_vector = Some(vector);
    add.stats = add.stats.map(|s| loose_stats(&s));
    [Action::Remove(file.remove_action(true)), Action::Add(add)]
}

/// [`rewrite`] of each of `rewrites` (an index into `files`, its rows to drop, sorted), several
/// files at once: per file, its index, Add actions, dropped rows (when `keep_dropped`) and rows
/// copied.
pub(super) async fn rewrite_each(
    table: &DeltaTable,
    files: &[deltalake::kernel::LogicalFileView],
    rewrites: Vec<(usize, Vec<u32>)>,
    keep_dropped: bool,
) -> Result<Vec<(usize, Vec<Action>, Vec<RecordBatch>, usize)>, DeltaTableError> {
    let shared = Arc::new(table.clone());
    futures::stream::iter(rewrites)
        .map(|(i, drop)| {
            let (table, path, size) = (Arc::clone(&shared), files[i].object_store_path(), files[i].size());
            tokio::spawn(async move {
                rewrite(&table, path, size, &drop, keep_dropped).await.map(|(adds, pre, kept)| (i, adds, pre, kept))
            })
        })
        .buffer_unordered(super::cores())
        .map(|joined| joined.map_err(|e| DeltaTableError::Generic(format!("rewrite task: {e}")))?)
        .try_collect()
        .await
}

/// Rewrites one file without the rows numbered `drop` (sorted): its Add actions, the dropped rows
/// (when `keep_dropped`, for the change data feed) and the number of rows copied.
pub(super) async fn rewrite(
    table: &DeltaTable,
    path: Path,
    size: i64,
    drop: &[u32],
    keep_dropped: bool,
) -> Result<(Vec<Action>, Vec<RecordBatch>, usize), DeltaTableError> {
    rewrite_together(table, vec![(path, size, drop.to_vec())], keep_dropped).await
}

/// Rewrites `files` (path, size, rows to drop, sorted) into one new file, in order, each without
/// its dropped rows: its Add actions, the dropped rows (when `keep_dropped`) and the rows copied.
pub(super) async fn rewrite_together(
    table: &DeltaTable,
    files: Vec<(Path, i64, Vec<u32>)>,
    keep_dropped: bool,
) -> Result<(Vec<Action>, Vec<RecordBatch>, usize), DeltaTableError> {
    let store = table.object_store();
    let mut writer = RecordBatchWriter::for_table(table)?.with_writer_properties(writer_properties());
    let schema: SchemaRef = Arc::new(table.snapshot()?.schema().as_ref().try_into_arrow()?);
    let (mut dropped, mut copied) = (Vec::new(), 0usize);
    for (path, size, drop) in files {
        let mut stream = open(&store, path.clone(), size, false).await?.build()?;
        let (mut start, mut next) = (0u32, 0usize);
        while let Some(batch) = stream.try_next().await? {
            let batch = conform(batch, &schema)?;
            let end = start + batch.num_rows() as u32;
            let mut keep = vec![true; batch.num_rows()];
            while next < drop.len() && drop[next] < end {
                keep[(drop[next] - start) as usize] = false;
                next += 1;
            }
            let mask = BooleanArray::from(keep);
            let kept = filter_record_batch(&batch, &mask)?;
            copied += kept.num_rows();
            if keep_dropped {
                dropped.push(filter_record_batch(&batch, &datafusion::arrow::compute::not(&mask)?)?);
            }
            if kept.num_rows() > 0 {
                writer.write(kept).await?;
            }
            start = end;
        }
        if next != drop.len() {
            return Err(DeltaTableError::Generic(format!(
                "{path} changed while it was rewritten ({} of {} rows to drop found)",
                next,
                drop.len()
            )));
        }
    }
    let adds = writer.flush().await?.into_iter().map(Action::Add).collect();
    Ok((adds, dropped, copied))
}

/// The rows numbered `rows` (sorted) of one file, all columns, in `schema`: the pages holding
/// them are read, not the file.
async fn read_rows(
    store: &Arc<dyn ObjectStore>,
    path: Path,
    size: i64,
    rows: &[u32],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, DeltaTableError> {
    use datafusion::parquet::arrow::arrow_reader::RowSelection;
    let builder = open(store, path, size, true).await?;
    let total = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for &r in rows {
        let r = r as usize;
        match ranges.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => ranges.push(r..r + 1),
        }
    }
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
    let stream = builder.with_row_selection(selection).build()?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let got: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if got != rows.len() {
        return Err(DeltaTableError::Generic(format!("merge: {got} of {} replaced rows read back", rows.len())));
    }
    batches.into_iter().map(|b| conform(b, schema)).collect()
}

/// `batch` (as read from one of the table's files) in the table's schema: a file written by
/// another writer may hold strings as `Utf8View` (delta-rs's optimize does) and a file older than
/// an added column lacks it (read as null, as readers do).
pub(super) fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DeltaTableError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => cast(c, f.data_type()),
            None => Ok(datafusion::arrow::array::new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Writes change data feed rows of this merge (each with its change type) to one
/// `_change_data/` file; None when there are none.
async fn write_changes(
    store: &Arc<dyn ObjectStore>,
    schema: &SchemaRef,
    changes: Vec<(&str, RecordBatch)>,
    properties: WriterProperties,
) -> Result<Option<AddCDCFile>, DeltaTableError> {
    if changes.iter().all(|(_, b)| b.num_rows() == 0) {
        return Ok(None);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, true));
    let with_type: SchemaRef = Arc::new(Schema::new(fields));
    let name = format!("_change_data/cdc-00000-{}.snappy.parquet", uuid::Uuid::new_v4());
    let object = object_store::buffered::BufWriter::new(Arc::clone(store), Path::from(name.as_str()));
    let mut writer = AsyncArrowWriter::try_new(object, Arc::clone(&with_type), Some(properties))?;
    for (kind, b) in changes.into_iter().filter(|(_, b)| b.num_rows() > 0) {
        let mut columns: Vec<ArrayRef> = b.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![kind; b.num_rows()])));
        writer.write(&RecordBatch::try_new(Arc::clone(&with_type), columns)?).await?;
    }
    writer.close().await?;
    let size = store.head(&Path::from(name.as_str())).await?.size as i64;
    Ok(Some(AddCDCFile { path: name, size, partition_values: HashMap::new(), data_change: false, tags: None }))
}

pub(super) fn writer_properties() -> WriterProperties {
    super::parquet_properties().build()
}

/// [`writer_properties`] for files of a table keyed by `key`: the key column is not
/// dictionary-encoded (its values are unique, so a dictionary only costs an interning per row).
fn keyed_writer_properties(key: &str) -> WriterPropertiesBuilder {
    let column = datafusion::parquet::schema::types::ColumnPath::from(key);
    super::parquet_properties().set_column_dictionary_enabled(column, false)
}

#[cfg(test)]
mod tests {
    use super::{DataType, KeyBits, Lookup, Source, greatest_order};

    #[test]
    fn key_bits_rank_exactly_their_keys_and_are_not_built_for_sparse_or_huge_ranges() {
        let keys = [-70i64, -64, -1, 0, 1, 63, 64, 127, 200];
        let bits = KeyBits::new(&keys).expect("a dense range has bits");
        for k in -200..400 {
            assert_eq!(bits.rank(k), keys.iter().position(|&x| x == k), "key {k}");
        }
        assert!(bits.rank(i64::MIN).is_none() && bits.rank(i64::MAX).is_none());
        // More than MAX_BITS_A_KEY bits a key, or a range beyond the memory cap: no bits (the map
        // alone); a batch's keys spread over a large table still get bits.
        assert!(KeyBits::new(&[0, 10_000]).is_none());
        assert!(KeyBits::new(&[0, 1_000, 2_000]).is_some());
        assert!(KeyBits::new(&[i64::MIN, i64::MAX]).is_none());
        assert!(KeyBits::new(&[]).is_none());
        assert!(
            KeyBits::new(&[i64::MAX]).is_some_and(|b| b.rank(i64::MAX) == Some(0) && b.rank(i64::MAX - 1).is_none())
        );
    }

    #[test]
    fn a_file_s_greatest_order_comes_from_its_statistics_rounded_up_to_what_they_drop() {
        use datafusion::arrow::datatypes::TimeUnit;
        let stats: serde_json::Value = serde_json::from_str(
            r#"{"numRecords": 3, "nullCount": {"seq": 0, "at": 0, "day": 0, "gap": 1},
            "maxValues": {"seq": 41, "at": "2024-03-04T01:38:59.629Z", "day": "2024-03-04", "gap": 7}}"#,
        )
        .expect("json");
        let at = chrono::DateTime::parse_from_rfc3339("2024-03-04T01:38:59.629Z").expect("time").timestamp_micros();
        let greatest = |col: &str, ty: DataType| greatest_order(Some(&stats), col, &ty);
        assert_eq!(greatest("seq", DataType::Int64), Some(41));
        // Delta keeps a millisecond: the microseconds it dropped may be up to 999.
        assert_eq!(greatest("at", DataType::Timestamp(TimeUnit::Microsecond, None)), Some(at + 999));
        assert_eq!(greatest("at", DataType::Timestamp(TimeUnit::Millisecond, None)), Some(at / 1_000));
        assert_eq!(greatest("day", DataType::Date32), Some(19_786));
        // A null order, a type it cannot bound, a column without statistics, no statistics: none.
        assert_eq!(greatest("gap", DataType::Int64), None);
        assert_eq!(greatest("at", DataType::Timestamp(TimeUnit::Nanosecond, None)), None);
        assert_eq!(greatest("nope", DataType::Int64), None);
        assert_eq!(greatest_order(None, "seq", &DataType::Int64), None);
    }

    #[test]
    fn a_source_finds_each_key_s_row_by_bits_or_map_and_refuses_repeated_keys() {
        // Dense keys (bits) and sparse ones (the map), out of order: row i has key keys[i].
        for keys in [vec![7i64, -3, 12, 0, 5, 9, 1], vec![7_000_000i64, -3, 12, 1 << 40, 5]] {
            let source = Source::new(keys.clone(), vec![None; keys.len()]).expect("unique keys");
            let dense = matches!(source.lookup, Lookup::Bits(_));
            assert_eq!(dense, keys.len() == 7, "bits only for the dense keys");
            for (row, &k) in keys.iter().enumerate() {
                assert_eq!(source.row_of(k), Some(row as u32), "key {k}");
                assert_eq!(source.row_of(k + 1).is_some(), keys.contains(&(k + 1)), "key {}", k + 1);
            }
            assert!(source.sorted.is_sorted());
            assert!(source.same_keys(&Source::new(keys.clone(), vec![None; keys.len()]).expect("unique")));
            let mut swapped = keys.clone();
            swapped.swap(0, 1);
            assert!(!source.same_keys(&Source::new(swapped, vec![None; keys.len()]).expect("unique")));
        }
        assert!(Source::new(vec![1, 2, 1], vec![None; 3]).is_none());
    }
}
