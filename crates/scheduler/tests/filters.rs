//! Each filter alone (a pod that passes it binds, one that fails it gets the filter's reason),
//! then filters in combination.

mod common;

use common::*;
use flotilla_scheduler::{
    LabelSelector, LabelSelectorOperator as L, NodeSelectorTerm, PodInfo, Protocol,
    SelectorOperator as Op, TaintEffect, Toleration, NOT_READY_TAINT_KEY, UNSCHEDULABLE_TAINT_KEY,
};

const AFFINITY: &str =
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.";

#[test]
fn node_condition() {
    check(vec![node("n1")], pod("p"), "n1");
    check(
        vec![node("n1").with_ready(false)],
        pod("p"),
        "0/1 nodes are available: 1 node(s) were not ready.",
    );
    check(
        vec![node("n1").with_ready(false)],
        pod("p").with_toleration(Toleration::exists(NOT_READY_TAINT_KEY, None)),
        "n1",
    );
    check(
        vec![node("n1").with_unschedulable(true)],
        pod("p"),
        "0/1 nodes are available: 1 node(s) were unschedulable.",
    );
    check(
        vec![node("n1").with_unschedulable(true)],
        pod("p").with_toleration(Toleration::exists(
            UNSCHEDULABLE_TAINT_KEY,
            Some(TaintEffect::NoSchedule),
        )),
        "n1",
    );
}

#[test]
fn resources_fit() {
    let small = || sized_node("n1", 1_000, 2 * GIB);
    check(vec![small()], pod("p").with_requests(1_000, 2 * GIB), "n1");
    check(
        vec![small()],
        pod("p").with_requests(1_001, GIB),
        "0/1 nodes are available: 1 Insufficient cpu.",
    );
    check(
        vec![small()],
        pod("p").with_requests(500, 2 * GIB + 1),
        "0/1 nodes are available: 1 Insufficient memory.",
    );
    let used = [("n1", pod("old").with_requests(600, GIB))];
    check_bound(vec![small()], &used, pod("p").with_requests(400, GIB), "n1");
    check_bound(
        vec![small()],
        &used,
        pod("p").with_requests(401, GIB),
        "0/1 nodes are available: 1 Insufficient cpu.",
    );
}

#[test]
fn pod_slots() {
    let one_slot = || {
        flotilla_scheduler::NodeInfo::new(
            "n1",
            flotilla_scheduler::Allocatable::new(4_000, 16 * GIB, 1),
        )
    };
    check(vec![one_slot()], pod("p"), "n1");
    check_bound(
        vec![one_slot()],
        &[("n1", pod("old"))],
        pod("p"),
        "0/1 nodes are available: 1 Too many pods.",
    );
    // A pod that requests nothing still needs a slot, but fits on a node whose cpu is overcommitted.
    let hog = [("n1", pod("hog").with_requests(9_000, GIB))];
    check_bound(vec![node("n1")], &hog, pod("p").with_requests(0, 0), "n1");
}

#[test]
fn node_selector() {
    let ssd = || node("n1").with_label("disk", "ssd");
    check(
        vec![ssd()],
        pod("p").with_node_selector("disk", "ssd"),
        "n1",
    );
    check(
        vec![ssd()],
        pod("p").with_node_selector("disk", "hdd"),
        AFFINITY,
    );
    check(
        vec![ssd()],
        pod("p").with_node_selector("gpu", "true"),
        AFFINITY,
    );
    check(
        vec![ssd().with_label("gpu", "true")],
        pod("p")
            .with_node_selector("disk", "ssd")
            .with_node_selector("gpu", "true"),
        "n1",
    );
}

fn with_term(key: &str, op: Op, values: &[&str]) -> PodInfo {
    pod("p").with_required_term(NodeSelectorTerm::new().with(key, op, values))
}

#[test]
fn required_node_affinity_operators() {
    let labelled = || {
        vec![node("n1")
            .with_label("disk", "ssd")
            .with_label("cores", "16")]
    };
    let cases: &[(&str, Op, &[&str], &str)] = &[
        ("disk", Op::In, &["hdd", "ssd"], "n1"),
        ("disk", Op::In, &["hdd"], AFFINITY),
        ("disk", Op::NotIn, &["hdd"], "n1"),
        ("disk", Op::NotIn, &["ssd"], AFFINITY),
        ("gpu", Op::NotIn, &["a100"], "n1"),
        ("disk", Op::Exists, &[], "n1"),
        ("gpu", Op::Exists, &[], AFFINITY),
        ("gpu", Op::DoesNotExist, &[], "n1"),
        ("disk", Op::DoesNotExist, &[], AFFINITY),
        ("cores", Op::Gt, &["8"], "n1"),
        ("cores", Op::Gt, &["16"], AFFINITY),
        ("cores", Op::Lt, &["32"], "n1"),
        ("cores", Op::Lt, &["16"], AFFINITY),
        ("cores", Op::Gt, &["-3"], "n1"),
        // Non-integers on either side never match Gt/Lt.
        ("disk", Op::Gt, &["1"], AFFINITY),
        ("cores", Op::Lt, &["many"], AFFINITY),
        ("gpu", Op::Gt, &["1"], AFFINITY),
    ];
    for &(key, op, values, expected) in cases {
        check(labelled(), with_term(key, op, values), expected);
    }
}

#[test]
fn required_node_affinity_terms() {
    let n = || vec![node("n1").with_label("disk", "ssd").with_label("zone", "a")];
    let ssd = || NodeSelectorTerm::new().with("disk", Op::In, &["ssd"]);
    let zone_b = || NodeSelectorTerm::new().with("zone", Op::In, &["b"]);
    // Terms are ORed.
    check(
        n(),
        pod("p")
            .with_required_term(zone_b())
            .with_required_term(ssd()),
        "n1",
    );
    // Requirements within a term are ANDed.
    let both = ssd().with("zone", Op::In, &["b"]);
    check(n(), pod("p").with_required_term(both), AFFINITY);
    // An empty term matches nothing, and so does an empty list of terms.
    check(
        n(),
        pod("p").with_required_term(NodeSelectorTerm::new()),
        AFFINITY,
    );
    let mut no_terms = pod("p");
    no_terms.required_node_affinity = Some(Vec::new());
    check(n(), no_terms, AFFINITY);
    // Selector and affinity must both hold.
    check(
        n(),
        pod("p")
            .with_node_selector("zone", "b")
            .with_required_term(ssd()),
        AFFINITY,
    );
}

#[test]
fn taints_and_tolerations() {
    let gpu = |effect| vec![node("n1").with_taint("dedicated", "gpu", effect)];
    let untolerated = "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}.";
    let no_schedule = Some(TaintEffect::NoSchedule);
    let cases: Vec<(TaintEffect, Option<Toleration>, &str)> = vec![
        (TaintEffect::NoSchedule, None, untolerated),
        (TaintEffect::NoExecute, None, untolerated),
        (TaintEffect::PreferNoSchedule, None, "n1"),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::equal("dedicated", "gpu", no_schedule)),
            "n1",
        ),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::equal("dedicated", "gpu", None)),
            "n1",
        ),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::equal("dedicated", "tpu", None)),
            untolerated,
        ),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::exists("dedicated", None)),
            "n1",
        ),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::exists("other", None)),
            untolerated,
        ),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::exists("", None)),
            "n1",
        ),
        (
            TaintEffect::NoSchedule,
            Some(Toleration::exists(
                "dedicated",
                Some(TaintEffect::NoExecute),
            )),
            untolerated,
        ),
        (
            TaintEffect::NoExecute,
            Some(Toleration::exists("dedicated", no_schedule)),
            untolerated,
        ),
    ];
    for (effect, toleration, expected) in cases {
        let mut p = pod("p");
        p.tolerations.extend(toleration);
        check(gpu(effect), p, expected);
    }
}

#[test]
fn every_hard_taint_must_be_tolerated() {
    let two = || {
        vec![node("n1")
            .with_taint("a", "1", TaintEffect::NoSchedule)
            .with_taint("b", "2", TaintEffect::NoExecute)]
    };
    check(
        two(),
        pod("p").with_toleration(Toleration::exists("a", None)),
        "0/1 nodes are available: 1 node(s) had untolerated taint {b: 2}.",
    );
    check(
        two(),
        pod("p")
            .with_toleration(Toleration::exists("a", None))
            .with_toleration(Toleration::equal("b", "2", None)),
        "n1",
    );
}

#[test]
fn host_ports() {
    let used = [("n1", pod("old").with_host_port(Protocol::Tcp, 80))];
    check_bound(
        vec![node("n1")],
        &used,
        pod("p").with_host_port(Protocol::Tcp, 80),
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.",
    );
    check_bound(
        vec![node("n1")],
        &used,
        pod("p").with_host_port(Protocol::Udp, 80),
        "n1",
    );
    check_bound(
        vec![node("n1")],
        &used,
        pod("p").with_host_port(Protocol::Tcp, 8080),
        "n1",
    );
}

fn web(name: &str) -> PodInfo {
    pod(name).with_label("app", "web")
}

#[test]
fn own_anti_affinity() {
    let rejected = "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules.";
    let on_n1 = [("n1", web("old"))];
    let away_from = |selector: LabelSelector| pod("p").with_anti_affinity(selector);
    let cases: Vec<(LabelSelector, &str)> = vec![
        (LabelSelector::new().match_label("app", "web"), rejected),
        (LabelSelector::new().match_label("app", "db"), "n1"),
        (
            LabelSelector::new().match_expression("app", L::In, &["db", "web"]),
            rejected,
        ),
        (
            LabelSelector::new().match_expression("app", L::NotIn, &["web"]),
            "n1",
        ),
        (
            LabelSelector::new().match_expression("app", L::Exists, &[]),
            rejected,
        ),
        (
            LabelSelector::new().match_expression("tier", L::DoesNotExist, &[]),
            rejected,
        ),
        (
            LabelSelector::new().match_expression("app", L::DoesNotExist, &[]),
            "n1",
        ),
        // An empty selector matches every pod of the namespace.
        (LabelSelector::new(), rejected),
    ];
    for (selector, expected) in cases {
        check_bound(vec![node("n1")], &on_n1, away_from(selector), expected);
    }
    // The bound pod moves the anti-affine pod to the other node.
    let selector = LabelSelector::new().match_label("app", "web");
    check_bound(
        vec![node("n1"), node("n2")],
        &on_n1,
        away_from(selector.clone()),
        "n2",
    );
    // Pods of other namespaces do not count.
    let elsewhere = [("n1", PodInfo::new("other", "old").with_label("app", "web"))];
    check_bound(vec![node("n1")], &elsewhere, away_from(selector), "n1");
}

#[test]
fn existing_pods_anti_affinity() {
    let loner = pod("old").with_anti_affinity(LabelSelector::new().match_label("app", "web"));
    let on_n1 = [("n1", loner)];
    check_bound(
        vec![node("n1")],
        &on_n1,
        web("p"),
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules.",
    );
    check_bound(
        vec![node("n1")],
        &on_n1,
        pod("p").with_label("app", "db"),
        "n1",
    );
    check_bound(vec![node("n1"), node("n2")], &on_n1, web("p"), "n2");
}

#[test]
fn combined_filters_pick_the_only_feasible_node() {
    let nodes = || {
        vec![
            node("hdd").with_label("disk", "hdd"),
            node("tainted").with_label("disk", "ssd").with_taint(
                "team",
                "ml",
                TaintEffect::NoSchedule,
            ),
            sized_node("small", 500, 16 * GIB).with_label("disk", "ssd"),
            node("good").with_label("disk", "ssd"),
            node("cordoned")
                .with_label("disk", "ssd")
                .with_unschedulable(true),
        ]
    };
    let wanted = || {
        pod("p")
            .with_node_selector("disk", "ssd")
            .with_requests(1_000, GIB)
    };
    check(nodes(), wanted(), "good");
    check(
        nodes()[..3].to_vec(),
        wanted(),
        "0/3 nodes are available: 1 Insufficient cpu, \
         1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {team: ml}.",
    );
    let tolerant = wanted().with_toleration(Toleration::equal("team", "ml", None));
    check(nodes()[..3].to_vec(), tolerant, "tainted");
}
