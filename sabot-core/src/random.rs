//! Counter-based random numbers: any draw can be computed on its own, in any order, on
//! any thread, so generators split across subtasks stay reproducible.

use crate::key::fmix64;

/// SplitMix64 keyed by `(seed, stream)`: draw `i` is `mix(seed, stream, i)`.
///
/// ```
/// use sabot_core::random::SplitMix64;
/// let mut a = SplitMix64::new(7, 42);
/// let x = a.next_u64();
/// assert_eq!(SplitMix64::new(7, 42).next_u64(), x);
/// ```
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A generator for one `stream` (an event number, say) under `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        SplitMix64 {
            state: fmix64(seed ^ fmix64(stream.wrapping_mul(GAMMA) ^ 0xD1B5_4A32_D192_ED03)),
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `[0, n)` (`n > 0`; 0 when `n == 0`), by Lemire's
    /// multiply-shift (bias below 2^-32 for the ranges used here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(1, 2);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = r.below(10);
            assert!(x < 10);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn streams_differ() {
        assert_ne!(
            SplitMix64::new(0, 0).next_u64(),
            SplitMix64::new(0, 1).next_u64()
        );
        assert_ne!(
            SplitMix64::new(0, 0).next_u64(),
            SplitMix64::new(1, 0).next_u64()
        );
    }
}
