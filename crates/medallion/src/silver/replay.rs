//! Dead-letter replay: quarantined records re-validated against the *current* contract; those
//! that pass go through the normal silver path (dedup, set/table-level expectations, MERGE with
//! the newer-wins guard) and are marked replayed in the dead letter; the others stay, with their
//! reasons updated.
//!
//! ```text
//! select outstanding records (--where) ─▶ validate (row-level gates) ─▶ record replay intent N
//!   ─▶ silver MERGE      txn (medallion/replay/<table>, N)   (skipped if already there)
//!   ─▶ quarantine rewrite txn (medallion/replay/<table>, N)   ← replay N is done
//! ```
//!
//! Accounting per replay: `selected = inserted + updated + superseded + rejected + dropped`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::json;

use super::evolve::{self, Verdict};
use super::promote::{plan, process};
use super::publish::publish;
use super::table::SilverTable;
use super::validate::Origin;
use crate::bronze::decode::BatchFormat;
use crate::catalog::{self, Registry};
use crate::error::{Error, Result};
use crate::quality::gates::{GateResult, enforce};
use crate::quality::quarantine::{self, Reason, Rejected, Stored};
use crate::runtime::Now;
use crate::runtime::ledger::{self, ReplayIntent};
use crate::spec::ident;
use crate::storage::delta::{Gate, Table, Txn, WriteOptions, cast_to};
use crate::storage::{Lake, Layer};

/// Settings of a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Run id, recorded on the records it examines.
    pub run_id: String,
    /// The clock.
    pub now: Now,
    /// SQL boolean over the quarantine table's columns selecting the records to replay.
    pub filter: Option<String>,
    /// Only report what would pass.
    pub dry_run: bool,
    /// How long to wait for the lake's lock while another writer holds it (zero: fail at once).
    pub lock_wait: std::time::Duration,
}

/// How the records that had one reason fare.
#[derive(Debug, Clone, Serialize)]
pub struct ReasonCount {
    /// The rule they failed.
    pub rule: String,
    /// Its column, for column rules.
    pub column: Option<String>,
    /// Records that had it.
    pub records: u64,
    /// Of those, records that pass the current contract.
    pub passing: u64,
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replay {
    /// Silver table.
    pub table: String,
    /// Replay number (txn version of its commits); None for a dry run or nothing to replay.
    pub intent: Option<i64>,
    /// Whether it finished an interrupted replay.
    pub resumed: bool,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Dead-letter records examined.
    pub selected: u64,
    /// Of those, records that pass the current contract and row-level expectations.
    pub passing: u64,
    /// New silver keys.
    pub inserted: u64,
    /// Silver rows replaced by a replayed, newer record (SCD 2: versions closed by a delete).
    pub updated: u64,
    /// Keys removed by replayed delete records (SCD 1 with `delete_when`).
    pub deleted: u64,
    /// Passing records that lost to a newer record (in silver or in the replay).
    pub superseded: u64,
    /// Records still rejected (reasons updated).
    pub rejected: u64,
    /// Passing records removed by a set- or table-level `drop` expectation (a new dead-letter
    /// record each, with the expectation as the reason).
    pub dropped: u64,
    /// Per previous reason: records and how many pass now.
    pub by_reason: Vec<ReasonCount>,
    /// Expectation results over the replayed records.
    pub expectations: Vec<GateResult>,
    /// Silver version after the replay.
    pub silver_version: Option<i64>,
    /// Quarantine version after the replay.
    pub quarantine_version: Option<i64>,
}

impl Replay {
    /// Records moved out of the dead letter into silver (inserted + updated + deleted).
    pub fn promoted(&self) -> u64 {
        self.inserted + self.updated + self.deleted
    }
}

/// One selected dead-letter record.
struct Record {
    id: String,
    raw: String,
    batch_id: Option<String>,
    source: Option<String>,
    source_file: Option<String>,
    line: Option<i64>,
    ingested_at: Option<i64>,
    failed_at: Option<i64>,
    run_id: Option<String>,
    reasons: Vec<Reason>,
}

/// Replays `table`'s outstanding dead-letter records (those `opts.filter` selects), finishing an
/// interrupted replay first.
#[tracing::instrument(skip_all, fields(table = %table.name))]
pub async fn replay(lake: &Lake, tables: &dyn Registry, table: &SilverTable, opts: &ReplayOptions) -> Result<Replay> {
    let what = format!("replay {} ({})", table.name, opts.run_id);
    let lock = crate::runtime::lock::acquire_waiting(lake, &what, opts.lock_wait).await?;
    let out = replay_locked(lake, tables, table, opts).await;
    lock.release_after(out).await
}

async fn replay_locked(
    lake: &Lake,
    tables: &dyn Registry,
    table: &SilverTable,
    opts: &ReplayOptions,
) -> Result<Replay> {
    let mut out = Replay { table: table.name.clone(), dry_run: opts.dry_run, ..Default::default() };
    let q = Table::open(lake, Layer::Quarantine, &table.name).await?;
    if !q.exists() {
        return Ok(out);
    }
    // Replayed rows are merged into the published table: it must hold the current contract.
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    match evolve::assess(table, &silver).await? {
        Verdict::Unchanged => {}
        Verdict::Evolve(_) if opts.dry_run => {}
        Verdict::Evolve(changes) => {
            evolve::add_columns(table, silver, &changes, &opts.run_id).await?;
        }
        Verdict::Rebuild(changes) | Verdict::Refuse(changes) => return Err(evolve::refusal(table, &changes)),
    }
    let app = ledger::replay_app_id(&table.name);
    let done = q.txn_version(&app).await?.unwrap_or(0);
    let intents = ledger::replay_intents(lake, &table.name).await?;
    let open = intents.get(&(done + 1)).filter(|_| !opts.dry_run).cloned();
    let ctx = catalog::session(lake, tables).await?;
    let selection = match &open {
        Some(intent) => {
            out.resumed = true;
            let ids: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(intent.ids.clone()));
            let batch =
                RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])), vec![ids])
                    .map_err(|e| Error::arrow("replay ids", e))?;
            let t = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| Error::sql("replay ids", e))?;
            ctx.register_table("__medallion_replay_ids", Arc::new(t)).map_err(|e| Error::sql("replay ids", e))?;
            "_id IN (SELECT id FROM __medallion_replay_ids)".to_string()
        }
        None => match &opts.filter {
            Some(f) => {
                // One expression, parsed: text such as `1=1) OR (1=1` cannot widen the selection.
                let f = catalog::one_expression(f).map_err(|why| Error::Refused {
                    what: format!("the replay filter `{f}`"),
                    why: format!("it is not one SQL condition over the dead letter's columns: {why}"),
                })?;
                format!("_replayed_at IS NULL AND ({f})")
            }
            None => "_replayed_at IS NULL".to_string(),
        },
    };
    let records = select(&ctx, &table.name, &selection).await?;
    out.selected = records.len() as u64;
    if records.is_empty() {
        if let Some(intent) = &open {
            // Its records are gone: a rebuild replaced the dead letter (and judged them again).
            // Closing the intent keeps later replays from resuming it forever.
            let txn = Txn { app_id: app.clone(), version: intent.version };
            let meta = HashMap::from([(
                "medallion".to_string(),
                json!({ "run_id": opts.run_id, "replay": intent.version, "superseded_by_rebuild": true }),
            )]);
            let empty = RecordBatch::new_empty(quarantine::schema());
            q.write(vec![empty], WriteOptions { txn: Some(txn), metadata: meta, ..Default::default() }).await?;
        }
        return Ok(out);
    }

    // Validate, one synthetic file per (batch, file): line i of a group is its record i.
    let mut groups: BTreeMap<(Option<i64>, String, String, String), Vec<usize>> = BTreeMap::new();
    let mut still: Vec<Option<Vec<Reason>>> = vec![None; records.len()];
    for (i, r) in records.iter().enumerate() {
        if r.raw.trim().is_empty() {
            // Nothing left to re-read (an unreadable part of a file): it stays as it was.
            still[i] = Some(r.reasons.clone());
            continue;
        }
        let key = (
            r.ingested_at,
            r.source_file.clone().unwrap_or_default(),
            r.batch_id.clone().unwrap_or_default(),
            r.source.clone().unwrap_or_default(),
        );
        groups.entry(key).or_default().push(i);
    }
    let mut valid = Vec::new();
    let mut valid_records = Vec::new();
    let mut gates: Vec<GateResult> = table.contract.gates.iter().map(|g| g.result()).collect();
    let mut file_of: HashMap<String, String> = HashMap::new();
    for ((ingested_at, file, batch_id, source), members) in &groups {
        let text: String = members.iter().map(|&i| format!("{}\n", records[i].raw.replace('\n', " "))).collect();
        let origin = Origin {
            batch_id: batch_id.clone(),
            source: if source.is_empty() { table.source.clone() } else { source.clone() },
            file: file.clone(),
            ingested_at: ingested_at.and_then(chrono::DateTime::from_timestamp_micros).map(|t| t.to_rfc3339()),
        };
        file_of.insert(batch_id.clone(), file.clone());
        let contract = Arc::clone(&table.contract);
        let res = tokio::task::spawn_blocking(move || {
            process(&contract, text.as_bytes(), &BatchFormat::Ndjson, &origin, 1, None)
        })
        .await
        .map_err(|e| Error::Internal(format!("replay validation task failed: {e}")))??;
        let record_of =
            |line: u64| usize::try_from(line).ok().and_then(|l| l.checked_sub(1)).and_then(|l| members.get(l)).copied();
        for line in &res.valid_lines {
            valid_records
                .push(record_of(*line).ok_or_else(|| Error::Internal(format!("replay: no record for line {line}")))?);
        }
        for rej in res.rejected {
            let i = record_of(rej.line)
                .ok_or_else(|| Error::Internal(format!("replay: no record for line {}", rej.line)))?;
            still[i] = Some(rej.reasons);
        }
        for (g, (checked, failing)) in gates.iter_mut().zip(res.gate_counts) {
            g.rows_checked += checked;
            g.failing_rows += failing;
        }
        valid.extend(res.valid);
    }
    out.passing = valid_records.len() as u64;
    out.rejected = still.iter().filter(|s| s.is_some()).count() as u64;
    if out.passing + out.rejected != out.selected {
        return Err(Error::Internal(format!(
            "replay of {}: {} passing + {} rejected of {} records",
            table.name, out.passing, out.rejected, out.selected
        )));
    }
    out.by_reason = by_reason(&records, &still);
    let node = format!("silver/{}", table.name);
    out.expectations = gates;
    enforce(&node, &mut out.expectations)?;
    let unchanged = out.passing == 0 && records.iter().zip(&still).all(|(r, s)| s.as_ref() == Some(&r.reasons));
    if opts.dry_run || (unchanged && !out.resumed) {
        // Nothing passes and no reason changed: a replay would write nothing new.
        return Ok(out);
    }

    let replayed = numbered(&valid, &valid_records)?;
    let mut timings = crate::runtime::Timings::new();
    let file_of = |batch: &str| file_of.get(batch).cloned().unwrap_or_default();
    let (publish_plan, removed, dropped) =
        plan(lake, tables, table, (valid, false), opts.now, file_of, &mut out.expectations, &mut timings).await?;
    out.dropped = dropped.len() as u64;

    let intent = match open {
        Some(intent) => intent,
        None => {
            let intent = ReplayIntent {
                version: done + 1,
                run_id: opts.run_id.clone(),
                ids: records.iter().map(|r| r.id.clone()).collect(),
            };
            ledger::record_replay(lake, &table.name, &intent).await?;
            intent
        }
    };
    out.intent = Some(intent.version);
    let txn = Txn { app_id: app.clone(), version: intent.version };
    let meta = HashMap::from([(
        "medallion".to_string(),
        json!({ "run_id": opts.run_id, "replay": intent.version, "contract": table.record.to_json() }),
    )]);
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let merge_now = out.passing > 0 && silver.txn_version(&app).await?.unwrap_or(0) < intent.version;
    let mut superseded = None;
    if merge_now {
        let published = publish(lake, table, publish_plan, (txn.clone(), meta.clone()), Gate::open()).await?;
        (out.inserted, out.updated, out.deleted, out.silver_version) =
            (published.inserted, published.updated, published.deleted, published.version);
        superseded = published.superseded;
    } else {
        out.silver_version = silver.version();
    }

    crate::runtime::faults::check(&format!("silver/{}", table.name), "replay")?;
    // Which passing records silver now holds, and which an expectation dropped.
    let outcomes = record_outcomes(lake, table, replayed, removed).await?;
    if let Some(n) = superseded {
        out.superseded = n;
    } else if merge_now {
        out.superseded = out.passing.saturating_sub(out.dropped).saturating_sub(out.promoted());
    } else {
        // The MERGE's metrics are gone with the interrupted run: count from what silver holds.
        let promoted = outcomes.values().filter(|o| o.as_str() == "promoted").count() as u64;
        out.inserted = promoted;
        out.superseded = out.passing.saturating_sub(out.dropped).saturating_sub(promoted);
    }
    if out.selected != out.promoted() + out.superseded + out.rejected + out.dropped {
        return Err(Error::Accounting {
            table: table.name.clone(),
            read: out.selected,
            promoted: out.promoted(),
            superseded: out.superseded,
            rejected: out.rejected + out.dropped,
        });
    }

    // Rewrite the dead letter: untouched records as they were, examined ones updated, plus a
    // record per dropped row.
    let mut rows: Vec<Rejected> = Vec::with_capacity(records.len() + dropped.len());
    for (i, r) in records.into_iter().enumerate() {
        let (reasons, replayed_at, outcome) = match &still[i] {
            Some(reasons) => (reasons.clone(), None, "rejected".to_string()),
            None => (
                r.reasons,
                Some(opts.now.timestamp_micros()),
                outcomes.get(&i).cloned().unwrap_or_else(|| "superseded".into()),
            ),
        };
        rows.push(Rejected {
            raw: r.raw,
            reasons,
            batch_id: r.batch_id.unwrap_or_default(),
            source: r.source.unwrap_or_default(),
            source_file: r.source_file.unwrap_or_default(),
            line: r.line.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
            ingested_at: r.ingested_at,
            stored: Some(Box::new(Stored {
                id: r.id,
                failed_at: r.failed_at,
                run_id: r.run_id,
                replayed_at,
                replay_run_id: Some(opts.run_id.clone()),
                replay_outcome: Some(outcome),
            })),
        });
    }
    rows.extend(dropped);
    let examined = quarantine::to_batches(&rows, opts.now.timestamp_micros(), &opts.run_id)?;
    let mut batches = untouched(&ctx, &table.name, &intent.ids).await?;
    batches.extend(examined);
    let q = Table::open(lake, Layer::Quarantine, &table.name).await?;
    let q = q
        .write(batches, WriteOptions { overwrite: true, txn: Some(txn), metadata: meta, ..Default::default() })
        .await?;
    out.quarantine_version = q.version();
    Ok(out)
}

/// The selected records, oldest first (by ingest time, file, line), with their reasons.
async fn select(ctx: &SessionContext, table: &str, selection: &str) -> Result<Vec<Record>> {
    let context = format!("selecting dead-letter records of {table} (--where `{selection}`)");
    let sql = format!(
        "SELECT _id, _raw, _batch_id, _source, _source_file, _line, _ingested_at, _failed_at, _run_id FROM quarantine.{table} \
         WHERE {selection} ORDER BY _ingested_at NULLS FIRST, _source_file, _line, _id"
    );
    let mut records = Vec::new();
    for b in catalog::query(ctx, &sql, &context).await? {
        let text: Vec<Vec<Option<String>>> =
            [0, 1, 2, 3, 4, 8].iter().map(|&c| catalog::text_column(b.column(c), &context)).collect::<Result<_>>()?;
        let line = cast(b.column(5), &DataType::Int64).map_err(|e| Error::arrow(&context, e))?;
        let line = line.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let times = |c: usize| b.column(c).as_primitive_opt::<TimestampMicrosecondType>().cloned();
        let (ingested, failed) = (times(6), times(7));
        let at = |a: &Option<datafusion::arrow::array::TimestampMicrosecondArray>, r: usize| {
            a.as_ref().filter(|a| a.is_valid(r)).map(|a| a.value(r))
        };
        for r in 0..b.num_rows() {
            records.push(Record {
                id: text[0][r].clone().unwrap_or_default(),
                raw: text[1][r].clone().unwrap_or_default(),
                batch_id: text[2][r].clone(),
                source: text[3][r].clone(),
                source_file: text[4][r].clone(),
                line: line.is_valid(r).then(|| line.value(r)),
                ingested_at: at(&ingested, r),
                failed_at: at(&failed, r),
                run_id: text[5][r].clone(),
                reasons: Vec::new(),
            });
        }
    }
    let index: HashMap<String, usize> = records.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
    let reasons = format!(
        "SELECT _id, e['column'], e['rule'], e['message'] FROM (SELECT _id, unnest(_errors) AS e FROM quarantine.{table} WHERE {selection})"
    );
    for b in catalog::query(ctx, &reasons, &context).await? {
        let cols: Vec<Vec<Option<String>>> =
            (0..4).map(|c| catalog::text_column(b.column(c), &context)).collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            if let Some(&i) = cols[0][r].as_ref().and_then(|id| index.get(id)) {
                records[i].reasons.push(Reason {
                    column: cols[1][r].clone(),
                    rule: cols[2][r].clone().unwrap_or_default(),
                    message: cols[3][r].clone().unwrap_or_default(),
                });
            }
        }
    }
    Ok(records)
}

/// Per previous reason (rule, column): records, and how many of them pass now.
fn by_reason(records: &[Record], still: &[Option<Vec<Reason>>]) -> Vec<ReasonCount> {
    let mut counts: BTreeMap<(String, Option<String>), (u64, u64)> = BTreeMap::new();
    for (r, s) in records.iter().zip(still) {
        let mut seen = std::collections::BTreeSet::new();
        for reason in &r.reasons {
            if seen.insert((reason.rule.clone(), reason.column.clone())) {
                let c = counts.entry((reason.rule.clone(), reason.column.clone())).or_default();
                c.0 += 1;
                c.1 += u64::from(s.is_none());
            }
        }
    }
    let mut out: Vec<ReasonCount> = counts
        .into_iter()
        .map(|((rule, column), (records, passing))| ReasonCount { rule, column, records, passing })
        .collect();
    out.sort_by(|a, b| b.records.cmp(&a.records).then(a.rule.cmp(&b.rule)));
    out
}

/// The valid rows with `__record`: the index of the record each came from.
fn numbered(valid: &[RecordBatch], records: &[usize]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(valid.len());
    let mut offset = 0;
    for b in valid {
        let ids: Int64Array = records[offset..offset + b.num_rows()].iter().map(|&i| i as i64).collect();
        offset += b.num_rows();
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("__record", DataType::Int64, false));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(ids));
        out.push(
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
                .map_err(|e| Error::arrow("numbering replayed rows", e))?,
        );
    }
    Ok(out)
}

/// Per passing record: `promoted` when silver now holds exactly its key, order and provenance,
/// `dropped` when an expectation removed it, otherwise `superseded`.
async fn record_outcomes(
    lake: &Lake,
    table: &SilverTable,
    replayed: Vec<RecordBatch>,
    removed: Vec<RecordBatch>,
) -> Result<HashMap<usize, String>> {
    let Some(schema) = replayed.first().map(|b| b.schema()) else { return Ok(HashMap::new()) };
    let context = "matching replayed records with silver";
    let ctx = SessionContext::new();
    ctx.register_table("r", Arc::new(MemTable::try_new(schema, vec![replayed]).map_err(|e| Error::sql(context, e))?))
        .map_err(|e| Error::sql(context, e))?;
    let silver = Table::open(lake, Layer::Silver, &table.name).await?;
    let silver =
        if silver.exists() { silver.provider(&ctx).await? } else { catalog::empty(table.schema.clone(), "silver")? };
    ctx.register_table("s", silver).map_err(|e| Error::sql(context, e))?;
    let dropped = match removed.first() {
        Some(b) => MemTable::try_new(b.schema(), vec![removed]).map_err(|e| Error::sql(context, e))?,
        None => MemTable::try_new(table.contract.schema.clone(), vec![vec![]]).map_err(|e| Error::sql(context, e))?,
    };
    ctx.register_table("d", Arc::new(dropped)).map_err(|e| Error::sql(context, e))?;
    let mut identity: Vec<String> = table.keys.clone();
    for c in [table.order_by.as_str(), crate::bronze::BATCH_ID, crate::bronze::INGESTED_AT] {
        if !identity.iter().any(|k| k == c) {
            identity.push(c.to_string());
        }
    }
    let same = |other: &str| {
        identity
            .iter()
            .map(|c| format!("({other}.{c} IS NOT DISTINCT FROM r.{c})", c = ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let cols = identity.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT r.__record, s.__hit AS promoted, d.__hit AS dropped FROM r \
         LEFT JOIN (SELECT {cols}, true AS __hit FROM s) AS s ON {s} \
         LEFT JOIN (SELECT {cols}, true AS __hit FROM d) AS d ON {d}",
        s = same("s"),
        d = same("d")
    );
    let mut out = HashMap::new();
    for b in catalog::query(&ctx, &sql, context).await? {
        let ids = b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let (promoted, dropped): (&BooleanArray, &BooleanArray) = (b.column(1).as_boolean(), b.column(2).as_boolean());
        for i in 0..b.num_rows() {
            let outcome = if promoted.is_valid(i) && promoted.value(i) {
                "promoted"
            } else if dropped.is_valid(i) && dropped.value(i) {
                "dropped"
            } else {
                "superseded"
            };
            out.insert(usize::try_from(ids.value(i)).unwrap_or(usize::MAX), outcome.to_string());
        }
    }
    Ok(out)
}

/// Every dead-letter row not in `ids`, in the quarantine schema.
async fn untouched(ctx: &SessionContext, table: &str, ids: &[String]) -> Result<Vec<RecordBatch>> {
    let context = format!("rewriting quarantine/{table}");
    let schema = quarantine::schema();
    let id_col: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(ids.to_vec()));
    let id_batch =
        RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])), vec![id_col])
            .map_err(|e| Error::arrow(&context, e))?;
    let t = MemTable::try_new(id_batch.schema(), vec![vec![id_batch]]).map_err(|e| Error::sql(&context, e))?;
    ctx.deregister_table("__medallion_examined").map_err(|e| Error::sql(&context, e))?;
    ctx.register_table("__medallion_examined", Arc::new(t)).map_err(|e| Error::sql(&context, e))?;
    let cols: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let sql = format!(
        "SELECT {} FROM quarantine.{table} WHERE _id NOT IN (SELECT id FROM __medallion_examined)",
        cols.join(", ")
    );
    let mut out = Vec::new();
    for b in catalog::query(ctx, &sql, &context).await? {
        out.push(cast_to(&b, &schema, &context)?);
    }
    Ok(out)
}
