//! Placement: filter + score as a pure function of (pod, cluster snapshot) -> decision, and batch
//! placement. No IO.
//!
//! The Raft leader converts API objects into this crate's own input types ([`NodeInfo`],
//! [`PodInfo`]), builds a [`ClusterSnapshot`] (adding pods already bound with
//! [`ClusterSnapshot::add_bound_pod`]), calls [`schedule_one`] or [`schedule_batch`], and commits
//! the resulting bindings. This crate depends on no other flotilla crate.
//!
//! Codemap:
//! - `model`: the input types and their builders.
//! - `config`: [`SchedulerConfig`], including the bound on how many feasible nodes get scored.
//! - `snapshot`: [`ClusterSnapshot`], nodes and what is bound to them, interned for speed.
//! - `intern`, `matcher`, `compile`: strings to ids, selector evaluation, a pod's compiled
//!   requirements.
//! - `memo`: per-pod facts about bound pods (anti-affinity matches, owner replicas per node).
//! - `filter`: the feasibility checks; `score`: the score plugins and the tie-break.
//! - `reasons`: the "0/N nodes are available: ..." summary.
//! - `place`: the scan loop, [`schedule_one`], [`schedule_batch`], [`Decision`].
//!
//! Architecture invariant: nothing here does IO, reads a clock or uses randomness; the same
//! inputs always give the same decisions.

mod compile;
mod config;
mod filter;
mod intern;
mod matcher;
mod memo;
mod model;
mod place;
mod reasons;
mod score;
mod snapshot;

pub use config::{
    SchedulerConfig, ScoreWeights, ScoringStrategy, MIN_ADAPTIVE_PERCENTAGE,
    MIN_FEASIBLE_NODES_TO_FIND,
};
pub use model::{
    Allocatable, HostPort, LabelSelector, LabelSelectorOperator, LabelSelectorRequirement,
    NodeInfo, NodeSelectorTerm, PodInfo, PreferredSchedulingTerm, Protocol, Resources,
    SelectorOperator, SelectorRequirement, Taint, TaintEffect, Toleration, TolerationOperator,
    NOT_READY_TAINT_KEY, UNSCHEDULABLE_TAINT_KEY, ZONE_LABEL,
};
pub use place::{schedule_batch, schedule_one, Decision};
pub use reasons::{ReasonCount, UnschedulableSummary};
pub use snapshot::{
    ClusterSnapshot, NodeUsage, SnapshotError, DEFAULT_SCORE_CPU_MILLI, DEFAULT_SCORE_MEMORY_BYTES,
};
