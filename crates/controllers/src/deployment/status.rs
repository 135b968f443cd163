//! Deployment status: counts of its pods across ReplicaSets and the `Available` and
//! `Progressing` conditions, with Kubernetes' rules for when `lastUpdateTime` and
//! `lastTransitionTime` move (so re-deriving from an unchanged state changes nothing).

use flotilla_state::objects::{
    ConditionStatus, Deployment, DeploymentCondition, DeploymentStatus, Time,
};

use super::rollout::Rollout;
use super::PROGRESS_DEADLINE_MS;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REASON_MINIMUM_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const REASON_MINIMUM_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const REASON_NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const REASON_FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const REASON_PAUSED: &str = "DeploymentPaused";
pub const REASON_RESUMED: &str = "DeploymentResumed";

/// Which parts of the status a reconcile may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusMode {
    /// The Deployment is being deleted: counts and `Available` only.
    StatusOnly,
    /// Paused or scaling: no `Progressing` bookkeeping beyond paused/resumed.
    Sync,
    /// A rollout step: full `Progressing` bookkeeping.
    Rollout,
}

pub(crate) fn deployment_status(r: &Rollout<'_>, mode: StatusMode) -> DeploymentStatus {
    let d = r.d;
    let mut status = counts(r);
    status.conditions = d
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let desired = d.spec.replicas().max(0);
    let available = if status.available_replicas >= desired - r.bounds.max_unavailable {
        (
            ConditionStatus::True,
            REASON_MINIMUM_AVAILABLE,
            "Deployment has minimum availability.",
        )
    } else {
        (
            ConditionStatus::False,
            REASON_MINIMUM_UNAVAILABLE,
            "Deployment does not have minimum availability.",
        )
    };
    set(
        &mut status.conditions,
        condition(AVAILABLE, available.0, available.1, available.2, r.now_ms),
    );
    if mode == StatusMode::StatusOnly {
        return status;
    }
    paused_conditions(d, &mut status.conditions, r.now_ms);
    if let Some(new) = &r.new {
        let name = &new.rs.metadata.name;
        if new.created {
            let message = format!("Created new replica set {name:?}");
            let created = condition(
                PROGRESSING,
                ConditionStatus::True,
                REASON_NEW_RS_CREATED,
                &message,
                r.now_ms,
            );
            replace(&mut status.conditions, created);
        } else if find(&status.conditions, PROGRESSING).is_none() {
            let message = format!("Found new replica set {name:?}");
            let found = condition(
                PROGRESSING,
                ConditionStatus::True,
                REASON_FOUND_NEW_RS,
                &message,
                r.now_ms,
            );
            set(&mut status.conditions, found);
        }
    }
    if mode == StatusMode::Rollout {
        let new_name = r.new.as_ref().map(|rs| rs.rs.metadata.name.as_str());
        progress(d, new_name, &mut status, r.now_ms);
    }
    status
}

fn counts(r: &Rollout<'_>) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&super::rollout::RsState) -> i32| r.all().map(f).sum::<i32>();
    let available = sum(&|rs| rs.pods.available);
    DeploymentStatus {
        observed_generation: r.d.metadata.generation,
        replicas: sum(&|rs| rs.pods.active),
        updated_replicas: r.new.as_ref().map_or(0, |rs| rs.pods.active),
        ready_replicas: sum(&|rs| rs.pods.ready),
        available_replicas: available,
        unavailable_replicas: (sum(&|rs| rs.replicas) - available).max(0),
        conditions: Vec::new(),
    }
}

/// Every replica updated and available, none old, and the current generation observed.
pub(crate) fn is_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = d.spec.replicas().max(0);
    status.updated_replicas == desired
        && status.replicas == desired
        && status.available_replicas == desired
        && status.observed_generation >= d.metadata.generation
}

/// More updated, ready or available replicas than last recorded, or fewer old ones.
fn is_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old_replicas = old.replicas - old.updated_replicas;
    let new_old_replicas = new.replicas - new.updated_replicas;
    new.updated_replicas > old.updated_replicas
        || new_old_replicas < old_old_replicas
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

fn paused_conditions(d: &Deployment, conditions: &mut Vec<DeploymentCondition>, now_ms: i64) {
    let paused = d.spec.paused == Some(true);
    let reason = find(conditions, PROGRESSING).map(|c| c.reason.clone());
    let was_paused = reason.as_deref() == Some(REASON_PAUSED);
    if paused && !was_paused {
        let paused = condition(
            PROGRESSING,
            ConditionStatus::Unknown,
            REASON_PAUSED,
            "Deployment is paused",
            now_ms,
        );
        set(conditions, paused);
    } else if !paused && was_paused {
        let resumed = condition(
            PROGRESSING,
            ConditionStatus::Unknown,
            REASON_RESUMED,
            "Deployment is resumed",
            now_ms,
        );
        set(conditions, resumed);
    }
}

/// Kubernetes' `syncRolloutStatus`: complete, progressing (refreshes `lastUpdateTime`), or
/// timed out once `lastUpdateTime` is [`PROGRESS_DEADLINE_MS`] old.
fn progress(d: &Deployment, new_name: Option<&str>, status: &mut DeploymentStatus, now_ms: i64) {
    let already_complete = status.replicas == status.updated_replicas
        && find(&status.conditions, PROGRESSING)
            .is_some_and(|c| c.reason == REASON_NEW_RS_AVAILABLE);
    if already_complete {
        return;
    }
    let subject = match new_name {
        Some(name) => format!("ReplicaSet {name:?}"),
        None => format!("Deployment {:?}", d.metadata.name),
    };
    let old = d.status.clone().unwrap_or_default();
    if is_complete(d, status) {
        let message = format!("{subject} has successfully progressed.");
        set(
            &mut status.conditions,
            condition(
                PROGRESSING,
                ConditionStatus::True,
                REASON_NEW_RS_AVAILABLE,
                &message,
                now_ms,
            ),
        );
    } else if is_progressing(&old, status) {
        let message = format!("{subject} is progressing.");
        let updated = condition(
            PROGRESSING,
            ConditionStatus::True,
            REASON_RS_UPDATED,
            &message,
            now_ms,
        );
        replace(&mut status.conditions, updated);
    } else if timed_out(&status.conditions, now_ms) {
        let message = format!("{subject} has timed out progressing.");
        set(
            &mut status.conditions,
            condition(
                PROGRESSING,
                ConditionStatus::False,
                REASON_TIMED_OUT,
                &message,
                now_ms,
            ),
        );
    }
}

fn timed_out(conditions: &[DeploymentCondition], now_ms: i64) -> bool {
    let Some(progressing) = find(conditions, PROGRESSING) else {
        return false;
    };
    match progressing.reason.as_str() {
        REASON_NEW_RS_AVAILABLE => false,
        REASON_TIMED_OUT => true,
        _ => progressing
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.unix_millis().saturating_add(PROGRESS_DEADLINE_MS) <= now_ms),
    }
}

/// Time until the progress deadline of a rollout in progress (not paused, not complete).
pub(crate) fn requeue_after_ms(
    d: &Deployment,
    status: &DeploymentStatus,
    now_ms: i64,
) -> Option<i64> {
    if d.spec.paused == Some(true) {
        return None;
    }
    let progressing = find(&status.conditions, PROGRESSING)?;
    let in_progress = progressing.status == ConditionStatus::True
        && progressing.reason != REASON_NEW_RS_AVAILABLE;
    let last_update_ms = progressing.last_update_time.as_ref()?.unix_millis();
    in_progress.then(|| (last_update_ms.saturating_add(PROGRESS_DEADLINE_MS) - now_ms).max(0))
}

pub(crate) fn find<'a>(
    conditions: &'a [DeploymentCondition],
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now_ms: i64,
) -> DeploymentCondition {
    let now = Time::from_unix_millis(now_ms);
    DeploymentCondition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Kubernetes' `SetDeploymentCondition`: same status and reason keeps the stored condition
/// untouched; same status keeps its transition time.
fn set(conditions: &mut Vec<DeploymentCondition>, mut new: DeploymentCondition) {
    if let Some(current) = find(conditions, &new.type_) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

/// Replaces the condition of the same type (refreshing `lastUpdateTime`), keeping its
/// transition time when the status stays the same.
fn replace(conditions: &mut Vec<DeploymentCondition>, mut new: DeploymentCondition) {
    if let Some(current) = find(conditions, &new.type_).filter(|c| c.status == new.status) {
        new.last_transition_time = current.last_transition_time.clone();
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}
