//! Keeping the process's resident memory near what the dataflow holds.
//!
//! A batch's rows are allocated on the worker threads and freed on the commit thread, in pieces
//! of every size, the largest (a batch's concatenated columns) a few MB. glibc's allocator
//! serves such blocks with `mmap` until one is freed, then raises its mmap threshold to that
//! block's size (up to 32 MiB) and serves them from its per-thread arenas from then on, where
//! freed memory stays resident for reuse by the same arena. Over a long run the resident memory
//! creeps up although what the dataflow holds stays bounded: peak RSS 36 MiB at 100,000
//! parameter sets against 26 MiB at 1,000, with the same live heap (heaptrack: 16.5 vs 14.2 MB;
//! `cargo bench --bench scale -- overhead`, 2-core machine).
//!
//! Two remedies, both glibc-only and no-ops elsewhere:
//! - [`tune_process_allocator`]: fix the mmap threshold, so large blocks always go back to the
//!   system when freed (29 MiB at 100,000 sets). Process-wide: the `simsweep` command calls it
//!   first thing; a host application decides for itself (or sets
//!   `MALLOC_MMAP_THRESHOLD_=4194304` in the environment, which does the same).
//! - [`release_free_memory`]: after each batch commit, hand free pages back.

/// Blocks of at least this many bytes are served by `mmap` and returned to the system when
/// freed (see [`tune_process_allocator`]).
pub const MMAP_THRESHOLD_BYTES: i32 = 4 * 1024 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`] (`mallopt(M_MMAP_THRESHOLD)`),
/// which also turns off its dynamic adjustment of the trim threshold. Returns whether the
/// setting was applied (`false` off glibc, or if glibc refused it).
///
/// Changes the whole process's allocator: call it at the start of a program, before threads
/// start, as the `simsweep` command does; a library embedding simsweep should leave the
/// decision to its host.
pub fn tune_process_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes plain integers; M_MMAP_THRESHOLD accepts values up to
        // HEAP_MAX/2 (32 MiB on 64-bit), and 4 MiB is below.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the allocator's free memory to the operating system: glibc's `malloc_trim(0)`,
/// which also releases whole free pages inside its arenas (glibc ≥ 2.8). Elsewhere it does
/// nothing.
///
/// Thread-safe; it costs a walk over the allocator's arenas, so call it once per batch, not per
/// message.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and is thread-safe (it locks each arena it trims).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_threshold() {
        assert!(super::tune_process_allocator());
        // Memory still works, large and small, after the change.
        let big = vec![7u8; 2 * super::MMAP_THRESHOLD_BYTES as usize];
        let small: Vec<u64> = (0..16).collect();
        let sum: u64 = big.iter().map(|&b| u64::from(b)).sum::<u64>() + small.iter().sum::<u64>();
        assert_eq!(sum, 7 * 8 * 1024 * 1024 + 120);
        super::release_free_memory();
    }
}
