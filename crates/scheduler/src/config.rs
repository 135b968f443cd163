//! Scheduler configuration: scoring strategy, plugin weights, and how many feasible nodes to
//! find before scoring (`percentage_of_nodes_to_score`, as in kube-scheduler).

/// Below this many nodes every node is considered; above it, at least this many feasible nodes
/// are found before the scan stops (kube-scheduler's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;

/// The adaptive percentage never drops below this (kube-scheduler's
/// `minFeasibleNodesPercentageToFind`).
pub const MIN_ADAPTIVE_PERCENTAGE: usize = 5;

/// How requested resources turn into a node score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScoringStrategy {
    /// Prefer nodes with the most free cpu and memory: spreads load.
    #[default]
    LeastAllocated,
    /// Prefer nodes with the least free cpu and memory: packs pods onto few nodes.
    MostAllocated,
}

/// Weight of each score plugin in the weighted sum; each plugin scores 0..=100. A weight of 0
/// turns a plugin off. Defaults follow kube-scheduler's default profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreWeights {
    /// Free (LeastAllocated) or used (MostAllocated) share of cpu and memory.
    pub resources: u32,
    /// cpu and memory used in similar proportions.
    pub balanced_allocation: u32,
    /// Preferred node affinity: sum of matching term weights.
    pub node_affinity: u32,
    /// Fewer untolerated PreferNoSchedule taints.
    pub taint_toleration: u32,
    /// Fewer replicas of the pod's owner on the node and in its zone.
    pub spreading: u32,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            resources: 1,
            balanced_allocation: 1,
            node_affinity: 2,
            taint_toleration: 3,
            spreading: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub strategy: ScoringStrategy,
    pub weights: ScoreWeights,
    /// Percentage of all nodes whose feasible members are scored. `None` (or `Some(0)`) is
    /// adaptive: `max(5, 50 - nodes/125)` percent. Values above 100 count as 100.
    ///
    /// Bound: per pod, at most `max(MIN_FEASIBLE_NODES_TO_FIND, nodes * percentage / 100)`
    /// feasible nodes are scored (all nodes when the cluster has fewer than
    /// `MIN_FEASIBLE_NODES_TO_FIND`), and the scan never examines more than every node once, so a
    /// feasible node is always found when one exists.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl SchedulerConfig {
    pub fn most_allocated() -> Self {
        SchedulerConfig {
            strategy: ScoringStrategy::MostAllocated,
            ..SchedulerConfig::default()
        }
    }

    /// How many feasible nodes to find before scanning stops, for a cluster of `total_nodes`.
    pub fn feasible_nodes_to_find(&self, total_nodes: usize) -> usize {
        if total_nodes < MIN_FEASIBLE_NODES_TO_FIND {
            return total_nodes;
        }
        let percentage = match self.percentage_of_nodes_to_score {
            Some(p) if p > 0 => (p as usize).min(100),
            _ => (50usize.saturating_sub(total_nodes / 125)).max(MIN_ADAPTIVE_PERCENTAGE),
        };
        if percentage >= 100 {
            return total_nodes;
        }
        (total_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(percentage: Option<u32>, total_nodes: usize, expected: usize) {
        let config = SchedulerConfig {
            percentage_of_nodes_to_score: percentage,
            ..SchedulerConfig::default()
        };
        assert_eq!(
            config.feasible_nodes_to_find(total_nodes),
            expected,
            "percentage {percentage:?}, {total_nodes} nodes"
        );
    }

    #[test]
    fn feasible_nodes_to_find_follows_kube_scheduler() {
        check(None, 0, 0);
        check(None, 50, 50);
        check(None, 99, 99);
        check(None, 100, 100); // 49% of 100 = 49, raised to the minimum of 100
        check(None, 1_000, 420); // 50 - 8 = 42%
        check(None, 5_000, 500); // 50 - 40 = 10%
        check(None, 10_000, 500); // 50 - 80 < 5, so 5%
        check(Some(0), 5_000, 500);
        check(Some(30), 5_000, 1_500);
        check(Some(1), 5_000, 100);
        check(Some(100), 5_000, 5_000);
        check(Some(250), 5_000, 5_000);
    }
}
