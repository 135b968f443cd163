//! [`AgentError`]: why the node agent could not start or shut down cleanly, with the part of
//! the node (config, image store, runtime, control plane, socket) it concerns.

use std::path::PathBuf;

use crate::image::ImageError;
use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent config {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("image store: {0}")]
    Image(#[from] ImageError),
    #[error("container runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("control plane: {0}")]
    Api(#[from] tonic::Status),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent API on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("shutting down: {0}")]
    Shutdown(String),
}

impl AgentError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        AgentError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
