//! The leader's proposer: gathers the client writes waiting on the leader into group entries.
//!
//! openraft 0.9 appends every `client_write` as a log entry of its own, and a follower's core
//! waits for each append's fsync before it takes the next message. N concurrent writes would pay
//! N fsyncs in turn on every follower. The proposer instead hands openraft one entry
//! ([`WriteOp::Group`]) with every write that arrived while earlier entries were in flight, so
//! one fsync and one replication round serve them all. Each write keeps its own revision, fence
//! check, request-id dedup and outcome; a lone write is proposed as it is.
//!
//! Writes are handed to openraft in the order they reached the proposer.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::batch::{self, Batches, Waiting};
use crate::error::StoreError;
use crate::types::{
    limits, ClientWriteResult, NodeId, Raft, WriteOp, WriteOutcome, WriteRequest, WriteResponse,
};

/// Writes waiting for the proposer; a caller waits for room when it is full.
pub const PROPOSAL_QUEUE_MAX: usize = 4096;
/// Most writes in one group entry.
pub const GROUP_WRITES_MAX: usize = limits::MAX_GROUP_WRITES;
/// Most bytes of keys and values in one group entry; a larger write is proposed alone.
pub const GROUP_BYTES_MAX: usize = 256 * 1024;
/// Entries proposed and not yet applied. A few keep the log busy (one being replicated while the
/// next is appended) while every later write gathers into the group after them; four did more
/// writes per second than two at 256 clients in bench-kv.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4;

type Reply = oneshot::Sender<Result<WriteResponse, StoreError>>;

/// The handle a leader's write path proposes through. Dropping it stops the proposer.
pub struct Proposer {
    queue: mpsc::Sender<Waiting<WriteRequest, WriteResponse>>,
}

impl Proposer {
    pub fn start(raft: Raft, id: NodeId) -> Proposer {
        let (queue, waiting) = Batches::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(run(raft, id, waiting));
        Proposer { queue }
    }

    /// Commits `request` (already validated; `bytes` as [`WriteRequest::checked_bytes`] counts
    /// them) through Raft, alone or in a group, and returns what applying it produced.
    pub async fn propose(
        &self,
        request: WriteRequest,
        bytes: usize,
    ) -> Result<WriteResponse, StoreError> {
        batch::ask(&self.queue, request, bytes, None).await
    }
}

/// The outcome of a write that openraft dropped without answering: it may or may not have been
/// applied, and a retry with the same request id applies it at most once.
fn unanswered() -> StoreError {
    StoreError::Unavailable("the leader dropped the write unanswered; retry".into())
}

/// How a failed `client_write` is reported to the client.
pub(crate) fn client_write_error(
    id: NodeId,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> StoreError {
    match e {
        RaftError::APIError(e) => api_error(id, e),
        RaftError::Fatal(openraft::error::Fatal::Stopped) => StoreError::ShuttingDown,
        RaftError::Fatal(fatal) => StoreError::Storage(fatal.to_string()),
    }
}

fn api_error(id: NodeId, e: ClientWriteError<NodeId, BasicNode>) -> StoreError {
    match e {
        ClientWriteError::ForwardToLeader(_) => StoreError::NotLeader(id),
        ClientWriteError::ChangeMembershipError(e) => StoreError::Membership(e.to_string()),
    }
}

async fn run(raft: Raft, id: NodeId, mut waiting: Batches<WriteRequest, WriteResponse>) {
    let slots = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(group) = waiting
            .next(GROUP_WRITES_MAX, GROUP_BYTES_MAX, |_, _| true)
            .await
        else {
            return;
        };
        submit(&raft, id, group, slot).await;
    }
}

/// Hands one entry to openraft (in order) and answers its writes once it is applied, without
/// holding up the next entry.
async fn submit(
    raft: &Raft,
    id: NodeId,
    group: Vec<Waiting<WriteRequest, WriteResponse>>,
    slot: OwnedSemaphorePermit,
) {
    let (mut requests, replies): (Vec<WriteRequest>, Vec<Reply>) =
        group.into_iter().map(|w| (w.item, w.reply)).unzip();
    let single = requests.len() == 1;
    let entry = match requests.pop() {
        Some(only) if single => only,
        Some(last) => {
            requests.push(last);
            WriteRequest::new(WriteOp::Group(requests))
        }
        None => return,
    };
    match raft.client_write_ff(entry).await {
        Ok(answer) => {
            tokio::spawn(async move {
                let _slot = slot;
                let each = answers(id, single, replies.len(), answer.await.ok());
                batch::answer(replies, each);
            });
        }
        Err(fatal) => {
            let e = client_write_error(id, RaftError::Fatal(fatal));
            batch::answer(replies, std::iter::repeat(Err(e)));
        }
    }
}

/// One result per write of an entry, from openraft's answer (`None`: dropped unanswered).
fn answers(
    id: NodeId,
    single: bool,
    count: usize,
    answer: Option<ClientWriteResult>,
) -> Vec<Result<WriteResponse, StoreError>> {
    match answer {
        Some(Ok(response)) if single => vec![Ok(response.data)],
        Some(Ok(response)) => match response.data.outcome {
            WriteOutcome::Group(responses) if responses.len() == count => {
                responses.into_iter().map(Ok).collect()
            }
            // The proposer builds only valid groups; a rejected one is answered as such.
            WriteOutcome::Rejected(rejection) => (0..count)
                .map(|_| {
                    Ok(WriteResponse {
                        revision: response.data.revision,
                        outcome: WriteOutcome::Rejected(rejection.clone()),
                    })
                })
                .collect(),
            other => vec![
                Err(StoreError::Storage(format!(
                    "a group of {count} writes was answered with {other:?}"
                )));
                count
            ],
        },
        Some(Err(e)) => vec![Err(api_error(id, e)); count],
        None => vec![Err(unanswered()); count],
    }
}
