//! The single-threaded helper processes of the runtime: the agent re-executes its own binary
//! as `<exe> __shim <mode> …` so that every `clone3`, `setns` and `unshare` happens in a fresh
//! process without tokio threads (libcontainer forks, which is unsafe from a multithreaded
//! process). Modes:
//! - `run <container-dir>` — the per-container shim ([`run`]): detaches, creates and starts
//!   the container, logs its output, reaps it, records its exit; outlives the agent;
//! - `exec <container-dir> <timeout-ms> <result-file> <argv…>` — runs a command inside a
//!   running container ([`exec`]);
//! - `cleanup <container-dir>` — removes what a dead shim left (cgroup, libcontainer state);
//! - `zygote <blank>` — forks the modes above on the agent's request instead of the agent exec'ing
//!   its binary for each ([`zygote`]).
//!
//! Architecture invariant: no mode panics on bad input; errors go to the state file, the
//! result file or stderr, and the exit code says whether the mode succeeded.

mod cleanup;
mod exec;
mod run;
mod zygote;

use std::ffi::OsString;
use std::path::PathBuf;

pub(crate) use exec::ExecResult;
pub(crate) use zygote::{
    MAX_REQUEST_BYTES as MAX_ZYGOTE_REQUEST_BYTES, REQUEST_FDS as ZYGOTE_REQUEST_FDS,
    TITLE_BYTES as ZYGOTE_TITLE_BYTES,
};

/// The hidden argument that selects shim mode in the agent binary.
pub const SHIM_ARG: &str = "__shim";

/// Set (to anything) in the agent's environment to get libcontainer's debug log in each
/// shim's stderr (`shim.err` of a container).
pub const DEBUG_ENV: &str = "FLOTILLA_SHIM_DEBUG";

/// Exit code of a mode that failed (its error was reported as the mode describes).
pub(crate) const EXIT_FAILED: i32 = 1;
/// Exit code for a command line the shim does not understand.
const EXIT_USAGE: i32 = 2;

/// Entry point of every shim mode. `args` are the arguments after [`SHIM_ARG`].
pub fn main(args: Vec<OsString>) -> ! {
    if std::env::var_os(DEBUG_ENV).is_some() {
        // libcontainer reports its steps through `tracing`; send them to stderr (shim.err).
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_env_filter("debug")
            .try_init();
    }
    std::process::exit(run_mode(&args))
}

/// Runs the mode `args` and returns its exit code; a panic is a failure.
fn run_mode(args: &[OsString]) -> i32 {
    std::panic::catch_unwind(|| dispatch(args)).unwrap_or(EXIT_FAILED)
}

fn dispatch(args: &[OsString]) -> i32 {
    let mode = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let path = |i: usize| args.get(i).map(PathBuf::from);
    match (mode, path(1)) {
        ("run", Some(dir)) if args.len() == 2 => run::main(&dir),
        ("cleanup", Some(dir)) if args.len() == 2 => cleanup::main(&dir),
        ("exec", Some(dir)) if args.len() >= 5 => exec::main(&dir, &args[2..]),
        ("zygote", Some(_)) if args.len() == 2 => zygote::main(&args[1]),
        _ => {
            eprintln!("usage: {SHIM_ARG} run|cleanup|exec|zygote …");
            EXIT_USAGE
        }
    }
}

/// Restores the default action of SIGPIPE and SIGHUP. Rust's runtime ignores SIGPIPE in
/// every binary, and an ignored signal stays ignored across `exec`: without this, container
/// processes would start with SIGPIPE ignored (`yes | head -n 1` would never end quietly).
pub(crate) fn default_signal_actions() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGPIPE, Signal::SIGHUP] {
        // SAFETY: installing SIG_DFL runs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
}

/// Renders an error with its chain of sources (libcontainer's top-level messages are terse).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    // Bounded: error chains are short, but a cyclic one must not loop forever.
    for _ in 0..16 {
        let Some(s) = source else { break };
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
