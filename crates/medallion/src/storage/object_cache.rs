//! Objects that never change, read once per process on an object-store lake.
//!
//! Two kinds of object in a lake are never rewritten in place, and are read again and again:
//! - A Delta log's versioned files (`_delta_log/<20-digit version>.json`, its checkpoints and
//!   checksums): a commit is created with a conditional put, and a checkpoint written again for
//!   its version holds the same actions. Loading a table read its checkpoint three times (protocol
//!   and metadata, then the file actions, each pass its footer and metadata first: ~11 ranged
//!   GETs of one file) and its commits since twice, and a run loads some tables more than once.
//!   They are kept whole the first time they are read (the passes read most of a checkpoint
//!   anyway), or written.
//! - Data files named with a UUID (`part-…-<uuid>-c000.snappy.parquet`, change data, deletion
//!   vectors): a writer names each file it creates anew. Every scan reads a Parquet file's footer
//!   and metadata before its columns, and a run scans silver several times (the merge's key scan,
//!   gold builds, audits). A read that ends at the file's end and is at most [`MAX_SUFFIX`] long
//!   (the readers' footer hint: the whole of a small file) is kept, and later reads within it are
//!   answered from memory.
//!
//! On S3 each read is a request with its latency. [`ObjectCache`] wraps the store the lake and its
//! Delta tables are opened with.
//!
//! What stays exact:
//! - Everything else passes through: other objects (`_last_checkpoint`, exports, the ledger),
//!   listings, `HEAD`s (a table reopened from memory checks its commit's size and tag: see
//!   `delta::CommitMark`), reads with conditions or a version, and ranges outside what is kept.
//! - A table deleted and created anew writes the same log paths again. A log is listed before it
//!   is read, so a listing entry whose size or tag differs from the kept object's drops it; so do
//!   a put, copy, rename or delete of the path through this store, and a conditional put refused
//!   because another writer created the object.
//! - Memory is bounded: log objects over [`MAX_OBJECT`] are not kept, and past [`MAX_TOTAL`] the
//!   oldest go first.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use super::delta::FOOTER_HINT;

/// The largest log object kept: a checkpoint of ~100k files.
pub const MAX_OBJECT: u64 = 16 << 20;
/// The longest end of a data file kept: twice the readers' footer hint (`delta::FOOTER_HINT`).
pub const MAX_SUFFIX: u64 = 128 << 10;
/// The most bytes kept at once.
pub const MAX_TOTAL: usize = 64 << 20;
/// The most listed sizes remembered (what lets a first ranged read fetch the whole object).
const MAX_LISTED: usize = 100_000;

/// Whether `path` is one of a Delta log's versioned files: `<20 digits>.json`, `.crc`, or a
/// checkpoint (`.checkpoint.parquet`, its parts, a v2 checkpoint) directly under `_delta_log/`.
/// `_last_checkpoint` and staged commits (`_delta_log/_commits/`) change and are not.
pub fn is_immutable(path: &Path) -> bool {
    let Some(name) = path.filename() else { return false };
    let in_log =
        path.as_ref().strip_suffix(name).is_some_and(|dir| dir == "_delta_log/" || dir.ends_with("/_delta_log/"));
    let versioned =
        name.len() > 21 && name.as_bytes()[..20].iter().all(u8::is_ascii_digit) && name.as_bytes()[20] == b'.';
    in_log && versioned && [".json", ".crc", ".parquet"].iter().any(|ext| name.ends_with(ext))
}

/// Whether `path` is a data file named anew by the writer that created it: a Parquet file or a
/// deletion vector (`.bin`) whose name holds a UUID, outside any `_delta_log`.
pub fn is_unique_data(path: &Path) -> bool {
    let Some(name) = path.filename() else { return false };
    let uuid = |i: usize| {
        name.get(i..i + 36).is_some_and(|s| {
            s.bytes()
                .enumerate()
                .all(|(j, b)| if [8, 13, 18, 23].contains(&j) { b == b'-' } else { b.is_ascii_hexdigit() })
        })
    };
    (name.ends_with(".parquet") || name.ends_with(".bin"))
        && !path.as_ref().contains("_delta_log/")
        && (0..name.len().saturating_sub(35)).any(uuid)
}

/// A store whose objects that never change are kept in memory once read (see the module).
pub struct ObjectCache {
    inner: Arc<dyn ObjectStore>,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    objects: HashMap<Path, Object>,
    /// Kept paths, oldest first.
    order: VecDeque<Path>,
    bytes: usize,
    /// Sizes of immutable objects seen in listings and not kept yet.
    listed: HashMap<Path, u64>,
}

/// An object's bytes from `start` to its end (the whole of a log object).
#[derive(Clone)]
struct Object {
    bytes: Bytes,
    start: u64,
    meta: ObjectMeta,
    attributes: Attributes,
}

impl Object {
    /// The bytes of `range` of the object, when they are kept.
    fn slice(&self, range: &Range<u64>) -> Option<Bytes> {
        let (start, end) = (range.start.checked_sub(self.start)?, range.end.checked_sub(self.start)?);
        (start <= end && end <= self.bytes.len() as u64).then(|| self.bytes.slice(start as usize..end as usize))
    }
}

impl Kept {
    fn keep(&mut self, path: Path, object: Object) {
        if object.bytes.len() as u64 > MAX_OBJECT.max(MAX_SUFFIX) {
            return;
        }
        self.drop_path(&path);
        self.bytes += object.bytes.len();
        self.objects.insert(path.clone(), object);
        self.order.push_back(path);
        while self.bytes > MAX_TOTAL {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(gone) = self.objects.remove(&oldest) {
                self.bytes -= gone.bytes.len();
            }
        }
    }

    fn drop_path(&mut self, path: &Path) {
        if let Some(gone) = self.objects.remove(path) {
            self.bytes -= gone.bytes.len();
            self.order.retain(|kept| kept != path);
        }
        self.listed.remove(path);
    }

    /// A listing saw `meta`: an object kept under its path that differs is not that object.
    fn saw(&mut self, meta: &ObjectMeta) {
        if !is_immutable(&meta.location) {
            return;
        }
        match self.objects.get(&meta.location) {
            Some(kept) if same_object(&kept.meta, meta) => {}
            Some(_) => self.drop_path(&meta.location),
            None => {
                if self.listed.len() >= MAX_LISTED {
                    self.listed.clear();
                }
                self.listed.insert(meta.location.clone(), meta.size);
            }
        }
    }
}

/// Whether two descriptions are of the same object: same size, and same tag when both have one.
fn same_object(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.size == b.size && (a.e_tag.is_none() || b.e_tag.is_none() || a.e_tag == b.e_tag)
}

/// The bytes `range` asks of a kept object of `size` bytes; None when the range is not within it
/// (the store answers, with its own error).
fn resolve(range: Option<&GetRange>, size: u64) -> Option<Range<u64>> {
    match range {
        None => Some(0..size),
        Some(GetRange::Bounded(r)) if r.start < r.end && r.start < size => Some(r.start..r.end.min(size)),
        Some(GetRange::Offset(o)) if *o < size => Some(*o..size),
        Some(GetRange::Suffix(n)) if *n > 0 => Some(size.saturating_sub(*n)..size),
        Some(_) => None,
    }
}

/// `range` of `object` as the store would answer it; None when it is not kept.
fn answer(object: &Object, range: Option<&GetRange>) -> Option<GetResult> {
    let range = resolve(range, object.meta.size)?;
    let bytes = object.slice(&range)?;
    Some(GetResult {
        payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
        meta: object.meta.clone(),
        range,
        attributes: object.attributes.clone(),
    })
}

/// Whether `options` asks for the object's current bytes and nothing else.
fn plain_read(options: &GetOptions) -> bool {
    !options.head
        && options.version.is_none()
        && options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
}

impl ObjectCache {
    /// `inner`, with its objects that never change kept once read.
    pub fn new(inner: Arc<dyn ObjectStore>) -> ObjectCache {
        ObjectCache { inner, kept: Default::default() }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Every update leaves the maps consistent between statements: recover from a panic.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, path: &Path) {
        self.kept().drop_path(path);
    }

    /// The object at `path`: kept if it was, else read whole and kept when it may be. A range
    /// asked of an object whose size no listing told is left to the store, as is one too large to
    /// keep (returned as read when it was asked whole).
    async fn read(&self, path: &Path, options: &GetOptions) -> object_store::Result<Read> {
        let listed = {
            let kept = self.kept();
            if let Some(object) = kept.objects.get(path) {
                return Ok(Read::Kept(object.clone()));
            }
            kept.listed.get(path).copied()
        };
        if options.range.is_some() && listed.is_none_or(|size| size > MAX_OBJECT) {
            return Ok(Read::Store);
        }
        let read = self.inner.get_opts(path, GetOptions { range: None, ..options.clone() }).await?;
        if read.meta.size > MAX_OBJECT {
            return Ok(if options.range.is_none() { Read::Whole(read) } else { Read::Store });
        }
        let (meta, attributes) = (read.meta.clone(), read.attributes.clone());
        let object = Object { bytes: read.bytes().await?, start: 0, meta, attributes };
        self.kept().keep(path.clone(), object.clone());
        Ok(Read::Kept(object))
    }

    /// A read of a data file: answered from its kept end when that holds the range; else the
    /// store's answer, kept when it is the file's end and short enough. A read of a Parquet
    /// footer's last 8 bytes alone (delta-rs's readers, which give no hint: then the metadata,
    /// then the columns, three requests) is widened to the footer hint's length, which brings the
    /// metadata with it, or the whole of a small file.
    async fn read_data(&self, path: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let kept = self.kept().objects.get(path).cloned();
        if let Some(answer) = kept.and_then(|object| answer(&object, options.range.as_ref())) {
            return Ok(answer);
        }
        let hint = FOOTER_HINT as u64;
        let widened = match &options.range {
            Some(GetRange::Bounded(r)) if r.start < r.end && r.end - r.start <= 8 => {
                Some(GetRange::Bounded(r.end.saturating_sub(hint)..r.end))
            }
            Some(GetRange::Suffix(n)) if *n <= 8 => Some(GetRange::Suffix(hint)),
            _ => None,
        };
        let asked = options.range.clone();
        let read =
            self.inner.get_opts(path, GetOptions { range: widened.clone().or(asked.clone()), ..options }).await?;
        let at_end = read.range.end == read.meta.size && read.range.end - read.range.start <= MAX_SUFFIX;
        if !at_end && widened.is_none() {
            return Ok(read);
        }
        let (start, meta, attributes) = (read.range.start, read.meta.clone(), read.attributes.clone());
        let object = Object { bytes: read.bytes().await?, start, meta, attributes };
        if at_end {
            self.kept().keep(path.clone(), object.clone());
        }
        let asked = asked.unwrap_or(GetRange::Bounded(start..object.meta.size));
        answer(&object, Some(&asked)).ok_or_else(|| object_store::Error::Generic {
            store: "cache",
            source: format!("a read of {path} did not bring the {asked} asked").into(),
        })
    }
}

/// What [`ObjectCache::read`] found.
enum Read {
    Kept(Object),
    /// Read whole from the store, too large to keep.
    Whole(GetResult),
    /// Left to the store.
    Store,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl fmt::Display for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectCache({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for ObjectCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let immutable = is_immutable(location);
        let written = immutable.then(|| Bytes::from(payload.clone()));
        let result = self.inner.put_opts(location, payload, opts).await;
        match (&result, written) {
            (Ok(put), Some(bytes)) => {
                let meta = ObjectMeta {
                    location: location.clone(),
                    last_modified: chrono::Utc::now(),
                    size: bytes.len() as u64,
                    e_tag: put.e_tag.clone(),
                    version: put.version.clone(),
                };
                self.kept().keep(location.clone(), Object { bytes, start: 0, meta, attributes: Attributes::default() });
            }
            // Refused (another writer created it) or failed: whatever is there was not written here.
            _ => self.forget(location),
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if plain_read(&options) && is_immutable(location) {
            match self.read(location, &options).await? {
                Read::Kept(object) => {
                    if let Some(answer) = answer(&object, options.range.as_ref()) {
                        return Ok(answer);
                    }
                }
                Read::Whole(read) => return Ok(read),
                Read::Store => {}
            }
        } else if plain_read(&options) && is_unique_data(location) {
            return self.read_data(location, options).await;
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        if is_immutable(location) && !ranges.is_empty() {
            let ranged = GetOptions { range: ranges.first().cloned().map(GetRange::Bounded), ..Default::default() };
            if let Read::Kept(object) = self.read(location, &ranged).await?
                && let Some(parts) = ranges.iter().map(|r| object.slice(r)).collect()
            {
                return Ok(parts);
            }
        } else if is_unique_data(location) {
            // One range: a footer read (DataFusion's Parquet reader asks for it this way), kept
            // when it is the file's end.
            if let [range] = ranges
                && range.end.saturating_sub(range.start) <= MAX_SUFFIX
            {
                let options = GetOptions { range: Some(GetRange::Bounded(range.clone())), ..Default::default() };
                return Ok(vec![self.read_data(location, options).await?.bytes().await?]);
            }
            let kept = self.kept().objects.get(location).cloned();
            if let Some(parts) = kept.and_then(|object| ranges.iter().map(|r| object.slice(r)).collect()) {
                return Ok(parts);
            }
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let kept = Arc::clone(&self.kept);
        let forgotten = locations.inspect(move |path| {
            if let Ok(path) = path {
                kept.lock().unwrap_or_else(PoisonError::into_inner).drop_path(path);
            }
        });
        self.inner.delete_stream(forgotten.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        watch(Arc::clone(&self.kept), self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        watch(Arc::clone(&self.kept), self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        let mut kept = self.kept();
        listed.objects.iter().for_each(|meta| kept.saw(meta));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.forget(from);
        self.forget(to);
        self.inner.rename_opts(from, to, options).await
    }
}

/// `listing`, telling `kept` what it sees.
fn watch(
    kept: Arc<Mutex<Kept>>,
    listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    listing
        .inspect(move |meta| {
            if let Ok(meta) = meta {
                kept.lock().unwrap_or_else(PoisonError::into_inner).saw(meta);
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    const COMMIT: &str = "t/_delta_log/00000000000000000003.json";
    const CHECKPOINT: &str = "t/_delta_log/00000000000000000002.checkpoint.parquet";

    async fn put(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) {
        store.put(&Path::from(path), bytes.into()).await.expect("put");
    }

    async fn get(store: &dyn ObjectStore, path: &str, range: Option<GetRange>) -> Vec<u8> {
        let options = GetOptions { range, ..Default::default() };
        store.get_opts(&Path::from(path), options).await.expect(path).bytes().await.expect(path).to_vec()
    }

    async fn list(store: &dyn ObjectStore, prefix: &str) {
        store.list(Some(&Path::from(prefix))).try_collect::<Vec<_>>().await.expect("list");
    }

    fn lake() -> (Arc<dyn ObjectStore>, ObjectCache) {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        (Arc::clone(&inner), ObjectCache::new(inner))
    }

    #[test]
    fn only_a_logs_versioned_files_are_immutable() {
        for path in [
            COMMIT,
            CHECKPOINT,
            "_delta_log/00000000000000000000.json",
            "a/b/_delta_log/00000000000000000010.crc",
            "t/_delta_log/00000000000000000010.checkpoint.0000000001.0000000002.parquet",
            "t/_delta_log/00000000000000000010.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json",
        ] {
            assert!(is_immutable(&Path::from(path)), "{path}");
        }
        for path in [
            "t/_delta_log/_last_checkpoint",
            "t/_delta_log/_commits/00000000000000000004.3a0d65cd-4056-49b8-937b-95f9e3ee90e5.json",
            "t/part-00000-1c72bdc7.snappy.parquet",
            "t/my_delta_log/00000000000000000003.json",
            "t/_delta_log/0000000000000000003.json",
            "t/_delta_log/00000000000000000003.json.tmp",
            "_medallion/runs/00000000000000000003.json",
        ] {
            assert!(!is_immutable(&Path::from(path)), "{path}");
        }
    }

    const DATA: &str = "t/part-00000-1c72bdc7-6a08-4253-9516-054e5beef249-c000.snappy.parquet";

    #[test]
    fn data_files_named_with_a_uuid_are_unique() {
        for path in [
            DATA,
            "t/_change_data/cdc-00000-1c72bdc7-6a08-4253-9516-054e5beef249.snappy.parquet",
            "t/deletion_vector_1c72bdc7-6a08-4253-9516-054e5beef249.bin",
            "t/order_date=2024-01-01/part-00001-1C72BDC7-6A08-4253-9516-054E5BEEF249.c000.zstd.parquet",
        ] {
            assert!(is_unique_data(&Path::from(path)), "{path}");
        }
        for path in [
            "exports/daily_revenue.parquet",
            "t/part-00000-1c72bdc7-6a08-4253-9516-054e5beef24.snappy.parquet",
            "t/part-00000-1c72bdc7x6a08-4253-9516-054e5beef249-c000.snappy.parquet",
            "t/_delta_log/00000000000000000002.checkpoint.1c72bdc7-6a08-4253-9516-054e5beef249.parquet",
            "t/1c72bdc7-6a08-4253-9516-054e5beef249.json",
        ] {
            assert!(!is_unique_data(&Path::from(path)), "{path}");
        }
    }

    #[tokio::test]
    async fn a_data_files_end_once_read_answers_the_reads_within_it() {
        let (inner, cache) = lake();
        let file: Vec<u8> = (0..200u8).collect();
        put(&*inner, DATA, file.clone()).await;
        // A read short of the end is not kept.
        assert_eq!(get(&cache, DATA, Some(GetRange::Bounded(0..10))).await, &file[..10]);
        // The footer hint's read: kept, and what falls within it is answered from it.
        assert_eq!(get(&cache, DATA, Some(GetRange::Bounded(120..200))).await, &file[120..]);
        put(&*inner, DATA, vec![9; 200]).await;
        assert_eq!(get(&cache, DATA, Some(GetRange::Suffix(8))).await, &file[192..]);
        assert_eq!(get(&cache, DATA, Some(GetRange::Bounded(150..160))).await, &file[150..160]);
        let parts = cache.get_ranges(&Path::from(DATA), &[130..140, 190..200]).await.expect("ranges");
        assert_eq!(parts, vec![Bytes::from(file[130..140].to_vec()), Bytes::from(file[190..].to_vec())]);
        // A footer read asked as the one range of a `get_ranges` is kept too.
        let other = "t/part-00002-1c72bdc7-6a08-4253-9516-054e5beef249-c000.snappy.parquet";
        put(&*inner, other, file.clone()).await;
        assert_eq!(
            cache.get_ranges(&Path::from(other), std::slice::from_ref(&(100..200))).await.expect("ranges"),
            vec![Bytes::from(file[100..].to_vec())]
        );
        put(&*inner, other, vec![9; 200]).await;
        assert_eq!(get(&cache, other, Some(GetRange::Bounded(150..160))).await, &file[150..160]);
        // Before what is kept: the store's (here changed, to tell them apart).
        assert_eq!(get(&cache, DATA, Some(GetRange::Bounded(100..130))).await, vec![9; 30]);
        assert_eq!(cache.get_ranges(&Path::from(DATA), &[110..125, 190..200]).await.expect("ranges")[0], vec![9; 15]);
        assert_eq!(get(&cache, DATA, None).await, vec![9; 200]);

        // delta-rs's readers ask for the footer's last 8 bytes first: the read brings the hint's
        // length (here the whole file), kept; a read of a few bytes inside a file is answered
        // and not kept.
        let third = "t/part-00003-1c72bdc7-6a08-4253-9516-054e5beef249-c000.snappy.parquet";
        put(&*inner, third, file.clone()).await;
        assert_eq!(get(&cache, third, Some(GetRange::Bounded(50..54))).await, &file[50..54]);
        put(&*inner, third, vec![8; 200]).await;
        assert_eq!(get(&cache, third, Some(GetRange::Bounded(50..54))).await, vec![8; 4], "a read inside is not kept");
        put(&*inner, third, file.clone()).await;
        assert_eq!(get(&cache, third, Some(GetRange::Bounded(192..200))).await, &file[192..]);
        put(&*inner, third, vec![8; 200]).await;
        assert_eq!(get(&cache, third, Some(GetRange::Bounded(0..192))).await, &file[..192]);
        assert!(
            cache
                .get_opts(&Path::from(third), GetOptions { range: Some(GetRange::Bounded(5..5)), ..Default::default() })
                .await
                .is_err()
        );

        // An end longer than a footer hint's is not kept.
        let large = "t/part-00001-1c72bdc7-6a08-4253-9516-054e5beef249-c000.snappy.parquet";
        put(&*inner, large, vec![1; MAX_SUFFIX as usize + 1]).await;
        assert_eq!(get(&cache, large, Some(GetRange::Offset(0))).await.len(), MAX_SUFFIX as usize + 1);
        put(&*inner, large, vec![2; MAX_SUFFIX as usize + 1]).await;
        assert_eq!(get(&cache, large, Some(GetRange::Suffix(4))).await, vec![2; 4]);
    }

    #[test]
    fn a_path_kept_again_and_again_is_kept_once() {
        let mut kept = Kept::default();
        let path = Path::from(COMMIT);
        let object = |n: usize| Object {
            bytes: Bytes::from(vec![0; n]),
            start: 0,
            meta: ObjectMeta {
                location: path.clone(),
                last_modified: chrono::Utc::now(),
                size: n as u64,
                e_tag: None,
                version: None,
            },
            attributes: Attributes::default(),
        };
        for n in 1..100 {
            kept.keep(path.clone(), object(n));
            kept.keep(path.clone(), object(n));
            kept.drop_path(&path);
            kept.keep(path.clone(), object(n));
        }
        assert_eq!((kept.objects.len(), kept.order.len(), kept.bytes), (1, 1, 99));
    }

    #[tokio::test]
    async fn a_logs_objects_are_read_once_and_ranges_answered_from_what_was_kept() {
        let (inner, cache) = lake();
        let checkpoint: Vec<u8> = (0..100).collect();
        put(&*inner, COMMIT, b"{\"commitInfo\":{}}".to_vec()).await;
        put(&*inner, CHECKPOINT, checkpoint.clone()).await;
        put(&*inner, "t/_delta_log/_last_checkpoint", b"{\"version\":2}".to_vec()).await;
        put(&*inner, "t/part-0.parquet", b"data".to_vec()).await;
        list(&cache, "t/_delta_log").await;

        assert_eq!(get(&cache, COMMIT, None).await, b"{\"commitInfo\":{}}");
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Suffix(8))).await, &checkpoint[92..]);
        assert_eq!(get(&cache, "t/_delta_log/_last_checkpoint", None).await, b"{\"version\":2}");
        assert_eq!(get(&cache, "t/part-0.parquet", None).await, b"data");

        // Written again behind the cache's back, same sizes: the log's objects are answered from
        // memory, everything else from the store.
        put(&*inner, COMMIT, b"{\"commitInfo\":[]}".to_vec()).await;
        put(&*inner, CHECKPOINT, vec![7; 100]).await;
        put(&*inner, "t/_delta_log/_last_checkpoint", b"{\"version\":3}".to_vec()).await;
        put(&*inner, "t/part-0.parquet", b"DATA".to_vec()).await;
        assert_eq!(get(&cache, COMMIT, None).await, b"{\"commitInfo\":{}}");
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Bounded(10..20))).await, &checkpoint[10..20]);
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Offset(95))).await, &checkpoint[95..]);
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Bounded(98..200))).await, &checkpoint[98..]);
        let parts = cache.get_ranges(&Path::from(CHECKPOINT), &[0..4, 50..52]).await.expect("ranges");
        assert_eq!(parts, vec![Bytes::from(checkpoint[0..4].to_vec()), Bytes::from(checkpoint[50..52].to_vec())]);
        assert_eq!(get(&cache, "t/_delta_log/_last_checkpoint", None).await, b"{\"version\":3}");
        assert_eq!(get(&cache, "t/part-0.parquet", None).await, b"DATA");
        // A HEAD is the store's answer (what a reopened table's commit mark checks).
        let head = cache.head(&Path::from(COMMIT)).await.expect("head");
        assert_eq!(head.e_tag, inner.head(&Path::from(COMMIT)).await.expect("head").e_tag);
        // A range outside the object is the store's error.
        let outside = GetOptions { range: Some(GetRange::Bounded(200..300)), ..Default::default() };
        assert!(cache.get_opts(&Path::from(CHECKPOINT), outside).await.is_err());

        // A listing shows other objects under those paths (a table created anew): they are read.
        list(&cache, "t").await;
        assert_eq!(get(&cache, COMMIT, None).await, b"{\"commitInfo\":[]}");
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Bounded(10..20))).await, vec![7; 10]);
    }

    #[tokio::test]
    async fn a_range_of_an_object_no_listing_sized_is_the_stores_and_large_objects_are_not_kept() {
        let (inner, cache) = lake();
        put(&*inner, CHECKPOINT, vec![1; 100]).await;
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Suffix(8))).await, vec![1; 8]);
        put(&*inner, CHECKPOINT, vec![2; 100]).await;
        assert_eq!(get(&cache, CHECKPOINT, Some(GetRange::Suffix(8))).await, vec![2; 8], "not kept unlisted");

        let large = MAX_OBJECT as usize + 1;
        put(&*inner, COMMIT, vec![3; large]).await;
        list(&cache, "t").await;
        assert_eq!(get(&cache, COMMIT, None).await.len(), large);
        put(&*inner, COMMIT, vec![4; large]).await;
        assert_eq!(get(&cache, COMMIT, Some(GetRange::Bounded(0..2))).await, vec![4; 2], "too large to keep");
    }

    #[tokio::test]
    async fn what_is_written_through_the_cache_is_kept_and_what_another_writer_made_is_read() {
        let (inner, cache) = lake();
        let create = PutOptions::from(PutMode::Create);
        cache.put_opts(&Path::from(COMMIT), b"mine".to_vec().into(), create.clone()).await.expect("create");
        put(&*inner, COMMIT, b"MINE".to_vec()).await;
        assert_eq!(get(&cache, COMMIT, None).await, b"mine", "kept as written");

        // Another writer's commit at the next version: the create is refused, and the winner's
        // commit is what reads see.
        let next = "t/_delta_log/00000000000000000004.json";
        put(&*inner, next, b"theirs".to_vec()).await;
        assert!(cache.put_opts(&Path::from(next), b"mine".to_vec().into(), create.clone()).await.is_err());
        assert_eq!(get(&cache, next, None).await, b"theirs");
        put(&*inner, COMMIT, b"MINE".to_vec()).await;
        assert!(cache.put_opts(&Path::from(COMMIT), b"ours".to_vec().into(), create).await.is_err());
        assert_eq!(get(&cache, COMMIT, None).await, b"MINE", "a refused create forgets the path");

        cache.delete(&Path::from(COMMIT)).await.expect("delete");
        let gone = cache.get(&Path::from(COMMIT)).await;
        assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "{gone:?}");
    }
}
