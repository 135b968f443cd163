//! Pod predicates every controller shares: which pods count (active), which are ready and since
//! when, which are available (ready for `minReadySeconds`), who controls a pod, and the order in
//! which a ReplicaSet gives pods up.

use std::cmp::Reverse;

use flotilla_state::objects::{ConditionStatus, ObjectMeta, Pod, PodCondition, PodPhase};

/// A pod that counts towards replicas: not being deleted and not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed)
}

/// A pod that may still be running somewhere: any phase but Succeeded or Failed, terminating or
/// not. Recreate waits until no old pod is in this state.
pub fn may_be_running(pod: &Pod) -> bool {
    !matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed)
}

pub fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Ready")
}

/// The `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|condition| condition.status == ConditionStatus::True)
}

/// When a ready pod became ready (the Ready condition's lastTransitionTime), if known.
pub fn ready_since_ms(pod: &Pod) -> Option<i64> {
    let condition = ready_condition(pod)?;
    if condition.status != ConditionStatus::True {
        return None;
    }
    condition
        .last_transition_time
        .as_ref()
        .map(|t| t.unix_millis())
}

/// When a ready pod is (or was) available: `minReadySeconds` after it became ready. `None` for a
/// pod that is not ready, or ready since an unknown time with `minReadySeconds > 0`.
pub fn available_at_ms(pod: &Pod, min_ready_seconds: i32) -> Option<i64> {
    if !is_ready(pod) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(i64::MIN);
    }
    ready_since_ms(pod).map(|since| since.saturating_add(i64::from(min_ready_seconds) * 1000))
}

/// Ready for at least `minReadySeconds` at `now_ms`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now_ms: i64) -> bool {
    available_at_ms(pod, min_ready_seconds).is_some_and(|at| at <= now_ms)
}

/// The most restarts of any one container.
pub fn max_restarts(pod: &Pod) -> i32 {
    pod.status.as_ref().map_or(0, |status| {
        status
            .container_statuses
            .iter()
            .map(|container| container.restart_count)
            .max()
            .unwrap_or(0)
    })
}

/// The uid of the controller owner reference, if any.
pub fn controller_uid(metadata: &ObjectMeta) -> Option<&str> {
    metadata.controller_owner().map(|owner| owner.uid.as_str())
}

/// Controlled by the object whose uid is `owner_uid` (a non-empty uid).
pub fn is_controlled_by(metadata: &ObjectMeta, owner_uid: &str) -> bool {
    !owner_uid.is_empty() && controller_uid(metadata) == Some(owner_uid)
}

fn phase_rank(phase: PodPhase) -> u8 {
    match phase {
        PodPhase::Pending => 0,
        PodPhase::Unknown => 1,
        PodPhase::Running => 2,
        PodPhase::Succeeded | PodPhase::Failed => 3,
    }
}

/// The sort key of Kubernetes' deletion preference: pods that sort first are deleted first.
/// Unscheduled before scheduled, Pending before Unknown before Running, not-ready before ready,
/// ready for less time before ready for longer, more restarts before fewer, newer before older
/// (an unknown creation time counts as newest), then by name so the order is total.
pub fn deletion_rank(pod: &Pod) -> impl Ord + '_ {
    let ready = is_ready(pod);
    let ready_since = if ready { ready_since_ms(pod) } else { None };
    let created_ms = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| t.unix_millis());
    (
        !pod.spec.node_name.is_empty(),
        phase_rank(pod.phase()),
        ready,
        Reverse(ready_since.unwrap_or(i64::MAX)),
        Reverse(max_restarts(pod)),
        Reverse(created_ms),
        pod.metadata.name.as_str(),
    )
}
