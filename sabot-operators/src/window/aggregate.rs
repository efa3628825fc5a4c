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
    /// Number of distinct non-null values: exact for integer and floating-point
    /// columns (by value), by 64-bit hash for other types.
    CountDistinct,
    /// The value of the row with the smallest event time (ties: the smallest value).
    First,
    /// The value of the row with the largest event time (ties: the largest value).
    Last,
    /// A user [`AggregateFunction`].
    User,
}

/// A user aggregate function over one input column, with accumulators as bytes (so
/// that they live in the state backend and checkpoints): Flink's `AggregateFunction`
/// (create, add, merge, get result), called a batch at a time.
///
/// ```
/// use std::sync::Arc;
/// use sabot_core::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
/// use sabot_core::arrow::datatypes::{DataType, Int64Type};
/// use sabot_operators::{Aggregate, AggregateFunction, BoxError};
///
/// /// Sum of squares.
/// #[derive(Debug)]
/// struct SumSq;
///
/// impl AggregateFunction for SumSq {
///     fn name(&self) -> &str { "sum_sq" }
///     fn output_type(&self, _input: &DataType) -> Result<DataType, BoxError> {
///         Ok(DataType::Int64)
///     }
///     fn create(&self, acc: &mut Vec<u8>) { acc.extend_from_slice(&0i64.to_le_bytes()) }
///     fn add(&self, acc: &mut Vec<u8>, values: &ArrayRef, rows: &[u32]) -> Result<(), BoxError> {
///         let v = values.as_primitive::<Int64Type>();
///         let mut s = i64::from_le_bytes(acc[..8].try_into()?);
///         for &r in rows { s += v.value(r as usize).pow(2); }
///         acc[..8].copy_from_slice(&s.to_le_bytes());
///         Ok(())
///     }
///     fn merge(&self, acc: &mut Vec<u8>, other: &[u8]) -> Result<(), BoxError> {
///         let s = i64::from_le_bytes(acc[..8].try_into()?) + i64::from_le_bytes(other.try_into()?);
///         acc[..8].copy_from_slice(&s.to_le_bytes());
///         Ok(())
///     }
///     fn result(&self, accs: &[&[u8]]) -> Result<ArrayRef, BoxError> {
///         Ok(Arc::new(accs.iter().map(|a| Ok(i64::from_le_bytes((*a).try_into()?)))
///             .collect::<Result<Int64Array, BoxError>>()?))
///     }
/// }
///
/// let agg = Aggregate::user("value", Arc::new(SumSq));
/// assert_eq!(agg.output_name(), "sum_sq_value");
/// ```
pub trait AggregateFunction: Send + Sync + std::fmt::Debug {
    /// The function's name: the default output column is `{name}_{column}`, and it is
    /// part of the state layout (renaming it makes old checkpoints unreadable).
    fn name(&self) -> &str;
    /// The output type for an input column of type `input` (an error rejects the input
    /// when the job is built).
    fn output_type(&self, input: &DataType) -> std::result::Result<DataType, crate::BoxError>;
    /// Writes an empty accumulator into `acc` (empty when called).
    fn create(&self, acc: &mut Vec<u8>);
    /// Adds rows `rows` of `values` (the input column of one batch) to `acc`.
    fn add(
        &self,
        acc: &mut Vec<u8>,
        values: &ArrayRef,
        rows: &[u32],
    ) -> std::result::Result<(), crate::BoxError>;
    /// Combines accumulator `other` into `acc`.
    fn merge(&self, acc: &mut Vec<u8>, other: &[u8]) -> std::result::Result<(), crate::BoxError>;
    /// The results of `accs`, one row each, of [`output_type`](Self::output_type).
    fn result(&self, accs: &[&[u8]]) -> std::result::Result<ArrayRef, crate::BoxError>;
}

/// A user function held by an [`Aggregate`]: equal when it is the same instance.
#[derive(Clone, Debug)]
struct UserFn(Arc<dyn AggregateFunction>);

impl PartialEq for UserFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for UserFn {}

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
    user: Option<UserFn>,
}

impl Aggregate {
    /// `count(*)`: rows per group.
    pub fn count() -> Self {
        Aggregate {
            kind: AggKind::Count,
            column: None,
            alias: None,
            user: None,
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

    /// Number of distinct non-null values of `column` (exact; see
    /// [`AggKind::CountDistinct`]). Its state holds every distinct value per group.
    pub fn count_distinct(column: impl Into<String>) -> Self {
        Self::of(AggKind::CountDistinct, column)
    }

    /// `column`'s value in the row with the smallest event time of the group (numeric
    /// columns; event-time windows only).
    pub fn first(column: impl Into<String>) -> Self {
        Self::of(AggKind::First, column)
    }

    /// `column`'s value in the row with the largest event time of the group (numeric
    /// columns; event-time windows only).
    pub fn last(column: impl Into<String>) -> Self {
        Self::of(AggKind::Last, column)
    }

    /// A user [`AggregateFunction`] over `column`.
    pub fn user(column: impl Into<String>, f: Arc<dyn AggregateFunction>) -> Self {
        Aggregate {
            user: Some(UserFn(f)),
            ..Self::of(AggKind::User, column)
        }
    }

    fn of(kind: AggKind, column: impl Into<String>) -> Self {
        Aggregate {
            kind,
            column: Some(column.into()),
            alias: None,
            user: None,
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
            AggKind::CountDistinct => "count_distinct",
            AggKind::First => "first",
            AggKind::Last => "last",
            AggKind::User => self.user.as_ref().map_or("user", |u| u.0.name()),
        };
        match &self.column {
            Some(c) => format!("{f}_{c}"),
            None => f.to_owned(),
        }
    }

    /// Resolves the input column against `schema`; `time` is the input's event-time
    /// column, where it has one (first and last need it).
    pub(crate) fn bind(&self, schema: &Schema, time: Option<usize>) -> Result<BoundAggregate> {
        let input = match &self.column {
            None => None,
            Some(c) => Some(column_index(schema, c)?),
        };
        let invalid = |reason: String| crate::OperatorError::InvalidPlan {
            operator: format!("aggregate `{}`", self.output_name()),
            reason,
        };
        if matches!(self.kind, AggKind::First | AggKind::Last) && time.is_none() {
            return Err(invalid(
                "first and last need event time: use them in event-time windows".into(),
            ));
        }
        let numeric = match input {
            None => Numeric::I64,
            Some(i) => {
                let f = schema.field(i);
                match (self.kind, f.data_type()) {
                    (AggKind::Count | AggKind::CountDistinct | AggKind::User, _) => Numeric::I64,
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
            (AggKind::User, _) => {
                let (Some(u), Some(i)) = (&self.user, input) else {
                    return Err(invalid(
                        "a user aggregate needs a function and a column".into(),
                    ));
                };
                u.0.output_type(schema.field(i).data_type())
                    .map_err(|e| invalid(format!("rejects its input: {e}")))?
            }
            (AggKind::Count | AggKind::CountDistinct, _) => DataType::Int64,
            (AggKind::Avg, _) | (_, Numeric::F64) => DataType::Float64,
            (_, Numeric::I64) => DataType::Int64,
        };
        let nullable = !matches!(self.kind, AggKind::Count | AggKind::CountDistinct);
        Ok(BoundAggregate {
            kind: self.kind,
            input,
            input_nullable: input.is_some_and(|i| schema.field(i).is_nullable()),
            numeric,
            field: Field::new(self.output_name(), data_type, nullable),
            user: self.user.as_ref().map(|u| u.0.clone()),
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
    /// Whether the input column may hold nulls.
    pub(crate) input_nullable: bool,
    pub(crate) numeric: Numeric,
    pub(crate) field: Field,
    pub(crate) user: Option<Arc<dyn AggregateFunction>>,
}

impl BoundAggregate {
    /// The input column of `batch_columns`, cast to the accumulator's type once per batch.
    pub(crate) fn values(&self, columns: &[ArrayRef]) -> Result<Option<ArrayRef>> {
        let Some(i) = self.input else {
            return Ok(None);
        };
        let col = &columns[i];
        if matches!(
            self.kind,
            AggKind::Count | AggKind::CountDistinct | AggKind::User
        ) {
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
            AggKind::CountDistinct => return "count_distinct".into(),
            AggKind::User => {
                return format!("user:{}", self.user.as_ref().map_or("?", |u| u.name()));
            }
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
            AggKind::First => "first",
            AggKind::Last => "last",
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
            (AggKind::CountDistinct, _) => Accumulator::Distinct(Vec::new()),
            (AggKind::User, _) => match &self.user {
                Some(f) => Accumulator::User(f.clone(), Vec::new()),
                None => Accumulator::Count(Vec::new()),
            },
            (AggKind::First | AggKind::Last, Numeric::I64) => {
                Accumulator::PickI64(NumAcc::new(self.kind), Vec::new())
            }
            (AggKind::First | AggKind::Last, Numeric::F64) => {
                Accumulator::PickF64(NumAcc::new(self.kind), Vec::new())
            }
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
    /// The distinct values (their bits, or hashes) per group.
    Distinct(Vec<hashbrown::HashSet<u64>>),
    /// First or last (the `NumAcc`'s kind): the value and its event time per group.
    PickI64(NumAcc<Int64Type>, Vec<i64>),
    PickF64(NumAcc<Float64Type>, Vec<i64>),
    /// A user function's accumulators.
    User(Arc<dyn AggregateFunction>, Vec<Vec<u8>>),
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
    /// A total order (floats by `total_cmp`).
    fn total_lt(self, other: Self) -> bool;
    fn sum(self, other: Self) -> Self;
    fn min(self, other: Self) -> Self;
    fn max(self, other: Self) -> Self;
    fn to_le(self) -> [u8; 8];
    fn from_le(b: [u8; 8]) -> Self;
}

impl Combine for i64 {
    #[inline]
    fn total_lt(self, o: Self) -> bool {
        self < o
    }
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
    fn total_lt(self, o: Self) -> bool {
        self.total_cmp(&o).is_lt()
    }
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

/// The slots of one group, one per aggregate, back to back, form a slot set; a stored
/// value is one or more slot sets (merged partial aggregates, appended where the backend
/// prefers blind writes). Fixed-width slots: `Count` 8 bytes; sum, min, max 9 (seen
/// byte + value); avg 17 (+ count); first/last 17 (+ event time). Variable-width slots
/// start with their length (u32 LE): count distinct (the values' 8-byte bits or hashes)
/// and user functions (their accumulator bytes).
///
/// The number of whole slot sets `value` holds, if it is made of whole sets.
pub(crate) fn slot_sets(accs: &[Accumulator], value: &[u8]) -> Option<usize> {
    let (mut at, mut sets) = (0, 0);
    while at < value.len() {
        for a in accs {
            at += a.slot_len(&value[at..])?;
        }
        sets += 1;
    }
    (at == value.len()).then_some(sets)
}

/// Combines every slot set of `value` into group `g`. Returns `false` if the bytes are
/// not whole slot sets.
pub(crate) fn merge_value(accs: &mut [Accumulator], g: usize, value: &[u8]) -> bool {
    if value.is_empty() {
        return false;
    }
    let mut at = 0;
    while at < value.len() {
        for a in accs.iter_mut() {
            let Some(len) = a.slot_len(&value[at..]) else {
                return false;
            };
            if !a.merge_stored(g, &value[at..at + len]) {
                return false;
            }
            at += len;
        }
    }
    true
}

/// Combines group `g` of `src` into group `h` of `dst` (accumulators of the same
/// aggregates). Returns `false` if they are not of the same aggregates.
pub(crate) fn merge_group(
    dst: &mut [Accumulator],
    h: usize,
    src: &[Accumulator],
    g: usize,
) -> bool {
    dst.iter_mut().zip(src).all(|(d, s)| d.merge_from(h, s, g))
}

/// Combines every group `g` of `src` into group `map[g]` of `dst`.
pub(crate) fn merge_mapped(dst: &mut [Accumulator], src: &[Accumulator], map: &[u32]) -> bool {
    dst.iter_mut().zip(src).all(|(d, s)| d.merge_mapped(s, map))
}

/// Takes every group `g` of `src` out of group `map[g]` of `dst`: the inverse of
/// [`merge_mapped`], for accumulators where [`Accumulator::invertible`] holds.
pub(crate) fn unmerge_mapped(dst: &mut [Accumulator], src: &[Accumulator], map: &[u32]) -> bool {
    dst.iter_mut()
        .zip(src)
        .all(|(d, s)| d.unmerge_mapped(s, map))
}

/// Appends group `g`'s slot set.
pub(crate) fn encode_set(accs: &[Accumulator], g: usize, out: &mut Vec<u8>) {
    accs.iter().for_each(|a| a.encode(g, out));
}

/// The values of `values` as 8-byte identities for count distinct: integers by value,
/// floats by bits, anything else by a 64-bit hash of the value.
fn distinct_ids(values: &ArrayRef) -> Result<Vec<u64>> {
    if values.data_type().is_integer() {
        let v = cast(values, &DataType::Int64)?;
        return Ok(v
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&x| x as u64)
            .collect());
    }
    if values.data_type().is_floating() {
        let v = cast(values, &DataType::Float64)?;
        return Ok(v
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&x| if x == 0.0 { 0 } else { x.to_bits() })
            .collect());
    }
    let mut out = Vec::new();
    sabot_core::key::hash_columns(std::slice::from_ref(values), &mut out)?;
    Ok(out)
}

impl Accumulator {
    /// Whether [`unmerge_from`](Self::unmerge_from) can take a merged group out again:
    /// counts, integer averages, and integer sums (`nullable_input = false`: every row
    /// has a value, so a group with rows has a sum).
    pub(crate) fn invertible(&self, nullable_input: bool) -> bool {
        match self {
            Accumulator::Count(_) | Accumulator::AvgI64(..) => true,
            Accumulator::I64(a) => a.kind == AggKind::Sum && !nullable_input,
            _ => false,
        }
    }

    /// Combines group `g` of `src` (the same aggregate) into group `h`.
    pub(crate) fn merge_from(&mut self, h: usize, src: &Accumulator, g: usize) -> bool {
        fn num<T: ArrowPrimitiveType>(a: &mut NumAcc<T>, h: usize, s: &NumAcc<T>, g: usize)
        where
            T::Native: Combine,
        {
            if !s.seen[g] {
                return;
            }
            let x = s.values[g];
            a.values[h] = if a.seen[h] {
                let y = a.values[h];
                match a.kind {
                    AggKind::Sum => y.sum(x),
                    AggKind::Min => Combine::min(y, x),
                    AggKind::Max => Combine::max(y, x),
                    _ => y,
                }
            } else {
                x
            };
            a.seen[h] = true;
        }
        match (self, src) {
            (Accumulator::Count(d), Accumulator::Count(s)) => d[h] = d[h].wrapping_add(s[g]),
            (Accumulator::I64(d), Accumulator::I64(s)) => num(d, h, s, g),
            (Accumulator::F64(d), Accumulator::F64(s)) => num(d, h, s, g),
            (Accumulator::AvgI64(d, dn), Accumulator::AvgI64(s, sn)) => {
                num(d, h, s, g);
                dn[h] += sn[g];
            }
            (Accumulator::AvgF64(d, dn), Accumulator::AvgF64(s, sn)) => {
                num(d, h, s, g);
                dn[h] += sn[g];
            }
            (Accumulator::PickI64(d, dt), Accumulator::PickI64(s, st)) => {
                if s.seen[g] {
                    offer(d, dt, h, s.values[g], st[g]);
                }
            }
            (Accumulator::PickF64(d, dt), Accumulator::PickF64(s, st)) => {
                if s.seen[g] {
                    offer(d, dt, h, s.values[g], st[g]);
                }
            }
            (Accumulator::Distinct(d), Accumulator::Distinct(s)) => {
                d[h].extend(s[g].iter().copied());
            }
            (Accumulator::User(f, d), Accumulator::User(_, s)) => {
                return f.merge(&mut d[h], &s[g]).is_ok();
            }
            _ => return false,
        }
        true
    }

    /// Combines every group `g` of `src` into group `map[g]` (one dispatch for all).
    pub(crate) fn merge_mapped(&mut self, src: &Accumulator, map: &[u32]) -> bool {
        match (self, src) {
            (Accumulator::Count(d), Accumulator::Count(s)) => {
                for (&h, &x) in map.iter().zip(s.iter()) {
                    d[h as usize] = d[h as usize].wrapping_add(x);
                }
                true
            }
            (d, s) => map
                .iter()
                .enumerate()
                .all(|(g, &h)| d.merge_from(h as usize, s, g)),
        }
    }

    /// Takes every group `g` of `src` out of group `map[g]` (see
    /// [`invertible`](Self::invertible)).
    pub(crate) fn unmerge_mapped(&mut self, src: &Accumulator, map: &[u32]) -> bool {
        match (self, src) {
            (Accumulator::Count(d), Accumulator::Count(s)) => {
                for (&h, &x) in map.iter().zip(s.iter()) {
                    d[h as usize] = d[h as usize].wrapping_sub(x);
                }
                true
            }
            (d, s) => map
                .iter()
                .enumerate()
                .all(|(g, &h)| d.unmerge_from(h as usize, s, g)),
        }
    }

    /// Takes group `g` of `src` out of group `h` (see [`invertible`](Self::invertible)).
    pub(crate) fn unmerge_from(&mut self, h: usize, src: &Accumulator, g: usize) -> bool {
        match (self, src) {
            (Accumulator::Count(d), Accumulator::Count(s)) => d[h] = d[h].wrapping_sub(s[g]),
            (Accumulator::I64(d), Accumulator::I64(s)) if d.kind == AggKind::Sum => {
                if s.seen[g] {
                    d.values[h] = d.values[h].wrapping_sub(s.values[g]);
                }
            }
            (Accumulator::AvgI64(d, dn), Accumulator::AvgI64(s, sn)) => {
                if s.seen[g] {
                    d.values[h] = d.values[h].wrapping_sub(s.values[g]);
                }
                dn[h] -= sn[g];
            }
            _ => return false,
        }
        true
    }

    /// The length of the slot at the start of `bytes`, if it is all there.
    pub(crate) fn slot_len(&self, bytes: &[u8]) -> Option<usize> {
        let len = match self {
            Accumulator::Count(_) => COUNT_WIDTH,
            Accumulator::I64(_) | Accumulator::F64(_) => NUM_WIDTH,
            Accumulator::AvgI64(..)
            | Accumulator::AvgF64(..)
            | Accumulator::PickI64(..)
            | Accumulator::PickF64(..) => NUM_WIDTH + COUNT_WIDTH,
            Accumulator::Distinct(_) | Accumulator::User(..) => {
                let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
                4usize.checked_add(n)?
            }
        };
        (bytes.len() >= len).then_some(len)
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
            Accumulator::AvgI64(a, n) | Accumulator::PickI64(a, n) => {
                num(a, g, out);
                out.extend_from_slice(&n[g].to_le_bytes());
            }
            Accumulator::AvgF64(a, n) | Accumulator::PickF64(a, n) => {
                num(a, g, out);
                out.extend_from_slice(&n[g].to_le_bytes());
            }
            Accumulator::Distinct(sets) => {
                let set = &sets[g];
                out.extend_from_slice(&((set.len() * 8) as u32).to_le_bytes());
                // Sorted: the same set always has the same bytes.
                let mut ids: Vec<u64> = set.iter().copied().collect();
                ids.sort_unstable();
                for id in ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            Accumulator::User(_, accs) => {
                out.extend_from_slice(&(accs[g].len() as u32).to_le_bytes());
                out.extend_from_slice(&accs[g]);
            }
        }
    }

    /// Combines a stored slot (exactly [`slot_len`](Self::slot_len) bytes) into group
    /// `g`, so `g` then holds the aggregate over both. Returns `false` for malformed
    /// bytes.
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
                            _ => y,
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
        fn pick<T: ArrowPrimitiveType>(
            a: &mut NumAcc<T>,
            ts: &mut [i64],
            g: usize,
            stored: &[u8],
        ) -> bool
        where
            T::Native: Combine,
        {
            let (Ok(v), Ok(t)) = (
                <[u8; 8]>::try_from(&stored[1..NUM_WIDTH]),
                <[u8; 8]>::try_from(&stored[NUM_WIDTH..]),
            ) else {
                return false;
            };
            match stored[0] {
                0 => true,
                1 => {
                    offer(a, ts, g, T::Native::from_le(v), i64::from_le_bytes(t));
                    true
                }
                _ => false,
            }
        }
        if self.slot_len(stored) != Some(stored.len()) {
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
            Accumulator::PickI64(a, ts) => pick(a, ts, g, stored),
            Accumulator::PickF64(a, ts) => pick(a, ts, g, stored),
            Accumulator::Distinct(sets) => {
                let ids = &stored[4..];
                if !ids.len().is_multiple_of(8) {
                    return false;
                }
                sets[g].extend(
                    ids.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
                );
                true
            }
            Accumulator::User(f, accs) => f.merge(&mut accs[g], &stored[4..]).is_ok(),
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
            Accumulator::AvgI64(a, n) | Accumulator::PickI64(a, n) => {
                a.values.resize(groups, 0);
                a.seen.resize(groups, false);
                n.resize(groups, 0);
            }
            Accumulator::AvgF64(a, n) | Accumulator::PickF64(a, n) => {
                a.values.resize(groups, 0.0);
                a.seen.resize(groups, false);
                n.resize(groups, 0);
            }
            Accumulator::Distinct(sets) => sets.resize_with(groups, Default::default),
            Accumulator::User(f, accs) => {
                accs.truncate(groups);
                while accs.len() < groups {
                    let mut acc = Vec::new();
                    f.create(&mut acc);
                    accs.push(acc);
                }
            }
        }
    }

    /// Adds the selected rows of `values` to their groups (`groups[i]` is the group of the
    /// i-th selected row); `times` are the rows' event times (first and last need them).
    pub(crate) fn update(
        &mut self,
        values: Option<&ArrayRef>,
        times: Option<&[i64]>,
        rows: RowSel<'_>,
        groups: &[u32],
    ) -> Result<()> {
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
        fn update_pick<T: ArrowPrimitiveType>(
            acc: &mut NumAcc<T>,
            ts: &mut [i64],
            input: &PrimitiveArray<T>,
            times: &[i64],
            rows: RowSel<'_>,
            groups: &[u32],
        ) where
            T::Native: Combine,
        {
            let data = input.values();
            let nulls = input.nulls().cloned();
            for_each(rows, groups, |row, g| {
                if nulls.as_ref().is_none_or(|n| n.is_valid(row)) {
                    offer(acc, ts, g, data[row], times[row]);
                }
            });
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
            Accumulator::PickI64(acc, ts) => {
                if let (Some(v), Some(t)) = (values, times) {
                    update_pick(acc, ts, v.as_primitive::<Int64Type>(), t, rows, groups);
                }
            }
            Accumulator::PickF64(acc, ts) => {
                if let (Some(v), Some(t)) = (values, times) {
                    update_pick(acc, ts, v.as_primitive::<Float64Type>(), t, rows, groups);
                }
            }
            Accumulator::Distinct(sets) => {
                if let Some(v) = values {
                    let ids = distinct_ids(v)?;
                    let nulls = v.logical_nulls();
                    for_each(rows, groups, |row, g| {
                        if nulls.as_ref().is_none_or(|n| n.is_valid(row)) {
                            sets[g].insert(ids[row]);
                        }
                    });
                }
            }
            Accumulator::User(f, accs) => {
                if let Some(v) = values {
                    // The rows of each group, in order: one `add` per group.
                    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(groups.len());
                    for_each(rows, groups, |row, g| pairs.push((g as u32, row as u32)));
                    pairs.sort_unstable();
                    let mut rows_of: Vec<u32> = Vec::new();
                    let mut i = 0;
                    while i < pairs.len() {
                        let g = pairs[i].0;
                        rows_of.clear();
                        while i < pairs.len() && pairs[i].0 == g {
                            rows_of.push(pairs[i].1);
                            i += 1;
                        }
                        f.add(&mut accs[g as usize], v, &rows_of)
                            .map_err(|e| crate::OperatorError::user(f.name(), e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The final values of `groups` (every group, in order, if `None`).
    pub(crate) fn finish(&self, groups: Option<&[u32]>) -> Result<ArrayRef> {
        fn pick<T: Copy>(v: &[T], groups: Option<&[u32]>) -> Vec<T> {
            match groups {
                None => v.to_vec(),
                Some(g) => g.iter().map(|&g| v[g as usize]).collect(),
            }
        }
        Ok(match self {
            Accumulator::Count(v) => Arc::new(Int64Array::from(pick(v, groups))),
            Accumulator::I64(a) | Accumulator::PickI64(a, _) => Arc::new(Int64Array::new(
                pick(&a.values, groups).into(),
                Some(NullBuffer::from(pick(&a.seen, groups))),
            )),
            Accumulator::F64(a) | Accumulator::PickF64(a, _) => Arc::new(Float64Array::new(
                pick(&a.values, groups).into(),
                Some(NullBuffer::from(pick(&a.seen, groups))),
            )),
            Accumulator::AvgI64(a, n) => avg(
                pick(&a.values, groups).into_iter().map(|s| s as f64),
                pick(n, groups),
            ),
            Accumulator::AvgF64(a, n) => avg(pick(&a.values, groups).into_iter(), pick(n, groups)),
            Accumulator::Distinct(sets) => {
                let n = |g: usize| sets[g].len() as i64;
                Arc::new(match groups {
                    None => (0..sets.len()).map(n).collect::<Int64Array>(),
                    Some(gs) => gs.iter().map(|&g| n(g as usize)).collect(),
                })
            }
            Accumulator::User(f, accs) => {
                let refs: Vec<&[u8]> = match groups {
                    None => accs.iter().map(Vec::as_slice).collect(),
                    Some(gs) => gs.iter().map(|&g| accs[g as usize].as_slice()).collect(),
                };
                f.result(&refs)
                    .map_err(|e| crate::OperatorError::user(f.name(), e))?
            }
        })
    }
}

/// First/last: keeps `(x, t)` in group `g` if it comes before (first) or after (last)
/// what the group holds; ties go to the smaller (first) or larger (last) value, so the
/// result does not depend on arrival order.
#[inline]
fn offer<T: ArrowPrimitiveType>(a: &mut NumAcc<T>, ts: &mut [i64], g: usize, x: T::Native, t: i64)
where
    T::Native: Combine,
{
    let better = !a.seen[g] || {
        let (held, at) = (a.values[g], ts[g]);
        if a.kind == AggKind::First {
            t < at || (t == at && x.total_lt(held))
        } else {
            t > at || (t == at && held.total_lt(x))
        }
    };
    if better {
        a.values[g] = x;
        ts[g] = t;
        a.seen[g] = true;
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
        _ => {}
    }
}
