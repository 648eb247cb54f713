//! The process's allocator, mimalloc (installed in `main.rs`), and when it gives freed memory
//! back to the kernel.

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h, v2 and v3),
/// which libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// How long freed memory stays committed before mimalloc gives it back, in milliseconds.
const PURGE_DELAY_MS: c_long = 10;

/// Freed memory goes back to the kernel after 10 ms (mimalloc v2's default), not after
/// mimalloc v3's 1 s. A cache that evicts megabyte segments frees large blocks all the time;
/// held for a second, they took the edge's RSS to 1.26–1.34× `cache.memory` over its idle size
/// when 2 GiB of segments churned through 256 MiB, against the 1.3× the cache promises
/// (`chaos_memory`, docs/reliability.md).
pub fn return_freed_memory_promptly() {
    // SAFETY: mi_option_set stores an integer option; any thread may call it at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// The purge delay in force, in milliseconds.
pub fn purge_delay_ms() -> c_long {
    // SAFETY: mi_option_get reads an integer option.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        // mimalloc v3's default is 1,000 ms, unless the environment set it; the options
        // either side of it (eager_commit_delay, use_numa_nodes) default to 1 and 0.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
        return_freed_memory_promptly();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
