//! Provenance text kept once per batch while valid rows wait on scratch files.
//!
//! Every record of a bronze batch carries the same `_batch_id` and `_source`: as text, 36 and 6
//! bytes a row and an offset each, about two fifths of a spilled row of the orders contract. A
//! large promotion's rows are written to scratch files, read back and gathered before they are
//! deduplicated, so they go there with these two columns as a dictionary (a 4-byte key a row,
//! each distinct value once), and come back as text once deduplicated.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};

use crate::bronze::{BATCH_ID, SOURCE};
use crate::error::{Error, Result};
use crate::storage::delta::cast_to;

/// The provenance columns kept as a dictionary.
const ENCODED: [&str; 2] = [BATCH_ID, SOURCE];

/// The dictionary type they take.
fn dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `schema` (a contract's) as its rows are spilled: its text provenance columns as dictionaries.
pub(crate) fn spilled_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match encoded(f) {
            true => f.as_ref().clone().with_data_type(dictionary()),
            false => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn encoded(field: &Field) -> bool {
    ENCODED.contains(&field.name().as_str()) && field.data_type() == &DataType::Utf8
}

/// Encodes the provenance columns of one batch's rows, part after part. Its dictionaries only
/// grow, so each part's is the one before or that one extended: what one Arrow IPC file can hold
/// (as a delta), and one comparison of a value a row when it repeats.
#[derive(Default)]
pub(crate) struct Encoder {
    /// Per encoded column of the schema (by index): its values so far, and them as an array.
    columns: HashMap<usize, Values>,
}

#[derive(Default)]
struct Values {
    index: HashMap<String, i32>,
    texts: Vec<String>,
    array: Option<ArrayRef>,
}

impl Values {
    fn key(&mut self, text: &str) -> Result<i32> {
        if let Some(&k) = self.index.get(text) {
            return Ok(k);
        }
        let k = i32::try_from(self.texts.len())
            .map_err(|_| Error::Internal("more than 2^31 distinct provenance values in one batch".into()))?;
        self.index.insert(text.to_string(), k);
        self.texts.push(text.to_string());
        self.array = None;
        Ok(k)
    }

    fn array(&mut self) -> ArrayRef {
        let texts = &self.texts;
        Arc::clone(self.array.get_or_insert_with(|| Arc::new(StringArray::from_iter_values(texts))))
    }
}

impl Encoder {
    /// `batch` (of a contract's schema) in `spilled` (its [`spilled_schema`]).
    pub(crate) fn encode(&mut self, batch: &RecordBatch, spilled: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = batch.columns().to_vec();
        for (i, field) in batch.schema().fields().iter().enumerate() {
            if encoded(field) {
                columns[i] = self.encode_column(i, batch.column(i).as_string::<i32>())?;
            }
        }
        RecordBatch::try_new(Arc::clone(spilled), columns).map_err(|e| Error::arrow("encoding provenance", e))
    }

    fn encode_column(&mut self, i: usize, text: &StringArray) -> Result<ArrayRef> {
        let values = self.columns.entry(i).or_default();
        let mut keys = Vec::with_capacity(text.len());
        // Runs of one value are the rule: compared with the last value, looked up when it changes.
        let mut last: Option<(&str, i32)> = None;
        for row in 0..text.len() {
            if text.is_null(row) {
                keys.push(0);
                continue;
            }
            let value = text.value(row);
            let key = match last {
                Some((v, k)) if v == value => k,
                _ => values.key(value)?,
            };
            last = Some((value, key));
            keys.push(key);
        }
        let keys = Int32Array::new(keys.into(), text.nulls().cloned());
        let array = DictionaryArray::<Int32Type>::try_new(keys, values.array())
            .map_err(|e| Error::arrow("encoding provenance", e))?;
        Ok(Arc::new(array))
    }
}

/// `batches` (of `schema`'s [`spilled_schema`], or of `schema` itself) in `schema`: their
/// provenance columns as text again.
pub(crate) fn decode_all(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches.iter().map(|b| cast_to(b, schema, "decoding provenance")).collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;
    use crate::silver::spill::{SpillWriter, read_all};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new(BATCH_ID, DataType::Utf8, true),
            Field::new(SOURCE, DataType::Utf8, true),
        ]))
    }

    fn rows(keys: &[i64], batch_ids: &[Option<&str>], source: &str) -> RecordBatch {
        let sources: Vec<&str> = keys.iter().map(|_| source).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(StringArray::from(batch_ids.to_vec())),
                Arc::new(StringArray::from(sources)),
            ],
        )
        .expect("rows")
    }

    #[test]
    fn provenance_spills_as_a_dictionary_and_reads_back_as_the_same_text() {
        let schema = schema();
        let spilled = spilled_schema(&schema);
        assert_eq!(spilled.field(0).data_type(), &DataType::Int64);
        assert_eq!(spilled.field(1).data_type(), &dictionary());
        assert_eq!(spilled.field(2).data_type(), &dictionary());
        // Chunks of one batch: one value, then a new one and a null (a dictionary that grows), then
        // the first again (a dictionary unchanged): one IPC file holds them all.
        let chunks = [
            rows(&[1, 2, 3], &[Some("b1"), Some("b1"), Some("b1")], "orders"),
            rows(&[4, 5, 6, 7], &[Some("b1"), Some("b2"), None, Some("b2")], "orders"),
            rows(&[8], &[Some("b1")], "shop"),
        ];
        let mut encoder = Encoder::default();
        let dir = tempfile::tempdir().expect("dir");
        let mut out = SpillWriter::create(dir.path(), "rows", &spilled).expect("create");
        for chunk in &chunks {
            let encoded = encoder.encode(chunk, &spilled).expect("encode");
            let dict = encoded.column(1).as_dictionary::<Int32Type>();
            assert!(dict.values().len() <= 2, "each value once: {dict:?}");
            out.write(&encoded).expect("write");
        }
        let (path, rows) = out.finish().expect("finish");
        assert_eq!(rows, 8);
        let back = decode_all(read_all(&path).expect("read"), &schema).expect("decode");
        assert_eq!(back, chunks.to_vec());
    }
}
