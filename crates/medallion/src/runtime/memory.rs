//! The process's memory budget (`--memory-limit`, `MEDALLION_MEMORY_LIMIT`).
//!
//! - **Queries** (gold models, audits, `sql`, `test`) share one DataFusion memory pool of the
//!   limit's size ([`query_pool`]): sorts, aggregations and joins that can spill do so to scratch
//!   files under `TMPDIR` rather than grow past it; one that cannot (a hash join's build side)
//!   fails with DataFusion's "Resources exhausted" naming its largest consumers.
//! - **Promotions and rebuilds** resolve compressed bronze in slices ([`slice_bytes`]): under a
//!   limit too low for the default 16 MiB slices they are made smaller (down to 4 MiB).
//!
//! The limit is not a cap on the process's resident memory: what a promotion holds besides its
//! slice (batches being decoded, chunks on their way to scratch files, writers; mimalloc's cached
//! pages) does not shrink with it: about 450–550 MB at 5M records of the benchmark's orders and
//! 600–650 MB at 10M on 2 cores, whatever the limit (README, "Memory budget").
//!
//! Unset, the limit is three quarters of the machine's memory (its cgroup's limit when lower):
//! other processes and the page cache keep the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};

/// Below this not even a small query runs (a promotion needs about 400 MB besides its slices).
pub const MIN_LIMIT: u64 = 128 << 20;

/// The largest slice, whatever the limit (see [`slice_bytes`]).
pub const MAX_SLICE_BYTES: u64 = 16 << 20;

/// What a promotion holds besides its slice, measured on 2 cores (the benchmark's orders, 5M and
/// 10M records; mimalloc's cached pages included): the batches being decoded and validated, their
/// chunks on their way to scratch files, a writer's file.
const BASE: u64 = 384 << 20;

/// Resident bytes resolving a slice costs per compressed byte of bronze: its typed rows, the
/// winners' copy and the writer's encoding of them (5M records in memory, 102 MB of bronze:
/// about 1.5 GB).
const SLICE_FACTOR: u64 = 10;

/// The limit set for this process, 0 while unset.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Sets this process's memory limit (at least [`MIN_LIMIT`]), before the first query: the query
/// pool is sized once.
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes.max(MIN_LIMIT), Ordering::Relaxed);
}

/// This process's memory limit: the one set, else [`default_limit`].
pub fn limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => default_limit(),
        set => set,
    }
}

/// Three quarters of the machine's memory (see [`machine`]), 4 GiB if it cannot be read.
pub fn default_limit() -> u64 {
    machine().map_or(4 << 30, |m| (m / 4 * 3).max(MIN_LIMIT))
}

/// The memory this process may use: the machine's (`MemTotal`), or its cgroup's limit when lower
/// (containers, Kubernetes pods).
pub fn machine() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m));
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The smallest slice a limit leads to: smaller slices cost memory again (each batch writes a
/// scratch file per slice, each chunk is cut in as many pieces: 10M records at 1 MiB slices
/// peaked at 680 MB against 620 MB at 16 MiB).
pub const MIN_SLICE_BYTES: u64 = 4 << 20;

/// The compressed bronze a promotion resolves at once under `limit`: what the limit leaves past
/// the base, over what a slice costs per byte, between [`MIN_SLICE_BYTES`] and
/// [`MAX_SLICE_BYTES`] (larger slices buy little speed for their memory).
pub fn slice_bytes(limit: u64) -> u64 {
    (limit.saturating_sub(BASE) / SLICE_FACTOR).clamp(MIN_SLICE_BYTES, MAX_SLICE_BYTES)
}

/// How many slices of `slice_bytes` a promotion resolves at once with `threads` threads under
/// `limit`: one a thread, as far as what the limit leaves past the base pays for them (at least
/// one).
pub fn slices_at_once(limit: u64, slice_bytes: u64, threads: usize) -> usize {
    let fit = limit.saturating_sub(BASE) / SLICE_FACTOR.saturating_mul(slice_bytes.max(1));
    usize::try_from(fit).unwrap_or(usize::MAX).clamp(1, threads.max(1))
}

/// The memory pool every query session of this process shares, of [`limit`]'s size (fixed at the
/// first call); it names its five largest consumers when an allocation fails.
pub fn query_pool() -> Arc<dyn MemoryPool> {
    static POOL: OnceLock<Arc<dyn MemoryPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let size = usize::try_from(limit()).unwrap_or(usize::MAX);
        let five = std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN);
        Arc::new(TrackConsumersPool::new(FairSpillPool::new(size), five))
    });
    Arc::clone(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24558212 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total(text), Some(24_558_212 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert!(machine().is_some_and(|m| m > MIN_LIMIT), "this machine's memory is readable");
    }

    #[test]
    fn slices_shrink_with_the_limit_and_never_pass_the_default() {
        assert_eq!(slice_bytes(u64::MAX), MAX_SLICE_BYTES);
        assert_eq!(slice_bytes(24 << 30), MAX_SLICE_BYTES);
        assert_eq!(slice_bytes(MIN_LIMIT), MIN_SLICE_BYTES);
        assert_eq!(slice_bytes(256 << 20), MIN_SLICE_BYTES, "below the base, the smallest slices");
        let mid = slice_bytes(480 << 20);
        assert!(mid > MIN_SLICE_BYTES && mid < MAX_SLICE_BYTES, "{mid}");
        assert!(slice_bytes(440 << 20) < mid);
    }

    #[test]
    fn slices_resolve_one_a_thread_as_far_as_the_limit_pays_for_them() {
        assert_eq!(slices_at_once(24 << 30, MAX_SLICE_BYTES, 2), 2);
        assert_eq!(slices_at_once(24 << 30, MAX_SLICE_BYTES, 0), 1);
        // The slice the limit leads to fits once, not twice.
        assert_eq!(slices_at_once(480 << 20, slice_bytes(480 << 20), 2), 1);
        assert_eq!(slices_at_once(MIN_LIMIT, MIN_SLICE_BYTES, 8), 1);
        assert_eq!(slices_at_once(BASE + 3 * SLICE_FACTOR * MAX_SLICE_BYTES, MAX_SLICE_BYTES, 8), 3);
    }
}
