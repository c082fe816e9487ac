//! A dbt seed (a CSV file) as a silver contract: column types inferred as dbt does (dbt's agate
//! type tester: integer, number, `%Y-%m-%d` date, `%Y-%m-%d %H:%M:%S` or ISO datetime, `true`/
//! `false` boolean, else text; `null` and empty fields are null), and a key.

use std::collections::BTreeSet;

/// Texts dbt reads as null in a seed (trimmed, compared case-insensitively).
const NULLS: [&str; 2] = ["", "null"];

/// One seed column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedColumn {
    /// Name, from the header.
    pub name: String,
    /// medallion type.
    pub ty: String,
    /// Whether every row has a value.
    pub complete: bool,
    /// Whether its values are distinct (nulls aside) and complete.
    pub unique: bool,
}

/// A seed's header, column types, and the null markers found in it (exactly as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Columns in file order.
    pub columns: Vec<SeedColumn>,
    /// Texts read as null, as they appear.
    pub null_values: BTreeSet<String>,
    /// Data rows.
    pub rows: usize,
}

/// Infers `text`'s columns. `overrides` are dbt's `column_types` (name → SQL type), mapped to
/// medallion types where they can be; an unmappable one is returned as an error message.
pub fn infer(text: &str, overrides: &[(String, String)]) -> Result<Seed, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_string).collect();
    if header.is_empty() || header.iter().any(String::is_empty) {
        return Err("the header names no column, or an empty one".into());
    }
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::new(); header.len()];
    let mut null_values = BTreeSet::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        rows += 1;
        for (i, field) in record.iter().enumerate() {
            if NULLS.contains(&field.trim().to_ascii_lowercase().as_str()) {
                null_values.insert(field.to_string());
                values[i].push(None);
            } else {
                values[i].push(Some(field.to_string()));
            }
        }
    }
    let mut columns = Vec::with_capacity(header.len());
    for (name, column) in header.into_iter().zip(values) {
        let present: Vec<&str> = column.iter().flatten().map(String::as_str).collect();
        let ty = match overrides.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some((_, sql)) => {
                medallion_type(sql).ok_or_else(|| format!("column_types: `{name}: {sql}` has no medallion type"))?
            }
            None => infer_type(&present).to_string(),
        };
        let complete = present.len() == column.len();
        let unique = complete && present.iter().collect::<BTreeSet<_>>().len() == present.len();
        columns.push(SeedColumn { name, ty, complete, unique });
    }
    Ok(Seed { columns, null_values, rows })
}

/// dbt's order: integer, number, date, datetime, boolean, text (a column of nulls only is text).
fn infer_type(values: &[&str]) -> &'static str {
    let all = |f: &dyn Fn(&str) -> bool| !values.is_empty() && values.iter().all(|v| f(v.trim()));
    if all(&|v| is_integer(v)) {
        "int64"
    } else if all(&|v| is_integer(v) || is_decimal(v)) {
        "float64"
    } else if all(&|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()) {
        "date"
    } else if all(&is_timestamp) {
        "timestamp"
    } else if all(&|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")) {
        "bool"
    } else {
        "string"
    }
}

pub(super) fn is_integer(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn is_decimal(v: &str) -> bool {
    let unsigned = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac) && exponent.is_none_or(is_integer)
}

pub(super) fn is_timestamp(v: &str) -> bool {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"].iter().any(|f| chrono::NaiveDateTime::parse_from_str(v, f).is_ok())
        || chrono::DateTime::parse_from_rfc3339(v).is_ok()
}

/// A SQL type as dbt users write it in `column_types`, as a medallion type.
pub fn medallion_type(sql: &str) -> Option<String> {
    let t = sql.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or_default().trim();
    Some(
        match base {
            "int" | "integer" | "int4" | "int8" | "bigint" | "smallint" | "tinyint" | "hugeint" | "long" => "int64",
            "double" | "float" | "float4" | "float8" | "real" | "double precision" => "float64",
            "varchar" | "text" | "string" | "char" | "character varying" | "bpchar" => "string",
            "boolean" | "bool" => "bool",
            "date" => "date",
            "timestamp" | "datetime" | "timestamptz" | "timestamp with time zone" => "timestamp",
            "json" | "jsonb" | "variant" => "json",
            "decimal" | "numeric" => {
                return Some(if t.contains('(') { t.replace("numeric", "decimal") } else { "decimal(18,3)".into() });
            }
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_agate_and_nulls_are_what_dbt_reads_as_null() {
        let csv = "id,name,price,joined,seen,active,note,flag\n1,Ada,1.5,2024-01-02,2024-01-02 10:00:00,true,NA,yes\n2,Bob,2,2024-01-03,2024-01-03T11:00:00,False,,no\n3,Cy,-3e2,null,2024-01-04T12:00:00Z,true,hi,yes\n";
        let seed = infer(csv, &[]).expect("infers");
        let types: Vec<(&str, &str)> = seed.columns.iter().map(|c| (c.name.as_str(), c.ty.as_str())).collect();
        assert_eq!(
            types,
            [
                ("id", "int64"),
                ("name", "string"),
                ("price", "float64"),
                ("joined", "date"),
                ("seen", "timestamp"),
                ("active", "bool"),
                ("note", "string"),
                ("flag", "string")
            ]
        );
        assert_eq!(seed.null_values, BTreeSet::from(["".to_string(), "null".to_string()]));
        assert!(seed.columns[0].unique && seed.columns[1].unique && !seed.columns[3].complete);
        assert_eq!(seed.rows, 3);
        let typed =
            infer(csv, &[("ID".into(), "varchar".into()), ("price".into(), "numeric(10,2)".into())]).expect("x");
        assert_eq!((typed.columns[0].ty.as_str(), typed.columns[2].ty.as_str()), ("string", "decimal(10,2)"));
        assert!(infer(csv, &[("id".into(), "geometry".into())]).expect_err("no type").contains("geometry"));
        assert_eq!(medallion_type("JSONB").as_deref(), Some("json"));
        assert!(infer("a,b\n1,2,3\n", &[]).is_err(), "a ragged row is an error, as in dbt");
    }
}
