//! Aggregate functions and their vectorized accumulators.

use std::sync::Arc;

use sabot_core::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray,
};
use sabot_core::arrow::buffer::NullBuffer;
use sabot_core::arrow::compute::cast;
use sabot_core::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float64Type, Int64Type, Schema,
};
use sabot_core::{CoreError, column_index};

use crate::Result;

/// Which aggregate function.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggKind {
    /// Number of rows (or of non-null values of a column).
    Count,
    /// Sum of the non-null values (integers wrap around on overflow, as in Flink).
    Sum,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Mean of the non-null values, as Float64 (null when there are none). Integer
    /// inputs are summed exactly (wrapping i64) and divided once, at the end.
    Avg,
}

/// One aggregate in a window: a function, its input column and its output name.
///
/// ```
/// use sabot_operators::Aggregate;
/// let total = Aggregate::sum("amount").alias("total");
/// assert_eq!(total.output_name(), "total");
/// assert_eq!(Aggregate::count().output_name(), "count");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    kind: AggKind,
    column: Option<String>,
    alias: Option<String>,
}

impl Aggregate {
    /// `count(*)`: rows per group.
    pub fn count() -> Self {
        Aggregate {
            kind: AggKind::Count,
            column: None,
            alias: None,
        }
    }

    /// Non-null values of `column` per group.
    pub fn count_of(column: impl Into<String>) -> Self {
        Self::of(AggKind::Count, column)
    }

    /// Sum of `column`.
    pub fn sum(column: impl Into<String>) -> Self {
        Self::of(AggKind::Sum, column)
    }

    /// Minimum of `column`.
    pub fn min(column: impl Into<String>) -> Self {
        Self::of(AggKind::Min, column)
    }

    /// Maximum of `column`.
    pub fn max(column: impl Into<String>) -> Self {
        Self::of(AggKind::Max, column)
    }

    /// Mean of `column` (Float64).
    pub fn avg(column: impl Into<String>) -> Self {
        Self::of(AggKind::Avg, column)
    }

    fn of(kind: AggKind, column: impl Into<String>) -> Self {
        Aggregate {
            kind,
            column: Some(column.into()),
            alias: None,
        }
    }

    /// Names the output column.
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.alias = Some(name.into());
        self
    }

    /// The output column's name: the alias, else `<fn>_<column>`, else `count`.
    pub fn output_name(&self) -> String {
        if let Some(a) = &self.alias {
            return a.clone();
        }
        let f = match self.kind {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
        };
        match &self.column {
            Some(c) => format!("{f}_{c}"),
            None => f.to_owned(),
        }
    }

    /// Resolves the input column against `schema`.
    pub(crate) fn bind(&self, schema: &Schema) -> Result<BoundAggregate> {
        let input = match &self.column {
            None => None,
            Some(c) => Some(column_index(schema, c)?),
        };
        let numeric = match input {
            None => Numeric::I64,
            Some(i) => {
                let f = schema.field(i);
                match (self.kind, f.data_type()) {
                    (AggKind::Count, _) => Numeric::I64,
                    (_, t) if t.is_integer() => Numeric::I64,
                    (_, t) if t.is_floating() => Numeric::F64,
                    (_, t) => {
                        return Err(CoreError::InvalidColumnType {
                            column: f.name().clone(),
                            expected: "an integer or floating-point column".into(),
                            actual: t.clone(),
                        }
                        .into());
                    }
                }
            }
        };
        let data_type = match (self.kind, numeric) {
            (AggKind::Avg, _) | (_, Numeric::F64) => DataType::Float64,
            (_, Numeric::I64) => DataType::Int64,
        };
        let nullable = self.kind != AggKind::Count;
        Ok(BoundAggregate {
            kind: self.kind,
            input,
            numeric,
            field: Field::new(self.output_name(), data_type, nullable),
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Numeric {
    I64,
    F64,
}

/// An aggregate resolved against an input schema.
#[derive(Clone, Debug)]
pub(crate) struct BoundAggregate {
    pub(crate) kind: AggKind,
    pub(crate) input: Option<usize>,
    pub(crate) numeric: Numeric,
    pub(crate) field: Field,
}

impl BoundAggregate {
    /// The input column of `batch_columns`, cast to the accumulator's type once per batch.
    pub(crate) fn values(&self, columns: &[ArrayRef]) -> Result<Option<ArrayRef>> {
        let Some(i) = self.input else {
            return Ok(None);
        };
        let col = &columns[i];
        if self.kind == AggKind::Count {
            return Ok(Some(col.clone()));
        }
        let target = match self.numeric {
            Numeric::I64 => DataType::Int64,
            Numeric::F64 => DataType::Float64,
        };
        if col.data_type() == &target {
            Ok(Some(col.clone()))
        } else {
            Ok(Some(cast(col, &target)?))
        }
    }

    /// The stored form's name in state fingerprints, e.g. `sum:i64`.
    pub(crate) fn layout(&self) -> String {
        let kind = match self.kind {
            AggKind::Count => return "count".into(),
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
        };
        let t = match self.numeric {
            Numeric::I64 => "i64",
            Numeric::F64 => "f64",
        };
        format!("{kind}:{t}")
    }

    pub(crate) fn new_accumulator(&self) -> Accumulator {
        match (self.kind, self.numeric) {
            (AggKind::Count, _) => Accumulator::Count(Vec::new()),
            (AggKind::Avg, Numeric::I64) => {
                Accumulator::AvgI64(NumAcc::new(AggKind::Sum), Vec::new())
            }
            (AggKind::Avg, Numeric::F64) => {
                Accumulator::AvgF64(NumAcc::new(AggKind::Sum), Vec::new())
            }
            (kind, Numeric::I64) => Accumulator::I64(NumAcc::new(kind)),
            (kind, Numeric::F64) => Accumulator::F64(NumAcc::new(kind)),
        }
    }
}

/// Per-group accumulator slots for one aggregate, stored column-wise.
pub(crate) enum Accumulator {
    Count(Vec<i64>),
    I64(NumAcc<Int64Type>),
    F64(NumAcc<Float64Type>),
    /// A sum and the number of values it holds.
    AvgI64(NumAcc<Int64Type>, Vec<i64>),
    AvgF64(NumAcc<Float64Type>, Vec<i64>),
}

pub(crate) struct NumAcc<T: ArrowPrimitiveType> {
    kind: AggKind,
    values: Vec<T::Native>,
    seen: Vec<bool>,
}

impl<T: ArrowPrimitiveType> NumAcc<T> {
    fn new(kind: AggKind) -> Self {
        NumAcc {
            kind,
            values: Vec::new(),
            seen: Vec::new(),
        }
    }
}

trait Combine: Copy {
    fn sum(self, other: Self) -> Self;
    fn min(self, other: Self) -> Self;
    fn max(self, other: Self) -> Self;
    fn to_le(self) -> [u8; 8];
    fn from_le(b: [u8; 8]) -> Self;
}

impl Combine for i64 {
    #[inline]
    fn sum(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    #[inline]
    fn min(self, o: Self) -> Self {
        Ord::min(self, o)
    }
    #[inline]
    fn max(self, o: Self) -> Self {
        Ord::max(self, o)
    }
    #[inline]
    fn to_le(self) -> [u8; 8] {
        self.to_le_bytes()
    }
    #[inline]
    fn from_le(b: [u8; 8]) -> Self {
        i64::from_le_bytes(b)
    }
}

impl Combine for f64 {
    #[inline]
    fn sum(self, o: Self) -> Self {
        self + o
    }
    #[inline]
    fn min(self, o: Self) -> Self {
        f64::min(self, o)
    }
    #[inline]
    fn max(self, o: Self) -> Self {
        f64::max(self, o)
    }
    #[inline]
    fn to_le(self) -> [u8; 8] {
        self.to_le_bytes()
    }
    #[inline]
    fn from_le(b: [u8; 8]) -> Self {
        f64::from_le_bytes(b)
    }
}

/// Which input rows feed which groups: all rows in order, or a subset.
#[derive(Copy, Clone)]
pub(crate) enum RowSel<'a> {
    All,
    Some(&'a [u32]),
}

/// Bytes of a stored `Count` slot: the count, i64 little-endian.
const COUNT_WIDTH: usize = 8;
/// Bytes of a stored numeric slot: a "seen" byte (0 or 1), then the value, 8 bytes
/// little-endian (i64, or f64 bits).
const NUM_WIDTH: usize = 9;

impl Accumulator {
    /// Bytes of one group's slot in its stored form (see [`encode`](Self::encode)).
    pub(crate) fn width(&self) -> usize {
        match self {
            Accumulator::Count(_) => COUNT_WIDTH,
            Accumulator::I64(_) | Accumulator::F64(_) => NUM_WIDTH,
            Accumulator::AvgI64(..) | Accumulator::AvgF64(..) => NUM_WIDTH + COUNT_WIDTH,
        }
    }

    /// Appends group `g`'s slot in stored form.
    pub(crate) fn encode(&self, g: usize, out: &mut Vec<u8>) {
        fn num<T: ArrowPrimitiveType>(a: &NumAcc<T>, g: usize, out: &mut Vec<u8>)
        where
            T::Native: Combine,
        {
            out.push(u8::from(a.seen[g]));
            out.extend_from_slice(&a.values[g].to_le());
        }
        match self {
            Accumulator::Count(v) => out.extend_from_slice(&v[g].to_le_bytes()),
            Accumulator::I64(a) => num(a, g, out),
            Accumulator::F64(a) => num(a, g, out),
            Accumulator::AvgI64(a, n) => {
                num(a, g, out);
                out.extend_from_slice(&n[g].to_le_bytes());
            }
            Accumulator::AvgF64(a, n) => {
                num(a, g, out);
                out.extend_from_slice(&n[g].to_le_bytes());
            }
        }
    }

    /// Combines a stored slot (exactly [`width`](Self::width) bytes) into group `g`, so
    /// `g` then holds the aggregate over both. Returns `false` for malformed bytes.
    pub(crate) fn merge_stored(&mut self, g: usize, stored: &[u8]) -> bool {
        fn num<T: ArrowPrimitiveType>(a: &mut NumAcc<T>, g: usize, stored: &[u8]) -> bool
        where
            T::Native: Combine,
        {
            let (seen, Ok(bytes)) = (stored[0], <[u8; 8]>::try_from(&stored[1..])) else {
                return false;
            };
            match seen {
                0 => true,
                1 => {
                    let x = T::Native::from_le(bytes);
                    a.values[g] = if a.seen[g] {
                        let y = a.values[g];
                        match a.kind {
                            AggKind::Sum => x.sum(y),
                            AggKind::Min => Combine::min(x, y),
                            AggKind::Max => Combine::max(x, y),
                            AggKind::Count | AggKind::Avg => y,
                        }
                    } else {
                        x
                    };
                    a.seen[g] = true;
                    true
                }
                _ => false,
            }
        }
        fn count(v: &mut [i64], g: usize, stored: &[u8]) -> bool {
            let Ok(b) = <[u8; 8]>::try_from(stored) else {
                return false;
            };
            v[g] = v[g].wrapping_add(i64::from_le_bytes(b));
            true
        }
        if stored.len() != self.width() {
            return false;
        }
        match self {
            Accumulator::Count(v) => count(v, g, stored),
            Accumulator::I64(a) => num(a, g, stored),
            Accumulator::F64(a) => num(a, g, stored),
            Accumulator::AvgI64(a, n) => {
                num(a, g, &stored[..NUM_WIDTH]) && count(n, g, &stored[NUM_WIDTH..])
            }
            Accumulator::AvgF64(a, n) => {
                num(a, g, &stored[..NUM_WIDTH]) && count(n, g, &stored[NUM_WIDTH..])
            }
        }
    }

    /// Empties every slot, keeping `groups` of them.
    pub(crate) fn reset(&mut self, groups: usize) {
        self.resize(0);
        self.resize(groups);
    }

    /// Grows the slots to `groups`.
    pub(crate) fn resize(&mut self, groups: usize) {
        match self {
            Accumulator::Count(v) => v.resize(groups, 0),
            Accumulator::I64(a) => {
                a.values.resize(groups, 0);
                a.seen.resize(groups, false);
            }
            Accumulator::F64(a) => {
                a.values.resize(groups, 0.0);
                a.seen.resize(groups, false);
            }
            Accumulator::AvgI64(a, n) => {
                a.values.resize(groups, 0);
                a.seen.resize(groups, false);
                n.resize(groups, 0);
            }
            Accumulator::AvgF64(a, n) => {
                a.values.resize(groups, 0.0);
                a.seen.resize(groups, false);
                n.resize(groups, 0);
            }
        }
    }

    /// Adds the selected rows of `values` to their groups (`groups[i]` is the group of the
    /// i-th selected row).
    pub(crate) fn update(&mut self, values: Option<&ArrayRef>, rows: RowSel<'_>, groups: &[u32]) {
        fn count_valid(
            counts: &mut [i64],
            values: Option<&ArrayRef>,
            rows: RowSel<'_>,
            groups: &[u32],
        ) {
            match values.and_then(|v| v.logical_nulls()) {
                None => {
                    for &g in groups {
                        counts[g as usize] += 1;
                    }
                }
                Some(nulls) => for_each(rows, groups, |row, g| {
                    counts[g] += i64::from(nulls.is_valid(row));
                }),
            }
        }
        match self {
            Accumulator::Count(counts) => count_valid(counts, values, rows, groups),
            Accumulator::AvgI64(acc, counts) => {
                if let Some(v) = values {
                    update_num(acc, v.as_primitive::<Int64Type>(), rows, groups);
                    count_valid(counts, values, rows, groups);
                }
            }
            Accumulator::AvgF64(acc, counts) => {
                if let Some(v) = values {
                    update_num(acc, v.as_primitive::<Float64Type>(), rows, groups);
                    count_valid(counts, values, rows, groups);
                }
            }
            Accumulator::I64(acc) => {
                if let Some(v) = values {
                    update_num(acc, v.as_primitive::<Int64Type>(), rows, groups);
                }
            }
            Accumulator::F64(acc) => {
                if let Some(v) = values {
                    update_num(acc, v.as_primitive::<Float64Type>(), rows, groups);
                }
            }
        }
    }

    /// The final values of `groups` (every group, in order, if `None`).
    pub(crate) fn finish(&self, groups: Option<&[u32]>) -> ArrayRef {
        fn pick<T: Copy>(v: &[T], groups: Option<&[u32]>) -> Vec<T> {
            match groups {
                None => v.to_vec(),
                Some(g) => g.iter().map(|&g| v[g as usize]).collect(),
            }
        }
        match self {
            Accumulator::Count(v) => Arc::new(Int64Array::from(pick(v, groups))),
            Accumulator::I64(a) => Arc::new(Int64Array::new(
                pick(&a.values, groups).into(),
                Some(NullBuffer::from(pick(&a.seen, groups))),
            )),
            Accumulator::F64(a) => Arc::new(Float64Array::new(
                pick(&a.values, groups).into(),
                Some(NullBuffer::from(pick(&a.seen, groups))),
            )),
            Accumulator::AvgI64(a, n) => avg(
                pick(&a.values, groups).into_iter().map(|s| s as f64),
                pick(n, groups),
            ),
            Accumulator::AvgF64(a, n) => avg(pick(&a.values, groups).into_iter(), pick(n, groups)),
        }
    }
}

/// Sums divided by counts; null where the count is 0.
fn avg(sums: impl Iterator<Item = f64>, counts: Vec<i64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(
        sums.zip(counts).map(|(s, n)| (n > 0).then(|| s / n as f64)),
    ))
}

#[inline]
fn for_each(rows: RowSel<'_>, groups: &[u32], mut f: impl FnMut(usize, usize)) {
    match rows {
        RowSel::All => {
            for (row, &g) in groups.iter().enumerate() {
                f(row, g as usize);
            }
        }
        RowSel::Some(rows) => {
            for (&row, &g) in rows.iter().zip(groups) {
                f(row as usize, g as usize);
            }
        }
    }
}

fn update_num<T>(acc: &mut NumAcc<T>, input: &PrimitiveArray<T>, rows: RowSel<'_>, groups: &[u32])
where
    T: ArrowPrimitiveType,
    T::Native: Combine,
{
    let data = input.values();
    let (values, seen) = (&mut acc.values, &mut acc.seen);
    let nulls = input.nulls().cloned();
    // Monomorphic loops per aggregate kind, so the combine call inlines.
    macro_rules! run {
        ($f:expr) => {
            for_each(rows, groups, |row, g| {
                if nulls.as_ref().is_none_or(|n| n.is_valid(row)) {
                    let x = data[row];
                    values[g] = if seen[g] { $f(values[g], x) } else { x };
                    seen[g] = true;
                }
            })
        };
    }
    match acc.kind {
        AggKind::Sum => run!(Combine::sum),
        AggKind::Min => run!(Combine::min),
        AggKind::Max => run!(Combine::max),
        AggKind::Count | AggKind::Avg => {}
    }
}
