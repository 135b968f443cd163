//! Agent heartbeats. The leader keeps them in memory only (design decision 5): the node
//! lifecycle loop reads them and writes to Raft only when a node's readiness changes. Peers that
//! are not the leader refuse heartbeats and name the leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_api::node::node_api_server::NodeApi;
use flotilla_api::node::{HeartbeatRequest, HeartbeatResponse};
use flotilla_consensus::StoreNode;
use tonic::{Request, Response, Status};

/// Most distinct nodes whose heartbeats are remembered (a bound on memory, far above any real
/// cluster's size).
pub const MAX_TRACKED_NODES: usize = 100_000;
/// Most nodes one heartbeat call may renew.
pub const MAX_NODES_PER_HEARTBEAT: usize = 10_000;

/// Last heartbeat per node, as received by this peer while it led.
#[derive(Default)]
pub struct Heartbeats {
    last: Mutex<HashMap<String, Instant>>,
}

impl Heartbeats {
    pub fn record(&self, node: &str, at: Instant) -> bool {
        let mut last = self.last.lock().expect("heartbeat lock");
        if last.len() >= MAX_TRACKED_NODES && !last.contains_key(node) {
            return false;
        }
        last.insert(node.to_string(), at);
        true
    }

    /// Every node's last heartbeat.
    pub fn snapshot(&self) -> HashMap<String, Instant> {
        self.last.lock().expect("heartbeat lock").clone()
    }

    /// Forgets everything (a new term starts from scratch: every node gets a grace period).
    pub fn clear(&self) {
        self.last.lock().expect("heartbeat lock").clear();
    }
}

pub struct NodeApiService {
    node: Arc<StoreNode>,
    heartbeats: Arc<Heartbeats>,
}

impl NodeApiService {
    pub fn new(node: Arc<StoreNode>, heartbeats: Arc<Heartbeats>) -> Self {
        NodeApiService { node, heartbeats }
    }
}

#[tonic::async_trait]
impl NodeApi for NodeApiService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let names: Vec<&String> = std::iter::once(&request.node)
            .chain(&request.more_nodes)
            .collect();
        if names.len() > MAX_NODES_PER_HEARTBEAT {
            return Err(Status::invalid_argument(format!(
                "more_nodes: at most {MAX_NODES_PER_HEARTBEAT} nodes per heartbeat"
            )));
        }
        if names.iter().any(|n| n.is_empty() || n.len() > 253) {
            return Err(Status::invalid_argument(
                "node: a node name of 1 to 253 characters",
            ));
        }
        let (leader_id, leader_addr) = self.node.leader().unwrap_or((0, String::new()));
        let term = self.node.leader_term();
        let now = Instant::now();
        let accepted = term.is_some() && names.iter().all(|n| self.heartbeats.record(n, now));
        Ok(Response::new(HeartbeatResponse {
            accepted,
            leader_id,
            leader_addr,
            term: term.unwrap_or(0),
        }))
    }
}
