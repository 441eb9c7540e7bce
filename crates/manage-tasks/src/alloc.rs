//! The static musl build's memory: a dense heap for short commands,
//! mimalloc for everything else, and SQLite routed to both.
//!
//! Why two allocators. A one-shot command (`execute` of one run, `list`,
//! `--version`) lives about a millisecond and allocates little: ~80 KB at its
//! peak, 230 KB in all for an `execute` (valgrind's dhat). A size-class
//! allocator such as mimalloc gives every size class its own page, so that
//! command touched ~80 fresh pages, and on a VM every first touch is a page
//! fault of ~2 µs; mimalloc's start-up (its page map, main heap and options,
//! run by a constructor before `main`) cost another ~0.07 ms. A first-fit heap
//! ([`talc`]) packs the same allocations into ~30 pages. But a pool of slot
//! threads needs what mimalloc is made for (a heap per thread, no lock; musl's
//! own allocator lost 12 % of batch throughput). So:
//!
//! - while the dense heap is open, allocations go to it (a static 1 MiB array
//!   in `.bss`: only the pages used are ever mapped); when it is full, or
//!   another thread holds its lock, they go to mimalloc;
//! - [`close_dense`] sends every later allocation to mimalloc; `main` calls it
//!   for the commands that run many tasks at once or serve (a batch, a worker,
//!   the MCP server), before their threads start;
//! - a block is freed by the allocator whose address range holds it;
//! - mimalloc starts on its first use, not before `main`: the Makefile builds
//!   it with `MI_PRIM_HAS_PROCESS_ATTACH`, mimalloc's hook for platforms that
//!   call its process start-up themselves, and [`mimalloc`] calls it once.
//!   Until then a thread waits for the dense heap's lock rather than starting
//!   mimalloc (which adopts the thread that starts it as its main thread), so
//!   in practice it is the main thread that does.
//!
//! `execute` (YAML store) 1.68 → 1.47 ms per call, `--version` 0.48 → 0.30 ms
//! (docs/performance.md).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;
use talc::TalcLock;
use talc::source::Claim;

/// Enough for any one-shot command's peak (~80 KB for an `execute`) many
/// times over; a task printing long lines outgrows it, and its buffers then
/// come from mimalloc.
const DENSE_SIZE: usize = 1 << 20;

static mut DENSE_HEAP: [u8; DENSE_SIZE] = [0; DENSE_SIZE];

// SAFETY: the array is used by this allocator alone, for the whole process.
static DENSE: TalcLock<spinning_top::RawSpinlock, Claim> =
    TalcLock::new(unsafe { Claim::array(&raw mut DENSE_HEAP) });

static DENSE_OPEN: AtomicBool = AtomicBool::new(true);

/// From now on every allocation comes from mimalloc; blocks already in the
/// dense heap are freed there as usual. Call it on the main thread.
pub fn close_dense() {
    mimalloc();
    DENSE_OPEN.store(false, Ordering::Relaxed);
}

fn in_dense(ptr: *mut u8) -> bool {
    let base = (&raw const DENSE_HEAP).cast::<u8>() as usize;
    (ptr as usize).wrapping_sub(base) < DENSE_SIZE
}

unsafe extern "C" {
    /// mimalloc's process start-up (`src/init.c`), which its constructor
    /// would otherwise run before `main`.
    fn _mi_auto_process_init();
    /// Whether it has run (`include/mimalloc/prim.h`).
    static _mi_process_is_initialized: bool;
}

static MIMALLOC_STARTED: Once = Once::new();

/// mimalloc, started if this is its first use.
fn mimalloc() -> MiMalloc {
    MIMALLOC_STARTED.call_once(|| {
        // SAFETY: mimalloc reads and sets the flag only in its start-up, and
        // a build without the Makefile's flags started it before `main`.
        if !unsafe { _mi_process_is_initialized } {
            // SAFETY: called once, before any other use of mimalloc.
            unsafe { _mi_auto_process_init() }
        }
    });
    MiMalloc
}

/// The global allocator: see the module's comment.
pub struct Hybrid;

impl Hybrid {
    /// A block from the dense heap, if it is open and has room.
    fn try_dense(layout: Layout) -> Option<*mut u8> {
        if !DENSE_OPEN.load(Ordering::Relaxed) {
            return None;
        }
        let mut dense = if MIMALLOC_STARTED.is_completed() {
            DENSE.try_lock()?
        } else {
            DENSE.lock()
        };
        // SAFETY: `layout` has a non-zero size (GlobalAlloc's contract).
        unsafe { dense.allocate(layout) }.map(|p| p.as_ptr())
    }
}

// SAFETY: every block is returned by exactly one of the two allocators, and
// freed or resized by the one whose address range holds it.
unsafe impl GlobalAlloc for Hybrid {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::try_dense(layout) {
            Some(p) => p,
            // SAFETY: forwarded contract.
            None => unsafe { mimalloc().alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::try_dense(layout) {
            Some(p) => {
                // SAFETY: `p` is valid for `layout.size()` bytes; freed dense
                // blocks are reused, so they must be cleared.
                unsafe { p.write_bytes(0, layout.size()) };
                p
            }
            // SAFETY: forwarded contract.
            None => unsafe { mimalloc().alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_dense(ptr) {
            // SAFETY: `ptr` came from the dense heap with this layout.
            unsafe { DENSE.lock().deallocate(ptr, layout) }
        } else {
            // SAFETY: `ptr` came from mimalloc with this layout.
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_dense(ptr) {
            // SAFETY: `ptr` came from mimalloc with this layout.
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `ptr` came from the dense heap with this layout; `new_size`
        // is non-zero (GlobalAlloc's contract for `realloc`).
        if unsafe { DENSE.lock().try_realloc_in_place(ptr, layout, new_size) } {
            return ptr;
        }
        // SAFETY: `new_size` rounded up to the alignment does not overflow
        // (GlobalAlloc's contract for `realloc`).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded contract; the lock is not held here.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // Only a growth can fail in place, so all of the old block is copied.
            // SAFETY: both blocks are valid for the old size and distinct.
            unsafe { new.copy_from_nonoverlapping(ptr, layout.size()) };
            // SAFETY: as for `dealloc`.
            unsafe { DENSE.lock().deallocate(ptr, layout) };
        }
        new
    }
}

/// SQLite is C and would allocate with libc's `malloc`, in this build musl's
/// own, which maps and unmaps memory for most blocks: ~75 `mmap`/`munmap`
/// calls and ~100 extra page faults per `execute` on a SQLite store. It gets
/// the global allocator instead, each block headed by its size (SQLite frees
/// without saying how much).
mod sqlite {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::{c_int, c_void};

    use rusqlite::ffi;

    use super::Hybrid;

    /// The size header; also the blocks' alignment (SQLite needs 8).
    const HEADER: usize = 16;

    /// The layout of a block for `n` bytes of SQLite's; `None` unless `n > 0`.
    fn layout(n: c_int) -> Option<Layout> {
        let size = usize::try_from(n).ok().filter(|&n| n > 0)?;
        Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
    }

    /// The block and the layout it was allocated with, from SQLite's pointer.
    ///
    /// # Safety
    /// `p` was returned by `malloc` or `realloc` below and not freed.
    unsafe fn block(p: *mut c_void) -> (*mut u8, Layout) {
        // SAFETY: `p` is HEADER bytes into a block that starts with its size.
        let start = unsafe { p.cast::<u8>().sub(HEADER) };
        // SAFETY: as above; the header is aligned for a usize.
        let size = unsafe { start.cast::<usize>().read() };
        // SAFETY: this layout was valid when the block was allocated.
        (start, unsafe {
            Layout::from_size_align_unchecked(size + HEADER, HEADER)
        })
    }

    /// Writes the header of a fresh block and returns SQLite's pointer.
    ///
    /// # Safety
    /// `start` is null or a block of at least `size + HEADER` bytes.
    unsafe fn finish(start: *mut u8, size: usize) -> *mut c_void {
        if start.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: the block is aligned to HEADER and holds it.
        unsafe {
            start.cast::<usize>().write(size);
            start.add(HEADER).cast()
        }
    }

    pub(super) unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
        let Some(layout) = layout(n) else {
            return std::ptr::null_mut();
        };
        // SAFETY: a non-zero size; `finish` gets a block of that layout.
        unsafe { finish(Hybrid.alloc(layout), layout.size() - HEADER) }
    }

    pub(super) unsafe extern "C" fn free(p: *mut c_void) {
        if p.is_null() {
            return;
        }
        // SAFETY: SQLite frees only what `malloc`/`realloc` returned.
        let (start, layout) = unsafe { block(p) };
        // SAFETY: allocated by the global allocator with this layout.
        unsafe { Hybrid.dealloc(start, layout) }
    }

    pub(super) unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        let Some(new) = layout(n) else {
            return std::ptr::null_mut();
        };
        // SAFETY: SQLite resizes only what `malloc`/`realloc` returned.
        let (start, old) = unsafe { block(p) };
        // SAFETY: allocated with `old`; the new size is non-zero and valid.
        unsafe { finish(Hybrid.realloc(start, old, new.size()), new.size() - HEADER) }
    }

    pub(super) unsafe extern "C" fn size(p: *mut c_void) -> c_int {
        // SAFETY: as for `free`.
        let (_, layout) = unsafe { block(p) };
        c_int::try_from(layout.size() - HEADER).unwrap_or(c_int::MAX)
    }

    pub(super) unsafe extern "C" fn roundup(n: c_int) -> c_int {
        n.checked_add(7).map_or(n, |n| n & !7)
    }

    unsafe extern "C" fn init(_: *mut c_void) -> c_int {
        ffi::SQLITE_OK
    }

    unsafe extern "C" fn shutdown(_: *mut c_void) {}

    /// Must run before SQLite is first used (it then refuses, harmlessly).
    pub fn install() {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(malloc),
            xFree: Some(free),
            xRealloc: Some(realloc),
            xSize: Some(size),
            xRoundup: Some(roundup),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLite copies `methods` before returning, and nothing has
        // used SQLite yet (single-threaded start of `main`).
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
        debug_assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_config(SQLITE_CONFIG_MALLOC)");
    }
}

pub use sqlite::install as route_sqlite;

// These run in the musl build of the test binary, whose global allocator is
// `Hybrid` too, on libtest's threads: the dense heap sees real contention.
#[cfg(test)]
mod tests {
    use std::ffi::c_void;

    use super::*;

    #[test]
    fn a_block_outgrowing_the_dense_heap_moves_to_mimalloc_intact() {
        let mut v: Vec<u32> = Vec::with_capacity(16);
        v.extend(0..16);
        let grown_past = (DENSE_SIZE / 4 + 1) as u32;
        v.extend(16..grown_past);
        assert!(
            !in_dense(v.as_mut_ptr().cast()),
            "a block over 1 MiB cannot be in the dense heap"
        );
        assert!(
            v.iter().copied().eq(0..grown_past),
            "contents survive the move"
        );
        v.truncate(8);
        v.shrink_to_fit();
        assert_eq!(v, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        for round in 0..50u8 {
            let mut dirty = vec![round | 1; 4096];
            dirty[17] = 0xff;
            drop(dirty);
            let clean = vec![0u8; 4096];
            assert!(clean.iter().all(|&b| b == 0), "round {round}");
        }
    }

    #[test]
    fn threads_allocating_at_once_keep_their_data() {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..2000u64 {
                        let mut b = vec![t ^ i; (i % 97 + 1) as usize];
                        if i % 3 == 0 {
                            b.resize(b.len() * 5, t ^ i);
                        }
                        kept.push(b);
                        if kept.len() > 64 {
                            let b = kept.swap_remove((i % 64) as usize);
                            assert!(b.iter().all(|&x| x == b[0]));
                        }
                    }
                    kept.iter().all(|b| b.iter().all(|&x| x == b[0]))
                })
            })
            .collect();
        for w in workers {
            assert!(w.join().unwrap());
        }
    }

    #[test]
    fn sqlite_blocks_know_their_size_and_survive_realloc() {
        use super::sqlite as s;
        // SAFETY: each pointer comes from the functions under test and is
        // freed once.
        unsafe {
            assert!(s::malloc(0).is_null() && s::malloc(-1).is_null());
            let p = s::malloc(100).cast::<u8>();
            assert!(!p.is_null() && (p as usize).is_multiple_of(8));
            assert_eq!(s::size(p.cast()), 100);
            for i in 0..100 {
                p.add(i).write(i as u8);
            }
            let q = s::realloc(p.cast(), 3 << 20).cast::<u8>();
            assert_eq!(s::size(q.cast()), 3 << 20);
            assert!(!in_dense(q), "3 MiB is beyond the dense heap");
            assert!((0..100).all(|i| q.add(i).read() == i as u8));
            let r = s::realloc(q.cast(), 10).cast::<u8>();
            assert_eq!(s::size(r.cast()), 10);
            assert!((0..10).all(|i| r.add(i).read() == i as u8));
            s::free(r.cast::<c_void>());
            s::free(std::ptr::null_mut());
            assert_eq!(s::roundup(1), 8);
            assert_eq!(s::roundup(16), 16);
        }
    }
}
