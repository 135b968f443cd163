//! The unschedulable summary: one reason per node (its first failing filter), counted, sorted by
//! count then text, and printed like kube-scheduler.

mod common;

use common::*;
use flotilla_scheduler::{
    ClusterSnapshot, ReasonCount, SnapshotError, TaintEffect, UnschedulableSummary,
};

#[test]
fn reasons_are_counted_and_sorted_by_count_then_text() {
    let mut nodes: Vec<_> = (0..3)
        .map(|i| sized_node(&format!("small{i}"), 8_000, GIB).with_label("disk", "ssd"))
        .collect();
    nodes.push(node("hdd0").with_label("disk", "hdd"));
    nodes.push(node("hdd1"));
    check(
        nodes,
        pod("p")
            .with_node_selector("disk", "ssd")
            .with_requests(100, 2 * GIB),
        "0/5 nodes are available: 3 Insufficient memory, \
         2 node(s) didn't match Pod's node affinity/selector.",
    );
}

#[test]
fn equal_counts_are_sorted_by_text() {
    let nodes = vec![
        node("cordoned").with_unschedulable(true),
        sized_node("no-memory", 8_000, GIB),
        sized_node("no-cpu", 100, 8 * GIB),
        node("tainted-z").with_taint("z", "1", TaintEffect::NoExecute),
        node("tainted-a").with_taint("a", "1", TaintEffect::NoSchedule),
    ];
    check(
        nodes,
        pod("p").with_requests(500, 2 * GIB),
        "0/5 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
         1 node(s) had untolerated taint {a: 1}, 1 node(s) had untolerated taint {z: 1}, \
         1 node(s) were unschedulable.",
    );
}

#[test]
fn only_the_first_failing_filter_counts() {
    // Cordoned, tainted, mismatched and too small at once: reported as cordoned only.
    let hopeless = sized_node("n1", 10, 10)
        .with_unschedulable(true)
        .with_taint("a", "", TaintEffect::NoSchedule)
        .with_label("disk", "hdd");
    check(
        vec![hopeless],
        pod("p").with_node_selector("disk", "ssd"),
        "0/1 nodes are available: 1 node(s) were unschedulable.",
    );
}

#[test]
fn an_empty_cluster_says_so() {
    check(
        vec![],
        pod("p"),
        "0/0 nodes are available: no nodes in the cluster.",
    );
}

#[test]
fn summary_display_matches_kube_scheduler() {
    let summary = UnschedulableSummary {
        total_nodes: 5,
        reasons: vec![
            ReasonCount {
                reason: "Insufficient memory".into(),
                nodes: 3,
            },
            ReasonCount {
                reason: "node(s) didn't match Pod's node affinity/selector".into(),
                nodes: 2,
            },
        ],
    };
    assert_eq!(
        summary.to_string(),
        "0/5 nodes are available: 3 Insufficient memory, \
         2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn snapshot_rejects_bad_input_with_typed_errors() {
    assert_eq!(
        ClusterSnapshot::new(vec![node("n1"), node("n1")]).err(),
        Some(SnapshotError::DuplicateNode("n1".into()))
    );
    let mut snapshot = ClusterSnapshot::new(vec![node("n1")]).expect("valid");
    assert_eq!(
        snapshot.add_bound_pod("n9", &pod("p")),
        Err(SnapshotError::UnknownNode("n9".into()))
    );
    assert_eq!(snapshot.usage("n1").map(|u| u.pods), Some(0));
}
