//! Bronze: raw records landed as immutable gzip batches, never rejected, never rewritten.
//!
//! ```text
//! input file ──ingest──▶ bronze/<source>/<YYYY-MM-DD>/<batch_id>.ndjson.gz
//!                        (+ _batch_id, _ingested_at, _source on every record)
//! CSV file   ──ingest──▶ bronze/<source>/<YYYY-MM-DD>/<batch_id>.csv.gz
//!                        (its text; provenance and dialect in the gzip header)
//! ```
//!
//! [`ingest`] lands new input exactly once per content; [`batches`] lists the batches of a source
//! (including files written by other systems in the same layout); [`decode`] streams a batch back
//! as columns of raw tokens for silver ([`csv_batch`] for CSV text; `scan` reads the common flat
//! JSON record without serde_json).

pub mod batches;
pub(crate) mod content;
pub mod csv_batch;
pub mod decode;
pub mod drift;
pub mod gzip;
pub mod http;
pub mod ingest;
pub mod landing;
mod scan;

/// Provenance field: the batch a record arrived in.
pub const BATCH_ID: &str = "_batch_id";
/// Provenance field: when the batch was ingested (UTC).
pub const INGESTED_AT: &str = "_ingested_at";
/// Provenance field: the source's name.
pub const SOURCE: &str = "_source";
/// Provenance field of CSV records: the line of the landed file the record starts on (the header
/// and skipped lines counted), which the dead letter reports instead of the batch's line.
pub const LINE: &str = "_line";
/// Field under which ingest keeps a line that was not a JSON object, as text.
pub const CORRUPT_RECORD: &str = "_corrupt_record";

/// File name endings of bronze batches: gzip NDJSON, and gzip CSV text.
pub const BATCH_SUFFIXES: [&str; 2] = [".ndjson.gz", ".csv.gz"];

/// Object path of a bronze batch: `csv` for CSV text, else NDJSON.
pub fn batch_path(source: &str, date: &str, batch_id: &str, csv: bool) -> String {
    format!("bronze/{source}/{date}/{batch_id}{}", BATCH_SUFFIXES[usize::from(csv)])
}

/// Whether a bronze batch's object path is CSV text.
pub fn is_csv_batch(path: &str) -> bool {
    path.ends_with(BATCH_SUFFIXES[1])
}
