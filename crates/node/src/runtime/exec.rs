//! `Runtime::exec`: a non-interactive command in a running container, run by the
//! `__shim exec` helper (which joins the container's namespaces and cgroup). The agent
//! captures stdout and stderr up to [`MAX_EXEC_OUTPUT_BYTES`] each and reads the exit code
//! from the helper's result file.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::container::ContainerId;
use super::error::RuntimeError;
use super::service::Runtime;
use super::shim::{ExecResult, SHIM_ARG};
use super::state::read_json;

/// Most bytes kept of each output stream; the rest is read and dropped.
pub const MAX_EXEC_OUTPUT_BYTES: usize = 1 << 20;
/// Time the helper may need on top of the command's timeout (joining namespaces, cgroups).
const HELPER_SLACK: Duration = Duration::from_secs(10);
/// How long output is still read after the command exited (a background child of the
/// command may hold the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What an exec produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code, or 128 + signal; 137 after a timeout kill.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Some output was dropped beyond [`MAX_EXEC_OUTPUT_BYTES`].
    pub truncated: bool,
    /// The command ran past its timeout and was killed.
    pub timed_out: bool,
}

/// Output collected so far from one stream.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Runtime {
    /// Runs `argv` inside the running container `id`, killing it after `timeout`.
    pub async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if argv.is_empty() || argv.len() > super::spec::MAX_SPEC_ITEMS {
            return Err(RuntimeError::invalid(
                "exec argv",
                "1..=MAX_SPEC_ITEMS entries",
            ));
        }
        if !self.status(id)?.is_running() {
            return Err(RuntimeError::invalid(
                format!("exec in {id}"),
                "the container is not running",
            ));
        }
        let paths = self.container_paths(id);
        let result_path = paths.dir.join(format!(
            "exec-{:016x}.json",
            rand::thread_rng().gen::<u64>()
        ));
        let outcome = self.run_exec(&paths.dir, &result_path, argv, timeout).await;
        let _ = std::fs::remove_file(&result_path);
        outcome
    }

    async fn run_exec(
        &self,
        dir: &std::path::Path,
        result_path: &std::path::Path,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let mut child = Command::new(&self.config.shim_path)
            .arg(SHIM_ARG)
            .arg("exec")
            .arg(dir)
            .arg(timeout.as_millis().to_string())
            .arg(result_path)
            .args(argv.iter().map(OsString::from))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::io("spawning exec helper", &self.config.shim_path, e))?;
        let stdout = capture(child.stdout.take());
        let stderr = capture(child.stderr.take());
        let limit = timeout + HELPER_SLACK;
        let status = tokio::time::timeout(limit, child.wait()).await;
        let (stdout, stderr) = (stdout.finish().await, stderr.finish().await);
        if status.is_err() {
            return Err(RuntimeError::Timeout {
                what: "exec helper".into(),
                waited_ms: limit.as_millis() as u64,
            });
        }
        let result: ExecResult = read_json(result_path).map_err(|e| RuntimeError::Helper {
            mode: "exec",
            message: format!("no result: {e}"),
        })?;
        if let Some(message) = result.error {
            return Err(RuntimeError::Helper {
                mode: "exec",
                message,
            });
        }
        Ok(ExecOutput {
            exit_code: result
                .exit_code
                .unwrap_or(super::container::UNKNOWN_EXIT_CODE),
            truncated: stdout.truncated || stderr.truncated,
            stdout: stdout.bytes,
            stderr: stderr.bytes,
            timed_out: result.timed_out,
        })
    }
}

/// A background reader of one pipe into a bounded buffer.
struct Capture {
    shared: Arc<Mutex<Captured>>,
    task: tokio::task::JoinHandle<()>,
}

fn capture<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Capture {
    let shared = Arc::new(Mutex::new(Captured::default()));
    let sink = Arc::clone(&shared);
    let task = tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut captured = sink.lock().unwrap_or_else(|p| p.into_inner());
            let room = MAX_EXEC_OUTPUT_BYTES - captured.bytes.len();
            captured.bytes.extend_from_slice(&buf[..n.min(room)]);
            captured.truncated |= n > room;
        }
    });
    Capture { shared, task }
}

impl Capture {
    /// Waits (at most [`DRAIN_AFTER_EXIT`]) for end of stream and returns what was read.
    async fn finish(mut self) -> Captured {
        if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        let mut captured = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *captured)
    }
}
