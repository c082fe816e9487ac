//! The least (or greatest) values of a group kept across changes, so a removed minimum is
//! replaced from what is kept instead of rescanning the group's rows.
//!
//! A group keeps up to [`KEPT`] of its least values, in order, with repeats. With the group's count
//! of values it tells whether they are all its values or only the least of them. The invariant:
//! the list holds values of the group, and every value of the group below the list's last is in
//! the list as many times as in the group. A change removes values (each occurrence once) and adds
//! values. When the list held all the values, the new list is all of them. Otherwise it keeps only
//! values up to the old last one: no value the list did not hold lies below it. Then it is cut to
//! [`KEPT`]. The first value is the group's minimum. When removals empty the list of a group that
//! still has values, the group is recomputed from the source.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, new_empty_array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{SortOptions, cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::arrow::row::{Row, RowConverter, SortField};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

/// How many of a group's least (greatest) values are kept.
pub const KEPT: usize = 16;

/// `name(kept, count, removed, added)`: the new list of a group's least (`descending`: greatest)
/// values, from the kept list, the group's count of values before the change, and the values the
/// change removed and added (lists; null is empty).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Extremes {
    name: String,
    values: DataType,
    descending: bool,
    signature: Signature,
}

impl Extremes {
    /// The function for values of type `values`.
    pub fn new(values: DataType, descending: bool) -> Self {
        let name = Self::function_name(&values, descending);
        Self { name, values, descending, signature: Signature::any(4, Volatility::Immutable) }
    }

    /// The name of the function for values of type `values` (lower case: SQL names are).
    pub fn function_name(values: &DataType, descending: bool) -> String {
        let t: String = values
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect();
        format!("__medallion_{}_{t}", if descending { "greatest" } else { "least" })
    }

    /// The list type it returns.
    pub fn list_type(values: &DataType) -> DataType {
        DataType::List(Arc::new(Field::new_list_field(values.clone(), true)))
    }
}

impl ScalarUDFImpl for Extremes {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(Self::list_type(&self.values))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [kept, count, removed, added] = arrays.as_slice() else {
            return exec_err!("{} takes a list, a count and two lists", self.name);
        };
        let list = Self::list_type(&self.values);
        let (kept, removed, added) = (cast(kept, &list)?, cast(removed, &list)?, cast(added, &list)?);
        let count = cast(count, &DataType::Int64)?;
        let (kept, removed, added) = (kept.as_list::<i32>(), removed.as_list::<i32>(), added.as_list::<i32>());
        let count = count.as_primitive::<Int64Type>();
        let order = SortOptions { descending: self.descending, nulls_first: false };
        let converter = RowConverter::new(vec![SortField::new_with_options(self.values.clone(), order)])?;
        // Every value of the three lists, as arrays to gather from and as comparable rows.
        let sources: [&ListArray; 3] = [kept, removed, added];
        let values: Vec<ArrayRef> = sources.iter().map(|l| Arc::clone(l.values())).collect();
        let rows = values.iter().map(|v| converter.convert_columns(&[Arc::clone(v)])).collect::<Result<Vec<_>, _>>()?;
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut offsets = vec![0usize];
        for i in 0..kept.len() {
            let range = |l: &ListArray| {
                if l.is_null(i) {
                    0..0
                } else {
                    let o = l.value_offsets();
                    o[i] as usize..o[i + 1] as usize
                }
            };
            let (k, r, a) = (range(kept), range(removed), range(added));
            // Removed values, each occurrence once.
            let mut gone: HashMap<Row<'_>, usize> = HashMap::new();
            for at in r {
                *gone.entry(rows[1].row(at)).or_default() += 1;
            }
            let all = count.is_null(i) || count.value(i) <= k.len() as i64;
            let bound = (!all && !k.is_empty()).then(|| rows[0].row(k.end - 1));
            let mut candidates: Vec<(usize, usize)> = Vec::with_capacity(k.len() + a.len());
            for at in k {
                if let Some(n) = gone.get_mut(&rows[0].row(at)).filter(|n| **n > 0) {
                    *n -= 1;
                    continue;
                }
                candidates.push((0, at));
            }
            candidates.extend(a.map(|at| (2, at)));
            candidates.retain(|&(s, at)| !values[s].is_null(at) && bound.is_none_or(|b| rows[s].row(at) <= b));
            let order =
                |&(s1, a1): &(usize, usize), &(s2, a2): &(usize, usize)| rows[s1].row(a1).cmp(&rows[s2].row(a2));
            // The KEPT least first (a state built from scratch offers every value of a group:
            // selecting them costs a pass, sorting them all cost a third of the build), then in order.
            if candidates.len() > KEPT {
                candidates.select_nth_unstable_by(KEPT - 1, order);
                candidates.truncate(KEPT);
            }
            candidates.sort_by(order);
            picks.extend(candidates);
            offsets.push(picks.len());
        }
        let gathered = if picks.is_empty() {
            new_empty_array(&self.values)
        } else {
            let refs: Vec<&dyn Array> = values.iter().map(|v| v.as_ref()).collect();
            interleave(&refs, &picks)?
        };
        let field = Arc::new(Field::new_list_field(self.values.clone(), true));
        let out = ListArray::try_new(
            field,
            OffsetBuffer::from_lengths(offsets.windows(2).map(|w| w[1] - w[0])),
            gathered,
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, Int64Builder, ListBuilder};

    use super::*;

    fn lists(rows: &[Option<&[i64]>]) -> ArrayRef {
        let mut b = ListBuilder::new(Int64Builder::new());
        for r in rows {
            match r {
                Some(vals) => {
                    for v in *vals {
                        b.values().append_value(*v);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    fn call(f: &Extremes, kept: ArrayRef, count: Vec<i64>, removed: ArrayRef, added: ArrayRef) -> Vec<Vec<i64>> {
        let n = count.len();
        let args = ScalarFunctionArgs {
            args: [kept, Arc::new(Int64Array::from(count)) as ArrayRef, removed, added]
                .into_iter()
                .map(ColumnarValue::Array)
                .collect(),
            arg_fields: vec![],
            number_rows: n,
            return_field: Arc::new(Field::new("x", Extremes::list_type(&DataType::Int64), true)),
            config_options: Arc::new(Default::default()),
        };
        let out = f.invoke_with_args(args).expect("call").into_array(n).expect("array");
        let out = out.as_list::<i32>();
        (0..n).map(|i| out.value(i).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    #[test]
    fn removed_values_go_once_each_and_a_cut_list_keeps_only_what_it_can_vouch_for() {
        let least = Extremes::new(DataType::Int64, false);
        let out = call(
            &least,
            lists(&[Some(&[1, 1, 3]), Some(&[2, 5]), Some(&[4]), None]),
            // Row 0 held all its values; rows 1 and 2 more than they kept.
            vec![3, 10, 7, 0],
            lists(&[Some(&[1]), Some(&[2]), Some(&[4]), None]),
            lists(&[Some(&[9, 0]), Some(&[7, 3]), None, Some(&[6])]),
        );
        assert_eq!(out[0], vec![0, 1, 3, 9], "one of the two 1s removed; all values known");
        assert_eq!(out[1], vec![3, 5], "7 is above the old last kept value: not vouched for");
        assert_eq!(out[2], Vec::<i64>::new(), "emptied: the group must be recomputed");
        assert_eq!(out[3], vec![6], "a new group");
        let greatest = Extremes::new(DataType::Int64, true);
        let out = call(&greatest, lists(&[Some(&[9, 4])]), vec![5], lists(&[Some(&[9])]), lists(&[Some(&[1, 8])]));
        assert_eq!(out[0], vec![8, 4], "greatest first; 1 is below the old last kept value");
    }

    #[test]
    fn long_lists_keep_exactly_their_least_and_greatest_values_with_repeats() {
        // Groups built from scratch: every value offered at once, many repeats, lengths around KEPT.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let groups: Vec<Vec<i64>> = (0..200)
            .map(|g| {
                let n = [0, 1, KEPT - 1, KEPT, KEPT + 1, 3 * KEPT, 500][g % 7];
                (0..n).map(|_| (next() % 40) as i64 - 20).collect()
            })
            .collect();
        let added: Vec<Option<&[i64]>> = groups.iter().map(|g| Some(g.as_slice())).collect();
        let none: Vec<Option<&[i64]>> = vec![None; groups.len()];
        for descending in [false, true] {
            let f = Extremes::new(DataType::Int64, descending);
            let out = call(&f, lists(&none), vec![0; groups.len()], lists(&none), lists(&added));
            for (g, got) in groups.iter().zip(out) {
                let mut want = g.clone();
                want.sort_unstable_by(|a, b| if descending { b.cmp(a) } else { a.cmp(b) });
                want.truncate(KEPT);
                assert_eq!(got, want, "{g:?}");
            }
        }
    }
}
