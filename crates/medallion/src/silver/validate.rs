//! Validating one chunk of raw rows against a compiled contract, vectorised: coercion per column,
//! transforms and checks as DataFusion expressions over the whole batch, one filter to split
//! valid rows from rejected ones. Reasons are assembled only for rejected rows.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringBuilder, TimestampMicrosecondArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Float64Type};

use super::coerce::{Fault, coerce, parse_timestamp};
use super::contract::{Contract, arrow_type};
use crate::bronze::decode::{Kind, RawChunk, RawField, RunField};
use crate::error::{Error, Result};
use crate::quality::gates::{RowErrors, by_rows};
use crate::quality::quarantine::{Reason, Rejected};
use crate::spec::{Action, ColumnType};

/// Added to the rule of a reason an expression could not be evaluated for (a transform's or a
/// check's): the quarantine summary counts such records apart from the values a check found false.
const NOT_EVALUATED: &str = "(could not be evaluated)";

/// Where a chunk comes from: used for provenance fallbacks and dead-letter rows.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Batch id (file stem).
    pub batch_id: String,
    /// Source name.
    pub source: String,
    /// Bronze object path.
    pub file: String,
    /// The batch's `_ingested_at` (from its first record), as text.
    pub ingested_at: Option<String>,
}

/// The outcome of validating a chunk.
#[derive(Debug)]
pub struct Validated {
    /// Valid rows in the silver schema.
    pub valid: RecordBatch,
    /// The input line of each valid row.
    pub valid_lines: Vec<u64>,
    /// Rejected rows with reasons.
    pub rejected: Vec<Rejected>,
    /// Per expectation of the contract: (rows checked, rows failing), over rows valid by contract.
    pub gate_counts: Vec<(u64, u64)>,
}

/// Validates `chunk` (its fields in contract column order).
pub fn validate(contract: &Contract, chunk: &RawChunk, origin: &Origin) -> Result<Validated> {
    let n = chunk.rows();
    let mut faults: Vec<Vec<Fault>> = Vec::with_capacity(contract.columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(contract.schema.fields().len());
    for (column, field) in contract.columns.iter().zip(&chunk.fields) {
        let c = coerce(field, column.ty, column.required, &column.null_values, column.format.as_ref());
        arrays.push(c.array);
        faults.push(c.faults);
    }
    let file_ts = origin.ingested_at.as_deref().and_then(parse_timestamp);
    arrays.push(provenance_text(&chunk.provenance[0], &origin.batch_id));
    arrays.push(provenance_time(&chunk.provenance[1], file_ts));
    arrays.push(provenance_text(&chunk.provenance[2], &origin.source));
    let mut batch = RecordBatch::try_new(contract.schema.clone(), arrays)
        .map_err(|e| Error::arrow(format!("building rows of {}", origin.file), e))?;

    // Transforms, in column order, each seeing the previous ones' results. A row a transform
    // cannot be computed for (a cast of text that is no number) is rejected with the error; the
    // other rows go on.
    let mut transform_null: Vec<Option<Vec<bool>>> = vec![None; contract.columns.len()];
    let mut transform_errors: Vec<RowErrors> = vec![RowErrors::new(); contract.columns.len()];
    for (i, column) in contract.columns.iter().enumerate() {
        let Some((_, expr)) = &column.transform else { continue };
        let ty = arrow_type(column.ty);
        let (out, errors) = by_rows(&batch, &ty, &|b: &RecordBatch| {
            let out = expr.evaluate(b)?.into_array(b.num_rows())?;
            Ok(cast(&out, &ty)?)
        })?;
        let before = batch.column(i);
        if column.required {
            let lost: Vec<bool> =
                (0..n).map(|r| before.is_valid(r) && out.is_null(r) && !errors.contains_key(&r)).collect();
            if lost.iter().any(|&l| l) {
                transform_null[i] = Some(lost);
            }
        }
        transform_errors[i] = errors;
        let mut cols = batch.columns().to_vec();
        cols[i] = out;
        batch = RecordBatch::try_new(contract.schema.clone(), cols)
            .map_err(|e| Error::arrow(format!("transform of column `{}`", column.name), e))?;
    }
    // A transform may produce NaN/inf (e.g. a division): never let it through a float column.
    for (i, column) in contract.columns.iter().enumerate() {
        if column.ty == ColumnType::Float64 {
            let values = batch.column(i).as_primitive::<Float64Type>();
            for r in 0..n {
                if values.is_valid(r) && !values.value(r).is_finite() && faults[i][r] == Fault::None {
                    faults[i][r] = Fault::NotFinite;
                }
            }
        }
    }

    // Checks: a row fails when the expression is false, or null although every column it reads
    // is present (a null input is already reported by coercion, or allowed for optional columns).
    // A row a check cannot be evaluated on fails it, with the error.
    let mut check_fails: Vec<Option<Vec<bool>>> = Vec::with_capacity(contract.checks.len());
    let mut check_errors: Vec<RowErrors> = Vec::with_capacity(contract.checks.len());
    for check in &contract.checks {
        let (result, errors) =
            by_rows(&batch, &DataType::Boolean, &|b: &RecordBatch| check.expr.evaluate(b)?.into_array(b.num_rows()))?;
        let result = result.as_boolean();
        let fails: Vec<bool> = (0..n)
            .map(|r| {
                if errors.contains_key(&r) {
                    true
                } else if result.is_valid(r) {
                    !result.value(r)
                } else {
                    check.refs.iter().all(|&c| batch.column(c).is_valid(r))
                }
            })
            .collect();
        check_fails.push(fails.iter().any(|&f| f).then_some(fails));
        check_errors.push(errors);
    }

    let mut keep = vec![true; n];
    for f in &faults {
        for (k, fault) in keep.iter_mut().zip(f) {
            *k &= *fault == Fault::None;
        }
    }
    for f in transform_null.iter().chain(&check_fails).flatten() {
        for (k, fail) in keep.iter_mut().zip(f) {
            *k &= !fail;
        }
    }
    for errors in &transform_errors {
        for &r in errors.keys() {
            keep[r] = false;
        }
    }
    // Expectations see only rows that satisfy the contract; `drop` ones reject their failures.
    let contract_ok = keep.clone();
    let checked = contract_ok.iter().filter(|&&ok| ok).count() as u64;
    let mut gate_counts = Vec::with_capacity(contract.gates.len());
    let mut gate_drops: Vec<Option<Vec<bool>>> = Vec::with_capacity(contract.gates.len());
    for gate in &contract.gates {
        let fails = gate.failing(&batch)?;
        let failing: Vec<bool> = (0..n).map(|r| contract_ok[r] && fails[r]).collect();
        gate_counts.push((checked, failing.iter().filter(|&&f| f).count() as u64));
        if gate.action == Action::Drop && failing.iter().any(|&f| f) {
            for (k, f) in keep.iter_mut().zip(&failing) {
                *k &= !f;
            }
            gate_drops.push(Some(failing));
        } else {
            gate_drops.push(None);
        }
    }
    let mask = BooleanArray::from(keep.clone());
    let valid = filter_record_batch(&batch, &mask).map_err(|e| Error::arrow("filtering valid rows", e))?;

    let ingested = batch
        .column(contract.columns.len() + 1)
        .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
    let batch_ids = batch.column(contract.columns.len()).as_string::<i32>();
    let sources = batch.column(contract.columns.len() + 2).as_string::<i32>();
    let mut rejected = Vec::new();
    for r in (0..n).filter(|&r| !keep[r]) {
        let mut reasons = Vec::new();
        for (c, column) in contract.columns.iter().enumerate() {
            let field = &chunk.fields[c];
            let fault = faults[c][r];
            if fault != Fault::None {
                let (rule, message) = fault.describe(field.kinds[r], field.text(r), column.ty, column.format.as_ref());
                reasons.push(Reason { column: Some(column.name.clone()), rule: rule.to_string(), message });
            }
            let sql = column.transform.as_ref().map(|t| t.0.as_str()).unwrap_or_default();
            if transform_null[c].as_ref().is_some_and(|t| t[r]) {
                reasons.push(Reason {
                    column: Some(column.name.clone()),
                    rule: "transform".into(),
                    message: format!("transform `{sql}` gave null for {}", shown(field, r)),
                });
            }
            if let Some(error) = transform_errors[c].get(&r) {
                reasons.push(Reason {
                    column: Some(column.name.clone()),
                    rule: format!("transform {NOT_EVALUATED}"),
                    message: format!("transform `{sql}` failed for {}: {error}", shown(field, r)),
                });
            }
        }
        for ((check, fails), errors) in contract.checks.iter().zip(&check_fails).zip(&check_errors) {
            if fails.as_ref().is_some_and(|f| f[r]) {
                let value = check.column.as_ref().map(|col| {
                    let idx = contract.columns.iter().position(|c| &c.name == col).unwrap_or(0);
                    shown(&chunk.fields[idx], r)
                });
                let error = errors.get(&r);
                let message = match (value, error) {
                    (Some(v), Some(error)) => format!("check could not be evaluated for {v}: {error}"),
                    (None, Some(error)) => format!("check could not be evaluated: {error}"),
                    (Some(v), None) => format!("check failed for {v}"),
                    (None, None) => "check failed".to_string(),
                };
                // A value the check could not be evaluated on is counted apart from the values it
                // found false: the fixes differ (the contract's SQL, not the data).
                let rule = match error {
                    Some(_) => format!("{} {NOT_EVALUATED}", check.rule),
                    None => check.rule.clone(),
                };
                reasons.push(Reason { column: check.column.clone(), rule, message });
            }
        }
        for (gate, drops) in contract.gates.iter().zip(&gate_drops) {
            if drops.as_ref().is_some_and(|d| d[r]) {
                reasons.push(Reason::expectation(&gate.name, &gate.sql));
            }
        }
        rejected.push(Rejected {
            raw: chunk.raw(r).to_string(),
            reasons,
            batch_id: batch_ids.value(r).to_string(),
            source: sources.value(r).to_string(),
            source_file: origin.file.clone(),
            line: chunk.lines[r],
            ingested_at: ingested.is_valid(r).then(|| ingested.value(r)),
            stored: None,
        });
    }
    let valid_lines = (0..n).filter(|&r| keep[r]).map(|r| chunk.lines[r]).collect();
    Ok(Validated { valid, valid_lines, rejected, gate_counts })
}

fn shown(field: &RawField, r: usize) -> String {
    match field.kinds[r] {
        Kind::String => format!("{:?}", field.text(r)),
        Kind::Missing => "a missing value".into(),
        Kind::Null => "null".into(),
        _ => field.text(r).to_string(),
    }
}

/// A provenance column's text per row: each run's value, or `fallback` where it is not a string.
fn provenance_text(field: &RunField, fallback: &str) -> ArrayRef {
    let value = |kind: Kind, text| if kind == Kind::String { text } else { fallback };
    // Sized up front: a batch id per row grown by doubling was a tenth of decoding's page faults.
    let bytes = field.runs().map(|(rows, kind, text)| rows.len() * value(kind, text).len()).sum();
    let mut values = StringBuilder::with_capacity(field.len(), bytes);
    for (rows, kind, text) in field.runs() {
        let text = value(kind, text);
        for _ in rows {
            values.append_value(text);
        }
    }
    Arc::new(values.finish())
}

/// A provenance column's time per row: each run's value parsed once, or `fallback` where it is
/// not a string or not a time.
fn provenance_time(field: &RunField, fallback: Option<i64>) -> ArrayRef {
    let mut values = Vec::with_capacity(field.len());
    for (rows, kind, text) in field.runs() {
        let time = if kind == Kind::String { parse_timestamp(text).or(fallback) } else { fallback };
        values.extend(std::iter::repeat_n(time, rows.len()));
    }
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}
