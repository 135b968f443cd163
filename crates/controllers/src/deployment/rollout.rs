//! The working model of one Deployment reconcile: its ReplicaSets with their planned replicas
//! and annotations and the counts of their pods, and the steps that change them — creating the
//! new ReplicaSet, rolling, recreating, proportional scaling and history cleanup.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use flotilla_state::defaults::DEFAULT_REVISION_HISTORY_LIMIT;
use flotilla_state::objects::{Deployment, DeploymentStatus, EventType, Kind, Pod, ReplicaSet};

use super::template::{self, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION};
use super::{
    DeploymentPlan, ReplicaSetUpdate, RolloutBounds, DEPLOYMENT_CONTROLLER_COMPONENT,
    MAX_REPLICASET_DELETES_PER_RECONCILE, REVISION_ANNOTATION,
};
use crate::error::ControllerError;
use crate::events::{self, Report};
use crate::pods;

/// Counts of one ReplicaSet's pods.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PodCounts {
    /// Not terminating and not finished.
    pub active: i32,
    pub ready: i32,
    /// Ready for at least `minReadySeconds`.
    pub available: i32,
    /// Not finished, terminating or not: Recreate waits for this to reach zero.
    pub running: i32,
    /// Every pod, finished ones included: a ReplicaSet is deleted only at zero.
    pub total: i32,
    /// When the next ready pod becomes available.
    pub next_available_at_ms: Option<i64>,
}

impl PodCounts {
    fn of<P: Borrow<Pod>>(
        rs: &ReplicaSet,
        all_pods: &[P],
        min_ready_seconds: i32,
        now_ms: i64,
    ) -> PodCounts {
        let mut counts = PodCounts::default();
        let owned = all_pods
            .iter()
            .map(Borrow::borrow)
            .filter(|pod| pods::is_controlled_by(&pod.metadata, &rs.metadata.uid));
        for pod in owned {
            counts.total += 1;
            counts.running += i32::from(pods::may_be_running(pod));
            if !pods::is_active(pod) {
                continue;
            }
            counts.active += 1;
            counts.ready += i32::from(pods::is_ready(pod));
            counts.available += i32::from(pods::is_available(pod, min_ready_seconds, now_ms));
            let at = pods::available_at_ms(pod, min_ready_seconds).filter(|at| *at > now_ms);
            counts.next_available_at_ms = counts.next_available_at_ms.min(at).or(at);
        }
        counts
    }
}

/// One ReplicaSet as observed, with what this reconcile plans for it.
#[derive(Clone, Debug)]
pub(crate) struct RsState {
    pub rs: ReplicaSet,
    pub replicas: i32,
    pub annotations: BTreeMap<String, String>,
    /// Planned for creation; not in the store yet.
    pub created: bool,
    pub pods: PodCounts,
}

impl RsState {
    /// Available pods, counted only up to the planned replicas: surplus pods are about to go.
    pub fn available(&self) -> i32 {
        self.pods.available.min(self.replicas)
    }

    pub fn revision(&self) -> i64 {
        self.annotations
            .get(REVISION_ANNOTATION)
            .and_then(|text| text.parse().ok())
            .unwrap_or(0)
    }

    fn created_ms(&self) -> i64 {
        let created = self.rs.metadata.creation_timestamp.as_ref();
        created.map_or(0, |t| t.unix_millis())
    }

    pub(super) fn desired_annotation(&self) -> Option<i32> {
        self.annotations
            .get(DESIRED_REPLICAS_ANNOTATION)?
            .parse()
            .ok()
    }
}

/// Which ReplicaSet a step addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    New,
    Old(usize),
}

pub(crate) struct Rollout<'a> {
    pub d: &'a Deployment,
    pub now_ms: i64,
    pub bounds: RolloutBounds,
    pub new: Option<RsState>,
    /// Oldest first (creation time, then name).
    pub old: Vec<RsState>,
    /// Every owned ReplicaSet's name, to avoid name collisions.
    names_taken: Vec<String>,
    events: Vec<flotilla_state::objects::Event>,
    delete_rs: Vec<String>,
    /// Some ReplicaSet was created or changed size in this reconcile.
    pub scaled: bool,
}

impl<'a> Rollout<'a> {
    pub fn observe<P: Borrow<Pod>>(
        d: &'a Deployment,
        rss: &[ReplicaSet],
        all_pods: &[P],
        bounds: RolloutBounds,
        now_ms: i64,
    ) -> Rollout<'a> {
        let min_ready_seconds = d.spec.min_ready_seconds.unwrap_or(0);
        let mut states: Vec<RsState> = rss
            .iter()
            .filter(|rs| pods::is_controlled_by(&rs.metadata, &d.metadata.uid))
            .map(|rs| RsState {
                rs: rs.clone(),
                replicas: rs.spec.replicas(),
                annotations: rs.metadata.annotations.clone(),
                created: false,
                pods: PodCounts::of(rs, all_pods, min_ready_seconds, now_ms),
            })
            .collect();
        states.sort_by(|a, b| {
            (a.created_ms(), &a.rs.metadata.name).cmp(&(b.created_ms(), &b.rs.metadata.name))
        });
        let names_taken = states
            .iter()
            .map(|state| state.rs.metadata.name.clone())
            .collect();
        let new_index = states.iter().position(|state| {
            template::equal_ignoring_hash(&state.rs.spec.template, &d.spec.template)
        });
        let new = new_index.map(|index| states.remove(index));
        Rollout {
            d,
            now_ms,
            bounds,
            new,
            old: states,
            names_taken,
            events: Vec::new(),
            delete_rs: Vec::new(),
            scaled: false,
        }
    }

    pub(super) fn desired(&self) -> i32 {
        self.d.spec.replicas().max(0)
    }

    fn get_mut(&mut self, target: Target) -> &mut RsState {
        match target {
            Target::New => self
                .new
                .as_mut()
                .expect("a step addressed a missing new ReplicaSet"),
            Target::Old(index) => &mut self.old[index],
        }
    }

    fn max_old_revision(&self) -> i64 {
        self.old.iter().map(RsState::revision).max().unwrap_or(0)
    }

    fn replica_annotations(&self) -> [(&'static str, String); 2] {
        let desired = self.desired();
        [
            (DESIRED_REPLICAS_ANNOTATION, desired.to_string()),
            (
                MAX_REPLICAS_ANNOTATION,
                desired.saturating_add(self.bounds.max_surge).to_string(),
            ),
        ]
    }

    /// Sets a ReplicaSet's planned size and refreshes its replica annotations; records a
    /// `ScalingReplicaSet` event when the size changes.
    pub(super) fn scale(&mut self, target: Target, to: i32) {
        let annotations = self.replica_annotations();
        let state = self.get_mut(target);
        let from = state.replicas;
        state.replicas = to;
        for (key, value) in annotations {
            state.annotations.insert(key.to_owned(), value);
        }
        let name = state.rs.metadata.name.clone();
        if from != to {
            let direction = if to > from { "up" } else { "down" };
            self.scaled = true;
            self.record(&format!(
                "Scaled {direction} replica set {name} from {from} to {to}"
            ));
        }
    }

    fn record(&mut self, message: &str) {
        let involved = events::involved_object(Kind::Deployment, &self.d.metadata);
        let report = Report {
            type_: EventType::Normal,
            reason: "ScalingReplicaSet",
            message,
        };
        self.events.push(events::new_event(
            involved,
            report,
            DEPLOYMENT_CONTROLLER_COMPONENT,
            self.now_ms,
        ));
    }

    /// Copies the Deployment's annotations onto the existing new ReplicaSet and gives it the
    /// newest revision if an old one is newer (rollback).
    pub fn sync_new_replicaset_annotations(&mut self) {
        let next_revision = self.max_old_revision() + 1;
        let d = self.d;
        let Some(new) = self.new.as_mut() else {
            return;
        };
        new.annotations = template::with_copied_annotations(d, &new.annotations);
        if new.revision() < next_revision {
            new.annotations
                .insert(REVISION_ANNOTATION.to_owned(), next_revision.to_string());
        }
    }

    /// Plans the new ReplicaSet if there is none, with `replicas` pods.
    fn ensure_new_replicaset(&mut self, replicas: i32) -> Result<(), ControllerError> {
        if self.new.is_some() {
            return Ok(());
        }
        let Some((name, hash)) = template::new_replicaset_name(self.d, &self.names_taken)? else {
            return Err(ControllerError::NoReplicaSetName {
                deployment: self.d.metadata.name.clone(),
                attempts: template::MAX_HASH_COLLISIONS,
            });
        };
        let rs = template::new_replicaset(self.d, name.clone(), &hash);
        let mut annotations = template::with_copied_annotations(self.d, &BTreeMap::new());
        let revision = self.max_old_revision() + 1;
        annotations.insert(REVISION_ANNOTATION.to_owned(), revision.to_string());
        for (key, value) in self.replica_annotations() {
            annotations.insert(key.to_owned(), value);
        }
        self.new = Some(RsState {
            rs,
            replicas,
            annotations,
            created: true,
            pods: PodCounts::default(),
        });
        self.scaled = true;
        if replicas > 0 {
            self.record(&format!(
                "Scaled up replica set {name} from 0 to {replicas}"
            ));
        }
        Ok(())
    }

    fn total_replicas(&self) -> i32 {
        self.old.iter().map(|rs| rs.replicas).sum::<i32>()
            + self.new.as_ref().map_or(0, |rs| rs.replicas)
    }

    /// What the new ReplicaSet may grow to under `maxSurge` (Kubernetes' `NewRSNewReplicas`).
    fn surge_allowance(&self) -> i32 {
        let current_new = self.new.as_ref().map_or(0, |rs| rs.replicas);
        let max_total = self.desired() + self.bounds.max_surge;
        let total = self.total_replicas();
        if total >= max_total {
            return current_new;
        }
        let grow = (max_total - total).min(self.desired() - current_new).max(0);
        current_new + grow
    }

    /// RollingUpdate: create the new ReplicaSet, then either scale it up or scale old ones
    /// down, whichever the bounds allow first.
    pub fn rolling(&mut self) -> Result<(), ControllerError> {
        if self.new.is_none() {
            let replicas = self.surge_allowance();
            self.ensure_new_replicaset(replicas)?;
        }
        if self.reconcile_new_replicaset() {
            return Ok(());
        }
        self.reconcile_old_replicasets();
        Ok(())
    }

    fn reconcile_new_replicaset(&mut self) -> bool {
        let Some(new) = &self.new else {
            return false;
        };
        let current = new.replicas;
        let target = if current > self.desired() {
            self.desired()
        } else {
            self.surge_allowance()
        };
        if target == current {
            return false;
        }
        self.scale(Target::New, target);
        true
    }

    /// Scales old ReplicaSets down as far as `maxUnavailable` allows: first their unavailable
    /// pods, then available ones down to `replicas - maxUnavailable` available in total.
    fn reconcile_old_replicasets(&mut self) -> bool {
        let old_total: i32 = self.old.iter().map(|rs| rs.replicas).sum();
        if old_total == 0 {
            return false;
        }
        let min_available = self.desired() - self.bounds.max_unavailable;
        let new_unavailable = self
            .new
            .as_ref()
            .map_or(0, |rs| rs.replicas - rs.available());
        let max_scaled_down = self.total_replicas() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.scale_down_unhealthy(max_scaled_down);
        let scaled = self.scale_down_available(min_available);
        cleaned + scaled > 0
    }

    fn scale_down_unhealthy(&mut self, max_count: i32) -> i32 {
        let mut total = 0;
        for index in 0..self.old.len() {
            if total >= max_count {
                break;
            }
            let rs = &self.old[index];
            let unhealthy = rs.replicas - rs.available();
            if rs.replicas == 0 || unhealthy == 0 {
                continue;
            }
            let count = unhealthy.min(max_count - total);
            let to = rs.replicas - count;
            self.scale(Target::Old(index), to);
            total += count;
        }
        total
    }

    fn scale_down_available(&mut self, min_available: i32) -> i32 {
        let available: i32 = self.old.iter().map(RsState::available).sum::<i32>()
            + self.new.as_ref().map_or(0, RsState::available);
        if available <= min_available {
            return 0;
        }
        let max_count = available - min_available;
        let mut total = 0;
        for index in 0..self.old.len() {
            if total >= max_count {
                break;
            }
            let replicas = self.old[index].replicas;
            if replicas == 0 {
                continue;
            }
            let count = replicas.min(max_count - total);
            self.scale(Target::Old(index), replicas - count);
            total += count;
        }
        total
    }

    /// Recreate: all old ReplicaSets to zero; once none of their pods may still run, the new
    /// ReplicaSet at full size.
    pub fn recreate(&mut self) -> Result<(), ControllerError> {
        let active: Vec<usize> = (0..self.old.len())
            .filter(|&index| self.old[index].replicas > 0)
            .collect();
        for &index in &active {
            self.scale(Target::Old(index), 0);
        }
        let old_running = self.old.iter().any(|rs| rs.pods.running > 0);
        if !active.is_empty() || old_running {
            return Ok(());
        }
        let desired = self.desired();
        self.ensure_new_replicaset(desired)?;
        if self.new.as_ref().is_some_and(|rs| rs.replicas != desired) {
            self.scale(Target::New, desired);
        }
        Ok(())
    }

    /// Deletes the oldest old ReplicaSets beyond `revisionHistoryLimit` that have no replicas
    /// and no pods left.
    pub fn cleanup_history(&mut self) {
        let limit = self
            .d
            .spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT);
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut cleanable: Vec<&RsState> = self
            .old
            .iter()
            .filter(|rs| rs.rs.metadata.deletion_timestamp.is_none())
            .collect();
        if cleanable.len() <= limit {
            return;
        }
        cleanable.sort_by_key(|rs| (rs.revision(), rs.created_ms()));
        let excess = cleanable.len() - limit;
        let deletable = cleanable[..excess]
            .iter()
            .filter(|rs| rs.replicas == 0 && rs.rs.spec.replicas() == 0 && rs.pods.total == 0)
            .map(|rs| rs.rs.metadata.name.clone())
            .take(MAX_REPLICASET_DELETES_PER_RECONCILE)
            .collect();
        self.delete_rs = deletable;
    }

    /// Every ReplicaSet with its planned replicas, for status: new first.
    pub fn all(&self) -> impl Iterator<Item = &RsState> {
        self.new.iter().chain(&self.old)
    }

    pub fn into_plan(self, status: DeploymentStatus) -> DeploymentPlan {
        let mut plan = DeploymentPlan {
            create_rs: None,
            scale: Vec::new(),
            delete_rs: self.delete_rs,
            deployment_revision: None,
            requeue_after_ms: super::status::requeue_after_ms(self.d, &status, self.now_ms),
            status,
            events: self.events,
        };
        let pod_requeue = self
            .new
            .iter()
            .chain(&self.old)
            .filter_map(|rs| rs.pods.next_available_at_ms)
            .min()
            .map(|at| at - self.now_ms);
        plan.requeue_after_ms = min_some(plan.requeue_after_ms, pod_requeue);
        if let Some(new) = &self.new {
            let revision = new.annotations.get(REVISION_ANNOTATION);
            if revision.is_some()
                && revision != self.d.metadata.annotations.get(REVISION_ANNOTATION)
            {
                plan.deployment_revision = revision.cloned();
            }
        }
        for state in self.new.into_iter().chain(self.old) {
            let mut rs = state.rs;
            if state.created {
                rs.spec.replicas = Some(state.replicas);
                rs.metadata.annotations = state.annotations;
                plan.create_rs = Some(rs);
            } else if state.replicas != rs.spec.replicas()
                || state.annotations != rs.metadata.annotations
            {
                plan.scale.push(ReplicaSetUpdate {
                    name: rs.metadata.name,
                    replicas: state.replicas,
                    annotations: state.annotations,
                });
            }
        }
        plan
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
