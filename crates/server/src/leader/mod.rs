//! Leader-only work. The supervisor starts the scheduler and the controllers when this peer
//! becomes leader and stops them the moment it is not (or has not heard from a quorum for a few
//! election timeouts). Every write they make goes through a registry fenced to the term they
//! started in, so a deposed leader's late writes are refused by the state machine once the new leader has written.
//! Those writes also carry the [`stamp`] of their term, and a term begins with a
//! `LeaderElection` event, so the history shows which leader wrote what.

pub mod convert;
pub mod nodes;
pub mod scheduling;
pub mod stamp;
pub mod workloads;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use flotilla_consensus::StoreNode;
use flotilla_state::informer::{spawn_grouped_informer, spawn_informer, Cache, Query};
use flotilla_state::objects::{Deployment, Node, Pod, ReplicaSet};
use flotilla_state::registry::Registry;
use flotilla_state::Kind;
use openraft::ServerState;

use crate::heartbeat::Heartbeats;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Worker threads of the leader loops' own runtime (see [`supervise_on_own_thread`]).
pub const LEADER_LOOP_THREADS: usize = 1;

/// The time one round of a leader loop spends computing, as opposed to waiting for its writes to
/// commit. A loop pauses at least this long after a round: at scale a round scans every cached
/// object, and back-to-back rounds would leave the informers (on the same thread) too little time
/// to keep up. Waiting on Raft takes no CPU from them, so it does not count.
#[derive(Debug)]
pub struct ComputeTime {
    spent: Duration,
    /// When the running stretch began; `None` while paused.
    since: Option<std::time::Instant>,
}

impl ComputeTime {
    /// Counting from now.
    pub fn start() -> ComputeTime {
        ComputeTime {
            spent: Duration::ZERO,
            since: Some(std::time::Instant::now()),
        }
    }

    /// Stops counting (the round is about to wait on its writes).
    pub fn pause(&mut self) {
        if let Some(since) = self.since.take() {
            self.spent += since.elapsed();
        }
    }

    /// Counts again.
    pub fn resume(&mut self) {
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    /// The time counted so far.
    pub fn spent(&self) -> Duration {
        self.spent + self.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// How often leadership is re-checked even when Raft reports no change of role: the quorum's
/// acknowledgements that start and stop the loops are not announced.
const LEADERSHIP_POLL: Duration = Duration::from_millis(100);
/// The re-check while this peer is leader and its loops wait for a quorum's first
/// acknowledgement, which follows the election within a heartbeat.
const NEW_LEADER_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Default)]
pub struct LeaderConfig {
    pub scheduling: scheduling::SchedulingConfig,
    pub lifecycle: flotilla_controllers::node_lifecycle::LifecycleConfig,
}

pub type ApiRegistry = Registry<Arc<StoreNode>>;
/// The registry leader loops write through: fenced, and stamped with their term.
pub type LeaderRegistry = Registry<stamp::StampedStore>;

/// What one term's loops share.
pub struct TermContext {
    pub term: u64,
    /// Writes fenced to `term`.
    pub registry: LeaderRegistry,
    /// Grouped by controller uid ([`Cache::group`]).
    pub pods: Arc<Cache<Pod>>,
    pub nodes: Arc<Cache<Node>>,
    pub replicasets: Arc<Cache<ReplicaSet>>,
    pub deployments: Arc<Cache<Deployment>>,
    /// Heartbeats received since this term began.
    pub heartbeats: Arc<Heartbeats>,
    pub leading_since: std::time::Instant,
    pub config: LeaderConfig,
}

/// Running loops are stopped after this many election timeouts without a quorum's
/// acknowledgement (starting them needs one within a single election timeout). The hysteresis
/// keeps an overloaded leader whose heartbeats sometimes miss their deadline from restarting
/// its loops — and relisting every cache — every few seconds; safety does not depend on it,
/// since every loop write is fenced to its term.
const QUORUM_SILENCE_STOP_FACTOR: u64 = 6;

/// The term this peer leads in, if it is leader and has heard from a quorum recently (within
/// one election timeout to start loops, [`QUORUM_SILENCE_STOP_FACTOR`] of them to keep them).
fn leading_term(node: &StoreNode, running: bool) -> Option<u64> {
    let metrics = node.raft().metrics();
    let m = metrics.borrow();
    let factor = if running {
        QUORUM_SILENCE_STOP_FACTOR
    } else {
        1
    };
    let quorum_ms = node.config().election_timeout_max_ms * factor;
    let in_touch = m.millis_since_quorum_ack.is_some_and(|ms| ms < quorum_ms);
    (m.state == ServerState::Leader && m.current_leader == Some(node.id) && in_touch)
        .then_some(m.current_term)
}

/// Runs [`supervise`] on a thread and tokio runtime of its own (named `leader-loops`), until the
/// returned future is dropped or the supervisor ends (the future then completes).
///
/// The loops decode, cache and scan every object of the cluster; at scale that is seconds of
/// CPU after each change of leadership. On a runtime of their own they cannot hold up the Raft
/// core, its heartbeats and the API behind them on the server's workers: a busy leader keeps
/// answering its followers in time instead of being voted out.
pub fn supervise_on_own_thread(
    node: Arc<StoreNode>,
    registry: ApiRegistry,
    heartbeats: Arc<Heartbeats>,
    config: LeaderConfig,
) -> impl std::future::Future<Output = ()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("leader-loops".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(LEADER_LOOP_THREADS)
                .thread_name("leader-loops")
                .enable_all()
                .build()
                .expect("building the leader loops' runtime");
            runtime.block_on(async {
                tokio::select! {
                    () = supervise(node, registry, heartbeats, config) => {}
                    _ = stopped => {}
                }
            });
            let _ = done.send(());
        });
    async move {
        // Dropping `stop` (with this future) ends the supervisor and its loops.
        let _stop = stop;
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the leader loops' thread");
            return;
        }
        let _ = finished.await;
    }
}

/// Runs forever: starts the leader loops on gaining leadership, stops them on losing it.
pub async fn supervise(
    node: Arc<StoreNode>,
    registry: ApiRegistry,
    heartbeats: Arc<Heartbeats>,
    config: LeaderConfig,
) {
    // Changes of role only: the full metrics change with every commit, and waking on each
    // would put this thread in the path of every write.
    let mut roles = node.raft().server_metrics();
    let mut running: Option<(u64, Running)> = None;
    loop {
        let term = leading_term(&node, running.is_some());
        let current = running.as_ref().map(|(t, _)| *t);
        if term != current {
            if let Some((old, loops)) = running.take() {
                tracing::info!(term = old, "leadership lost: stopping leader loops");
                loops.stop().await;
            }
            if let Some(term) = term {
                tracing::info!(term, "leader: starting scheduler and controllers");
                heartbeats.clear();
                running = Some((term, start(&registry, term, &heartbeats, &config)));
            }
        }
        let awaiting_quorum = running.is_none() && roles.borrow().state == ServerState::Leader;
        let poll = if awaiting_quorum {
            NEW_LEADER_POLL
        } else {
            LEADERSHIP_POLL
        };
        tokio::select! {
            changed = roles.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(poll) => {}
        }
    }
    if let Some((_, loops)) = running {
        loops.stop().await;
    }
}

/// The loops of one term.
struct Running {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.send_replace(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The group of a pod in the leader's pod cache: the uid of its controller (its ReplicaSet).
fn pod_controller(pod: &Pod) -> Option<String> {
    pod.metadata
        .controller_owner()
        .map(|owner| owner.uid.clone())
}

fn start(
    registry: &ApiRegistry,
    term: u64,
    heartbeats: &Arc<Heartbeats>,
    config: &LeaderConfig,
) -> Running {
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let source = Arc::new(registry.clone());
    let stamped = stamp::StampedStore::new(registry.store().clone());
    let ctx = Arc::new(TermContext {
        term,
        registry: Registry::new(stamped, registry.kinds()).fenced(term),
        pods: spawn_grouped_informer(
            source.clone(),
            Query::all(Kind::Pod),
            until_stopped(),
            pod_controller,
        ),
        nodes: spawn_informer(source.clone(), Query::all(Kind::Node), until_stopped()),
        replicasets: spawn_informer(
            source.clone(),
            Query::all(Kind::ReplicaSet),
            until_stopped(),
        ),
        deployments: spawn_informer(source, Query::all(Kind::Deployment), until_stopped()),
        heartbeats: heartbeats.clone(),
        leading_since: std::time::Instant::now(),
        config: config.clone(),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(writes::announce_leadership(ctx.clone()));
    tasks.spawn(scheduling::run(ctx.clone()));
    tasks.spawn(workloads::run_replicasets(ctx.clone()));
    tasks.spawn(workloads::run_deployments(ctx.clone()));
    tasks.spawn(nodes::run_lifecycle(ctx));
    Running { tasks, stop }
}

#[cfg(test)]
mod tests {
    use super::ComputeTime;

    /// Time spent paused (waiting on writes) never counts; counting picks up after `resume`.
    #[test]
    fn paused_time_does_not_count() {
        let mut computing = ComputeTime::start();
        computing.pause();
        let before = computing.spent();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(computing.spent(), before, "nothing counted while paused");
        computing.pause();
        assert_eq!(computing.spent(), before, "a second pause changes nothing");
        computing.resume();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(computing.spent() > before, "counting again after resume");
    }
}
