//! The allocator of the one binary: mimalloc for `flotilla server`, glibc's malloc for every
//! other mode (agent, the runtime's shims, the client verbs).
//!
//! Under load a server peer's threads allocate and free many short-lived buffers and objects,
//! and glibc's arenas spent a quarter of all CPU of `bench-sched` (b) consolidating and
//! unlinking free chunks; mimalloc does not. The agent and its shims (one process per
//! container) are mostly idle and gain nothing from it, while `bench-pods` measured them at
//! several MiB more each with mimalloc; with the system allocator they stay as they were.
//!
//! The choice is made once, before `main`, from the command line, and never changes: glibc runs
//! the functions of the ELF `.init_array` with the program's arguments before the Rust runtime
//! starts (std reads its own arguments the same way), and nothing in this binary allocates
//! through Rust's allocator before that. So every allocation is freed by the allocator that
//! made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process is a server peer (set before `main`, then only read).
static SERVER: AtomicBool = AtomicBool::new(false);

/// The global allocator: mimalloc in server mode, the system allocator otherwise.
pub struct ByMode;

fn server() -> bool {
    SERVER.load(Ordering::Relaxed)
}

// SAFETY: each call goes to one of two allocators, the same one for the whole life of the
// process (see the module documentation), so memory is always returned to the allocator that
// gave it out.
unsafe impl GlobalAlloc for ByMode {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if server() {
            mimalloc::MiMalloc.alloc(layout)
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if server() {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if server() {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if server() {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        } else {
            System.realloc(ptr, layout, new_size)
        }
    }
}

/// The allocator this process uses, for its log.
pub fn name() -> &'static str {
    if server() {
        "mimalloc"
    } else {
        "system"
    }
}

/// Global options that take a value as the next argument (`--server ADDR`).
const GLOBAL_OPTIONS_WITH_VALUE: [&[u8]; 1] = [b"--server"];

/// Whether the subcommand of these arguments (the program name left out) is `server`: the
/// first argument that is neither an option nor the value of a global option.
fn runs_server<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if GLOBAL_OPTIONS_WITH_VALUE.contains(&arg) {
            args.next();
            continue;
        }
        if arg.starts_with(b"-") {
            continue;
        }
        return arg == b"server";
    }
    false
}

/// Called by glibc before `main`, with the program's arguments.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
extern "C" fn choose(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    if argv.is_null() || argc < 1 {
        return;
    }
    let count = usize::try_from(argc).unwrap_or(0);
    // SAFETY: glibc passes `argc` valid, NUL-terminated argument strings in `argv`; they live
    // for the whole process. No allocation happens here.
    let args = (1..count).map(|i| unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes());
    SERVER.store(runs_server(args), Ordering::Relaxed);
}

/// Only glibc passes the arguments to `.init_array` functions (std relies on the same); on
/// other targets nothing is registered and every mode keeps the system allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array"]
static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;

#[cfg(test)]
mod tests {
    use super::runs_server;

    fn server(args: &[&str]) -> bool {
        runs_server(args.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn only_the_server_subcommand_chooses_mimalloc() {
        assert!(server(&["server", "--id", "1"]));
        assert!(server(&[
            "--server",
            "127.0.0.1:7001",
            "server",
            "--id",
            "1"
        ]));
        assert!(server(&["--server=127.0.0.1:7001", "server"]));
        assert!(!server(&["agent", "--servers", "127.0.0.1:7001"]));
        assert!(
            !server(&["--server", "server", "get", "pods"]),
            "an option's value"
        );
        assert!(
            !server(&["get", "pods", "server"]),
            "an argument of another verb"
        );
        assert!(!server(&["__shim", "run", "/dir"]));
        assert!(!server(&[]));
    }
}
