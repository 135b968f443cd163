//! The gRPC Raft transport, client side: one cached channel per peer, a deadline on every call,
//! message limits raised to fit append batches and snapshot chunks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::raft::raft_transport_client::RaftTransportClient;
use flotilla_api::raft::{RaftPayload, ReadIndexRequest};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::db::{decode, encode};
use crate::durable::Durability;
use crate::forward::{ForwardReply, ForwardRequest};
use crate::types::{NodeId, TypeConfig};

/// Largest gRPC message between peers: an append batch or a snapshot chunk plus framing.
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Largest append payload sent in one call; bigger batches are split (openraft resends fewer
/// entries on `PayloadTooLarge`).
pub const APPEND_PAYLOAD_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Bounds of the per-target append budget (see [`AppendBudget`]).
pub const APPEND_BUDGET_MIN_BYTES: usize = 32 * 1024;
pub const APPEND_BUDGET_MAX_BYTES: usize = 4 * 1024 * 1024;
const APPEND_BUDGET_START_BYTES: usize = 1024 * 1024;

/// How many bytes of entries one append to a target may carry. openraft gives an append one
/// heartbeat interval and drops it when that passes, so a batch a busy follower cannot decode,
/// write and fsync in time would time out forever and the follower would never catch up. The
/// budget shrinks to a quarter after an append was dropped unfinished and grows by a quarter
/// after each one that completed, between [`APPEND_BUDGET_MIN_BYTES`] and
/// [`APPEND_BUDGET_MAX_BYTES`]; larger batches are split through `PayloadTooLarge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBudget {
    bytes: usize,
    in_flight: bool,
}

impl Default for AppendBudget {
    fn default() -> Self {
        AppendBudget {
            bytes: APPEND_BUDGET_START_BYTES,
            in_flight: false,
        }
    }
}

impl AppendBudget {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Called before sending `entries` entries of `size` bytes: `Some(n)` asks for at most `n`
    /// entries instead. An append still marked in flight was dropped at its deadline.
    pub fn admit(&mut self, entries: usize, size: usize) -> Option<usize> {
        if self.in_flight {
            self.bytes = (self.bytes / 4).max(APPEND_BUDGET_MIN_BYTES);
            self.in_flight = false;
        }
        if size > self.bytes && entries > 1 {
            return Some((entries * self.bytes / size).clamp(1, entries - 1));
        }
        self.in_flight = true;
        None
    }

    /// The append admitted last has completed (whatever its answer).
    pub fn completed(&mut self) {
        self.in_flight = false;
        self.bytes = (self.bytes + self.bytes / 4).min(APPEND_BUDGET_MAX_BYTES);
    }
}

/// Channels to peers, shared by Raft replication and request forwarding.
#[derive(Clone)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    connect_timeout: Duration,
}

impl PeerChannels {
    pub fn new(connect_timeout: Duration) -> Self {
        PeerChannels {
            channels: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
        }
    }

    /// The cached channel to `target`, replaced when its address changed.
    pub fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer channel lock");
        if let Some((cached_addr, channel)) = channels.get(&target) {
            if cached_addr == addr {
                return Ok(channel.clone());
            }
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(target, (addr.to_string(), channel.clone()));
        Ok(channel)
    }

    pub fn client(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
        Ok(RaftTransportClient::new(self.channel(target, addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

/// Creates a [`PeerConnection`] per replication target for openraft.
#[derive(Clone)]
pub struct Network {
    pub channels: PeerChannels,
    pub rpc_timeout: Duration,
    /// How far this peer's own log is on disk: no follower hears of a commit beyond it.
    pub durability: Arc<Durability>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self
                .channels
                .client(target, &node.addr)
                .map_err(|e| e.to_string()),
            rpc_timeout: self.rpc_timeout,
            append_budget: AppendBudget::default(),
            durability: self.durability.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    client: Result<RaftTransportClient<Channel>, String>,
    rpc_timeout: Duration,
    append_budget: AppendBudget,
    durability: Arc<Durability>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn unreachable<E: std::error::Error>(
    msg: String,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Unreachable(Unreachable::new(&TransportError(msg)))
}

fn network<E: std::error::Error>(msg: String) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&TransportError(msg)))
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RpcKind,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(e) => return Err(unreachable(format!("bad peer address: {e}"))),
        };
        let mut request = tonic::Request::new(RaftPayload { data: encode(req) });
        request.set_timeout(timeout);
        let reply = match kind {
            RpcKind::Append => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(unreachable(format!(
                    "peer {}: {}",
                    self.target,
                    status.message()
                )))
            }
            Err(status) => return Err(network(format!("peer {}: {status}", self.target))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.data).map_err(|e| network(format!("undecodable reply: {e}")))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        rpc.leader_commit = self.durability.clamp_commit(rpc.leader_commit);
        let timeout = option.hard_ttl().min(self.rpc_timeout);
        let size = bincode::serialized_size(&rpc).unwrap_or(0) as usize;
        // Ask openraft to resend fewer entries per call rather than time out or fail at the
        // gRPC limit.
        if let Some(fits) = self.append_budget.admit(rpc.entries.len(), size) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fits as u64),
            ));
        }
        let result = self.call(RpcKind::Append, &rpc, timeout).await;
        self.append_budget.completed();
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RpcKind::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let timeout = option.hard_ttl().min(self.rpc_timeout);
        self.call(RpcKind::Vote, &rpc, timeout).await
    }
}

/// Calls the leader on behalf of a client: a forwarded write or membership change.
pub async fn forward(
    channels: &PeerChannels,
    leader: NodeId,
    addr: &str,
    request: &ForwardRequest,
    timeout: Duration,
) -> Result<ForwardReply, String> {
    let mut client = channels.client(leader, addr).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(RaftPayload {
        data: encode(request),
    });
    req.set_timeout(timeout);
    let reply = client.forward(req).await.map_err(|status| {
        format!(
            "forwarding to leader {leader} at {addr}: {}",
            status.message()
        )
    })?;
    decode(&reply.into_inner().data).map_err(|e| format!("undecodable reply from the leader: {e}"))
}

/// Asks the leader for the index a linearizable read must wait for.
pub async fn read_index(
    channels: &PeerChannels,
    leader: NodeId,
    addr: &str,
    timeout: Duration,
) -> Result<u64, tonic::Status> {
    let mut client = channels
        .client(leader, addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(ReadIndexRequest {});
    req.set_timeout(timeout);
    Ok(client.read_index(req).await?.into_inner().read_index)
}

const _: () = assert!(APPEND_BUDGET_MAX_BYTES <= APPEND_PAYLOAD_MAX_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_over_budget_is_split_in_proportion() {
        let mut budget = AppendBudget::default();
        let start = budget.bytes();
        assert_eq!(budget.admit(100, start * 4), Some(25));
        assert_eq!(budget.admit(2, start * 100), Some(1));
        assert_eq!(budget.admit(1, start * 100), None, "one entry always goes");
    }

    #[test]
    fn a_dropped_append_shrinks_the_budget_and_completions_grow_it_back() {
        let mut budget = AppendBudget::default();
        let start = budget.bytes();
        assert_eq!(budget.admit(10, 1000), None);
        // Never completed: openraft dropped it at its deadline.
        assert_eq!(budget.admit(10, 1000), None);
        assert_eq!(budget.bytes(), start / 4);
        for _ in 0..100 {
            assert_eq!(budget.admit(1, 10), None);
            budget.completed();
        }
        assert_eq!(budget.bytes(), APPEND_BUDGET_MAX_BYTES);
        for _ in 0..100 {
            budget.admit(1, 10);
        }
        assert_eq!(budget.bytes(), APPEND_BUDGET_MIN_BYTES);
    }
}
