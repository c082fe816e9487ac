//! A scanner for the common record: one flat JSON object whose keys and strings hold no escapes.
//!
//! Decoding a record means finding where each wanted field's value lies in the line and checking
//! the line is JSON. serde_json does both through its visitor machinery, about a fifth of a
//! promotion's CPU; this scanner walks the bytes once. It decides nothing on its own: a line it
//! does not fully understand (a nested value, an escape, a control character, anything that is
//! not JSON) is left to serde_json, which then gives the same answer or the error message it
//! always gave. What it accepts, serde_json accepts with the same values (a randomised test in
//! `decode` compares both on lines built to hit every branch).

use std::ops::Range;

use super::decode::Kind;

/// Where the values of one object's keys lie in `text` (ranges of `text`), if `text` is a flat
/// JSON object without escapes in its keys and strings: `slot` maps a key to its index in
/// `slots` (the last occurrence of a duplicated key wins), keys it does not map are listed in
/// `others` with the kind of their value. Returns the number of keys (duplicates counted); None
/// when the line needs the full parser (`slots` and `others` then hold partial results).
pub(crate) fn flat_object(
    text: &str,
    slot: impl Fn(&str) -> Option<usize>,
    slots: &mut [Option<Range<usize>>],
    others: &mut Vec<(Range<usize>, Kind)>,
) -> Option<usize> {
    let b = text.as_bytes();
    others.clear();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut keys = 0;
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(0);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i + 1;
        let key_end = string_end(b, key_start)?;
        let key = text.get(key_start..key_end)?;
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let (end, kind) = value_end(b, start)?;
        keys += 1;
        match slot(key) {
            Some(s) => *slots.get_mut(s)? = Some(start..end),
            None => others.push((key_start..key_end, kind)),
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(keys),
            _ => return None,
        }
    }
}

/// Past JSON whitespace from `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The closing quote of a string whose text starts at `i`; None at an escape, a control
/// character or the end of the line.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// The end of the scalar value starting at `i`, and its kind; None for a nested value or one
/// that is not JSON.
fn value_end(b: &[u8], i: usize) -> Option<(usize, Kind)> {
    match *b.get(i)? {
        b'"' => Some((string_end(b, i + 1)? + 1, Kind::String)),
        b't' => literal(b, i, b"true").map(|e| (e, Kind::Bool)),
        b'f' => literal(b, i, b"false").map(|e| (e, Kind::Bool)),
        b'n' => literal(b, i, b"null").map(|e| (e, Kind::Null)),
        b'-' | b'0'..=b'9' => number_end(b, i).map(|e| (e, Kind::Number)),
        _ => None,
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b.get(i..i + word.len()).filter(|w| *w == word).map(|_| i + word.len())
}

/// The end of a JSON number starting at `i`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let after = digits(b, i + 1);
        if after == i + 1 {
            return None;
        }
        i = after;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let after = digits(b, i);
        if after == i {
            return None;
        }
        i = after;
    }
    Some(i)
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of `a` and `b`, the other keys with their kinds, the number of keys.
    type Scanned<'t> = (Vec<Option<&'t str>>, Vec<(&'t str, Kind)>, usize);

    fn scan(text: &str) -> Option<Scanned<'_>> {
        let wanted = ["a", "b"];
        let mut slots = vec![None; 2];
        let mut others = Vec::new();
        let keys = flat_object(text, |k| wanted.iter().position(|w| *w == k), &mut slots, &mut others)?;
        let slots = slots.into_iter().map(|s| s.map(|r| &text[r])).collect();
        Some((slots, others.into_iter().map(|(r, k)| (&text[r], k)).collect(), keys))
    }

    #[test]
    fn flat_objects_give_each_values_text_and_the_rest_is_left_to_the_full_parser() {
        let (slots, others, keys) = scan(r#" { "a" : -1.5e+3 , "x":true,"b":"hé", "a":null } "#).expect("flat");
        assert_eq!(slots, [Some("null"), Some(r#""hé""#)]);
        assert_eq!(others, [("x", Kind::Bool)]);
        assert_eq!(keys, 4);
        assert_eq!(scan("{}").map(|s| s.2), Some(0));
        for line in [
            r#"{"a":"x\"y"}"#,
            r#"{"a\u0041":1}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a" 1}"#,
            r#"{"a":1"#,
            r#"{a:1}"#,
            "{\"a\":1}\u{a0}",
        ] {
            assert_eq!(scan(line), None, "{line}");
        }
    }
}
