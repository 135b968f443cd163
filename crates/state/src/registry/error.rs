//! The errors of the object registry, each mapping to one gRPC code.

use flotilla_consensus::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    /// Optimistic concurrency: the object changed since the caller read it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Bad input; the message names the field path. Nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// A list or watch revision that was compacted: relist.
    #[error("too old resource version: {0}; relist")]
    Expired(String),
    /// No quorum or no leader; retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write raced with a leadership change and was refused by fencing.
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(kind: &str, name: &str) -> Self {
        ApiError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Unavailable(_))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_)
            | StoreError::NotLeader(_)
            | StoreError::ShuttingDown
            | StoreError::Timeout(_) => ApiError::Unavailable(e.to_string()),
            StoreError::Invalid(msg) => ApiError::Invalid(msg),
            StoreError::Compacted { .. } => ApiError::Expired(e.to_string()),
            StoreError::FutureRevision { .. } => ApiError::Invalid(e.to_string()),
            StoreError::Membership(_) | StoreError::Storage(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(format!("stored object does not decode: {e}"))
    }
}
