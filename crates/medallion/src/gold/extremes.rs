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

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowNativeTypeOp, ArrowPrimitiveType, AsArray, BooleanArray, ListArray, PrimitiveArray,
    new_empty_array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{SortOptions, cast, interleave};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::row::{Row, RowConverter, SortField};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};

/// How many of a group's least (greatest) values are kept.
pub const KEPT: usize = 16;

/// Rows of `values` in the order the kept lists hold them (least first; `descending`: greatest
/// first). [`Extremes`] and [`KeptOf`] must agree on it: one merges the lists the other builds.
fn converter(values: &DataType, descending: bool) -> Result<RowConverter> {
    let order = SortOptions { descending, nulls_first: false };
    Ok(RowConverter::new(vec![SortField::new_with_options(values.clone(), order)])?)
}

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
        let converter = converter(&self.values, self.descending)?;
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

/// `name(values)`: an aggregate giving, per group, its [`KEPT`] least (`descending`: greatest)
/// non-null values in order, with repeats: the list [`Extremes`] keeps, taken in one pass over a
/// group's rows. Each group holds at most [`KEPT`] values (native values of primitive types,
/// comparable rows of others); a value not below the group's last (when it holds [`KEPT`]) costs
/// one comparison. Collecting every value of a group
/// (`array_agg`) and selecting from them was a third of a kept model's first build.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KeptOf {
    name: String,
    values: DataType,
    descending: bool,
    signature: Signature,
}

impl KeptOf {
    /// The aggregate for values of type `values`.
    pub fn new(values: DataType, descending: bool) -> Self {
        let name = Self::function_name(&values, descending);
        Self { name, values, descending, signature: Signature::any(1, Volatility::Immutable) }
    }

    /// The name of the aggregate for values of type `values`.
    pub fn function_name(values: &DataType, descending: bool) -> String {
        format!("{}_of", Extremes::function_name(values, descending))
    }

    fn groups(&self) -> Result<KeptRows> {
        let converter = converter(&self.values, self.descending)?;
        Ok(KeptRows { converter, values: self.values.clone(), groups: Vec::new(), bytes: 0 })
    }
}

impl AggregateUDFImpl for KeptOf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(Extremes::list_type(&self.values))
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(self.groups()?)))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    /// Values of a primitive type are kept as native values (compared without row encoding:
    /// that encoding and comparing rows were most of a kept model's first build); others as rows.
    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        fn native<T: ArrowPrimitiveType>(of: &KeptOf) -> Box<dyn GroupsAccumulator> {
            Box::new(KeptNative::<T> { values: of.values.clone(), descending: of.descending, groups: Vec::new() })
        }
        Ok(match &self.values {
            DataType::Int8 => native::<Int8Type>(self),
            DataType::Int16 => native::<Int16Type>(self),
            DataType::Int32 => native::<Int32Type>(self),
            DataType::Int64 => native::<Int64Type>(self),
            DataType::UInt8 => native::<UInt8Type>(self),
            DataType::UInt16 => native::<UInt16Type>(self),
            DataType::UInt32 => native::<UInt32Type>(self),
            DataType::UInt64 => native::<UInt64Type>(self),
            DataType::Float32 => native::<Float32Type>(self),
            DataType::Float64 => native::<Float64Type>(self),
            DataType::Date32 => native::<Date32Type>(self),
            DataType::Date64 => native::<Date64Type>(self),
            DataType::Decimal128(..) => native::<Decimal128Type>(self),
            DataType::Timestamp(TimeUnit::Second, _) => native::<TimestampSecondType>(self),
            DataType::Timestamp(TimeUnit::Millisecond, _) => native::<TimestampMillisecondType>(self),
            DataType::Timestamp(TimeUnit::Microsecond, _) => native::<TimestampMicrosecondType>(self),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => native::<TimestampNanosecondType>(self),
            _ => Box::new(self.groups()?),
        })
    }
}

/// Per group, its kept values as rows in order (at most [`KEPT`]).
#[derive(Debug)]
struct KeptRows {
    converter: RowConverter,
    values: DataType,
    groups: Vec<Vec<Box<[u8]>>>,
    /// Bytes of the rows held.
    bytes: usize,
}

/// Makes room in `kept` (a list per group) for `groups` groups.
fn grow<T>(kept: &mut Vec<Vec<T>>, groups: usize) {
    if kept.len() < groups {
        kept.resize_with(groups, Vec::new);
    }
}

impl KeptRows {
    /// Offers group `g` a value (as a row): kept if it is among the group's [`KEPT`] least.
    fn offer(&mut self, g: usize, row: &[u8]) {
        let kept = &mut self.groups[g];
        if kept.len() == KEPT && row >= &*kept[KEPT - 1] {
            return;
        }
        if kept.len() == KEPT
            && let Some(gone) = kept.pop()
        {
            self.bytes -= gone.len();
        }
        let at = kept.partition_point(|k| &**k <= row);
        kept.insert(at, row.into());
        self.bytes += row.len();
    }

    /// Offers each non-null value of `values` (not filtered out) to its group.
    fn offer_all(
        &mut self,
        values: &ArrayRef,
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        groups: usize,
    ) -> Result<()> {
        grow(&mut self.groups, groups);
        // Strings may come as views or not, whatever the plan said.
        let values = cast(values, &self.values)?;
        let rows = self.converter.convert_columns(&[Arc::clone(&values)])?;
        for (i, &g) in group_indices.iter().enumerate() {
            let passes = filter.is_none_or(|f| f.is_valid(i) && f.value(i));
            if passes && values.is_valid(i) {
                self.offer(g, rows.row(i).as_ref());
            }
        }
        Ok(())
    }

    /// The lists of the groups `emit_to` names, taken out.
    fn lists(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        self.bytes -= groups.iter().flatten().map(|r| r.len()).sum::<usize>();
        let parser = self.converter.parser();
        let rows: Vec<_> = groups.iter().flatten().map(|r| parser.parse(r)).collect();
        let values = if rows.is_empty() {
            new_empty_array(&self.values)
        } else {
            let mut columns = self.converter.convert_rows(rows)?;
            columns.pop().ok_or_else(|| DataFusionError::Internal("no column converted".into()))?
        };
        let field = Arc::new(Field::new_list_field(self.values.clone(), true));
        let offsets = OffsetBuffer::from_lengths(groups.iter().map(Vec::len));
        Ok(Arc::new(ListArray::try_new(field, offsets, values, None)?))
    }

    /// Offers each group the values of its list in `lists` (a partial state).
    fn merge_lists(&mut self, lists: &ArrayRef, group_indices: &[usize], groups: usize) -> Result<()> {
        grow(&mut self.groups, groups);
        let lists = lists.as_list::<i32>();
        let values = cast(lists.values(), &self.values)?;
        let rows = self.converter.convert_columns(&[Arc::clone(&values)])?;
        let offsets = lists.value_offsets();
        for (i, &g) in group_indices.iter().enumerate() {
            if lists.is_null(i) {
                continue;
            }
            for at in offsets[i] as usize..offsets[i + 1] as usize {
                if values.is_valid(at) {
                    self.offer(g, rows.row(at).as_ref());
                }
            }
        }
        Ok(())
    }
}

impl GroupsAccumulator for KeptRows {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [values] = values else { return exec_err!("kept values take one argument") };
        self.offer_all(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.lists(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.lists(emit_to)?])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        let [lists] = values else { return exec_err!("kept values merge one list") };
        self.merge_lists(lists, group_indices, total_num_groups)
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        states_of_rows(&self.values, values, opt_filter)
    }

    fn size(&self) -> usize {
        self.bytes + self.groups.capacity() * std::mem::size_of::<Vec<Box<[u8]>>>() + self.converter.size()
    }
}

/// Each row as a state of its own: a list of its value (null where filtered out).
fn states_of_rows(of: &DataType, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
    let [values] = values else { return exec_err!("kept values take one argument") };
    let field = Arc::new(Field::new_list_field(of.clone(), true));
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(1, values.len()));
    let nulls = opt_filter.map(|f| NullBuffer::from_iter((0..f.len()).map(|i| f.is_valid(i) && f.value(i))));
    Ok(vec![Arc::new(ListArray::try_new(field, offsets, cast(values, of)?, nulls)?)])
}

/// Per group, its kept values in order (at most [`KEPT`]), for values of a primitive type `T`,
/// compared as native values in the order rows of them compare in ([`converter`]: floats in
/// IEEE 754 total order, reversed when `descending`).
#[derive(Debug)]
struct KeptNative<T: ArrowPrimitiveType> {
    values: DataType,
    descending: bool,
    groups: Vec<Vec<T::Native>>,
}

impl<T: ArrowPrimitiveType> KeptNative<T> {
    /// Offers group `g` a value: kept if it is among the group's [`KEPT`] least.
    fn offer(&mut self, g: usize, value: T::Native) {
        let descending = self.descending;
        let order = |a: T::Native, b: T::Native| if descending { b.compare(a) } else { a.compare(b) };
        let kept = &mut self.groups[g];
        if kept.len() == KEPT {
            if order(value, kept[KEPT - 1]).is_ge() {
                return;
            }
            kept.pop();
        }
        let at = kept.partition_point(|&k| order(k, value).is_le());
        kept.insert(at, value);
    }

    /// Offers each value of `values` that is valid and `passes` to its group.
    fn offer_all(
        &mut self,
        values: &ArrayRef,
        group_of: impl Fn(usize) -> usize,
        passes: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let values = cast(values, &self.values)?;
        let values = values.as_primitive::<T>();
        for (i, &value) in values.values().iter().enumerate() {
            if values.is_valid(i) && passes(i) {
                self.offer(group_of(i), value);
            }
        }
        Ok(())
    }
}

impl<T: ArrowPrimitiveType> GroupsAccumulator for KeptNative<T> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [values] = values else { return exec_err!("kept values take one argument") };
        grow(&mut self.groups, total_num_groups);
        let passes = |i: usize| opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        self.offer_all(values, |i| group_indices[i], passes)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        let values =
            PrimitiveArray::<T>::from_iter_values(groups.iter().flatten().copied()).with_data_type(self.values.clone());
        let field = Arc::new(Field::new_list_field(self.values.clone(), true));
        let offsets = OffsetBuffer::from_lengths(groups.iter().map(Vec::len));
        Ok(Arc::new(ListArray::try_new(field, offsets, Arc::new(values), None)?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        let [lists] = values else { return exec_err!("kept values merge one list") };
        grow(&mut self.groups, total_num_groups);
        let lists = lists.as_list::<i32>();
        // The group of each listed value: its list's (none for values of no list, or a null one;
        // a sliced list's offsets start past 0).
        let mut group_of = vec![usize::MAX; lists.values().len()];
        for (i, w) in lists.value_offsets().windows(2).enumerate() {
            if !lists.is_null(i) {
                group_of[w[0] as usize..w[1] as usize].fill(group_indices[i]);
            }
        }
        self.offer_all(lists.values(), |i| group_of[i], |i| group_of[i] != usize::MAX)
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        states_of_rows(&self.values, values, opt_filter)
    }

    fn size(&self) -> usize {
        let held: usize = self.groups.iter().map(Vec::capacity).sum();
        self.groups.capacity() * std::mem::size_of::<Vec<T::Native>>() + held * std::mem::size_of::<T::Native>()
    }
}

/// [`KeptRows`] for an aggregate without groups (one group, 0).
#[derive(Debug)]
struct OneGroup(KeptRows);

impl OneGroup {
    fn list(&mut self) -> Result<ScalarValue> {
        let held = self.0.groups.clone();
        let bytes = self.0.bytes;
        let list = self.0.lists(EmitTo::All);
        (self.0.groups, self.0.bytes) = (held, bytes);
        ScalarValue::try_from_array(&list?, 0)
    }
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [values] = values else { return exec_err!("kept values take one argument") };
        self.0.offer_all(values, &vec![0; values.len()], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.0.groups.is_empty() {
            self.0.groups.push(Vec::new());
        }
        self.list()
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [lists] = states else { return exec_err!("kept values merge one list") };
        self.0.merge_lists(lists, &vec![0; lists.len()], 1)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, Int64Builder, ListBuilder};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::testing::xorshift;

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
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
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

    #[tokio::test]
    async fn the_kept_of_aggregate_gives_each_group_its_least_and_greatest_values_on_every_path() {
        use datafusion::arrow::array::StringViewArray;

        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        // Groups of every size around KEPT, values with repeats and nulls, spread over partitions
        // and batches, so partial states are merged; strings come as views, declared as Utf8.
        let rows: Vec<(i64, Option<i64>)> = (0..6000)
            .map(|_| {
                let g = (next() % 150) as i64;
                let size = [1, 3, 15, 16, 17, 40, 1000][(g % 7) as usize];
                (g, (!next().is_multiple_of(9)).then(|| (next() % size) as i64 - 5))
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new("s", DataType::Utf8View, true),
        ]));
        let partitions: Vec<Vec<RecordBatch>> = rows
            .chunks(1000)
            .map(|part| {
                part.chunks(300)
                    .map(|b| {
                        let g = Int64Array::from_iter_values(b.iter().map(|r| r.0));
                        let v = Int64Array::from_iter(b.iter().map(|r| r.1));
                        let s = StringViewArray::from_iter(b.iter().map(|r| r.1.map(|v| format!("{:04}", v + 100))));
                        RecordBatch::try_new(schema.clone(), vec![Arc::new(g), Arc::new(v), Arc::new(s)])
                            .expect("batch")
                    })
                    .collect()
            })
            .collect();
        for skip_partial in [false, true] {
            let mut config = SessionConfig::new().with_target_partitions(3).with_batch_size(128);
            if skip_partial {
                // Every row its own partial state (convert_to_state).
                let options = config.options_mut();
                options.execution.skip_partial_aggregation_probe_rows_threshold = 1;
                options.execution.skip_partial_aggregation_probe_ratio_threshold = 0.0;
            }
            let ctx = SessionContext::new_with_config(config);
            let table = MemTable::try_new(schema.clone(), partitions.clone()).expect("table");
            ctx.register_table("t", Arc::new(table)).expect("register");
            for t in [DataType::Int64, DataType::Utf8] {
                for descending in [false, true] {
                    ctx.register_udaf(AggregateUDF::new_from_impl(KeptOf::new(t.clone(), descending)));
                }
            }
            let sql = format!(
                "SELECT g, {}(v), {}(v), {}(s), {}(s) FROM t GROUP BY g ORDER BY g",
                KeptOf::function_name(&DataType::Int64, false),
                KeptOf::function_name(&DataType::Int64, true),
                KeptOf::function_name(&DataType::Utf8, false),
                KeptOf::function_name(&DataType::Utf8, true),
            );
            let batches = ctx.sql(&sql).await.expect("plan").collect().await.expect("run");
            let mut groups = 0;
            for b in &batches {
                let g = b.column(0).as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    let values: Vec<i64> = rows.iter().filter(|x| x.0 == g.value(r)).filter_map(|x| x.1).collect();
                    let mut least = values.clone();
                    least.sort_unstable();
                    let mut greatest = least.clone();
                    greatest.reverse();
                    least.truncate(KEPT);
                    greatest.truncate(KEPT);
                    let ints =
                        |c: usize| b.column(c).as_list::<i32>().value(r).as_primitive::<Int64Type>().values().to_vec();
                    let texts = |c: usize| {
                        let l = b.column(c).as_list::<i32>().value(r);
                        l.as_string::<i32>()
                            .iter()
                            .map(|s| s.expect("no null kept").parse::<i64>().expect("n") - 100)
                            .collect::<Vec<_>>()
                    };
                    let why = format!("group {} ({} values), skip partial {skip_partial}", g.value(r), values.len());
                    assert_eq!(ints(1), least, "{why}");
                    assert_eq!(ints(2), greatest, "{why}");
                    assert_eq!(texts(3), least, "{why}: strings");
                    assert_eq!(texts(4), greatest, "{why}: strings");
                    groups += 1;
                }
            }
            assert_eq!(groups, 150);
            // Without GROUP BY (one accumulator per partition, their states merged): every value.
            let all = format!(
                "SELECT {}(v), {}(v) FROM t",
                KeptOf::function_name(&DataType::Int64, false),
                KeptOf::function_name(&DataType::Int64, true)
            );
            let batches = ctx.sql(&all).await.expect("plan").collect().await.expect("run");
            let mut values: Vec<i64> = rows.iter().filter_map(|x| x.1).collect();
            values.sort_unstable();
            let ints =
                |c: usize| batches[0].column(c).as_list::<i32>().value(0).as_primitive::<Int64Type>().values().to_vec();
            assert_eq!(ints(0), values[..KEPT].to_vec(), "least of the whole table");
            values.reverse();
            assert_eq!(ints(1), values[..KEPT].to_vec(), "greatest of the whole table");
        }
    }

    #[tokio::test]
    async fn values_kept_natively_are_in_the_order_of_their_rows() {
        use datafusion::arrow::array::{Decimal128Array, Float64Array, TimestampMicrosecondArray};

        // Floats with every special value (NaN of both signs, zeros of both signs, infinities),
        // decimals and zoned timestamps: the native lists must be the lists rows would give,
        // since `Extremes` merges them as rows.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let floats = [f64::NAN, -f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 1.5, -1.5, f64::MIN_POSITIVE];
        let n = 1200;
        // A group, a float, a decimal's units and a timestamp's microseconds.
        type Row = (i64, Option<f64>, Option<i128>, Option<i64>);
        let rows: Vec<Row> = (0..n)
            .map(|_| {
                let valid = !next().is_multiple_of(10);
                let pick = next();
                (
                    (pick % 5) as i64,
                    valid.then(|| floats[(pick / 7 % floats.len() as u64) as usize] * (1.0 + (pick % 3) as f64)),
                    valid.then(|| (pick % 2001) as i128 - 1000),
                    valid.then(|| (pick % 5000) as i64 - 2500),
                )
            })
            .collect();
        let types = [
            DataType::Float64,
            DataType::Decimal128(18, 2),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("f", types[0].clone(), true),
            Field::new("d", types[1].clone(), true),
            Field::new("t", types[2].clone(), true),
        ]));
        let columns = |part: &[Row]| -> Vec<ArrayRef> {
            vec![
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter(part.iter().map(|r| r.1))),
                Arc::new(Decimal128Array::from_iter(part.iter().map(|r| r.2)).with_data_type(types[1].clone())),
                Arc::new(TimestampMicrosecondArray::from_iter(part.iter().map(|r| r.3)).with_timezone("UTC")),
            ]
        };
        let partitions: Vec<Vec<RecordBatch>> = rows
            .chunks(300)
            .map(|part| {
                part.chunks(100).map(|b| RecordBatch::try_new(schema.clone(), columns(b)).expect("batch")).collect()
            })
            .collect();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3).with_batch_size(64));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), partitions).expect("table")))
            .expect("register");
        let mut calls = Vec::new();
        for (t, column) in types.iter().zip(["f", "d", "t"]) {
            for descending in [false, true] {
                ctx.register_udaf(AggregateUDF::new_from_impl(KeptOf::new(t.clone(), descending)));
                calls.push(format!("{}({column})", KeptOf::function_name(t, descending)));
            }
        }
        let sql = format!("SELECT g, {} FROM t GROUP BY g ORDER BY g", calls.join(", "));
        let batches = ctx.sql(&sql).await.expect("plan").collect().await.expect("run");
        let all = RecordBatch::try_new(schema.clone(), columns(&rows)).expect("all");
        let mut groups = 0;
        for b in &batches {
            for r in 0..b.num_rows() {
                let g = b.column(0).as_primitive::<Int64Type>().value(r);
                for (c, t) in types.iter().enumerate() {
                    for (k, descending) in [false, true].into_iter().enumerate() {
                        let converter = converter(t, descending).expect("converter");
                        let rows_of = |a: &ArrayRef| -> Vec<Vec<u8>> {
                            let rows = converter.convert_columns(&[Arc::clone(a)]).expect("rows");
                            rows.iter().map(|row| row.as_ref().to_vec()).collect()
                        };
                        let values = all.column(c + 1);
                        let mut want: Vec<Vec<u8>> = rows_of(values)
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| rows[*i].0 == g && values.is_valid(*i))
                            .map(|(_, row)| row)
                            .collect();
                        want.sort();
                        want.truncate(KEPT);
                        let got = rows_of(&b.column(1 + 2 * c + k).as_list::<i32>().value(r));
                        assert_eq!(got, want, "group {g}, {t}, descending {descending}");
                    }
                }
                groups += 1;
            }
        }
        assert_eq!(groups, 5);
    }
}
