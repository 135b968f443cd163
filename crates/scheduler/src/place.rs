//! Placement: scan nodes from a start index, filter, score a bounded sample of feasible nodes,
//! and pick one — for one pod (`schedule_one`) or for many against one snapshot
//! (`schedule_batch`).
//!
//! Bounds: per pod the scan examines each node at most once and stops after
//! `SchedulerConfig::feasible_nodes_to_find` feasible nodes, which are all that get scored. So a
//! feasible node is found whenever one exists, and a pod that fits nowhere costs one pass over
//! all nodes. Scratch buffers (compiled pod, memo, candidates, reason tally) are reused across
//! the pods of a batch; the only allocations per placed pod are the bound node's name in the
//! decision and the snapshot's bookkeeping for the new pod.

use crate::compile::CompiledPod;
use crate::config::SchedulerConfig;
use crate::filter;
use crate::memo::Memo;
use crate::model::PodInfo;
use crate::reasons::{Tally, UnschedulableSummary};
use crate::score::{self, Candidate};
use crate::snapshot::ClusterSnapshot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind { node: String },
    Unschedulable { reasons: UnschedulableSummary },
}

#[derive(Debug, Default)]
struct Scratch {
    pod: CompiledPod,
    memo: Memo,
    tally: Tally,
    candidates: Vec<Candidate>,
}

/// Chooses a node for `pod`, or explains why none fits.
///
/// The snapshot is borrowed immutably, so the scan cannot rotate its start index as a batch
/// does; it starts at the snapshot's start index offset by a hash of the pod id instead, which
/// spreads the sampled nodes of successive calls over the cluster.
pub fn schedule_one(
    pod: &PodInfo,
    snapshot: &ClusterSnapshot,
    config: &SchedulerConfig,
) -> Decision {
    let mut scratch = Scratch::default();
    scratch.pod.compile(pod, snapshot);
    let offset = scratch.pod.hash as usize;
    let (chosen, _examined) = place(&mut scratch, snapshot, config, offset);
    decision(chosen, &scratch, snapshot)
}

/// Places `pods` in order against `snapshot`, accounting each placed pod (resources, pod slot,
/// host ports, labels, anti-affinity, owner) before the next one, and rotating the scan start
/// index by the nodes each pod examined, like kube-scheduler. Returns one decision per pod.
///
/// Cost is at most `pods.len() × nodes` filter checks (each pod scans every node at most once)
/// plus `pods.len() × feasible_nodes_to_find` scorings; the caller bounds `pods.len()` (the
/// leader's pending queue), and the snapshot grows by one bound pod per `Bind`.
pub fn schedule_batch(
    pods: &[PodInfo],
    snapshot: &mut ClusterSnapshot,
    config: &SchedulerConfig,
) -> Vec<Decision> {
    let mut scratch = Scratch::default();
    let mut decisions = Vec::with_capacity(pods.len());
    for pod in pods {
        scratch.pod.compile(pod, snapshot);
        let (chosen, examined) = place(&mut scratch, snapshot, config, 0);
        let node_count = snapshot.node_count().max(1);
        snapshot.scan_start = (snapshot.scan_start + examined) % node_count;
        if let Some(node) = chosen {
            snapshot.bind_at(node, pod);
        }
        decisions.push(decision(chosen, &scratch, snapshot));
    }
    decisions
}

/// Scans from `scan_start + offset`, returning the chosen node and how many nodes were examined.
fn place(
    scratch: &mut Scratch,
    snapshot: &ClusterSnapshot,
    config: &SchedulerConfig,
    offset: usize,
) -> (Option<usize>, usize) {
    let node_count = snapshot.node_count();
    if node_count == 0 {
        scratch.tally.clear();
        return (None, 0);
    }
    let wanted = config.feasible_nodes_to_find(node_count);
    let Scratch {
        pod,
        memo,
        tally,
        candidates,
    } = scratch;
    candidates.clear();
    tally.clear();
    memo.begin_pod(pod, snapshot);
    let mut node = (snapshot.scan_start % node_count + offset % node_count) % node_count;
    let mut examined = 0;
    while examined < node_count && candidates.len() < wanted {
        match filter::check(pod, snapshot, node, memo) {
            Ok(()) => candidates.push(score::candidate(pod, snapshot, memo, node, config.strategy)),
            Err(failure) => tally.add(failure),
        }
        examined += 1;
        node += 1;
        if node == node_count {
            node = 0;
        }
    }
    let chosen = score::pick(pod, snapshot, candidates, config.weights);
    (chosen, examined)
}

fn decision(chosen: Option<usize>, scratch: &Scratch, snapshot: &ClusterSnapshot) -> Decision {
    match chosen {
        Some(node) => Decision::Bind {
            node: snapshot.nodes[node].name.clone(),
        },
        None => Decision::Unschedulable {
            reasons: scratch
                .tally
                .summary(snapshot.node_count(), &snapshot.interner),
        },
    }
}
