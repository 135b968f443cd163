//! Pure helpers behind `flotilla rollout status|history|undo`: kubectl's status messages, the
//! revision list, and the template to roll back to.

use flotilla_state::objects::{Deployment, PodTemplateSpec, ReplicaSet};

use super::status::{find, PROGRESSING, REASON_TIMED_OUT};
use super::template::{revision_of, without_hash, CHANGE_CAUSE_ANNOTATION};
use crate::error::ControllerError;
use crate::pods;

/// Where a rollout stands, in kubectl's words (without the trailing newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutStatus {
    pub done: bool,
    pub message: String,
}

/// kubectl's `rollout status` for one observation of `d`; an error once the progress deadline
/// passed. (It needs only the Deployment's status, so it takes no ReplicaSets.)
pub fn rollout_status(d: &Deployment) -> Result<RolloutStatus, ControllerError> {
    let name = &d.metadata.name;
    let status = d.status.clone().unwrap_or_default();
    let waiting = |message: String| {
        Ok(RolloutStatus {
            done: false,
            message,
        })
    };
    if d.metadata.generation > status.observed_generation {
        return waiting("Waiting for deployment spec update to be observed...".to_owned());
    }
    let progressing = find(&status.conditions, PROGRESSING);
    if progressing.is_some_and(|c| c.reason == REASON_TIMED_OUT) {
        return Err(ControllerError::ProgressDeadlineExceeded(name.clone()));
    }
    let prefix = format!("Waiting for deployment {name:?} rollout to finish:");
    let desired = d.spec.replicas();
    if status.updated_replicas < desired {
        let updated = status.updated_replicas;
        return waiting(format!(
            "{prefix} {updated} out of {desired} new replicas have been updated..."
        ));
    }
    if status.replicas > status.updated_replicas {
        let old = status.replicas - status.updated_replicas;
        return waiting(format!(
            "{prefix} {old} old replicas are pending termination..."
        ));
    }
    if status.available_replicas < status.updated_replicas {
        let (available, updated) = (status.available_replicas, status.updated_replicas);
        return waiting(format!(
            "{prefix} {available} of {updated} updated replicas are available..."
        ));
    }
    Ok(RolloutStatus {
        done: true,
        message: format!("deployment {name:?} successfully rolled out"),
    })
}

/// One line of `rollout history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionEntry {
    pub revision: i64,
    /// The `kubernetes.io/change-cause` annotation, if recorded.
    pub change_cause: Option<String>,
    /// The template's containers, e.g. `web=nginx:1.25,log=busybox:1.36`.
    pub template: String,
}

/// The revisions of the given ReplicaSets, oldest first; ReplicaSets without a revision are left
/// out.
pub fn rollout_history(rss: &[ReplicaSet]) -> Vec<RevisionEntry> {
    let mut entries: Vec<RevisionEntry> = rss
        .iter()
        .filter_map(|rs| {
            Some(RevisionEntry {
                revision: revision_of(rs)?,
                change_cause: rs
                    .metadata
                    .annotations
                    .get(CHANGE_CAUSE_ANNOTATION)
                    .cloned(),
                template: template_summary(&rs.spec.template),
            })
        })
        .collect();
    entries.sort_by_key(|entry| entry.revision);
    entries
}

fn template_summary(template: &PodTemplateSpec) -> String {
    let containers: Vec<String> = template
        .spec
        .containers
        .iter()
        .map(|c| format!("{}={}", c.name, c.image))
        .collect();
    containers.join(",")
}

/// The template `rollout undo` writes into `d`: that of `to_revision`, or of the revision before
/// the newest when `None` (or 0). The pod-template-hash label is removed.
pub fn rollback_template(
    d: &Deployment,
    rss: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<PodTemplateSpec, ControllerError> {
    if d.spec.paused == Some(true) {
        return Err(ControllerError::RollbackPaused(d.metadata.name.clone()));
    }
    let mut revisions: Vec<(i64, &ReplicaSet)> = rss
        .iter()
        .filter(|rs| pods::is_controlled_by(&rs.metadata, &d.metadata.uid))
        .filter_map(|rs| Some((revision_of(rs)?, rs)))
        .collect();
    if revisions.is_empty() {
        return Err(ControllerError::NoRolloutHistory(d.metadata.name.clone()));
    }
    revisions.sort_by_key(|(revision, _)| *revision);
    let chosen = match to_revision.filter(|r| *r != 0) {
        Some(wanted) => revisions
            .iter()
            .find(|(revision, _)| *revision == wanted)
            .ok_or(ControllerError::RevisionNotFound { revision: wanted })?,
        None => revisions
            .iter()
            .rev()
            .nth(1)
            .ok_or(ControllerError::NoPreviousRevision)?,
    };
    Ok(without_hash(&chosen.1.spec.template))
}
