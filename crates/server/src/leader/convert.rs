//! API objects into the scheduler's compact input model (the scheduler crate knows nothing of
//! the API's types).

use flotilla_scheduler as sched;
use flotilla_state::objects::{
    ConditionStatus, LabelSelector, LabelSelectorOperator, Node, NodeSelectorOperator,
    NodeSelectorTerm, Pod, Protocol, TaintEffect, TolerationOperator,
};

/// The label that carries a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

fn effect(e: &TaintEffect) -> sched::TaintEffect {
    match e {
        TaintEffect::NoSchedule => sched::TaintEffect::NoSchedule,
        TaintEffect::PreferNoSchedule => sched::TaintEffect::PreferNoSchedule,
        TaintEffect::NoExecute => sched::TaintEffect::NoExecute,
    }
}

/// Whether the node reports Ready=True.
pub fn node_ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

pub fn node_info(node: &Node) -> sched::NodeInfo {
    let allocatable = node.status.as_ref().map(|s| &s.allocatable);
    let get = |name: &str, milli: bool| {
        allocatable.and_then(|a| a.get(name)).map_or(0, |q| {
            if milli {
                q.milli_value()
            } else {
                q.value()
            }
        })
    };
    let mut info = sched::NodeInfo::new(
        node.metadata.name.clone(),
        sched::Allocatable::new(get("cpu", true), get("memory", false), get("pods", false)),
    );
    info.labels = node.metadata.labels.clone();
    info.taints = node
        .spec
        .taints
        .iter()
        .map(|t| sched::Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: effect(&t.effect),
        })
        .collect();
    info.unschedulable = node.spec.unschedulable;
    info.ready = node_ready(node);
    info
}

fn term(t: &NodeSelectorTerm) -> sched::NodeSelectorTerm {
    let mut out = sched::NodeSelectorTerm::new();
    out.match_expressions = t
        .match_expressions
        .iter()
        .map(|r| sched::SelectorRequirement {
            key: r.key.clone(),
            operator: match r.operator {
                NodeSelectorOperator::In => sched::SelectorOperator::In,
                NodeSelectorOperator::NotIn => sched::SelectorOperator::NotIn,
                NodeSelectorOperator::Exists => sched::SelectorOperator::Exists,
                NodeSelectorOperator::DoesNotExist => sched::SelectorOperator::DoesNotExist,
                NodeSelectorOperator::Gt => sched::SelectorOperator::Gt,
                NodeSelectorOperator::Lt => sched::SelectorOperator::Lt,
            },
            values: r.values.clone(),
        })
        .collect();
    out
}

fn label_selector(s: &LabelSelector) -> sched::LabelSelector {
    let mut out = sched::LabelSelector::new();
    out.match_labels = s.match_labels.clone();
    out.match_expressions = s
        .match_expressions
        .iter()
        .map(|r| sched::LabelSelectorRequirement {
            key: r.key.clone(),
            operator: match r.operator {
                LabelSelectorOperator::In => sched::LabelSelectorOperator::In,
                LabelSelectorOperator::NotIn => sched::LabelSelectorOperator::NotIn,
                LabelSelectorOperator::Exists => sched::LabelSelectorOperator::Exists,
                LabelSelectorOperator::DoesNotExist => sched::LabelSelectorOperator::DoesNotExist,
            },
            values: r.values.clone(),
        })
        .collect();
    out
}

pub fn pod_info(pod: &Pod) -> sched::PodInfo {
    let mut info = sched::PodInfo::new(pod.metadata.namespace.clone(), pod.metadata.name.clone());
    info.labels = pod.metadata.labels.clone();
    let (mut cpu, mut memory) = (0, 0);
    for c in &pod.spec.containers {
        if let Some(q) = c.resources.requests.get("cpu") {
            cpu += q.milli_value();
        }
        if let Some(q) = c.resources.requests.get("memory") {
            memory += q.value();
        }
        for port in &c.ports {
            if let Some(host_port) = port.host_port.filter(|p| *p > 0) {
                info.host_ports.push(sched::HostPort {
                    protocol: match port.protocol {
                        Some(Protocol::Udp) => sched::Protocol::Udp,
                        Some(Protocol::Sctp) => sched::Protocol::Sctp,
                        _ => sched::Protocol::Tcp,
                    },
                    port: host_port as u16,
                });
            }
        }
    }
    info.requests = sched::Resources::new(cpu, memory);
    info.node_selector = pod.spec.node_selector.clone();
    if let Some(affinity) = &pod.spec.affinity {
        if let Some(node) = &affinity.node_affinity {
            info.required_node_affinity = node
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .map(|r| r.node_selector_terms.iter().map(term).collect());
            info.preferred_node_affinity = node
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .map(|p| sched::PreferredSchedulingTerm {
                    weight: p.weight,
                    term: term(&p.preference),
                })
                .collect();
        }
        if let Some(anti) = &affinity.pod_anti_affinity {
            info.anti_affinity = anti
                .required_during_scheduling_ignored_during_execution
                .iter()
                .filter(|t| t.topology_key == "kubernetes.io/hostname")
                .filter_map(|t| t.label_selector.as_ref().map(label_selector))
                .collect();
        }
    }
    info.tolerations = pod
        .spec
        .tolerations
        .iter()
        .map(|t| sched::Toleration {
            key: t.key.clone(),
            operator: match t.operator {
                Some(TolerationOperator::Exists) => sched::TolerationOperator::Exists,
                _ => sched::TolerationOperator::Equal,
            },
            value: t.value.clone(),
            effect: t.effect.as_ref().map(effect),
        })
        .collect();
    info.owner = pod.metadata.controller_owner().map(|o| o.uid.clone());
    info
}
