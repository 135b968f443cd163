//! ReadIndex batching on the leader. Every linearizable read needs the leader to confirm with a
//! quorum that it still leads (openraft's `get_read_log_id`, one heartbeat round). Reads that
//! arrive while a confirmation is under way share the next one, so N concurrent reads cost one
//! round, not N. A read only ever uses a confirmation that began after it arrived, which keeps it
//! linearizable.

use std::time::Duration;

use openraft::error::RaftError;
use tokio::sync::mpsc;

use crate::batch::{self, Batches, Waiting};
use crate::error::StoreError;
use crate::types::{NodeId, Raft};

/// Reads waiting for a confirmation round; a caller waits for room when it is full.
pub const READ_QUEUE_MAX: usize = 4096;
/// Most reads answered by one confirmation round.
pub const READ_BATCH_MAX: usize = 4096;

/// The handle linearizable reads get their read index through. Dropping it stops the batcher.
pub struct ReadIndexer {
    queue: mpsc::Sender<Waiting<(), u64>>,
}

impl ReadIndexer {
    /// `round_timeout` bounds one confirmation round.
    pub fn start(raft: Raft, id: NodeId, round_timeout: Duration) -> ReadIndexer {
        let (queue, waiting) = Batches::channel(READ_QUEUE_MAX);
        tokio::spawn(run(raft, id, round_timeout, waiting));
        ReadIndexer { queue }
    }

    /// The log index a read arriving now must wait for, once this peer confirmed it leads.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, StoreError> {
        batch::ask(&self.queue, (), 0, Some(timeout)).await
    }
}

async fn run(raft: Raft, id: NodeId, round_timeout: Duration, mut reads: Batches<(), u64>) {
    while let Some(waiting) = reads.next(READ_BATCH_MAX, usize::MAX, |_, _| true).await {
        // The round starts now, after every read in `waiting` arrived.
        let result = confirm(&raft, id, round_timeout).await;
        let replies = waiting.into_iter().map(|w| w.reply).collect();
        batch::answer(replies, std::iter::repeat(result));
    }
}

async fn confirm(raft: &Raft, id: NodeId, timeout: Duration) -> Result<u64, StoreError> {
    let result = tokio::time::timeout(timeout, raft.get_read_log_id())
        .await
        .map_err(|_| StoreError::Timeout(timeout.as_millis() as u64))?;
    match result {
        Ok((read_log_id, _applied)) => Ok(read_log_id.map_or(0, |l| l.index)),
        Err(RaftError::APIError(_)) => Err(StoreError::NotLeader(id)),
        Err(RaftError::Fatal(openraft::error::Fatal::Stopped)) => Err(StoreError::ShuttingDown),
        Err(RaftError::Fatal(fatal)) => Err(StoreError::Storage(fatal.to_string())),
    }
}
