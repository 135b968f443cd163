//! Node liveness on the leader: heartbeats kept in memory (never on the Raft log), the Ready ↔
//! NotReady transitions written only when they happen, the taints a lost node gets, and the
//! eviction of its pods timed so that a pod never runs on two nodes at once.
//!
//! # Timing
//!
//! An agent heartbeats the leader every few hundred milliseconds. It renews its own *lease* on
//! each acknowledged heartbeat, measured by its monotonic clock from when it *sent* that
//! heartbeat, and stops all its pods once `lease_ms` pass without a renewal (self-fencing). The
//! leader measures silence from the last heartbeat it *received*, which is later than the send,
//! so when the leader has heard nothing for `lease_ms` the agent has already fenced — up to
//! clock-rate drift and the time the agent needs to notice and kill its containers, which
//! `eviction_margin_ms` covers. Hence: evict only after `lease_ms + eviction_margin_ms` of
//! silence.
//!
//! A new leader has no heartbeats: it measures silence from [`NodeTracker::became_leader`]
//! (whichever is later, that or the last heartbeat it saw), giving every node one full period.
//! This is safe only if an agent's lease is renewed by acknowledgements of a *current* leader:
//! the loop must acknowledge heartbeats only while its leadership is confirmed (e.g. within a
//! read-index round trip), otherwise a deposed leader could extend a lease that the new one
//! does not know about.
//!
//! Defaults ([`LifecycleConfig::default`]) aim at a replacement pod Running within 5 s of a node
//! dying, with heartbeats every 500 ms and the loop evaluating every [`RECOMMENDED_TICK_MS`]:
//! - `grace_ms = 1500`: three missed heartbeats mark the node NotReady, so the scheduler stops
//!   placing pods there within 1.5 s;
//! - `lease_ms = 2000`: the agent fences 2 s after its last acknowledged heartbeat;
//! - `eviction_margin_ms = 1000`: pods are deleted 3 s (+ one tick) after the last heartbeat,
//!   leaving ~1.75 s for the ReplicaSet, the scheduler and the new node's agent to start the
//!   replacement.
//!
//! Evictions stop entirely while no node at all has heartbeated within `grace_ms`: that
//! looks like the leader being cut off from the agents rather than every node dying, and
//! evicting everything would help nothing.

use std::borrow::Borrow;
use std::collections::HashMap;

use flotilla_state::objects::{
    ConditionStatus, Node, NodeCondition, Pod, Taint, TaintEffect, Time, Toleration,
    TolerationOperator,
};

use crate::error::ControllerError;
use crate::refs::PodRef;

/// NoExecute taint of a node the leader cannot hear.
pub const UNREACHABLE_TAINT_KEY: &str = "node.kubernetes.io/unreachable";
/// NoSchedule taint of a node that is not ready.
pub const NOT_READY_TAINT_KEY: &str = "node.kubernetes.io/not-ready";
/// Nodes whose heartbeats the tracker keeps; heartbeats from further unknown nodes are refused.
pub const MAX_TRACKED_NODES: usize = 10_000;
/// Pods one evaluation may evict, over all nodes; the rest follow on the next tick.
pub const MAX_EVICTIONS_PER_EVALUATION: usize = 500;
/// How often the loop should call [`NodeTracker::evaluate`].
pub const RECOMMENDED_TICK_MS: i64 = 250;

/// Timing of node liveness, all in milliseconds of the leader's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Silence after which a node is marked NotReady.
    pub grace_ms: i64,
    /// The agent's self-fencing lease.
    pub lease_ms: i64,
    /// Extra wait beyond the lease before pods are evicted.
    pub eviction_margin_ms: i64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            grace_ms: 1500,
            lease_ms: 2000,
            eviction_margin_ms: 1000,
        }
    }
}

impl LifecycleConfig {
    /// Silence after which pods are evicted: `lease_ms + eviction_margin_ms`.
    pub fn eviction_after_ms(&self) -> i64 {
        self.lease_ms.saturating_add(self.eviction_margin_ms)
    }

    /// All positive (the margin may be zero) and NotReady no later than eviction.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let invalid =
            |reason: &str| Err(ControllerError::InvalidLifecycleConfig(reason.to_owned()));
        if self.grace_ms <= 0 || self.lease_ms <= 0 || self.eviction_margin_ms < 0 {
            return invalid(
                "grace_ms and lease_ms must be positive, eviction_margin_ms not negative",
            );
        }
        if self.grace_ms > self.eviction_after_ms() {
            return invalid("grace_ms must not exceed lease_ms + eviction_margin_ms");
        }
        Ok(())
    }
}

/// What the loop writes for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Replace the `Ready` condition with `ready` (status Unknown) and `spec.taints` with
    /// `taints` (the node's own taints plus the unreachable/not-ready ones).
    MarkNotReady {
        node: String,
        ready: NodeCondition,
        taints: Vec<Taint>,
    },
    /// Replace the `Ready` condition with `ready` (status True) and `spec.taints` with `taints`
    /// (the lifecycle taints removed).
    MarkReady {
        node: String,
        ready: NodeCondition,
        taints: Vec<Taint>,
    },
    /// Force-delete (grace period 0) these pods of a node silent for longer than its agent's
    /// lease: they are known to be stopped.
    Evict { node: String, pods: Vec<PodRef> },
}

/// The leader's memory of heartbeats. Not persisted: a new leader starts empty.
#[derive(Clone, Debug, Default)]
pub struct NodeTracker {
    leader_since_ms: Option<i64>,
    last_heartbeat_ms: HashMap<String, i64>,
}

impl NodeTracker {
    pub fn new() -> NodeTracker {
        NodeTracker::default()
    }

    /// This peer became leader at `now_ms`: forget old heartbeats, give every node a grace.
    pub fn became_leader(&mut self, now_ms: i64) {
        self.leader_since_ms = Some(now_ms);
        self.last_heartbeat_ms.clear();
    }

    /// This peer is no longer leader: judge nothing until it is again.
    pub fn lost_leadership(&mut self) {
        self.leader_since_ms = None;
        self.last_heartbeat_ms.clear();
    }

    /// Records a heartbeat of `node`. False (ignored) when not leader, or when the table is full
    /// and `node` is new.
    pub fn heartbeat(&mut self, node: &str, now_ms: i64) -> bool {
        if self.leader_since_ms.is_none() {
            return false;
        }
        if let Some(last) = self.last_heartbeat_ms.get_mut(node) {
            *last = (*last).max(now_ms);
            return true;
        }
        if self.last_heartbeat_ms.len() >= MAX_TRACKED_NODES {
            return false;
        }
        self.last_heartbeat_ms.insert(node.to_owned(), now_ms);
        true
    }

    /// Forgets nodes for which `keep` is false (deleted nodes).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.last_heartbeat_ms.retain(|node, _| keep(node));
    }

    /// Since when this leader counts `node` as silent: its last heartbeat or the start of
    /// leadership, whichever is later. `None` when not leader.
    pub fn silent_since_ms(&self, node: &str) -> Option<i64> {
        let leader_since = self.leader_since_ms?;
        let last = self.last_heartbeat_ms.get(node).copied();
        Some(last.map_or(leader_since, |last| last.max(leader_since)))
    }

    /// Whether `node` has been silent for its agent's lease plus the margin: its pods may be
    /// evicted (those not tolerating the unreachable taint for longer). False when not leader.
    pub fn past_eviction_time(&self, node: &str, now_ms: i64, config: &LifecycleConfig) -> bool {
        self.silent_since_ms(node)
            .is_some_and(|since| now_ms >= since.saturating_add(config.eviction_after_ms()))
    }

    fn heard_within(&self, node: &str, window_ms: i64, now_ms: i64) -> bool {
        self.last_heartbeat_ms
            .get(node)
            .is_some_and(|last| now_ms - last < window_ms)
    }

    /// The transitions and evictions due at `now_ms`, in the order of `nodes`. Nothing while not
    /// leader. Re-evaluating after the writes land yields no repeat.
    /// `nodes` may be owned nodes or references to them (the leader passes its cache's).
    pub fn evaluate<N: Borrow<Node>>(
        &self,
        nodes: &[N],
        pods_by_node: &HashMap<String, Vec<Pod>>,
        now_ms: i64,
        config: &LifecycleConfig,
    ) -> Vec<NodeAction> {
        if self.leader_since_ms.is_none() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let any_heard = nodes
            .iter()
            .map(Borrow::borrow)
            .any(|node| self.heard_within(&node.metadata.name, config.grace_ms, now_ms));
        let mut eviction_budget = MAX_EVICTIONS_PER_EVALUATION;
        for node in nodes.iter().map(Borrow::borrow) {
            if let Some(action) = self.transition(node, now_ms, config) {
                actions.push(action);
            }
            if !any_heard || eviction_budget == 0 {
                continue;
            }
            let name = &node.metadata.name;
            let node_pods = pods_by_node.get(name).map_or(&[][..], Vec::as_slice);
            let mut due = self.evictions_due(node, node_pods, now_ms, config);
            due.truncate(eviction_budget);
            if !due.is_empty() {
                eviction_budget -= due.len();
                actions.push(NodeAction::Evict {
                    node: name.clone(),
                    pods: due,
                });
            }
        }
        actions
    }

    fn transition(&self, node: &Node, now_ms: i64, config: &LifecycleConfig) -> Option<NodeAction> {
        let name = &node.metadata.name;
        let silent_ms = now_ms - self.silent_since_ms(name)?;
        let marked_ready = node.ready() == ConditionStatus::True;
        let heard = self.heard_within(name, config.grace_ms, now_ms);
        if silent_ms >= config.grace_ms && (marked_ready || !has_lifecycle_taints(node)) {
            return Some(NodeAction::MarkNotReady {
                node: name.clone(),
                ready: self.ready_condition(node, false, now_ms),
                taints: with_lifecycle_taints(node, now_ms),
            });
        }
        if heard && (!marked_ready || has_any_lifecycle_taint(node)) {
            return Some(NodeAction::MarkReady {
                node: name.clone(),
                ready: self.ready_condition(node, true, now_ms),
                taints: without_lifecycle_taints(node),
            });
        }
        None
    }

    fn ready_condition(&self, node: &Node, ready: bool, now_ms: i64) -> NodeCondition {
        let (status, reason, message) = if ready {
            (
                ConditionStatus::True,
                "AgentReady",
                "flotilla agent is heartbeating",
            )
        } else {
            (
                ConditionStatus::Unknown,
                "NodeStatusUnknown",
                "flotilla agent stopped heartbeating",
            )
        };
        let last_heartbeat = self.last_heartbeat_ms.get(&node.metadata.name);
        NodeCondition {
            type_: "Ready".to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_heartbeat_time: last_heartbeat.map(|ms| Time::from_unix_millis(*ms)),
            last_transition_time: Some(Time::from_unix_millis(now_ms)),
        }
    }

    /// Pods of `node` whose eviction time has come: `lease + margin` after silence began, or
    /// later for pods tolerating the unreachable taint for a while; never for pods tolerating
    /// it forever. Pods already terminating are left to garbage collection.
    fn evictions_due(
        &self,
        node: &Node,
        node_pods: &[Pod],
        now_ms: i64,
        config: &LifecycleConfig,
    ) -> Vec<PodRef> {
        if !self.past_eviction_time(&node.metadata.name, now_ms, config) {
            return Vec::new();
        }
        let tainted_at = unreachable_taint_added_ms(node).unwrap_or(now_ms);
        node_pods
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter(|pod| match toleration_ms(&pod.spec.tolerations) {
                TolerationWindow::Evict => true,
                TolerationWindow::Forever => false,
                TolerationWindow::After(ms) => tainted_at.saturating_add(ms) <= now_ms,
            })
            .map(PodRef::of)
            .collect()
    }
}

/// How long a pod tolerates the unreachable NoExecute taint.
enum TolerationWindow {
    /// Not tolerated: evict as soon as the lease has run out.
    Evict,
    /// Tolerated for this many milliseconds after the taint was added.
    After(i64),
    Forever,
}

/// Kubernetes' rule: the shortest `tolerationSeconds` among matching tolerations (zero or less
/// means none), forever if none of them sets it.
fn toleration_ms(tolerations: &[Toleration]) -> TolerationWindow {
    let matching: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| tolerates(t, UNREACHABLE_TAINT_KEY, TaintEffect::NoExecute))
        .collect();
    if matching.is_empty() {
        return TolerationWindow::Evict;
    }
    let seconds = matching.iter().filter_map(|t| t.toleration_seconds).min();
    match seconds {
        None => TolerationWindow::Forever,
        Some(s) if s <= 0 => TolerationWindow::Evict,
        Some(s) => TolerationWindow::After(s.saturating_mul(1000)),
    }
}

/// Whether `toleration` tolerates a value-less taint `key:effect`.
pub fn tolerates(toleration: &Toleration, key: &str, effect: TaintEffect) -> bool {
    if toleration.effect.is_some_and(|e| e != effect) {
        return false;
    }
    match toleration.operator.unwrap_or(TolerationOperator::Equal) {
        TolerationOperator::Exists => toleration.key.is_empty() || toleration.key == key,
        TolerationOperator::Equal => toleration.key == key && toleration.value.is_empty(),
    }
}

fn is_lifecycle_taint(taint: &Taint) -> bool {
    taint.key == UNREACHABLE_TAINT_KEY || taint.key == NOT_READY_TAINT_KEY
}

fn lifecycle_taints(now_ms: i64) -> [Taint; 2] {
    [
        Taint {
            key: UNREACHABLE_TAINT_KEY.to_owned(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
            time_added: Some(Time::from_unix_millis(now_ms)),
        },
        Taint {
            key: NOT_READY_TAINT_KEY.to_owned(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
            time_added: None,
        },
    ]
}

fn has_lifecycle_taints(node: &Node) -> bool {
    lifecycle_taints(0).iter().all(|wanted| {
        node.spec
            .taints
            .iter()
            .any(|t| t.key == wanted.key && t.effect == wanted.effect)
    })
}

fn has_any_lifecycle_taint(node: &Node) -> bool {
    node.spec.taints.iter().any(is_lifecycle_taint)
}

/// The node's taints with exactly the lifecycle ones added; existing ones keep their time.
fn with_lifecycle_taints(node: &Node, now_ms: i64) -> Vec<Taint> {
    let mut taints = node.spec.taints.clone();
    for wanted in lifecycle_taints(now_ms) {
        let present = taints
            .iter()
            .any(|t| t.key == wanted.key && t.effect == wanted.effect);
        if !present {
            taints.push(wanted);
        }
    }
    taints
}

fn without_lifecycle_taints(node: &Node) -> Vec<Taint> {
    let taints = node.spec.taints.iter();
    taints.filter(|t| !is_lifecycle_taint(t)).cloned().collect()
}

fn unreachable_taint_added_ms(node: &Node) -> Option<i64> {
    node.spec
        .taints
        .iter()
        .find(|t| t.key == UNREACHABLE_TAINT_KEY && t.effect == TaintEffect::NoExecute)?
        .time_added
        .as_ref()
        .map(Time::unix_millis)
}

/// Bound pods grouped by `spec.nodeName`, the shape [`NodeTracker::evaluate`] takes.
pub fn pods_by_node(all_pods: &[Pod]) -> HashMap<String, Vec<Pod>> {
    let mut grouped: HashMap<String, Vec<Pod>> = HashMap::new();
    for pod in all_pods.iter().filter(|pod| !pod.spec.node_name.is_empty()) {
        grouped
            .entry(pod.spec.node_name.clone())
            .or_default()
            .push(pod.clone());
    }
    grouped
}
