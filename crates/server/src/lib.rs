//! A control-plane peer: wires consensus + state + gRPC, joins or bootstraps the cluster, and
//! serves Raft and the client APIs on one port until told to stop or until the store fails.

pub mod heartbeat;
pub mod leader;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cluster::cluster_api_server::ClusterApiServer;
use flotilla_api::kv::cluster_client::ClusterClient;
use flotilla_api::kv::MemberAddRequest;
use flotilla_api::node::node_api_server::NodeApiServer;
use flotilla_consensus::{NodeId, StoreConfig, StoreError, StoreNode};
use flotilla_state::registry::Registry;
use flotilla_state::service::{ClusterApiService, KINDS};
use tokio::net::TcpListener;

/// Largest Cluster API request: manifests of many objects.
pub const MAX_API_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Largest Cluster API response: a full list page.
pub const MAX_API_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Most attempts to join through `--join` before giving up; one every [`JOIN_RETRY_PAUSE`].
pub const JOIN_ATTEMPTS_MAX: u32 = 30;
const JOIN_RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("joining the cluster through {via}: {reason}")]
    Join { via: String, reason: String },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the store failed and the peer stops: {0}")]
    Fatal(String),
    #[error("{0}")]
    Config(String),
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// The address peers and clients use to reach this peer; defaults to `listen`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// A static initial cluster (id -> address), identical on every initial peer.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// Join a running cluster through this peer instead of bootstrapping.
    pub join: Option<String>,
    pub leader: leader::LeaderConfig,
}

impl PeerConfig {
    pub fn store_config(&self) -> StoreConfig {
        let advertise = self
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string());
        StoreConfig::new(self.id, advertise, self.data_dir.clone())
    }
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<NodeId, String>, ServerError> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            ServerError::Config(format!(
                "initial cluster entry {part:?}: expected ID=HOST:PORT"
            ))
        })?;
        let id: NodeId = id.trim().parse().map_err(|_| {
            ServerError::Config(format!(
                "initial cluster entry {part:?}: {id:?} is not a peer id"
            ))
        })?;
        if id == 0 {
            return Err(ServerError::Config("peer id 0 is reserved".into()));
        }
        if members.insert(id, addr.trim().to_string()).is_some() {
            return Err(ServerError::Config(format!(
                "initial cluster names peer {id} twice"
            )));
        }
    }
    Ok(members)
}

/// A running peer.
pub struct Peer {
    pub node: Arc<StoreNode>,
    pub addr: SocketAddr,
}

/// Runs a peer until `shutdown` resolves (then stops cleanly) or the store fails.
pub async fn run(
    config: PeerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if config.id == 0 {
        return Err(ServerError::Config("peer id 0 is reserved".into()));
    }
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
    let store_config = config.store_config();
    let node = StoreNode::open(store_config.clone()).await?;
    if !config.initial_cluster.is_empty() {
        if !config.initial_cluster.contains_key(&config.id) {
            return Err(ServerError::Config(format!(
                "the initial cluster does not include this peer's id {}",
                config.id
            )));
        }
        node.initialize(&config.initial_cluster).await?;
    }
    let api = ClusterApiService::new(Registry::new(node.clone(), &KINDS));
    let heartbeats = Arc::new(heartbeat::Heartbeats::default());
    let router = flotilla_consensus::router(node.clone())
        .add_service(
            ClusterApiServer::new(api.clone())
                .max_decoding_message_size(MAX_API_REQUEST_BYTES)
                .max_encoding_message_size(MAX_API_RESPONSE_BYTES),
        )
        .add_service(NodeApiServer::new(heartbeat::NodeApiService::new(
            node.clone(),
            heartbeats.clone(),
        )));
    let server =
        router.serve_with_incoming_shutdown(flotilla_consensus::incoming(listener), shutdown);
    let bootstrap = ensure_default_namespace(&api);
    let leader_loops = leader::supervise_on_own_thread(
        node.clone(),
        api.registry().clone(),
        heartbeats,
        config.leader.clone(),
    );
    tracing::info!(id = config.id, addr = %store_config.advertise_addr, "peer serving");
    let joined = async {
        if let Some(via) = &config.join {
            join(&node, via, &store_config.advertise_addr).await?;
        }
        std::future::pending::<Result<(), ServerError>>().await
    };
    let result = tokio::select! {
        served = server => served.map_err(ServerError::from),
        reason = node.fatal() => Err(ServerError::Fatal(reason)),
        failed = joined => failed,
        () = bootstrap => unreachable!("bootstrap never ends"),
        () = leader_loops => Err(ServerError::Fatal("the leader supervisor stopped".into())),
    };
    node.shutdown().await;
    result
}

/// Creates the `default` namespace once the cluster can take writes (retrying through elections),
/// then waits forever.
async fn ensure_default_namespace(api: &ClusterApiService<Arc<StoreNode>>) {
    loop {
        match api.ensure_default_namespace().await {
            Ok(()) => break,
            Err(e) => tracing::debug!(error = %e, "default namespace not created yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    std::future::pending::<()>().await
}

/// Asks the cluster (through `via`) to add this peer, first as a learner, then as a voter once
/// it has caught up. A peer that already holds Raft state is already a member.
async fn join(node: &StoreNode, via: &str, advertise: &str) -> Result<(), ServerError> {
    if node.raft().is_initialized().await.unwrap_or(false) {
        return Ok(());
    }
    let err = |reason: String| ServerError::Join {
        via: via.to_string(),
        reason,
    };
    let mut last = String::new();
    for _ in 0..JOIN_ATTEMPTS_MAX {
        let attempt = async {
            let mut client = ClusterClient::connect(format!("http://{via}"))
                .await
                .map_err(|e| e.to_string())?;
            client
                .member_add(MemberAddRequest {
                    id: node.id,
                    addr: advertise.to_string(),
                    is_learner: false,
                })
                .await
                .map_err(|s| s.message().to_string())
        };
        match attempt.await {
            Ok(_) => {
                tracing::info!(via, "joined the cluster as a voter");
                return Ok(());
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(JOIN_RETRY_PAUSE).await;
    }
    Err(err(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parsing() {
        let parsed = parse_initial_cluster("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(parsed[&2], "127.0.0.1:7002");
        for (bad, expected) in [
            ("1127.0.0.1:7001", "expected ID=HOST:PORT"),
            ("x=127.0.0.1:7001", "is not a peer id"),
            ("0=127.0.0.1:7001", "reserved"),
            ("1=a:1,1=b:2", "twice"),
        ] {
            let e = parse_initial_cluster(bad).unwrap_err().to_string();
            assert!(e.contains(expected), "{bad}: {e}");
        }
    }
}
