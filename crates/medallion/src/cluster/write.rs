//! Writing a query's result into a table's files on the executors: each task writes the rows of
//! its partition as Parquet files under the table and returns their Delta add actions; the driver,
//! which receives the actions of the tasks that succeeded (a retried task's are those of its last
//! attempt), makes the one commit. Files of an attempt that died are never committed (`vacuum`
//! removes them).
//!
//! The driver wraps the query's logical plan in a [`WriteNode`]; the scheduler plans it into a
//! [`WriteExec`] over the query's physical plan ([`Planner`], in its session state), which
//! Ballista splits into stages as any plan.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{DataFrame, SessionConfig};
use futures::StreamExt;
use url::Url;

use super::one_child_node;
use crate::error::{Error, Result};
use crate::storage::delta::FileWriter;

/// Where the rows go: the table's location and the schema its files are written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The table's URL (`s3://bucket/lake/gold/x`, `file:///…`): where, never how to get in.
    pub url: String,
    /// The files' schema: the rows are cast to it, column by column.
    pub schema: SchemaRef,
}

/// The schema of what a write returns: one row per file written, its Delta add action as JSON.
fn written_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("add", DataType::Utf8, false)]))
}

/// `input`'s rows written into `target`'s files (a logical plan node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteNode {
    input: LogicalPlan,
    target: Target,
    schema: DFSchemaRef,
}

impl WriteNode {
    pub(super) fn new(input: LogicalPlan, target: Target) -> DfResult<WriteNode> {
        let schema = Arc::new(DFSchema::try_from(written_schema())?);
        Ok(WriteNode { input, target, schema })
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }
}

impl PartialOrd for WriteNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Plans are compared when optimisers deduplicate nodes; two writes order by their table.
        self.target.url.partial_cmp(&other.target.url)
    }
}

impl UserDefinedLogicalNodeCore for WriteNode {
    fn name(&self) -> &str {
        "MedallionWrite"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MedallionWrite: {}", self.target.url)
    }

    fn with_exprs_and_inputs(&self, _: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        WriteNode::new(super::single(&inputs, "MedallionWrite")?, self.target.clone())
    }
}

/// Writes the rows of each partition of `input` into `target`'s files.
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    target: Target,
    properties: Arc<PlanProperties>,
}

impl WriteExec {
    pub(super) fn new(input: Arc<dyn ExecutionPlan>, target: Target) -> WriteExec {
        let partitions = input.properties().output_partitioning().partition_count();
        let properties = super::node_properties(written_schema(), partitions, EmissionType::Final);
        WriteExec { input, target, properties }
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MedallionWriteExec: {}", self.target.url)
    }
}

impl ExecutionPlan for WriteExec {
    one_child_node!("MedallionWriteExec", input);

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(WriteExec::new(super::single(&children, "MedallionWriteExec")?, self.target.clone())))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let external = |e: Error| DataFusionError::External(Box::new(e));
        crate::runtime::faults::check("cluster/write", "execute").map_err(external)?;
        let mut rows = self.input.execute(partition, context)?;
        let target = self.target.clone();
        let written = futures::stream::once(async move {
            let url = Url::parse(&target.url).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let mut writer = FileWriter::new(&url, Arc::clone(&target.schema)).map_err(external)?;
            while let Some(batch) = rows.next().await {
                writer.write(batch?).await.map_err(external)?;
            }
            let adds = writer.finish().await.map_err(external)?;
            // Tests kill an executor here: its files are written, their actions not yet returned.
            if !adds.is_empty() {
                crate::runtime::faults::check("cluster/write", "written").map_err(external)?;
            }
            Ok(RecordBatch::try_new(written_schema(), vec![Arc::new(StringArray::from(adds))])?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(written_schema(), written)))
    }
}

/// Plans [`WriteNode`]s into [`WriteExec`]s.
#[derive(Debug, Default)]
struct WritePlanner;

#[async_trait]
impl ExtensionPlanner for WritePlanner {
    async fn plan_extension(
        &self,
        _: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _: &dyn datafusion::catalog::Session,
        _: &PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(write) = node.as_any().downcast_ref::<WriteNode>() else { return Ok(None) };
        let input = super::single(physical_inputs, "MedallionWrite")?;
        Ok(Some(Arc::new(WriteExec::new(input, write.target.clone()))))
    }
}

/// DataFusion's planner, plus [`WriteNode`]s: the scheduler's.
#[derive(Debug, Default)]
pub struct Planner;

#[async_trait]
impl QueryPlanner for Planner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(WritePlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

/// The scheduler's session state: Ballista's, with [`Planner`] and medallion's SQL functions
/// (the plans it is sent name them).
pub(super) fn scheduler_state(config: SessionConfig) -> DfResult<SessionState> {
    let state = ballista_core::utils::default_session_builder(config)?;
    let mut state = SessionStateBuilder::new_from_existing(state).with_query_planner(Arc::new(Planner)).build();
    crate::functions::add_to(&mut state)?;
    Ok(state)
}

/// Runs `df` (of a cluster session) on the executors, its rows written as files of the table at
/// `table_url` in `schema`'s types; returns their add actions, not committed.
pub async fn write(df: DataFrame, table_url: &Url, schema: SchemaRef) -> Result<Vec<String>> {
    let context = format!("writing {table_url} on the cluster");
    let (state, plan) = df.into_parts();
    let node =
        WriteNode::new(plan, Target { url: table_url.to_string(), schema }).map_err(|e| Error::sql(&context, e))?;
    let plan = LogicalPlan::Extension(Extension { node: Arc::new(node) });
    let batches = DataFrame::new(state, plan).collect().await.map_err(|e| Error::sql(&context, e))?;
    let mut adds = Vec::new();
    for b in &batches {
        let column = b
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::Internal(format!("{context}: the written files' actions are not strings")))?;
        adds.extend((0..column.len()).filter(|&i| column.is_valid(i)).map(|i| column.value(i).to_string()));
    }
    Ok(adds)
}
