//! The client-facing gRPC services of the store: `KV`, `Watch` and `Cluster` (membership and
//! status). Any peer serves them; writes reach the leader through the node.

use std::pin::Pin;
use std::sync::Arc;

use flotilla_api::kv as pb;
use flotilla_api::kv::cluster_server::Cluster;
use flotilla_api::kv::kv_server::Kv;
use flotilla_api::kv::watch_server::Watch;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::forward::Member;
use crate::node::StoreNode;
use crate::types::{KeyRange, WriteOp, WriteOutcome, WriteRequest, WriteResponse};
use crate::watch::WatchError;

/// Responses buffered per watch stream between the watcher and gRPC.
pub const WATCH_STREAM_BUFFER: usize = 16;

#[derive(Clone)]
pub struct KvService {
    node: Arc<StoreNode>,
}

impl KvService {
    pub fn new(node: Arc<StoreNode>) -> Self {
        KvService { node }
    }

    fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            revision,
            member_id: self.node.id,
            raft_term: self.node.raft().metrics().borrow().current_term,
        }
    }

    async fn write(
        &self,
        request: WriteRequest,
    ) -> Result<(pb::ResponseHeader, WriteOutcome), Status> {
        let WriteResponse { revision, outcome } = self.node.write(request).await?;
        if let WriteOutcome::Rejected(rejection) = outcome {
            return Err(convert::rejection(rejection));
        }
        Ok((self.header(revision), outcome))
    }
}

fn unexpected(outcome: WriteOutcome) -> Status {
    Status::internal(format!("unexpected outcome {outcome:?}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        let query = convert::range_query(&request)?;
        if query.range.start.is_empty() && query.range.end != [0] {
            return Err(Status::invalid_argument("key: must not be empty"));
        }
        let (result, revision) = self.node.range(query, request.serializable).await?;
        Ok(Response::new(convert::range_response(
            self.header(revision),
            result,
        )))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (header, outcome) = self
            .write(convert::put_request(request.into_inner()))
            .await?;
        match outcome {
            WriteOutcome::Put { prev_kv } => Ok(Response::new(pb::PutResponse {
                header: Some(header),
                prev_kv: prev_kv.map(convert::key_value),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let (header, outcome) = self
            .write(convert::delete_request(request.into_inner()))
            .await?;
        match outcome {
            WriteOutcome::Delete { deleted, prev_kvs } => {
                Ok(Response::new(pb::DeleteRangeResponse {
                    header: Some(header),
                    deleted,
                    prev_kvs: prev_kvs.into_iter().map(convert::key_value).collect(),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let (header, outcome) = self
            .write(convert::txn_request(request.into_inner())?)
            .await?;
        match outcome {
            WriteOutcome::Txn { succeeded, results } => Ok(Response::new(pb::TxnResponse {
                responses: results
                    .into_iter()
                    .map(|r| convert::op_response(&header, r))
                    .collect(),
                header: Some(header),
                succeeded,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let write = WriteRequest {
            request_id: (!request.request_id.is_empty()).then_some(request.request_id),
            fence_term: None,
            op: WriteOp::Compact {
                revision: request.revision,
            },
        };
        let (header, _) = self.write(write).await?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header),
        }))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for KvService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let request = request.into_inner();
        if request.start_revision < 0 {
            return Err(Status::invalid_argument(
                "start_revision: must not be negative",
            ));
        }
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        let range = KeyRange::between(request.key, request.range_end);
        let service = self.clone();
        let with_prev = request.prev_kv;
        match self.node.watch(range, request.start_revision) {
            Ok(mut watcher) => {
                tokio::spawn(async move {
                    let created = pb::WatchResponse {
                        header: Some(service.header(watcher.next_revision() - 1)),
                        created: true,
                        ..Default::default()
                    };
                    if tx.send(Ok(created)).await.is_err() {
                        return;
                    }
                    loop {
                        let next = tokio::select! {
                            next = watcher.next() => next,
                            _ = tx.closed() => return,
                        };
                        let response = match next {
                            Ok(batch) => pb::WatchResponse {
                                header: Some(service.header(batch.revision)),
                                events: batch
                                    .events
                                    .into_iter()
                                    .map(|e| convert::event(e, with_prev))
                                    .collect(),
                                ..Default::default()
                            },
                            Err(e) => {
                                let _ = tx.send(Ok(service.cancel_response(e))).await;
                                return;
                            }
                        };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e @ WatchError::TooMany(_)) => {
                return Err(Status::resource_exhausted(e.to_string()))
            }
            Err(e) => {
                let _ = tx.try_send(Ok(self.cancel_response(e)));
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl KvService {
    fn cancel_response(&self, e: WatchError) -> pb::WatchResponse {
        let compact_revision = match &e {
            WatchError::Compacted {
                compact_revision, ..
            } => *compact_revision,
            _ => 0,
        };
        pb::WatchResponse {
            header: Some(self.header(0)),
            canceled: true,
            cancel_reason: e.to_string(),
            compact_revision,
            ..Default::default()
        }
    }
}

fn member(m: Member) -> pb::Member {
    pb::Member {
        id: m.id,
        addr: m.addr,
        is_learner: m.is_learner,
    }
}

#[tonic::async_trait]
impl Cluster for KvService {
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if !request.into_inner().serializable {
            self.node.read_barrier().await?;
        }
        let status = self.node.status()?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header(status.revision)),
            members: self.node.members().into_iter().map(member).collect(),
            leader_id: status.leader.unwrap_or(0),
        }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        if request.addr.is_empty() {
            return Err(Status::invalid_argument("addr: must not be empty"));
        }
        let members = self
            .node
            .add_member(request.id, request.addr, request.is_learner)
            .await?;
        self.members_response(members)
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let members = self.node.promote_member(request.into_inner().id).await?;
        self.members_response(members)
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let members = self.node.remove_member(request.into_inner().id).await?;
        self.members_response(members)
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.node.status()?;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(s.revision)),
            leader_id: s.leader.unwrap_or(0),
            raft_index: s.last_log_index,
            raft_applied_index: s.applied_index,
            state: s.state,
            compact_revision: s.compact_revision,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
        }))
    }
}

impl KvService {
    fn members_response(
        &self,
        members: Vec<Member>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let revision = self.node.status().map_err(Status::from)?.revision;
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.header(revision)),
            members: members.into_iter().map(member).collect(),
        }))
    }
}
