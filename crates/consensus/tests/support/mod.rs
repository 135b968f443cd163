//! Test support: store peers in this process, each with its own RocksDB directory and a real
//! gRPC server on a loopback port.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_consensus::node::wait_closed;
use flotilla_consensus::{KeyRange, RangeQuery, StoreConfig, StoreNode, WriteRequest};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Settings for tests: small snapshot thresholds so snapshots and purges happen quickly.
pub fn test_config(id: u64, addr: &str, dir: PathBuf) -> StoreConfig {
    let mut config = StoreConfig::new(id, addr, dir);
    config.snapshot_every_entries = 200;
    config.keep_entries_after_snapshot = 20;
    config
}

pub struct Peer {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub node: Option<Arc<StoreNode>>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Peer {
    pub fn node(&self) -> &Arc<StoreNode> {
        self.node.as_ref().expect("peer is running")
    }
}

async fn serve(
    node: Arc<StoreNode>,
    listener: TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let router = flotilla_consensus::router(node);
    let handle = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(flotilla_consensus::incoming(listener), async {
                let _ = rx.await;
            })
            .await;
    });
    (tx, handle)
}

/// Opens the peer's store and serves it on `listener`.
pub async fn start_peer(config: StoreConfig, listener: TcpListener) -> Peer {
    let id = config.id;
    let addr = config.advertise_addr.clone();
    let dir = config.data_dir.clone();
    let node = StoreNode::open(config).await.expect("open store");
    let server = serve(node.clone(), listener).await;
    Peer {
        id,
        addr,
        dir,
        node: Some(node),
        server: Some(server),
    }
}

pub async fn loopback_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

pub struct Cluster {
    pub peers: BTreeMap<u64, Peer>,
    pub configure: fn(&mut StoreConfig),
    _tmp: tempfile::TempDir,
    tmp_path: PathBuf,
}

impl Cluster {
    /// Starts `n` peers (ids 1..=n) bootstrapped as one cluster and waits for a leader.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: u64, configure: fn(&mut StoreConfig)) -> Cluster {
        init_tracing();
        let tmp = tempfile::tempdir().unwrap();
        let tmp_path = tmp.path().to_path_buf();
        let mut listeners = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=n {
            let (listener, addr) = loopback_listener().await;
            members.insert(id, addr);
            listeners.push(listener);
        }
        let mut cluster = Cluster {
            peers: BTreeMap::new(),
            configure,
            _tmp: tmp,
            tmp_path,
        };
        for (id, listener) in (1..=n).zip(listeners) {
            let mut config = test_config(
                id,
                &members[&id],
                cluster.tmp_path.join(format!("peer-{id}")),
            );
            configure(&mut config);
            let peer = start_peer(config, listener).await;
            peer.node().initialize(&members).await.expect("initialize");
            cluster.peers.insert(id, peer);
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    pub fn node(&self, id: u64) -> &Arc<StoreNode> {
        self.peers[&id].node()
    }

    pub fn running(&self) -> Vec<u64> {
        self.peers
            .values()
            .filter(|p| p.node.is_some())
            .map(|p| p.id)
            .collect()
    }

    /// Waits until a running peer is leader and every running peer knows it.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|id| self.node(*id).leader().map(|(l, _)| l))
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if self.running().contains(leader)
                    && self.node(*leader).leader_term().is_some()
                    && leaders.iter().all(|l| *l == Some(*leader))
                {
                    return *leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A running peer that is not the leader.
    pub async fn follower(&self) -> u64 {
        let leader = self.wait_leader(Duration::from_secs(10)).await;
        *self
            .running()
            .iter()
            .find(|id| **id != leader)
            .expect("a follower")
    }

    /// Stops a peer as abruptly as this process can: server gone, Raft stopped, store closed.
    pub async fn stop(&mut self, id: u64) {
        let peer = self.peers.get_mut(&id).unwrap();
        if let Some((tx, handle)) = peer.server.take() {
            let _ = tx.send(());
            handle.abort();
            let _ = handle.await;
        }
        let node = peer.node.take().expect("running");
        let weak = node.shutdown().await;
        drop(node);
        assert!(
            wait_closed(weak, Duration::from_secs(10)).await,
            "store of peer {id} did not close"
        );
    }

    /// Restarts a stopped peer on its old address and data directory.
    pub async fn restart(&mut self, id: u64) {
        let (addr, dir) = {
            let peer = &self.peers[&id];
            (peer.addr.clone(), peer.dir.clone())
        };
        let listener = bind_retry(&addr).await;
        let mut config = test_config(id, &addr, dir);
        (self.configure)(&mut config);
        let peer = start_peer(config, listener).await;
        self.peers.insert(id, peer);
    }

    /// Starts a new, empty peer (not yet a member) and returns its address.
    pub async fn spawn_empty(&mut self, id: u64) -> String {
        let (listener, addr) = loopback_listener().await;
        let mut config = test_config(id, &addr, self.tmp_path.join(format!("peer-{id}")));
        (self.configure)(&mut config);
        let peer = start_peer(config, listener).await;
        self.peers.insert(id, peer);
        addr
    }

    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}

async fn bind_retry(addr: &str) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not rebind {addr}");
}

/// Puts `key = value` through `node`; panics on failure.
pub async fn put(node: &StoreNode, key: &str, value: &str) -> i64 {
    node.write(WriteRequest::put(key, value))
        .await
        .expect("put")
        .revision
}

/// Reads one key through `node`; linearizable unless `serializable`.
pub async fn get(node: &StoreNode, key: &str, serializable: bool) -> Option<String> {
    let (result, _) = node
        .range(RangeQuery::new(KeyRange::key(key)), serializable)
        .await
        .expect("range");
    result
        .kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

/// Every key under `prefix` on `node` (serializable), as strings.
pub async fn dump(node: &StoreNode, prefix: &str) -> BTreeMap<String, String> {
    let (result, _) = node
        .range(RangeQuery::new(KeyRange::prefix(prefix)), true)
        .await
        .expect("range");
    result
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}
