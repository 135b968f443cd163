//! The workload loops: Deployments → ReplicaSets → Pods. Each round reads the informer caches,
//! asks the pure controllers for plans and executes them with fenced, batched writes. A
//! ReplicaSet whose own earlier creates or deletes the cache has not shown yet is skipped (its
//! expectations), so a lagging cache never makes it create pods twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_controllers::deployment::reconcile_deployment;
use flotilla_controllers::pods::controller_uid;
use flotilla_controllers::replicaset::{reconcile_replicaset, ReplicaSetPlan};
use flotilla_state::informer::Cached;
use flotilla_state::objects::{Deployment, ObjectMeta, Pod, ReplicaSet};
use flotilla_state::registry::{ApiError, DeleteOptions, PreparedWrite, GENERATE_NAME_ATTEMPTS};
use flotilla_state::service::kind_info;
use flotilla_state::Kind;

use super::writes::{commit, name_for_new, new_object, new_pod, now_ms, record_events, write};
use super::{ComputeTime, TermContext};

/// Expectations older than this are dropped (a write that never showed up).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);
/// A loop runs at least this often even without news (requeues of plans are honoured sooner).
const RESYNC: Duration = Duration::from_secs(5);
/// Shortest pause between rounds, to batch bursts of changes (a round also pauses for as long
/// as it computed, see [`ComputeTime`]).
const ROUND_GAP: Duration = Duration::from_millis(10);

/// Pods one ReplicaSet round creates at most, over all its ReplicaSets (each also creates at
/// most `MAX_CREATES_PER_RECONCILE`). A round builds its writes before it commits them: this
/// bounds the leader's memory for them (a pod's write is a few KiB), and the first commits start
/// while the ReplicaSets past the bound wait for the next round, which follows at once.
const ROUND_CREATES_MAX: usize = 16_384;

/// How a ReplicaSet round ended.
struct RoundEnd {
    /// When the earliest requeue is due.
    requeue: Option<Duration>,
    /// The round stopped at [`ROUND_CREATES_MAX`] before it had looked at every ReplicaSet.
    truncated: bool,
}

/// Creates (by name) and deletes (by uid) a ReplicaSet issued that the cache has not shown yet.
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    at: Instant,
}

/// A new pod from `pod` whose generated name is not yet in `taken` (it is added), trying
/// [`GENERATE_NAME_ATTEMPTS`] names; `None` if all were taken (the next round tries again). A name
/// taken by a stored pod makes that create not land (it is conditional on the name being free).
fn new_pod_named_apart(
    pod: &Pod,
    taken: &mut HashSet<String>,
) -> Result<Option<(PreparedWrite, String)>, ApiError> {
    for _ in 0..GENERATE_NAME_ATTEMPTS {
        let name = name_for_new(&pod.metadata);
        if taken.insert(name.clone()) {
            let mut pod = pod.clone();
            pod.metadata.name = name.clone();
            return Ok(Some((new_pod(pod)?, name)));
        }
    }
    Ok(None)
}

/// What one round issued for one ReplicaSet.
struct Issued {
    uid: String,
    /// Each create's index in the round's writes, and the pod's name.
    creates: Vec<(usize, String)>,
    /// Uids of the pods it deletes.
    deleted: HashSet<String>,
}

fn satisfied(pending: &Pending, owned: &[&Pod]) -> bool {
    let names: HashSet<&str> = owned.iter().map(|p| p.metadata.name.as_str()).collect();
    let uids: HashSet<&str> = owned.iter().map(|p| p.metadata.uid.as_str()).collect();
    pending.at.elapsed() > EXPECTATION_TIMEOUT
        || (pending.created.iter().all(|n| names.contains(n.as_str()))
            && pending.deleted.iter().all(|u| !uids.contains(u.as_str())))
}

fn loop_error(what: &str, e: &ApiError) {
    tracing::warn!(error = %e, "{what} round failed; retrying");
}

/// Waits for a change in any of `changes` or until `deadline`, then for the round gap: at least
/// [`ROUND_GAP`], and at least `computed`, the time the previous round computed.
async fn wait(
    changes: &mut [tokio::sync::watch::Receiver<u64>],
    deadline: Duration,
    computed: Duration,
) {
    let waits = changes
        .iter_mut()
        .map(|c| Box::pin(async move { c.changed().await.is_ok() }));
    tokio::select! {
        _ = futures::future::select_all(waits) => {}
        _ = tokio::time::sleep(deadline) => {}
    }
    tokio::time::sleep(ROUND_GAP.max(computed)).await;
}

/// What a ReplicaSet was last reconciled at: while neither it nor its pods changed and its
/// requeue is not due, reconciling it again would plan the same.
struct Reconciled {
    revision: i64,
    /// The version of its group in the pod cache ([`flotilla_state::informer::Cache::group`]).
    pods_version: u64,
    due: Option<Instant>,
}

impl Reconciled {
    fn still(&self, revision: i64, pods_version: u64, now: Instant) -> bool {
        self.revision == revision
            && self.pods_version == pods_version
            && self.due.is_none_or(|due| due > now)
    }
}

pub async fn run_replicasets(ctx: Arc<TermContext>) {
    ctx.replicasets.wait_synced().await;
    ctx.pods.wait_synced().await;
    let mut changes = vec![ctx.replicasets.subscribe(), ctx.pods.subscribe()];
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut reconciled: HashMap<String, Reconciled> = HashMap::new();
    let mut last_full: Option<Instant> = None;
    let mut cursor = 0;
    loop {
        let mut computing = ComputeTime::start();
        // Every RESYNC, every ReplicaSet is reconciled whether or not it changed (expectations
        // that timed out, anything a skipped round could miss); in between, only those whose
        // object or pods changed, or whose requeue is due.
        let full = last_full.is_none_or(|at| at.elapsed() >= RESYNC);
        if full {
            last_full = Some(Instant::now());
        }
        let round = replicaset_round(
            &ctx,
            &mut pending,
            &mut reconciled,
            full,
            &mut cursor,
            &mut computing,
        );
        let requeue = match round.await {
            Ok(RoundEnd {
                truncated: true, ..
            }) => {
                // The ReplicaSets it did not reach go next, and a full pass is done again.
                if full {
                    last_full = None;
                }
                Some(Duration::ZERO)
            }
            Ok(RoundEnd { requeue, .. }) => requeue,
            Err(ApiError::Fenced(_)) => return,
            Err(e) => {
                loop_error("replicaset", &e);
                // The round recorded ReplicaSets as reconciled whose writes may not have landed:
                // the next round looks at all of them again.
                last_full = None;
                Some(Duration::from_millis(500))
            }
        };
        let deadline = requeue.unwrap_or(RESYNC).min(RESYNC);
        wait(&mut changes, deadline, computing.spent()).await;
    }
}

/// Items by the uid of their controlling owner (items with none are left out), in the order given.
fn by_controller<'a, T>(
    items: impl Iterator<Item = (&'a ObjectMeta, T)>,
) -> HashMap<&'a str, Vec<T>> {
    let mut by_owner: HashMap<&str, Vec<T>> = HashMap::new();
    for (metadata, item) in items {
        if let Some(uid) = controller_uid(metadata) {
            by_owner.entry(uid).or_default().push(item);
        }
    }
    by_owner
}

/// `items` in the order a round visits them: from position `cursor` (modulo their number) on,
/// wrapping around. A round stopped at [`ROUND_CREATES_MAX`] moves the cursor to the first one
/// it did not reach, so the next round starts there and every ReplicaSet gets its turn.
fn visiting_order<T>(items: &[T], cursor: usize) -> impl Iterator<Item = &T> {
    let (before, after) = items.split_at(cursor % items.len().max(1));
    after.iter().chain(before)
}

/// One round over the ReplicaSets that changed (all of them if `full`), up to
/// [`ROUND_CREATES_MAX`] creates; returns when the next requeue is due. `computing` stops
/// counting at its writes.
async fn replicaset_round(
    ctx: &TermContext,
    pending: &mut HashMap<String, Pending>,
    reconciled: &mut HashMap<String, Reconciled>,
    full: bool,
    cursor: &mut usize,
    computing: &mut ComputeTime,
) -> Result<RoundEnd, ApiError> {
    let now = now_ms();
    let started = Instant::now();
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    let mut statuses = Vec::new();
    let mut issued: Vec<Issued> = Vec::new();
    // Generated names of this round: two equal ones in one batch would fail the whole batch.
    let mut round_names: HashSet<String> = HashSet::new();
    let replicasets = ctx.replicasets.snapshot();
    if full {
        let live: HashSet<&str> = replicasets
            .iter()
            .map(|rs| rs.object.metadata.uid.as_str())
            .collect();
        reconciled.retain(|uid, _| live.contains(uid.as_str()));
    }
    let mut truncated = false;
    for (visited, cached) in visiting_order(&replicasets, *cursor).enumerate() {
        if creates.len() >= ROUND_CREATES_MAX {
            *cursor += visited;
            truncated = true;
            break;
        }
        let rs = &cached.object;
        let uid = rs.metadata.uid.as_str();
        if !full {
            let version = ctx.pods.group_version(uid);
            if reconciled
                .get(uid)
                .is_some_and(|r| r.still(cached.revision, version, started))
            {
                continue;
            }
        }
        // The version and the pods read together: a change after this shows as a new version.
        let (pods_version, members) = ctx.pods.group(uid);
        let owned: Vec<&Pod> = members.iter().map(|c| &*c.object).collect();
        if let Some(p) = pending.get(uid) {
            if !satisfied(p, &owned) {
                continue;
            }
            pending.remove(uid);
        }
        let plan: ReplicaSetPlan = reconcile_replicaset(rs, &owned, now);
        let due = plan
            .requeue_after_ms
            .map(|ms| started + Duration::from_millis(ms.max(0) as u64));
        reconciled.insert(
            uid.to_string(),
            Reconciled {
                revision: cached.revision,
                pods_version,
                due,
            },
        );
        // Each name with its index in `creates`, to keep only those that land.
        let mut names = Vec::new();
        for pod in &plan.create {
            let Some((created, name)) = new_pod_named_apart(pod, &mut round_names)? else {
                continue;
            };
            names.push((creates.len(), name));
            creates.push(created);
        }
        if rs.status.as_ref() != Some(&plan.status) {
            let mut updated: ReplicaSet = (**rs).clone();
            updated.status = Some(plan.status.clone());
            statuses.push(write(updated, cached.revision)?);
        }
        if !names.is_empty() || !plan.delete.is_empty() {
            let deleted = plan.delete.iter().map(|p| p.uid.clone()).collect();
            issued.push(Issued {
                uid: rs.metadata.uid.clone(),
                creates: names,
                deleted,
            });
        }
        deletes.extend(plan.delete);
    }
    // Expectations are recorded only for creates that landed: one refused (a name taken) or a
    // batch that failed would otherwise hold its ReplicaSet back until the expectation timed
    // out. After a failed batch the next round recounts from the cache, and a create that did
    // land after all shows up there (a surplus is scaled down like any other).
    computing.pause();
    let landed = commit(ctx, creates).await?;
    for Issued {
        uid,
        creates: names,
        deleted,
    } in issued
    {
        let issued_creates = names.len();
        let created: HashSet<String> = names
            .into_iter()
            .filter(|(i, _)| landed.get(*i).copied().unwrap_or(false))
            .map(|(_, name)| name)
            .collect();
        if created.len() < issued_creates {
            // A refused create changes none of its pods: without this the ReplicaSet would wait
            // for the next full pass to try again.
            reconciled.remove(&uid);
        }
        let p = Pending {
            created,
            deleted,
            at: Instant::now(),
        };
        pending.insert(uid, p);
    }
    commit(ctx, statuses).await?;
    let pod_info = kind_info(Kind::Pod);
    for pod in deletes {
        match ctx
            .registry
            .delete(
                pod_info,
                &pod.namespace,
                &pod.name,
                &DeleteOptions::default(),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let next_due = reconciled.values().filter_map(|r| r.due).min();
    Ok(RoundEnd {
        requeue: next_due.map(|due| due.saturating_duration_since(Instant::now())),
        truncated,
    })
}

pub async fn run_deployments(ctx: Arc<TermContext>) {
    ctx.deployments.wait_synced().await;
    ctx.replicasets.wait_synced().await;
    ctx.pods.wait_synced().await;
    let mut changes = vec![
        ctx.deployments.subscribe(),
        ctx.replicasets.subscribe(),
        ctx.pods.subscribe(),
    ];
    loop {
        let mut computing = ComputeTime::start();
        let requeue = match deployment_round(&ctx, &mut computing).await {
            Ok(requeue) => requeue,
            Err(ApiError::Fenced(_)) => return,
            Err(e) => {
                loop_error("deployment", &e);
                Some(Duration::from_millis(500))
            }
        };
        let deadline = requeue.unwrap_or(RESYNC).min(RESYNC);
        wait(&mut changes, deadline, computing.spent()).await;
    }
}

/// One round; `computing` counts only while it plans, not while it waits on its writes.
async fn deployment_round(
    ctx: &TermContext,
    computing: &mut ComputeTime,
) -> Result<Option<Duration>, ApiError> {
    let now = now_ms();
    let pods = ctx.pods.snapshot();
    let all_rs = ctx.replicasets.snapshot();
    // Indexed once per round by controlling owner: scanning every pod and ReplicaSet for each
    // Deployment would cost Deployments × pods (45 million checks at 300 × 150 000).
    let rs_by_owner = by_controller(all_rs.iter().map(|rs| (&rs.object.metadata, rs)));
    let pods_by_rs = by_controller(
        pods.iter()
            .enumerate()
            .map(|(i, p)| (&p.object.metadata, (i, p))),
    );
    let mut requeue: Option<i64> = None;
    for cached in ctx.deployments.snapshot() {
        let d = &cached.object;
        let rss: Vec<&Cached<ReplicaSet>> = match d.metadata.uid.as_str() {
            "" => Vec::new(),
            uid => rs_by_owner.get(uid).cloned().unwrap_or_default(),
        };
        // The pods of those ReplicaSets, in the cache's order.
        let mut owned: Vec<(usize, &Cached<Pod>)> = rss
            .iter()
            .filter_map(|rs| pods_by_rs.get(rs.object.metadata.uid.as_str()))
            .flatten()
            .copied()
            .collect();
        owned.sort_by_key(|(i, _)| *i);
        // References into the cache: copying 150,000 pods every round was most of its CPU.
        let owned_pods: Vec<&Pod> = owned.iter().map(|(_, p)| &*p.object).collect();
        let rs_objects: Vec<ReplicaSet> = rss.iter().map(|rs| (*rs.object).clone()).collect();
        let plan = match reconcile_deployment(d, &rs_objects, &owned_pods, now) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(deployment = %d.metadata.name, error = %e, "cannot reconcile");
                continue;
            }
        };
        requeue = match (requeue, plan.requeue_after_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        computing.pause();
        execute_deployment_plan(ctx, &cached, &rss, plan).await?;
        computing.resume();
    }
    Ok(requeue.map(|ms| Duration::from_millis(ms.max(0) as u64)))
}

async fn execute_deployment_plan(
    ctx: &TermContext,
    cached: &Cached<Deployment>,
    rss: &[&Cached<ReplicaSet>],
    plan: flotilla_controllers::deployment::DeploymentPlan,
) -> Result<(), ApiError> {
    let mut writes = Vec::new();
    if let Some(rs) = &plan.create_rs {
        writes.push(new_object(rs.clone())?);
    }
    for update in &plan.scale {
        if let Some(current) = rss.iter().find(|rs| rs.object.metadata.name == update.name) {
            let mut rs = (*current.object).clone();
            rs.spec.replicas = Some(update.replicas);
            rs.metadata.annotations = update.annotations.clone();
            writes.push(write(rs, current.revision)?);
        }
    }
    let d = &cached.object;
    let mut updated = (**d).clone();
    if let Some(revision) = &plan.deployment_revision {
        updated.metadata.annotations.insert(
            flotilla_controllers::deployment::REVISION_ANNOTATION.to_string(),
            revision.clone(),
        );
    }
    updated.status = Some(plan.status.clone());
    if updated != **d {
        writes.push(write(updated, cached.revision)?);
    }
    commit(ctx, writes).await?;
    let rs_info = kind_info(Kind::ReplicaSet);
    for name in &plan.delete_rs {
        match ctx
            .registry
            .delete(
                rs_info,
                &d.metadata.namespace,
                name,
                &DeleteOptions::default(),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if !plan.events.is_empty() {
        record_events(ctx, plan.events).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_state::objects::ObjectMeta;

    /// 20,000 generated names from 27^5 choices would collide about 14 times by chance; one
    /// round never issues the same name twice (two in one batch would fail the whole batch).
    #[test]
    fn one_round_never_generates_a_name_twice() {
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: "web-1-".into(),
                namespace: "default".into(),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let mut taken = HashSet::new();
        for _ in 0..20_000 {
            let (_, name) = new_pod_named_apart(&pod, &mut taken)
                .unwrap()
                .expect("a free name within the attempts");
            assert!(name.starts_with("web-1-") && name.len() == "web-1-".len() + 5);
        }
        assert_eq!(taken.len(), 20_000);
    }

    #[test]
    fn a_round_visits_every_replicaset_once_starting_at_the_cursor() {
        let items = ["a", "b", "c", "d", "e"];
        let order = |cursor| visiting_order(&items, cursor).copied().collect::<Vec<_>>();
        assert_eq!(order(0), ["a", "b", "c", "d", "e"]);
        assert_eq!(order(3), ["d", "e", "a", "b", "c"]);
        // The cursor only grows; it wraps around however many ReplicaSets there are now.
        assert_eq!(order(7), ["c", "d", "e", "a", "b"]);
        assert!(visiting_order::<&str>(&[], 4).next().is_none());
    }
}
