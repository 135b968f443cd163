//! The scheduling loop: pending pods are placed in batches against one snapshot of the cluster
//! (the pure `flotilla-scheduler`), and the bindings are committed as one Raft entry per batch,
//! each binding conditional on the pod's resourceVersion. Pods that fit nowhere get a
//! PodScheduled=False condition counting the reasons and are retried when nodes or pods change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_scheduler::{schedule_batch, ClusterSnapshot, Decision, SchedulerConfig};
use flotilla_state::informer::Cached;
use flotilla_state::objects::{ConditionStatus, Pod, PodCondition, PodPhase, Time};
use flotilla_state::registry::{new_uid, now, ApiError, Stored};
use flotilla_state::service::kind_info;
use flotilla_state::Kind;
use serde_json::{json, Value};

use super::convert::{node_info, pod_info};
use super::writes::commit_batched;
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

/// Runs until the term ends (the task is aborted).
pub async fn run(ctx: Arc<TermContext>) {
    ctx.pods.wait_synced().await;
    ctx.nodes.wait_synced().await;
    let mut pod_changes = ctx.pods.subscribe();
    let mut node_changes = ctx.nodes.subscribe();
    let mut assumed: HashMap<String, Assumed> = HashMap::new();
    loop {
        let mut computing = ComputeTime::start();
        let result = round(&ctx, &mut assumed, &mut computing).await;
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
    let mut snapshot = cluster_snapshot(ctx, &pods, assumed);
    let infos: Vec<_> = pending.iter().map(|p| pod_info(&p.object)).collect();
    let decisions = schedule_batch(&infos, &mut snapshot, &config.scheduler);
    let mut writes = Vec::new();
    let mut bound = Vec::new();
    for (cached, decision) in pending.iter().zip(decisions) {
        match decision {
            Decision::Bind { node } => {
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
    let any_bound = commit_batched(ctx, &writes, config.batch_max)
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

fn cluster_snapshot(
    ctx: &TermContext,
    pods: &[Cached<Pod>],
    assumed: &HashMap<String, Assumed>,
) -> ClusterSnapshot {
    let nodes: Vec<_> = ctx
        .nodes
        .snapshot()
        .iter()
        .map(|n| node_info(&n.object))
        .collect();
    let mut snapshot = ClusterSnapshot::new(nodes).unwrap_or_else(|e| {
        tracing::error!(error = %e, "node names are not unique");
        ClusterSnapshot::new(Vec::new()).expect("empty snapshot")
    });
    for cached in pods {
        let pod = &cached.object;
        if !pod.spec.node_name.is_empty() && is_active(pod) {
            let _ = snapshot.add_bound_pod(&pod.spec.node_name, &pod_info(pod));
        }
    }
    for a in assumed.values() {
        let _ = snapshot.add_bound_pod(&a.node, &pod_info(&a.pod));
    }
    snapshot
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

fn now_time() -> Option<Time> {
    now().as_str().and_then(|t| Time::parse(t).ok())
}

fn pod_write(
    pod: &Pod,
    revision: i64,
) -> Result<(flotilla_state::registry::KindInfo, Stored), ApiError> {
    let object = serde_json::to_value(pod).map_err(|e| ApiError::Internal(e.to_string()))?;
    let object = with_kind(object, "v1", "Pod");
    Ok((*kind_info(Kind::Pod), Stored { object, revision }))
}

fn with_kind(mut object: Value, api_version: &str, kind: &str) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    object
}

fn binding(
    cached: &Cached<Pod>,
    node: &str,
) -> Result<(flotilla_state::registry::KindInfo, Stored), ApiError> {
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
            last_transition_time: now_time(),
        },
    );
    pod_write(&pod, cached.revision)
}

fn unschedulable(
    cached: &Cached<Pod>,
    message: &str,
) -> Result<Option<(flotilla_state::registry::KindInfo, Stored)>, ApiError> {
    let mut pod = (*cached.object).clone();
    let changed = set_condition(
        &mut pod,
        PodCondition {
            type_: "PodScheduled".into(),
            status: ConditionStatus::False,
            reason: "Unschedulable".into(),
            message: message.to_string(),
            last_probe_time: None,
            last_transition_time: now_time(),
        },
    );
    if !changed {
        return Ok(None);
    }
    pod_write(&pod, cached.revision).map(Some)
}

/// A `Scheduled` event for a binding (created only if absent: revision 0).
fn scheduled_event(pod: &Pod, node: &str) -> (flotilla_state::registry::KindInfo, Stored) {
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
    (
        *kind_info(Kind::Event),
        Stored {
            object,
            revision: 0,
        },
    )
}
