//! The crate's one error type: what a reconcile or a CLI helper can refuse, worded for the person
//! who wrote the manifest or typed the command.

use flotilla_state::error::{IntOrStringError, SelectorError};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// A workload's label selector does not compile.
    #[error("{owner}: invalid selector: {source}")]
    InvalidSelector {
        owner: String,
        #[source]
        source: SelectorError,
    },
    /// `maxSurge` / `maxUnavailable` is a string that is not a percentage.
    #[error("deployment {deployment:?}: {field}: {source}")]
    InvalidRolloutBound {
        deployment: String,
        field: &'static str,
        #[source]
        source: IntOrStringError,
    },
    #[error("deployment {deployment:?}: {field} must not be negative (got {value})")]
    NegativeRolloutBound {
        deployment: String,
        field: &'static str,
        value: i32,
    },
    #[error("deployment {deployment:?}: maxSurge and maxUnavailable must not both be 0")]
    ZeroRolloutBounds { deployment: String },
    /// The pod template cannot be encoded for hashing (not expected for valid objects).
    #[error("cannot encode the pod template of {owner:?}: {message}")]
    TemplateEncoding { owner: String, message: String },
    /// Every candidate name `<deployment>-<hash>` is held by a ReplicaSet with another template.
    #[error("deployment {deployment:?}: no free ReplicaSet name after {attempts} hash collisions")]
    NoReplicaSetName { deployment: String, attempts: u32 },
    #[error("deployment {0:?} exceeded its progress deadline")]
    ProgressDeadlineExceeded(String),
    #[error("no rollout history found for deployment {0:?}")]
    NoRolloutHistory(String),
    #[error("no last revision to roll back to")]
    NoPreviousRevision,
    #[error("unable to find specified revision {revision} in history")]
    RevisionNotFound { revision: i64 },
    #[error(
        "you cannot rollback a paused deployment; resume it first with \
         'flotilla rollout resume deployment/{0}' and try again"
    )]
    RollbackPaused(String),
    #[error("invalid node lifecycle config: {0}")]
    InvalidLifecycleConfig(String),
}
