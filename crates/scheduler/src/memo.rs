//! Per-pod facts about what is already bound, computed once per pod so the per-node filter and
//! score steps are array reads: which bound pods' anti-affinity selects this pod, which bound
//! label sets this pod's anti-affinity selects, and how many of its owner's pods each node has.

use crate::compile::CompiledPod;
use crate::snapshot::ClusterSnapshot;

/// Sized to the snapshot (nodes, label sets, selectors); reused across the pods of a batch.
///
/// Existing anti-affinity is decided eagerly: when a pod is compiled, every stored selector of
/// its namespace is matched against it once (selectors are few: one per distinct anti-affinity
/// spec), and most pods match none and skip the check entirely. The pod's own anti-affinity is
/// decided lazily per bound label set the scan meets, since label sets can be many. Owner counts
/// cost one pass over the nodes the owner occupies. Entries are stamped with a generation, so
/// nothing is cleared between pods.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    generation: u32,
    label_sets: Vec<(u32, bool)>,
    selectors: Vec<(u32, bool)>,
    pub(crate) any_selector_matches: bool,
    /// Pods of the pod's owner per node index: filled from the owner's sparse map once per pod,
    /// so scoring each candidate is an array read instead of a hash probe.
    owner_pods: Vec<(u32, u32)>,
}

impl Memo {
    pub(crate) fn begin_pod(&mut self, pod: &CompiledPod, snapshot: &ClusterSnapshot) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // After 4 billion pods, old stamps could collide with new ones: forget them all.
            self.label_sets.clear();
            self.selectors.clear();
            self.owner_pods.clear();
            self.generation = 1;
        }
        self.owner_pods.resize(snapshot.node_count(), (0, 0));
        if let Some(owner) = pod.owner {
            for (&node, &count) in &snapshot.owners[owner as usize].pods_per_node {
                self.owner_pods[node as usize] = (self.generation, count);
            }
        }
        self.label_sets
            .resize(snapshot.label_sets.len(), (0, false));
        self.selectors.resize(snapshot.selectors.len(), (0, false));
        self.any_selector_matches = false;
        for &id in snapshot.selectors_in(pod.namespace) {
            let selector = &snapshot.selectors[id as usize];
            let matches = selector.terms.iter().any(|&span| {
                selector
                    .exprs
                    .all_match(span, &pod.labels, &snapshot.interner)
            });
            self.selectors[id as usize] = (self.generation, matches);
            self.any_selector_matches |= matches;
        }
    }

    /// Pods of the pod's owner on `node`.
    pub(crate) fn owner_pods_on(&self, node: usize) -> u32 {
        match self.owner_pods[node] {
            (generation, count) if generation == self.generation => count,
            _ => 0,
        }
    }

    /// Whether stored selector `id` (a bound pod's anti-affinity) selects the pod.
    pub(crate) fn selector_matches(&self, id: u32) -> bool {
        self.selectors[id as usize] == (self.generation, true)
    }

    pub(crate) fn label_set_matches(&mut self, id: u32, compute: impl FnOnce() -> bool) -> bool {
        let slot = &mut self.label_sets[id as usize];
        if slot.0 != self.generation {
            *slot = (self.generation, compute());
        }
        slot.1
    }
}
