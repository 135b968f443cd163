//! Batch placement: each placed pod is accounted before the next (resources, ports,
//! anti-affinity, owner spreading), sampling still finds rare feasible nodes, and the rotating
//! start index spreads pods over the whole cluster.

mod common;

use std::collections::BTreeMap;

use common::*;
use flotilla_scheduler::{
    Allocatable, LabelSelector, NodeInfo, PodInfo, Protocol, SchedulerConfig,
};

fn replica(owner: &str, i: usize) -> PodInfo {
    pod(&format!("{owner}-{i}")).with_owner(owner)
}

fn count_per<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

#[test]
fn pods_that_fit_alone_but_not_together() {
    let big = |name: &str| pod(name).with_requests(3_000, GIB);
    check_batch(
        vec![node("n1")],
        &SchedulerConfig::default(),
        &[big("a"), big("b")],
        &["n1", "0/1 nodes are available: 1 Insufficient cpu."],
    );
    let outcomes = batch_outcomes(
        vec![node("n1"), node("n2")],
        &SchedulerConfig::default(),
        &[big("a"), big("b")],
    );
    assert_eq!(
        count_per(outcomes.iter().map(String::as_str)).len(),
        2,
        "{outcomes:?}"
    );
}

#[test]
fn memory_and_pod_slots_are_accounted_too() {
    let fat = |name: &str| pod(name).with_requests(100, 10 * GIB);
    check_batch(
        vec![node("n1")],
        &SchedulerConfig::default(),
        &[fat("a"), fat("b")],
        &["n1", "0/1 nodes are available: 1 Insufficient memory."],
    );
    let two_slots = NodeInfo::new("n1", Allocatable::new(4_000, 16 * GIB, 2));
    check_batch(
        vec![two_slots],
        &SchedulerConfig::default(),
        &[pod("a"), pod("b"), pod("c")],
        &["n1", "n1", "0/1 nodes are available: 1 Too many pods."],
    );
}

#[test]
fn host_ports_are_accounted() {
    let http = |name: &str| pod(name).with_host_port(Protocol::Tcp, 80);
    check_batch(
        vec![node("n1")],
        &SchedulerConfig::default(),
        &[http("a"), http("b")],
        &[
            "n1",
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.",
        ],
    );
}

#[test]
fn anti_affinity_within_a_batch_puts_one_replica_per_node() {
    let web = |i: usize| {
        replica("rs-web", i)
            .with_label("app", "web")
            .with_anti_affinity(LabelSelector::new().match_label("app", "web"))
    };
    let nodes = vec![node("n1"), node("n2"), node("n3")];
    let pods: Vec<PodInfo> = (0..4).map(web).collect();
    let outcomes = batch_outcomes(nodes, &SchedulerConfig::most_allocated(), &pods);
    let placed = count_per(outcomes[..3].iter().map(String::as_str));
    assert_eq!(placed, BTreeMap::from([("n1", 1), ("n2", 1), ("n3", 1)]));
    assert_eq!(
        outcomes[3],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
}

#[test]
fn replicas_spread_across_nodes() {
    // Resources alone would stack every replica on the big node.
    let nodes = || vec![sized_node("big", 64_000, 256 * GIB), node("n2"), node("n3")];
    let pods: Vec<PodInfo> = (0..6).map(|i| replica("rs-1", i)).collect();
    let outcomes = batch_outcomes(nodes(), &SchedulerConfig::default(), &pods);
    let spread = count_per(outcomes.iter().map(String::as_str));
    assert_eq!(spread, BTreeMap::from([("big", 2), ("n2", 2), ("n3", 2)]));
}

#[test]
fn replicas_spread_across_zones() {
    // Zone a has three nodes, zone b one: node spreading alone would put both replicas of an
    // owner in zone a most of the time.
    let nodes = || {
        vec![
            node("a1").with_zone("a"),
            node("a2").with_zone("a"),
            node("a3").with_zone("a"),
            node("b1").with_zone("b"),
        ]
    };
    let owners = ["rs-1", "rs-2", "rs-3", "rs-4", "rs-5"];
    let pods: Vec<PodInfo> = owners
        .iter()
        .flat_map(|owner| (0..2).map(move |i| replica(owner, i)))
        .collect();
    let config = only(flotilla_scheduler::ScoreWeights {
        spreading: 1,
        ..NO_WEIGHTS
    });
    let outcomes = batch_outcomes(nodes(), &config, &pods);
    for (owner, pair) in owners.iter().zip(outcomes.chunks(2)) {
        let zones: Vec<char> = pair
            .iter()
            .map(|node| node.chars().next().unwrap())
            .collect();
        assert_ne!(zones[0], zones[1], "{owner} replicas on {pair:?}");
    }
}

#[test]
fn most_allocated_packs_pods_onto_one_node() {
    let nodes = vec![node("n1"), node("n2"), node("n3")];
    let pods: Vec<PodInfo> = (0..5).map(|i| pod(&format!("p{i}"))).collect();
    let outcomes = batch_outcomes(nodes, &SchedulerConfig::most_allocated(), &pods);
    let counts = count_per(outcomes.iter().map(String::as_str));
    assert_eq!(counts.len(), 1, "{outcomes:?}");
    // When the first node is full, packing continues on a second one.
    let nodes = vec![
        sized_node("n1", 1_000, 16 * GIB),
        sized_node("n2", 1_000, 16 * GIB),
    ];
    let pods: Vec<PodInfo> = (0..4)
        .map(|i| pod(&format!("p{i}")).with_requests(400, GIB))
        .collect();
    let outcomes = batch_outcomes(nodes, &SchedulerConfig::most_allocated(), &pods);
    assert_eq!(outcomes[0], outcomes[1], "{outcomes:?}");
    assert_eq!(outcomes[2], outcomes[3], "{outcomes:?}");
    assert_ne!(outcomes[0], outcomes[2], "{outcomes:?}");
}

#[test]
fn least_allocated_spreads_pods_over_equal_nodes() {
    let nodes = vec![node("n1"), node("n2"), node("n3")];
    let pods: Vec<PodInfo> = (0..6).map(|i| pod(&format!("p{i}"))).collect();
    let outcomes = batch_outcomes(nodes, &SchedulerConfig::default(), &pods);
    let counts = count_per(outcomes.iter().map(String::as_str));
    assert_eq!(counts, BTreeMap::from([("n1", 2), ("n2", 2), ("n3", 2)]));
}

#[test]
fn sampling_still_finds_a_rare_feasible_node() {
    let mut nodes: Vec<NodeInfo> = (0..2_000).map(|i| node(&format!("n{i}"))).collect();
    nodes[1_234] = node("gpu").with_label("gpu", "true");
    let config = SchedulerConfig {
        percentage_of_nodes_to_score: Some(5),
        ..SchedulerConfig::default()
    };
    let wants_gpu = |name: &str| pod(name).with_node_selector("gpu", "true");
    let pods = [
        pod("plain"),
        wants_gpu("g1"),
        pod("plain2"),
        wants_gpu("g2"),
    ];
    let outcomes = batch_outcomes(nodes, &config, &pods);
    assert_eq!(outcomes[1], "gpu");
    assert_eq!(outcomes[3], "gpu");
}

#[test]
fn rotating_start_spreads_pods_over_the_whole_cluster() {
    // 1,000 nodes: each pod scores only 420 of them. Without rotation every pod would land in
    // the first 420 nodes, at least three per node.
    let nodes: Vec<NodeInfo> = (0..1_000)
        .map(|i| sized_node(&format!("n{i}"), 16_000, 64 * GIB))
        .collect();
    let pods: Vec<PodInfo> = (0..1_000).map(|i| pod(&format!("p{i}"))).collect();
    let outcomes = batch_outcomes(nodes, &SchedulerConfig::default(), &pods);
    let counts = count_per(outcomes.iter().map(String::as_str));
    let max = counts.values().max().copied().unwrap_or(0);
    assert!(counts.len() > 600, "only {} nodes used", counts.len());
    assert!(max <= 2, "a node got {max} pods");
}
