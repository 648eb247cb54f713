//! The process's allocator, mimalloc (installed in `main.rs` as [`Mimalloc`]), and when it
//! gives freed memory back to the kernel.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_long, c_void};

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_option_get, mi_option_set, mi_option_t, mi_realloc,
    mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment every mimalloc block of at least this many bytes has (`MI_MAX_ALIGN_SIZE`,
/// mimalloc's `types.h`): block sizes from 16 bytes up are multiples of 16, and a page's first
/// block starts 16-aligned.
const MI_MAX_ALIGN_SIZE: usize = 16;

/// mimalloc as Rust's global allocator, asking for an alignment only when a plain block would
/// not have it.
///
/// The `mimalloc` crate's `MiMalloc` passes every request to `mi_malloc_aligned`. mimalloc v3
/// serves that from a plain block only when one of the right size happens to be free and
/// aligned, or when the rounded size is a power of two; any other request over 1 KiB (a
/// request's future, a read buffer) goes through its generic aligned path and over-allocates:
/// seven such requests per 1 KB hit, six of them over-allocated, and a request that fills its
/// size class exactly took the next class up. Going straight to `mi_malloc` took 1,083
/// instructions off the hit's 29,566 (`make instructions`, before and after this change).
/// A Rust layout's size is a multiple of its alignment, so with an alignment of at most 16 a
/// plain block is always aligned enough; larger alignments (tokio's cache-padded task cells)
/// still go to the aligned calls. The standard library's `System` allocator makes the same test
/// before it calls plain `malloc`.
pub struct Mimalloc;

fn plain_block_fits(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

// SAFETY: every pointer handed out comes from mimalloc with at least the layout's size and
// alignment (see `plain_block_fits`), and `mi_free` / `mi_realloc*` accept any of them.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and power-of-two alignment.
        unsafe {
            if plain_block_fits(layout.align(), layout.size()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain_block_fits(layout.align(), layout.size()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the alignment test is on the new size, the
        // one the block must have.
        unsafe {
            if plain_block_fits(layout.align(), new_size) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

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

    use libmimalloc_sys::{mi_good_size, mi_usable_size};

    #[test]
    fn every_block_has_the_alignment_its_layout_asks_for() {
        let mut held = Vec::new();
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in (align..=20_000).step_by(align.max(8) * 3) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: the layouts have non-zero sizes; every block is freed below.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null(), "no block for {layout:?}");
                    assert_eq!(p as usize % align, 0, "{layout:?} at {p:p}");
                    p.write_bytes(0xa5, size);
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {layout:?} at {z:p}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    // Grown and shrunk, the block keeps its alignment and its bytes.
                    let grown = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "{layout:?} grown at {grown:p}");
                    assert!(std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|&b| b == 0xa5));
                    let grown_layout = Layout::from_size_align(size * 3, align).unwrap();
                    let shrunk = Mimalloc.realloc(grown, grown_layout, align);
                    assert_eq!(
                        shrunk as usize % align,
                        0,
                        "{layout:?} shrunk at {shrunk:p}"
                    );
                    held.push((shrunk, Layout::from_size_align(align, align).unwrap()));
                    held.push((z, layout));
                }
            }
        }
        for (p, layout) in held {
            // SAFETY: each came from `Mimalloc` with this layout.
            unsafe { Mimalloc.dealloc(p, layout) }
        }
    }

    #[test]
    fn a_request_over_1_kib_takes_a_block_of_its_own_size_class() {
        // mimalloc's aligned path over-allocates such a request (size + alignment - 1): for a
        // size that fills its size class exactly, the block it takes is a class larger.
        for n in [1_100, 1_500, 3_000, 6_000, 12_000] {
            // SAFETY: mi_good_size only computes.
            let size = unsafe { mi_good_size(n) };
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero layout, freed at once.
            unsafe {
                let p = Mimalloc.alloc(layout);
                let usable = mi_usable_size(p.cast());
                Mimalloc.dealloc(p, layout);
                assert_eq!(usable, size, "a block for {size} bytes");
            }
        }
    }

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
