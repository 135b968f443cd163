//! Garbage collection: dependents whose every owner is gone (deleted with background
//! propagation), and pods stuck terminating where no agent will ever confirm their end — on a
//! node silent for longer than its agent's lease plus the margin, or never scheduled at all.
//! Both are level-triggered: a cascade (Deployment → ReplicaSets → Pods) unfolds over passes.
//!
//! Owners and dependents are judged from one set of objects; where they come from separate
//! caches, the caller confirms a verdict on a later pass before acting, since one cache may lag.

use std::borrow::Borrow;
use std::collections::HashSet;

use flotilla_state::objects::{Kind, ObjectMeta, Pod};

use crate::node_lifecycle::{LifecycleConfig, NodeTracker};
use crate::refs::{ObjectRef, PodRef};

/// Dependents one pass may delete.
pub const MAX_GARBAGE_PER_PASS: usize = 500;
/// Pods one pass may force-delete.
pub const MAX_FORCE_DELETES_PER_PASS: usize = 500;
/// Grace period of a force delete.
pub const FORCE_DELETE_GRACE_SECONDS: i64 = 0;

/// Among `objects` (kind and metadata, borrowed), those that have owners, none of which is live
/// (among `objects`, by uid). Objects without owners are never garbage, and neither is an object
/// with an owner of a kind outside `owner_kinds`: the caller does not see that kind, so it cannot
/// tell a dead owner from one it was not shown.
pub fn garbage(objects: &[(Kind, &ObjectMeta)], owner_kinds: &[&str]) -> Vec<ObjectRef> {
    // Only objects of the owner kinds can be the owners that matter: the set stays as small as
    // the ReplicaSets and Deployments, not as large as the pods.
    let live: HashSet<&str> = objects
        .iter()
        .filter(|(kind, _)| owner_kinds.contains(&kind.name()))
        .map(|(_, metadata)| metadata.uid.as_str())
        .filter(|uid| !uid.is_empty())
        .collect();
    objects
        .iter()
        .filter(|(_, metadata)| !metadata.owner_references.is_empty())
        .filter(|(_, metadata)| {
            metadata.owner_references.iter().all(|owner| {
                owner_kinds.contains(&owner.kind.as_str()) && !live.contains(owner.uid.as_str())
            })
        })
        .map(|(kind, metadata)| ObjectRef::of(*kind, metadata))
        .take(MAX_GARBAGE_PER_PASS)
        .collect()
}

/// Terminating pods to force-delete (grace [`FORCE_DELETE_GRACE_SECONDS`]): unscheduled ones,
/// and those on a node this leader has not heard from for `lease + margin`. Nothing while the
/// tracker is not leader.
pub fn stuck_terminating<P: Borrow<Pod>>(
    pods: &[P],
    tracker: &NodeTracker,
    now_ms: i64,
    config: &LifecycleConfig,
) -> Vec<PodRef> {
    pods.iter()
        .map(Borrow::borrow)
        .filter(|pod| pod.metadata.deletion_timestamp.is_some())
        .filter(|pod| {
            let node = &pod.spec.node_name;
            let Some(silent_since) = tracker.silent_since_ms(node) else {
                return false;
            };
            node.is_empty() || now_ms - silent_since >= config.eviction_after_ms()
        })
        .map(PodRef::of)
        .take(MAX_FORCE_DELETES_PER_PASS)
        .collect()
}
