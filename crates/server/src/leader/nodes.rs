//! Node lifecycle and garbage collection on the leader. Heartbeats live in memory (fed by the
//! node API); a node's readiness is written to Raft only when it changes, and a silent node's
//! pods are deleted only after its agent's lease plus a margin has run out, so that the agent
//! has already stopped them (design decisions 5 and 6). Garbage collection removes objects whose
//! owners are all gone, and pods stuck terminating on a node that is gone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_controllers::gc;
use flotilla_controllers::node_lifecycle::{
    pods_by_node, LifecycleConfig, NodeAction, NodeTracker,
};
use flotilla_state::objects::{ConditionStatus, Node, ObjectMeta, Pod};
use flotilla_state::registry::{ApiError, DeleteOptions};
use flotilla_state::service::kind_info;
use flotilla_state::Kind;

use super::writes::{commit, now_ms, write};
use super::TermContext;

/// How often node health is evaluated.
pub const LIFECYCLE_TICK: Duration = Duration::from_millis(200);
/// How often garbage is collected: pods stuck terminating every tick; orphans when an owner
/// left the caches since the last scan, a first sighting awaits its second, or
/// [`GC_FULL_SCAN_EVERY`] has passed.
pub const GC_TICK: Duration = Duration::from_secs(2);
/// The orphan scan reads every pod; without an owner removed it runs this often, to catch a
/// dependent created just after its owner was deleted.
pub const GC_FULL_SCAN_EVERY: Duration = Duration::from_secs(30);
/// The owner kinds the leader caches: only dependents whose owners are all of these kinds can be
/// judged orphaned.
const OWNER_KINDS_CACHED: &[&str] = &["ReplicaSet", "Deployment"];

fn set_ready(node: &mut Node, ready: flotilla_state::objects::NodeCondition) {
    let status = node.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(ready);
}

pub async fn run_lifecycle(ctx: Arc<TermContext>) {
    ctx.nodes.wait_synced().await;
    ctx.pods.wait_synced().await;
    let config = ctx.config.lifecycle;
    let mut tracker = NodeTracker::new();
    tracker.became_leader(now_ms());
    let mut gc_due = tokio::time::Instant::now() + GC_TICK;
    let mut orphans = OrphanScan::default();
    loop {
        tokio::time::sleep(LIFECYCLE_TICK).await;
        let now = now_ms();
        for (node, at) in ctx.heartbeats.snapshot() {
            let age_ms = at.elapsed().as_millis() as i64;
            tracker.heartbeat(&node, now - age_ms);
        }
        let result = lifecycle_round(&ctx, &tracker, &config, now).await;
        let result = match result {
            Ok(()) if tokio::time::Instant::now() >= gc_due => {
                gc_due = tokio::time::Instant::now() + GC_TICK;
                collect_garbage(&ctx, &tracker, &config, now, &mut orphans).await
            }
            other => other,
        };
        match result {
            Ok(()) => {}
            Err(ApiError::Fenced(_)) => return,
            Err(e) => tracing::warn!(error = %e, "node lifecycle round failed; retrying"),
        }
    }
}

async fn lifecycle_round(
    ctx: &TermContext,
    tracker: &NodeTracker,
    config: &LifecycleConfig,
    now: i64,
) -> Result<(), ApiError> {
    let nodes = ctx.nodes.snapshot();
    let node_objects: Vec<&Node> = nodes.iter().map(|n| &*n.object).collect();
    // Pods matter only to evictions. Copying and grouping every pod of a large cluster five
    // times a second would cost more than the rest of the leader's work, so it is done only
    // when some node has been silent for longer than its lease plus the margin.
    let eviction_due = node_objects
        .iter()
        .any(|node| tracker.past_eviction_time(&node.metadata.name, now, config));
    let pods: Vec<Pod> = if eviction_due {
        ctx.pods
            .snapshot()
            .iter()
            .map(|p| (*p.object).clone())
            .collect()
    } else {
        Vec::new()
    };
    let actions = tracker.evaluate(&node_objects, &pods_by_node(&pods), now, config);
    let mut writes = Vec::new();
    let mut evictions = Vec::new();
    for action in actions {
        match action {
            NodeAction::MarkNotReady {
                node,
                ready,
                taints,
            }
            | NodeAction::MarkReady {
                node,
                ready,
                taints,
            } => {
                let Some(cached) = nodes.iter().find(|n| n.object.metadata.name == node) else {
                    continue;
                };
                let mut updated = (*cached.object).clone();
                let becomes_ready = ready.status == ConditionStatus::True;
                set_ready(&mut updated, ready);
                updated.spec.taints = taints;
                tracing::info!(node, ready = becomes_ready, "node readiness changed");
                writes.push(write(updated, cached.revision)?);
            }
            NodeAction::Evict { node, pods } => {
                tracing::warn!(
                    node,
                    pods = pods.len(),
                    "node lost past its lease: deleting its pods"
                );
                evictions.extend(pods);
            }
        }
    }
    commit(ctx, writes).await?;
    force_delete(
        ctx,
        evictions
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str())),
    )
    .await
}

async fn force_delete<'a>(
    ctx: &TermContext,
    pods: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    let info = kind_info(Kind::Pod);
    let now = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for (ns, name) in pods {
        match ctx.registry.delete(info, ns, name, &now).await {
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the orphan scan remembers between passes.
#[derive(Default)]
struct OrphanScan {
    /// Dependents seen orphaned once; deleted when seen so again (the caches of owners and
    /// dependents follow separate watches, and one may lag).
    suspects: HashSet<String>,
    /// The owner caches' removal counts at the last scan.
    owners_removed: Option<(u64, u64)>,
    last: Option<Instant>,
}

impl OrphanScan {
    /// Whether a scan is needed: an owner may have gone, a suspect awaits its second sighting,
    /// or the last scan is [`GC_FULL_SCAN_EVERY`] old. Scanning 150 000 pods every tick cost
    /// a loaded leader an eighth of its loop thread, and an idle one CPU for nothing.
    fn due(&self, owners_removed: (u64, u64), now: Instant) -> bool {
        !self.suspects.is_empty()
            || self.owners_removed != Some(owners_removed)
            || self
                .last
                .is_none_or(|last| now.duration_since(last) >= GC_FULL_SCAN_EVERY)
    }

    /// Starts a scan at `now` if one is [`due`](OrphanScan::due), remembering what it saw.
    fn begin(&mut self, owners_removed: (u64, u64), now: Instant) -> bool {
        if !self.due(owners_removed, now) {
            return false;
        }
        self.owners_removed = Some(owners_removed);
        self.last = Some(now);
        true
    }
}

/// Force-deletes pods stuck terminating, and deletes dependents seen orphaned in two consecutive
/// scans.
async fn collect_garbage(
    ctx: &TermContext,
    tracker: &NodeTracker,
    config: &LifecycleConfig,
    now: i64,
    orphans: &mut OrphanScan,
) -> Result<(), ApiError> {
    // Counted before the caches are read, so a removal during the scan brings another one.
    let owners_removed = (ctx.replicasets.removals(), ctx.deployments.removals());
    // Borrowed from the caches' shared pointers: at scale, copying every pod every pass cost
    // more than all the rest of the leader's work.
    let pods = ctx.pods.snapshot();
    let pod_objects: Vec<&Pod> = pods.iter().map(|p| &*p.object).collect();
    let stuck = gc::stuck_terminating(&pod_objects, tracker, now, config);
    force_delete(
        ctx,
        stuck
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str())),
    )
    .await?;
    if !orphans.begin(owners_removed, Instant::now()) {
        return Ok(());
    }
    let replicasets = ctx.replicasets.snapshot();
    let deployments = ctx.deployments.snapshot();
    let mut objects: Vec<(Kind, &ObjectMeta)> = pod_objects
        .iter()
        .map(|pod| (Kind::Pod, &pod.metadata))
        .collect();
    objects.extend(
        replicasets
            .iter()
            .map(|rs| (Kind::ReplicaSet, &rs.object.metadata)),
    );
    objects.extend(
        deployments
            .iter()
            .map(|d| (Kind::Deployment, &d.object.metadata)),
    );
    let garbage = gc::garbage(&objects, OWNER_KINDS_CACHED);
    let previous = std::mem::take(&mut orphans.suspects);
    for item in garbage {
        if !previous.contains(&item.uid) {
            orphans.suspects.insert(item.uid.clone());
            continue;
        }
        let options = DeleteOptions::default();
        match ctx
            .registry
            .delete(kind_info(item.kind), &item.namespace, &item.name, &options)
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_scanned_after_an_owner_went_or_while_suspects_wait() {
        let start = Instant::now();
        let mut scan = OrphanScan::default();
        assert!(scan.due((0, 0), start), "the first pass scans");
        assert!(scan.begin((0, 0), start));
        let soon = start + GC_TICK;
        assert!(!scan.due((0, 0), soon), "nothing went: no scan");
        assert!(scan.due((1, 0), soon), "a ReplicaSet went");
        assert!(scan.due((0, 1), soon), "a Deployment went");
        scan.suspects.insert("uid-1".into());
        assert!(
            scan.due((0, 0), soon),
            "a suspect awaits its second sighting"
        );
        scan.suspects.clear();
        assert!(
            scan.due((0, 0), start + GC_FULL_SCAN_EVERY),
            "the periodic full scan"
        );
    }
}
