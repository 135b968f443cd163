//! `__shim exec <container-dir> <timeout-ms> <result-file> <argv…>`: runs a command in a
//! running container through libcontainer's tenant builder (which joins the container's
//! namespaces and cgroup with `setns`, in processes forked from this single-threaded helper).
//! The command's stdout and stderr are this helper's, so the agent reads them from its pipes;
//! the outcome goes to `<result-file>` as [`ExecResult`]. A command still running at the
//! timeout is SIGKILLed.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{default_signal_actions, error_chain, EXIT_FAILED};
use crate::runtime::state::{read_json, write_json_atomic, ContainerPaths, ShimSpec};

/// How an exec ended, as the helper reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecResult {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub error: Option<String>,
}

pub(super) fn main(dir: &Path, rest: &[OsString]) -> i32 {
    let timeout_ms = rest[0].to_str().and_then(|s| s.parse::<u64>().ok());
    let result_path = PathBuf::from(&rest[1]);
    let argv: Option<Vec<String>> = rest[2..]
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect();
    let result = match (timeout_ms, argv) {
        (Some(timeout_ms), Some(argv)) => run(&ContainerPaths::new(dir), timeout_ms, argv),
        _ => ExecResult {
            error: Some("bad exec arguments (timeout or non-UTF-8 argv)".into()),
            ..ExecResult::default()
        },
    };
    match write_json_atomic(&result_path, &result) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            EXIT_FAILED
        }
    }
}

fn run(paths: &ContainerPaths, timeout_ms: u64, argv: Vec<String>) -> ExecResult {
    match spawn(paths, argv) {
        Ok(pid) => wait(pid, timeout_ms),
        Err(message) => ExecResult {
            error: Some(message),
            ..ExecResult::default()
        },
    }
}

fn spawn(paths: &ContainerPaths, argv: Vec<String>) -> Result<Pid, String> {
    default_signal_actions();
    let spec: ShimSpec = read_json(&paths.shim_spec()).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup stdout: {e}"))?;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup stderr: {e}"))?;
    let stdin = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let cwd = container_cwd(paths)?;
    ContainerBuilder::new(spec.id, SyscallType::default())
        .with_root_path(paths.youki_root())
        .map_err(|e| error_chain(&e))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_tenant()
        .with_cwd(Some(cwd))
        .with_container_args(argv)
        .build()
        .map_err(|e| format!("exec: {}", error_chain(&e)))
}

/// The container's working directory (its `workingDir`), where exec'd commands start, as in
/// Kubernetes.
fn container_cwd(paths: &ContainerPaths) -> Result<PathBuf, String> {
    let config = paths.bundle().join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config)
        .map_err(|e| format!("reading {}: {e}", config.display()))?;
    Ok(spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// Waits for the command, killing it when `timeout_ms` passes first.
fn wait(pid: Pid, timeout_ms: u64) -> ExecResult {
    let timed_out = !exited_within(pid, timeout_ms);
    if timed_out {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let exit_code = match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        _ => None,
    };
    ExecResult {
        exit_code,
        timed_out,
        error: None,
    }
}

/// Polls a pidfd of our child `pid` (not yet reaped, so the pid cannot be reused).
fn exited_within(pid: Pid, timeout_ms: u64) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if raw < 0 {
        return true; // Already gone: waitpid collects it.
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}
