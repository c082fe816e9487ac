//! Building a gold model: run its SQL over the current silver/gold tables and overwrite the Delta
//! table in one commit. The commit records the versions of the tables it read and the SQL's hash;
//! when neither changed since, the model is up to date and nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::Array;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::aggregates;
use super::models::GoldModel;
use crate::catalog::{self, Registry};
use crate::error::{Error, Result};
use crate::quality::audit::{Stage, audit};
use crate::quality::checks::{THIS, TableCheck, evaluate};
use crate::quality::gates::{GateResult, enforce};
use crate::quality::quarantine::{self, Reason, Rejected};
use crate::runtime::{NodeStage, Now, Timings, ms};
use crate::spec::Action;
use crate::storage::delta::{Table, WriteOptions, cast_to, rows_in};
use crate::storage::{Lake, Layer};

/// What building a model did.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    /// Model name.
    pub model: String,
    /// Whether it was rebuilt (false: its inputs and SQL were unchanged).
    pub rebuilt: bool,
    /// Rows in the table.
    pub rows: u64,
    /// Delta version after the build.
    pub version: Option<i64>,
    /// Versions of the tables it read.
    pub inputs: BTreeMap<String, Option<i64>>,
    /// Expectation results on the result rows (empty when up to date).
    pub expectations: Vec<GateResult>,
    /// Rows dropped by `drop` expectations into `quarantine/<model>`.
    pub dropped: u64,
    /// Incremental builds: the partitions recomputed (None: a full build).
    pub partitions: Option<usize>,
    /// dbt-style incremental builds: the rows its incremental query gave (None: a full build).
    pub added: Option<u64>,
    /// Models kept from their source's changes ([`super::aggregates`]): the change rows applied
    /// (None: built from the source).
    pub maintained: Option<u64>,
    /// Not built because none of its inputs has been published yet.
    pub waiting: bool,
    /// Milliseconds spent.
    pub duration_ms: u64,
    /// Milliseconds per stage of a build (none when it was not built): `prepare` (opening its
    /// inputs, planning), `query` (its SQL, or its groups brought forward from changes; on a
    /// cluster, the executors' build and audit), `expectations`, `dead_letter` (rows `drop`
    /// expectations removed), `write`, `state` (a kept model's state saved), `export`.
    pub timings_ms: Timings,
}

/// Settings of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The run.
    pub run_id: String,
    /// The clock.
    pub now: Now,
    /// Rebuild from scratch even when up to date or incremental.
    pub full_refresh: bool,
    /// Where the model's query runs.
    pub engine: catalog::Engine,
}

/// Builds `model` unless it is up to date: in full, or for an incremental model whose only
/// changed input is its source, only the partitions the source's changes touched.
#[tracing::instrument(skip_all, fields(model = %model.name))]
pub async fn build(lake: &Lake, tables: &dyn Registry, model: &GoldModel, opts: &BuildOptions) -> Result<Build> {
    let (run_id, now) = (opts.run_id.as_str(), opts.now);
    let t0 = Instant::now();
    // Every input is opened once: the fingerprint, the change feed and the build's SQL all read
    // these snapshots, so the build computes from exactly the versions it records.
    let mut inputs = BTreeMap::new();
    let mut opened: Vec<(Layer, &str, Table)> = Vec::new();
    for r in &model.refs {
        let layer = catalog::layer_of(tables, r).unwrap_or(Layer::Silver);
        let t = Table::open(lake, layer, r).await?;
        // The version of its last data change: maintenance after it does not make the model stale.
        inputs.insert(format!("{layer}/{r}"), t.data_version().await?);
        opened.push((layer, r.as_str(), t));
    }
    // The fingerprint covers the SQL and the expectations: changing either rebuilds the model.
    let mut hasher = Sha256::new();
    hasher.update(model.sql.as_bytes());
    for g in &model.gates {
        hasher.update(format!("\0{}\0{:?}\0{}", g.name, g.action, g.sql).as_bytes());
    }
    for c in &model.checks {
        hasher.update(format!("\0{}\0{:?}\0{}", c.name, c.action, c.definition).as_bytes());
    }
    let sql_hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let fingerprint = json!({ "inputs": inputs, "sql_sha256": sql_hash });
    let table = Table::open(lake, Layer::Gold, &model.name).await?;
    // Nothing to compute from until one of its inputs has been published (a model reading no
    // table computes from nothing and is built at once).
    if !table.exists() && !inputs.is_empty() && inputs.values().all(Option::is_none) {
        return Ok(Build {
            model: model.name.clone(),
            rebuilt: false,
            rows: 0,
            version: None,
            inputs,
            expectations: Vec::new(),
            dropped: 0,
            partitions: None,
            added: None,
            maintained: None,
            waiting: true,
            duration_ms: ms(t0),
            timings_ms: Timings::new(),
        });
    }
    // A GROUP BY over one silver table with a change data feed (joined to other tables or not) is
    // kept from its changes, unless its SQL reads the clock (a kept row would keep the value of the
    // run that applied it).
    let candidate = match aggregates::Shape::of(&model.sql) {
        Ok(shape) if model.incremental_query.is_none() && !model.varies => {
            let find = |name: &str| {
                catalog::resolve(tables, name)
                    .and_then(|(layer, name)| opened.iter().position(|(l, n, _)| *l == layer && *n == name))
            };
            let source = find(&shape.source).filter(|&i| opened[i].0 == Layer::Silver && opened[i].2.change_feed());
            let joined: Option<Vec<usize>> = shape.joined.iter().map(|n| find(n)).collect();
            match (source, joined) {
                // A table joined to itself changes on both sides.
                (Some(s), Some(joined)) if !joined.contains(&s) => {
                    let mut versions = serde_json::Map::new();
                    for i in joined {
                        let (layer, name, t) = &opened[i];
                        let label = format!("{layer}/{name}");
                        let version = inputs.get(&label).cloned().flatten();
                        versions.insert(label, json!({ "version": version, "id": t.id() }));
                    }
                    Some((shape, opened[s].2.clone(), Value::Object(versions)))
                }
                _ => None,
            }
        }
        Ok(_) => None,
        Err(why) => {
            tracing::debug!(model = %model.name, "not kept from changes: {why}");
            None
        }
    };
    let mut partitions: Option<Vec<String>> = None;
    let mut query = None;
    let mut previous = None;
    if table.exists() && !opts.full_refresh {
        let info = table.last_commit_info().await?;
        previous = info.get("medallion").and_then(|m| m.get("fingerprint")).cloned();
        // dbt-style incremental: built before from the same SQL, only the new rows are computed
        // (a changed SQL or expectation rebuilds in full, as for partition-incremental models).
        query = model
            .incremental_query
            .as_ref()
            .filter(|_| previous.as_ref().and_then(|p| p.get("sql_sha256")) == fingerprint.get("sql_sha256"));
        // A model reading the clock is built every run: the same inputs give other rows tomorrow.
        if previous.as_ref() == Some(&fingerprint) && !model.varies {
            if model.parquet {
                super::export::ensure(lake, &table, &model.name).await?;
            }
            let rows = table.count_rows().await?;
            return Ok(Build {
                model: model.name.clone(),
                rebuilt: false,
                rows,
                version: table.version(),
                inputs,
                expectations: Vec::new(),
                dropped: 0,
                partitions: None,
                added: None,
                maintained: None,
                waiting: false,
                duration_ms: ms(t0),
                timings_ms: Timings::new(),
            });
        }
    }
    opened.push((Layer::Gold, model.name.as_str(), table.clone()));
    let ctx = catalog::session_of(tables, &opened).await?;
    let context = format!("gold model `{}` ({})", model.name, model.file.display());
    // On a cluster, the model's query runs on the executors; audits and the published rows this
    // build keeps are read here.
    let remote = catalog::remote_session(tables, &opened, &opts.engine).await?;
    let kept_from_changes = match candidate {
        Some((shape, source, joined)) if remote.is_none() => match aggregates::Plan::new(&ctx, shape, &model.sql).await
        {
            Ok(plan) => Some((plan, source, joined)),
            Err(why) => {
                tracing::info!(model = %model.name, "built in full, not from changes: {why}");
                None
            }
        },
        _ => None,
    };
    if kept_from_changes.is_none()
        && !model.varies
        && let (Some((column, source)), Some(prev)) = (&model.incremental, &previous)
    {
        let source_table = opened.iter().find(|(_, name, _)| *name == source.as_str()).map(|(_, _, t)| t);
        partitions = match source_table {
            Some(t) => touched(t, column, prev, &fingerprint).await?,
            None => None,
        };
    }
    // Incremental: only the touched partitions are computed (the filter on a grouping column
    // reaches the scan), and they replace exactly those partitions.
    let mut replace_where = match (&model.incremental, &partitions) {
        (Some((column, _)), Some(values)) => Some(in_list(column, values)),
        _ => None,
    };
    // When the changes touch every published partition, a full build is the same work, cheaper.
    if let (Some(predicate), Some(values)) = (&replace_where, &partitions)
        && !values.is_empty()
        && covers_all(&ctx, model, predicate).await?
    {
        (replace_where, partitions) = (None, None);
    }
    let sql = match (&replace_where, query) {
        (Some(predicate), _) => format!("SELECT * FROM ({}) AS m WHERE {predicate}", model.sql),
        (None, Some(q)) => q.sql.clone(),
        (None, None) => model.sql.clone(),
    };
    let commit_metadata =
        || HashMap::from([("medallion".to_string(), json!({ "run_id": run_id, "fingerprint": fingerprint }))]);
    // A full or partition-incremental build without `drop` expectations never brings its rows
    // here: the executors write them and audit them where they are, and this process publishes
    // the files.
    let drops = model.gates.iter().any(|g| g.action == Action::Drop) || model.checks.iter().any(|c| c.drops());
    // (No partition touched: the in-process path records the new input versions in an empty commit.)
    let none_touched = replace_where.is_some() && partitions.as_ref().is_some_and(Vec::is_empty);
    let mut timings = Timings::from([(NodeStage::Prepare, ms(t0))]);
    if let Some(remote) = remote.as_ref().filter(|_| query.is_none() && !drops && !none_touched) {
        // Incremental: the published rows outside the touched partitions are written again beside
        // the new ones, and the checks see the whole new table, scoped as in process.
        let keep = replace_where.as_ref().map(|predicate| {
            let source = model.incremental.as_ref().map(|(_, s)| s.as_str()).unwrap_or_default();
            let is_source = |name: &str| catalog::resolve(tables, name) == Some((Layer::Silver, source.to_string()));
            (where_not(predicate), model.checks.iter().map(|c| c.scoped(is_source, predicate)).collect())
        });
        let t = Instant::now();
        let (table, rows, expectations) =
            build_on_cluster(remote, table, model, (&sql, keep), &context, now, commit_metadata()).await?;
        timings.insert(NodeStage::Query, ms(t));
        export(lake, model, &table, &mut timings).await?;
        return Ok(Build {
            model: model.name.clone(),
            rebuilt: true,
            rows,
            version: table.version(),
            inputs,
            dropped: 0,
            expectations,
            partitions: partitions.filter(|_| replace_where.is_some()).map(|p| p.len()),
            added: None,
            maintained: None,
            waiting: false,
            duration_ms: ms(t0),
            timings_ms: timings,
        });
    }
    let t = Instant::now();
    let (batches, kept_state) = match &kept_from_changes {
        Some((plan, source, joined)) => {
            let mut kept =
                aggregates::build(lake, &ctx, plan, (&model.name, source, joined.clone()), opts.full_refresh).await?;
            (std::mem::take(&mut kept.rows), Some(kept))
        }
        None => {
            let df = catalog::read_only(remote.as_ref().unwrap_or(&ctx), &sql, &context).await?;
            (df.collect().await.map_err(|e| Error::sql(&context, e))?, None)
        }
    };
    let maintained = kept_state.as_ref().and_then(|k| k.changes);
    let batches = conform(batches, &model.schema, &context)?;
    timings.insert(NodeStage::Query, ms(t));
    let t = Instant::now();
    // Write-audit-publish: expectations run on the result before anything is written.
    let (mut batches, mut dropped, mut expectations) = audit_rows(model, batches)?;
    // dbt-style incremental: the published rows this build keeps, read once for both the
    // expectations and the write.
    let mut kept: Option<Vec<RecordBatch>> = None;
    if !model.checks.is_empty() {
        let schema = batches.first().map_or_else(|| model.schema.clone(), RecordBatch::schema);
        match &replace_where {
            None if query.is_some() => {
                // The candidate is the table as this build will leave it.
                let fresh = batches.len();
                let published = kept_rows(&ctx, model, query, &batches, &schema).await?;
                let mut candidate = published.clone();
                kept = Some(published);
                candidate.extend(batches);
                let mut audited = audit(&ctx, &model.checks, &schema, candidate, Stage::Rows, now).await?;
                expectations.extend(audited.results);
                batches = audited.kept.split_off(audited.kept.len() - fresh);
            }
            None => {
                let audited = audit(&ctx, &model.checks, &schema, batches, Stage::Rows, now).await?;
                let source = format!("gold/{}", model.name);
                dropped.extend(quarantine::from_rows(&audited.removed, audited.reasons, &source, |_| {
                    model.file.display().to_string()
                })?);
                expectations.extend(audited.results);
                batches = audited.kept;
            }
            Some(predicate) => {
                // The candidate is the published rows outside the touched partitions plus the
                // new ones (incremental models have no set-level `drop`: nothing is removed).
                let mut candidate = untouched(&ctx, model, &where_not(predicate), &schema).await?;
                let fresh = batches.len();
                candidate.extend(batches);
                let source = model.incremental.as_ref().map(|(_, s)| s.as_str()).unwrap_or_default();
                let is_source =
                    |name: &str| catalog::resolve(tables, name) == Some((Layer::Silver, source.to_string()));
                let checks: Vec<_> = model.checks.iter().map(|c| c.scoped(is_source, predicate)).collect();
                let mut audited = audit(&ctx, &checks, &schema, candidate, Stage::Rows, now).await?;
                expectations.extend(audited.results);
                batches = audited.kept.split_off(audited.kept.len() - fresh);
            }
        }
    }
    enforce(&format!("gold/{}", model.name), &mut expectations)?;
    timings.insert(NodeStage::Expectations, ms(t));
    if !dropped.is_empty() {
        let t = Instant::now();
        let q = Table::open(lake, Layer::Quarantine, &model.name).await?;
        q.write(quarantine::to_batches(&dropped, now.timestamp_micros(), run_id)?, WriteOptions::default()).await?;
        timings.insert(NodeStage::DeadLetter, ms(t));
    }
    let written: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let schema = batches.first().map_or_else(|| model.schema.clone(), RecordBatch::schema);
    let batches = if batches.is_empty() { vec![RecordBatch::new_empty(schema.clone())] } else { batches };
    let metadata: HashMap<String, Value> = commit_metadata();
    let added = query.map(|_| written);
    crate::runtime::faults::check(&format!("gold/{}", model.name), "write")?;
    let t = Instant::now();
    // A keyed model's table marks replaced rows as its `merge` says: a switch is a commit of its
    // own (back to copy-on-write, the vectors are purged first).
    let keyed_model = model.incremental_query.as_ref().is_some_and(|q| !q.unique_key.is_empty());
    let table =
        if table.exists() && keyed_model { table.with_deletion_vectors(model.deletion_vectors).await? } else { table };
    // Keyed dbt-style incremental (dbt's delete+insert): the published rows with the new rows'
    // keys are replaced by the new rows, touching only the files that hold such keys; where the
    // table does not allow that (partitioned, say), the published rows other than those keys
    // and the new rows replace the table.
    let keyed = query.filter(|q| !q.unique_key.is_empty() && written > 0);
    let replaced = match keyed {
        Some(q) => table.replace_keys(&batches, &q.unique_key, metadata.clone()).await?,
        None => None,
    };
    let batches = match keyed {
        Some(_) if replaced.is_some() => Vec::new(),
        Some(q) => {
            let mut all = match kept {
                Some(k) => k,
                None => kept_rows(&ctx, model, Some(q), &batches, &schema).await?,
            };
            all.extend(batches);
            all
        }
        None => batches,
    };
    let write = match (&replace_where, &partitions) {
        // No partition touched: an empty commit records the new input versions.
        (Some(_), Some(values)) if values.is_empty() => WriteOptions { metadata, ..Default::default() },
        // dbt-style incremental without a key: the new rows are appended.
        (None, _) if query.is_some_and(|q| q.unique_key.is_empty() || written == 0) => {
            WriteOptions { metadata, ..Default::default() }
        }
        (Some(predicate), _) => WriteOptions { replace_where: Some(predicate.clone()), metadata, ..Default::default() },
        _ => WriteOptions { overwrite: true, metadata, deletion_vectors: model.deletion_vectors, ..Default::default() },
    };
    let table = match replaced {
        Some(table) => table,
        None => table.write(batches, write).await?,
    };
    timings.insert(NodeStage::Write, ms(t));
    if let (Some((plan, source, _)), Some(kept)) = (&kept_from_changes, kept_state) {
        let t = Instant::now();
        tracing::info!(model = %model.name, changes = ?kept.changes, recomputed_groups = kept.recomputed, "kept from changes");
        // The model is published; a state not saved is brought forward from an older version next run.
        if let Err(e) = aggregates::save(lake, plan, (&model.name, source), kept).await {
            tracing::warn!(model = %model.name, "aggregate state not saved: {e}");
        }
        timings.insert(NodeStage::State, ms(t));
    }
    export(lake, model, &table, &mut timings).await?;
    let rows = if replace_where.is_some() || query.is_some() { table.count_rows().await? } else { written };
    Ok(Build {
        model: model.name.clone(),
        rebuilt: true,
        rows,
        version: table.version(),
        inputs,
        dropped: dropped.len() as u64,
        expectations,
        partitions: partitions.map(|p| p.len()),
        added,
        maintained,
        waiting: false,
        duration_ms: ms(t0),
        timings_ms: timings,
    })
}

/// Writes a built model's Parquet export when it has one (timed as `export`).
async fn export(lake: &Lake, model: &GoldModel, table: &Table, timings: &mut Timings) -> Result<()> {
    if model.parquet {
        let t = Instant::now();
        crate::runtime::faults::check(&format!("gold/{}", model.name), "export")?;
        super::export::ensure(lake, table, &model.name).await?;
        timings.insert(NodeStage::Export, ms(t));
    }
    Ok(())
}

/// A build on a cluster: the executors write the rows of the model's `sql` as files of its table
/// (not yet part of it), its expectations run over those files on the executors, and the files are
/// published in one commit replacing the table's, or deleted when a `fail` expectation stops the
/// build. With `keep` (a partition-incremental build: a `WHERE` selecting the published rows
/// outside the touched partitions, and the checks scoped to them), those rows are written again
/// beside the new ones: row-level expectations see the new rows, the checks the whole new table.
/// Returns the table after the commit, its rows and the expectations' results.
async fn build_on_cluster(
    remote: &SessionContext,
    table: Table,
    model: &GoldModel,
    (sql, keep): (&str, Option<(String, Vec<TableCheck>)>),
    context: &str,
    now: Now,
    metadata: HashMap<String, Value>,
) -> Result<(Table, u64, Vec<GateResult>)> {
    let node = format!("gold/{}", model.name);
    let df = catalog::read_only(remote, sql, context).await?;
    let mut adds = catalog::write_on_cluster(df, &table, model.schema.clone()).await?;
    let fresh = adds.len();
    let audited = async {
        if let Some((selection, _)) = &keep {
            let kept = format!("SELECT * FROM gold.{} WHERE {selection}", crate::spec::ident(&model.name));
            let df = catalog::read_only(remote, &kept, context).await?;
            adds.extend(catalog::write_on_cluster(df, &table, model.schema.clone()).await?);
        }
        catalog::register_written(remote, THIS, &table, &model.schema, &adds[..fresh])?;
        let mut results = Vec::with_capacity(model.gates.len() + model.checks.len());
        for gate in &model.gates {
            results.push(gate.evaluate_on(remote, THIS, &node).await?);
        }
        let checks: Vec<&TableCheck> = match &keep {
            Some((_, scoped)) => {
                catalog::register_written(remote, THIS, &table, &model.schema, &adds)?;
                scoped.iter().collect()
            }
            None => model.checks.iter().collect(),
        };
        results.extend(evaluate(remote, &checks, now, None).await?);
        enforce(&node, &mut results)?;
        crate::runtime::faults::check(&node, "write")?;
        Ok(results)
    }
    .await;
    let results = match audited {
        Ok(results) => results,
        Err(e) => {
            if let Err(left) = table.discard_files(&adds).await {
                tracing::warn!("{node}: unpublished files left for vacuum: {left}");
            }
            return Err(e);
        }
    };
    let rows = rows_in(&adds)?;
    let table = table.commit_files(&adds, &model.schema, None, metadata).await?;
    Ok((table, rows, results))
}

/// Evaluates the model's row-level expectations on its result: returns the rows to publish, the rows
/// `drop` expectations removed (as dead-letter records), and every expectation's result.
fn audit_rows(
    model: &GoldModel,
    batches: Vec<RecordBatch>,
) -> Result<(Vec<RecordBatch>, Vec<Rejected>, Vec<GateResult>)> {
    let mut results: Vec<GateResult> = model.gates.iter().map(|g| g.result()).collect();
    if model.gates.is_empty() {
        return Ok((batches, Vec::new(), results));
    }
    let mut kept = Vec::with_capacity(batches.len());
    let mut dropped = Vec::new();
    for batch in batches {
        let n = batch.num_rows();
        let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); n];
        for (gate, result) in model.gates.iter().zip(results.iter_mut()) {
            let fails = gate.failing(&batch)?;
            result.rows_checked += n as u64;
            result.failing_rows += fails.iter().filter(|&&f| f).count() as u64;
            if gate.action == Action::Drop {
                for r in (0..n).filter(|&r| fails[r]) {
                    reasons[r].push(Reason::expectation(&gate.name, &gate.sql));
                }
            }
        }
        let drop_mask: Vec<bool> = reasons.iter().map(|r| !r.is_empty()).collect();
        if !drop_mask.iter().any(|&d| d) {
            kept.push(batch);
            continue;
        }
        let keep = BooleanArray::from(drop_mask.iter().map(|d| !d).collect::<Vec<_>>());
        kept.push(filter_record_batch(&batch, &keep).map_err(|e| Error::arrow("dropping gold rows", e))?);
        let gone = filter_record_batch(&batch, &BooleanArray::from(drop_mask))
            .map_err(|e| Error::arrow("dropping gold rows", e))?;
        let why: Vec<Vec<Reason>> = reasons.into_iter().filter(|r| !r.is_empty()).collect();
        dropped.extend(quarantine::from_rows(&[gone], why, &format!("gold/{}", model.name), |_| {
            model.file.display().to_string()
        })?);
    }
    Ok((kept, dropped, results))
}

/// For an incremental model whose previous build had the same SQL and the same versions of every
/// input but `source`: the `column` values (as SQL literals) of the source rows changed since
/// that build. None when a full build is needed.
async fn touched(table: &Table, column: &str, prev: &Value, now: &Value) -> Result<Option<Vec<String>>> {
    if prev.get("sql_sha256") != now.get("sql_sha256") {
        return Ok(None);
    }
    let key = table.label.clone();
    let (Some(prev_inputs), Some(now_inputs)) =
        (prev.get("inputs").and_then(Value::as_object), now.get("inputs").and_then(Value::as_object))
    else {
        return Ok(None);
    };
    let others_same = now_inputs.iter().filter(|(k, _)| **k != key).all(|(k, v)| prev_inputs.get(k) == Some(v));
    let Some(after) = prev_inputs.get(&key).and_then(Value::as_i64) else { return Ok(None) };
    if !others_same || prev_inputs.len() != now_inputs.len() {
        return Ok(None);
    }
    let Some(values) = table.changed_values(column, after).await? else { return Ok(None) };
    if values.num_columns() == 0 {
        return Ok(Some(Vec::new()));
    }
    Ok(literals(values.column(0)))
}

/// Each value as a SQL literal of its type (`NULL` for null); None for types without one here.
fn literals(col: &datafusion::arrow::array::ArrayRef) -> Option<Vec<String>> {
    use datafusion::arrow::datatypes::DataType;
    let sql_type = match col.data_type() {
        DataType::Date32 => "DATE",
        DataType::Int64 | DataType::Int32 => "BIGINT",
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "VARCHAR",
        DataType::Boolean => "BOOLEAN",
        _ => return None,
    };
    let text = datafusion::arrow::compute::cast(col, &DataType::Utf8).ok()?;
    let text = text.as_any().downcast_ref::<datafusion::arrow::array::StringArray>()?;
    Some(
        (0..text.len())
            .map(|i| {
                if text.is_null(i) {
                    "NULL".to_string()
                } else {
                    format!("CAST({} AS {sql_type})", crate::spec::quote(text.value(i)))
                }
            })
            .collect(),
    )
}

/// `column IN (…)`, with `OR column IS NULL` when a null partition is among them.
fn in_list(column: &str, values: &[String]) -> String {
    let c = crate::spec::ident(column);
    let non_null: Vec<&str> = values.iter().filter(|v| *v != "NULL").map(String::as_str).collect();
    let mut parts = Vec::new();
    if !non_null.is_empty() {
        parts.push(format!("{c} IN ({})", non_null.join(", ")));
    }
    if non_null.len() != values.len() {
        parts.push(format!("{c} IS NULL"));
    }
    if parts.is_empty() { "false".to_string() } else { format!("({})", parts.join(" OR ")) }
}

/// Whether every published row of `model` matches `predicate`.
async fn covers_all(ctx: &SessionContext, model: &GoldModel, predicate: &str) -> Result<bool> {
    let context = format!("counting gold/{} outside the touched partitions", model.name);
    let sql = format!("SELECT count(*) FROM gold.{} WHERE NOT coalesce({predicate}, false)", model.name);
    let b = catalog::query(ctx, &sql, &context).await?;
    use datafusion::arrow::array::AsArray;
    Ok(b.first()
        .filter(|b| b.num_rows() > 0)
        .is_some_and(|b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0) == 0))
}

/// `WHERE` selecting the rows outside `predicate` (a null predicate is outside).
fn where_not(predicate: &str) -> String {
    format!("NOT coalesce({predicate}, false)")
}

/// The published rows a dbt-style incremental build keeps beside its `fresh` rows: all of them
/// without a unique key, else those whose key no fresh row carries (a null key part never
/// matches, as in SQL and dbt).
async fn kept_rows(
    ctx: &SessionContext,
    model: &GoldModel,
    query: Option<&crate::gold::models::IncrementalQuery>,
    fresh: &[RecordBatch],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let keys = query.map(|q| q.unique_key.as_slice()).unwrap_or_default();
    if keys.is_empty() {
        return untouched(ctx, model, "true", schema).await;
    }
    let context = format!("gold/{}: the new rows' keys", model.name);
    let key_schema = Arc::new(
        schema
            .project(
                &keys
                    .iter()
                    .map(|k| schema.index_of(k))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::arrow(&context, e))?,
            )
            .map_err(|e| Error::arrow(&context, e))?,
    );
    let key_batches = fresh
        .iter()
        .map(|b| {
            let cols = keys
                .iter()
                .map(|k| {
                    b.column_by_name(k).cloned().ok_or_else(|| Error::Internal(format!("{context}: no column {k}")))
                })
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(key_schema.clone(), cols).map_err(|e| Error::arrow(&context, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let incoming = "medallion_incoming_keys";
    let mem = datafusion::datasource::MemTable::try_new(key_schema, vec![key_batches])
        .map_err(|e| Error::sql(&context, e))?;
    ctx.register_table(incoming, Arc::new(mem)).map_err(|e| Error::sql(&context, e))?;
    let on: Vec<String> = keys
        .iter()
        .map(|k| {
            let k = crate::spec::ident(k);
            format!("i.{k} = gold.{}.{k}", crate::spec::ident(&model.name))
        })
        .collect();
    let predicate = format!("NOT EXISTS (SELECT 1 FROM {incoming} AS i WHERE {})", on.join(" AND "));
    let kept = untouched(ctx, model, &predicate, schema).await;
    ctx.deregister_table(incoming).map_err(|e| Error::sql(&context, e))?;
    kept
}

/// The published rows of `model` matching `selection` (a `WHERE` condition), in `schema`'s types.
async fn untouched(
    ctx: &SessionContext,
    model: &GoldModel,
    selection: &str,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let context = format!("reading the published rows of gold/{} the build keeps", model.name);
    let sql = format!("SELECT * FROM gold.{} WHERE {selection}", crate::spec::ident(&model.name));
    let batches = catalog::query(ctx, &sql, &context).await?;
    batches.iter().map(|b| cast_to(b, schema, &context)).collect()
}

/// The result in the types the model was planned with (and its expectations compiled against):
/// DataFusion reads Delta strings as `Utf8View` where planning over empty tables said `Utf8`.
fn conform(batches: Vec<RecordBatch>, planned: &SchemaRef, context: &str) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let differs = b.schema().fields().iter().zip(planned.fields()).any(|(a, p)| a.data_type() != p.data_type());
            if !differs || b.num_columns() != planned.fields().len() {
                return Ok(b);
            }
            let mut fields = Vec::with_capacity(b.num_columns());
            let mut columns = Vec::with_capacity(b.num_columns());
            for ((f, col), p) in b.schema().fields().iter().zip(b.columns()).zip(planned.fields()) {
                if f.data_type() != p.data_type() && can_cast_types(f.data_type(), p.data_type()) {
                    columns.push(cast(col, p.data_type()).map_err(|e| Error::arrow(context, e))?);
                    fields.push(f.as_ref().clone().with_data_type(p.data_type().clone()));
                } else {
                    columns.push(Arc::clone(col));
                    fields.push(f.as_ref().clone());
                }
            }
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::arrow(context, e))
        })
        .collect()
}
