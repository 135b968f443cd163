//! Property: whatever the nodes and pods, batch placement never overcommits a node's
//! allocatable cpu, memory or pod slots, never binds two pods wanting the same host port to one
//! node, honours node selectors and NoSchedule taints and anti-affinity, and an unschedulable summary accounts
//! for every node exactly once.

use std::collections::BTreeMap;

use flotilla_scheduler::{
    schedule_batch, Allocatable, ClusterSnapshot, Decision, LabelSelector, NodeInfo, PodInfo,
    Protocol, SchedulerConfig, ScoringStrategy, TaintEffect, Toleration,
};
use proptest::prelude::*;

const MIB: i64 = 1024 * 1024;

fn node_strategy() -> impl Strategy<Value = (i64, i64, i64, u8, u8, u8, bool, bool)> {
    (
        0i64..8_000,
        0i64..16_384,
        0i64..12,
        0u8..3, // disk: ssd, hdd, none
        0u8..4, // zone: a, b, c, none
        0u8..4, // taint: none, NoSchedule, PreferNoSchedule, NoExecute
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
    )
}

fn build_node(
    i: usize,
    (cpu, mem, pods, disk, zone, taint, cordoned, ready): (i64, i64, i64, u8, u8, u8, bool, bool),
) -> NodeInfo {
    let mut node = NodeInfo::new(format!("n{i}"), Allocatable::new(cpu, mem * MIB, pods))
        .with_unschedulable(cordoned)
        .with_ready(ready);
    if let Some(disk) = ["ssd", "hdd"].get(disk as usize) {
        node = node.with_label("disk", *disk);
    }
    if let Some(zone) = ["a", "b", "c"].get(zone as usize) {
        node = node.with_zone(*zone);
    }
    let effects = [
        TaintEffect::NoSchedule,
        TaintEffect::PreferNoSchedule,
        TaintEffect::NoExecute,
    ];
    if let Some(effect) = effects.get(taint as usize) {
        node = node.with_taint("dedicated", "x", *effect);
    }
    node
}

fn pod_strategy() -> impl Strategy<Value = (i64, i64, u8, bool, u8, u8, u8)> {
    (
        -100i64..3_000,
        0i64..4_096,
        0u8..3,        // node selector disk: ssd, hdd, none
        any::<bool>(), // tolerates "dedicated"
        0u8..3,        // app label a, b, none; anti-affinity to its own app when labelled
        0u8..3,        // owner rs-1, rs-2, none
        0u8..3,        // host port 80, 443, none
    )
}

fn build_pod(
    i: usize,
    (cpu, mem, disk, tolerant, app, owner, port): (i64, i64, u8, bool, u8, u8, u8),
) -> PodInfo {
    let mut pod = PodInfo::new("default", format!("p{i}")).with_requests(cpu, mem * MIB);
    if let Some(disk) = ["ssd", "hdd"].get(disk as usize) {
        pod = pod.with_node_selector("disk", *disk);
    }
    if tolerant {
        pod = pod.with_toleration(Toleration::exists("dedicated", None));
    }
    if let Some(app) = ["a", "b"].get(app as usize) {
        pod = pod
            .with_label("app", *app)
            .with_anti_affinity(LabelSelector::new().match_label("app", *app));
    }
    if let Some(owner) = ["rs-1", "rs-2"].get(owner as usize) {
        pod = pod.with_owner(*owner);
    }
    if let Some(port) = [80, 443].get(port as usize) {
        pod = pod.with_host_port(Protocol::Tcp, *port);
    }
    pod
}

#[derive(Default)]
struct Bound<'a> {
    cpu_milli: i64,
    memory_bytes: i64,
    pods: Vec<&'a PodInfo>,
}

fn check_invariants(
    nodes: &[NodeInfo],
    pods: &[PodInfo],
    decisions: &[Decision],
    snapshot: &ClusterSnapshot,
) {
    let mut bound: BTreeMap<&str, Bound> = BTreeMap::new();
    for (pod, decision) in pods.iter().zip(decisions) {
        match decision {
            Decision::Bind { node } => {
                let b = bound.entry(node.as_str()).or_default();
                b.cpu_milli += pod.requests.cpu_milli.max(0);
                b.memory_bytes += pod.requests.memory_bytes.max(0);
                b.pods.push(pod);
            }
            Decision::Unschedulable { reasons } => {
                let counted: usize = reasons.reasons.iter().map(|r| r.nodes).sum();
                assert_eq!(counted, nodes.len(), "{reasons}");
            }
        }
    }
    for node in nodes {
        let Some(b) = bound.get(node.name.as_str()) else {
            continue;
        };
        let a = node.allocatable;
        assert!(
            b.cpu_milli <= a.cpu_milli,
            "cpu overcommitted on {}",
            node.name
        );
        assert!(
            b.memory_bytes <= a.memory_bytes,
            "memory overcommitted on {}",
            node.name
        );
        assert!(
            b.pods.len() as i64 <= a.pods,
            "pod slots overcommitted on {}",
            node.name
        );
        let usage = snapshot.usage(&node.name).expect("node in snapshot");
        assert_eq!(
            (usage.requested.cpu_milli, usage.pods),
            (b.cpu_milli, b.pods.len() as i64)
        );
        let mut ports: Vec<_> = b.pods.iter().flat_map(|p| p.host_ports.clone()).collect();
        let before = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(
            ports.len(),
            before,
            "host port bound twice on {}",
            node.name
        );
        let mut apps: Vec<&String> = b.pods.iter().filter_map(|p| p.labels.get("app")).collect();
        let before = apps.len();
        apps.sort();
        apps.dedup();
        assert_eq!(apps.len(), before, "anti-affine pods share {}", node.name);
        for pod in &b.pods {
            for (k, v) in &pod.node_selector {
                assert_eq!(node.labels.get(k), Some(v), "{} on {}", pod.name, node.name);
            }
            let hard_taint = node
                .taints
                .iter()
                .any(|t| t.effect != TaintEffect::PreferNoSchedule);
            assert!(
                !hard_taint || !pod.tolerations.is_empty(),
                "{} on tainted {}",
                pod.name,
                node.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batch_placement_never_overcommits(
        node_specs in prop::collection::vec(node_strategy(), 0..150),
        pod_specs in prop::collection::vec(pod_strategy(), 1..80),
        percentage in prop::option::of(1u32..60),
        packing in any::<bool>(),
    ) {
        let nodes: Vec<NodeInfo> = node_specs.into_iter().enumerate().map(|(i, s)| build_node(i, s)).collect();
        let pods: Vec<PodInfo> = pod_specs.into_iter().enumerate().map(|(i, s)| build_pod(i, s)).collect();
        let config = SchedulerConfig {
            strategy: if packing { ScoringStrategy::MostAllocated } else { ScoringStrategy::LeastAllocated },
            percentage_of_nodes_to_score: percentage,
            ..SchedulerConfig::default()
        };
        let mut snapshot = ClusterSnapshot::new(nodes.clone()).expect("unique names");
        let decisions = schedule_batch(&pods, &mut snapshot, &config);
        prop_assert_eq!(decisions.len(), pods.len());
        check_invariants(&nodes, &pods, &decisions, &snapshot);
    }
}
