//! Contracts that change: what a silver table's commits record of the contract that wrote them,
//! how it differs from the project's, and what the table's `on_contract_change` policy makes of
//! the difference.
//!
//! ```text
//! project contract ─┐
//!                   ├─ diff ─▶ nothing       → promote as usual
//! table's record  ──┤         only added nullable columns, policy evolve
//! (commit info)     │                        → add the columns in place (old rows null), promote
//! Delta schema  ────┘         anything else  → policy rebuild: recompute from bronze
//!                                              otherwise: refuse (`medallion rebuild <table>`)
//! ```
//!
//! Every silver commit carries the [`ContractRecord`] under `medallion.contract`, so the table
//! knows the contract its rows were written with. Columns and their types are read from the
//! Delta schema itself (the truth for readers); keys, transforms, checks, null markers and
//! history from the record. A table written before records existed is compared by its schema.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::coerce::{Format, reads_as};
use super::table::SilverTable;
use crate::error::{Error, Result};
use crate::spec::{ColumnType, OnContractChange, SilverSpec, ident, quote};
use crate::storage::delta::{Table, WriteOptions};

/// Commits searched (newest first) for the last recorded contract.
const RECORD_SEARCH: usize = 50;

/// The contract a silver commit was written with: everything that decides which records pass
/// and what the rows hold (descriptions, owners and expectations aside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractRecord {
    /// SHA-256 of the rest, in this form.
    pub fingerprint: String,
    /// Contract columns, in order.
    pub columns: Vec<ColumnRecord>,
    /// Row-level checks over several columns.
    pub checks: Vec<String>,
    /// Primary key.
    pub primary_key: Vec<String>,
    /// The column deciding which duplicate wins.
    pub order_by: String,
    /// Partition columns.
    pub partition_by: Vec<String>,
    /// How changes are kept (`scd1`, `scd1 delete_when …`, `scd2 track […] …`).
    pub history: String,
}

/// One column of a [`ContractRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRecord {
    /// Name.
    pub name: String,
    /// The raw field it is read from, when not its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Type, as written in contracts (`decimal(18,2)`).
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether a missing or null value rejects the record.
    pub required: bool,
    /// Transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// Checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Null markers in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub null_values: Vec<String>,
    /// How its text is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl ContractRecord {
    /// The record of `spec` (fed by a source whose null markers are `source_nulls`), with the
    /// resolved `order_by`.
    pub fn of(spec: &SilverSpec, source_nulls: &[String], order_by: &str) -> ContractRecord {
        let columns = spec
            .columns
            .iter()
            .map(|c| ColumnRecord {
                name: c.name.clone(),
                from: c.from.clone().filter(|f| *f != c.name),
                ty: c.ty.parse::<ColumnType>().map_or_else(|_| c.ty.clone(), |t| t.to_string()),
                required: c.required,
                transform: c.transform.clone(),
                checks: c.checks.clone(),
                null_values: super::contract::column_nulls(spec, c, source_nulls),
                format: c.format.clone(),
            })
            .collect();
        let history = match (&spec.history, &spec.dedup) {
            (_, Some(d)) => format!("events within {} of {}", d.window, d.time),
            (None, None) => "scd1".to_string(),
            (Some(h), None) => {
                let mut s = format!("scd{}", h.scd);
                if let Some(t) = &h.track {
                    s.push_str(&format!(" track [{}]", t.join(", ")));
                }
                if !h.exclude.is_empty() {
                    s.push_str(&format!(" exclude [{}]", h.exclude.join(", ")));
                }
                if let Some(d) = &h.delete_when {
                    s.push_str(&format!(" delete_when {d}"));
                }
                s
            }
        };
        let mut record = ContractRecord {
            fingerprint: String::new(),
            columns,
            checks: spec.checks.clone(),
            primary_key: spec.primary_key.clone(),
            order_by: order_by.to_string(),
            partition_by: spec.partition_by.clone(),
            history,
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        record.fingerprint = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
        record
    }

    /// As stored in commit info.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One difference between the project's contract and the published table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A column the table does not have.
    AddedColumn {
        /// Column.
        column: String,
        /// Its type.
        ty: String,
        /// Whether the contract requires it (old rows would have none).
        required: bool,
    },
    /// A column of the table the contract no longer has.
    RemovedColumn {
        /// Column.
        column: String,
    },
    /// A column whose type changed.
    ColumnType {
        /// Column.
        column: String,
        /// Type in the table.
        from: String,
        /// Type in the contract.
        to: String,
    },
    /// Anything else that decides what passes or what rows hold.
    Rule {
        /// What changed, e.g. `primary key: [id] → [id, day]`.
        what: String,
        /// Whether it only decides which records pass (checks, `required`, null markers that no
        /// value could be): rows already published stay right if they pass the new rules, which
        /// is checked before the change is let in. Otherwise it changes what rows hold (types,
        /// transforms, keys, order, partitions, history) and needs a rebuild.
        acceptance: bool,
        /// Whether records the old rules rejected may pass it (a check dropped, a column made
        /// optional, a null marker added): the dead letter may hold records to replay.
        relaxes: bool,
    },
}

impl Change {
    /// Whether the table can take it in place: old rows stay right (they read the new column as
    /// null) and new rows carry it.
    pub fn additive(&self) -> bool {
        matches!(self, Change::AddedColumn { required: false, .. })
    }

    /// Whether records the old rules rejected may pass under the new ones.
    pub fn relaxes(&self) -> bool {
        matches!(self, Change::Rule { relaxes: true, .. })
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Change::AddedColumn { column, ty, required: false } => format!("added column {column} ({ty}, nullable)"),
            Change::AddedColumn { column, ty, required: true } => {
                format!("added column {column} ({ty}, required: rows already published have no value)")
            }
            Change::RemovedColumn { column } => format!("removed column {column}"),
            Change::ColumnType { column, from, to } => format!("type of {column}: {from} → {to}"),
            Change::Rule { what, .. } => what.clone(),
        }
    }
}

/// The columns `changes` add in place (nullable: rows already published read null in them).
pub fn added_in_place(changes: &[Change]) -> Vec<&str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::AddedColumn { column, required: false, .. } => Some(column.as_str()),
            _ => None,
        })
        .collect()
}

/// What to do about a table's contract before promoting into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The table does not exist yet, or matches the contract.
    Unchanged,
    /// The policy evolves and the change can be taken in place: nullable columns added (add
    /// them, then promote) and rules every published row passes.
    Evolve(Vec<Change>),
    /// Recompute the table from bronze (policy `rebuild`).
    Rebuild(Vec<Change>),
    /// Refuse to promote until the table is rebuilt.
    Refuse(Vec<Change>),
}

/// The differences between `table`'s contract and the published `silver` table.
pub async fn changes(table: &SilverTable, silver: &Table) -> Result<Vec<Change>> {
    let Some(schema) = silver.arrow_schema()? else { return Ok(Vec::new()) };
    let recorded = silver
        .recent_info("contract", RECORD_SEARCH)
        .await?
        .and_then(|v| serde_json::from_value::<ContractRecord>(v).ok());
    Ok(diff(table, schema.fields().iter().map(|f| f.as_ref()), recorded.as_ref()))
}

/// The differences between `table`'s contract and a table with `fields`, written with `recorded`.
pub fn diff<'a>(
    table: &SilverTable,
    fields: impl Iterator<Item = &'a Field>,
    recorded: Option<&ContractRecord>,
) -> Vec<Change> {
    let fields: Vec<&Field> = fields.collect();
    let mut out = Vec::new();
    let want = &table.record;
    let published = |name: &str| fields.iter().find(|f| f.name() == name);
    for c in &want.columns {
        let Ok(f) = table.schema.field_with_name(&c.name) else { continue };
        match published(&c.name) {
            None => out.push(Change::AddedColumn { column: c.name.clone(), ty: c.ty.clone(), required: c.required }),
            Some(p) if !same_type(p.data_type(), f.data_type()) => out.push(Change::ColumnType {
                column: c.name.clone(),
                from: type_name(p.data_type()),
                to: c.ty.clone(),
            }),
            Some(_) => {}
        }
    }
    for f in &fields {
        if table.schema.field_with_name(f.name()).is_err() {
            out.push(Change::RemovedColumn { column: f.name().clone() });
        }
    }
    let Some(had) = recorded else { return out };
    if had.fingerprint == want.fingerprint {
        return out;
    }
    let rule = |what: String| Change::Rule { what, acceptance: false, relaxes: false };
    let acceptance = |what: String, relaxes: bool| Change::Rule { what, acceptance: true, relaxes };
    // Whether `new` drops a rule of `old`.
    let drops = |old: &[String], new: &[String]| old.iter().any(|r| !new.contains(r));
    for c in &want.columns {
        let Some(old) = had.columns.iter().find(|o| o.name == c.name) else { continue };
        if old.required != c.required {
            let how = if c.required { "optional → required" } else { "required → optional" };
            out.push(acceptance(format!("{}: {how}", c.name), !c.required));
        }
        // Types stored alike (`string` and `json`, both text) read the same raw value otherwise:
        // the published table's schema cannot tell, the recorded contract can.
        let stored = |ty: &str| ty.parse::<ColumnType>().ok().map(super::contract::arrow_type);
        if old.ty != c.ty && stored(&old.ty).is_some() && stored(&old.ty) == stored(&c.ty) {
            out.push(rule(format!("type of {}: {} → {}", c.name, old.ty, c.ty)));
        }
        if old.from != c.from {
            let show = |f: &Option<String>| format!("`{}`", f.as_deref().unwrap_or(&c.name));
            out.push(rule(format!("field of {}: {} → {}", c.name, show(&old.from), show(&c.from))));
        }
        if old.transform != c.transform {
            let show = |t: &Option<String>| t.as_deref().map_or("none".to_string(), |t| format!("`{t}`"));
            out.push(rule(format!("transform of {}: {} → {}", c.name, show(&old.transform), show(&c.transform))));
        }
        if old.checks != c.checks {
            out.push(acceptance(
                format!("checks of {}: [{}] → [{}]", c.name, old.checks.join(", "), c.checks.join(", ")),
                drops(&old.checks, &c.checks),
            ));
        }
        if old.format != c.format {
            // The same text may read as another value (`01/02/2024`: 1 February or 2 January).
            let show = |f: &Option<String>| f.as_ref().map_or("the default".to_string(), |f| format!("{f:?}"));
            out.push(rule(format!("format of {}: {} → {}", c.name, show(&old.format), show(&c.format))));
        }
        if old.null_values != c.null_values {
            let what = format!("null_values of {}: {:?} → {:?}", c.name, old.null_values, c.null_values);
            // A marker that is also a value of the column's type (`0`, `n` for bool) changes
            // what published rows would hold; other markers only let more records in.
            let ty = c.ty.parse::<ColumnType>().ok();
            let changed = old
                .null_values
                .iter()
                .chain(&c.null_values)
                .filter(|m| !(old.null_values.contains(m) && c.null_values.contains(m)));
            let harmless = ty.is_some_and(|ty| {
                let format = c.format.as_deref().and_then(|f| Format::parse(f, ty).ok());
                ty == ColumnType::String || changed.clone().all(|m| !reads_as(m, ty, format.as_ref()))
            });
            let added = c.null_values.iter().any(|m| !old.null_values.contains(m));
            out.push(if harmless { acceptance(what, added) } else { rule(what) });
        }
    }
    if had.checks != want.checks {
        out.push(acceptance(
            format!("table checks: [{}] → [{}]", had.checks.join(", "), want.checks.join(", ")),
            drops(&had.checks, &want.checks),
        ));
    }
    if had.primary_key != want.primary_key {
        out.push(rule(format!(
            "primary key changed: [{}] → [{}]",
            had.primary_key.join(", "),
            want.primary_key.join(", ")
        )));
    }
    if had.order_by != want.order_by {
        out.push(rule(format!("order_by: {} → {}", had.order_by, want.order_by)));
    }
    if had.partition_by != want.partition_by {
        out.push(rule(format!("partition_by: [{}] → [{}]", had.partition_by.join(", "), want.partition_by.join(", "))));
    }
    if had.history != want.history {
        out.push(rule(format!("history: {} → {}", had.history, want.history)));
    }
    out
}

/// What `policy` makes of `changes`, before published rows are checked: acceptance changes
/// under `evolve` are let in here, and [`assess`] refuses them if a published row fails them.
pub fn verdict(policy: OnContractChange, changes: Vec<Change>) -> Verdict {
    if changes.is_empty() {
        return Verdict::Unchanged;
    }
    let in_place = |c: &Change| c.additive() || matches!(c, Change::Rule { acceptance: true, .. });
    match policy {
        OnContractChange::Rebuild => Verdict::Rebuild(changes),
        OnContractChange::Evolve if changes.iter().all(in_place) => Verdict::Evolve(changes),
        OnContractChange::Evolve | OnContractChange::Fail => Verdict::Refuse(changes),
    }
}

/// What `table`'s policy makes of how its contract differs from the published `silver` table,
/// checking the published rows against changed rules (read only).
pub async fn assess(table: &SilverTable, silver: &Table) -> Result<Verdict> {
    let found = changes(table, silver).await?;
    let verdict = verdict(table.on_contract_change, found);
    let Verdict::Evolve(changes) = verdict else { return Ok(verdict) };
    if !changes.iter().any(|c| matches!(c, Change::Rule { acceptance: true, .. })) {
        return Ok(Verdict::Evolve(changes));
    }
    let failing = violations(table, silver).await?;
    if failing == 0 {
        return Ok(Verdict::Evolve(changes));
    }
    let mut changes = changes;
    changes.push(Change::Rule {
        what: format!("{failing} row(s) already published fail the new rules"),
        acceptance: false,
        relaxes: false,
    });
    Ok(Verdict::Refuse(changes))
}

/// Brings the published table in line with the contract before a promotion: adds nullable
/// columns in place when the change can be let in; returns whether the table must be rebuilt
/// from bronze; refuses otherwise. `rebuilding` (an explicit rebuild) accepts every change. The
/// commit adding columns names `run_id`.
pub async fn reconcile(table: &SilverTable, silver: Table, rebuilding: bool, run_id: &str) -> Result<(Table, Verdict)> {
    if rebuilding {
        let found = changes(table, &silver).await?;
        return Ok((silver, if found.is_empty() { Verdict::Unchanged } else { Verdict::Rebuild(found) }));
    }
    match assess(table, &silver).await? {
        Verdict::Evolve(changes) => Ok((add_columns(table, silver, &changes, run_id).await?, Verdict::Evolve(changes))),
        Verdict::Refuse(changes) => Err(refusal(table, &changes)),
        v => Ok((silver, v)),
    }
}

/// Adds the nullable columns `changes` add to the published table, in one metadata-only commit
/// recording the contract and naming `run_id` (nothing to do when they add none: the next commit
/// records rules).
pub async fn add_columns(table: &SilverTable, silver: Table, changes: &[Change], run_id: &str) -> Result<Table> {
    let added: Vec<Field> =
        added_in_place(changes).into_iter().filter_map(|c| table.schema.field_with_name(c).ok().cloned()).collect();
    if added.is_empty() {
        return Ok(silver);
    }
    silver.add_columns(&added, evolved_meta(table, changes, run_id)).await
}

/// Records the contract in an empty commit after rule changes were let in and nothing else was
/// committed, so later runs need not check the published rows again.
pub async fn record(table: &SilverTable, silver: Table, changes: &[Change], run_id: &str) -> Result<Table> {
    let schema = silver.arrow_schema()?.unwrap_or_else(|| Arc::clone(&table.schema));
    let write = WriteOptions { metadata: evolved_meta(table, changes, run_id), ..Default::default() };
    silver.write(vec![RecordBatch::new_empty(schema)], write).await
}

fn evolved_meta(
    table: &SilverTable,
    changes: &[Change],
    run_id: &str,
) -> std::collections::HashMap<String, serde_json::Value> {
    let evolved: Vec<String> = changes.iter().map(Change::describe).collect();
    std::collections::HashMap::from([(
        "medallion".to_string(),
        serde_json::json!({ "run_id": run_id, "contract": table.record.to_json(), "evolved": evolved }),
    )])
}

/// Published rows of `silver` that the contract's rules reject: a required column null, a check
/// false (or null with every column it reads present), a string equal to a null marker. Rules
/// over columns the table does not have yet are skipped (those read as null).
async fn violations(table: &SilverTable, silver: &Table) -> Result<u64> {
    let Some(published) = silver.arrow_schema()? else { return Ok(0) };
    let has = |c: &str| published.field_with_name(c).is_ok();
    let contract = &table.contract;
    let mut failing = Vec::new();
    for c in contract.columns.iter().filter(|c| has(&c.name)) {
        let col = ident(&c.name);
        if c.required {
            failing.push(format!("{col} IS NULL"));
        }
        if c.ty == ColumnType::String && !c.null_values.is_empty() {
            let markers: Vec<String> = c.null_values.iter().map(|m| quote(m.trim())).collect();
            failing.push(format!("trim({col}) IN ({})", markers.join(", ")));
        }
    }
    for check in &contract.checks {
        let refs: Vec<&str> = check.refs.iter().map(|&i| contract.schema.field(i).name().as_str()).collect();
        if !refs.iter().all(|r| has(r)) {
            continue;
        }
        let present: Vec<String> = refs.iter().map(|r| format!(" AND {} IS NOT NULL", ident(r))).collect();
        failing.push(format!("({r}) IS FALSE OR (({r}) IS NULL{})", present.concat(), r = check.rule));
    }
    if failing.is_empty() {
        return Ok(0);
    }
    let sql = format!("SELECT count(*) FROM t WHERE ({})", failing.join(") OR ("));
    silver.count_where(&sql).await
}

/// The error of a promotion refused because the contract changed.
pub fn refusal(table: &SilverTable, changes: &[Change]) -> Error {
    Error::ContractChanged {
        table: format!("silver/{}", table.name),
        changes: changes.iter().map(Change::describe).collect(),
        hint: format!(
            "run `medallion rebuild {t}` to recompute silver/{t} from bronze with the new contract \
             (or set on_contract_change = \"rebuild\" on the table)",
            t = table.name
        ),
    }
}

/// Arrow types are compared as contracts see them: any string type is `string`.
fn same_type(a: &DataType, b: &DataType) -> bool {
    type_name(a) == type_name(b)
}

/// An Arrow type as a contract type name.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "string".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        other => other.to_string(),
    }
}
