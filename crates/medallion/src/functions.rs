//! SQL functions every medallion session has beyond DataFusion's: reading inside JSON text.
//!
//! A `json` silver column keeps an array or object as its JSON text (an API's line items, tags, an
//! address), and so can any string. These read inside it, with DuckDB's names and meanings (what
//! dbt-duckdb users write), in gold models, `sql`, expectations, transforms and checks:
//!
//! - `json_extract(json, path)`: the JSON text of the value at `path` (`'null'` for a JSON null);
//! - `json_extract_string(json, path)`: a string value without its quotes, any other value as its
//!   JSON text, a JSON null as NULL;
//! - `json_array_length(json [, path])`: an array's length, 0 for any other value;
//! - `json_valid(json)`: whether the text is JSON;
//! - `json -> path` and `json ->> path`: `json_extract` and `json_extract_string`.
//!
//! A path is JSONPath (`'$.items[0].sku'`, `'$."odd key"'`, `'$["odd key"]'`), a JSON Pointer
//! (`'/items/0/sku'`), a plain key (`'sku'`), or an integer (an array's index, from 0). A path
//! the value does not have gives NULL, as a NULL input does. Text that is not JSON is an error
//! naming the function and the text (DuckDB's choice: a model never silently reads a malformed
//! value as missing); `json_valid` tells them apart first where that can happen.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, Int64Builder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::sqlparser::ast::BinaryOperator;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use serde_json::value::RawValue;

/// Every function of this module (a cluster's executors hold them in Ballista's registry, which
/// takes no registration: see [`add_to`] for the others).
pub fn udfs() -> Vec<Arc<ScalarUDF>> {
    [Json::Extract, Json::ExtractString, Json::ArrayLength, Json::Valid]
        .into_iter()
        .map(|f| Arc::new(ScalarUDF::new_from_impl(JsonFunction::new(f))))
        .collect()
}

/// Adds every function of this module to `registry`: a session's state (one that plans SQL, or
/// a cluster's scheduler, which runs plans naming them).
pub fn add_to(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for udf in udfs() {
        registry.register_udf(udf)?;
    }
    Ok(())
}

/// Registers the functions and the `->` / `->>` operators in `ctx`, which plans SQL.
pub fn register(ctx: &SessionContext) -> Result<()> {
    let state = ctx.state_ref();
    let mut state = state.write();
    add_to(&mut *state)?;
    state.register_expr_planner(Arc::new(JsonOperators))
}

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Json {
    Extract,
    ExtractString,
    ArrayLength,
    Valid,
}

impl Json {
    fn name(self) -> &'static str {
        match self {
            Json::Extract => "json_extract",
            Json::ExtractString => "json_extract_string",
            Json::ArrayLength => "json_array_length",
            Json::Valid => "json_valid",
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonFunction {
    which: Json,
    signature: Signature,
}

impl JsonFunction {
    fn new(which: Json) -> JsonFunction {
        let arities = match which {
            Json::Extract | Json::ExtractString => vec![TypeSignature::Any(2)],
            Json::ArrayLength => vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Json::Valid => vec![TypeSignature::Any(1)],
        };
        JsonFunction { which, signature: Signature::one_of(arities, Volatility::Immutable) }
    }
}

/// Whether `t` is text.
fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

impl ScalarUDFImpl for JsonFunction {
    fn name(&self) -> &str {
        self.which.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let name = self.which.name();
        if !args.first().is_some_and(is_text) {
            return plan_err!("{name}: its first argument must be JSON text, not {}", args[0]);
        }
        if let Some(path) = args.get(1)
            && !(is_text(path) || path.is_integer())
        {
            return plan_err!("{name}: a path is text (`'$.a[0]'`, `'/a/0'`, `'a'`) or an index, not {path}");
        }
        Ok(match self.which {
            Json::Extract | Json::ExtractString => DataType::Utf8,
            Json::ArrayLength => DataType::Int64,
            Json::Valid => DataType::Boolean,
        })
    }

    /// A constant path that cannot be read is a planning error, so `validate` reports it before
    /// any data moves; the call itself is kept.
    fn simplify(
        &self,
        args: Vec<Expr>,
        _info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        if let Some(Expr::Literal(path, _)) = args.get(1)
            && let Some(text) = path.try_as_str().flatten()
            && let Err(why) = parse_path(text)
        {
            return plan_err!("{}: {why}", self.which.name());
        }
        Ok(datafusion::logical_expr::simplify::ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let texts = text_array(&args.args[0], rows)?;
        let texts = texts.as_string::<i32>();
        // A constant path is parsed once.
        let paths: Paths = match args.args.get(1) {
            None => Paths::Constant(Some(Vec::new())),
            Some(ColumnarValue::Scalar(s)) => Paths::Constant(path_of_scalar(s, self.which.name())?),
            Some(ColumnarValue::Array(a)) => Paths::PerRow(Arc::clone(a)),
        };
        let name = self.which.name();
        let out: ArrayRef = match self.which {
            Json::Valid => {
                let mut b = BooleanBuilder::with_capacity(rows);
                for i in 0..rows {
                    b.append_option(
                        texts.is_valid(i).then(|| serde_json::from_str::<&RawValue>(texts.value(i)).is_ok()),
                    );
                }
                Arc::new(b.finish())
            }
            Json::ArrayLength => {
                let mut b = Int64Builder::with_capacity(rows);
                for i in 0..rows {
                    let length = match found(texts, i, &paths, name)? {
                        None | Some("null") => None,
                        Some(array) if array.starts_with('[') => {
                            let items: Vec<&RawValue> =
                                serde_json::from_str(array).or_else(|e| exec_err!("{name}: {e}"))?;
                            i64::try_from(items.len()).ok()
                        }
                        Some(_) => Some(0),
                    };
                    b.append_option(length);
                }
                Arc::new(b.finish())
            }
            Json::Extract | Json::ExtractString => {
                let mut b = StringBuilder::with_capacity(rows, texts.value_data().len() / 2);
                for i in 0..rows {
                    match (self.which, found(texts, i, &paths, name)?) {
                        (_, None) | (Json::ExtractString, Some("null")) => b.append_null(),
                        (Json::ExtractString, Some(quoted)) if quoted.starts_with('"') => {
                            let text: String = serde_json::from_str(quoted).or_else(|e| exec_err!("{name}: {e}"))?;
                            b.append_value(text);
                        }
                        (_, Some(text)) => b.append_value(text),
                    }
                }
                Arc::new(b.finish())
            }
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The first argument as a Utf8 array of `rows` rows.
fn text_array(arg: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    let array = arg.to_array(rows)?;
    Ok(if array.data_type() == &DataType::Utf8 { array } else { cast(&array, &DataType::Utf8)? })
}

/// A path, one step at a time.
type Path = Vec<Step>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The paths of a call: one for every row, or each row's own (None: a NULL path).
enum Paths {
    Constant(Option<Path>),
    PerRow(ArrayRef),
}

/// The path a scalar argument gives (None: NULL).
fn path_of_scalar(s: &ScalarValue, function: &str) -> Result<Option<Path>> {
    if s.is_null() {
        return Ok(None);
    }
    if let Some(text) = s.try_as_str().flatten() {
        return parse_path(text).map(Some).or_else(|e| exec_err!("{function}: {e}"));
    }
    match s.cast_to(&DataType::Int64)? {
        ScalarValue::Int64(Some(i)) => match usize::try_from(i) {
            Ok(i) => Ok(Some(vec![Step::Index(i)])),
            Err(_) => exec_err!("{function}: an index counts from 0, not {i}"),
        },
        other => exec_err!("{function}: a path is text or an index, not {other}"),
    }
}

/// The JSON text of the value at row `i`'s path, as the row wrote it (None: a NULL input or
/// path, or a path the value does not have); an error when the text is not JSON. Values are
/// never converted: a number keeps its digits, an object its keys' order.
fn found<'a>(
    texts: &'a datafusion::arrow::array::StringArray,
    i: usize,
    paths: &Paths,
    function: &str,
) -> Result<Option<&'a str>> {
    if texts.is_null(i) {
        return Ok(None);
    }
    let own;
    let path: &[Step] = match paths {
        Paths::Constant(Some(p)) => p,
        Paths::PerRow(a) if a.is_valid(i) => match path_of_scalar(&ScalarValue::try_from_array(a, i)?, function)? {
            Some(p) => {
                own = p;
                &own
            }
            None => return Ok(None),
        },
        Paths::Constant(None) | Paths::PerRow(_) => return Ok(None),
    };
    let text = texts.value(i);
    let value: &RawValue = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = text.chars().take(60).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            return exec_err!("{function}: `{shown}{more}` is not JSON ({e}); json_valid() tells such text apart");
        }
    };
    walk(value, path).or_else(|e| exec_err!("{function}: {e}"))
}

/// The text of the value at `path` in `value` (already read as JSON whole).
fn walk<'a>(value: &'a RawValue, path: &[Step]) -> std::result::Result<Option<&'a str>, serde_json::Error> {
    let mut at = value.get().trim();
    for step in path {
        let next: Option<&RawValue> = match (at.as_bytes().first(), step) {
            (Some(b'{'), Step::Key(k)) => {
                let members: std::collections::HashMap<std::borrow::Cow<'_, str>, &RawValue> =
                    serde_json::from_str(at)?;
                members.get(k.as_str()).copied()
            }
            (Some(b'['), Step::Index(i)) => serde_json::from_str::<Vec<&RawValue>>(at)?.get(*i).copied(),
            // A JSON Pointer's number is a key of an object, an index of an array.
            (Some(b'['), Step::Key(k)) => match k.parse::<usize>() {
                Ok(i) => serde_json::from_str::<Vec<&RawValue>>(at)?.get(i).copied(),
                Err(_) => None,
            },
            _ => None,
        };
        let Some(next) = next else { return Ok(None) };
        at = next.get().trim();
    }
    Ok(Some(at))
}

/// Parses a path: JSONPath from `$`, a JSON Pointer from `/`, else one key.
fn parse_path(text: &str) -> std::result::Result<Path, String> {
    if let Some(rest) = text.strip_prefix('$') {
        return json_path(rest).map_err(|why| format!("path `{text}`: {why}"));
    }
    if let Some(rest) = text.strip_prefix('/') {
        return Ok(rest.split('/').map(|t| Step::Key(t.replace("~1", "/").replace("~0", "~"))).collect());
    }
    Ok(vec![Step::Key(text.to_string())])
}

/// The steps of a JSONPath after its `$`: `.key`, `."key"`, `[n]`, `["key"]`, `['key']`.
fn json_path(mut rest: &str) -> std::result::Result<Path, String> {
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"').ok_or("a quoted key is not closed")?;
                path.push(Step::Key(quoted[..end].to_string()));
                rest = &quoted[end + 1..];
            } else {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                if end == 0 {
                    return Err("a `.` names no key".into());
                }
                if after[..end] == *"*" {
                    return Err("wildcards (`*`) are not supported".into());
                }
                path.push(Step::Key(after[..end].to_string()));
                rest = &after[end..];
            }
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or("a `[` is not closed")?;
            let inside = after[..end].trim();
            let unquoted = inside
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| inside.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
            match (unquoted, inside.parse::<usize>()) {
                (Some(key), _) => path.push(Step::Key(key.to_string())),
                (None, Ok(i)) => path.push(Step::Index(i)),
                (None, Err(_)) => return Err(format!("`[{inside}]` is neither an index from 0 nor a quoted key")),
            }
            rest = &after[end + 1..];
        } else {
            return Err(format!("expected `.` or `[` at `{rest}`"));
        }
    }
    Ok(path)
}

/// `->` and `->>` as DuckDB and PostgreSQL read them.
#[derive(Debug)]
struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(&self, expr: RawBinaryExpr, _schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let which = match expr.op {
            BinaryOperator::Arrow => Json::Extract,
            BinaryOperator::LongArrow => Json::ExtractString,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let udf = Arc::new(ScalarUDF::new_from_impl(JsonFunction::new(which)));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![expr.left, expr.right]))))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;

    use super::*;

    /// Runs `sql` in a session with the functions; its rows as text.
    async fn rows(sql: &str) -> Result<Vec<String>> {
        let ctx = SessionContext::new();
        register(&ctx)?;
        let batches: Vec<RecordBatch> = ctx.sql(sql).await?.collect().await?;
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        Ok(text.lines().map(str::to_string).collect())
    }

    /// The single value `sql` gives, as text ("NULL" for a null).
    async fn one(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        register(&ctx)?;
        let batches: Vec<RecordBatch> = ctx.sql(sql).await?.collect().await?;
        let column = batches[0].column(0);
        if column.is_null(0) {
            return Ok("NULL".into());
        }
        Ok(datafusion::arrow::util::display::array_value_to_string(column, 0)?)
    }

    #[tokio::test]
    async fn values_are_read_by_jsonpath_pointer_key_and_index_as_duckdb_reads_them() -> Result<()> {
        let doc = r#"'{"a": {"b": [10, {"c": "x"}]}, "s": "text", "n": null, "odd key": 1.5, "t": true}'"#;
        for (expr, want) in [
            (format!("json_extract({doc}, '$.a.b[0]')"), "10"),
            (format!("json_extract({doc}, '$.a.b[1]')"), r#"{"c": "x"}"#),
            (format!("json_extract_string({doc}, '$.a.b[1].c')"), "x"),
            (format!("json_extract({doc}, '$.s')"), r#""text""#),
            (format!("json_extract_string({doc}, '$.s')"), "text"),
            (format!("json_extract({doc}, '$.n')"), "null"),
            (format!("json_extract_string({doc}, '$.n')"), "NULL"),
            (format!("json_extract({doc}, '$.missing')"), "NULL"),
            (format!("json_extract({doc}, '$.a.b[5]')"), "NULL"),
            (format!("json_extract({doc}, '$.s.deeper')"), "NULL"),
            (format!(r#"json_extract_string({doc}, '$."odd key"')"#), "1.5"),
            (format!(r#"json_extract_string({doc}, '$["odd key"]')"#), "1.5"),
            (format!("json_extract_string({doc}, '/a/b/1/c')"), "x"),
            (format!("json_extract_string({doc}, 't')"), "true"),
            (format!("{doc} -> 'a' ->> 'b'"), "[10, {\"c\": \"x\"}]"),
            // Numbers keep their digits: a decimal stays exact.
            (
                "json_extract_string('{\"amount\": 12345678901234567890.123456789}', 'amount')".to_string(),
                "12345678901234567890.123456789",
            ),
            ("json_extract_string('{\"s\": \"a\\\"b\\u00e9\"}', 's')".to_string(), "a\"bé"),
            (format!("{doc} -> '$.a.b' ->> 0"), "10"),
            (format!("({doc} ->> '$.a.b[0]') = '10'"), "true"),
            (format!("json_array_length({doc}, '$.a.b')"), "2"),
            (format!("json_array_length({doc}, '$.s')"), "0"),
            (format!("json_array_length({doc}, '$.missing')"), "NULL"),
            ("json_array_length('[1, 2, 3]')".to_string(), "3"),
            ("json_extract(NULL, '$.a')".to_string(), "NULL"),
            ("json_extract('{\"a\": 1}', NULL)".to_string(), "NULL"),
            ("json_valid('{\"a\": [1]}')".to_string(), "true"),
            ("json_valid('{\"a\": ')".to_string(), "false"),
        ] {
            let sql = format!("SELECT {expr}");
            let got = one(&sql).await.map_err(|e| e.context(sql))?;
            assert_eq!(got, want, "{expr}");
        }
        Ok(())
    }

    /// Columns of any text type, per-row paths, and values the whole column shares.
    #[tokio::test]
    async fn columns_of_every_text_type_and_per_row_paths() -> Result<()> {
        let got = rows(
            "SELECT json_extract_string(arrow_cast(j, 'Utf8View'), p) AS v, json_array_length(arrow_cast(j, 'LargeUtf8')) AS n \
             FROM (VALUES ('{\"a\": \"x\"}', 'a'), ('[1, 2]', '$[1]'), (NULL, 'a'), ('{\"b\": 2}', '/b')) AS t(j, p)",
        )
        .await?;
        let body: Vec<&str> =
            got.iter().map(String::as_str).filter(|l| l.starts_with("| ") && !l.contains(" v ")).collect();
        assert_eq!(body, ["| x | 0 |", "| 2 | 2 |", "|   |   |", "| 2 | 0 |"], "{got:#?}");
        Ok(())
    }

    /// Text that is not JSON fails the query with the function and the text; a path that cannot
    /// be read and an argument of another type fail with what is wrong.
    #[tokio::test]
    async fn malformed_text_and_paths_are_errors_that_say_what_is_wrong() {
        for (sql, want) in [
            ("SELECT json_extract('{\"a\": ', '$.a')", "json_extract: `{\"a\": ` is not JSON"),
            ("SELECT json_extract('{}', '$.a[x]')", "path `$.a[x]`: `[x]` is neither an index"),
            ("SELECT json_extract('{}', '$.*')", "wildcards (`*`) are not supported"),
            ("SELECT json_extract('[1]', -1)", "an index counts from 0, not -1"),
            ("SELECT json_extract(1, '$.a')", "its first argument must be JSON text"),
            ("SELECT json_extract('{}', true)", "a path is text"),
        ] {
            let error = rows(sql).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(want), "{sql}: {error}");
        }
    }

    /// A constant path that cannot be read fails planning (what `validate` does), before any row
    /// is read; a path from a column is read per row.
    #[tokio::test]
    async fn a_constant_path_that_cannot_be_read_fails_planning() -> Result<()> {
        let ctx = SessionContext::new();
        register(&ctx)?;
        let plan = |sql: &str| {
            let ctx = ctx.clone();
            let sql = sql.to_string();
            async move { ctx.sql(&sql).await?.into_optimized_plan() }
        };
        let bad = plan("SELECT json_extract(j, '$.a[x]') FROM (VALUES ('{}')) AS t(j)").await;
        let error = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("json_extract: path `$.a[x]`: `[x]` is neither an index"), "{error}");
        plan("SELECT j ->> '$.a[0]', json_extract(j, p) FROM (VALUES ('{}', '$.[x')) AS t(j, p)").await?;
        Ok(())
    }

    #[test]
    fn paths_parse_into_their_steps() {
        let k = |s: &str| Step::Key(s.to_string());
        assert_eq!(parse_path("$"), Ok(vec![]));
        assert_eq!(parse_path("$.a[2].b"), Ok(vec![k("a"), Step::Index(2), k("b")]));
        assert_eq!(parse_path("$['x.y'][\"z\"]"), Ok(vec![k("x.y"), k("z")]));
        assert_eq!(parse_path("/a~1b/~0c/0"), Ok(vec![k("a/b"), k("~c"), k("0")]));
        assert_eq!(parse_path("a.b"), Ok(vec![k("a.b")]));
        assert!(parse_path("$.").is_err());
        assert!(parse_path("$[1").is_err());
        assert!(parse_path("$a").is_err());
    }
}
