//! The queue-and-batch mechanism shared by the proposer, the forwarder and the read-index
//! batcher: callers queue a request with a channel for its answer; one task takes the first
//! request waiting and every one already queued behind it (up to a count and a byte budget)
//! and answers them together.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;

/// A queued request: the item, the bytes it counts towards a batch's budget, and where its
/// answer goes.
pub(crate) struct Waiting<T, R> {
    pub item: T,
    pub bytes: usize,
    pub reply: oneshot::Sender<Result<R, StoreError>>,
}

/// Queues `item` for the batcher behind `queue` and waits for its answer; within `timeout`
/// when one is given. A batcher that has stopped answers `ShuttingDown`.
pub(crate) async fn ask<T, R>(
    queue: &mpsc::Sender<Waiting<T, R>>,
    item: T,
    bytes: usize,
    timeout: Option<Duration>,
) -> Result<R, StoreError> {
    let (reply, answer) = oneshot::channel();
    let work = async {
        queue
            .send(Waiting { item, bytes, reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    };
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(StoreError::Timeout(timeout.as_millis() as u64))),
        None => work.await,
    }
}

/// The batcher's end of the queue.
pub(crate) struct Batches<T, R> {
    queue: mpsc::Receiver<Waiting<T, R>>,
    /// Taken from the queue but left for the next batch (over budget or not `alike`).
    carried: Option<Waiting<T, R>>,
}

impl<T, R> Batches<T, R> {
    /// A queue of at most `capacity` waiting requests (callers wait for room when it is full).
    pub fn channel(capacity: usize) -> (mpsc::Sender<Waiting<T, R>>, Batches<T, R>) {
        let (sender, queue) = mpsc::channel(capacity);
        (
            sender,
            Batches {
                queue,
                carried: None,
            },
        )
    }

    /// Waits for a request, then takes those already queued behind it while the batch holds
    /// fewer than `max_items`, stays within `max_bytes` (a first request larger than that goes
    /// alone) and each is `alike` the first. Requests whose callers gave up are dropped.
    /// `None` once every sender is gone.
    pub async fn next(
        &mut self,
        max_items: usize,
        max_bytes: usize,
        alike: impl Fn(&T, &T) -> bool,
    ) -> Option<Vec<Waiting<T, R>>> {
        loop {
            let first = match self.carried.take() {
                Some(first) => first,
                None => self.queue.recv().await?,
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < max_items {
                let Ok(next) = self.queue.try_recv() else {
                    break;
                };
                if bytes + next.bytes > max_bytes || !alike(&batch[0].item, &next.item) {
                    self.carried = Some(next);
                    break;
                }
                bytes += next.bytes;
                batch.push(next);
            }
            // A caller that gave up (its deadline passed) needs nothing done.
            batch.retain(|w| !w.reply.is_closed());
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }
}

/// Sends each reply its result, in order.
pub(crate) fn answer<R>(
    replies: Vec<oneshot::Sender<Result<R, StoreError>>>,
    results: impl IntoIterator<Item = Result<R, StoreError>>,
) {
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}
