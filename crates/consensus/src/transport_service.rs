//! The gRPC Raft transport, server side: hands decoded openraft messages to the local Raft, and
//! runs requests forwarded by followers. A payload that does not decode is refused with
//! INVALID_ARGUMENT and changes nothing.

use std::sync::Arc;

use flotilla_api::raft::raft_transport_server::RaftTransport;
use flotilla_api::raft::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::db::{decode, encode};
use crate::forward::{ForwardReply, ForwardRequest};
use crate::node::StoreNode;

pub struct TransportService {
    node: Arc<StoreNode>,
}

impl TransportService {
    pub fn new(node: Arc<StoreNode>) -> Self {
        TransportService { node }
    }
}

fn decode_payload<T: DeserializeOwned>(
    request: Request<RaftPayload>,
    what: &str,
) -> Result<T, Status> {
    decode(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload {
        data: encode(value),
    }))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode_payload(request, "append-entries request")?;
        reply(&self.node.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode_payload(request, "vote request")?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode_payload(request, "install-snapshot request")?;
        reply(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let deadline = Instant::now() + self.node.config().request_timeout;
        let forwarded: ForwardRequest = decode_payload(request, "forwarded request")?;
        // One hop only: a peer that is not the leader answers NotLeader and the caller retries.
        let result: ForwardReply = self.node.execute_as_leader(forwarded, deadline).await;
        reply(&result)
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let read_index = self
            .node
            .read_index_as_leader(self.node.config().request_timeout)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ReadIndexResponse {
            read_index,
            leader_id: self.node.id,
        }))
    }
}
