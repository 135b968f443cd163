//! Requests a follower hands to the leader, and the leader's replies; and the [`Forwarder`],
//! which carries the writes waiting on a follower to the leader in one RPC.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::batch::{self, Batches, Waiting};
use crate::error::StoreError;
use crate::network::{self, PeerChannels};
use crate::propose::{GROUP_BYTES_MAX, GROUP_WRITES_MAX};
use crate::types::{NodeId, WriteRequest, WriteResponse};

/// Writes waiting on a follower to be forwarded; a caller waits for room when it is full.
pub const FORWARD_QUEUE_MAX: usize = 4096;
/// Forward RPCs from this peer in flight at once; later writes gather into the next one.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(WriteRequest),
    /// Independent writes (at most [`GROUP_WRITES_MAX`]), answered one by one, in order.
    Writes(Vec<WriteRequest>),
    AddMember {
        id: NodeId,
        addr: String,
        learner_only: bool,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOk {
    Write(WriteResponse),
    Writes(Vec<Result<WriteResponse, StoreError>>),
    Members(Vec<Member>),
}

pub type ForwardReply = Result<ForwardOk, StoreError>;

type Reply = oneshot::Sender<Result<WriteResponse, StoreError>>;

/// A write to forward, and where to.
struct Outgoing {
    leader: NodeId,
    addr: String,
    request: WriteRequest,
    timeout: Duration,
}

/// Carries the writes waiting on a follower to the leader: every write that arrives while
/// earlier forward RPCs are in flight goes in the next one, so a busy follower does not pay one
/// RPC (and the leader one request) per write. Dropping it stops the forwarder.
pub struct Forwarder {
    queue: mpsc::Sender<Waiting<Outgoing, WriteResponse>>,
}

impl Forwarder {
    pub fn start(channels: PeerChannels) -> Forwarder {
        let (queue, outgoing) = Batches::channel(FORWARD_QUEUE_MAX);
        tokio::spawn(run(channels, outgoing));
        Forwarder { queue }
    }

    /// Forwards `request` (already validated; `bytes` as [`WriteRequest::checked_bytes`] counts
    /// them) to `leader` and returns its answer, or an error within `timeout`.
    pub async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        request: WriteRequest,
        bytes: usize,
        timeout: Duration,
    ) -> Result<WriteResponse, StoreError> {
        let outgoing = Outgoing {
            leader,
            addr: addr.to_string(),
            request,
            timeout,
        };
        batch::ask(&self.queue, outgoing, bytes, Some(timeout)).await
    }
}

async fn run(channels: PeerChannels, mut outgoing: Batches<Outgoing, WriteResponse>) {
    let slots = Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = outgoing
            .next(GROUP_WRITES_MAX, GROUP_BYTES_MAX, |a, b| {
                a.leader == b.leader
            })
            .await
        else {
            return;
        };
        let channels = channels.clone();
        tokio::spawn(async move {
            let _slot = slot;
            send(&channels, batch).await;
        });
    }
}

/// One forward RPC for `batch` (all bound for one leader); answers each of its writes.
async fn send(channels: &PeerChannels, batch: Vec<Waiting<Outgoing, WriteResponse>>) {
    let leader = batch[0].item.leader;
    let addr = batch[0].item.addr.clone();
    let timeout = batch
        .iter()
        .map(|w| w.item.timeout)
        .max()
        .unwrap_or_default();
    let (mut requests, replies): (Vec<WriteRequest>, Vec<Reply>) =
        batch.into_iter().map(|w| (w.item.request, w.reply)).unzip();
    let count = requests.len();
    let request = match requests.pop() {
        Some(only) if count == 1 => ForwardRequest::Write(only),
        Some(last) => {
            requests.push(last);
            ForwardRequest::Writes(requests)
        }
        None => return,
    };
    let each = match network::forward(channels, leader, &addr, &request, timeout).await {
        Err(e) => vec![Err(StoreError::Unavailable(e)); count],
        Ok(Err(e)) => vec![Err(e); count],
        Ok(Ok(ForwardOk::Write(response))) if count == 1 => vec![Ok(response)],
        Ok(Ok(ForwardOk::Writes(results))) if results.len() == count => results,
        Ok(Ok(other)) => vec![
            Err(StoreError::Storage(format!(
                "the leader answered {count} forwarded writes with {other:?}"
            )));
            count
        ],
    };
    batch::answer(replies, each);
}
