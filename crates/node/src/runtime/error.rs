//! [`RuntimeError`]: the one error type of the container runtime, with the path, container or
//! pod it concerns.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::image::ImageError;
use crate::network::NetworkError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {errno}")]
    Sys { op: String, errno: Errno },
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("sandbox of pod {pod_uid} not found")]
    SandboxNotFound { pod_uid: String },
    #[error("sandbox of pod {pod_uid} already exists")]
    SandboxExists { pod_uid: String },
    #[error("sandbox of pod {pod_uid} still has live containers: {containers:?}")]
    SandboxBusy {
        pod_uid: String,
        containers: Vec<String>,
    },
    #[error("container {id} is still running; stop it first")]
    StillRunning { id: String },
    #[error("container {id} failed to start: {message}")]
    StartFailed { id: String, message: String },
    #[error("helper `{mode}` failed: {message}")]
    Helper { mode: &'static str, message: String },
    #[error("pod sandbox: {message}")]
    Sandbox { message: String },
    #[error("{what} did not finish within {waited_ms} ms")]
    Timeout { what: String, waited_ms: u64 },
    #[error("state file {} is corrupt: {reason}", path.display())]
    CorruptState { path: PathBuf, reason: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

impl RuntimeError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> RuntimeError {
        RuntimeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn sys(op: impl Into<String>, errno: Errno) -> RuntimeError {
        RuntimeError::Sys {
            op: op.into(),
            errno,
        }
    }
}

/// Attaches an operation and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, RuntimeError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, RuntimeError> {
        self.map_err(|source| RuntimeError::io(op, path, source))
    }
}
