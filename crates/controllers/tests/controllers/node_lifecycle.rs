//! Node lifecycle timelines: heartbeats stop → NotReady at the grace → eviction only after
//! lease + margin; a new leader gives a full period; resumed heartbeats → Ready; tolerations
//! delay eviction; a leader cut off from every node evicts nothing.

use std::collections::HashMap;

use flotilla_controllers::node_lifecycle::{
    pods_by_node, LifecycleConfig, NodeAction, NodeTracker, MAX_TRACKED_NODES, NOT_READY_TAINT_KEY,
    UNREACHABLE_TAINT_KEY,
};
use flotilla_controllers::ControllerError;
use flotilla_state::objects::{
    ConditionStatus, Node, NodeCondition, NodeStatus, Pod, Taint, TaintEffect, Toleration,
    TolerationOperator,
};

use crate::fixtures::{at, pod, T0};

/// Something that happens at a time (ms after `T0`).
#[derive(Clone, Debug)]
enum Ev {
    BecameLeader,
    Heartbeat(&'static str),
    /// Evaluate, expecting these actions summarised ("NotReady n", "Ready n", "Evict n a,b").
    Expect(&'static [&'static str]),
}

/// Heartbeats of `node` every 500 ms in `[from_ms, to_ms]`.
fn beats(node: &'static str, from_ms: i64, to_ms: i64) -> Vec<(i64, Ev)> {
    (from_ms..=to_ms)
        .step_by(500)
        .map(|t| (t, Ev::Heartbeat(node)))
        .collect()
}

fn ready_node(name: &str) -> Node {
    let mut node = Node::default();
    node.metadata.name = name.to_owned();
    node.status = Some(NodeStatus {
        conditions: vec![NodeCondition {
            type_: "Ready".to_owned(),
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_heartbeat_time: None,
            last_transition_time: None,
        }],
        ..NodeStatus::default()
    });
    node
}

fn tolerating(name: &str, seconds: Option<i64>) -> Pod {
    let mut pod = pod(&format!("{name} ready"), "");
    pod.spec.tolerations = vec![Toleration {
        key: UNREACHABLE_TAINT_KEY.to_owned(),
        operator: Some(TolerationOperator::Exists),
        value: String::new(),
        effect: Some(TaintEffect::NoExecute),
        toleration_seconds: seconds,
    }];
    pod
}

/// node-1 runs a, b, t (tolerates unreachable for 10 s) and f (forever); node-2 runs c.
fn cluster() -> (Vec<Node>, HashMap<String, Vec<Pod>>) {
    let mut c = pod("c ready", "");
    c.spec.node_name = "node-2".to_owned();
    let all = vec![
        pod("a ready", ""),
        pod("b ready", ""),
        tolerating("t", Some(10)),
        tolerating("f", None),
        c,
    ];
    (
        vec![ready_node("node-1"), ready_node("node-2")],
        pods_by_node(&all),
    )
}

fn summary(action: &NodeAction) -> String {
    match action {
        NodeAction::MarkNotReady { node, .. } => format!("NotReady {node}"),
        NodeAction::MarkReady { node, .. } => format!("Ready {node}"),
        NodeAction::Evict { node, pods } => {
            let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
            format!("Evict {node} {}", names.join(","))
        }
    }
}

/// Writes actions back as the loop would: conditions and taints onto nodes, evicted pods gone.
fn apply(action: &NodeAction, nodes: &mut [Node], pods: &mut HashMap<String, Vec<Pod>>) {
    match action {
        NodeAction::MarkNotReady {
            node,
            ready,
            taints,
        }
        | NodeAction::MarkReady {
            node,
            ready,
            taints,
        } => {
            let target = nodes
                .iter_mut()
                .find(|n| &n.metadata.name == node)
                .expect("known node");
            target.spec.taints = taints.clone();
            let status = target.status.get_or_insert_with(NodeStatus::default);
            status.conditions.retain(|c| c.type_ != "Ready");
            status.conditions.push(ready.clone());
        }
        NodeAction::Evict {
            node,
            pods: evicted,
        } => {
            let list = pods.get_mut(node).expect("node has pods");
            list.retain(|p| !evicted.iter().any(|e| e.uid == p.metadata.uid));
        }
    }
}

/// Runs the timeline (sorted by time; at equal times leadership, then heartbeats, then
/// evaluation) with the default config and checks every evaluation.
fn check(mut timeline: Vec<(i64, Ev)>) {
    let rank = |ev: &Ev| match ev {
        Ev::BecameLeader => 0,
        Ev::Heartbeat(_) => 1,
        Ev::Expect(_) => 2,
    };
    timeline.sort_by_key(|(t, ev)| (*t, rank(ev)));
    let config = LifecycleConfig::default();
    let (mut nodes, mut pods) = cluster();
    let mut tracker = NodeTracker::new();
    for (t, ev) in timeline {
        let now = T0 + t;
        match ev {
            Ev::BecameLeader => tracker.became_leader(now),
            Ev::Heartbeat(node) => {
                tracker.heartbeat(node, now);
            }
            Ev::Expect(expected) => {
                let actions = tracker.evaluate(&nodes, &pods, now, &config);
                let got: Vec<String> = actions.iter().map(summary).collect();
                assert_eq!(got, expected, "at {t} ms");
                for action in &actions {
                    apply(action, &mut nodes, &mut pods);
                }
            }
        }
    }
}

fn timeline(parts: Vec<Vec<(i64, Ev)>>) -> Vec<(i64, Ev)> {
    parts.into_iter().flatten().collect()
}

#[test]
fn silence_marks_not_ready_at_the_grace_and_evicts_after_lease_and_margin() {
    check(timeline(vec![
        vec![(0, Ev::BecameLeader)],
        beats("node-1", 0, 1000),
        beats("node-2", 0, 20_000),
        vec![
            (2400, Ev::Expect(&[])),
            (2500, Ev::Expect(&["NotReady node-1"])),
            (2600, Ev::Expect(&[])),
            (3999, Ev::Expect(&[])),
            (4000, Ev::Expect(&["Evict node-1 a,b"])),
            (4100, Ev::Expect(&[])),
            // t tolerates the unreachable taint (added at 2500) for 10 s; f forever.
            (12_499, Ev::Expect(&[])),
            (12_500, Ev::Expect(&["Evict node-1 t"])),
            (20_000, Ev::Expect(&[])),
        ],
    ]));
}

#[test]
fn a_new_leader_gives_every_node_a_full_period() {
    check(timeline(vec![
        // node-1 died long before this leader took over; it never hears from it.
        vec![(0, Ev::BecameLeader)],
        beats("node-2", 0, 5000),
        vec![
            (1499, Ev::Expect(&[])),
            (1500, Ev::Expect(&["NotReady node-1"])),
            (2999, Ev::Expect(&[])),
            (3000, Ev::Expect(&["Evict node-1 a,b"])),
        ],
    ]));
}

#[test]
fn a_later_leader_change_restarts_the_clock() {
    check(timeline(vec![
        vec![(0, Ev::BecameLeader), (2000, Ev::BecameLeader)],
        beats("node-1", 0, 500),
        beats("node-2", 0, 8000),
        vec![
            // The new term forgets the old heartbeats and counts from its own start.
            (2000, Ev::Expect(&[])),
            (3499, Ev::Expect(&[])),
            (3500, Ev::Expect(&["NotReady node-1"])),
            (4999, Ev::Expect(&[])),
            (5000, Ev::Expect(&["Evict node-1 a,b"])),
        ],
    ]));
}

#[test]
fn resumed_heartbeats_mark_the_node_ready_again() {
    check(timeline(vec![
        vec![(0, Ev::BecameLeader)],
        beats("node-1", 0, 1000),
        beats("node-1", 3000, 8000),
        beats("node-2", 0, 8000),
        vec![
            (2500, Ev::Expect(&["NotReady node-1"])),
            (3000, Ev::Expect(&["Ready node-1"])),
            (3500, Ev::Expect(&[])),
            (8000, Ev::Expect(&[])),
        ],
    ]));
}

#[test]
fn a_leader_cut_off_from_every_node_evicts_nothing() {
    check(timeline(vec![
        vec![(0, Ev::BecameLeader)],
        beats("node-1", 0, 1000),
        beats("node-2", 0, 1000),
        vec![
            (2500, Ev::Expect(&["NotReady node-1", "NotReady node-2"])),
            (10_000, Ev::Expect(&[])),
        ],
    ]));
}

/// The first evaluation (every 10 ms) that evicts, for heartbeats ending at `last_ms`.
fn first_eviction_ms(config: &LifecycleConfig, last_ms: i64) -> i64 {
    let (nodes, pods) = cluster();
    let mut tracker = NodeTracker::new();
    tracker.became_leader(T0);
    for t in (0..=20_000).step_by(10) {
        if t <= last_ms {
            tracker.heartbeat("node-1", T0 + t);
        }
        tracker.heartbeat("node-2", T0 + t);
        let actions = tracker.evaluate(&nodes, &pods, T0 + t, config);
        if actions
            .iter()
            .any(|a| matches!(a, NodeAction::Evict { .. }))
        {
            return t;
        }
    }
    panic!("no eviction");
}

#[test]
fn no_eviction_before_the_agent_lease_and_margin_ran_out() {
    for (grace_ms, lease_ms, eviction_margin_ms) in
        [(1500, 2000, 1000), (500, 1000, 0), (3000, 3000, 2000)]
    {
        let config = LifecycleConfig {
            grace_ms,
            lease_ms,
            eviction_margin_ms,
        };
        config.validate().expect("valid");
        for last_ms in [0, 730, 4000] {
            let evicted = first_eviction_ms(&config, last_ms);
            assert_eq!(
                evicted,
                last_ms + lease_ms + eviction_margin_ms,
                "{config:?}, last heartbeat {last_ms}"
            );
        }
    }
}

#[test]
fn marking_adds_and_removes_only_the_lifecycle_taints() {
    let (mut nodes, pods) = cluster();
    let own = Taint {
        key: "dedicated".to_owned(),
        value: "gpu".to_owned(),
        effect: TaintEffect::NoSchedule,
        time_added: None,
    };
    nodes[0].spec.taints = vec![own.clone()];
    let mut tracker = NodeTracker::new();
    tracker.became_leader(T0);
    tracker.heartbeat("node-2", T0 + 1500);
    let actions = tracker.evaluate(&nodes[..1], &pods, T0 + 1500, &LifecycleConfig::default());
    let NodeAction::MarkNotReady { ready, taints, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::Unknown, "NodeStatusUnknown")
    );
    let keys: Vec<(&str, TaintEffect)> =
        taints.iter().map(|t| (t.key.as_str(), t.effect)).collect();
    assert_eq!(
        keys,
        vec![
            ("dedicated", TaintEffect::NoSchedule),
            (UNREACHABLE_TAINT_KEY, TaintEffect::NoExecute),
            (NOT_READY_TAINT_KEY, TaintEffect::NoSchedule)
        ]
    );
    assert_eq!(taints[1].time_added, Some(at(T0 + 1500)));

    nodes[0].spec.taints = taints.clone();
    nodes[0].status.as_mut().expect("status").conditions = vec![ready.clone()];
    tracker.heartbeat("node-1", T0 + 1600);
    let actions = tracker.evaluate(&nodes[..1], &pods, T0 + 1600, &LifecycleConfig::default());
    let NodeAction::MarkReady { ready, taints, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(ready.status, ConditionStatus::True);
    assert_eq!(taints, &vec![own]);
}

#[test]
fn only_a_leader_judges_and_listens() {
    let (nodes, pods) = cluster();
    let mut tracker = NodeTracker::new();
    assert!(!tracker.heartbeat("node-1", T0));
    assert!(tracker
        .evaluate(&nodes, &pods, T0 + 60_000, &LifecycleConfig::default())
        .is_empty());
    tracker.became_leader(T0);
    assert!(tracker.heartbeat("node-1", T0));
    tracker.lost_leadership();
    assert!(tracker
        .evaluate(&nodes, &pods, T0 + 60_000, &LifecycleConfig::default())
        .is_empty());
    assert_eq!(tracker.silent_since_ms("node-1"), None);
}

#[test]
fn the_heartbeat_table_is_bounded() {
    let mut tracker = NodeTracker::new();
    tracker.became_leader(T0);
    for i in 0..MAX_TRACKED_NODES {
        assert!(tracker.heartbeat(&format!("n{i}"), T0));
    }
    assert!(!tracker.heartbeat("one-too-many", T0));
    assert!(tracker.heartbeat("n0", T0 + 1), "known nodes still beat");
    tracker.retain(|node| node != "n0");
    assert!(tracker.heartbeat("one-too-many", T0));
}

#[test]
fn configs_that_could_evict_before_marking_are_refused() {
    assert_eq!(LifecycleConfig::default().validate(), Ok(()));
    let bad = [
        LifecycleConfig {
            grace_ms: 4000,
            lease_ms: 2000,
            eviction_margin_ms: 1000,
        },
        LifecycleConfig {
            grace_ms: 1000,
            lease_ms: 0,
            eviction_margin_ms: 1000,
        },
        LifecycleConfig {
            grace_ms: 1000,
            lease_ms: 2000,
            eviction_margin_ms: -1,
        },
    ];
    for config in bad {
        assert!(
            matches!(
                config.validate(),
                Err(ControllerError::InvalidLifecycleConfig(_))
            ),
            "{config:?}"
        );
    }
}
