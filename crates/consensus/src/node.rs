//! A store peer: openraft over the RocksDB log and state machine, plus the client-facing
//! operations — writes (forwarded to the leader), linearizable or serializable reads, watches and
//! membership changes — each with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use rocksdb::DB;
use tokio::time::Instant;

use crate::config::StoreConfig;
use crate::db;
use crate::durable::Durability;
use crate::error::StoreError;
use crate::forward::{ForwardOk, ForwardRequest, Forwarder, Member};
use crate::log_store::LogStore;
use crate::mvcc::{self, RangeQuery, ReadView};
use crate::network::{self, Network, PeerChannels};
use crate::propose::{self, Proposer, GROUP_WRITES_MAX};
use crate::read_index::ReadIndexer;
use crate::snapshot::SnapshotStore;
use crate::state_machine::StateMachine;
use crate::types::{KeyRange, NodeId, Raft, RangeResult, WriteOp, WriteRequest, WriteResponse};
use crate::watch::{WatchError, WatchHub, Watcher};

/// Most attempts of one client request across leader changes, within its deadline.
pub const REQUEST_ATTEMPTS_MAX: u32 = 10;
/// Pause between attempts, multiplied by the attempt number; a newly known leader ends it.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// A learner is promoted only when it is at most this many entries behind the leader.
pub const PROMOTE_MAX_LAG_ENTRIES: u64 = 1_000;

/// A point-in-time view of a peer's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub state: String,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
}

pub struct StoreNode {
    pub id: NodeId,
    raft: Raft,
    db: Arc<DB>,
    hub: Arc<WatchHub>,
    channels: PeerChannels,
    config: StoreConfig,
    request_prefix: String,
    request_seq: AtomicU64,
    proposer: Proposer,
    forwarder: Forwarder,
    read_indexer: ReadIndexer,
}

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(e.to_string())
}

impl StoreNode {
    /// Opens (or creates) the peer's data directory and starts Raft. The peer joins a cluster
    /// through [`StoreNode::initialize`] (static bootstrap) or by being added by the leader.
    pub async fn open(config: StoreConfig) -> Result<Arc<StoreNode>, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(storage)?;
        let db = db::open(&config.data_dir.join("db")).map_err(storage)?;
        let revision = mvcc::read_meta_db(&db).map_err(storage)?.revision;
        let hub = WatchHub::new(revision, config.watch.clone());
        let snapshots =
            SnapshotStore::open(config.data_dir.join("snapshots"), db.clone()).map_err(storage)?;
        let durability = Durability::new();
        let sm = StateMachine::open(db.clone(), hub.clone(), snapshots, durability.clone())
            .map_err(storage)?;
        let log = LogStore::new(db.clone(), config.id, durability.clone()).map_err(storage)?;
        let channels = PeerChannels::new(config.rpc_timeout);
        let network = Network {
            channels: channels.clone(),
            rpc_timeout: config.rpc_timeout,
            durability,
        };
        let raft_config = Arc::new(
            config
                .raft_config()
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
        let raft = Raft::new(config.id, raft_config, network, log, sm)
            .await
            .map_err(storage)?;
        Ok(Arc::new(StoreNode {
            id: config.id,
            proposer: Proposer::start(raft.clone(), config.id),
            forwarder: Forwarder::start(channels.clone()),
            read_indexer: ReadIndexer::start(raft.clone(), config.id, config.request_timeout),
            raft,
            db,
            hub,
            channels,
            request_prefix: format!("{}-{:016x}", config.id, rand::random::<u64>()),
            request_seq: AtomicU64::new(0),
            config,
        }))
    }

    /// Bootstraps a static initial cluster. Every initial peer calls it with the same members;
    /// on a peer that already holds Raft state it does nothing.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<(), StoreError> {
        if self.raft.is_initialized().await.map_err(storage)? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StoreError::Membership(e.to_string())),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }

    /// The known leader and its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((leader, addr))
    }

    /// The term this peer leads in, if it is the leader now.
    pub fn leader_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id))
            .then_some(metrics.current_term)
    }

    pub fn status(&self) -> Result<Status, StoreError> {
        let view = ReadView::new(&self.db)?;
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        Ok(Status {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            state: format!("{:?}", m.state),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            revision: view.meta.revision,
            compact_revision: view.meta.compact_revision,
        })
    }

    pub fn members(&self) -> Vec<Member> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                is_learner: !voters.contains(id),
            })
            .collect()
    }

    fn next_request_id(&self) -> String {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{seq}", self.request_prefix)
    }

    /// Commits a write through the leader and returns what applying it produced. A write
    /// without a request id gets one, so that retries across leader changes apply it once.
    pub async fn write(&self, mut request: WriteRequest) -> Result<WriteResponse, StoreError> {
        request.validate().map_err(StoreError::Invalid)?;
        if request.request_id.is_none() {
            request.request_id = Some(self.next_request_id());
        }
        let request = ForwardRequest::Write(request);
        match self.on_leader(request).await? {
            ForwardOk::Write(response) => Ok(response),
            other => Err(StoreError::Storage(format!(
                "leader answered a write with {other:?}"
            ))),
        }
    }

    /// Runs `request` on the leader — here, or forwarded — retrying across elections until the
    /// deadline or [`REQUEST_ATTEMPTS_MAX`].
    async fn on_leader(&self, request: ForwardRequest) -> Result<ForwardOk, StoreError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut roles = self.raft.server_metrics();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tried = roles.borrow_and_update().current_leader;
            let result = self.on_leader_once(&request, deadline).await;
            match result {
                Err(e)
                    if e.is_retryable()
                        && attempt < REQUEST_ATTEMPTS_MAX
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, attempt, "retrying request on the leader");
                    // With no leader known, an election is under way: give it up to one election
                    // timeout.
                    let pause = match tried {
                        None => Duration::from_millis(self.config.election_timeout_max_ms),
                        Some(_) => RETRY_BACKOFF * attempt,
                    };
                    let pause = pause.min(deadline.saturating_duration_since(Instant::now()));
                    // After a failover the request goes to the new leader as soon as this peer
                    // knows it, not when the pause would have ended.
                    let new_leader =
                        roles.wait_for(|m| m.current_leader.is_some() && m.current_leader != tried);
                    let _ = tokio::time::timeout(pause, new_leader).await;
                }
                other => return other,
            }
        }
    }

    async fn on_leader_once(
        &self,
        request: &ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardOk, StoreError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // `on_leader` waits out an election between attempts.
        match self.leader() {
            Some((leader, _)) if leader == self.id => {
                self.execute_as_leader(request.clone(), deadline).await
            }
            Some((leader, addr)) => match request {
                ForwardRequest::Write(write) => {
                    let bytes = write.checked_bytes().map_err(StoreError::Invalid)?;
                    self.forwarder
                        .forward(leader, &addr, write.clone(), bytes, remaining)
                        .await
                        .map(ForwardOk::Write)
                }
                _ => network::forward(&self.channels, leader, &addr, request, remaining)
                    .await
                    .map_err(StoreError::Unavailable)?,
            },
            None => Err(StoreError::Unavailable("no leader elected yet".into())),
        }
    }

    /// Executes a (possibly forwarded) request on this peer, which must be the leader.
    pub async fn execute_as_leader(
        &self,
        request: ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardOk, StoreError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout_ms = self.config.request_timeout.as_millis() as u64;
        let work = async {
            match request {
                ForwardRequest::Write(write) => Ok(ForwardOk::Write(self.propose(write).await?)),
                ForwardRequest::Writes(writes) => {
                    if writes.len() > GROUP_WRITES_MAX {
                        return Err(StoreError::Invalid(format!(
                            "{} forwarded writes; the limit is {GROUP_WRITES_MAX}",
                            writes.len()
                        )));
                    }
                    let each = writes.into_iter().map(|write| self.propose(write));
                    Ok(ForwardOk::Writes(futures::future::join_all(each).await))
                }
                ForwardRequest::AddMember {
                    id,
                    addr,
                    learner_only,
                } => {
                    self.raft
                        .add_learner(id, BasicNode::new(addr), false)
                        .await
                        .map_err(|e| self.write_error(e))?;
                    if !learner_only {
                        self.promote_when_caught_up(id, deadline).await?;
                    }
                    Ok(ForwardOk::Members(self.members()))
                }
                ForwardRequest::Promote { id } => {
                    self.promote_when_caught_up(id, deadline).await?;
                    Ok(ForwardOk::Members(self.members()))
                }
                ForwardRequest::Remove { id } => {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(|e| self.write_error(e))?;
                    Ok(ForwardOk::Members(self.members()))
                }
            }
        };
        tokio::time::timeout(remaining, work)
            .await
            .unwrap_or(Err(StoreError::Timeout(timeout_ms)))
    }

    /// Proposes one client write on this peer, the leader.
    async fn propose(&self, write: WriteRequest) -> Result<WriteResponse, StoreError> {
        let bytes = write.checked_bytes().map_err(StoreError::Invalid)?;
        if matches!(write.op, WriteOp::Group(_)) {
            return Err(StoreError::Invalid(
                "groups are formed by the leader's proposer, not sent to it".into(),
            ));
        }
        self.proposer.propose(write, bytes).await
    }

    async fn promote_when_caught_up(
        &self,
        id: NodeId,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        if !self.members().iter().any(|m| m.id == id) {
            return Err(StoreError::Membership(format!(
                "peer {id} is not a member; add it first"
            )));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|matched| matched.index + PROMOTE_MAX_LAG_ENTRIES >= last)
                },
                "learner caught up",
            )
            .await
            .map_err(|_| {
                StoreError::Membership(format!(
                    "peer {id} did not catch up with the leader within the deadline; retry"
                ))
            })?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    fn write_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> StoreError {
        propose::client_write_error(self.id, e)
    }

    /// Waits until this peer has applied everything committed before the call began (ReadIndex).
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        if cfg!(feature = "bug-local-reads") {
            // Deliberately broken build for the chaos checkers: answer from local state.
            return Ok(());
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.read_barrier_once(deadline).await {
                Err(e)
                    if e.is_retryable()
                        && attempt < REQUEST_ATTEMPTS_MAX
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(
                        (RETRY_BACKOFF * attempt)
                            .min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                other => return other,
            }
        }
    }

    async fn read_barrier_once(&self, deadline: Instant) -> Result<(), StoreError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout_ms = self.config.request_timeout.as_millis() as u64;
        let read_index = match self.leader() {
            Some((leader, _)) if leader == self.id => self.read_index_as_leader(remaining).await?,
            Some((leader, addr)) => network::read_index(&self.channels, leader, &addr, remaining)
                .await
                .map_err(|s| {
                    StoreError::Unavailable(format!(
                        "read index from leader {leader}: {}",
                        s.message()
                    ))
                })?,
            None => return Err(StoreError::Unavailable("no leader elected yet".into())),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(read_index), "read index applied")
            .await
            .map_err(|_| StoreError::Timeout(timeout_ms))?;
        Ok(())
    }

    /// Confirms leadership with a quorum (one round shared by the reads waiting for it, see
    /// `read_index.rs`); returns the index a linearizable read waits for.
    pub async fn read_index_as_leader(&self, timeout: Duration) -> Result<u64, StoreError> {
        self.read_indexer.read_index(timeout).await
    }

    /// Reads a range. Linearizable unless `serializable`, which answers from this peer's applied
    /// state and may be stale. Returns the result and the store revision it was read at.
    pub async fn range(
        &self,
        query: RangeQuery,
        serializable: bool,
    ) -> Result<(RangeResult, i64), StoreError> {
        if !serializable {
            self.read_barrier().await?;
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let view = ReadView::new(&db)?;
            let result = view.range(&query)?;
            Ok((result, view.meta.revision))
        })
        .await
        .map_err(storage)?
    }

    /// Starts a watch on this peer's applied state.
    pub fn watch(&self, range: KeyRange, start_revision: i64) -> Result<Watcher, WatchError> {
        self.hub.subscribe(self.db.clone(), range, start_revision)
    }

    pub async fn add_member(
        &self,
        id: NodeId,
        addr: String,
        learner_only: bool,
    ) -> Result<Vec<Member>, StoreError> {
        self.members_reply(ForwardRequest::AddMember {
            id,
            addr,
            learner_only,
        })
        .await
    }

    pub async fn promote_member(&self, id: NodeId) -> Result<Vec<Member>, StoreError> {
        self.members_reply(ForwardRequest::Promote { id }).await
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<Member>, StoreError> {
        self.members_reply(ForwardRequest::Remove { id }).await
    }

    async fn members_reply(&self, request: ForwardRequest) -> Result<Vec<Member>, StoreError> {
        match self.on_leader(request).await? {
            ForwardOk::Members(members) => Ok(members),
            other => Err(StoreError::Storage(format!(
                "leader answered a membership change with {other:?}"
            ))),
        }
    }

    /// Resolves when Raft has stopped on a fatal error (a storage failure), with its reason.
    pub async fn fatal(&self) -> String {
        // The server metrics change only with the role, and end when Raft's core does; the
        // full metrics change with every commit and would wake this waiter each time.
        let mut roles = self.raft.server_metrics();
        while roles.changed().await.is_ok() {}
        match &self.raft.metrics().borrow().running_state {
            Err(fatal) => fatal.to_string(),
            Ok(()) => "raft stopped".into(),
        }
    }

    /// Stops Raft and ends every watch. Returns a handle that reports when the database has
    /// been closed (every reference released).
    pub async fn shutdown(&self) -> Weak<DB> {
        self.hub.close();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        Arc::downgrade(&self.db)
    }
}

/// Waits until the database behind `weak` is closed, at most `timeout`. Returns whether it is.
pub async fn wait_closed(weak: Weak<DB>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while weak.strong_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
