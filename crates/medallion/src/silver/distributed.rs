//! Bronze → silver on a cluster: the bronze files of a promotion decoded and validated by the
//! executors, one task per file, each with the contract compiled again from its inputs
//! ([`ContractInputs`]; the plan carries the contract's text, the files' paths, never a
//! credential).
//!
//! A task returns its file's valid rows, then one report row: records read, the rejects with
//! every reason, the row-level expectations' counts, the fields the records carried. The driver
//! folds them into the same per-file results an in-process read gives (`FileResult`), so what
//! follows is the same code in both places: rejection-rate gates, dedup, audits, the dead letter,
//! the one merge commit with its ledger intent and app transaction, and the accounting
//! (`read = promoted + superseded + rejected`).
//!
//! A task that died runs again on another executor (Ballista's retry); only the output of the
//! attempt that succeeded reaches the driver, which commits nothing before it has every file's
//! report.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{and, filter_record_batch, is_null};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::contract::{Contract, ContractInputs};
use super::promote::{FileResult, origin_of, process};
use super::slices::{BatchSlices, Slicer};
use super::table::SilverTable;
use crate::bronze::batches::BatchFile;
use crate::bronze::csv_batch::CsvSource;
use crate::bronze::drift::Observed;
use crate::cluster::{Cluster, NodeCodec, Nodes, node_properties, one_child_node, single, ticket_numbers, tickets};
use crate::error::{Error, Result};
use crate::quality::quarantine::Rejected;
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

/// The column telling which file of the promotion a row is of (its index).
const FILE: &str = "_medallion_file";
/// The column holding a file's report (JSON), null in the rows of records.
const REPORT: &str = "_medallion_report";
/// This codec's kind byte.
const KIND: u8 = b'b';
/// Its nodes' bytes start with one of these.
const VALIDATE: u8 = b'v';
const DEDUP: u8 = b'd';
const WINNERS: u8 = b'w';
/// The column holding a written file's add action (JSON), in what [`WinnersExec`] returns.
const ADD: &str = "_medallion_add";

/// The plan nodes silver ships to a cluster: the scheduler and executors carry them.
pub fn cluster_nodes() -> Nodes {
    vec![Arc::new(BronzeCodec)]
}

/// The bronze files of a promotion, as shipped.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Shipped {
    /// The lake's store (`s3://bucket`, `file://`).
    store: String,
    /// Their source.
    source: String,
    /// How it reads CSV now.
    #[serde(default)]
    csv: CsvSource,
    contract: ContractInputs,
    files: Vec<ShippedFile>,
    /// Keep only the latest record per key, on the executors (a shuffle on the key first when
    /// there are several files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dedup: Option<Dedup>,
    /// Write the latest records as files of the silver table at this URL (where, never how to
    /// get in), on the executors: the driver then receives their add actions, not the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    write: Option<String>,
}

/// The latest record per key: greatest `order_by`, then the later file, then the later line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Dedup {
    keys: Vec<String>,
    order_by: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ShippedFile {
    /// Its path in the store.
    location: String,
    /// The batch (its path in the lake is what the dead letter records).
    batch: BatchFile,
}

/// What validating one file gave, besides its valid rows.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Report {
    read: u64,
    valid_rows: u64,
    rejected: Vec<Rejected>,
    gate_counts: Vec<(u64, u64)>,
    observed: Observed,
}

/// The bronze files of a promotion as a table of the driver's plan: the rows of records that
/// satisfy the contract (every column nullable), and one report row per file.
#[derive(Debug, Clone)]
pub struct BronzeFiles {
    shipped: Arc<Shipped>,
    contract: Arc<Contract>,
    /// The validated rows' ([`output_schema`]).
    rows: SchemaRef,
    /// What the table gives: the rows, or what writing them returns ([`winners_schema`]).
    schema: SchemaRef,
}

impl BronzeFiles {
    fn new(shipped: Shipped, contract: Arc<Contract>) -> BronzeFiles {
        let rows = output_schema(&contract.schema);
        let schema = if shipped.write.is_some() { winners_schema() } else { Arc::clone(&rows) };
        BronzeFiles { shipped: Arc::new(shipped), contract, rows, schema }
    }

    /// `batches` of `table`'s source in `lake`; with `dedup`, only the latest record per key of
    /// them comes back; with `write` (a silver table's URL) too, they are written there instead.
    fn of(
        lake: &Lake,
        table: &SilverTable,
        batches: &[BatchFile],
        dedup: bool,
        write: Option<String>,
    ) -> Result<BronzeFiles> {
        let mut store = None;
        let mut files = Vec::with_capacity(batches.len());
        for b in batches {
            let (s, location) = lake.locate(&b.path)?;
            store.get_or_insert(s);
            files.push(ShippedFile { location, batch: b.clone() });
        }
        let shipped = Shipped {
            store: store.unwrap_or_else(|| "file://".to_string()),
            source: table.source.clone(),
            csv: table.csv.clone(),
            contract: table.contract.inputs.as_ref().clone(),
            files,
            dedup: dedup.then(|| Dedup { keys: table.keys.clone(), order_by: table.order_by.clone() }),
            write: write.filter(|_| dedup),
        };
        Ok(BronzeFiles::new(shipped, Arc::clone(&table.contract)))
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        serde_json::to_vec(self.shipped.as_ref()).map_err(bad)
    }

    fn decode(body: &[u8]) -> DfResult<BronzeFiles> {
        let shipped: Shipped = serde_json::from_slice(body).map_err(bad)?;
        let contract = shipped.contract.compile().map_err(|errors| {
            let described: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.subject, e.message)).collect();
            bad(format!("the contract does not compile: {}", described.join("; ")))
        })?;
        Ok(BronzeFiles::new(shipped, Arc::new(contract)))
    }
}

fn bad(what: impl fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("medallion bronze scan: {what}"))
}

/// What [`WinnersExec`] returns: the report rows (file index, report), then one row per file it
/// wrote (its add action).
fn winners_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(FILE, DataType::UInt32, false),
        Field::new(REPORT, DataType::Utf8, true),
        Field::new(ADD, DataType::Utf8, true),
    ]))
}

/// The file index, the report, then the contract's columns, nullable (a report row has none).
fn output_schema(contract: &Schema) -> SchemaRef {
    let mut fields = vec![Field::new(FILE, DataType::UInt32, false), Field::new(REPORT, DataType::Utf8, true)];
    fields.extend(contract.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl TableProvider for BronzeFiles {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _: &dyn Session,
        projection: Option<&Vec<usize>>,
        _: &[Expr],
        _: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self.shipped.files.len().max(1);
        let mut scan: Arc<dyn ExecutionPlan> = Arc::new(ValidateExec::new(self.clone(), tickets(files)?));
        if let Some(dedup) = &self.shipped.dedup {
            // Every record of a key to one task: the dedup node requires its input partitioned by
            // the key, and the physical optimizer puts the hash repartition (Ballista's shuffle)
            // under it when there is more than one file.
            scan = Arc::new(DedupExec::new(scan, dedup.clone())?);
            if self.shipped.write.is_some() {
                scan = Arc::new(WinnersExec::new(self.clone(), scan));
            }
        }
        let every: Vec<usize> = (0..self.schema.fields().len()).collect();
        match projection.filter(|p| **p != every) {
            None => Ok(scan),
            Some(p) => {
                let columns = p.iter().map(|&i| {
                    let name = self.schema.field(i).name().clone();
                    (Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>, name)
                });
                Ok(Arc::new(ProjectionExec::try_new(columns, scan)?))
            }
        }
    }
}

/// Decodes and validates bronze files on an executor: partition `i` (ticket `i`) does file `i`.
#[derive(Debug)]
pub struct ValidateExec {
    files: BronzeFiles,
    tickets: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ValidateExec {
    fn new(files: BronzeFiles, tickets: Arc<dyn ExecutionPlan>) -> ValidateExec {
        let partitions = tickets.properties().output_partitioning().partition_count();
        let properties = node_properties(Arc::clone(&files.rows), partitions, EmissionType::Incremental);
        ValidateExec { files, tickets, properties }
    }
}

impl DisplayAs for ValidateExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "MedallionValidateExec: source={}, files={}",
            self.files.shipped.source,
            self.files.shipped.files.len()
        )
    }
}

impl ExecutionPlan for ValidateExec {
    one_child_node!("MedallionValidateExec", tickets);

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ValidateExec::new(self.files.clone(), single(&children, "MedallionValidateExec")?)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let tickets = self.tickets.execute(partition, Arc::clone(&context))?;
        let files = self.files.clone();
        let schema = Arc::clone(&files.rows);
        let batches = futures::stream::once(async move {
            let mut out = Vec::new();
            for i in ticket_numbers(tickets).await? {
                out.extend(validate_file(&files, i, &context).await?);
            }
            Ok::<_, DataFusionError>(futures::stream::iter(out.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// Keeps the latest record per key among the rows of its input's partition, which come from
/// several files; report rows pass through. It requires its input hash-partitioned on the key
/// (all the records of a key in one partition), so the physical optimizer, which removes and
/// re-inserts repartitions by what nodes require, keeps the shuffle under it.
#[derive(Debug)]
pub struct DedupExec {
    input: Arc<dyn ExecutionPlan>,
    dedup: Dedup,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    properties: Arc<PlanProperties>,
}

impl DedupExec {
    fn new(input: Arc<dyn ExecutionPlan>, dedup: Dedup) -> DfResult<DedupExec> {
        let partitions = input.properties().output_partitioning().partition_count();
        let properties = node_properties(input.schema(), partitions, EmissionType::Final);
        let keys = key_columns(&dedup.keys, &input.schema())?;
        Ok(DedupExec { input, dedup, keys, properties })
    }
}

/// The columns `keys` of `schema`, as physical expressions.
fn key_columns(keys: &[String], schema: &Schema) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
    keys.iter().map(|k| Ok(Arc::new(Column::new_with_schema(k, schema)?) as Arc<dyn PhysicalExpr>)).collect()
}

impl DisplayAs for DedupExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MedallionDedupExec: keys={:?}, order_by={}", self.dedup.keys, self.dedup.order_by)
    }
}

impl ExecutionPlan for DedupExec {
    one_child_node!("MedallionDedupExec", input);

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::KeyPartitioned(self.keys.clone())]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DedupExec::new(single(&children, "MedallionDedupExec")?, self.dedup.clone())?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        // The task holds its share of the records: accounted in the process's memory pool, so a
        // share larger than `--memory-limit` fails the task with "Resources exhausted" rather
        // than the executor being killed for memory.
        let held = MemoryConsumer::new(format!("MedallionDedupExec[{partition}]")).register(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        let (schema, dedup) = (self.input.schema(), self.dedup.clone());
        let out = Arc::clone(&schema);
        let batches = futures::stream::once(async move {
            let batches: Vec<RecordBatch> = input
                .and_then(|b| {
                    let grown = held.try_grow(b.get_array_memory_size());
                    async move { grown.map(|()| b) }
                })
                .try_collect()
                .await?;
            let kept = tokio::task::spawn_blocking(move || latest_of_files(&schema, batches, &dedup))
                .await
                .map_err(|e| bad(format!("dedup task failed: {e}")))?
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok::<_, DataFusionError>(futures::stream::iter(kept.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out, batches)))
    }
}

/// Writes the record rows of its input's partition (the latest per key: a [`DedupExec`]'s) as
/// Parquet files of the silver table, and returns the report rows and each file's add action: the
/// rows never travel to the driver, which commits the files (or deletes them).
#[derive(Debug)]
pub struct WinnersExec {
    files: BronzeFiles,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl WinnersExec {
    fn new(files: BronzeFiles, input: Arc<dyn ExecutionPlan>) -> WinnersExec {
        let partitions = input.properties().output_partitioning().partition_count();
        let properties = node_properties(winners_schema(), partitions, EmissionType::Final);
        WinnersExec { files, input, properties }
    }
}

impl DisplayAs for WinnersExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MedallionWinnersExec: {}", self.files.shipped.write.as_deref().unwrap_or_default())
    }
}

impl ExecutionPlan for WinnersExec {
    one_child_node!("MedallionWinnersExec", input);

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(WinnersExec::new(self.files.clone(), single(&children, "MedallionWinnersExec")?)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let external = |e: Error| DataFusionError::External(Box::new(e));
        let mut input = self.input.execute(partition, context)?;
        let url = self.files.shipped.write.clone().ok_or_else(|| bad("a winners node without a table"))?;
        let contract = Arc::clone(&self.files.contract.schema);
        let batches = futures::stream::once(async move {
            let context = "writing the latest records";
            let url = url::Url::parse(&url).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let mut writer = crate::storage::delta::FileWriter::new(&url, Arc::clone(&contract)).map_err(external)?;
            let mut out = Vec::new();
            while let Some(batch) = input.try_next().await? {
                let (_, report) = columns_of(&batch, context).map_err(external)?;
                let reports = datafusion::arrow::compute::is_not_null(report)?;
                if reports.true_count() > 0 {
                    let r = filter_record_batch(&batch, &reports)?;
                    let adds = new_null_array(&DataType::Utf8, r.num_rows());
                    out.push(RecordBatch::try_new(
                        winners_schema(),
                        vec![Arc::clone(r.column(0)), Arc::clone(r.column(1)), adds],
                    )?);
                }
                let records = is_null(report)?;
                if records.true_count() > 0 {
                    let rows = filter_record_batch(&batch, &records)?;
                    let rows = RecordBatch::try_new(Arc::clone(&contract), rows.columns()[2..].to_vec())?;
                    writer.write(rows).await.map_err(external)?;
                }
            }
            let adds = writer.finish().await.map_err(external)?;
            // Tests kill an executor here: its files are written, their actions not yet returned.
            if !adds.is_empty() {
                crate::runtime::faults::check("cluster/winners", "written").map_err(external)?;
            }
            let n = adds.len();
            out.push(RecordBatch::try_new(
                winners_schema(),
                vec![
                    Arc::new(UInt32Array::from(vec![0; n])),
                    new_null_array(&DataType::Utf8, n),
                    Arc::new(StringArray::from(adds)),
                ],
            )?);
            Ok::<_, DataFusionError>(futures::stream::iter(out.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(winners_schema(), batches)))
    }
}

/// The report rows of `batches`, then the latest record per key of their record rows, fed to the
/// dedup in file order (each file's rows in the order they came), as in process.
fn latest_of_files(schema: &SchemaRef, batches: Vec<RecordBatch>, dedup: &Dedup) -> Result<Vec<RecordBatch>> {
    let context = "keeping the latest record per key";
    let mut out = Vec::new();
    let mut records: Vec<(u32, RecordBatch)> = Vec::new();
    for batch in batches {
        let (index, report) = columns_of(&batch, context)?;
        let reports = datafusion::arrow::compute::is_not_null(report).map_err(|e| Error::arrow(context, e))?;
        if reports.true_count() > 0 {
            out.push(filter_record_batch(&batch, &reports).map_err(|e| Error::arrow(context, e))?);
        }
        let valid = is_null(report).map_err(|e| Error::arrow(context, e))?;
        records.extend(rows_by_file(&batch, index, &valid, context)?);
    }
    // Stable: a file's batches keep their order.
    records.sort_by_key(|(file, _)| *file);
    let records: Vec<RecordBatch> = records.into_iter().map(|(_, b)| b).collect();
    if !records.is_empty() {
        let rows = super::promote::WRITE_BATCH_ROWS;
        out.extend(super::dedup::latest_per_key(schema, records, &dedup.keys, &dedup.order_by, rows)?);
    }
    Ok(out)
}

/// The file index and report columns of a batch of [`output_schema`].
fn columns_of<'a>(batch: &'a RecordBatch, context: &str) -> Result<(&'a UInt32Array, &'a StringArray)> {
    let index = batch
        .column(0)
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| Error::Internal(format!("{context}: the file column is not UInt32")))?;
    let report = batch
        .column(1)
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Internal(format!("{context}: the report column is not text")))?;
    Ok((index, report))
}

/// The rows of `batch` that `valid` selects, split by file (ascending), each file's in order.
fn rows_by_file(
    batch: &RecordBatch,
    index: &UInt32Array,
    valid: &BooleanArray,
    context: &str,
) -> Result<Vec<(u32, RecordBatch)>> {
    let files: BTreeSet<u32> = index.values().iter().copied().collect();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let of_file = BooleanArray::from_iter(index.values().iter().map(|v| Some(*v == file)));
        let mask = and(valid, &of_file).map_err(|e| Error::arrow(context, e))?;
        if mask.true_count() > 0 {
            out.push((file, filter_record_batch(batch, &mask).map_err(|e| Error::arrow(context, e))?));
        }
    }
    Ok(out)
}

/// File `i` of `files`, read from the store, decoded and validated: its valid rows, then its
/// report row.
async fn validate_file(files: &BronzeFiles, i: usize, context: &TaskContext) -> DfResult<Vec<RecordBatch>> {
    let external = |e: Error| DataFusionError::External(Box::new(e));
    // Tests kill an executor here, as it starts on a file (`cluster/validate:execute:abort`).
    crate::runtime::faults::check("cluster/validate", "execute").map_err(external)?;
    let shipped = &files.shipped;
    let file = shipped.files.get(i).ok_or_else(|| bad(format!("no file {i} of {}", shipped.files.len())))?;
    let store = context.runtime_env().object_store(ObjectStoreUrl::parse(&shipped.store)?)?;
    let location = ObjectPath::parse(&file.location).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let gz = store.get(&location).await?.bytes().await?;
    let (origin, format) = origin_of(&file.batch, &shipped.source, &shipped.csv, &gz);
    let (contract, schema) = (Arc::clone(&files.contract), Arc::clone(&files.rows));
    let index = u32::try_from(i).map_err(bad)?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut keep = |valid: RecordBatch| {
            out.push(tagged(&schema, index, None, valid.num_rows(), valid.columns().to_vec())?);
            Ok(())
        };
        let result = process(&contract, &gz, &format, &origin, 1, Some(&mut keep)).map_err(external)?;
        let report = Report {
            read: result.read,
            valid_rows: result.valid_rows,
            rejected: result.rejected,
            gate_counts: result.gate_counts,
            observed: result.observed,
        };
        let report = serde_json::to_string(&report).map_err(bad)?;
        let nulls = schema.fields().iter().skip(2).map(|f| new_null_array(f.data_type(), 1)).collect();
        out.push(tagged(&schema, index, Some(report), 1, nulls).map_err(external)?);
        Ok(out)
    })
    .await
    .map_err(|e| bad(format!("validation task failed: {e}")))?
}

/// `rows` rows of file `index` with `columns` (the contract's), and `report` in each.
fn tagged(
    schema: &SchemaRef,
    index: u32,
    report: Option<String>,
    rows: usize,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    let mut all: Vec<ArrayRef> =
        vec![Arc::new(UInt32Array::from(vec![index; rows])), Arc::new(StringArray::from(vec![report; rows]))];
    all.extend(columns);
    RecordBatch::try_new(Arc::clone(schema), all).map_err(|e| Error::arrow("the rows of a bronze file", e))
}

/// [`BronzeFiles`] and [`ValidateExec`] in plans.
#[derive(Debug)]
struct BronzeCodec;

impl NodeCodec for BronzeCodec {
    fn kind(&self) -> u8 {
        KIND
    }

    fn encode_table(&self, table: &dyn TableProvider) -> Option<DfResult<Vec<u8>>> {
        (table as &dyn std::any::Any).downcast_ref::<BronzeFiles>().map(BronzeFiles::encode)
    }

    fn decode_table(&self, body: &[u8]) -> DfResult<Arc<dyn TableProvider>> {
        Ok(Arc::new(BronzeFiles::decode(body)?))
    }

    fn encode_exec(&self, node: &dyn ExecutionPlan) -> Option<DfResult<Vec<u8>>> {
        let tagged = |tag: u8, body: DfResult<Vec<u8>>| body.map(|b| [vec![tag], b].concat());
        if let Some(validate) = node.downcast_ref::<ValidateExec>() {
            return Some(tagged(VALIDATE, validate.files.encode()));
        }
        if let Some(winners) = node.downcast_ref::<WinnersExec>() {
            return Some(tagged(WINNERS, winners.files.encode()));
        }
        let dedup = node.downcast_ref::<DedupExec>()?;
        Some(tagged(DEDUP, serde_json::to_vec(&dedup.dedup).map_err(bad)))
    }

    fn decode_exec(&self, body: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = single(inputs, "a bronze scan node")?;
        match body.split_first() {
            Some((&VALIDATE, files)) => Ok(Arc::new(ValidateExec::new(BronzeFiles::decode(files)?, input))),
            Some((&WINNERS, files)) => Ok(Arc::new(WinnersExec::new(BronzeFiles::decode(files)?, input))),
            Some((&DEDUP, dedup)) => {
                let dedup: Dedup = serde_json::from_slice(dedup).map_err(bad)?;
                Ok(Arc::new(DedupExec::new(input, dedup)?))
            }
            _ => Err(bad("an unknown node")),
        }
    }
}

/// Whether the executors may keep only the latest record per key of a promotion's files: for a
/// table keeping the latest row per key (SCD 1), whose batches a rejection-rate gate cannot hold
/// back after validation (a held-back batch's records must not have beaten a kept one's). The
/// driver then takes the winners as they are ([`FileResult::latest`]) to audit and merge them.
fn dedups_on_executors(table: &SilverTable) -> bool {
    let holds_back = table
        .max_rejected_fraction
        .as_ref()
        .is_some_and(|b| b.per_batch.is_some() && b.action == crate::spec::Action::Fail);
    matches!(table.history, super::history::History::Latest { .. }) && !holds_back
}

/// Whether the executors also write a promotion's latest records, as files of the silver table
/// (the driver receives their add actions and commits them, or deletes them): for a table whose
/// records they deduplicate ([`dedups_on_executors`]), keeping the latest row per key without
/// deletes, with one key, unpartitioned, and without a set-level `drop` expectation (which would
/// remove rows from the candidate after the files are written). The driver merges the files with
/// the keyed merge (only the key and order columns are read there), or, where that does not
/// apply, reads them back and merges their rows.
pub(crate) fn writes_winners(table: &SilverTable) -> bool {
    dedups_on_executors(table)
        && matches!(table.history, super::history::History::Latest { delete: None })
        && table.keys.len() == 1
        && table.partition_by.is_empty()
        && !table.checks.iter().any(|c| c.drops())
}

/// Decodes and validates `batches` of `table`'s source on `cluster`'s executors, one task per
/// file (then, for most tables, the latest record per key after a shuffle on the key: see
/// [`dedups_on_executors`]): the results in batch order, as [`super::promote::read_batches`]
/// gives them in process, but for the superseded records when the executors dropped them
/// (`valid_rows` still counts them). Valid rows are spilled into `slicer`'s slices as they come
/// back, when there is one.
pub(crate) async fn read(
    lake: &Lake,
    table: &SilverTable,
    batches: &[BatchFile],
    cluster: &Cluster,
    slicer: Option<Arc<Slicer>>,
) -> Result<Vec<FileResult>> {
    let context = format!("validating the bronze files of silver/{} on the cluster", table.name);
    let sql = |e| Error::sql(&context, e);
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let dedup = dedups_on_executors(table);
    let write = match slicer.is_none() && writes_winners(table) {
        true => Some(Table::open(lake, Layer::Silver, &table.name).await?.url().to_string()),
        false => None,
    };
    let files = BronzeFiles::of(lake, table, batches, dedup, write.clone())?;
    let ctx = crate::cluster::session_with(cluster, crate::catalog::new_session()?.state(), cluster_nodes()).await?;
    let mut rows = ctx.read_table(Arc::new(files)).map_err(sql)?.execute_stream().await.map_err(sql)?;
    let gates = table.contract.gates.len();
    let mut results: Vec<FileResult> = batches.iter().map(|_| FileResult::empty(gates)).collect();
    let mut reported = vec![false; batches.len()];
    let mut spilled: Vec<Option<BatchSlices<'_>>> = batches.iter().map(|_| None).collect();
    let mut written = Vec::new();
    while let Some(batch) = rows.try_next().await.map_err(sql)? {
        let (index, report) = columns_of(&batch, &context)?;
        let valid = is_null(report).map_err(|e| Error::arrow(&context, e))?;
        for row in (0..batch.num_rows()).filter(|&r| report.is_valid(r)) {
            let i = index.value(row) as usize;
            let r: Report = serde_json::from_str(report.value(row))
                .map_err(|e| Error::Internal(format!("{context}: a report does not parse: {e}")))?;
            let result = results.get_mut(i).ok_or_else(|| Error::Internal(format!("{context}: no file {i}")))?;
            result.read = r.read;
            result.valid_rows = r.valid_rows;
            result.rejected = r.rejected;
            result.gate_counts = r.gate_counts;
            result.observed = r.observed;
            reported[i] = true;
        }
        if write.is_some() {
            let adds = batch
                .column(2)
                .as_string_opt::<i32>()
                .ok_or_else(|| Error::Internal(format!("{context}: the written files' actions are not text")))?;
            written.extend(adds.iter().flatten().map(str::to_string));
            continue;
        }
        for (i, rows) in rows_by_file(&batch, index, &valid, &context)? {
            let rows = RecordBatch::try_new(Arc::clone(&table.contract.schema), rows.columns()[2..].to_vec())
                .map_err(|e| Error::arrow(&context, e))?;
            let i = i as usize;
            if i >= results.len() {
                return Err(Error::Internal(format!("{context}: rows of a file {i} of {}", results.len())));
            }
            match &slicer {
                Some(slicer) => spilled[i].get_or_insert_with(|| slicer.batch(i)).write(&rows)?,
                None => results[i].valid.push(rows),
            }
        }
    }
    if let Some(missing) = reported.iter().position(|r| !r) {
        return Err(Error::Internal(format!("{context}: no report for {}", batches[missing].path)));
    }
    for (result, spill) in results.iter_mut().zip(spilled) {
        if let Some(spill) = spill {
            result.sliced = spill.finish()?;
        }
        result.latest = dedup;
        // Every result says the executors wrote; the first carries the files.
        result.written = write.as_ref().map(|_| std::mem::take(&mut written));
        let rows: u64 = result.valid.iter().map(|b| b.num_rows() as u64).sum();
        // Deduplicated on the executors, fewer rows than records came back: their losers are
        // superseded, counted from the reports (`valid_rows`).
        if slicer.is_none() && (rows > result.valid_rows || (!dedup && rows != result.valid_rows)) {
            return Err(Error::Internal(format!(
                "{context}: {rows} valid rows came back, {} reported",
                result.valid_rows
            )));
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::silver::validate::Origin;

    fn shipped() -> (Shipped, Contract) {
        let spec: crate::spec::SilverSpec = toml::from_str(
            r#"
            primary_key = ["id"]
            columns = [{ name = "id", type = "int64", checks = ["id > 0"] }, { name = "amount", type = "float64" }]
            expectations = [{ name = "small", expect = "amount < 50", action = "drop" }]
            "#,
        )
        .expect("a valid spec");
        let contract = Contract::compile(&spec, &[]).expect("compiles");
        let shipped = Shipped {
            store: "s3://bucket".into(),
            source: "orders".into(),
            csv: CsvSource {
                dialect: Some(crate::bronze::csv_batch::Dialect::of(&Default::default())),
                encoding: crate::bronze::ingest::Encoding::Windows1252,
            },
            contract: contract.inputs.as_ref().clone(),
            files: vec![ShippedFile {
                location: "lake/bronze/orders/2026-12-01/b1.ndjson.gz".into(),
                batch: BatchFile {
                    path: "bronze/orders/2026-12-01/b1.ndjson.gz".into(),
                    batch_id: "b1".into(),
                    size: 0,
                    ingested_at: Some("2026-12-01T00:00:00Z".into()),
                },
            }],
            dedup: None,
            write: None,
        };
        (shipped, contract)
    }

    fn files() -> BronzeFiles {
        let (shipped, contract) = shipped();
        BronzeFiles::new(shipped, Arc::new(contract))
    }

    #[test]
    fn bronze_files_and_their_scan_decode_to_what_was_encoded() {
        let codec = crate::cluster::PhysicalCodec::with_nodes(cluster_nodes());
        let logical = crate::cluster::LogicalCodec::with_nodes(cluster_nodes());
        let table = files();
        let ctx = TaskContext::default();
        let mut buf = Vec::new();
        datafusion_proto::logical_plan::LogicalExtensionCodec::try_encode_table_provider(
            &logical,
            &"t".into(),
            Arc::new(table.clone()),
            &mut buf,
        )
        .expect("encodes");
        assert!(buf.starts_with(b"medallion\x01b"), "tagged as ours");
        let back = datafusion_proto::logical_plan::LogicalExtensionCodec::try_decode_table_provider(
            &logical,
            &buf,
            &"t".into(),
            table.schema(),
            &ctx,
        )
        .expect("decodes");
        let back = (back.as_ref() as &dyn std::any::Any).downcast_ref::<BronzeFiles>().expect("bronze files");
        assert_eq!(back.schema, table.schema);
        assert_eq!(back.encode().expect("encodes"), table.encode().expect("encodes"));
        assert_eq!(back.contract.gates.len(), 1);

        let exec: Arc<dyn ExecutionPlan> = Arc::new(ValidateExec::new(table.clone(), tickets(1).expect("tickets")));
        let mut buf = Vec::new();
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        datafusion_proto::physical_plan::PhysicalExtensionCodec::try_encode(&codec, exec, &mut buf, &converter)
            .expect("encodes");
        let back = datafusion_proto::physical_plan::PhysicalExtensionCodec::try_decode(
            &codec,
            &buf,
            &[tickets(1).expect("tickets")],
            &ctx,
            &converter,
        )
        .expect("decodes");
        let back = back.downcast_ref::<ValidateExec>().expect("a validate node");
        assert_eq!(back.files.encode().expect("encodes"), table.encode().expect("encodes"));
        // Nothing but paths: no store options travel.
        assert!(!String::from_utf8_lossy(&buf).contains("secret"));
    }

    /// The dedup needs every record of a key in one task: whatever the physical optimizer does to
    /// the scan's plan, a hash repartition on the key sits under the dedup node (without it each
    /// task deduplicated one file's records and the driver's second dedup hid it).
    #[tokio::test]
    async fn the_dedup_of_several_files_runs_after_a_shuffle_on_the_key() {
        async fn planned(files: usize) -> String {
            let (mut shipped, contract) = shipped();
            for i in 1..files {
                let more = ShippedFile {
                    location: format!("lake/bronze/orders/2026-12-01/b{i}.ndjson.gz"),
                    batch: BatchFile { batch_id: format!("b{i}"), ..shipped.files[0].batch.clone() },
                };
                shipped.files.push(more);
            }
            shipped.dedup = Some(Dedup { keys: vec!["id".into()], order_by: "amount".into() });
            let table = BronzeFiles::new(shipped, Arc::new(contract));
            let ctx = crate::catalog::new_session().expect("session");
            let plan = ctx.read_table(Arc::new(table)).expect("reads").create_physical_plan().await.expect("plans");
            datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string()
        }
        let shown = planned(2).await;
        let lines: Vec<&str> = shown.lines().map(str::trim).collect();
        let at = lines.iter().position(|l| l.starts_with("MedallionDedupExec")).expect("a dedup node");
        assert!(lines[at + 1].starts_with("RepartitionExec: partitioning=Hash([id@"), "{shown}");
        // One file is one task already: no shuffle (a daily run's single batch).
        let shown = planned(1).await;
        assert!(shown.contains("MedallionDedupExec") && !shown.contains("RepartitionExec"), "{shown}");
    }

    /// A dedup task holds its share of the records in the process's memory pool: past the pool it
    /// fails with "Resources exhausted" (the task fails, the executor lives); within it, it runs.
    #[tokio::test]
    async fn a_dedup_task_keeps_to_the_memory_pool() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let contract =
            Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("ts", DataType::Int64, true)]);
        let schema = output_schema(&contract);
        let ids: Vec<i64> = (0..50_000).map(|i| i % 1000).collect();
        let ts: Vec<i64> = (0..50_000).collect();
        let rows =
            tagged(&schema, 0, None, ids.len(), vec![Arc::new(Int64Array::from(ids)), Arc::new(Int64Array::from(ts))])
                .expect("rows");
        let input = MemorySourceConfig::try_new_exec(&[vec![rows]], Arc::clone(&schema), None).expect("input");
        let dedup = Dedup { keys: vec!["id".into()], order_by: "ts".into() };
        let node = Arc::new(DedupExec::new(input, dedup).expect("node"));
        let run = |pool: usize| {
            let node = Arc::clone(&node);
            async move {
                let runtime = RuntimeEnvBuilder::new()
                    .with_memory_pool(Arc::new(GreedyMemoryPool::new(pool)))
                    .build_arc()
                    .expect("runtime");
                let ctx = Arc::new(TaskContext::default().with_runtime(runtime));
                datafusion::physical_plan::collect(node, ctx).await
            }
        };
        let err = run(64 << 10).await.expect_err("50k rows are more than 64 KiB");
        assert!(matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)), "{err}");
        assert!(err.to_string().contains("MedallionDedupExec[0]"), "{err}");
        let kept: usize = run(64 << 20).await.expect("fits").iter().map(RecordBatch::num_rows).sum();
        assert_eq!(kept, 1000, "one row per key");
    }

    /// Records of several files, in whatever order the shuffle delivered them: the latest per key
    /// wins, an exact tie going to the later file (then the later line), as in process; report
    /// rows pass through.
    #[test]
    fn the_executors_dedup_follows_file_order_whatever_the_arrival_order() {
        use datafusion::arrow::array::Int64Array;
        let contract =
            Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("ts", DataType::Int64, true)]);
        let schema = output_schema(&contract);
        let rows = |file: u32, ids: Vec<i64>, ts: Vec<i64>| {
            let n = ids.len();
            tagged(&schema, file, None, n, vec![Arc::new(Int64Array::from(ids)), Arc::new(Int64Array::from(ts))])
                .expect("rows")
        };
        let report = tagged(
            &schema,
            0,
            Some("{}".into()),
            1,
            vec![new_null_array(&DataType::Int64, 1), new_null_array(&DataType::Int64, 1)],
        )
        .expect("report");
        let arrived = vec![
            rows(2, vec![1, 2], vec![5, 1]),
            report.clone(),
            rows(0, vec![1, 2, 3], vec![5, 9, 1]),
            rows(1, vec![3, 3], vec![1, 0]),
        ];
        let dedup = Dedup { keys: vec!["id".into()], order_by: "ts".into() };
        let out = latest_of_files(&schema, arrived, &dedup).expect("deduplicated");
        assert_eq!(out[0], report);
        let mut winners: Vec<(i64, u32, i64)> = Vec::new();
        for b in &out[1..] {
            let (index, _) = columns_of(b, "test").expect("columns");
            let (id, ts) = (
                b.column(2).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
                b.column(3).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            );
            winners.extend((0..b.num_rows()).map(|r| (id.value(r), index.value(r), ts.value(r))));
        }
        winners.sort();
        // id 1: tie at 5, file 2 is later; id 2: 9 beats 1; id 3: a tie at 1 between files 0 and
        // 1, file 1 is later.
        assert_eq!(winners, vec![(1, 2, 5), (2, 0, 9), (3, 1, 1)]);
    }

    /// A file's rows and report come back as the in-process read gives them.
    #[tokio::test]
    async fn an_executor_validates_a_file_into_rows_and_a_report() {
        let dir = tempfile::tempdir().expect("tmp");
        let lake = Lake::open(dir.path().to_str().expect("utf-8"), dir.path()).expect("lake");
        let path = "bronze/orders/2026-12-01/b1.ndjson.gz";
        let text = "{\"id\":1,\"amount\":10}\n{\"id\":-2,\"amount\":5}\nnot json\n{\"id\":3,\"amount\":70}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).expect("gzip");
        lake.put(path, gz.finish().expect("gzip")).await.expect("put");
        let mut table = files();
        let (store, location) = lake.locate(path).expect("located");
        let mut shipped = table.shipped.as_ref().clone();
        shipped.store = store;
        shipped.files[0].location = location;
        table = BronzeFiles::new(shipped, Arc::clone(&table.contract));
        let out = validate_file(&table, 0, &TaskContext::default()).await.expect("validated");
        let (report_batch, rows) = out.split_last().expect("a report");
        let report: Report =
            serde_json::from_str(report_batch.column(1).as_string::<i32>().value(0)).expect("a report");
        // What the in-process read of the same bytes gives.
        let gz = lake.get(path).await.expect("read").expect("there");
        let origin = Origin {
            batch_id: "b1".into(),
            source: "orders".into(),
            file: path.into(),
            ingested_at: Some("2026-12-01T00:00:00Z".into()),
        };
        let format = crate::bronze::decode::BatchFormat::NdjsonGz;
        let local = process(&table.contract, &gz, &format, &origin, 1, None).expect("validates");
        assert_eq!(
            (report.read, report.valid_rows, report.gate_counts.clone()),
            (4, local.valid_rows, local.gate_counts)
        );
        assert_eq!(report.rejected.len(), local.rejected.len());
        assert!(report.rejected.iter().any(|r| r.line == 3 && r.source_file == path), "{:?}", report.rejected);
        let shipped: Vec<RecordBatch> = rows
            .iter()
            .map(|b| RecordBatch::try_new(Arc::clone(&table.contract.schema), b.columns()[2..].to_vec()).expect("rows"))
            .collect();
        assert_eq!(shipped, local.valid);
        assert!(report.valid_rows > 0 && !report.rejected.is_empty());
    }
}
