//! Expectations: the creates and deletes a loop has issued for an owner (a ReplicaSet) but not
//! yet seen in its cache. Pods are created with `generateName`, so re-deriving a plan from a
//! cache that does not show them yet would create them again; the loop skips an owner until
//! its expectations are satisfied (or have expired, in case a watch event was lost).

use std::collections::{HashMap, HashSet};

use crate::refs::PodRef;

/// After this long, unmet expectations are dropped and the owner reconciles anyway
/// (Kubernetes' `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT_MS: i64 = 300_000;
/// Owners tracked at once; beyond it `expect` refuses and the caller must not act.
pub const MAX_TRACKED_OWNERS: usize = 100_000;

#[derive(Clone, Debug, Default)]
struct Pending {
    creates: usize,
    deletes: HashSet<String>,
    set_at_ms: i64,
}

/// Pending creates (counted) and deletes (by pod uid), per owner uid.
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    pending: HashMap<String, Pending>,
}

impl Expectations {
    pub fn new() -> Expectations {
        Expectations::default()
    }

    /// Records that the loop is about to issue `creates` creations and the `deletes` for
    /// `owner_uid`. False (and nothing recorded) when the table is full.
    pub fn expect(
        &mut self,
        owner_uid: &str,
        creates: usize,
        deletes: &[PodRef],
        now_ms: i64,
    ) -> bool {
        if !self.pending.contains_key(owner_uid) && self.pending.len() >= MAX_TRACKED_OWNERS {
            return false;
        }
        let pending = Pending {
            creates,
            deletes: deletes.iter().map(|pod| pod.uid.clone()).collect(),
            set_at_ms: now_ms,
        };
        self.pending.insert(owner_uid.to_owned(), pending);
        true
    }

    /// The cache showed a new pod of `owner_uid`, or a create failed (it will not show).
    pub fn observed_create(&mut self, owner_uid: &str) {
        if let Some(pending) = self.pending.get_mut(owner_uid) {
            pending.creates = pending.creates.saturating_sub(1);
        }
    }

    /// The cache showed the pod `pod_uid` of `owner_uid` terminating or gone, or its delete
    /// failed.
    pub fn observed_delete(&mut self, owner_uid: &str, pod_uid: &str) {
        if let Some(pending) = self.pending.get_mut(owner_uid) {
            pending.deletes.remove(pod_uid);
        }
    }

    /// Whether `owner_uid` may be reconciled: nothing pending, or the wait timed out. A
    /// satisfied owner is forgotten.
    pub fn satisfied(&mut self, owner_uid: &str, now_ms: i64) -> bool {
        let Some(pending) = self.pending.get(owner_uid) else {
            return true;
        };
        let met = pending.creates == 0 && pending.deletes.is_empty();
        let expired = now_ms - pending.set_at_ms >= EXPECTATIONS_TIMEOUT_MS;
        if met || expired {
            self.pending.remove(owner_uid);
        }
        met || expired
    }

    /// The owner was deleted.
    pub fn forget(&mut self, owner_uid: &str) {
        self.pending.remove(owner_uid);
    }
}
