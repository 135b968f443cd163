//! A tiny in-memory cluster that runs the deployment and ReplicaSet plans the way the loops
//! will: plans are applied to objects, ReplicaSets create pods (Running, not ready) and mark
//! deleted pods terminating, and the test decides when pods become ready and when terminating
//! pods are gone. Rolling steps assert the rollout invariants on every plan.

use flotilla_controllers::deployment::{
    equal_ignoring_hash, reconcile_deployment, rollout_bounds, rollout_status, DeploymentPlan,
};
use flotilla_controllers::pods;
use flotilla_controllers::replicaset::reconcile_replicaset;
use flotilla_state::objects::{
    Deployment, DeploymentStrategyType, Event, Pod, PodPhase, PodStatus, ReplicaSet,
};

use crate::fixtures::{at, set_ready, set_ready_state, T0};

/// Reconciles one rollout may take before a test calls it stuck.
pub const MAX_SIM_STEPS: usize = 200;

pub struct Sim {
    pub d: Deployment,
    pub rss: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub now_ms: i64,
    pub events: Vec<Event>,
    next_id: u64,
}

impl Sim {
    pub fn new(d: Deployment) -> Sim {
        Sim {
            d,
            rss: Vec::new(),
            pods: Vec::new(),
            now_ms: T0,
            events: Vec::new(),
            next_id: 0,
        }
    }

    /// A sim whose first rollout is done: every pod ready and available.
    pub fn rolled_out(d: Deployment) -> Sim {
        let mut sim = Sim::new(d);
        sim.roll_out();
        sim
    }

    /// Changes the template's image (a new generation), as `kubectl set image` would.
    pub fn set_image(&mut self, image: &str) {
        self.d.spec.template.spec.containers[0].image = image.to_owned();
        self.d.metadata.generation += 1;
    }

    fn is_rolling(&self) -> bool {
        let strategy = self.d.spec.strategy.as_ref().and_then(|s| s.type_);
        strategy != Some(DeploymentStrategyType::Recreate)
    }

    /// One deployment reconcile, applied; the ReplicaSets then reconcile. For RollingUpdate,
    /// asserts (in [`Sim::step_deployment_only`]) that the plan keeps the total within
    /// `replicas + maxSurge` and the availability the ReplicaSets converge to at or above
    /// `min(before, replicas - maxUnavailable)`, and here that the pods really are that
    /// available once the ReplicaSets have acted.
    pub fn step(&mut self) -> DeploymentPlan {
        let plan = self.step_deployment_only();
        let committed = self.committed_available();
        self.reconcile_replicasets();
        let available = self.available_pods();
        assert_eq!(
            available, committed,
            "ReplicaSets delete unavailable pods first: {plan:#?}"
        );
        plan
    }

    /// A deployment reconcile alone, as when the ReplicaSet loop lags behind. Asserts the same
    /// bounds on what the ReplicaSets will converge to: each keeps `min(available, replicas)`
    /// available pods, because it deletes unavailable pods first.
    pub fn step_deployment_only(&mut self) -> DeploymentPlan {
        let bounds = rollout_bounds(&self.d).expect("valid bounds");
        let (committed_before, total_before) = (self.committed_available(), self.total_replicas());
        let plan = self.reconcile_deployment();
        if self.is_rolling() {
            let desired = self.d.spec.replicas();
            let max_total = desired + bounds.max_surge;
            let total = self.total_replicas();
            assert!(
                total <= max_total.max(total_before),
                "total {total} > {max_total}: {plan:#?}"
            );
            let floor = committed_before.min(desired - bounds.max_unavailable);
            let committed = self.committed_available();
            assert!(
                committed >= floor,
                "committed {committed} < {floor}: {plan:#?}"
            );
        }
        plan
    }

    /// Available pods once every ReplicaSet has converged to its replicas.
    pub fn committed_available(&self) -> i32 {
        let min_ready = self.d.spec.min_ready_seconds.unwrap_or(0);
        let available_of = |rs: &ReplicaSet| {
            let owned = self
                .pods
                .iter()
                .filter(|p| pods::is_controlled_by(&p.metadata, &rs.metadata.uid));
            let active = owned.filter(|p| pods::is_active(p));
            active
                .filter(|p| pods::is_available(p, min_ready, self.now_ms))
                .count() as i32
        };
        self.rss
            .iter()
            .map(|rs| available_of(rs).min(rs.spec.replicas()))
            .sum()
    }

    pub fn reconcile_deployment(&mut self) -> DeploymentPlan {
        let plan = reconcile_deployment(&self.d, &self.rss, &self.pods, self.now_ms)
            .expect("reconcile succeeds");
        self.apply(&plan);
        plan
    }

    fn apply(&mut self, plan: &DeploymentPlan) {
        if let Some(rs) = &plan.create_rs {
            let mut rs = rs.clone();
            rs.metadata.uid = format!("uid-{}", rs.metadata.name);
            rs.metadata.creation_timestamp = Some(at(self.now_ms));
            rs.metadata.generation = 1;
            self.rss.push(rs);
        }
        for update in &plan.scale {
            let rs = self.rs_mut(&update.name);
            rs.spec.replicas = Some(update.replicas);
            rs.metadata.annotations = update.annotations.clone();
        }
        for name in &plan.delete_rs {
            let uid = self.rs_mut(name).metadata.uid.clone();
            let owned = self
                .pods
                .iter()
                .any(|p| pods::is_controlled_by(&p.metadata, &uid));
            assert!(!owned, "deleted ReplicaSet {name} still has pods");
            self.rss.retain(|rs| &rs.metadata.name != name);
        }
        if let Some(revision) = &plan.deployment_revision {
            let key = flotilla_controllers::deployment::REVISION_ANNOTATION.to_owned();
            self.d.metadata.annotations.insert(key, revision.clone());
        }
        self.d.status = Some(plan.status.clone());
        self.events.extend(plan.events.iter().cloned());
    }

    fn rs_mut(&mut self, name: &str) -> &mut ReplicaSet {
        let found = self.rss.iter_mut().find(|rs| rs.metadata.name == name);
        found.unwrap_or_else(|| panic!("no ReplicaSet {name}"))
    }

    /// Every ReplicaSet reconciles once; creations get names and start Running, not ready.
    pub fn reconcile_replicasets(&mut self) {
        for index in 0..self.rss.len() {
            let plan = reconcile_replicaset(&self.rss[index], &self.pods, self.now_ms);
            for mut pod in plan.create {
                self.next_id += 1;
                pod.metadata.name = format!("{}{}", pod.metadata.generate_name, self.next_id);
                pod.metadata.uid = format!("uid-pod-{}", self.next_id);
                pod.metadata.creation_timestamp = Some(at(self.now_ms));
                pod.spec.node_name = "node-1".to_owned();
                pod.status = Some(PodStatus {
                    phase: Some(PodPhase::Running),
                    ..PodStatus::default()
                });
                set_ready_state(&mut pod, None);
                self.pods.push(pod);
            }
            for doomed in plan.delete {
                let pod = self.pods.iter_mut().find(|p| p.metadata.uid == doomed.uid);
                let pod = pod.expect("a deleted pod exists");
                pod.metadata.deletion_timestamp = Some(at(self.now_ms));
            }
            self.rss[index].status = Some(plan.status);
        }
    }

    pub fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
    }

    pub fn finish_terminations(&mut self) {
        self.pods
            .retain(|p| p.metadata.deletion_timestamp.is_none());
    }

    /// Every active pod that is not ready becomes ready now.
    pub fn ready_all(&mut self) {
        let now = self.now_ms;
        for pod in self
            .pods
            .iter_mut()
            .filter(|p| pods::is_active(p) && !pods::is_ready(p))
        {
            set_ready(pod, now);
        }
    }

    pub fn available_pods(&self) -> i32 {
        let min_ready = self.d.spec.min_ready_seconds.unwrap_or(0);
        let available = self.pods.iter().filter(|p| pods::is_active(p));
        available
            .filter(|p| pods::is_available(p, min_ready, self.now_ms))
            .count() as i32
    }

    pub fn total_replicas(&self) -> i32 {
        self.rss.iter().map(|rs| rs.spec.replicas()).sum()
    }

    /// Replicas of the ReplicaSet matching the current template, and of all others.
    pub fn new_and_old(&self) -> (i32, i32) {
        let (new, old): (Vec<&ReplicaSet>, Vec<&ReplicaSet>) = self
            .rss
            .iter()
            .partition(|rs| equal_ignoring_hash(&rs.spec.template, &self.d.spec.template));
        let sum = |list: Vec<&ReplicaSet>| list.iter().map(|rs| rs.spec.replicas()).sum();
        (sum(new), sum(old))
    }

    pub fn replicaset_named(&self, name: &str) -> Option<&ReplicaSet> {
        self.rss.iter().find(|rs| rs.metadata.name == name)
    }

    /// Steps until the rollout is done, making pods ready (and terminating pods disappear) a
    /// second later whenever the plans stall. Returns `(new, old)` replicas after each plan that
    /// changed something, and asserts the finished state is a fixpoint.
    pub fn roll_out(&mut self) -> Vec<(i32, i32)> {
        let mut trace = Vec::new();
        for _ in 0..MAX_SIM_STEPS {
            let plan = self.step();
            if !plan.is_steady() {
                trace.push(self.new_and_old());
                continue;
            }
            if rollout_status(&self.d).expect("no deadline").done {
                self.assert_fixpoint();
                return trace;
            }
            self.advance(1000);
            self.finish_terminations();
            self.ready_all();
        }
        panic!("rollout still running after {MAX_SIM_STEPS} steps: {trace:?}");
    }

    /// Re-deriving a plan from a finished rollout changes nothing, status included.
    pub fn assert_fixpoint(&mut self) {
        let before = self.d.status.clone();
        let plan = reconcile_deployment(&self.d, &self.rss, &self.pods, self.now_ms).expect("ok");
        assert!(plan.is_steady(), "{plan:#?}");
        assert_eq!(Some(plan.status), before);
        assert_eq!(plan.deployment_revision, None);
    }
}
