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

/// The keys of the records seen so far by position, each with its slot (None: not wanted) and
/// the kinds of value it was noted with among the chunk's other keys. A producer writes its
/// records' keys in the same order: a key where the last record had the same one is matched by
/// comparing it with that key, without scanning it or looking it up among the wanted ones, and
/// an unwanted key is noted once per kind, not once per record.
#[derive(Default)]
pub(crate) struct KeyOrder(Vec<(Box<str>, Option<usize>, u8)>);

impl KeyOrder {
    /// The `k`-th key (from 0) of the records seen last, with its slot.
    fn expected(&self, k: usize) -> Option<(&[u8], Option<usize>)> {
        self.0.get(k).map(|(name, slot, _)| (name.as_bytes(), *slot))
    }

    /// Records `key` (its slot by `lookup`) as the `k`-th key; keys are met in order, from 0.
    fn learn(&mut self, k: usize, key: &str, lookup: impl Fn(&str) -> Option<usize>) -> Option<usize> {
        let slot = lookup(key);
        let entry = (Box::from(key), slot, 0);
        if k < self.0.len() {
            self.0[k] = entry;
        } else if k == self.0.len() {
            self.0.push(entry);
        }
        slot
    }

    /// Whether the `k`-th key of the record just scanned was noted with values of `kind`
    /// before; notes it.
    pub(crate) fn noted(&mut self, k: usize, kind: Kind) -> bool {
        let Some((_, _, kinds)) = self.0.get_mut(k) else { return false };
        let bit = 1u8 << (kind as u8);
        let noted = *kinds & bit != 0;
        *kinds |= bit;
        noted
    }
}

/// `a == b`, for the short texts of keys without a call to `memcmp` (most keys are shorter
/// than 16 bytes: two overlapping words, or a few bytes, compare them).
fn same_text(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Where the values of one object's keys lie in `text` (ranges of `text`), if `text` is a flat
/// JSON object without escapes in its keys and strings: `lookup` maps a key to its index in
/// `slots` (the last occurrence of a duplicated key wins; `order` remembers it by the key's
/// position), keys it does not map are listed in `others` with their position and the kind of
/// their value. Returns the number of keys (duplicates counted); None when the line needs the
/// full parser (`slots` and `others` then hold partial results).
pub(crate) fn flat_object(
    text: &str,
    order: &mut KeyOrder,
    lookup: impl Fn(&str) -> Option<usize>,
    slots: &mut [Option<Range<usize>>],
    others: &mut Vec<(usize, Range<usize>, Kind)>,
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
        // The key the last record had here, if this is it: it holds no quote, escape or control
        // character, so its closing quote is the next byte.
        let expected = order.expected(keys).and_then(|(name, slot)| {
            let end = key_start + name.len();
            (b.get(end) == Some(&b'"') && b.get(key_start..end).is_some_and(|k| same_text(k, name)))
                .then_some((end, slot))
        });
        let (key_end, slot) = match expected {
            Some(known) => known,
            None => {
                let key_end = string_end(b, key_start)?;
                (key_end, order.learn(keys, text.get(key_start..key_end)?, &lookup))
            }
        };
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let (end, kind) = value_end(b, start)?;
        match slot {
            Some(s) => *slots.get_mut(s)? = Some(start..end),
            None => others.push((keys, key_start..key_end, kind)),
        }
        keys += 1;
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
    if b.get(i).is_some_and(|&c| c > b' ') {
        return i;
    }
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The closing quote of a string whose text starts at `i`; None at an escape, a control
/// character or the end of the line. Eight bytes at a time: most of a record's bytes are in its
/// keys and strings.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(w) = word(b, i) {
        let stops = string_stops(w);
        if stops != 0 {
            // The lowest flag marks the first byte that stops the string (flags above it may be
            // false: borrows run upwards).
            let at = i + (stops.trailing_zeros() / 8) as usize;
            return (b[at] == b'"').then_some(at);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// The eight bytes of `b` from `at`, as a little-endian word; None past the end.
fn word(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()).map(u64::from_le_bytes)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `w` set, and maybe of bytes above the lowest zero byte
/// (never below it, never when no byte is zero).
fn zeros(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// The high bit of each byte of `w` that is a quote, a backslash or a control character (below
/// 0x20) set, with the same exactness as [`zeros`]: the lowest flag is the first such byte.
fn string_stops(w: u64) -> u64 {
    zeros(w ^ (ONES * u64::from(b'"')))
        | zeros(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
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
        let mut order = KeyOrder::default();
        let keys = flat_object(text, &mut order, |k| wanted.iter().position(|w| *w == k), &mut slots, &mut others)?;
        assert!(others.iter().all(|(k, _, _)| *k < keys));
        let slots = slots.into_iter().map(|s| s.map(|r| &text[r])).collect();
        Some((slots, others.into_iter().map(|(_, r, k)| (&text[r], k)).collect(), keys))
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
            "{\"a\":\"long enough to be read by words\u{1f}\"}",
            r#"{"a":"long enough to be read by words\n"}"#,
        ] {
            assert_eq!(scan(line), None, "{line}");
        }
        let long = r#"{"a":"a string of more than eight bytes, é and all","b":"12345678"}"#;
        assert_eq!(
            scan(long).map(|s| s.0),
            Some(vec![Some(r#""a string of more than eight bytes, é and all""#), Some(r#""12345678""#)])
        );
    }

    #[test]
    fn short_texts_compare_equal_exactly_when_they_are() {
        let texts = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "amount",
            "amounts",
            "order_id",
            "order_ix",
            "customer_id",
            "customer_ix",
            "xustomer_id",
            "_batch_id_123456",
            "_batch_id_123457",
            "a key longer than sixteen bytes",
            "a key longer than sixteen bytez",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same_text(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// The word test agrees with a byte-by-byte one: its lowest flag is the first byte that
    /// stops a string, for every byte value in every position, in words otherwise made of random
    /// bytes and of bytes that never stop a string.
    #[test]
    fn a_words_lowest_flag_is_its_first_byte_that_stops_a_string() {
        let stop = |c: u8| c == b'"' || c == b'\\' || c < 0x20;
        let first = |w: u64| w.to_le_bytes().into_iter().position(stop);
        let flagged = |w: u64| {
            let s = string_stops(w);
            (s != 0).then(|| (s.trailing_zeros() / 8) as usize)
        };
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let random = next();
            let plain = u64::from_le_bytes(random.to_le_bytes().map(|c| if stop(c) { b'a' } else { c }));
            for base in [random, plain] {
                for at in 0..8 {
                    for c in 0..=255u64 {
                        let w = (base & !(0xff << (8 * at))) | (c << (8 * at));
                        assert_eq!(flagged(w), first(w), "{w:#018x}");
                    }
                }
            }
        }
    }
}
