//! Reading a lake table on a cluster: its snapshot resolved on the driver into plain Parquet files
//! ([`LiveFiles`]), shipped in the plan, and read by the executors straight from the object store.
//!
//! delta-rs's own scan cannot travel (its codecs are unfinished in 1.1), and DataFusion's Parquet
//! scan loses each file's deletion vector (a row selection, not serialised). [`ShippedTable`] is
//! the table in the logical plan the driver sends to the scheduler; [`ShippedScan`] the node the
//! scheduler plans and the executors run: both encode to bytes (`codec`) that hold the files'
//! paths, partition values and kept rows, never a credential.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};

use super::one_child_node;
use crate::storage::delta::{LiveFile, LiveFiles, spread};

/// A table of the lake as the driver ships it: its schema (data columns, then partition columns)
/// and its live files.
#[derive(Debug, Clone)]
pub struct ShippedTable {
    schema: SchemaRef,
    files: Arc<LiveFiles>,
}

impl ShippedTable {
    /// The table `files` with `schema` (the table's columns in any order; reordered so the
    /// partition columns come last, as they are read).
    pub fn new(schema: &Schema, files: LiveFiles) -> DfResult<ShippedTable> {
        let (data, parts) = split(schema, &files.partition_columns)?;
        let fields: Vec<Field> =
            data.fields().iter().chain(parts.iter()).map(|f| f.as_ref().clone()).collect::<Vec<_>>();
        Ok(ShippedTable { schema: Arc::new(Schema::new(fields)), files: Arc::new(files) })
    }

    pub(super) fn files(&self) -> &LiveFiles {
        &self.files
    }

    pub(super) fn from_parts(schema: SchemaRef, files: LiveFiles) -> ShippedTable {
        ShippedTable { schema, files: Arc::new(files) }
    }
}

/// `schema` split into the files' columns and the partition columns (in `partition_columns`
/// order); a partition column missing from `schema` is an error.
fn split(schema: &Schema, partition_columns: &[String]) -> DfResult<(SchemaRef, Vec<Arc<Field>>)> {
    let data: Vec<Field> =
        schema.fields().iter().filter(|f| !partition_columns.contains(f.name())).map(|f| f.as_ref().clone()).collect();
    let parts = partition_columns
        .iter()
        .map(|c| {
            schema
                .field_with_name(c)
                .map(|f| Arc::new(f.clone()))
                .map_err(|_| DataFusionError::Plan(format!("partition column `{c}` is not in the table's schema")))
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok((Arc::new(Schema::new(data)), parts))
}

#[async_trait]
impl TableProvider for ShippedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used to skip row groups and pages; DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partitions = state.config().target_partitions().clamp(1, self.files.files.len().max(1));
        let scan = ShippedScan::new(
            self.clone(),
            Scan { projection: projection.cloned(), filters: filters.to_vec(), limit, partitions },
        )?;
        Ok(Arc::new(scan))
    }
}

/// What a scan of a [`ShippedTable`] reads.
#[derive(Debug, Clone)]
pub(super) struct Scan {
    /// Columns of the table's schema, in output order; None: all.
    pub projection: Option<Vec<usize>>,
    /// Filters over the table's columns, used to skip row groups and pages.
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
    /// Output partitions: the files spread over them by size.
    pub partitions: usize,
}

/// The scan of a [`ShippedTable`] on an executor: the files are spread over `partitions` groups
/// (the same on every process, computed from the shipped list), each read as DataFusion's Parquet
/// scan with each file's deletion vector as a row selection.
///
/// Which groups a partition reads comes from its child, an in-memory scan of "tickets" (one
/// group number per partition): Ballista runs each task on the plan restricted to that task's
/// partitions, and it knows how to restrict an in-memory scan, not a node of ours. A task handed
/// partition 3 of 4 gets a child whose only partition holds ticket 3, and reads group 3 alone.
#[derive(Debug)]
pub struct ShippedScan {
    table: ShippedTable,
    scan: Scan,
    tickets: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

/// An in-memory scan of `n` partitions, partition `i` holding the one ticket `i`: the child of a
/// node of ours whose partition `i` does part `i` of its work (see [`ShippedScan`]).
pub fn tickets(n: usize) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new("ticket", DataType::UInt32, false)]));
    let partitions = (0..n)
        .map(|i| {
            let ticket = UInt32Array::from(vec![u32::try_from(i).unwrap_or(u32::MAX)]);
            Ok(vec![RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ticket)])?])
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(DataSourceExec::from_data_source(MemorySourceConfig::try_new(&partitions, schema, None)?))
}

impl ShippedScan {
    pub(super) fn new(table: ShippedTable, scan: Scan) -> DfResult<ShippedScan> {
        let tickets = tickets(scan.partitions.max(1))?;
        ShippedScan::with_tickets(table, scan, tickets)
    }

    /// The scan reading the groups `tickets` hands out.
    pub(super) fn with_tickets(
        table: ShippedTable,
        scan: Scan,
        tickets: Arc<dyn ExecutionPlan>,
    ) -> DfResult<ShippedScan> {
        let schema = match &scan.projection {
            Some(p) => Arc::new(table.schema.project(p)?),
            None => Arc::clone(&table.schema),
        };
        let partitions = tickets.properties().output_partitioning().partition_count();
        let properties = super::node_properties(schema, partitions, EmissionType::Incremental);
        Ok(ShippedScan { table, scan, tickets, properties })
    }

    pub(super) fn table(&self) -> &ShippedTable {
        &self.table
    }

    pub(super) fn scan(&self) -> &Scan {
        &self.scan
    }
}

/// DataFusion's Parquet scan of the files of group `group` alone: one scan per group, since a
/// scan's partitions share its files out among themselves (a partition run alone would read
/// them all). None: the group has no file.
fn parquet(table: &ShippedTable, scan: &Scan, group: usize) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let files = &table.files;
    let (data, parts) = split(&table.schema, &files.partition_columns)?;
    let scanned =
        files.files.iter().map(|f| partitioned_file(f, &parts)).collect::<DfResult<Vec<PartitionedFile>>>()?;
    let Some(group) = spread(scanned, scan.partitions).into_iter().nth(group).filter(|g| !g.is_empty()) else {
        return Ok(None);
    };
    let url = ObjectStoreUrl::parse(&files.store)?;
    let mut source =
        ParquetSource::new(TableSchema::builder(Arc::clone(&data)).with_table_partition_cols(parts).build())
            .with_metadata_size_hint(crate::storage::delta::FOOTER_HINT);
    // Only filters on the files' columns reach the Parquet reader (partition values are not
    // in the files); DataFusion filters every row above the scan anyway.
    let pushable: Vec<Expr> = scan
        .filters
        .iter()
        .filter(|e| e.column_refs().iter().all(|c| data.field_with_name(&c.name).is_ok()))
        .cloned()
        .collect();
    if let Some(predicate) = conjunction(pushable) {
        let schema = DFSchema::try_from(Arc::clone(&table.schema))?;
        let props = datafusion::execution::context::ExecutionProps::new();
        source = source.with_predicate(create_physical_expr(
            &predicate,
            &schema,
            &props,
            &PhysicalPlanningContext::default(),
        )?);
    }
    let config = FileScanConfigBuilder::new(url, Arc::new(source))
        .with_file_groups(vec![group])
        .with_projection_indices(scan.projection.clone())?
        .with_limit(scan.limit)
        .build();
    Ok(Some(DataSourceExec::from_data_source(config)))
}

/// The Parquet reader's view of a live file: its partition values typed, its kept rows.
fn partitioned_file(file: &LiveFile, parts: &[Arc<Field>]) -> DfResult<PartitionedFile> {
    let mut scanned = PartitionedFile::new(file.path.clone(), file.size);
    scanned.partition_values = parts
        .iter()
        .zip(&file.partition_values)
        .map(|(field, value)| match value {
            None => ScalarValue::try_from(field.data_type()),
            Some(v) => ScalarValue::try_from_string(v.clone(), field.data_type()),
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(match file.selection() {
        Some(selection) => scanned.with_extension(ParquetRowSelection::new(selection)),
        None => scanned,
    })
}

impl DisplayAs for ShippedScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let vectored = self.table.files.files.iter().filter(|f| f.kept.is_some()).count();
        write!(
            f,
            "ShippedScan: files={}, with deletion vectors={vectored}, partitions={}",
            self.table.files.files.len(),
            self.scan.partitions
        )
    }
}

impl ExecutionPlan for ShippedScan {
    one_child_node!("ShippedScan", tickets);

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let tickets = super::single(&children, "ShippedScan")?;
        Ok(Arc::new(ShippedScan::with_tickets(self.table.clone(), self.scan.clone(), tickets)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        // Tests kill an executor here, as a task starts (`cluster/scan:execute:abort`).
        crate::runtime::faults::check("cluster/scan", "execute").map_err(|e| DataFusionError::External(Box::new(e)))?;
        let tickets = self.tickets.execute(partition, Arc::clone(&context))?;
        let (table, scan) = (self.table.clone(), self.scan.clone());
        let schema = Arc::clone(self.properties.eq_properties.schema());
        let empty = Arc::clone(&schema);
        let groups = futures::stream::once(async move {
            let mut streams = Vec::new();
            for group in ticket_numbers(tickets).await? {
                streams.push(match parquet(&table, &scan, group)? {
                    Some(plan) => plan.execute(0, Arc::clone(&context))?,
                    None => EmptyExec::new(Arc::clone(&empty)).execute(0, Arc::clone(&context))?,
                });
            }
            Ok::<_, DataFusionError>(futures::stream::iter(streams).flatten())
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, groups)))
    }
}

/// The tickets a task's partition of [`tickets`] hands out.
pub async fn ticket_numbers(tickets: SendableRecordBatchStream) -> DfResult<Vec<usize>> {
    let batches: Vec<RecordBatch> = tickets.try_collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let column = b
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| DataFusionError::Internal("the tickets of a task are not UInt32".to_string()))?;
        out.extend(column.values().iter().map(|t| *t as usize));
    }
    Ok(out)
}
