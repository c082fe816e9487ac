//! Nested fields: a column whose `from` is a dotted path (`customer.id`, `items.0.sku`) reads the
//! value at that path inside the record's nested objects and arrays, as API responses hold them.
//!
//! ```text
//! decoder: wanted = columns' fields + each path's first step (`customer`, raw JSON of the object)
//! resolve: per path column, a row holding the dotted key itself keeps it (a flattened export);
//!          else the value is looked up along the path in the first step's JSON text
//! validate: the contract's columns, one raw field each, as for flat records
//! ```
//!
//! The decoder keeps its one-pass scan of flat records: only columns with a path pay for parsing
//! nested text, and numbers keep their JSON literal (a decimal stays exact).

use serde_json::value::RawValue;

use super::contract::Column;
use crate::bronze::decode::{Kind, RawChunk, RawField};

/// The steps of `field` read as a path: two or more, none empty; None for a plain field name.
pub(crate) fn steps(field: &str) -> Option<Vec<&str>> {
    let steps: Vec<&str> = field.split('.').collect();
    (steps.len() > 1 && steps.iter().all(|s| !s.is_empty())).then_some(steps)
}

/// How a contract's columns are decoded: the fields asked of the decoder, and, per column with a
/// path, where its first step is among them.
#[derive(Debug, Clone)]
pub(crate) struct Decoding {
    /// The columns' fields in column order, then each first step no column reads as a field.
    pub(crate) fields: Vec<String>,
    /// (column, index of its first step in `fields`, the steps after it).
    paths: Vec<(usize, usize, Vec<String>)>,
    columns: usize,
}

impl Decoding {
    /// How `columns` are decoded.
    pub(crate) fn of(columns: &[Column]) -> Decoding {
        let mut fields: Vec<String> = columns.iter().map(|c| c.field.clone()).collect();
        let mut paths = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let Some(steps) = steps(&c.field) else { continue };
            let head = match fields.iter().position(|f| f == steps[0]) {
                Some(at) => at,
                None => {
                    fields.push(steps[0].to_string());
                    fields.len() - 1
                }
            };
            paths.push((i, head, steps[1..].iter().map(|s| s.to_string()).collect()));
        }
        Decoding { fields, paths, columns: columns.len() }
    }

    /// Puts the value along its path in each path column's field (rows holding the dotted key
    /// itself keep it), and drops the first steps decoded for them: the chunk's fields are then
    /// the columns'.
    pub(crate) fn resolve(&self, chunk: &mut RawChunk) {
        for (column, head, rest) in &self.paths {
            let (own, first) = (&chunk.fields[*column], &chunk.fields[*head]);
            if !own.kinds.contains(&Kind::Missing) {
                continue;
            }
            let mut out = RawField::with_capacity(own.len());
            for r in 0..own.len() {
                match (own.kinds[r], first.kinds[r]) {
                    (Kind::Missing, Kind::Nested) => match lookup(first.text(r), rest) {
                        Some(raw) => push_raw(&mut out, raw.get()),
                        None => out.push(Kind::Missing, ""),
                    },
                    (Kind::Missing, Kind::Null) => out.push(Kind::Null, ""),
                    (Kind::Missing, _) => out.push(Kind::Missing, ""),
                    (kind, _) => out.push(kind, own.text(r)),
                }
            }
            chunk.fields[*column] = out;
        }
        chunk.fields.truncate(self.columns);
    }
}

/// The raw JSON value at `steps` inside `json` (an object or array), if every step is there: an
/// object's member (the last of a repeated key, as for a record's), an array's element by index.
fn lookup<'a>(json: &'a str, steps: &[String]) -> Option<&'a RawValue> {
    let mut at = json;
    let mut found = None;
    for step in steps {
        let value: &'a RawValue = match at.as_bytes().first() {
            Some(b'{') => serde_json::from_str::<Members<'a>>(at).ok()?.0.into_iter().rev().find(|(k, _)| k == step)?.1,
            Some(b'[') => {
                let index: usize = step.parse().ok()?;
                serde_json::from_str::<Vec<&'a RawValue>>(at).ok()?.into_iter().nth(index)?
            }
            _ => return None,
        };
        at = value.get();
        found = Some(value);
    }
    found
}

/// An object's members in the text's order (a `serde_json::Value` orders them by name), each as
/// its JSON text, repeated keys kept (the last one wins a lookup).
pub(crate) struct Members<'a>(pub(crate) Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Adds a raw JSON value as the decoder would have: a string unescaped, null as null, anything
/// else as its text.
fn push_raw(field: &mut RawField, raw: &str) {
    match Kind::of(raw) {
        Kind::String => match serde_json::from_str::<String>(raw) {
            Ok(s) => field.push(Kind::String, &s),
            Err(_) => field.push(Kind::Missing, ""),
        },
        Kind::Null => field.push(Kind::Null, ""),
        kind => field.push(kind, raw),
    }
}
