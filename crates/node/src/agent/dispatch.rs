//! The dispatcher: from the informer's cache of pods bound to this node (and from what the
//! runtime and the pod directories hold) to one [`PodWorker`] per pod UID, each handed the
//! newest version of its pod as an [`Order`].
//!
//! Fencing of orders: a worker is only ever handed a version with a *higher* resourceVersion
//! than the one it has, so an older view of a pod (e.g. a relist from a lagging peer) changes
//! nothing; a UID whose teardown finished is tombstoned and never started again; a UID the
//! cache no longer has is told [`Order::Gone`]. Containers, sandboxes and pod directories of
//! UIDs the cluster does not (or no longer) bind here get a worker that removes them — but
//! only once the informer has synced, so an agent restart adopts before it judges.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_state::informer::{Cache, Cached};
use flotilla_state::objects::Pod;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime::ContainerId;

use super::context::Ctx;
use super::poddir::pod_dir_uids;
use super::worker::{Order, PodWorker};

/// Pod workers alive at once (far above a node's pod capacity; the rest wait a pass).
pub const MAX_POD_WORKERS: usize = 1024;
/// Extra time, beyond the shutdown grace, that stopping pods at shutdown may take.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(30);
/// Longest wait for workers to let go when the agent shuts down leaving pods running.
const DETACH_WAIT: Duration = Duration::from_secs(10);

/// How the dispatcher is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Run,
    /// Leave every container running for the next agent to adopt.
    Detach,
    /// Stop and remove every pod's containers (`flotilla dev` on Ctrl-C).
    Pods,
}

struct Worker {
    orders: watch::Sender<Order>,
    task: JoinHandle<()>,
    /// The resourceVersion of the newest order handed over (0 for Gone only).
    revision: i64,
    gone: bool,
}

pub struct Dispatcher {
    ctx: Arc<Ctx>,
    pods: Arc<Cache<Pod>>,
    workers: HashMap<String, Worker>,
}

impl Dispatcher {
    pub fn new(ctx: Arc<Ctx>, pods: Arc<Cache<Pod>>) -> Dispatcher {
        Dispatcher {
            ctx,
            pods,
            workers: HashMap::new(),
        }
    }

    /// Runs until `stop` says how to end.
    pub async fn run(mut self, mut stop: watch::Receiver<Stop>) {
        tokio::select! {
            _ = self.pods.wait_synced() => {}
            _ = stop.wait_for(|s| *s != Stop::Run) => {}
        }
        let mut changes = self.pods.subscribe();
        loop {
            let mode = *stop.borrow();
            match mode {
                Stop::Run => {}
                Stop::Detach => return self.detach().await,
                Stop::Pods => return self.stop_pods().await,
            }
            self.pass(None);
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(self.ctx.config.resync_interval) => {}
                changed = stop.changed() => if changed.is_err() { return self.detach().await },
            }
        }
    }

    /// One look at everything: hand out new orders, spawn and reap workers. A pass follows
    /// every change of the node's pods (the agent's own status writes included), so it lists
    /// only the names of containers and sandboxes (and whether a container has its state yet);
    /// a container's state is read only for the pod whose worker is being started.
    fn pass(&mut self, max_grace: Option<Duration>) {
        self.workers.retain(|_, w| !w.task.is_finished());
        let container_ids = match self.ctx.runtime.listed_ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list containers; pods are not reconciled");
                return;
            }
        };
        let mut present = HashSet::new();
        if max_grace.is_none() {
            for cached in self.pods.snapshot() {
                if let Some(uid) = self.offer(cached) {
                    present.insert(uid);
                }
            }
        }
        for (uid, worker) in &mut self.workers {
            if !present.contains(uid) && !worker.gone {
                worker.gone = true;
                worker.orders.send_replace(Order::Gone { max_grace });
            }
        }
        for uid in self.leftover_uids(&container_ids) {
            if !present.contains(&uid) && !self.workers.contains_key(&uid) {
                self.spawn(&uid, Order::Gone { max_grace }, 0);
            }
        }
    }

    /// Hands a cached pod to its worker if it is newer than what the worker has; returns the
    /// UID when the pod counts as present.
    fn offer(&mut self, cached: Cached<Pod>) -> Option<String> {
        let meta = &cached.object.metadata;
        if cached.object.spec.node_name != self.ctx.config.name || meta.uid.is_empty() {
            return None;
        }
        let uid = meta.uid.clone();
        let worker = self.workers.get_mut(&uid);
        let verdict = judge(
            worker.as_ref().map(|w| w.revision),
            cached.revision,
            self.ctx.tombstones.contains(&uid),
            meta.deletion_timestamp.is_some(),
        );
        match (verdict, worker) {
            (Verdict::Hand, Some(worker)) => {
                worker.revision = cached.revision;
                worker.gone = false;
                worker.orders.send_replace(Order::Pod(cached));
            }
            (Verdict::Spawn, _) => {
                let revision = cached.revision;
                self.spawn(&uid, Order::Pod(cached), revision);
            }
            (Verdict::Ignore, None) => return None,
            _ => {}
        }
        Some(uid)
    }

    fn spawn(&mut self, uid: &str, order: Order, revision: i64) {
        if self.workers.len() >= MAX_POD_WORKERS {
            tracing::warn!(
                pod = uid,
                limit = MAX_POD_WORKERS,
                "too many pod workers; pod waits"
            );
            return;
        }
        let containers = match self.ctx.runtime.list_pod(uid) {
            Ok(containers) => containers,
            Err(e) => {
                tracing::error!(pod = uid, error = %e, "cannot list the pod's containers; it waits");
                return;
            }
        };
        let gone = matches!(order, Order::Gone { .. });
        let (tx, rx) = watch::channel(order);
        let worker = PodWorker::new(self.ctx.clone(), uid, rx, &containers);
        let task = tokio::spawn(worker.run());
        self.workers.insert(
            uid.to_string(),
            Worker {
                orders: tx,
                task,
                revision,
                gone,
            },
        );
    }

    /// UIDs with containers, a sandbox or a pod directory on this node.
    fn leftover_uids(&self, container_ids: &[ContainerId]) -> HashSet<String> {
        let mut uids: HashSet<String> = container_ids
            .iter()
            .map(|id| id.pod_uid().to_string())
            .collect();
        match self.ctx.runtime.sandbox_uids() {
            Ok(sandboxes) => uids.extend(sandboxes),
            Err(e) => tracing::warn!(error = %e, "cannot list sandboxes"),
        }
        uids.extend(pod_dir_uids(&self.ctx.config.pods_dir()));
        uids
    }

    /// Lets every worker go without touching containers.
    async fn detach(self) {
        let tasks: Vec<JoinHandle<()>> = self.workers.into_values().map(|w| w.task).collect();
        wait_all(tasks, DETACH_WAIT).await;
    }

    /// Tears every pod down (each container gets at most the shutdown grace).
    async fn stop_pods(mut self) {
        let grace = self.ctx.config.shutdown_grace;
        self.pass(Some(grace));
        let tasks: Vec<JoinHandle<()>> = self
            .workers
            .into_values()
            .map(|w| {
                // Keep the order channel open until the worker is done.
                let Worker { orders, task, .. } = w;
                tokio::spawn(async move {
                    let _ = task.await;
                    drop(orders);
                })
            })
            .collect();
        wait_all(tasks, grace + SHUTDOWN_SLACK).await;
    }
}

/// What to do with a version of a pod the cache shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Older than (or the same as) what the pod's worker has, or a finished UID: nothing.
    Ignore,
    /// Newer than what the worker has: hand it over.
    Hand,
    /// No worker yet: start one.
    Spawn,
}

/// Fencing of orders: only a newer version reaches a worker, and a finished UID is never
/// started again — unless it is terminating, when a worker only confirms its deletion.
fn judge(
    worker_revision: Option<i64>,
    revision: i64,
    tombstoned: bool,
    terminating: bool,
) -> Verdict {
    match worker_revision {
        Some(have) if revision > have => Verdict::Hand,
        Some(_) => Verdict::Ignore,
        None if tombstoned && !terminating => Verdict::Ignore,
        None => Verdict::Spawn,
    }
}

/// Waits for `tasks` at most `limit`, then aborts what is left.
async fn wait_all(tasks: Vec<JoinHandle<()>>, limit: Duration) {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(limit, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!("pod workers did not finish in time; aborting them");
        for abort in aborts {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        worker: Option<i64>,
        revision: i64,
        tombstoned: bool,
        terminating: bool,
        expected: Verdict,
    ) {
        let got = judge(worker, revision, tombstoned, terminating);
        assert_eq!(
            got, expected,
            "worker={worker:?} rv={revision} tomb={tombstoned} term={terminating}"
        );
    }

    #[test]
    fn only_newer_orders_reach_a_worker_and_finished_pods_stay_finished() {
        use Verdict::*;
        //    worker   rv   tomb   term   -> verdict
        check(None, 10, false, false, Spawn);
        check(Some(10), 11, false, false, Hand);
        check(Some(10), 10, false, false, Ignore);
        // A relist from a lagging peer shows an older version: ignored.
        check(Some(12), 9, false, false, Ignore);
        check(Some(12), 9, false, true, Ignore);
        // Torn down already: a stale view of the running pod never restarts it…
        check(None, 9, true, false, Ignore);
        // …but a deletion still to be confirmed gets a confirming worker.
        check(None, 13, true, true, Spawn);
    }
}
