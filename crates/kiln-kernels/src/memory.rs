//! Returning freed heap memory to the operating system.
//!
//! glibc's allocator keeps memory freed by the program (the KV caches of finished sequences,
//! the activations of a large batch) in its arenas for reuse, so a server's resident memory
//! stays at its peak after a burst of load. [`release_free_memory`] hands every whole free
//! page back; the engines call it once they have been idle for a while.
//!
//! The `kiln` binary allocates with mimalloc (`MiMalloc`, feature `mimalloc`): a decode step
//! allocates and frees thousands of buffers, some of megabytes (a batch's logits), which
//! glibc returned to the OS and faulted in again at every step. mimalloc keeps freed memory
//! too, so [`release_free_memory`] also asks it to hand its free pages back.

/// The mimalloc allocator, for a binary's `#[global_allocator]`.
#[cfg(all(feature = "mimalloc", not(target_arch = "wasm32")))]
pub use mimalloc::MiMalloc;

/// Milliseconds mimalloc waits before handing a wholly free page back to the OS.
///
/// Its default (1 s) kept the pages of threads that went idle after a burst (the HTTP
/// threads) resident: `bench/load/run.sh` ended idle 22 MiB above its baseline and 8 MiB above
/// its idle memory after the first round. Purging at once (0) returned to within 3 MiB but
/// cost Gemma 3 about 10% at 8 streams (each step's buffers faulted in again); 100 ms outlives
/// a decode step and returned to within 3 MiB too (`bench/results/load-2026-12-02-purge*.md`).
#[cfg(all(feature = "mimalloc", not(target_arch = "wasm32")))]
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`, which `libmimalloc-sys`
/// does not name).
#[cfg(all(feature = "mimalloc", not(target_arch = "wasm32")))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's options for a server (a purge delay of 100 ms) unless the environment sets
/// them (`MIMALLOC_PURGE_DELAY`). Call first thing in `main`.
#[cfg(all(feature = "mimalloc", not(target_arch = "wasm32")))]
pub fn configure_mimalloc() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set takes an option number of mimalloc's own enum (checked against
        // the bundled mimalloc.h: purge_delay follows the fifteen options before it) and a
        // plain value; options may be set at any time, from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Returns the allocators' whole free pages to the OS; true if any memory may have been
/// released (mimalloc does not say, so with it this is always true).
///
/// Costs a walk over the heap (milliseconds for hundreds of MiB), so call it when idle, not
/// per request. Does nothing (returns false) where the allocator is neither glibc's nor
/// mimalloc.
pub fn release_free_memory() -> bool {
    #[cfg(all(feature = "mimalloc", not(target_arch = "wasm32")))]
    // SAFETY: mi_collect takes a plain flag and has no preconditions; it is thread-safe (it
    // collects this thread's heap and the memory other threads abandoned, under mimalloc's own
    // synchronization) and harmless when mimalloc is not the global allocator.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer, has no preconditions, and is documented
        // MT-safe: it locks each arena while it releases that arena's free pages, so it may
        // run while other threads allocate and free. (C libraries still allocate with glibc.)
        let trimmed = unsafe { libc::malloc_trim(0) != 0 };
        trimmed || cfg!(feature = "mimalloc")
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        cfg!(all(feature = "mimalloc", not(target_arch = "wasm32")))
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident memory of this process in bytes (4 KiB pages, as on x86-64 Linux).
    fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn freed_small_allocations_leave_resident_memory_after_release() {
        // 96 MiB in 64 KiB blocks: below glibc's mmap threshold, so they live in an arena and
        // stay resident after `free`; the last block pins the top so free() cannot trim it.
        let blocks: Vec<Vec<u8>> = (0..1536).map(|i| vec![i as u8 | 1; 64 * 1024]).collect();
        let pin = vec![7u8; 64 * 1024];
        let held = resident_bytes().expect("/proc/self/statm");
        drop(blocks);
        assert!(release_free_memory(), "malloc_trim released nothing");
        let after = resident_bytes().expect("/proc/self/statm");
        assert!(
            held.saturating_sub(after) >= 48 << 20,
            "resident memory went from {held} to {after} bytes; expected at least 48 MiB back"
        );
        assert_eq!(pin[0], 7);
    }
}
