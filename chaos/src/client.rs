//! gRPC plumbing shared by workloads, the nemesis and the end-of-run checks: channels to peers
//! (only to allowed destinations), status and membership calls with deadlines, and waiting for a
//! leader.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::kv::cluster_client::ClusterClient;
use flotilla_api::kv::kv_client::KvClient;
use flotilla_api::kv::watch_client::WatchClient;
use flotilla_api::kv::{MemberListRequest, MemberListResponse, StatusRequest, StatusResponse};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::ChaosError;
use crate::net::ensure_allowed_destination;

/// Deadline of one status or membership call.
pub const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a channel may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between polls while waiting for a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A lazily connecting channel to a peer. Refuses any address outside loopback and
/// 198.18.0.0/15.
pub fn channel(addr: SocketAddr) -> Result<Channel, ChaosError> {
    if let SocketAddr::V4(v4) = addr {
        ensure_allowed_destination(*v4.ip())?;
    } else {
        return Err(ChaosError::Config(format!(
            "{addr}: only IPv4 peers are supported"
        )));
    }
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ChaosError::Config(format!("{addr}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

pub fn kv(addr: SocketAddr) -> Result<KvClient<Channel>, ChaosError> {
    Ok(KvClient::new(channel(addr)?))
}

pub fn watch(addr: SocketAddr) -> Result<WatchClient<Channel>, ChaosError> {
    Ok(WatchClient::new(channel(addr)?))
}

/// The Kubernetes-shaped Cluster API (objects as JSON).
pub fn cluster_api(addr: SocketAddr) -> Result<ClusterApiClient<Channel>, ChaosError> {
    Ok(ClusterApiClient::new(channel(addr)?))
}

pub fn cluster(addr: SocketAddr) -> Result<ClusterClient<Channel>, ChaosError> {
    Ok(ClusterClient::new(channel(addr)?))
}

/// Runs `call` with `timeout`; a timeout becomes an RPC error naming `what`.
pub async fn with_deadline<T>(
    what: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ChaosError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ChaosError::rpc(what, &status)),
        Err(_) => Err(ChaosError::Rpc {
            context: what.to_string(),
            message: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}

pub async fn status(addr: SocketAddr) -> Result<StatusResponse, ChaosError> {
    let mut client = cluster(addr)?;
    let what = format!("status of {addr}");
    with_deadline(&what, CONTROL_CALL_TIMEOUT, client.status(StatusRequest {})).await
}

/// The members as the leader knows them (a linearizable member list).
pub async fn member_list(addr: SocketAddr) -> Result<MemberListResponse, ChaosError> {
    let mut client = cluster(addr)?;
    let what = format!("member list from {addr}");
    let request = MemberListRequest {
        serializable: false,
    };
    with_deadline(&what, CONTROL_CALL_TIMEOUT, client.member_list(request)).await
}

/// The leader's id as any of `addrs` reports it, if one answers and knows a leader.
pub async fn find_leader(addrs: &[SocketAddr]) -> Option<u64> {
    for &addr in addrs {
        if let Ok(status) = status(addr).await {
            if status.leader_id != 0 {
                return Some(status.leader_id);
            }
        }
    }
    None
}

/// Waits until every peer in `addrs` answers and names the same leader.
pub async fn wait_for_leader(addrs: &[SocketAddr], timeout: Duration) -> Result<u64, ChaosError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match agreed_leader(addrs).await {
            Ok(leader) => return Ok(leader),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(ChaosError::NotReady {
                what: "a leader every peer agrees on".into(),
                waited_ms: timeout.as_millis() as u64,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn agreed_leader(addrs: &[SocketAddr]) -> Result<u64, String> {
    let mut leaders = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let status = status(addr).await.map_err(|e| e.to_string())?;
        leaders.push(status.leader_id);
    }
    match leaders.first() {
        Some(&leader) if leader != 0 && leaders.iter().all(|&l| l == leader) => Ok(leader),
        _ => Err(format!("leaders reported: {leaders:?}")),
    }
}
