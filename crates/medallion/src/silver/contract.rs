//! A silver contract compiled for evaluation: typed schema, transforms and checks as DataFusion
//! physical expressions over Arrow batches.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::bronze::{BATCH_ID, INGESTED_AT, SOURCE};
use crate::quality::gates::Gate;
use crate::spec::{ColumnType, SilverSpec};

/// Arrow type of a contract column.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, i8::try_from(scale).unwrap_or(0)),
        ColumnType::String => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => timestamp_type(),
    }
}

/// The UTC microsecond timestamp type used for `_ingested_at` and timestamp columns.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A contract column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: ColumnType,
    /// Whether missing/null rejects the record.
    pub required: bool,
    /// Transform, with its SQL text.
    pub transform: Option<(String, Arc<dyn PhysicalExpr>)>,
}

/// A compiled check.
#[derive(Debug, Clone)]
pub struct Check {
    /// The SQL text, used as the rule name in reasons.
    pub rule: String,
    /// The column it is declared on (None for table-level checks).
    pub column: Option<String>,
    /// The boolean expression.
    pub expr: Arc<dyn PhysicalExpr>,
    /// Indexes (in the silver schema) of the columns it reads.
    pub refs: Vec<usize>,
}

/// A compiled contract.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Contract columns, in order.
    pub columns: Vec<Column>,
    /// Checks: per-column ones first, then table-level ones.
    pub checks: Vec<Check>,
    /// The silver schema: contract columns, then `_batch_id`, `_ingested_at`, `_source`.
    pub schema: SchemaRef,
    /// Expectations checked on rows that satisfy the contract.
    pub gates: Vec<Gate>,
}

/// A problem compiling a contract: what it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    /// E.g. "column `amount`".
    pub subject: String,
    /// The message.
    pub message: String,
    /// Text to locate in the spec file (a rule or a type).
    pub needle: Option<String>,
}

impl Contract {
    /// Compiles `spec`, reporting every problem.
    pub fn compile(spec: &SilverSpec) -> Result<Contract, Vec<ContractError>> {
        let mut errors = Vec::new();
        let mut fields = Vec::new();
        let mut typed = Vec::new();
        for c in &spec.columns {
            match c.ty.parse::<ColumnType>() {
                Ok(ty) => {
                    fields.push(Field::new(&c.name, arrow_type(ty), true));
                    typed.push((c, ty));
                }
                Err(message) => errors.push(ContractError {
                    subject: format!("column `{}`", c.name),
                    message,
                    needle: Some(c.ty.clone()),
                }),
            }
        }
        fields.push(Field::new(BATCH_ID, DataType::Utf8, true));
        fields.push(Field::new(INGESTED_AT, timestamp_type(), true));
        fields.push(Field::new(SOURCE, DataType::Utf8, true));
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let df_schema = match DFSchema::try_from(schema.as_ref().clone()) {
            Ok(s) => s,
            Err(e) => {
                errors.push(ContractError { subject: "columns".into(), message: e.to_string(), needle: None });
                return Err(errors);
            }
        };
        let ctx = SessionContext::new();
        let compile = |sql: &str, want_bool: bool| -> Result<(Arc<dyn PhysicalExpr>, Vec<usize>), String> {
            let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| first_line(&e.to_string()))?;
            let refs: Vec<usize> = expr.column_refs().iter().filter_map(|c| schema.index_of(&c.name).ok()).collect();
            let phys = ctx.create_physical_expr(expr, &df_schema).map_err(|e| first_line(&e.to_string()))?;
            if want_bool {
                let dt = phys.data_type(&schema).map_err(|e| first_line(&e.to_string()))?;
                if dt != DataType::Boolean {
                    return Err(format!("a check must be a boolean expression, this one gives {dt}"));
                }
            }
            Ok((phys, refs))
        };
        let mut columns = Vec::new();
        let mut checks = Vec::new();
        for (c, ty) in typed {
            let subject = format!("column `{}`", c.name);
            let transform = match &c.transform {
                None => None,
                Some(sql) => match compile(sql, false) {
                    Ok((expr, _)) => Some((sql.clone(), expr)),
                    Err(message) => {
                        errors.push(ContractError {
                            subject: subject.clone(),
                            message: format!("transform `{sql}`: {message}"),
                            needle: Some(sql.clone()),
                        });
                        None
                    }
                },
            };
            for sql in &c.checks {
                match compile(sql, true) {
                    Ok((expr, refs)) => {
                        checks.push(Check { rule: sql.clone(), column: Some(c.name.clone()), expr, refs })
                    }
                    Err(message) => errors.push(ContractError {
                        subject: subject.clone(),
                        message: format!("check `{sql}`: {message}"),
                        needle: Some(sql.clone()),
                    }),
                }
            }
            columns.push(Column { name: c.name.clone(), ty, required: c.required, transform });
        }
        for sql in &spec.checks {
            match compile(sql, true) {
                Ok((expr, refs)) => checks.push(Check { rule: sql.clone(), column: None, expr, refs }),
                Err(message) => errors.push(ContractError {
                    subject: "checks".into(),
                    message: format!("check `{sql}`: {message}"),
                    needle: Some(sql.clone()),
                }),
            }
        }
        let gates = match crate::quality::gates::compile(&spec.expectations, &schema) {
            Ok(g) => g,
            Err(es) => {
                for (name, message) in es {
                    errors.push(ContractError {
                        subject: "expectations".into(),
                        message,
                        needle: Some(format!("\"{name}\"")),
                    });
                }
                Vec::new()
            }
        };
        if errors.is_empty() { Ok(Contract { columns, checks, schema, gates }) } else { Err(errors) }
    }

    /// Names of the contract columns.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// The first line of an error message (DataFusion's go on with context a user need not read).
pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}
