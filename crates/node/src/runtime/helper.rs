//! Agent-side process plumbing: running a short-lived shim helper mode to completion with a
//! timeout and bounded error capture, and waiting asynchronously for any process (not only
//! our children) to exit through its pidfd.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::error::RuntimeError;
use super::procs::ProcIdentity;
use super::shim::SHIM_ARG;

/// Most bytes of a helper's stderr kept for its error message.
pub const MAX_HELPER_STDERR_BYTES: u64 = 64 * 1024;

/// Runs `<shim> __shim <mode> <args…>` and waits for it; a failure carries its stderr.
pub(crate) async fn run_helper(
    shim: &Path,
    mode: &'static str,
    args: &[OsString],
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let helper_error = |message: String| RuntimeError::Helper { mode, message };
    let mut child = Command::new(shim)
        .arg(SHIM_ARG)
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| helper_error(format!("spawning {}: {e}", shim.display())))?;
    let stderr = child.stderr.take();
    let finished = async {
        let mut message = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr
                .take(MAX_HELPER_STDERR_BYTES)
                .read_to_end(&mut message)
                .await;
        }
        (child.wait().await, message)
    };
    let (status, message) =
        tokio::time::timeout(timeout, finished)
            .await
            .map_err(|_| RuntimeError::Timeout {
                what: format!("helper `{mode}`"),
                waited_ms: timeout.as_millis() as u64,
            })?;
    let status = status.map_err(|e| helper_error(format!("waiting: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&message).trim().to_string();
    Err(helper_error(format!("{status}: {text}")))
}

/// Waits until `process` exits or `timeout` passes; true when it is gone.
pub(crate) async fn wait_exit(process: &ProcIdentity, timeout: Duration) -> bool {
    let Some(pidfd) = process.pidfd() else {
        return true;
    };
    // SAFETY: `pidfd` is an owned, valid descriptor that AsyncFd keeps open until dropped.
    let Ok(fd) = (unsafe { AsyncFd::register(pidfd) }) else {
        return poll_exit(process, timeout).await;
    };
    // A pidfd turns readable when its process terminates.
    tokio::time::timeout(timeout, fd.readable()).await.is_ok() || !process.is_alive()
}

/// Fallback when a pidfd cannot be registered: checks liveness every few milliseconds.
async fn poll_exit(process: &ProcIdentity, timeout: Duration) -> bool {
    const STEP: Duration = Duration::from_millis(20);
    let deadline = tokio::time::Instant::now() + timeout;
    while process.is_alive() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STEP).await;
    }
    true
}
