//! A silver contract compiled for evaluation: typed schema, transforms and checks as DataFusion
//! physical expressions over Arrow batches.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, new_null_array};
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::bronze::{BATCH_ID, INGESTED_AT, SOURCE};
use crate::catalog::error_line;
use crate::quality::gates::Gate;
use crate::silver::coerce::Format;
use crate::spec::{ColumnType, SilverSpec};
use crate::storage::timestamp_type;

/// Arrow type of a contract column.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, i8::try_from(scale).unwrap_or(0)),
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => timestamp_type(),
    }
}

/// A contract column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name.
    pub name: String,
    /// The raw field it is read from (its `from`, else its name).
    pub field: String,
    /// Type.
    pub ty: ColumnType,
    /// Whether missing/null rejects the record.
    pub required: bool,
    /// Transform, with its SQL text.
    pub transform: Option<(String, Arc<dyn PhysicalExpr>)>,
    /// Text values read as null (the column's `null_values`, else the source's).
    pub null_values: Vec<String>,
    /// How its text is written, when the defaults do not read it.
    pub format: Option<Format>,
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
    /// What it was compiled from.
    pub inputs: Arc<ContractInputs>,
}

/// What a contract is compiled from, to compile it again in another process (a cluster's
/// executors validate bronze files with it): the columns, row checks, partition columns, the
/// source's null markers, and the row-level expectations as the SQL they check.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContractInputs {
    columns: Vec<crate::spec::ColumnSpec>,
    checks: Vec<String>,
    partition_by: Vec<String>,
    source_nulls: Vec<String>,
    /// Row-level expectations: name, action, the SQL they check, kind.
    gates: Vec<(String, crate::spec::Action, String, String)>,
}

impl ContractInputs {
    /// The contract compiled again (as it was the first time: its inputs were valid then), its
    /// expectations checking and reporting the same SQL.
    pub fn compile(&self) -> Result<Contract, Vec<ContractError>> {
        let spec = SilverSpec {
            columns: self.columns.clone(),
            checks: self.checks.clone(),
            partition_by: self.partition_by.clone(),
            expectations: self
                .gates
                .iter()
                .map(|(name, action, sql, _)| crate::spec::ExpectationSpec {
                    name: name.clone(),
                    action: *action,
                    expect: Some(sql.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut contract = Contract::compile(&spec, &self.source_nulls)?;
        for (gate, (_, _, sql, kind)) in contract.gates.iter_mut().zip(&self.gates) {
            gate.sql.clone_from(sql);
            gate.kind = crate::quality::gates::ROW_KINDS.into_iter().find(|k| k == kind).unwrap_or("expect");
        }
        Ok(contract)
    }
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

/// The text values column `c` reads as null: its own `null_values`, else the source's; for a
/// string partition column also `""`, since Delta stores an empty partition value as null (other
/// readers would see null where medallion saw an empty string; issue 22).
pub fn column_nulls(spec: &SilverSpec, c: &crate::spec::ColumnSpec, source_nulls: &[String]) -> Vec<String> {
    let mut nulls = c.null_values.clone().unwrap_or_else(|| source_nulls.to_vec());
    let string = c.ty.parse::<ColumnType>().is_ok_and(|t| t == ColumnType::String);
    if string && spec.partition_by.contains(&c.name) && !nulls.iter().any(String::is_empty) {
        nulls.push(String::new());
    }
    nulls
}

impl Contract {
    /// Compiles `spec` (fed by a source whose `null_values` are `source_nulls`), reporting every
    /// problem.
    pub fn compile(spec: &SilverSpec, source_nulls: &[String]) -> Result<Contract, Vec<ContractError>> {
        let mut errors = Vec::new();
        let mut fields = Vec::new();
        let mut typed = Vec::new();
        let mut read: Vec<&str> = Vec::new();
        for (i, c) in spec.columns.iter().enumerate() {
            let field = c.from.as_deref().unwrap_or(&c.name);
            // A column declared twice is reported as such where the project is validated; that
            // its field is read twice follows from it.
            let repeated = spec.columns[..i].iter().any(|p| p.name == c.name);
            if field.trim().is_empty() {
                errors.push(ContractError {
                    subject: format!("column `{}`", c.name),
                    message: "`from` names no field".into(),
                    needle: Some("from".into()),
                });
            } else if read.contains(&field) && !repeated {
                errors.push(ContractError {
                    subject: format!("column `{}`", c.name),
                    message: format!(
                        "field `{field}` is already read by another column: each raw field feeds one column"
                    ),
                    needle: Some(c.name.clone()),
                });
            }
            read.push(field);
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
        if let Err(e) = crate::functions::register(&ctx) {
            errors.push(ContractError { subject: "columns".into(), message: e.to_string(), needle: None });
            return Err(errors);
        }
        // One row of nulls: evaluating an expression on it fails on what would fail on every row
        // at run time, such as a literal that cannot be cast to its column's type.
        let probe = RecordBatch::try_new(
            Arc::clone(&schema),
            schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect(),
        );
        let compile = |sql: &str, want: Option<&DataType>| -> Result<(Arc<dyn PhysicalExpr>, Vec<usize>), String> {
            let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| error_line(&e))?;
            let expr = crate::catalog::division::floats(expr, &df_schema).map_err(|e| error_line(&e))?.data;
            let refs: Vec<usize> = expr.column_refs().iter().filter_map(|c| schema.index_of(&c.name).ok()).collect();
            let phys = ctx.create_physical_expr(expr, &df_schema).map_err(|e| error_line(&e))?;
            let dt = phys.data_type(&schema).map_err(|e| error_line(&e))?;
            match want {
                None if dt != DataType::Boolean => {
                    return Err(format!("a check must be a boolean expression, this one gives {dt}"));
                }
                Some(target) if !can_cast_types(&dt, target) => {
                    return Err(format!("gives {dt}, which cannot be stored in a {target} column"));
                }
                _ => {}
            }
            if let Ok(probe) = &probe
                && let Err(e) = phys.evaluate(probe).and_then(|v| v.into_array(1))
            {
                return Err(format!(
                    "{} (a literal that does not fit the column's type fails on every row; to read a marker such as 'NA' as null, use null_values)",
                    error_line(&e)
                ));
            }
            Ok((phys, refs))
        };
        let mut columns = Vec::new();
        let mut checks = Vec::new();
        for (c, ty) in typed {
            let subject = format!("column `{}`", c.name);
            let transform = match &c.transform {
                None => None,
                Some(sql) => match compile(sql, Some(&arrow_type(ty))) {
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
                match compile(sql, None) {
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
            let format = match c.format.as_deref().map(|f| Format::parse(f, ty)) {
                None => None,
                Some(Ok(f)) => Some(f),
                Some(Err(message)) => {
                    errors.push(ContractError {
                        subject: subject.clone(),
                        message,
                        needle: c.format.as_ref().map(|f| format!("\"{f}\"")),
                    });
                    None
                }
            };
            let null_values = column_nulls(spec, c, source_nulls);
            let field = c.from.clone().unwrap_or_else(|| c.name.clone());
            columns.push(Column {
                name: c.name.clone(),
                field,
                ty,
                required: c.required,
                transform,
                null_values,
                format,
            });
        }
        for sql in &spec.checks {
            match compile(sql, None) {
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
        if !errors.is_empty() {
            return Err(errors);
        }
        let inputs = Arc::new(ContractInputs {
            columns: spec.columns.clone(),
            checks: spec.checks.clone(),
            partition_by: spec.partition_by.clone(),
            source_nulls: source_nulls.to_vec(),
            gates: gates.iter().map(|g| (g.name.clone(), g.action, g.sql.clone(), g.kind.to_string())).collect(),
        });
        Ok(Contract { columns, checks, schema, gates, inputs })
    }

    /// Names of the contract columns.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The raw fields the columns are read from, in column order (a column's `from`, else its
    /// name): what bronze records are decoded by.
    pub fn field_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.field.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(columns: &str) -> Result<Contract, Vec<ContractError>> {
        let spec: SilverSpec =
            toml::from_str(&format!("primary_key = [\"id\"]\ncolumns = [{columns}]")).expect("a valid spec");
        Contract::compile(&spec, &[])
    }

    /// `records` (NDJSON lines) validated as one bronze batch.
    fn processed(c: &Contract, records: &[&str]) -> crate::silver::promote::FileResult {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, records.join("\n").as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let origin = crate::silver::validate::Origin {
            batch_id: "b".into(),
            source: "s".into(),
            file: "bronze/s/b.ndjson.gz".into(),
            ingested_at: Some("2026-12-01T00:00:00Z".into()),
        };
        let format = crate::bronze::decode::BatchFormat::NdjsonGz;
        crate::silver::promote::process(c, &gz, &format, &origin, 1, None).expect("validates")
    }

    /// A contract compiled again from its inputs (as a cluster's executors do) validates alike.
    #[test]
    fn a_contract_compiles_again_from_its_inputs() {
        let spec: SilverSpec = toml::from_str(
            r#"
            primary_key = ["id"]
            partition_by = ["day"]
            checks = ["amount < 100 OR id > 0"]
            columns = [
              { name = "id", type = "int64", checks = ["id > 0"] },
              { name = "day", type = "string", null_values = ["-"] },
              { name = "amount", from = "amt", type = "decimal(10,2)", required = false, transform = "amount * 2" },
            ]
            expectations = [
              { name = "small", expect = "amount < 50", action = "drop" },
              { name = "known_day", not_null = "day", action = "warn" },
              { name = "one_row", row_count = { min = 1 } },
            ]
            "#,
        )
        .expect("a valid spec");
        let first = Contract::compile(&spec, &["NA".to_string()]).expect("compiles");
        let json = serde_json::to_string(first.inputs.as_ref()).expect("serialises");
        let inputs: ContractInputs = serde_json::from_str(&json).expect("deserialises");
        let again = inputs.compile().expect("compiles again");
        assert_eq!(again.schema, first.schema);
        assert_eq!(again.field_names(), first.field_names());
        assert_eq!(first.gates.len(), 2, "row-level expectations only");
        // Validating the same records gives the same rows, reasons and expectation counts.
        let records = [
            r#"{"id":1,"day":"mon","amt":"10.5"}"#,
            r#"{"id":-2,"day":"-","amt":"NA"}"#,
            r#"{"id":3,"day":"tue","amt":"60"}"#,
            r#"{"id":"x","day":null,"amt":1}"#,
            r#"{"id":4,"amt":"20"}"#,
        ];
        let validated = |c: &Contract| {
            let r = processed(c, &records);
            let reasons: Vec<String> = r.rejected.iter().map(|r| format!("{} {:?}", r.line, r.reasons)).collect();
            (r.read, r.valid, reasons, r.gate_counts)
        };
        let described = |c: &Contract| -> Vec<String> {
            c.gates.iter().map(|g| format!("{} {} {:?} {}", g.name, g.kind, g.action, g.sql)).collect()
        };
        assert_eq!(described(&again), described(&first));
        let (a, b) = (validated(&first), validated(&again));
        assert_eq!((a.0, &a.2, &a.3), (b.0, &b.2, &b.3));
        assert_eq!(a.1, b.1, "the same valid rows");
        assert!(!a.2.is_empty() && a.3.iter().any(|(_, failing)| *failing > 0), "the records exercise the rules");
    }

    /// A column reads a nested field by a dotted `from` (`customer.id`, `items.0.sku`), as APIs
    /// send them; a key holding the dotted name itself wins (flattened exports); numbers stay exact;
    /// a missing step is a missing value, a nested value where a scalar is wanted a type error.
    #[test]
    fn a_dotted_from_reads_a_nested_field() {
        use datafusion::arrow::array::{Array, AsArray};

        let contract = compile(
            r#"{ name = "id", type = "int64" },
               { name = "customer_id", from = "customer.id", type = "int64" },
               { name = "city", from = "customer.address.city", type = "string", required = false },
               { name = "first_sku", from = "items.0.sku", type = "string", required = false },
               { name = "amount", from = "totals.amount", type = "decimal(20,2)", required = false },
               { name = "items", type = "json", required = false }"#,
        )
        .expect("compiles");
        let records = [
            r#"{"id":1,"customer":{"id":5,"address":{"city":"K\u00f6ln"}},"items":[{"sku":"A"}],"totals":{"amount":123456789012345678.91}}"#,
            r#"{"id":2,"customer.id":7,"customer":{"id":8}}"#,
            r#"{"id":3,"customer":null}"#,
            r#"{"id":4,"customer":"x"}"#,
            r#"{"id":5,"customer":{"id":"9"},"items":[]}"#,
            r#"{"id":6,"customer":{"id":{"x":1}}}"#,
            r#"{"id":7,"customer":{"id":10,"id":11}}"#,
            r#"{"id":8,"customer":{"i\u0064":12}}"#,
        ];
        let r = processed(&contract, &records);
        let valid = datafusion::arrow::compute::concat_batches(&r.valid[0].schema(), &r.valid).expect("concat");
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&[valid
            .project(&[0, 1, 2, 3, 4])
            .expect("project")])
        .expect("shown")
        .to_string();
        let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert_eq!(
            rows,
            [
                "| 1  | 5           | Köln | A         | 123456789012345678.91 |",
                "| 2  | 7           |      |           |                       |",
                "| 5  | 9           |      |           |                       |",
                "| 7  | 11          |      |           |                       |",
                "| 8  | 12          |      |           |                       |",
            ],
            "{shown}"
        );
        let rejected: Vec<(u64, Vec<String>)> =
            r.rejected.iter().map(|r| (r.line, r.reasons.iter().map(|x| x.rule.clone()).collect())).collect();
        assert_eq!(
            rejected,
            [(3, vec!["required".to_string()]), (4, vec!["required".to_string()]), (6, vec!["type".to_string()])]
        );
        assert_eq!(contract.field_names()[1], "customer.id");
        let items = valid.column(5).as_string::<i32>();
        assert_eq!(items.value(0), r#"[{"sku":"A"}]"#, "an array kept as its JSON text");
        assert_eq!(items.value(2), "[]");
        assert!(items.is_null(1));
    }

    /// Issue 15: a literal that cannot be cast to its column's type fails `validate`, not the run.
    #[test]
    fn literals_that_cannot_be_cast_are_compile_errors() {
        let errors =
            compile(r#"{ name = "id", type = "int64", transform = "NULLIF(id, 'NA')" }"#).expect_err("refused");
        assert!(errors[0].message.contains("Cannot cast string 'NA'"), "{errors:?}");
        assert!(errors[0].message.contains("use null_values"), "{errors:?}");
        let errors = compile(r#"{ name = "id", type = "int64", checks = ["id <> 'x'"] }"#).expect_err("refused");
        assert!(errors[0].message.contains("Cannot cast string 'x'"), "{errors:?}");
        assert!(
            compile(r#"{ name = "id", type = "int64", transform = "NULLIF(id, 0)", checks = ["id > 0"] }"#).is_ok()
        );
        let errors = compile(r#"{ name = "id", type = "date", transform = "true" }"#).expect_err("refused");
        assert!(errors[0].message.contains("cannot be stored in a Date32 column"), "{errors:?}");
    }
}
