//! Leader-only reconcile loops: deployments/replicasets, node lifecycle and eviction, autoscaler,
//! endpoints, garbage collection.
//!
//! This crate holds the *deciding* half of those loops, as pure functions from data to plans (the
//! openraft shape: the engine decides, the runtime does IO). A thin loop elsewhere keeps informer
//! caches, calls a function here with what it sees and the current time as `now_ms` (Unix
//! milliseconds), and executes the returned plan with fenced writes. Every plan is plain data,
//! level-triggered (derived from the whole observed state, never from the event that woke the
//! loop), idempotent when re-derived from the same state, and bounded by a named constant.
//!
//! Codemap:
//! - [`replicaset`]: keep `spec.replicas` pods of a ReplicaSet (create from the template, delete
//!   in Kubernetes' preference order), its status, adoption and release of pods.
//! - [`deployment`]: rollouts (RollingUpdate, Recreate), pod-template-hash, revisions, rollback,
//!   proportional scaling, history limit, status and conditions; `rollout status/history/undo`
//!   helpers for the CLI.
//! - [`node_lifecycle`]: in-memory heartbeats, Ready ↔ NotReady transitions, taints and eviction
//!   timed so that a pod never runs on two nodes at once.
//! - [`gc`]: dependents whose owners are all gone; pods stuck terminating on a lost node.
//! - [`hpa`]: the HorizontalPodAutoscaler algorithm with tolerance and scale-down stabilization.
//! - [`expectations`]: creates and deletes issued but not yet seen, so a stale cache does not
//!   make a ReplicaSet create its pods twice.
//! - [`events`]: `v1 Event`s with stable names, merging of repeats, a per-loop budget.
//! - [`pods`]: pod predicates shared by the above (active, ready, available, deletion rank).
//! - [`refs`]: the references plans carry (`PodRef`, `ObjectRef`).
//!
//! Architecture invariant: nothing in this crate does IO or reads a clock; time comes in as
//! `now_ms` and leaves as data (`requeue_after_ms`, timestamps in statuses).
//!
//! Architecture invariant: every list a plan carries has a named upper bound
//! (`MAX_CREATES_PER_RECONCILE`, `MAX_EVICTIONS_PER_EVALUATION`, …).

pub mod deployment;
pub mod error;
pub mod events;
pub mod expectations;
pub mod gc;
mod hash;
pub mod hpa;
pub mod node_lifecycle;
pub mod pods;
pub mod refs;
pub mod replicaset;

pub use error::ControllerError;
pub use refs::{ObjectRef, PodRef};
