//! ReplicaSet reconcile: keep `spec.replicas` active pods, stamped from the template, and report
//! the counts in status; plus adoption of orphans that match the selector and release of owned
//! pods that no longer do.
//!
//! Creations carry `generateName`, so a re-derived plan is idempotent only once the loop's cache
//! shows the pods it created: the loop must not reconcile a ReplicaSet again while its own
//! creates or deletes are in flight, or it would create twice — see
//! [`crate::expectations::Expectations`].

use std::borrow::Borrow;
use std::cmp::Ordering;

use flotilla_state::objects::{
    Kind, ObjectMeta, OwnerReference, Pod, ReplicaSet, ReplicaSetStatus,
};

use crate::error::ControllerError;
use crate::pods;
use crate::refs::PodRef;

/// Pods one reconcile may create (Kubernetes' `burstReplicas`).
pub const MAX_CREATES_PER_RECONCILE: usize = 500;
/// Pods one reconcile may delete.
pub const MAX_DELETES_PER_RECONCILE: usize = 500;
/// Pods one adoption pass may adopt or release.
pub const MAX_ADOPTIONS_PER_RECONCILE: usize = 500;
/// The first slow-start batch; each following batch doubles.
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// What the loop does for one ReplicaSet.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSetPlan {
    /// Pods to create, at most [`MAX_CREATES_PER_RECONCILE`]; create them in
    /// [`slow_start_batches`] and stop at the first batch with a failure.
    pub create: Vec<Pod>,
    /// Pods to delete (conditional on uid), at most [`MAX_DELETES_PER_RECONCILE`].
    pub delete: Vec<PodRef>,
    /// The status to write if it differs from the stored one.
    pub status: ReplicaSetStatus,
    /// Reconcile again after this long even without news: a ready pod becomes available then.
    pub requeue_after_ms: Option<i64>,
}

impl ReplicaSetPlan {
    /// Nothing to create or delete.
    pub fn is_steady(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// The plan for `rs` given the pods it controls. Pods not controlled by `rs` (by uid) are
/// ignored, so the caller may pass a superset. A ReplicaSet being deleted only gets its status.
/// `owned_pods` may be owned pods or references to them.
pub fn reconcile_replicaset<P: Borrow<Pod>>(
    rs: &ReplicaSet,
    owned_pods: &[P],
    now_ms: i64,
) -> ReplicaSetPlan {
    let mut active: Vec<&Pod> = owned_pods
        .iter()
        .map(Borrow::borrow)
        .filter(|pod| pods::is_controlled_by(&pod.metadata, &rs.metadata.uid))
        .filter(|pod| pods::is_active(pod))
        .collect();
    let min_ready_seconds = rs.spec.min_ready_seconds.unwrap_or(0);
    let mut plan = ReplicaSetPlan {
        create: Vec::new(),
        delete: Vec::new(),
        status: replicaset_status(rs, &active, now_ms),
        requeue_after_ms: next_available_in_ms(&active, min_ready_seconds, now_ms),
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let desired = usize::try_from(rs.spec.replicas()).unwrap_or(0);
    match active.len().cmp(&desired) {
        Ordering::Less => {
            let count = (desired - active.len()).min(MAX_CREATES_PER_RECONCILE);
            plan.create = (0..count).map(|_| pod_from_template(rs)).collect();
        }
        Ordering::Greater => {
            let count = (active.len() - desired).min(MAX_DELETES_PER_RECONCILE);
            active.sort_by_cached_key(|pod| pods::deletion_rank(pod));
            plan.delete = active[..count].iter().map(|pod| PodRef::of(pod)).collect();
        }
        Ordering::Equal => {}
    }
    plan
}

/// Batch sizes for creating `total` pods: 1, 2, 4, … (the last one smaller), so a template that
/// cannot be created fails once instead of `total` times.
pub fn slow_start_batches(total: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let (mut done, mut next) = (0, SLOW_START_INITIAL_BATCH);
    while done < total {
        let size = next.min(total - done);
        batches.push(size);
        done += size;
        next = next.saturating_mul(2);
    }
    batches
}

/// The owner reference a ReplicaSet puts on its pods.
pub fn owner_reference(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: Kind::ReplicaSet.api_version().to_owned(),
        kind: Kind::ReplicaSet.name().to_owned(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod from the template: `generateName: <rs>-`, the template's labels and annotations,
/// the ReplicaSet's namespace, controlled by the ReplicaSet.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = &rs.spec.template;
    Pod {
        metadata: ObjectMeta {
            generate_name: format!("{}-", rs.metadata.name),
            namespace: rs.metadata.namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations: template.metadata.annotations.clone(),
            owner_references: vec![owner_reference(rs)],
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn replicaset_status(rs: &ReplicaSet, active: &[&Pod], now_ms: i64) -> ReplicaSetStatus {
    let min_ready_seconds = rs.spec.min_ready_seconds.unwrap_or(0);
    let template_labels = &rs.spec.template.metadata.labels;
    // One pass: a ReplicaSet's pods are visited on every change to any of them.
    let (mut labeled, mut ready, mut available) = (0usize, 0usize, 0usize);
    for pod in active {
        if template_labels
            .iter()
            .all(|(key, value)| pod.metadata.labels.get(key) == Some(value))
        {
            labeled += 1;
        }
        if pods::is_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready_seconds, now_ms) {
                available += 1;
            }
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: count(labeled),
        ready_replicas: count(ready),
        available_replicas: count(available),
        observed_generation: rs.metadata.generation,
        conditions: rs
            .status
            .as_ref()
            .map(|status| status.conditions.clone())
            .unwrap_or_default(),
    }
}

/// Milliseconds until the first ready-but-not-yet-available pod becomes available.
pub(crate) fn next_available_in_ms(
    active: &[&Pod],
    min_ready_seconds: i32,
    now_ms: i64,
) -> Option<i64> {
    active
        .iter()
        .filter_map(|pod| pods::available_at_ms(pod, min_ready_seconds))
        .filter(|at| *at > now_ms)
        .min()
        .map(|at| at - now_ms)
}

/// Ownership changes for one owner: orphans to adopt (patch in [`AdoptionPlan::owner_reference`]
/// as the controller reference) and owned objects to release (remove that reference).
#[derive(Clone, Debug, PartialEq)]
pub struct AdoptionPlan {
    pub owner_reference: OwnerReference,
    pub adopt: Vec<PodRef>,
    pub release: Vec<PodRef>,
}

/// Which pods of `rs`'s namespace it should adopt (active, matching the selector, with no
/// controller) and release (controlled by it but no longer matching). A ReplicaSet being deleted
/// or with an empty selector adopts nothing.
pub fn adopt_and_release(rs: &ReplicaSet, pods: &[Pod]) -> Result<AdoptionPlan, ControllerError> {
    let selector =
        flotilla_state::Selector::from_label_selector(&rs.spec.selector).map_err(|source| {
            ControllerError::InvalidSelector {
                owner: format!("replicaset {:?}", rs.metadata.name),
                source,
            }
        })?;
    let may_adopt = rs.metadata.deletion_timestamp.is_none() && !selector.is_empty();
    let uid = rs.metadata.uid.as_str();
    let in_namespace = pods
        .iter()
        .filter(|pod| pod.metadata.namespace == rs.metadata.namespace);
    let mut plan = AdoptionPlan {
        owner_reference: owner_reference(rs),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for pod in in_namespace {
        let matches = selector.matches(&pod.metadata.labels);
        let orphan = pods::controller_uid(&pod.metadata).is_none();
        if may_adopt && orphan && matches && pods::is_active(pod) {
            push_bounded(&mut plan.adopt, PodRef::of(pod));
        } else if pods::is_controlled_by(&pod.metadata, uid) && !matches {
            push_bounded(&mut plan.release, PodRef::of(pod));
        }
    }
    Ok(plan)
}

fn push_bounded(list: &mut Vec<PodRef>, pod: PodRef) {
    if list.len() < MAX_ADOPTIONS_PER_RECONCILE {
        list.push(pod);
    }
}
