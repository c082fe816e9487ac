//! Deletion vectors (Delta protocol "Deletion Vector Format"): which rows of a data file are
//! deleted, as a portable 64-bit roaring bitmap in a `deletion_vector_<uuid>.bin` file beside the
//! table's data. A merge that replaces some rows of a file marks them here instead of rewriting
//! the file (merge-on-read), so its cost follows the rows it changes, not the files they sit in.
//!
//! File layout: a version byte (1), then per vector: its size (big-endian u32: magic + bitmap),
//! the magic number 1681511377 (little-endian), the serialized `RoaringTreemap`, and a big-endian
//! CRC-32 of magic + bitmap. The kernel delta-rs builds on writes them
//! (`StreamingDeletionVectorWriter`); reading back (to add rows to a file's vector, to read a
//! table's live rows, to purge) is here, each vector file in one request.

use buoyant_kernel::actions::deletion_vector_writer::{KernelDeletionVector, StreamingDeletionVectorWriter};
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use deltalake::{DeltaTableError, ObjectStore};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use roaring::RoaringTreemap;

/// The magic number before each serialized bitmap.
const MAGIC: u32 = 1681511377;

fn corrupt(what: &str) -> DeltaTableError {
    DeltaTableError::Generic(format!("deletion vector: {what}"))
}

/// The object path of a `u` (relative) vector's file: `<prefix>/deletion_vector_<uuid>.bin` under
/// the table root (`root`, the store's prefix for the table).
fn relative_file(root: &Path, path_or_inline: &str) -> Result<Path, DeltaTableError> {
    let split = path_or_inline.len().checked_sub(20).ok_or_else(|| corrupt("a path shorter than its uuid"))?;
    let (prefix, encoded) = path_or_inline.split_at(split);
    let bytes = z85::decode(encoded).map_err(|e| corrupt(&format!("uuid {encoded:?}: {e}")))?;
    let uuid = uuid::Uuid::from_slice(&bytes).map_err(|e| corrupt(&format!("uuid: {e}")))?;
    let name = format!("deletion_vector_{uuid}.bin");
    let mut parts: Vec<String> = root.parts().map(|p| p.as_ref().to_string()).collect();
    if !prefix.is_empty() {
        parts.push(prefix.to_string());
    }
    parts.push(name);
    Ok(Path::from_iter(parts))
}

/// Concurrent requests for vector files in [`read_many`].
const FILES_AT_ONCE: usize = 8;

/// The rows each of `descriptors` deletes, in order (empty for None), with one request per vector
/// file, not per vector: a merge writes the vectors of every data file it touched into one file,
/// so a table's vectors sit in few files, and a request per data file was a round trip each to an
/// object store (20 in sequence for the benchmark's merges).
pub(super) async fn read_many(
    store: &dyn ObjectStore,
    root: &Path,
    descriptors: &[Option<DeletionVectorDescriptor>],
) -> Result<Vec<RoaringTreemap>, DeltaTableError> {
    // Where each stored vector is: its file, and its framed bytes (size, body, checksum) there.
    let mut at: Vec<Option<(Path, std::ops::Range<u64>)>> = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        at.push(match d {
            Some(d) if d.storage_type == StorageType::UuidRelativePath => {
                let path = relative_file(root, &d.path_or_inline_dv)?;
                let start = u64::try_from(d.offset.unwrap_or(1)).map_err(|_| corrupt("negative offset"))?;
                let size = u64::try_from(d.size_in_bytes).map_err(|_| corrupt("negative size"))?;
                Some((path, start..start + 4 + size + 4))
            }
            _ => None,
        });
    }
    // Each file once, over the span its vectors cover.
    let mut spans: std::collections::BTreeMap<Path, std::ops::Range<u64>> = std::collections::BTreeMap::new();
    for (path, range) in at.iter().flatten() {
        let span = spans.entry(path.clone()).or_insert_with(|| range.clone());
        *span = span.start.min(range.start)..span.end.max(range.end);
    }
    let fetched: std::collections::HashMap<Path, (u64, bytes::Bytes)> = futures::stream::iter(spans)
        .map(|(path, span)| async move {
            let got = store.get_range(&path, span.clone()).await?;
            Ok::<_, DeltaTableError>((path, (span.start, got)))
        })
        .buffer_unordered(FILES_AT_ONCE)
        .try_collect()
        .await?;
    descriptors
        .iter()
        .zip(at)
        .map(|(d, at)| {
            let Some(d) = d else { return Ok(RoaringTreemap::new()) };
            let bytes = match (&d.storage_type, at) {
                (StorageType::Inline, _) => {
                    z85::decode(&d.path_or_inline_dv).map_err(|e| corrupt(&format!("inline: {e}")))?
                }
                (StorageType::UuidRelativePath, Some((path, range))) => {
                    let (start, got) = fetched.get(&path).ok_or_else(|| corrupt(&format!("{path}: not fetched")))?;
                    let framed = usize::try_from(range.start - start)
                        .ok()
                        .zip(usize::try_from(range.end - start).ok())
                        .and_then(|(from, to)| got.get(from..to))
                        .ok_or_else(|| corrupt(&format!("{path}: shorter than the log says")))?;
                    unframe(&path, framed)?.to_vec()
                }
                _ => return Err(corrupt("vectors at absolute paths are not read by medallion")),
            };
            bitmap(&bytes)
        })
        .collect()
}

/// The body of a stored vector's framed bytes (big-endian size, body, big-endian CRC-32 of the
/// body), checked.
fn unframe<'a>(path: &Path, framed: &'a [u8]) -> Result<&'a [u8], DeltaTableError> {
    let size = framed.len().checked_sub(8).ok_or_else(|| corrupt("short"))?;
    let stated = u32::from_be_bytes(framed[..4].try_into().map_err(|_| corrupt("short"))?);
    if usize::try_from(stated).ok() != Some(size) {
        return Err(corrupt(&format!("{path}: size {stated}, the log says {size}")));
    }
    let body = &framed[4..4 + size];
    let crc = u32::from_be_bytes(framed[4 + size..].try_into().map_err(|_| corrupt("short"))?);
    if crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body) != crc {
        return Err(corrupt(&format!("{path}: checksum mismatch")));
    }
    Ok(body)
}

/// A vector's bitmap from its body: the magic number, then the portable `RoaringTreemap`.
fn bitmap(bytes: &[u8]) -> Result<RoaringTreemap, DeltaTableError> {
    let magic = u32::from_le_bytes(bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("short"))?);
    if magic != MAGIC {
        return Err(corrupt(&format!("magic {magic}, not {MAGIC}")));
    }
    RoaringTreemap::deserialize_from(&bytes[4..]).map_err(|e| corrupt(&e.to_string()))
}

/// Writes `vectors` into one new file under the table root; their descriptors, in order.
pub(super) async fn write(
    store: &dyn ObjectStore,
    root: &Path,
    vectors: Vec<RoaringTreemap>,
) -> Result<Vec<DeletionVectorDescriptor>, DeltaTableError> {
    let uuid = uuid::Uuid::new_v4();
    let encoded = z85::encode(uuid.as_bytes());
    let mut buf = Vec::new();
    let mut written = Vec::with_capacity(vectors.len());
    {
        let mut writer = StreamingDeletionVectorWriter::new(&mut buf);
        for v in vectors {
            let mut dv = KernelDeletionVector::new();
            dv.add_deleted_row_indexes(v.iter());
            written.push(writer.write_deletion_vector(dv).map_err(|e| corrupt(&e.to_string()))?);
        }
        writer.finalize().map_err(|e| corrupt(&e.to_string()))?;
    }
    store.put(&relative_file(root, &encoded)?, buf.into()).await?;
    Ok(written
        .into_iter()
        .map(|w| DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(w.offset),
            size_in_bytes: w.size_in_bytes,
            cardinality: w.cardinality,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows one descriptor deletes (empty without one).
    async fn read(
        store: &dyn ObjectStore,
        root: &Path,
        descriptor: Option<&DeletionVectorDescriptor>,
    ) -> Result<RoaringTreemap, DeltaTableError> {
        Ok(read_many(store, root, &[descriptor.cloned()]).await?.pop().unwrap_or_default())
    }

    #[tokio::test]
    async fn vectors_written_are_read_back_and_checked() {
        let store = object_store::memory::InMemory::new();
        let root = Path::from("silver/orders");
        let a: RoaringTreemap = [0u64, 5, 7, 1 << 33].into_iter().collect();
        let b: RoaringTreemap = (100u64..200).collect();
        let ds = write(&store, &root, vec![a.clone(), b.clone()]).await.expect("write");
        assert_eq!((ds[0].cardinality, ds[1].cardinality), (4, 100));
        assert_eq!(ds[0].offset, Some(1), "after the version byte");
        assert_eq!(ds[0].path_or_inline_dv.len(), 20);
        assert_eq!(read(&store, &root, Some(&ds[0])).await.expect("read"), a);
        assert_eq!(read(&store, &root, Some(&ds[1])).await.expect("read"), b);
        assert!(read(&store, &root, None).await.expect("none").is_empty());
        // The file is where the protocol derives it from the descriptor, and a flipped byte is caught.
        let path = relative_file(&root, &ds[0].path_or_inline_dv).expect("path");
        assert!(path.as_ref().starts_with("silver/orders/deletion_vector_"), "{path}");
        let mut bytes = store.get(&path).await.expect("get").bytes().await.expect("bytes").to_vec();
        assert_eq!(bytes[0], 1, "version byte");
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        store.put(&path, bytes.into()).await.expect("put");
        let e = read(&store, &root, Some(&ds[1])).await.expect_err("corrupt");
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[tokio::test]
    async fn vectors_of_several_files_are_read_together_in_the_order_asked() {
        let store = object_store::memory::InMemory::new();
        let root = Path::from("t");
        let vector = |rows: std::ops::Range<u64>| rows.collect::<RoaringTreemap>();
        let first = write(&store, &root, vec![vector(0..3), vector(10..20), vector(7..8)]).await.expect("write");
        let second = write(&store, &root, vec![vector(40..41), vector(1..2)]).await.expect("write");
        // Out of file order, a vector twice, files interleaved, no vector, an inline one.
        let inline = DeletionVectorDescriptor {
            storage_type: StorageType::Inline,
            path_or_inline_dv: z85::encode(
                [MAGIC.to_le_bytes().to_vec(), {
                    let mut b = Vec::new();
                    vector(5..9).serialize_into(&mut b).expect("serialize");
                    b
                }]
                .concat(),
            ),
            offset: None,
            size_in_bytes: 0,
            cardinality: 4,
        };
        let asked = [
            Some(first[2].clone()),
            Some(second[1].clone()),
            None,
            Some(first[0].clone()),
            Some(inline),
            Some(first[2].clone()),
            Some(second[0].clone()),
        ];
        let got = read_many(&store, &root, &asked).await.expect("read");
        let expected =
            [vector(7..8), vector(1..2), vector(0..0), vector(0..3), vector(5..9), vector(7..8), vector(40..41)];
        assert_eq!(got, expected);
        for (d, e) in asked.iter().zip(&expected) {
            assert_eq!(&read(&store, &root, d.as_ref()).await.expect("one"), e);
        }
        // A vector past its file's end is an error, not a short read.
        let mut past = first[1].clone();
        past.offset = Some(past.offset.unwrap_or(1) + 1000);
        let e = read_many(&store, &root, &[Some(first[0].clone()), Some(past)]).await.expect_err("past the end");
        assert!(!e.to_string().is_empty());
    }
}
