//! Comparing and copying the short byte strings of state keys and values without a call
//! into the C library (whose `memcmp`/`memcpy` cost more than the work for up to 16 bytes).

/// Reads the 8 bytes of `s` at `at`.
#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or_default())
}

/// Reads the 4 bytes of `s` at `at`.
#[inline(always)]
fn half(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or_default())
}

/// Reads the 2 bytes of `s` at `at`.
#[inline(always)]
fn pair(s: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(s[at..at + 2].try_into().unwrap_or_default())
}

/// `a == b`; up to 16 bytes as two overlapping word compares.
#[inline]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        2..=3 => pair(a, 0) == pair(b, 0) && pair(a, n - 2) == pair(b, n - 2),
        1 => a[0] == b[0],
        0 => true,
        _ => a == b,
    }
}

/// `dst.copy_from_slice(src)`; up to 16 bytes as two overlapping word copies.
///
/// # Panics
/// If the lengths differ (as `copy_from_slice`).
#[inline]
pub(crate) fn short_copy(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    assert_eq!(
        dst.len(),
        n,
        "short_copy between slices of different lengths"
    );
    match n {
        8..=16 => {
            let (head, tail) = (word(src, 0), word(src, n - 8));
            dst[..8].copy_from_slice(&head.to_le_bytes());
            dst[n - 8..].copy_from_slice(&tail.to_le_bytes());
        }
        4..=7 => {
            let (head, tail) = (half(src, 0), half(src, n - 4));
            dst[..4].copy_from_slice(&head.to_le_bytes());
            dst[n - 4..].copy_from_slice(&tail.to_le_bytes());
        }
        // Not a byte loop: the compiler makes a call of `memcpy` of that.
        2..=3 => {
            let (head, tail) = (pair(src, 0), pair(src, n - 2));
            dst[..2].copy_from_slice(&head.to_le_bytes());
            dst[n - 2..].copy_from_slice(&tail.to_le_bytes());
        }
        1 => dst[0] = src[0],
        0 => {}
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn short_eq_and_copy_match_the_slice_operations(
            a in prop::collection::vec(any::<u8>(), 0..40),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut b = a.clone();
            prop_assert!(short_eq(&a, &b));
            if !b.is_empty() {
                let i = flip.index(b.len());
                b[i] ^= 1;
                prop_assert!(!short_eq(&a, &b));
            }
            prop_assert!(!short_eq(&a, &a[..a.len().saturating_sub(1)]) || a.is_empty());
            let mut dst = vec![0xAA; a.len()];
            short_copy(&mut dst, &a);
            prop_assert_eq!(dst, a);
        }
    }
}
