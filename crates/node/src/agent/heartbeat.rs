//! Heartbeats to the leader and the lease they renew (design decisions 5 and 6). The lease is
//! measured on this host's monotonic clock from the moment a renewing heartbeat was *sent*, so
//! the agent's view is never more generous than the leader's: when it lapses the agent stops
//! its pods (self-fencing) before the leader would reschedule them elsewhere.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_api::node::HeartbeatRequest;

use super::client::ApiClient;

/// The lease this agent holds on its pods.
pub struct Lease {
    duration: Duration,
    renewed_at: Mutex<Option<Instant>>,
}

impl Lease {
    pub fn new(duration: Duration) -> Self {
        Lease {
            duration,
            renewed_at: Mutex::new(None),
        }
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    fn renew(&self, sent_at: Instant) {
        let mut renewed = self.renewed_at.lock().expect("lease lock");
        if renewed.is_none_or(|r| r < sent_at) {
            *renewed = Some(sent_at);
        }
    }

    /// Whether the lease is held now. Never renewed counts as held only until `duration` after
    /// `started`, so a fresh agent gets one lease to find the leader.
    pub fn valid(&self, started: Instant) -> bool {
        let renewed = self
            .renewed_at
            .lock()
            .expect("lease lock")
            .unwrap_or(started);
        renewed.elapsed() < self.duration
    }

    pub fn last_renewed(&self) -> Option<Instant> {
        *self.renewed_at.lock().expect("lease lock")
    }
}

/// Sends heartbeats for `nodes` every `interval`, forever, renewing `lease` on each accepted one.
/// Follows the leader: a peer that is not the leader names it, and the next beat goes there.
pub async fn run(client: ApiClient, nodes: Vec<String>, interval: Duration, lease: &Lease) {
    let Some((first, rest)) = nodes.split_first() else {
        return;
    };
    let request = HeartbeatRequest {
        node: first.clone(),
        lease_ms: lease.duration().as_millis() as u64,
        more_nodes: rest.to_vec(),
    };
    let mut target = 0usize;
    loop {
        let sent_at = Instant::now();
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(interval.max(Duration::from_millis(200)));
        match client.node_api(target).heartbeat(call).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.accepted {
                    lease.renew(sent_at);
                } else {
                    target = client.index_of(&reply.leader_addr).unwrap_or(target + 1);
                    continue_soon().await;
                    continue;
                }
            }
            Err(status) => {
                tracing::debug!(error = %status, "heartbeat failed; trying the next server");
                target += 1;
            }
        }
        tokio::time::sleep(interval.saturating_sub(sent_at.elapsed())).await;
    }
}

/// A short pause before retrying at the leader a peer named.
async fn continue_soon() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}
