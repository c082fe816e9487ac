//! Helpers for the crate's unit tests.

/// A xorshift generator from `seed` (not 0): reproducible random inputs without a dependency.
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
