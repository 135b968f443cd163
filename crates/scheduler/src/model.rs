//! The scheduler's own input model: plain, cheap-to-build descriptions of nodes and pods.
//!
//! The leader converts API objects into these types; nothing here knows about protobuf, Raft or
//! storage. Builders (`with_*`) exist so tests and callers can state a node or pod in one
//! expression.

use std::collections::BTreeMap;

/// Node label holding the node's failure zone; `NodeInfo::zone` reads it.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Taint key the scheduler treats as set on an unschedulable (cordoned) node.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Taint key the scheduler treats as set on a node that is not ready.
pub const NOT_READY_TAINT_KEY: &str = "node.kubernetes.io/not-ready";

/// Resources a pod asks for: the sum over its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
}

/// What a node offers to pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl Resources {
    pub fn new(cpu_milli: i64, memory_bytes: i64) -> Self {
        Resources {
            cpu_milli,
            memory_bytes,
        }
    }
}

impl Allocatable {
    pub fn new(cpu_milli: i64, memory_bytes: i64, pods: i64) -> Self {
        Allocatable {
            cpu_milli,
            memory_bytes,
            pods,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    pub allocatable: Allocatable,
}

impl NodeInfo {
    /// A ready, schedulable node without labels or taints.
    pub fn new(name: impl Into<String>, allocatable: Allocatable) -> Self {
        NodeInfo {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            unschedulable: false,
            ready: true,
            allocatable,
        }
    }

    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn with_zone(self, zone: impl Into<String>) -> Self {
        self.with_label(ZONE_LABEL, zone)
    }

    pub fn with_taint(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        effect: TaintEffect,
    ) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: value.into(),
            effect,
        });
        self
    }

    pub fn with_unschedulable(mut self, unschedulable: bool) -> Self {
        self.unschedulable = unschedulable;
        self
    }

    pub fn with_ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    /// The zone, derived from the `topology.kubernetes.io/zone` label.
    pub fn zone(&self) -> Option<&str> {
        self.labels.get(ZONE_LABEL).map(String::as_str)
    }
}

/// Operators of node selector requirements (node affinity). Label selectors use the first four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// The node's label, read as an integer, is greater than the single value.
    Gt,
    /// The node's label, read as an integer, is less than the single value.
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

/// An AND of requirements. An empty term matches no node, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<SelectorRequirement>,
}

impl NodeSelectorTerm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, operator: SelectorOperator, values: &[&str]) -> Self {
        self.match_expressions
            .push(requirement(key, operator, values));
        self
    }
}

/// A preferred node-affinity term; `weight` is 1..=100 (values outside are clamped to 0..=100).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PreferredSchedulingTerm {
    pub weight: i32,
    pub term: NodeSelectorTerm,
}

/// Operators allowed in a label selector's `matchExpressions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl From<LabelSelectorOperator> for SelectorOperator {
    fn from(op: LabelSelectorOperator) -> Self {
        match op {
            LabelSelectorOperator::In => SelectorOperator::In,
            LabelSelectorOperator::NotIn => SelectorOperator::NotIn,
            LabelSelectorOperator::Exists => SelectorOperator::Exists,
            LabelSelectorOperator::DoesNotExist => SelectorOperator::DoesNotExist,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: LabelSelectorOperator,
    pub values: Vec<String>,
}

/// `matchLabels` AND `matchExpressions`. An empty selector matches every pod (of the namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn match_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.match_labels.insert(key.into(), value.into());
        self
    }

    pub fn match_expression(
        mut self,
        key: &str,
        operator: LabelSelectorOperator,
        values: &[&str],
    ) -> Self {
        self.match_expressions.push(LabelSelectorRequirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        });
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

/// Tolerates taints as in Kubernetes: an empty `key` with `Exists` matches every key, and
/// `effect: None` matches every effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    pub key: String,
    pub operator: TolerationOperator,
    pub value: String,
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    pub fn equal(key: &str, value: &str, effect: Option<TaintEffect>) -> Self {
        Toleration {
            key: key.to_string(),
            operator: TolerationOperator::Equal,
            value: value.to_string(),
            effect,
        }
    }

    pub fn exists(key: &str, effect: Option<TaintEffect>) -> Self {
        Toleration {
            key: key.to_string(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    /// `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`: an OR of terms.
    /// `None` means no requirement; `Some(empty)` matches no node, as in Kubernetes.
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    /// Required pod anti-affinity terms, all with topology key `kubernetes.io/hostname`: no pod
    /// of this pod's namespace matching any selector may already run on the chosen node.
    pub anti_affinity: Vec<LabelSelector>,
    pub host_ports: Vec<HostPort>,
    /// Uid of the controlling owner (a ReplicaSet); replicas of one owner are spread.
    pub owner: Option<String>,
}

impl PodInfo {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodInfo {
            namespace: namespace.into(),
            name: name.into(),
            ..PodInfo::default()
        }
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn with_requests(mut self, cpu_milli: i64, memory_bytes: i64) -> Self {
        self.requests = Resources::new(cpu_milli, memory_bytes);
        self
    }

    pub fn with_node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// Adds one term to the required node affinity (terms are ORed).
    pub fn with_required_term(mut self, term: NodeSelectorTerm) -> Self {
        self.required_node_affinity
            .get_or_insert_with(Vec::new)
            .push(term);
        self
    }

    pub fn with_preferred_term(mut self, weight: i32, term: NodeSelectorTerm) -> Self {
        self.preferred_node_affinity
            .push(PreferredSchedulingTerm { weight, term });
        self
    }

    pub fn with_toleration(mut self, toleration: Toleration) -> Self {
        self.tolerations.push(toleration);
        self
    }

    pub fn with_anti_affinity(mut self, selector: LabelSelector) -> Self {
        self.anti_affinity.push(selector);
        self
    }

    pub fn with_host_port(mut self, protocol: Protocol, port: u16) -> Self {
        self.host_ports.push(HostPort { protocol, port });
        self
    }

    pub fn with_owner(mut self, owner_uid: impl Into<String>) -> Self {
        self.owner = Some(owner_uid.into());
        self
    }
}

fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
    SelectorRequirement {
        key: key.to_string(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}
