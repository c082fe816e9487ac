//! Deletion vectors (Delta protocol "Deletion Vector Format"): which rows of a data file are
//! deleted, as a portable 64-bit roaring bitmap in a `deletion_vector_<uuid>.bin` file beside the
//! table's data. A merge that replaces some rows of a file marks them here instead of rewriting
//! the file (merge-on-read), so its cost follows the rows it changes, not the files they sit in.
//!
//! File layout: a version byte (1), then per vector: its size (big-endian u32: magic + bitmap),
//! the magic number 1681511377 (little-endian), the serialized `RoaringTreemap`, and a big-endian
//! CRC-32 of magic + bitmap. The kernel delta-rs builds on writes them
//! (`StreamingDeletionVectorWriter`); reading back (to add rows to a file's vector) is here.

use buoyant_kernel::actions::deletion_vector_writer::{KernelDeletionVector, StreamingDeletionVectorWriter};
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use deltalake::{DeltaTableError, ObjectStore};
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

/// The rows a descriptor deletes (empty without one).
pub(super) async fn read(
    store: &dyn ObjectStore,
    root: &Path,
    descriptor: Option<&DeletionVectorDescriptor>,
) -> Result<RoaringTreemap, DeltaTableError> {
    let Some(d) = descriptor else { return Ok(RoaringTreemap::new()) };
    let bytes: Vec<u8> = match d.storage_type {
        StorageType::Inline => z85::decode(&d.path_or_inline_dv).map_err(|e| corrupt(&format!("inline: {e}")))?,
        StorageType::UuidRelativePath => {
            let path = relative_file(root, &d.path_or_inline_dv)?;
            let start = u64::try_from(d.offset.unwrap_or(1)).map_err(|_| corrupt("negative offset"))?;
            let size = u64::try_from(d.size_in_bytes).map_err(|_| corrupt("negative size"))?;
            let range = start..start + 4 + size + 4;
            let got = store.get_range(&path, range).await?;
            let stated = u32::from_be_bytes(got[..4].try_into().map_err(|_| corrupt("short"))?);
            if u64::from(stated) != size {
                return Err(corrupt(&format!("{path}: size {stated}, the log says {size}")));
            }
            let body = &got[4..4 + size as usize];
            let crc = u32::from_be_bytes(got[4 + size as usize..].try_into().map_err(|_| corrupt("short"))?);
            if crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body) != crc {
                return Err(corrupt(&format!("{path}: checksum mismatch")));
            }
            body.to_vec()
        }
        StorageType::AbsolutePath => {
            return Err(corrupt("vectors at absolute paths are not read by medallion"));
        }
    };
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
}
