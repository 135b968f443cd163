//! Garbage collection: dependents whose every owner is gone (deleted with background
//! propagation), and pods stuck terminating where no agent will ever confirm their end — on a
//! node silent for longer than its agent's lease plus the margin, or never scheduled at all.
//! Both are level-triggered: a cascade (Deployment → ReplicaSets → Pods) unfolds over passes.
//!
//! `objects` and `live_uids` must come from one consistent read (the same revision): an owner
//! created after the read of `live_uids` but before that of `objects` would look dead.

use std::collections::HashSet;

use flotilla_state::objects::{Object, Pod};

use crate::node_lifecycle::{LifecycleConfig, NodeTracker};
use crate::refs::{ObjectRef, PodRef};

/// Dependents one pass may delete.
pub const MAX_GARBAGE_PER_PASS: usize = 500;
/// Pods one pass may force-delete.
pub const MAX_FORCE_DELETES_PER_PASS: usize = 500;
/// Grace period of a force delete.
pub const FORCE_DELETE_GRACE_SECONDS: i64 = 0;

/// An object and the uids of its owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRef {
    pub object: ObjectRef,
    pub owner_uids: Vec<String>,
}

impl OwnedRef {
    pub fn of(object: &Object) -> OwnedRef {
        let metadata = object.metadata();
        OwnedRef {
            object: ObjectRef::of(object.kind(), metadata),
            owner_uids: metadata
                .owner_references
                .iter()
                .map(|owner| owner.uid.clone())
                .collect(),
        }
    }
}

/// Objects that have owners, none of which is live. Objects without owners are never garbage.
pub fn garbage(objects: &[OwnedRef], live_uids: &HashSet<String>) -> Vec<ObjectRef> {
    objects
        .iter()
        .filter(|owned| !owned.owner_uids.is_empty())
        .filter(|owned| owned.owner_uids.iter().all(|uid| !live_uids.contains(uid)))
        .map(|owned| owned.object.clone())
        .take(MAX_GARBAGE_PER_PASS)
        .collect()
}

/// Terminating pods to force-delete (grace [`FORCE_DELETE_GRACE_SECONDS`]): unscheduled ones,
/// and those on a node this leader has not heard from for `lease + margin`. Nothing while the
/// tracker is not leader.
pub fn stuck_terminating(
    pods: &[Pod],
    tracker: &NodeTracker,
    now_ms: i64,
    config: &LifecycleConfig,
) -> Vec<PodRef> {
    pods.iter()
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

/// Every object's [`OwnedRef`], and the set of live uids, from one listing.
pub fn index(objects: &[Object]) -> (Vec<OwnedRef>, HashSet<String>) {
    let owned = objects.iter().map(OwnedRef::of).collect();
    let live = objects
        .iter()
        .map(|object| object.metadata().uid.clone())
        .filter(|uid| !uid.is_empty())
        .collect();
    (owned, live)
}
