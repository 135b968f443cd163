//! Scores of feasible nodes (each plugin 0..=100, then a weighted sum) and the choice of one.
//!
//! Plugins: resources (least- or most-allocated over cpu and memory), balanced allocation (cpu
//! and memory used in similar proportions, so neither is stranded), preferred node affinity
//! (matching weights, normalised to the best candidate), PreferNoSchedule taints (fewer
//! untolerated is better, normalised), and spreading of one owner's replicas (fewer on the node
//! and in its zone is better; zone counts weigh 2/3 as in kube-scheduler's SelectorSpread).
//! Ties go to the highest hash of (pod id, node name), so equal nodes are chosen evenly and
//! deterministically.

use crate::compile::CompiledPod;
use crate::config::{ScoreWeights, ScoringStrategy};
use crate::intern::mix;
use crate::memo::Memo;
use crate::snapshot::ClusterSnapshot;

const MAX_SCORE: i64 = 100;

/// Raw per-node inputs of the scores, gathered while scanning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) node: u32,
    resources: i64,
    balance: i64,
    preferred_weight: i64,
    untolerated_soft_taints: i64,
    owner_pods_on_node: i64,
    /// Pods of the owner in the node's zone; `None` when the node has no zone.
    owner_pods_in_zone: Option<i64>,
}

pub(crate) fn candidate(
    pod: &CompiledPod,
    snapshot: &ClusterSnapshot,
    memo: &Memo,
    node: usize,
    strategy: ScoringStrategy,
) -> Candidate {
    let state = &snapshot.states[node];
    let preferred_weight = pod
        .preferred_terms
        .iter()
        .filter(|&&(_, span)| {
            !span.is_empty()
                && pod
                    .node_exprs
                    .all_match(span, &state.labels, &snapshot.interner)
        })
        .map(|&(weight, _)| weight)
        .sum();
    let untolerated_soft_taints = state
        .soft_taints
        .iter()
        .filter(|t| !pod.tolerates(t))
        .count() as i64;
    let owner = pod.owner.map(|o| &snapshot.owners[o as usize]);
    let owner_pods_on_node = i64::from(memo.owner_pods_on(node));
    let owner_pods_in_zone = state
        .zone
        .map(|zone| owner.map_or(0, |o| i64::from(o.pods_per_zone[zone as usize])));
    let (resources, balance) = resource_scores(pod, snapshot, node, strategy);
    Candidate {
        node: node as u32,
        resources,
        balance,
        preferred_weight,
        untolerated_soft_taints,
        owner_pods_on_node,
        owner_pods_in_zone,
    }
}

/// The resource-fit score (per `strategy`) and the balanced-allocation score, from the cpu and
/// memory the node would have requested with this pod (zero requests count as the defaults).
fn resource_scores(
    pod: &CompiledPod,
    snapshot: &ClusterSnapshot,
    node: usize,
    strategy: ScoringStrategy,
) -> (i64, i64) {
    let allocatable = snapshot.states[node].allocatable;
    let requested = snapshot.states[node].nonzero_requested;
    let cpu = used_percent(
        requested
            .cpu_milli
            .saturating_add(pod.nonzero_requests.cpu_milli),
        allocatable.cpu_milli,
    );
    let memory = used_percent(
        requested
            .memory_bytes
            .saturating_add(pod.nonzero_requests.memory_bytes),
        allocatable.memory_bytes,
    );
    let fit = |used: Option<i64>| match (strategy, used) {
        (_, None) => 0,
        (ScoringStrategy::LeastAllocated, Some(used)) => MAX_SCORE - used,
        (ScoringStrategy::MostAllocated, Some(used)) => used,
    };
    let balanced = match (cpu, memory) {
        // kube-scheduler's BalancedAllocation for two resources: 1 - |cpu - memory| / 2.
        (Some(cpu), Some(memory)) => MAX_SCORE - (cpu - memory).abs() / 2,
        _ => MAX_SCORE,
    };
    ((fit(cpu) + fit(memory)) / 2, balanced)
}

/// Percent of `capacity` requested, capped at 100; `None` when the node offers none.
fn used_percent(requested: i64, capacity: i64) -> Option<i64> {
    (capacity > 0).then(|| percent(requested.clamp(0, capacity), capacity))
}

/// `part * 100 / whole` for `0 <= part <= whole`, `whole > 0`; past i64 it divides first.
fn percent(part: i64, whole: i64) -> i64 {
    match part.checked_mul(MAX_SCORE) {
        Some(scaled) => scaled / whole,
        // `whole >= part > i64::MAX / 100`, so `whole / 100` is far from zero.
        None => part / (whole / MAX_SCORE),
    }
}

/// The maxima that normalise the relative scores.
#[derive(Debug, Default)]
struct Maxima {
    preferred_weight: i64,
    untolerated_soft_taints: i64,
    owner_pods_on_node: i64,
    owner_pods_in_zone: i64,
}

/// The node index of the best candidate, `None` when there are none.
pub(crate) fn pick(
    pod: &CompiledPod,
    snapshot: &ClusterSnapshot,
    candidates: &[Candidate],
    weights: ScoreWeights,
) -> Option<usize> {
    let maxima = candidates.iter().fold(Maxima::default(), |m, c| Maxima {
        preferred_weight: m.preferred_weight.max(c.preferred_weight),
        untolerated_soft_taints: m.untolerated_soft_taints.max(c.untolerated_soft_taints),
        owner_pods_on_node: m.owner_pods_on_node.max(c.owner_pods_on_node),
        owner_pods_in_zone: m.owner_pods_in_zone.max(c.owner_pods_in_zone.unwrap_or(0)),
    });
    candidates
        .iter()
        .map(|c| {
            let tie_break = mix(pod.hash ^ snapshot.states[c.node as usize].name_hash);
            ((total(c, &maxima, weights), tie_break), c.node as usize)
        })
        .max_by_key(|&(key, _)| key)
        .map(|(_, node)| node)
}

fn total(c: &Candidate, maxima: &Maxima, weights: ScoreWeights) -> i64 {
    let affinity = if maxima.preferred_weight > 0 {
        percent(c.preferred_weight, maxima.preferred_weight)
    } else {
        0
    };
    let taints = fewer_is_better(c.untolerated_soft_taints, maxima.untolerated_soft_taints);
    let node_spread = fewer_is_better(c.owner_pods_on_node, maxima.owner_pods_on_node);
    let spread = match c.owner_pods_in_zone {
        Some(in_zone) => {
            let zone_spread = fewer_is_better(in_zone, maxima.owner_pods_in_zone);
            (node_spread + 2 * zone_spread) / 3
        }
        None => node_spread,
    };
    i64::from(weights.resources) * c.resources
        + i64::from(weights.balanced_allocation) * c.balance
        + i64::from(weights.node_affinity) * affinity
        + i64::from(weights.taint_toleration) * taints
        + i64::from(weights.spreading) * spread
}

/// 100 for the smallest count, 0 for the largest, linear between.
fn fewer_is_better(count: i64, max: i64) -> i64 {
    if max <= 0 {
        return MAX_SCORE;
    }
    percent(max - count, max)
}
