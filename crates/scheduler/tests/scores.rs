//! Each score plugin alone (the other weights zero), then plugins weighed against each other,
//! and the deterministic tie-break.

mod common;

use std::collections::BTreeSet;

use common::*;
use flotilla_scheduler::{
    schedule_one, NodeSelectorTerm, PodInfo, SchedulerConfig, ScoreWeights, ScoringStrategy,
    SelectorOperator as Op, TaintEffect, Toleration,
};

const RESOURCES: ScoreWeights = ScoreWeights {
    resources: 1,
    ..NO_WEIGHTS
};
const BALANCE: ScoreWeights = ScoreWeights {
    balanced_allocation: 1,
    ..NO_WEIGHTS
};
const AFFINITY: ScoreWeights = ScoreWeights {
    node_affinity: 1,
    ..NO_WEIGHTS
};
const TAINTS: ScoreWeights = ScoreWeights {
    taint_toleration: 1,
    ..NO_WEIGHTS
};
const SPREADING: ScoreWeights = ScoreWeights {
    spreading: 1,
    ..NO_WEIGHTS
};

fn check_scored(
    nodes: Vec<flotilla_scheduler::NodeInfo>,
    bound: &[(&str, PodInfo)],
    config: SchedulerConfig,
    pod: PodInfo,
    expected: &str,
) {
    check_full(nodes, bound, &config, pod, expected);
}

#[test]
fn least_allocated_prefers_free_nodes_and_most_allocated_full_ones() {
    let nodes = || vec![node("busy"), node("idle")];
    let busy = [("busy", pod("old").with_requests(2_000, 8 * GIB))];
    check_scored(nodes(), &busy, only(RESOURCES), pod("p"), "idle");
    let packing = SchedulerConfig {
        strategy: ScoringStrategy::MostAllocated,
        ..only(RESOURCES)
    };
    check_scored(nodes(), &busy, packing, pod("p"), "busy");
}

#[test]
fn resource_scores_are_relative_to_node_size() {
    // 2 of 4 cpus used is fuller than 2 of 32, though the free cpu count says otherwise.
    let nodes = || {
        vec![
            sized_node("small", 4_000, 8 * GIB),
            sized_node("big", 32_000, 64 * GIB),
        ]
    };
    let used = [
        ("small", pod("a").with_requests(2_000, 4 * GIB)),
        ("big", pod("b").with_requests(2_000, 4 * GIB)),
    ];
    check_scored(nodes(), &used, only(RESOURCES), pod("p"), "big");
    check_scored(
        nodes(),
        &used,
        SchedulerConfig::most_allocated(),
        pod("p"),
        "small",
    );
}

#[test]
fn balanced_allocation_prefers_even_use_of_cpu_and_memory() {
    let nodes = || vec![node("cpu-heavy"), node("memory-heavy")];
    let bound = [
        ("cpu-heavy", pod("a").with_requests(2_000, 200 * MIB)),
        ("memory-heavy", pod("b").with_requests(200, 8 * GIB)),
    ];
    let cpu_hungry = || pod("p").with_requests(2_000, 100 * MIB);
    // Free capacity alone favours the node whose cpu this pod would exhaust (49 vs 47)...
    check_scored(nodes(), &bound, only(RESOURCES), cpu_hungry(), "cpu-heavy");
    // ...balance sends it where cpu and memory end up used alike (98 vs 51).
    check_scored(nodes(), &bound, only(BALANCE), cpu_hungry(), "memory-heavy");
    check_bound(nodes(), &bound, cpu_hungry(), "memory-heavy");
}

#[test]
fn preferred_node_affinity_sums_matching_weights() {
    let nodes = || {
        vec![
            node("hdd")
                .with_label("disk", "hdd")
                .with_label("net", "fast"),
            node("ssd").with_label("disk", "ssd"),
            node("plain"),
        ]
    };
    let disk = |v| NodeSelectorTerm::new().with("disk", Op::In, &[v]);
    let fast = NodeSelectorTerm::new().with("net", Op::Exists, &[]);
    check_scored(
        nodes(),
        &[],
        only(AFFINITY),
        pod("p").with_preferred_term(50, disk("ssd")),
        "ssd",
    );
    let both = pod("p")
        .with_preferred_term(50, disk("ssd"))
        .with_preferred_term(30, disk("hdd"))
        .with_preferred_term(30, fast.clone());
    check_scored(nodes(), &[], only(AFFINITY), both, "hdd");
    let heavier = pod("p")
        .with_preferred_term(70, disk("ssd"))
        .with_preferred_term(30, disk("hdd"))
        .with_preferred_term(30, fast);
    check_scored(nodes(), &[], only(AFFINITY), heavier, "ssd");
}

#[test]
fn prefer_no_schedule_taints_lower_the_score() {
    let nodes = || {
        vec![
            node("two")
                .with_taint("a", "", TaintEffect::PreferNoSchedule)
                .with_taint("b", "", TaintEffect::PreferNoSchedule),
            node("one").with_taint("c", "", TaintEffect::PreferNoSchedule),
        ]
    };
    let tolerating = |keys: &[&str]| {
        keys.iter().fold(pod("p"), |p, key| {
            p.with_toleration(Toleration::exists(key, None))
        })
    };
    check_scored(nodes(), &[], only(TAINTS), tolerating(&[]), "one");
    check_scored(nodes(), &[], only(TAINTS), tolerating(&["c"]), "one");
    check_scored(nodes(), &[], only(TAINTS), tolerating(&["a", "b"]), "two");
    let tolerates_a_for_no_schedule_only =
        pod("p").with_toleration(Toleration::exists("a", Some(TaintEffect::NoSchedule)));
    check_scored(
        nodes(),
        &[],
        only(TAINTS),
        tolerates_a_for_no_schedule_only,
        "one",
    );
    let nodes_clean_busy = || {
        vec![
            node("tainted").with_taint("a", "", TaintEffect::PreferNoSchedule),
            node("busy"),
        ]
    };
    let busy = [("busy", pod("old").with_requests(2_000, 8 * GIB))];
    // Default weights: the taint (weight 3) outweighs half a node of resources (weight 1)...
    check_bound(nodes_clean_busy(), &busy, pod("p"), "busy");
    // ...unless the pod tolerates it.
    let tolerant =
        pod("p").with_toleration(Toleration::exists("a", Some(TaintEffect::PreferNoSchedule)));
    check_bound(nodes_clean_busy(), &busy, tolerant, "tainted");
}

fn replica(name: &str, owner: &str) -> PodInfo {
    pod(name).with_owner(owner)
}

#[test]
fn spreading_prefers_nodes_with_fewer_replicas_of_the_owner() {
    let nodes = || vec![node("n1"), node("n2")];
    let on_n1 = [("n1", replica("r0", "rs-1")), ("n2", replica("x0", "rs-2"))];
    check_scored(
        nodes(),
        &on_n1,
        only(SPREADING),
        replica("r1", "rs-1"),
        "n2",
    );
    check_scored(
        nodes(),
        &on_n1,
        only(SPREADING),
        replica("x1", "rs-2"),
        "n1",
    );
}

#[test]
fn spreading_prefers_zones_with_fewer_replicas_of_the_owner() {
    let nodes = || {
        vec![
            node("a1").with_zone("a"),
            node("a2").with_zone("a"),
            node("b1").with_zone("b"),
        ]
    };
    // a2 has no replica itself, but its zone has one; b1's zone has none.
    let on_a1 = [("a1", replica("r0", "rs-1"))];
    check_scored(
        nodes(),
        &on_a1,
        only(SPREADING),
        replica("r1", "rs-1"),
        "b1",
    );
    let on_a1_and_b1 = [("a1", replica("r0", "rs-1")), ("b1", replica("r1", "rs-1"))];
    check_scored(
        nodes(),
        &on_a1_and_b1,
        only(SPREADING),
        replica("r2", "rs-1"),
        "a2",
    );
}

#[test]
fn spreading_outweighs_small_resource_differences_by_default() {
    let nodes = || vec![sized_node("big", 64_000, 256 * GIB), node("n2")];
    let on_big = [("big", replica("r0", "rs-1"))];
    // Resources alone prefer the big node...
    check_scored(
        nodes(),
        &on_big,
        only(RESOURCES),
        replica("r1", "rs-1"),
        "big",
    );
    // ...but the default weights spread the replicas.
    check_bound(nodes(), &on_big, replica("r1", "rs-1"), "n2");
}

#[test]
fn ties_are_broken_by_pod_and_node_not_by_position() {
    let nodes: Vec<_> = (0..8).map(|i| node(&format!("n{i}"))).collect();
    let snapshot = snapshot(nodes, &[]);
    let config = SchedulerConfig::default();
    let chosen: Vec<String> = (0..40)
        .map(|i| outcome(&schedule_one(&pod(&format!("p{i}")), &snapshot, &config)))
        .collect();
    let distinct: BTreeSet<&String> = chosen.iter().collect();
    assert!(
        distinct.len() >= 4,
        "equal nodes should share the pods: {distinct:?}"
    );
    let again: Vec<String> = (0..40)
        .map(|i| outcome(&schedule_one(&pod(&format!("p{i}")), &snapshot, &config)))
        .collect();
    assert_eq!(chosen, again, "placement must be deterministic");
}
