//! Shared test helpers: small nodes and pods, and `check*` functions that place a pod and
//! compare the outcome (a node name, or the exact unschedulable message) with what is expected.
#![allow(dead_code)] // Each test binary uses its own subset of the helpers.

use flotilla_scheduler::{
    schedule_batch, schedule_one, Allocatable, ClusterSnapshot, Decision, NodeInfo, PodInfo,
    SchedulerConfig, ScoreWeights,
};

pub const GIB: i64 = 1024 * 1024 * 1024;
pub const MIB: i64 = 1024 * 1024;

/// A ready node with 4 cpus, 16 GiB and 110 pod slots.
pub fn node(name: &str) -> NodeInfo {
    NodeInfo::new(name, Allocatable::new(4_000, 16 * GIB, 110))
}

pub fn sized_node(name: &str, cpu_milli: i64, memory_bytes: i64) -> NodeInfo {
    NodeInfo::new(name, Allocatable::new(cpu_milli, memory_bytes, 110))
}

/// A pod in namespace `default` asking for 100m cpu and 128 MiB.
pub fn pod(name: &str) -> PodInfo {
    PodInfo::new("default", name).with_requests(100, 128 * MIB)
}

/// Config with only the named plugin weights; the others are off.
pub fn only(weights: ScoreWeights) -> SchedulerConfig {
    SchedulerConfig {
        weights,
        ..SchedulerConfig::default()
    }
}

pub const NO_WEIGHTS: ScoreWeights = ScoreWeights {
    resources: 0,
    balanced_allocation: 0,
    node_affinity: 0,
    taint_toleration: 0,
    spreading: 0,
};

/// The node name for a bind, the message for an unschedulable pod.
pub fn outcome(decision: &Decision) -> String {
    match decision {
        Decision::Bind { node } => node.clone(),
        Decision::Unschedulable { reasons } => reasons.to_string(),
    }
}

pub fn snapshot(nodes: Vec<NodeInfo>, bound: &[(&str, PodInfo)]) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::new(nodes).expect("valid nodes");
    for (node, pod) in bound {
        snapshot.add_bound_pod(node, pod).expect("known node");
    }
    snapshot
}

pub fn check(nodes: Vec<NodeInfo>, pod: PodInfo, expected: &str) {
    check_full(nodes, &[], &SchedulerConfig::default(), pod, expected);
}

pub fn check_bound(nodes: Vec<NodeInfo>, bound: &[(&str, PodInfo)], pod: PodInfo, expected: &str) {
    check_full(nodes, bound, &SchedulerConfig::default(), pod, expected);
}

/// Places `pod` with `schedule_one`, and also as a batch of one: both must agree.
pub fn check_full(
    nodes: Vec<NodeInfo>,
    bound: &[(&str, PodInfo)],
    config: &SchedulerConfig,
    pod: PodInfo,
    expected: &str,
) {
    let mut snapshot = snapshot(nodes, bound);
    let one = outcome(&schedule_one(&pod, &snapshot, config));
    assert_eq!(one, expected, "schedule_one of {}", pod.id());
    let batch = schedule_batch(std::slice::from_ref(&pod), &mut snapshot, config);
    assert_eq!(
        outcome(&batch[0]),
        expected,
        "schedule_batch of {}",
        pod.id()
    );
}

/// Places `pods` as one batch and compares every outcome.
pub fn check_batch(
    nodes: Vec<NodeInfo>,
    config: &SchedulerConfig,
    pods: &[PodInfo],
    expected: &[&str],
) {
    let mut snapshot = snapshot(nodes, &[]);
    let decisions = schedule_batch(pods, &mut snapshot, config);
    let outcomes: Vec<String> = decisions.iter().map(outcome).collect();
    assert_eq!(outcomes, expected);
}

/// Places `pods` as one batch and returns the outcomes.
pub fn batch_outcomes(
    nodes: Vec<NodeInfo>,
    config: &SchedulerConfig,
    pods: &[PodInfo],
) -> Vec<String> {
    let mut snapshot = snapshot(nodes, &[]);
    schedule_batch(pods, &mut snapshot, config)
        .iter()
        .map(outcome)
        .collect()
}
