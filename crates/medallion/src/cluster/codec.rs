//! medallion's plan codecs for Ballista: a [`ShippedTable`] and a [`WriteNode`] in the logical
//! plans the driver sends the scheduler, a [`ShippedScan`] and a [`WriteExec`] in the stage plans
//! the scheduler sends the executors, and the nodes of higher layers through [`NodeCodec`];
//! everything else is Ballista's own.
//!
//! Encoded: a write's table URL and files' schema; a table's schema (Arrow IPC), the live files (paths, sizes, partition values, kept rows),
//! the projection, filters (DataFusion's protobuf), limit and partition count, after a tag that
//! tells them from Ballista's bytes. No credential is in them: executors open the store with
//! their own configuration.

use std::any::Any;
use std::io::Cursor;
use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::Serializeable;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use super::scan::{Scan, ShippedScan, ShippedTable};
use super::single;
use super::write::{Target, WriteExec, WriteNode};
use crate::storage::delta::LiveFiles;

/// Before every message of ours: `medallion`, a format version, a kind.
const TAG: &[u8] = b"medallion\x01";
const TABLE: u8 = b'T';
const SCAN: u8 = b'S';
const WRITE: u8 = b'W';
const WRITE_EXEC: u8 = b'X';

/// Plan nodes of a layer above this module (silver's scan of bronze files) that travel in plans:
/// a table the driver puts in its logical plans, and the node the scheduler plans it into. Their
/// bytes follow the tag and the codec's own kind, which must differ from this module's (upper-case
/// letters) and from every other's. The scheduler and the executors carry every one of them.
pub trait NodeCodec: std::fmt::Debug + Send + Sync {
    /// The byte telling this codec's messages from the others'.
    fn kind(&self) -> u8;
    /// `table`'s bytes, if it is one of this codec's tables.
    fn encode_table(&self, table: &dyn TableProvider) -> Option<DfResult<Vec<u8>>>;
    /// The table of bytes [`NodeCodec::encode_table`] made.
    fn decode_table(&self, body: &[u8]) -> DfResult<Arc<dyn TableProvider>>;
    /// `node`'s bytes, if it is one of this codec's nodes.
    fn encode_exec(&self, node: &dyn ExecutionPlan) -> Option<DfResult<Vec<u8>>>;
    /// The node of bytes [`NodeCodec::encode_exec`] made, over `inputs`.
    fn decode_exec(&self, body: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> DfResult<Arc<dyn ExecutionPlan>>;
}

/// The [`NodeCodec`]s a process carries.
pub type Nodes = Vec<Arc<dyn NodeCodec>>;

/// The codec of `nodes` whose message `buf` is, with the message's body.
fn node_of<'a>(nodes: &'a Nodes, buf: &'a [u8]) -> Option<(&'a Arc<dyn NodeCodec>, &'a [u8])> {
    let rest = buf.strip_prefix(TAG)?;
    let (kind, body) = rest.split_first()?;
    nodes.iter().find(|n| n.kind() == *kind).map(|n| (n, body))
}

/// The first of `nodes` that encodes `what`, its bytes after the tag and its kind.
fn encode_node(
    nodes: &Nodes,
    buf: &mut Vec<u8>,
    what: impl Fn(&dyn NodeCodec) -> Option<DfResult<Vec<u8>>>,
) -> Option<DfResult<()>> {
    nodes.iter().find_map(|n| {
        what(n.as_ref()).map(|bytes| {
            let bytes = bytes?;
            buf.extend_from_slice(TAG);
            buf.push(n.kind());
            buf.extend_from_slice(&bytes);
            Ok(())
        })
    })
}

/// A shipped table, as bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct TableMessage {
    /// The schema, as an Arrow IPC stream with no batch.
    schema: Vec<u8>,
    files: LiveFiles,
}

/// A write's target, as bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct TargetMessage {
    url: String,
    /// The files' schema, as an Arrow IPC stream with no batch.
    schema: Vec<u8>,
}

impl TargetMessage {
    fn of(target: &Target) -> DfResult<TargetMessage> {
        Ok(TargetMessage { url: target.url.clone(), schema: schema_bytes(&target.schema)? })
    }

    fn target(self) -> DfResult<Target> {
        Ok(Target { url: self.url, schema: schema_of(&self.schema)? })
    }
}

/// A shipped scan, as bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScanMessage {
    table: TableMessage,
    projection: Option<Vec<usize>>,
    /// Each filter in DataFusion's protobuf encoding.
    filters: Vec<Vec<u8>>,
    limit: Option<usize>,
    partitions: usize,
}

fn bad(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("medallion plan codec: {what}"))
}

fn encode(kind: u8, message: &impl serde::Serialize, buf: &mut Vec<u8>) -> DfResult<()> {
    buf.extend_from_slice(TAG);
    buf.push(kind);
    serde_json::to_writer(buf, message).map_err(bad)
}

/// The body of a message of ours of `kind`; None: not ours (Ballista's).
fn body(buf: &[u8], kind: u8) -> Option<&[u8]> {
    buf.strip_prefix(TAG)?.strip_prefix(&[kind])
}

fn schema_bytes(schema: &Schema) -> DfResult<Vec<u8>> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

fn schema_of(bytes: &[u8]) -> DfResult<SchemaRef> {
    Ok(StreamReader::try_new(Cursor::new(bytes), None)?.schema())
}

fn table_message(table: &ShippedTable) -> DfResult<TableMessage> {
    Ok(TableMessage { schema: schema_bytes(&table.schema())?, files: table.files().clone() })
}

fn table_of(message: TableMessage) -> DfResult<ShippedTable> {
    Ok(ShippedTable::from_parts(schema_of(&message.schema)?, message.files))
}

/// Ballista's logical codec, plus [`ShippedTable`], [`WriteNode`] and the tables of `nodes`.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    nodes: Nodes,
}

impl LogicalCodec {
    /// The codec, with the tables of `nodes` too.
    pub fn with_nodes(nodes: Nodes) -> LogicalCodec {
        LogicalCodec { nodes, ..LogicalCodec::default() }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        let Some(body) = body(buf, WRITE) else { return self.ballista.try_decode(buf, inputs, ctx) };
        let target = serde_json::from_slice::<TargetMessage>(body).map_err(bad)?.target()?;
        Ok(Extension { node: Arc::new(WriteNode::new(single(inputs, "a write")?, target)?) })
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        match node.node.as_any().downcast_ref::<WriteNode>() {
            Some(write) => encode(WRITE, &TargetMessage::of(write.target())?, buf),
            None => self.ballista.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        if let Some(body) = body(buf, TABLE) {
            let message: TableMessage = serde_json::from_slice(body).map_err(bad)?;
            return Ok(Arc::new(table_of(message)?));
        }
        match node_of(&self.nodes, buf) {
            Some((node, body)) => node.decode_table(body),
            None => self.ballista.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if let Some(table) = (node.as_ref() as &dyn Any).downcast_ref::<ShippedTable>() {
            return encode(TABLE, &table_message(table)?, buf);
        }
        match encode_node(&self.nodes, buf, |n| n.encode_table(node.as_ref())) {
            Some(done) => done,
            None => self.ballista.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> DfResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// Ballista's physical codec, plus [`ShippedScan`], [`WriteExec`] and the nodes of `nodes`.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    nodes: Nodes,
}

impl PhysicalCodec {
    /// The codec, with the nodes of `nodes` too.
    pub fn with_nodes(nodes: Nodes) -> PhysicalCodec {
        PhysicalCodec { nodes, ..PhysicalCodec::default() }
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(body) = body(buf, WRITE_EXEC) {
            let target = serde_json::from_slice::<TargetMessage>(body).map_err(bad)?.target()?;
            return Ok(Arc::new(WriteExec::new(single(inputs, "a write")?, target)));
        }
        if let Some((node, body)) = node_of(&self.nodes, buf) {
            return node.decode_exec(body, inputs);
        }
        let Some(body) = body(buf, SCAN) else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let message: ScanMessage = serde_json::from_slice(body).map_err(bad)?;
        let filters =
            message.filters.iter().map(|f| Expr::from_bytes_with_ctx(f, ctx)).collect::<DfResult<Vec<_>>>()?;
        let scan =
            Scan { projection: message.projection, filters, limit: message.limit, partitions: message.partitions };
        let tickets = single(inputs, "a shipped scan")?;
        Ok(Arc::new(ShippedScan::with_tickets(table_of(message.table)?, scan, tickets)?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(write) = node.downcast_ref::<WriteExec>() {
            return encode(WRITE_EXEC, &TargetMessage::of(write.target())?, buf);
        }
        if let Some(done) = encode_node(&self.nodes, buf, |n| n.encode_exec(node.as_ref())) {
            return done;
        }
        let Some(shipped) = node.downcast_ref::<ShippedScan>() else {
            return self.ballista.try_encode(node, buf, proto_converter);
        };
        let scan = shipped.scan();
        let message = ScanMessage {
            table: table_message(shipped.table())?,
            projection: scan.projection.clone(),
            filters: scan.filters.iter().map(|f| f.to_bytes().map(|b| b.to_vec())).collect::<DfResult<Vec<_>>>()?,
            limit: scan.limit,
            partitions: scan.partitions,
        };
        encode(SCAN, &message, buf)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::logical_expr::UserDefinedLogicalNodeCore;
    use datafusion::prelude::{col, lit};

    use super::*;
    use crate::storage::delta::LiveFile;

    fn table() -> ShippedTable {
        let schema = Schema::new(vec![
            Field::new("day", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, true),
        ]);
        let files = LiveFiles {
            store: "s3://bucket".into(),
            partition_columns: vec!["day".into()],
            files: vec![
                LiveFile {
                    path: "lake/silver/t/day=1/a.parquet".into(),
                    size: 10,
                    partition_values: vec![Some("1".into())],
                    kept: None,
                },
                LiveFile {
                    path: "lake/silver/t/day=2/b.parquet".into(),
                    size: 20,
                    partition_values: vec![None],
                    kept: Some((vec![(0, 3), (5, 9)], 9)),
                },
            ],
        };
        ShippedTable::new(&schema, files).expect("table")
    }

    #[test]
    fn a_shipped_table_and_scan_decode_to_what_was_encoded() {
        let ctx = TaskContext::default();
        let logical = LogicalCodec::default();
        let mut buf = Vec::new();
        let t = table();
        logical.try_encode_table_provider(&TableReference::bare("t"), Arc::new(t.clone()), &mut buf).expect("encode");
        let back =
            logical.try_decode_table_provider(&buf, &TableReference::bare("t"), t.schema(), &ctx).expect("decode");
        let back = (back.as_ref() as &dyn Any).downcast_ref::<ShippedTable>().expect("a shipped table");
        assert_eq!(back.files(), t.files());
        // Partition columns last, as the scan reads them.
        let names: Vec<String> = back.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["id", "amount", "day"]);

        let physical = PhysicalCodec::default();
        let scan = Scan {
            projection: Some(vec![1, 2]),
            filters: vec![col("amount").gt(lit(1.5))],
            limit: Some(7),
            partitions: 2,
        };
        let node: Arc<dyn ExecutionPlan> = Arc::new(ShippedScan::new(t, scan).expect("scan"));
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut buf = Vec::new();
        physical.try_encode(Arc::clone(&node), &mut buf, &converter).expect("encode");
        let back = physical.try_decode(&buf, &[Arc::clone(node.children()[0])], &ctx, &converter).expect("decode");
        let back = back.downcast_ref::<ShippedScan>().expect("a shipped scan");
        assert_eq!(back.scan().filters, vec![col("amount").gt(lit(1.5))]);
        assert_eq!(
            (back.scan().projection.clone(), back.scan().limit, back.scan().partitions),
            (Some(vec![1, 2]), Some(7), 2)
        );
        assert_eq!(back.schema(), node.schema());
        // Bytes that are not ours go to Ballista's codec (which refuses these).
        assert!(physical.try_decode(b"not ours", &[], &ctx, &converter).is_err());
    }

    #[test]
    fn a_write_decodes_to_what_was_encoded() {
        let ctx = TaskContext::default();
        let target = Target {
            url: "s3://bucket/lake/gold/m/".into(),
            schema: Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
        };
        let input = datafusion::logical_expr::LogicalPlanBuilder::empty(false).build().expect("plan");
        let node = Extension { node: Arc::new(WriteNode::new(input.clone(), target.clone()).expect("node")) };
        let logical = LogicalCodec::default();
        let mut buf = Vec::new();
        logical.try_encode(&node, &mut buf).expect("encode");
        let back = logical.try_decode(&buf, &[input], &ctx).expect("decode");
        let back = back.node.as_any().downcast_ref::<WriteNode>().expect("a write node");
        assert_eq!(back.target(), &target);
        // The written files' actions are all a write returns.
        assert_eq!(back.schema().fields().len(), 1);

        let rows: Arc<dyn ExecutionPlan> =
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::clone(&target.schema)));
        let exec: Arc<dyn ExecutionPlan> = Arc::new(WriteExec::new(Arc::clone(&rows), target.clone()));
        let physical = PhysicalCodec::default();
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut buf = Vec::new();
        physical.try_encode(exec, &mut buf, &converter).expect("encode");
        let back = physical.try_decode(&buf, &[rows], &ctx, &converter).expect("decode");
        assert_eq!(back.downcast_ref::<WriteExec>().expect("a write").target(), &target);
    }
}
