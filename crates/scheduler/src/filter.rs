//! Filters: whether a pod may go on a node, and if not, the first filter that failed.
//!
//! Order (the first failure is the node's reason): node condition (ready, not cordoned), taints,
//! node selector and required node affinity, host ports, resources (pod slots, cpu, memory),
//! the pod's own anti-affinity, anti-affinity of pods already on the node.

use crate::compile::CompiledPod;
use crate::intern::Interner;
use crate::matcher::label_value;
use crate::memo::Memo;
use crate::model::Allocatable;
use crate::snapshot::{ClusterSnapshot, NodeState, NodeUsage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Failure {
    NotReady,
    Unschedulable,
    UntoleratedTaint { key: u32, value: u32 },
    NodeAffinity,
    HostPorts,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
    ExistingAntiAffinity,
    AntiAffinity,
}

pub(crate) fn check(
    pod: &CompiledPod,
    snapshot: &ClusterSnapshot,
    node: usize,
    memo: &mut Memo,
) -> Result<(), Failure> {
    let state = &snapshot.states[node];
    node_condition(pod, state)?;
    taints(pod, state)?;
    if !node_affinity(pod, state, &snapshot.interner) {
        return Err(Failure::NodeAffinity);
    }
    if pod.host_ports.iter().any(|p| state.host_ports.contains(p)) {
        return Err(Failure::HostPorts);
    }
    resources(pod, state.allocatable, state.usage)?;
    if blocked_by_own_anti_affinity(pod, snapshot, state, memo) {
        return Err(Failure::AntiAffinity);
    }
    if blocked_by_existing_anti_affinity(state, memo) {
        return Err(Failure::ExistingAntiAffinity);
    }
    Ok(())
}

fn node_condition(pod: &CompiledPod, node: &NodeState) -> Result<(), Failure> {
    if !node.ready && !pod.tolerates_not_ready {
        return Err(Failure::NotReady);
    }
    if node.unschedulable && !pod.tolerates_unschedulable {
        return Err(Failure::Unschedulable);
    }
    Ok(())
}

fn taints(pod: &CompiledPod, state: &NodeState) -> Result<(), Failure> {
    match state.hard_taints.iter().find(|t| !pod.tolerates(t)) {
        Some(t) => Err(Failure::UntoleratedTaint {
            key: t.key,
            value: t.value,
        }),
        None => Ok(()),
    }
}

fn node_affinity(pod: &CompiledPod, state: &NodeState, interner: &Interner) -> bool {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|&(k, v)| label_value(&state.labels, k) == Some(v));
    if !selector_ok {
        return false;
    }
    // An empty term matches no node; the terms are ORed.
    !pod.has_required_affinity
        || pod.required_terms.iter().any(|&span| {
            !span.is_empty() && pod.node_exprs.all_match(span, &state.labels, interner)
        })
}

fn resources(pod: &CompiledPod, allocatable: Allocatable, used: NodeUsage) -> Result<(), Failure> {
    if used.pods.saturating_add(1) > allocatable.pods {
        return Err(Failure::TooManyPods);
    }
    let free_cpu = allocatable
        .cpu_milli
        .saturating_sub(used.requested.cpu_milli);
    if pod.requests.cpu_milli > 0 && pod.requests.cpu_milli > free_cpu {
        return Err(Failure::InsufficientCpu);
    }
    let free_memory = allocatable
        .memory_bytes
        .saturating_sub(used.requested.memory_bytes);
    if pod.requests.memory_bytes > 0 && pod.requests.memory_bytes > free_memory {
        return Err(Failure::InsufficientMemory);
    }
    Ok(())
}

/// A pod already on the node has required anti-affinity that selects this pod.
fn blocked_by_existing_anti_affinity(state: &NodeState, memo: &Memo) -> bool {
    memo.any_selector_matches
        && state
            .anti_selectors
            .iter()
            .any(|&(id, _)| memo.selector_matches(id))
}

/// The pod's own required anti-affinity selects a pod already on the node.
fn blocked_by_own_anti_affinity(
    pod: &CompiledPod,
    snapshot: &ClusterSnapshot,
    state: &NodeState,
    memo: &mut Memo,
) -> bool {
    if pod.anti_terms.is_empty() {
        return false;
    }
    state.label_sets.iter().any(|&(id, _)| {
        memo.label_set_matches(id, || {
            let set = &snapshot.label_sets[id as usize];
            set.namespace == pod.namespace
                && pod.anti_terms.iter().any(|&span| {
                    pod.anti_exprs
                        .all_match(span, &set.labels, &snapshot.interner)
                })
        })
    })
}
