//! CPU hints.

/// Asks the CPU to bring the cache line holding `value` into its caches, so that a load
/// of it a little later does not wait for memory. Only a hint: it never faults, and it
/// does nothing on targets without a prefetch instruction.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is part of the
    // target's baseline), and it only hints the cache: it reads nothing and cannot fault,
    // whatever the address (here a valid reference anyway).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(value).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
