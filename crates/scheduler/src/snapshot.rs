//! `ClusterSnapshot`: the nodes and what is already bound to each, precomputed for placement.
//!
//! Built once from `NodeInfo`s, then grown with `add_bound_pod` (by the caller for pods already
//! bound, and by batch placement for each pod it places). Everything the filter and score loops
//! read per node is interned here: labels as id pairs, taints split into hard and soft, a dense
//! zone index, and per node the label sets and anti-affinity selectors of the pods bound there.

use std::collections::HashMap;

use crate::intern::{stable_hash, IdMap, Interner};
use crate::matcher::{labels_into, ExprList, Span};
use crate::model::{
    Allocatable, HostPort, NodeInfo, PodInfo, Resources, TaintEffect, NOT_READY_TAINT_KEY,
    UNSCHEDULABLE_TAINT_KEY,
};

/// Request assumed for scoring when a pod asks for no cpu (kube-scheduler's default).
pub const DEFAULT_SCORE_CPU_MILLI: i64 = 100;
/// Request assumed for scoring when a pod asks for no memory (kube-scheduler's default).
pub const DEFAULT_SCORE_MEMORY_BYTES: i64 = 200 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {0:?} appears twice in the snapshot")]
    DuplicateNode(String),
    #[error("node {0:?} is not in the snapshot")]
    UnknownNode(String),
}

/// What is already bound to a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub requested: Resources,
    pub pods: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InternedTaint {
    pub(crate) key: u32,
    pub(crate) value: u32,
    pub(crate) effect: TaintEffect,
}

/// The labels of bound pods, with their namespace: pods of one template share one label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LabelSet {
    pub(crate) namespace: u32,
    pub(crate) labels: Vec<(u32, u32)>,
}

/// A bound pod's required anti-affinity: pods of `namespace` matching any span may not join it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StoredSelector {
    pub(crate) namespace: u32,
    pub(crate) exprs: ExprList,
    pub(crate) terms: Vec<Span>,
}

/// Per-node data the scan reads, kept apart from `NodeInfo` so a node's hot fields share a few
/// cache lines.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub(crate) ready: bool,
    pub(crate) unschedulable: bool,
    pub(crate) allocatable: Allocatable,
    pub(crate) name_hash: u64,
    pub(crate) labels: Vec<(u32, u32)>,
    /// NoSchedule and NoExecute taints: must be tolerated.
    pub(crate) hard_taints: Vec<InternedTaint>,
    /// PreferNoSchedule taints: only lower the score.
    pub(crate) soft_taints: Vec<InternedTaint>,
    pub(crate) zone: Option<u32>,
    pub(crate) usage: NodeUsage,
    /// Like `usage.requested`, but zero requests count as the scoring defaults.
    pub(crate) nonzero_requested: Resources,
    pub(crate) host_ports: Vec<HostPort>,
    pub(crate) label_sets: Vec<(u32, u32)>,
    pub(crate) anti_selectors: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct OwnerStats {
    pub(crate) pods_per_node: IdMap<u32>,
    pub(crate) pods_per_zone: Vec<u32>,
}

/// Ids of strings placement needs without a lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WellKnown {
    pub(crate) unschedulable_key: u32,
    pub(crate) not_ready_key: u32,
    pub(crate) empty: u32,
}

#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) states: Vec<NodeState>,
    by_name: HashMap<String, usize>,
    pub(crate) interner: Interner,
    pub(crate) well_known: WellKnown,
    zone_count: usize,
    pub(crate) label_sets: Vec<LabelSet>,
    label_set_ids: HashMap<LabelSet, u32>,
    pub(crate) selectors: Vec<StoredSelector>,
    selector_ids: HashMap<StoredSelector, u32>,
    /// Stored selector ids per namespace id: only pods of that namespace can match them.
    selectors_by_namespace: HashMap<u32, Vec<u32>>,
    owner_ids: HashMap<String, u32>,
    pub(crate) owners: Vec<OwnerStats>,
    /// Where the next batch placement starts scanning (kube-scheduler's rotating start index).
    pub(crate) scan_start: usize,
}

impl ClusterSnapshot {
    /// A snapshot of `nodes` with nothing bound yet.
    pub fn new(nodes: Vec<NodeInfo>) -> Result<Self, SnapshotError> {
        let mut interner = Interner::default();
        let well_known = WellKnown {
            unschedulable_key: interner.intern(UNSCHEDULABLE_TAINT_KEY),
            not_ready_key: interner.intern(NOT_READY_TAINT_KEY),
            empty: interner.intern(""),
        };
        let mut by_name = HashMap::with_capacity(nodes.len());
        let mut zone_index: HashMap<String, u32> = HashMap::new();
        let mut states = Vec::with_capacity(nodes.len());
        for (index, node) in nodes.iter().enumerate() {
            if by_name.insert(node.name.clone(), index).is_some() {
                return Err(SnapshotError::DuplicateNode(node.name.clone()));
            }
            let zone = node.zone().map(|z| {
                let next = zone_index.len() as u32;
                *zone_index.entry(z.to_string()).or_insert(next)
            });
            states.push(node_state(node, zone, &mut interner));
        }
        Ok(ClusterSnapshot {
            nodes,
            states,
            by_name,
            interner,
            well_known,
            zone_count: zone_index.len(),
            label_sets: Vec::new(),
            label_set_ids: HashMap::new(),
            selectors: Vec::new(),
            selector_ids: HashMap::new(),
            selectors_by_namespace: HashMap::new(),
            owner_ids: HashMap::new(),
            owners: Vec::new(),
            scan_start: 0,
        })
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// What is bound to node `name` so far.
    pub fn usage(&self, name: &str) -> Option<NodeUsage> {
        self.by_name.get(name).map(|&i| self.states[i].usage)
    }

    /// Accounts `pod` as bound to node `name`: its requests, a pod slot, its host ports, its
    /// labels (for anti-affinity), its anti-affinity terms and its owner (for spreading).
    pub fn add_bound_pod(&mut self, name: &str, pod: &PodInfo) -> Result<(), SnapshotError> {
        let index = *self
            .by_name
            .get(name)
            .ok_or_else(|| SnapshotError::UnknownNode(name.to_string()))?;
        self.bind_at(index, pod);
        Ok(())
    }

    pub(crate) fn bind_at(&mut self, index: usize, pod: &PodInfo) {
        let label_set = self.intern_label_set(pod);
        let selector = self.intern_selector(pod);
        let owner = pod.owner.as_deref().map(|uid| self.intern_owner(uid));
        let state = &mut self.states[index];
        add_resources(&mut state.usage.requested, pod.requests);
        add_resources(&mut state.nonzero_requested, nonzero_requests(pod.requests));
        state.usage.pods = state.usage.pods.saturating_add(1);
        state.host_ports.extend_from_slice(&pod.host_ports);
        bump(&mut state.label_sets, label_set);
        if let Some(selector) = selector {
            bump(&mut state.anti_selectors, selector);
        }
        if let Some(owner) = owner {
            let stats = &mut self.owners[owner as usize];
            *stats.pods_per_node.entry(index as u32).or_insert(0) += 1;
            if let Some(zone) = state.zone {
                stats.pods_per_zone[zone as usize] += 1;
            }
        }
    }

    pub(crate) fn owner_id(&self, uid: &str) -> Option<u32> {
        self.owner_ids.get(uid).copied()
    }

    fn intern_label_set(&mut self, pod: &PodInfo) -> u32 {
        let interner = &mut self.interner;
        let mut labels = Vec::with_capacity(pod.labels.len());
        labels_into(&pod.labels, &mut |s| interner.intern(s), &mut labels);
        let set = LabelSet {
            namespace: interner.intern(&pod.namespace),
            labels,
        };
        intern_value(&mut self.label_set_ids, &mut self.label_sets, set)
    }

    fn intern_selector(&mut self, pod: &PodInfo) -> Option<u32> {
        if pod.anti_affinity.is_empty() {
            return None;
        }
        let interner = &mut self.interner;
        let mut exprs = ExprList::default();
        let terms = pod
            .anti_affinity
            .iter()
            .map(|s| exprs.push_label_selector(s, &mut |x| interner.intern(x)))
            .collect();
        let namespace = interner.intern(&pod.namespace);
        let selector = StoredSelector {
            namespace,
            exprs,
            terms,
        };
        let known = self.selectors.len();
        let id = intern_value(&mut self.selector_ids, &mut self.selectors, selector);
        if self.selectors.len() > known {
            self.selectors_by_namespace
                .entry(namespace)
                .or_default()
                .push(id);
        }
        Some(id)
    }

    /// Ids of the anti-affinity selectors of bound pods in `namespace`.
    pub(crate) fn selectors_in(&self, namespace: u32) -> &[u32] {
        self.selectors_by_namespace
            .get(&namespace)
            .map_or(&[], Vec::as_slice)
    }

    fn intern_owner(&mut self, uid: &str) -> u32 {
        if let Some(&id) = self.owner_ids.get(uid) {
            return id;
        }
        let id = self.owners.len() as u32;
        self.owner_ids.insert(uid.to_string(), id);
        self.owners.push(OwnerStats {
            pods_per_node: IdMap::default(),
            pods_per_zone: vec![0; self.zone_count],
        });
        id
    }
}

fn node_state(node: &NodeInfo, zone: Option<u32>, interner: &mut Interner) -> NodeState {
    let mut labels = Vec::with_capacity(node.labels.len());
    labels_into(&node.labels, &mut |s| interner.intern(s), &mut labels);
    let (mut hard_taints, mut soft_taints) = (Vec::new(), Vec::new());
    for taint in &node.taints {
        let interned = InternedTaint {
            key: interner.intern(&taint.key),
            value: interner.intern(&taint.value),
            effect: taint.effect,
        };
        match taint.effect {
            TaintEffect::PreferNoSchedule => soft_taints.push(interned),
            TaintEffect::NoSchedule | TaintEffect::NoExecute => hard_taints.push(interned),
        }
    }
    NodeState {
        ready: node.ready,
        unschedulable: node.unschedulable,
        allocatable: node.allocatable,
        name_hash: stable_hash(&[&node.name]),
        labels,
        hard_taints,
        soft_taints,
        zone,
        usage: NodeUsage::default(),
        nonzero_requested: Resources::default(),
        host_ports: Vec::new(),
        label_sets: Vec::new(),
        anti_selectors: Vec::new(),
    }
}

/// Pod requests with zero cpu or memory replaced by the scoring defaults.
pub(crate) fn nonzero_requests(requests: Resources) -> Resources {
    let or_default = |value: i64, default: i64| if value > 0 { value } else { default };
    Resources {
        cpu_milli: or_default(requests.cpu_milli, DEFAULT_SCORE_CPU_MILLI),
        memory_bytes: or_default(requests.memory_bytes, DEFAULT_SCORE_MEMORY_BYTES),
    }
}

fn add_resources(total: &mut Resources, more: Resources) {
    total.cpu_milli = total.cpu_milli.saturating_add(more.cpu_milli.max(0));
    total.memory_bytes = total.memory_bytes.saturating_add(more.memory_bytes.max(0));
}

/// Increments the count of `id` in a small per-node `(id, count)` list.
fn bump(counts: &mut Vec<(u32, u32)>, id: u32) {
    match counts.iter_mut().find(|(i, _)| *i == id) {
        Some((_, count)) => *count += 1,
        None => counts.push((id, 1)),
    }
}

fn intern_value<T: Clone + Eq + std::hash::Hash>(
    ids: &mut HashMap<T, u32>,
    values: &mut Vec<T>,
    value: T,
) -> u32 {
    if let Some(&id) = ids.get(&value) {
        return id;
    }
    let id = values.len() as u32;
    values.push(value.clone());
    ids.insert(value, id);
    id
}
