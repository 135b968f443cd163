//! The store's error type, shared by the library API, the gRPC services and request forwarding.

use serde::{Deserialize, Serialize};

use crate::mvcc::MvccError;
use crate::types::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    /// No leader is known (an election is under way) or it cannot be reached. Retry.
    #[error("no leader available ({0}); retry shortly")]
    Unavailable(String),
    /// The deadline passed; a write may or may not have been applied. Retry with the same
    /// request id to find out without applying it twice.
    #[error("timed out after {0} ms; the outcome is unknown, retry with the same request id")]
    Timeout(u64),
    /// The request was malformed or over a limit; nothing was changed.
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("revision {requested} is compacted (compacted up to {compacted}): relist")]
    Compacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("peer {0} is not the leader")]
    NotLeader(NodeId),
    /// The store failed underneath (disk, corruption); the peer stops.
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl StoreError {
    /// Whether the same request may simply be sent again (to this or another peer).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::NotLeader(_)
        )
    }
}

impl From<MvccError> for StoreError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested,
                compacted,
            },
            MvccError::FutureRevision { requested, current } => {
                StoreError::FutureRevision { requested, current }
            }
            other => StoreError::Storage(other.to_string()),
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Unavailable(_) | StoreError::NotLeader(_) | StoreError::ShuttingDown => {
                tonic::Status::unavailable(message)
            }
            StoreError::Timeout(_) => tonic::Status::deadline_exceeded(message),
            StoreError::Invalid(_) => tonic::Status::invalid_argument(message),
            StoreError::Compacted { .. } => tonic::Status::out_of_range(message),
            StoreError::FutureRevision { .. } => tonic::Status::out_of_range(message),
            StoreError::Membership(_) => tonic::Status::failed_precondition(message),
            StoreError::Storage(_) => tonic::Status::internal(message),
        }
    }
}
