//! The harness's error type: what went wrong while building hosts, injecting faults, running a
//! workload or writing a report. Checker verdicts are not errors — a run that finds a bug
//! succeeds and reports `Invalid`.

use std::io;
use std::path::PathBuf;

use crate::history::{HistoryError, RecordError};
use crate::net::NetError;
use crate::netfault::ShapeError;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout_ms} ms")]
    CommandTimeout { command: String, timeout_ms: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{context}: {message}")]
    Rpc { context: String, message: String },
    #[error("{what} not reached within {waited_ms} ms: {last}")]
    NotReady {
        what: String,
        waited_ms: u64,
        last: String,
    },
    #[error("the chaos harness needs root (network namespaces, iptables, tmpfs)")]
    NotRoot,
    #[error("the flotilla binary {0} does not exist; build it (cargo build -p flotilla-cli --bin flotilla) or pass --flotilla PATH")]
    FlotillaMissing(PathBuf),
    #[error("unknown scenario {0:?}; `flotilla-chaos list` shows them")]
    UnknownScenario(String),
    #[error("{0}")]
    Config(String),
    #[error("encoding {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ChaosError {
    /// An IO error with what the harness was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ChaosError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn rpc(context: impl Into<String>, status: &tonic::Status) -> Self {
        ChaosError::Rpc {
            context: context.into(),
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}
