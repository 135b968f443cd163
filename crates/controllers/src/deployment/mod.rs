//! Deployment reconcile, with Kubernetes semantics: the ReplicaSet whose template equals the
//! Deployment's (ignoring `pod-template-hash`) is the new one, created as `<name>-<hash>` when
//! missing; every other owned ReplicaSet is old. RollingUpdate scales the new one up within
//! `maxSurge` and the old ones down within `maxUnavailable`, counting *available* pods;
//! Recreate scales all old ones to zero, waits until their pods are gone, then scales the new
//! one up. A paused Deployment does not roll; a change of `spec.replicas` mid-rollout is spread
//! over the active ReplicaSets in proportion to their sizes. Old ReplicaSets beyond
//! `revisionHistoryLimit` are deleted once empty. Rollback is a template change back to an old
//! ReplicaSet's template: that ReplicaSet becomes the new one and takes the newest revision.
//!
//! One reconcile takes at most one step (scale up, or scale down, or create), like Kubernetes;
//! the loop reconciles again when pods change, and after `requeue_after_ms`.
//!
//! Simplifications, documented: proportional scaling gives each active ReplicaSet
//! `floor(add × size / total)` and hands the remainder out one by one, largest first (newest
//! first when adding, oldest first when removing), instead of Kubernetes' max-replicas
//! annotation arithmetic; there is no `progressDeadlineSeconds` field, so every Deployment has
//! the default deadline [`PROGRESS_DEADLINE_MS`]; hash collisions are resolved by trying
//! [`MAX_HASH_COLLISIONS`] alternative names rather than by a stored `collisionCount`.

mod cli;
mod rollout;
mod scaling;
mod status;
mod template;

use std::borrow::Borrow;
use std::collections::BTreeMap;

use flotilla_state::objects::{
    Deployment, DeploymentStatus, DeploymentStrategyType, Event, IntOrString, Pod, ReplicaSet,
};

pub use cli::{rollback_template, rollout_history, rollout_status, RevisionEntry, RolloutStatus};
pub use template::{
    deployment_owner_reference, equal_ignoring_hash, revision_of, template_hash, without_hash,
    CHANGE_CAUSE_ANNOTATION, DESIRED_REPLICAS_ANNOTATION, MAX_HASH_COLLISIONS,
    MAX_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION,
};

use crate::error::ControllerError;
use rollout::Rollout;
use status::StatusMode;

/// `source.component` of the events this controller emits.
pub const DEPLOYMENT_CONTROLLER_COMPONENT: &str = "deployment-controller";
/// Old ReplicaSets one reconcile may delete for the history limit.
pub const MAX_REPLICASET_DELETES_PER_RECONCILE: usize = 100;
/// How long a rollout may go without progress before `Progressing` turns `False`
/// (`ProgressDeadlineExceeded`): Kubernetes' default `progressDeadlineSeconds` of 600.
pub const PROGRESS_DEADLINE_MS: i64 = 600_000;
/// Default `maxSurge` and `maxUnavailable` when the strategy leaves them unset.
const DEFAULT_ROLLING_BOUND: &str = "25%";

/// What the loop does for one Deployment, in this order: create, scale, delete, then write the
/// revision annotation and the status (each only if it differs from the stored value).
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentPlan {
    /// The new ReplicaSet to create, complete with replicas and annotations.
    pub create_rs: Option<ReplicaSet>,
    /// Existing ReplicaSets whose replicas and/or annotations change (one entry per ReplicaSet).
    pub scale: Vec<ReplicaSetUpdate>,
    /// Old, empty ReplicaSets beyond the history limit, at most
    /// [`MAX_REPLICASET_DELETES_PER_RECONCILE`].
    pub delete_rs: Vec<String>,
    /// The Deployment's new `deployment.kubernetes.io/revision` annotation, if it changes.
    pub deployment_revision: Option<String>,
    pub status: DeploymentStatus,
    /// `ScalingReplicaSet` events about the Deployment, one per ReplicaSet scaled.
    pub events: Vec<Event>,
    /// Reconcile again after this long even without news (a pod becomes available, or the
    /// progress deadline passes).
    pub requeue_after_ms: Option<i64>,
}

impl DeploymentPlan {
    /// Nothing to create, scale or delete (the status may still change).
    pub fn is_steady(&self) -> bool {
        self.create_rs.is_none() && self.scale.is_empty() && self.delete_rs.is_empty()
    }
}

/// New `spec.replicas` and complete `metadata.annotations` for one existing ReplicaSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSetUpdate {
    pub name: String,
    pub replicas: i32,
    pub annotations: BTreeMap<String, String>,
}

/// `maxSurge` and `maxUnavailable` resolved against `spec.replicas`: surge rounds up,
/// unavailability rounds down, unavailability never exceeds the replicas, and if both resolve
/// to zero unavailability becomes 1 (as in Kubernetes). Recreate has both at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutBounds {
    pub max_surge: i32,
    pub max_unavailable: i32,
}

/// Resolves the rollout bounds of `d`; a bound that is not an integer or a percentage, a
/// negative bound, or both bounds literally zero is an error.
pub fn rollout_bounds(d: &Deployment) -> Result<RolloutBounds, ControllerError> {
    let strategy = d.spec.strategy.clone().unwrap_or_default();
    if strategy.type_ == Some(DeploymentStrategyType::Recreate) {
        return Ok(RolloutBounds {
            max_surge: 0,
            max_unavailable: 0,
        });
    }
    let rolling = strategy.rolling_update.unwrap_or_default();
    let default = || IntOrString::from(DEFAULT_ROLLING_BOUND);
    let surge = rolling.max_surge.unwrap_or_else(default);
    let unavailable = rolling.max_unavailable.unwrap_or_else(default);
    let name = &d.metadata.name;
    if surge == IntOrString::Int(0) && unavailable == IntOrString::Int(0) {
        return Err(ControllerError::ZeroRolloutBounds {
            deployment: name.clone(),
        });
    }
    let replicas = d.spec.replicas().max(0);
    let max_surge = resolve_bound(name, "maxSurge", &surge, replicas, true)?;
    let mut max_unavailable = resolve_bound(name, "maxUnavailable", &unavailable, replicas, false)?;
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Ok(RolloutBounds {
        max_surge,
        max_unavailable: max_unavailable.min(replicas),
    })
}

fn resolve_bound(
    deployment: &str,
    field: &'static str,
    value: &IntOrString,
    replicas: i32,
    round_up: bool,
) -> Result<i32, ControllerError> {
    let resolved = value.scaled_value(replicas, round_up).map_err(|source| {
        ControllerError::InvalidRolloutBound {
            deployment: deployment.to_owned(),
            field,
            source,
        }
    })?;
    if resolved < 0 {
        return Err(ControllerError::NegativeRolloutBound {
            deployment: deployment.to_owned(),
            field,
            value: resolved,
        });
    }
    Ok(resolved)
}

/// The plan for `d`, given the ReplicaSets it controls and their pods (objects controlled by
/// something else are ignored, so supersets are fine).
///
/// `pods` may be owned pods or references to them (the leader passes its cache's, uncopied).
pub fn reconcile_deployment<P: Borrow<Pod>>(
    d: &Deployment,
    rss: &[ReplicaSet],
    pods: &[P],
    now_ms: i64,
) -> Result<DeploymentPlan, ControllerError> {
    let bounds = rollout_bounds(d)?;
    let mut rollout = Rollout::observe(d, rss, pods, bounds, now_ms);
    let mode = if d.metadata.deletion_timestamp.is_some() {
        StatusMode::StatusOnly
    } else {
        rollout.sync_new_replicaset_annotations();
        if d.spec.paused == Some(true) || rollout.is_scaling_event() {
            rollout.scale_proportionally();
            StatusMode::Sync
        } else if is_recreate(d) {
            rollout.recreate()?;
            StatusMode::Rollout
        } else {
            rollout.rolling()?;
            StatusMode::Rollout
        }
    };
    let status = status::deployment_status(&rollout, mode);
    let complete = status::is_complete(d, &status);
    let paused = d.spec.paused == Some(true);
    if mode != StatusMode::StatusOnly && (paused || (complete && !rollout.scaled)) {
        rollout.cleanup_history();
    }
    Ok(rollout.into_plan(status))
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_) == Some(DeploymentStrategyType::Recreate)
}
