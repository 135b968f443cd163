//! The scheduling loop: pending pods are placed in batches against one snapshot of the cluster
//! (the pure `flotilla-scheduler`), and the bindings are committed as one Raft entry per batch,
//! each binding conditional on the pod's resourceVersion. Pods that fit nowhere get a
//! PodScheduled=False condition counting the reasons and are retried when nodes or pods change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_scheduler::{schedule_batch, ClusterSnapshot, Decision, SchedulerConfig};
use flotilla_state::informer::Cached;
use flotilla_state::objects::{ConditionStatus, Pod, PodCondition, PodPhase};
use flotilla_state::registry::{new_uid, now, now_time, ApiError, PreparedWrite};
use flotilla_state::service::kind_info;
use flotilla_state::Kind;
use serde_json::json;

use super::convert::{node_info, pod_info};
use super::writes::{commit_batched, write};
use super::{ComputeTime, TermContext};

#[derive(Debug, Clone)]
pub struct SchedulingConfig {
    /// Bindings (and their events) per Raft entry.
    pub batch_max: usize,
    /// Pending pods placed per round.
    pub round_max: usize,
    /// A round runs at least this often while pods are pending (unschedulable retries).
    pub resync: Duration,
    /// A binding not yet seen in the cache is assumed to hold for this long.
    pub assume_for: Duration,
    /// Emit a `Scheduled` event per binding.
    pub events: bool,
    pub scheduler: SchedulerConfig,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            batch_max: 256,
            round_max: 10_000,
            resync: Duration::from_secs(2),
            assume_for: Duration::from_secs(30),
            events: true,
            scheduler: SchedulerConfig::default(),
        }
    }
}

/// A pod this loop bound that the cache may not show as bound yet (keyed by the pod's uid).
struct Assumed {
    node: String,
    pod: Arc<Pod>,
    at: Instant,
}

fn is_pending(pod: &Pod) -> bool {
    pod.spec.node_name.is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed)
}

fn is_active(pod: &Pod) -> bool {
    !matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed)
}

/// The cluster snapshot kept from one round to the next. Rebuilding it means converting and
/// accounting every bound pod, which at 150,000 pods was the largest part of a round; while pods
/// are only being added and bound, a round adds just the pods bound since the last one. It is
/// rebuilt whenever a pod it counted is no longer bound where it was counted (deleted, finished,
/// an assumption dropped, a binding that did not land) or the nodes changed.
struct Accounted {
    snapshot: ClusterSnapshot,
    /// The pods counted in `snapshot`, by uid, with the node each is counted on.
    counted: HashMap<String, String>,
    /// The node cache's version the snapshot was built from.
    nodes_version: u64,
}

/// Where a pod counts in the snapshot: the node it is bound to while it is active, or the node
/// this loop bound it to while the cache does not show that yet.
fn counted_on<'a>(pod: &'a Pod, assumed: &'a HashMap<String, Assumed>) -> Option<&'a str> {
    if !pod.spec.node_name.is_empty() {
        return is_active(pod).then_some(pod.spec.node_name.as_str());
    }
    assumed
        .get(pod.metadata.uid.as_str())
        .map(|a| a.node.as_str())
}

impl Accounted {
    /// A snapshot of `nodes` (the node cache at `nodes_version`) and of every pod that counts.
    fn build(
        nodes: Vec<flotilla_scheduler::NodeInfo>,
        nodes_version: u64,
        pods: &[Cached<Pod>],
        assumed: &HashMap<String, Assumed>,
    ) -> Accounted {
        let snapshot = ClusterSnapshot::new(nodes).unwrap_or_else(|e| {
            tracing::error!(error = %e, "node names are not unique");
            ClusterSnapshot::new(Vec::new()).expect("empty snapshot")
        });
        let mut accounted = Accounted {
            snapshot,
            counted: HashMap::new(),
            nodes_version,
        };
        for cached in pods {
            if let Some(node) = counted_on(&cached.object, assumed) {
                accounted.count(&cached.object, node);
            }
        }
        accounted
    }

    fn count(&mut self, pod: &Pod, node: &str) {
        // A pod on a node the snapshot does not know takes nothing from the nodes it knows.
        let _ = self.snapshot.add_bound_pod(node, &pod_info(pod));
        self.counted
            .insert(pod.metadata.uid.clone(), node.to_string());
    }

    /// Brings the snapshot up to date with `pods`: adds the pods that count and are not counted
    /// yet; `false` if a counted pod no longer counts where it did, or the nodes changed (the
    /// caller rebuilds).
    fn catch_up(
        &mut self,
        nodes_version: u64,
        pods: &[Cached<Pod>],
        assumed: &HashMap<String, Assumed>,
    ) -> bool {
        if nodes_version != self.nodes_version {
            return false;
        }
        let mut matched = 0;
        let mut fresh = Vec::new();
        for cached in pods {
            let pod = &*cached.object;
            let Some(node) = counted_on(pod, assumed) else {
                continue;
            };
            match self.counted.get(pod.metadata.uid.as_str()) {
                Some(counted) if counted == node => matched += 1,
                Some(_) => return false,
                None => fresh.push((pod, node)),
            }
        }
        if matched != self.counted.len() {
            return false;
        }
        for (pod, node) in fresh {
            self.count(pod, node);
        }
        true
    }
}

/// Runs until the term ends (the task is aborted).
pub async fn run(ctx: Arc<TermContext>) {
    ctx.pods.wait_synced().await;
    ctx.nodes.wait_synced().await;
    let mut pod_changes = ctx.pods.subscribe();
    let mut node_changes = ctx.nodes.subscribe();
    let mut assumed: HashMap<String, Assumed> = HashMap::new();
    let mut accounted: Option<Accounted> = None;
    loop {
        let mut computing = ComputeTime::start();
        let result = round(&ctx, &mut assumed, &mut accounted, &mut computing).await;
        // Next to nothing in a small cluster.
        tokio::time::sleep(computing.spent()).await;
        match result {
            Ok(true) => continue,
            Ok(false) => {}
            Err(ApiError::Fenced(_)) => return,
            Err(e) => tracing::warn!(error = %e, "scheduling round failed; retrying"),
        }
        let resync = ctx.config.scheduling.resync;
        tokio::select! {
            _ = pod_changes.changed() => {}
            _ = node_changes.changed() => {}
            _ = tokio::time::sleep(resync) => {}
        }
    }
}

/// One round: returns whether any pod was bound; `computing` stops counting at its writes.
async fn round(
    ctx: &TermContext,
    assumed: &mut HashMap<String, Assumed>,
    accounted: &mut Option<Accounted>,
    computing: &mut ComputeTime,
) -> Result<bool, ApiError> {
    let config = &ctx.config.scheduling;
    forget_confirmed(ctx, assumed, config.assume_for);
    let pods = ctx.pods.snapshot();
    let mut pending: Vec<&Cached<Pod>> = pods
        .iter()
        .filter(|p| is_pending(&p.object))
        .filter(|p| !assumed.contains_key(p.object.metadata.uid.as_str()))
        .collect();
    if pending.is_empty() {
        return Ok(false);
    }
    pending.sort_by(|a, b| {
        (
            &a.object.metadata.creation_timestamp,
            &a.object.metadata.name,
        )
            .cmp(&(
                &b.object.metadata.creation_timestamp,
                &b.object.metadata.name,
            ))
    });
    pending.truncate(config.round_max);
    let nodes_version = ctx.nodes.version();
    let kept = accounted
        .as_mut()
        .is_some_and(|kept| kept.catch_up(nodes_version, &pods, assumed));
    if !kept {
        // Read after the version: a change in between makes the next round rebuild again.
        let nodes = ctx
            .nodes
            .snapshot()
            .iter()
            .map(|n| node_info(&n.object))
            .collect();
        *accounted = Some(Accounted::build(nodes, nodes_version, &pods, assumed));
    }
    let accounted = accounted.as_mut().expect("built above");
    let infos: Vec<_> = pending.iter().map(|p| pod_info(&p.object)).collect();
    let decisions = schedule_batch(&infos, &mut accounted.snapshot, &config.scheduler);
    let mut writes = Vec::new();
    let mut bound = Vec::new();
    for (cached, decision) in pending.iter().zip(decisions) {
        match decision {
            Decision::Bind { node } => {
                // Placement counted it; a binding that does not land makes the next round
                // rebuild the snapshot.
                accounted
                    .counted
                    .insert(cached.object.metadata.uid.clone(), node.clone());
                writes.push(binding(cached, &node)?);
                if config.events {
                    writes.push(scheduled_event(&cached.object, &node));
                }
                bound.push((cached.object.clone(), node));
            }
            Decision::Unschedulable { reasons } => {
                if let Some(write) = unschedulable(cached, &reasons.to_string())? {
                    writes.push(write);
                }
            }
        }
    }
    computing.pause();
    let any_bound = commit_batched(ctx, writes, config.batch_max)
        .await?
        .into_iter()
        .any(|w| w);
    let at = Instant::now();
    for (pod, node) in bound {
        assumed.insert(pod.metadata.uid.clone(), Assumed { node, pod, at });
    }
    Ok(any_bound)
}

/// Drops assumptions the cache now confirms (or that are too old to trust): looked up one by
/// one, since there are at most a round's worth of them and the cache may hold many more pods.
fn forget_confirmed(ctx: &TermContext, assumed: &mut HashMap<String, Assumed>, max_age: Duration) {
    assumed.retain(|uid, a| {
        let meta = &a.pod.metadata;
        match ctx.pods.get(&meta.namespace, &meta.name) {
            Some(cached) if cached.object.metadata.uid == *uid => {
                cached.object.spec.node_name.is_empty() && a.at.elapsed() < max_age
            }
            // Gone, or replaced by a pod of the same name.
            _ => false,
        }
    });
}

fn set_condition(pod: &mut Pod, condition: PodCondition) -> bool {
    let status = pod.status.get_or_insert_with(Default::default);
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == condition.type_)
    {
        Some(existing)
            if existing.status == condition.status && existing.message == condition.message =>
        {
            false
        }
        Some(existing) => {
            *existing = condition;
            true
        }
        None => {
            status.conditions.push(condition);
            true
        }
    }
}

fn binding(cached: &Cached<Pod>, node: &str) -> Result<PreparedWrite, ApiError> {
    let mut pod = (*cached.object).clone();
    pod.spec.node_name = node.to_string();
    set_condition(
        &mut pod,
        PodCondition {
            type_: "PodScheduled".into(),
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_probe_time: None,
            last_transition_time: Some(now_time()),
        },
    );
    write(pod, cached.revision)
}

fn unschedulable(cached: &Cached<Pod>, message: &str) -> Result<Option<PreparedWrite>, ApiError> {
    let mut pod = (*cached.object).clone();
    let changed = set_condition(
        &mut pod,
        PodCondition {
            type_: "PodScheduled".into(),
            status: ConditionStatus::False,
            reason: "Unschedulable".into(),
            message: message.to_string(),
            last_probe_time: None,
            last_transition_time: Some(now_time()),
        },
    );
    if !changed {
        return Ok(None);
    }
    write(pod, cached.revision).map(Some)
}

/// A `Scheduled` event for a binding (created only if absent: revision 0).
fn scheduled_event(pod: &Pod, node: &str) -> PreparedWrite {
    let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
    let stamp = now();
    let object = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.scheduled.{}", &pod.metadata.uid.chars().take(8).collect::<String>()),
            "namespace": ns,
            "uid": new_uid(),
            "creationTimestamp": stamp,
        },
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod.metadata.uid, "apiVersion": "v1"},
        "reason": "Scheduled",
        "message": format!("Successfully assigned {ns}/{name} to {node}"),
        "type": "Normal",
        "source": {"component": "scheduler"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    PreparedWrite::of_value(kind_info(Kind::Event), &object, 0)
}

#[cfg(test)]
mod tests {
    use flotilla_scheduler::{Allocatable, NodeInfo};
    use serde_json::json;

    use super::*;

    fn pod(uid: &str, node: &str, phase: &str) -> Cached<Pod> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": phase},
        }))
        .unwrap();
        Cached {
            object: Arc::new(pod),
            revision: 1,
        }
    }

    fn nodes() -> Vec<NodeInfo> {
        ["n1", "n2"]
            .iter()
            .map(|n| NodeInfo::new(*n, Allocatable::new(4000, 1 << 30, 110)).with_ready(true))
            .collect()
    }

    fn cpu_on(accounted: &Accounted, node: &str) -> i64 {
        accounted.snapshot.usage(node).unwrap().requested.cpu_milli
    }

    #[test]
    fn the_kept_snapshot_adds_new_bindings_and_gives_up_when_a_counted_pod_goes() {
        let none = HashMap::new();
        let a = pod("a", "n1", "Running");
        let mut kept = Accounted::build(nodes(), 7, std::slice::from_ref(&a), &none);
        assert_eq!((cpu_on(&kept, "n1"), cpu_on(&kept, "n2")), (100, 0));

        // A pod bound since, and a pending one: only the bound one is added.
        let b = pod("b", "n2", "Pending");
        let c = pod("c", "", "Pending");
        let now = [a.clone(), b.clone(), c.clone()];
        assert!(kept.catch_up(7, &now, &none));
        assert_eq!((cpu_on(&kept, "n1"), cpu_on(&kept, "n2")), (100, 100));
        assert!(
            kept.catch_up(7, &now, &none),
            "nothing new: still up to date"
        );
        assert_eq!(cpu_on(&kept, "n2"), 100, "nothing counted twice");

        // A pod this loop bound counts where it was bound, before and after the cache shows it.
        let assumed = HashMap::from([(
            "c".to_string(),
            Assumed {
                node: "n1".into(),
                pod: c.object.clone(),
                at: Instant::now(),
            },
        )]);
        assert!(kept.catch_up(7, &now, &assumed));
        assert_eq!(cpu_on(&kept, "n1"), 200);
        let c_bound = pod("c", "n1", "Pending");
        assert!(kept.catch_up(7, &[a.clone(), b.clone(), c_bound.clone()], &none));
        assert_eq!(cpu_on(&kept, "n1"), 200);

        // Gone, finished, bound elsewhere, or the nodes changed: rebuild.
        let rebuilt = |pods: &[Cached<Pod>], version: u64| {
            let mut copy =
                Accounted::build(nodes(), 7, &[a.clone(), b.clone(), c_bound.clone()], &none);
            !copy.catch_up(version, pods, &none)
        };
        assert!(rebuilt(&[a.clone(), c_bound.clone()], 7), "b deleted");
        assert!(
            rebuilt(
                &[a.clone(), pod("b", "n2", "Succeeded"), c_bound.clone()],
                7
            ),
            "b finished"
        );
        assert!(
            rebuilt(&[a.clone(), b.clone(), pod("c", "n2", "Running")], 7),
            "c elsewhere"
        );
        assert!(
            rebuilt(&[a.clone(), b.clone(), c_bound.clone()], 8),
            "nodes changed"
        );
        assert!(
            !rebuilt(&[a.clone(), b.clone(), c_bound.clone()], 7),
            "nothing changed"
        );
    }
}
