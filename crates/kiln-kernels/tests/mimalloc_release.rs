//! `memory::release_free_memory` with mimalloc as the global allocator (as in the `kiln`
//! binary): memory freed by the program goes back to the OS.
#![cfg(all(feature = "mimalloc", target_os = "linux"))]

use kiln_kernels::memory::{release_free_memory, MiMalloc};

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Resident memory of this process in bytes (4 KiB pages, as on x86-64 Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn freed_memory_goes_back_to_the_os_after_release() {
    let before = resident_bytes();
    // 96 MiB in 64 KiB blocks, touched so that every page is resident.
    let blocks: Vec<Vec<u8>> = (0..1536).map(|i| vec![i as u8 | 1; 64 * 1024]).collect();
    let held = resident_bytes();
    assert!(
        held >= before + (80 << 20),
        "{before} -> {held}: the blocks are resident"
    );
    drop(blocks);
    assert!(release_free_memory());
    let after = resident_bytes();
    assert!(
        held.saturating_sub(after) >= 64 << 20,
        "resident memory went from {held} to {after} bytes; expected at least 64 MiB back"
    );
}

/// `configure_mimalloc` sets mimalloc's purge delay (option 15, whose bundled default is
/// 1000 ms) to the server's 100 ms: the number kiln passes is the purge delay's.
#[test]
fn configuring_sets_the_purge_delay_from_its_default() {
    // SAFETY: mi_option_get takes an option number of mimalloc's enum and has no other
    // precondition; no other test of this binary sets options.
    let get = || unsafe { libmimalloc_sys::mi_option_get(15) };
    assert_eq!(
        get(),
        1000,
        "mimalloc's default purge delay (MIMALLOC_PURGE_DELAY unset)"
    );
    kiln_kernels::memory::configure_mimalloc();
    assert_eq!(get(), 100);
}
