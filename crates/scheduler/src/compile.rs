//! A pod's scheduling requirements translated to the snapshot's interned ids, once per pod.
//!
//! Compiling looks strings up without inserting (the snapshot is borrowed immutably); a string
//! the snapshot has never seen becomes the unknown id and so matches no node label, taint or
//! bound pod. Buffers are reused across the pods of a batch.

use crate::intern::stable_hash;
use crate::matcher::{labels_into, ExprList, Span};
use crate::model::{HostPort, PodInfo, Resources, TaintEffect, Toleration, TolerationOperator};
use crate::snapshot::{nonzero_requests, ClusterSnapshot, InternedTaint};

#[derive(Debug, Clone, Copy)]
pub(crate) struct CompiledToleration {
    /// `None` tolerates every key (an empty key with `Exists`).
    key: Option<u32>,
    exists: bool,
    value: u32,
    effect: Option<TaintEffect>,
}

impl CompiledToleration {
    pub(crate) fn tolerates(&self, taint: &InternedTaint) -> bool {
        self.effect.is_none_or(|e| e == taint.effect)
            && self.key.is_none_or(|k| k == taint.key)
            && (self.exists || self.value == taint.value)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledPod {
    pub(crate) hash: u64,
    pub(crate) namespace: u32,
    pub(crate) labels: Vec<(u32, u32)>,
    pub(crate) requests: Resources,
    pub(crate) nonzero_requests: Resources,
    pub(crate) node_selector: Vec<(u32, u32)>,
    pub(crate) has_required_affinity: bool,
    pub(crate) required_terms: Vec<Span>,
    pub(crate) preferred_terms: Vec<(i64, Span)>,
    pub(crate) node_exprs: ExprList,
    pub(crate) tolerations: Vec<CompiledToleration>,
    pub(crate) tolerates_unschedulable: bool,
    pub(crate) tolerates_not_ready: bool,
    pub(crate) anti_terms: Vec<Span>,
    pub(crate) anti_exprs: ExprList,
    pub(crate) host_ports: Vec<HostPort>,
    pub(crate) owner: Option<u32>,
}

impl CompiledPod {
    pub(crate) fn compile(&mut self, pod: &PodInfo, snapshot: &ClusterSnapshot) {
        let interner = &snapshot.interner;
        let resolve = &mut |s: &str| interner.lookup(s);
        self.hash = stable_hash(&[&pod.namespace, &pod.name]);
        self.namespace = resolve(&pod.namespace);
        labels_into(&pod.labels, resolve, &mut self.labels);
        self.requests = pod.requests;
        self.nonzero_requests = nonzero_requests(pod.requests);
        self.node_selector.clear();
        self.node_selector.extend(
            pod.node_selector
                .iter()
                .map(|(k, v)| (resolve(k), resolve(v))),
        );
        self.compile_node_affinity(pod, resolve);
        self.compile_tolerations(&pod.tolerations, snapshot, resolve);
        self.anti_exprs.clear();
        self.anti_terms.clear();
        for selector in &pod.anti_affinity {
            let span = self.anti_exprs.push_label_selector(selector, resolve);
            self.anti_terms.push(span);
        }
        self.host_ports.clear();
        self.host_ports.extend_from_slice(&pod.host_ports);
        self.owner = pod.owner.as_deref().and_then(|uid| snapshot.owner_id(uid));
    }

    fn compile_node_affinity(&mut self, pod: &PodInfo, resolve: &mut impl FnMut(&str) -> u32) {
        self.node_exprs.clear();
        self.required_terms.clear();
        self.preferred_terms.clear();
        self.has_required_affinity = pod.required_node_affinity.is_some();
        for term in pod.required_node_affinity.iter().flatten() {
            let span = self
                .node_exprs
                .push_node_term(&term.match_expressions, resolve);
            self.required_terms.push(span);
        }
        for preferred in &pod.preferred_node_affinity {
            let weight = i64::from(preferred.weight.clamp(0, 100));
            let span = self
                .node_exprs
                .push_node_term(&preferred.term.match_expressions, resolve);
            self.preferred_terms.push((weight, span));
        }
    }

    fn compile_tolerations(
        &mut self,
        tolerations: &[Toleration],
        snapshot: &ClusterSnapshot,
        resolve: &mut impl FnMut(&str) -> u32,
    ) {
        self.tolerations.clear();
        self.tolerations
            .extend(tolerations.iter().map(|t| CompiledToleration {
                key: (!t.key.is_empty()).then(|| resolve(&t.key)),
                exists: t.operator == TolerationOperator::Exists,
                value: resolve(&t.value),
                effect: t.effect,
            }));
        let known = snapshot.well_known;
        let condition_taint = |key| InternedTaint {
            key,
            value: known.empty,
            effect: TaintEffect::NoSchedule,
        };
        self.tolerates_unschedulable = self.tolerates(&condition_taint(known.unschedulable_key));
        self.tolerates_not_ready = self.tolerates(&condition_taint(known.not_ready_key));
    }

    pub(crate) fn tolerates(&self, taint: &InternedTaint) -> bool {
        self.tolerations.iter().any(|t| t.tolerates(taint))
    }
}
