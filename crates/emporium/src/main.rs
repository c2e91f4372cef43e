use clap::Parser;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

/// mimalloc, with two of its options changed before its first arena is
/// made: freed memory goes back to the system at once, and an arena is
/// committed as it is used rather than whole. A demo shop then idles at
/// about 60 MiB instead of 140 (glibc's allocator kept 300 after the demo's
/// pictures were made; `bench/RESULTS.md`). mimalloc reads its options
/// from the environment when the process loads, before `main`, and makes
/// its first arena at the first allocation, so the change is made there;
/// an operator's `MIMALLOC_PURGE_DELAY` or `MIMALLOC_ARENA_EAGER_COMMIT`
/// is left as it is.
struct Allocator;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// mimalloc's options by their place in `mi_option_e` (mimalloc 3's
/// `mimalloc.h`); the Rust bindings name only mimalloc 2's.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

impl Allocator {
    #[allow(unsafe_code)]
    #[inline]
    fn configure() {
        if CONFIGURED.load(Ordering::Relaxed) || CONFIGURED.swap(true, Ordering::AcqRel) {
            return;
        }
        for (option, variable) in [(MI_OPTION_PURGE_DELAY, c"MIMALLOC_PURGE_DELAY"), (MI_OPTION_ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT")] {
            // SAFETY: `getenv` reads a NUL-terminated name and allocates
            // nothing (this runs inside the allocator); nothing sets the
            // environment this early. `mi_option_set` writes mimalloc's
            // option table.
            unsafe {
                if libc::getenv(variable.as_ptr()).is_null() {
                    libmimalloc_sys::mi_option_set(option, 0);
                }
            }
        }
    }
}

// SAFETY: every call is passed to mimalloc unchanged; `configure` only
// sets options and allocates nothing.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::configure();
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::configure();
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

fn main() -> std::process::ExitCode {
    let cli = emporium::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("emporium: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(emporium::run(cli));
    platform::telemetry::flush_logs();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emporium: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
