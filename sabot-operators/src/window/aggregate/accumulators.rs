//! Per-group accumulators, stored column-wise and updated a batch at a time.

use std::sync::Arc;

use sabot_core::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray,
};
use sabot_core::arrow::buffer::NullBuffer;
use sabot_core::arrow::compute::cast;
use sabot_core::arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type};

use super::*;
use crate::Result;

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
    pub(super) fn new(kind: AggKind) -> Self {
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
