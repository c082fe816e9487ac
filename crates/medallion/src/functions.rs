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
//! A path is JSONPath (`'$.items[0].sku'`, `'$."odd key"'`, `'$["odd key"]'`, `'$.items[-1]'`
//! from the end), a JSON Pointer (`'/items/0/sku'`), a plain key (`'sku'`), or an integer (an
//! array's index, from 0). A path the value does not have gives NULL, as a NULL input does. A
//! constant JSONPath with wildcards (`'$.items[*].sku'`: every element of an array; `'$.a.*'`:
//! every value of an object) reaches many values and gives a list of them, in document order,
//! possibly empty: `unnest` makes them rows. Text that is not JSON is an error naming the function
//! and the text (DuckDB's choice: a model never silently reads a malformed value as missing);
//! `json_valid` tells them apart first where that can happen.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Int64Builder, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::sqlparser::ast::BinaryOperator;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
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

    /// A list of values where the path is a constant with a wildcard (it reaches many), else one.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args.arg_fields.iter().map(|f| f.data_type().clone()).collect();
        let one = self.return_type(&types)?;
        let constant = args.scalar_arguments.get(1).copied().flatten().and_then(|s| s.try_as_str().flatten());
        let many = constant.is_some_and(|text| parse_path(text).is_ok_and(|path| reaches_many(&path)));
        let data_type = if many { DataType::List(Arc::new(Field::new_list_field(one, true))) } else { one };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
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
        let many = matches!(args.return_field.data_type(), DataType::List(_));
        let texts = text_array(&args.args[0], rows)?;
        let texts = texts.as_string::<i32>();
        let name = self.which.name();
        // A constant path is parsed once.
        let paths: Paths = match args.args.get(1) {
            None => Paths::Constant(Some(Vec::new())),
            Some(ColumnarValue::Scalar(s)) => Paths::Constant(path_of_scalar(s, name)?),
            Some(ColumnarValue::Array(a)) => Paths::PerRow(Arc::clone(a)),
        };
        let read = reader(texts, &paths, name, many);
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
            Json::ArrayLength => gather(Int64Builder::with_capacity(rows), many, rows, read, |b, hit| {
                b.append_option(match hit {
                    None => None,
                    Some(array) if array.starts_with('[') => i64::try_from(elements(array, name)?.len()).ok(),
                    Some(_) => Some(0),
                });
                Ok(())
            })?,
            Json::Extract => {
                let b = StringBuilder::with_capacity(rows, texts.value_data().len() / 2);
                gather(b, many, rows, read, |b, hit| {
                    b.append_option(hit);
                    Ok(())
                })?
            }
            Json::ExtractString => {
                let b = StringBuilder::with_capacity(rows, texts.value_data().len() / 2);
                gather(b, many, rows, read, |b, hit| {
                    match hit {
                        None | Some("null") => b.append_null(),
                        Some(quoted) if quoted.starts_with('"') => {
                            let text: Cow<'_, str> =
                                serde_json::from_str(quoted).or_else(|e| exec_err!("{name}: {e}"))?;
                            b.append_value(text);
                        }
                        Some(text) => b.append_value(text),
                    }
                    Ok(())
                })?
            }
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The column of `rows` rows a call gives: each row's first value (NULL for none), or, where the
/// path `many` values, a list of all of them (NULL for a NULL input or path). `read` puts a row's
/// values in a buffer and says whether the row is read (not NULL); `push` appends one value.
fn gather<'a, B: ArrayBuilder>(
    mut values: B,
    many: bool,
    rows: usize,
    mut read: impl FnMut(usize, &mut Vec<&'a str>) -> Result<bool>,
    mut push: impl FnMut(&mut B, Option<&'a str>) -> Result<()>,
) -> Result<ArrayRef> {
    let mut hits = Vec::new();
    if !many {
        for i in 0..rows {
            hits.clear();
            let first = if read(i, &mut hits)? { hits.first().copied() } else { None };
            push(&mut values, first)?;
        }
        return Ok(values.finish());
    }
    let mut lists = ListBuilder::with_capacity(values, rows);
    for i in 0..rows {
        hits.clear();
        let is_read = read(i, &mut hits)?;
        for hit in &hits {
            push(lists.values(), Some(hit))?;
        }
        lists.append(is_read);
    }
    Ok(Arc::new(lists.finish()))
}

/// [`found`] for the rows of one call.
fn reader<'a>(
    texts: &'a StringArray,
    paths: &'a Paths,
    function: &'a str,
    many: bool,
) -> impl FnMut(usize, &mut Vec<&'a str>) -> Result<bool> + 'a {
    move |i, hits| found(texts, i, paths, function, many, hits)
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
    /// `[-n]`: the n-th element from an array's end.
    FromEnd(usize),
    /// `[*]`: every element of an array.
    Elements,
    /// `.*`: every value of an object.
    Members,
}

/// Whether `path` can reach more than one value (it has a wildcard).
fn reaches_many(path: &[Step]) -> bool {
    path.iter().any(|s| matches!(s, Step::Elements | Step::Members))
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

/// Reads row `i`: false for a NULL input or path; else true, with the JSON text of every value
/// the row's path reaches in `hits` (none where the value has no such path; at most one without
/// a wildcard), as the row wrote it. An error when the text is not JSON, or when a path with a
/// wildcard comes from a column (the result is a list only for a constant path). Values are never
/// converted: a number keeps its digits, an object its keys' order.
fn found<'a>(
    texts: &'a StringArray,
    i: usize,
    paths: &Paths,
    function: &str,
    many: bool,
    hits: &mut Vec<&'a str>,
) -> Result<bool> {
    if texts.is_null(i) {
        return Ok(false);
    }
    let own;
    let path: &[Step] = match paths {
        Paths::Constant(Some(p)) => p,
        Paths::PerRow(a) if a.is_valid(i) => match path_of_scalar(&ScalarValue::try_from_array(a, i)?, function)? {
            Some(p) => {
                own = p;
                &own
            }
            None => return Ok(false),
        },
        Paths::Constant(None) | Paths::PerRow(_) => return Ok(false),
    };
    if !many && reaches_many(path) {
        return exec_err!(
            "{function}: a path with a wildcard (`*`) reaches many values, and gives their list only when it \
             is a constant"
        );
    }
    let text = texts.value(i);
    let value: &RawValue = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = text.chars().take(60).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            return exec_err!("{function}: `{shown}{more}` is not JSON ({e}); json_valid() tells such text apart");
        }
    };
    reach(value.get(), path, hits, function)?;
    Ok(true)
}

/// Puts the text of every value `path` reaches from `at` (JSON text already read whole) in
/// `hits`, in document order.
fn reach<'a>(at: &'a str, path: &[Step], hits: &mut Vec<&'a str>, function: &str) -> Result<()> {
    let at = at.trim();
    let Some((step, rest)) = path.split_first() else {
        hits.push(at);
        return Ok(());
    };
    match (at.as_bytes().first(), step) {
        (Some(b'{'), Step::Key(k)) => {
            // A key written twice is read where it is first written, as DuckDB reads it.
            if let Some((_, v)) = members(at, function)?.into_iter().find(|(key, _)| key == k) {
                reach(v.get(), rest, hits, function)?;
            }
        }
        (Some(b'{'), Step::Members) => {
            for (_, v) in members(at, function)? {
                reach(v.get(), rest, hits, function)?;
            }
        }
        (Some(b'['), Step::Elements) => {
            for v in elements(at, function)? {
                reach(v.get(), rest, hits, function)?;
            }
        }
        (Some(b'['), Step::Index(_) | Step::FromEnd(_) | Step::Key(_)) => {
            let items = elements(at, function)?;
            let index = match step {
                Step::Index(i) => Some(*i),
                Step::FromEnd(n) => items.len().checked_sub(*n),
                // A JSON Pointer's number is a key of an object, an index of an array.
                Step::Key(k) => k.parse::<usize>().ok(),
                Step::Elements | Step::Members => None,
            };
            if let Some(v) = index.and_then(|i| items.get(i)) {
                reach(v.get(), rest, hits, function)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The elements of an array's JSON text.
fn elements<'a>(array: &'a str, function: &str) -> Result<Vec<&'a RawValue>> {
    serde_json::from_str(array).or_else(|e| exec_err!("{function}: {e}"))
}

/// The members of an object's JSON text, in their order.
fn members<'a>(object: &'a str, function: &str) -> Result<Vec<(Cow<'a, str>, &'a RawValue)>> {
    match serde_json::from_str::<Members<'a>>(object) {
        Ok(Members(m)) => Ok(m),
        Err(e) => exec_err!("{function}: {e}"),
    }
}

/// An object's members in their order, keys borrowed where they have no escape.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> std::result::Result<Members<'de>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

/// An object's key: borrowed from the text unless it has an escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(Text)
    }
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

/// The steps of a JSONPath after its `$`: `.key`, `."key"`, `.*`, `[n]`, `[-n]` (or `[#-n]`, from
/// the end), `[*]`, `["key"]`, `['key']`.
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
                if after.starts_with('.') {
                    return Err("recursive descent (`..`) is not supported: name each step".into());
                }
                if end == 0 {
                    return Err("a `.` names no key".into());
                }
                path.push(if after[..end] == *"*" { Step::Members } else { Step::Key(after[..end].to_string()) });
                rest = &after[end..];
            }
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or("a `[` is not closed")?;
            let inside = after[..end].trim();
            let unquoted = inside
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| inside.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
            let from_end = inside.strip_prefix('#').unwrap_or(inside).strip_prefix('-');
            match (unquoted, inside.parse::<usize>(), from_end.map(str::parse::<usize>)) {
                (Some(key), _, _) => path.push(Step::Key(key.to_string())),
                (None, Ok(i), _) => path.push(Step::Index(i)),
                (None, Err(_), Some(Ok(n))) => path.push(if n == 0 { Step::Index(0) } else { Step::FromEnd(n) }),
                _ if inside == "*" => path.push(Step::Elements),
                _ => {
                    return Err(format!(
                        "`[{inside}]` is neither an index (from 0, or `-1` from the end), `*`, nor a quoted key"
                    ));
                }
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
            // A JSON null is no array (DuckDB: 0).
            (format!("json_array_length({doc}, '$.n')"), "0"),
            // From the end, and a key written twice read where first written (as DuckDB does).
            (format!("json_extract({doc}, '$.a.b[-1].c')"), r#""x""#),
            (format!("json_extract({doc}, '$.a.b[#-2]')"), "10"),
            (format!("json_extract({doc}, '$.a.b[-3]')"), "NULL"),
            ("json_extract('{\"k\": 1, \"k\": 2}', 'k')".to_string(), "1"),
            ("json_extract_string('{\"k\\u0031\": \"e\"}', 'k1')".to_string(), "e"),
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
            ("SELECT json_extract('{}', '$..a')", "recursive descent (`..`) is not supported"),
            ("SELECT json_extract('{}', '$[-x]')", "`[-x]` is neither an index"),
            (
                "SELECT json_extract('{\"a\": [1]}', p) FROM (VALUES ('$.a[*]')) AS t(p)",
                "json_extract: a path with a wildcard (`*`) reaches many values, and gives their list only when it is a constant",
            ),
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

    /// A constant path with wildcards gives the list of every value it reaches, in document
    /// order (DuckDB's results, checked against DuckDB 2.0), and `unnest` makes them rows.
    #[tokio::test]
    async fn wildcards_give_lists_that_unnest_into_rows() -> Result<()> {
        let doc = r#"'{"items": [{"sku": "A", "qty": 2}, {"sku": "B"}, null, {"sku": null, "qty": 7}], "o": {"x": 1, "y": [2, 3]}}'"#;
        for (expr, want) in [
            (format!("json_extract({doc}, '$.items[*].sku')"), r#"["A", "B", null]"#),
            (format!("json_extract_string({doc}, '$.items[*].sku')"), "[A, B, ]"),
            (format!("json_extract({doc}, '$.items[*].qty')"), "[2, 7]"),
            (format!("{doc} -> '$.o.*'"), "[1, [2, 3]]"),
            (format!("{doc} ->> '$.o.*[*]'"), "[2, 3]"),
            (format!("json_extract({doc}, '$.o[*]')"), "[]"),
            (format!("json_extract({doc}, '$.missing[*]')"), "[]"),
            (format!("json_array_length({doc}, '$.o.*')"), "[0, 2]"),
            ("json_extract(NULL, '$[*]')".to_string(), "NULL"),
            ("arrow_typeof(json_extract_string('[1]', '$[*]'))".to_string(), "List(Utf8)"),
            ("arrow_typeof(json_array_length('[1]', '$[*]'))".to_string(), "List(Int64)"),
        ] {
            let sql = format!("SELECT {expr}");
            let got = one(&sql).await.map_err(|e| e.context(sql))?;
            assert_eq!(got, want, "{expr}");
        }
        let got = rows(
            "SELECT id, item ->> 'sku' AS sku, CAST(item ->> 'qty' AS BIGINT) AS qty FROM              (SELECT id, unnest(j -> '$.items[*]') AS item FROM (VALUES (1, '{\"items\": [{\"sku\": \"A\", \"qty\": 2}, {\"sku\": \"B\", \"qty\": 1}]}'),              (2, '{\"items\": []}'), (3, NULL), (4, '{\"items\": [{\"sku\": \"C\", \"qty\": 5}]}')) AS t(id, j)) ORDER BY id, sku",
        )
        .await?;
        let body: Vec<&str> =
            got.iter().map(String::as_str).filter(|l| l.starts_with("| ") && !l.contains(" sku ")).collect();
        assert_eq!(body, ["| 1  | A   | 2   |", "| 1  | B   | 1   |", "| 4  | C   | 5   |"], "{got:#?}");
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
        assert_eq!(
            parse_path("$.a[*].*[-2][#-1][-0]"),
            Ok(vec![k("a"), Step::Elements, Step::Members, Step::FromEnd(2), Step::FromEnd(1), Step::Index(0)])
        );
        assert!(parse_path("$.").is_err());
        assert!(parse_path("$[1").is_err());
        assert!(parse_path("$a").is_err());
    }
}
