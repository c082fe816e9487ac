//! Listing a source's bronze batches, oldest first by `_ingested_at` (not by path: two batches of
//! one day would otherwise sort by their random ids).

use std::io::{BufRead, BufReader};

use flate2::read::MultiGzDecoder;

use crate::error::Result;
use crate::storage::Lake;

pub use crate::storage::BatchFile;

/// Every `*.ndjson.gz` and `*.csv.gz` under `bronze/<source>/`, sorted by path (ingest times not
/// read).
pub async fn list(lake: &Lake, source: &str) -> Result<Vec<BatchFile>> {
    let prefix = format!("bronze/{source}");
    let objects = lake.list(&prefix).await?;
    Ok(objects
        .into_iter()
        .filter_map(|meta| {
            let path = meta.location.to_string();
            let name = path.rsplit('/').next()?;
            let batch_id = super::BATCH_SUFFIXES.iter().find_map(|s| name.strip_suffix(s))?.to_string();
            Some(BatchFile { path, batch_id, size: meta.size, ingested_at: None })
        })
        .collect())
}

/// Reads each batch's `_ingested_at` (its first record's, or a CSV batch's gzip header's) and
/// sorts oldest first (unreadable ones last, by path).
pub async fn order_by_ingestion(lake: &Lake, mut files: Vec<BatchFile>) -> Result<Vec<BatchFile>> {
    for file in &mut files {
        // The first line is within the first 80 KiB unless a record is huge (then read it all);
        // a CSV batch's gzip header is at most 64 KiB.
        // The listing gave the size, so this is one ranged read.
        file.ingested_at = match lake.get_range(&file.path, 0..file.size.min(80 * 1024)).await? {
            Some(head) => match first_ingested_at(&head) {
                Some(t) => Some(t),
                None if (head.len() as u64) < file.size => {
                    lake.get(&file.path).await?.and_then(|b| first_ingested_at(&b))
                }
                None => None,
            },
            None => None,
        };
    }
    files.sort_by(|a, b| match (&a.ingested_at, &b.ingested_at) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.path.cmp(&b.path)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.path.cmp(&b.path),
    });
    Ok(files)
}

fn first_ingested_at(gz: &[u8]) -> Option<String> {
    if let Some(csv) = super::csv_batch::CsvBatch::from_gzip(gz) {
        return Some(csv.ingested_at);
    }
    let mut reader = BufReader::new(MultiGzDecoder::new(gz));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    #[derive(serde::Deserialize)]
    struct First {
        #[serde(rename = "_ingested_at")]
        ingested_at: String,
    }
    serde_json::from_str::<First>(&line).ok().map(|f| f.ingested_at)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_the_first_ingest_time_from_a_prefix_of_the_file() {
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("{{\"_ingested_at\": \"2024-03-0{}T00:00:00+00:00\", \"n\": {i}}}\n", 1 + i % 2));
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).expect("gz");
        let gz = e.finish().expect("gz");
        assert!(gz.len() > 4096);
        assert_eq!(first_ingested_at(&gz[..4096]).as_deref(), Some("2024-03-01T00:00:00+00:00"));
        assert_eq!(first_ingested_at(&gz[..20]), None, "too short for a whole line");
        assert_eq!(first_ingested_at(b"not gzip"), None);
    }
}
