//! Handing freed memory back to the operating system between batches.
//!
//! A batch's rows are allocated on the worker threads and freed on the commit thread, in pieces
//! of every size. glibc's allocator keeps freed memory in per-thread arenas for reuse by the
//! same arena, so over a long run the process's resident memory creeps up even though what the
//! dataflow holds stays bounded (measured: 47 MiB at 100,000 parameter sets against 36 MiB
//! after trimming, `cargo bench --bench scale -- overhead`). Trimming after each commit keeps
//! the resident memory near what is live.

/// Returns the allocator's free memory to the operating system: glibc's `malloc_trim(0)`,
/// which also releases whole free pages inside its arenas (glibc ≥ 2.8). Elsewhere (musl,
/// macOS) it does nothing.
///
/// Thread-safe; it costs a walk over the allocator's arenas (well under a millisecond for
/// this engine's heaps), so call it once per batch, not per message.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and is documented as thread-safe (it locks
    // each arena it trims).
    unsafe {
        libc::malloc_trim(0);
    }
}
