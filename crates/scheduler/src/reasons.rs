//! Why a pod fits nowhere: one reason per node (its first failing filter), counted and printed
//! the way kube-scheduler prints them, e.g.
//! `0/5 nodes are available: 3 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector.`

use std::fmt;

use crate::filter::Failure;
use crate::intern::Interner;

/// How many nodes were rejected for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: String,
    pub nodes: usize,
}

/// Reasons sorted by node count (descending), then by text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnschedulableSummary {
    pub total_nodes: usize,
    pub reasons: Vec<ReasonCount>,
}

impl fmt::Display for UnschedulableSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available", self.total_nodes)?;
        if self.total_nodes == 0 {
            return write!(f, ": no nodes in the cluster.");
        }
        for (i, r) in self.reasons.iter().enumerate() {
            let separator = if i == 0 { ": " } else { ", " };
            write!(f, "{separator}{} {}", r.nodes, r.reason)?;
        }
        write!(f, ".")
    }
}

/// Counts failures while nodes are scanned; holds interned ids until a summary is asked for.
/// Its size is bounded by the number of distinct reasons: ten kinds plus one per distinct taint.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: Vec<(Failure, usize)>,
}

impl Tally {
    pub(crate) fn clear(&mut self) {
        self.counts.clear();
    }

    pub(crate) fn add(&mut self, failure: Failure) {
        match self.counts.iter_mut().find(|(f, _)| *f == failure) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((failure, 1)),
        }
    }

    pub(crate) fn summary(&self, total_nodes: usize, interner: &Interner) -> UnschedulableSummary {
        let mut reasons: Vec<ReasonCount> = self
            .counts
            .iter()
            .map(|&(failure, nodes)| ReasonCount {
                reason: reason_text(failure, interner),
                nodes,
            })
            .collect();
        reasons.sort_by(|a, b| b.nodes.cmp(&a.nodes).then_with(|| a.reason.cmp(&b.reason)));
        UnschedulableSummary {
            total_nodes,
            reasons,
        }
    }
}

fn reason_text(failure: Failure, interner: &Interner) -> String {
    let text = match failure {
        Failure::NotReady => "node(s) were not ready",
        Failure::Unschedulable => "node(s) were unschedulable",
        Failure::UntoleratedTaint { key, value } => {
            return format!(
                "node(s) had untolerated taint {{{}: {}}}",
                interner.resolve(key),
                interner.resolve(value)
            )
        }
        Failure::NodeAffinity => "node(s) didn't match Pod's node affinity/selector",
        Failure::HostPorts => "node(s) didn't have free ports for the requested pod ports",
        Failure::TooManyPods => "Too many pods",
        Failure::InsufficientCpu => "Insufficient cpu",
        Failure::InsufficientMemory => "Insufficient memory",
        Failure::ExistingAntiAffinity => "node(s) didn't satisfy existing pods anti-affinity rules",
        Failure::AntiAffinity => "node(s) didn't match pod anti-affinity rules",
    };
    text.to_string()
}
