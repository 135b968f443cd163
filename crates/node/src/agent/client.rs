//! A client of the control plane for agents: a list of server addresses, tried in turn when one
//! is down or answers UNAVAILABLE, with a bounded number of attempts per call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::node::node_api_client::NodeApiClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Attempts per call across all servers.
pub const CALL_ATTEMPTS_MAX: usize = 6;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Deadline of one unary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted (a full list page).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiClient {
    channels: Arc<Vec<(String, Channel)>>,
    /// The server that answered last; calls start there.
    preferred: Arc<AtomicUsize>,
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

impl ApiClient {
    /// `servers`: `host:port` addresses of control-plane peers.
    pub fn new(servers: &[String]) -> Result<ApiClient, String> {
        if servers.is_empty() {
            return Err("no server addresses".into());
        }
        let channels = servers
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("server address {addr:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true);
                Ok((addr.clone(), endpoint.connect_lazy()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ApiClient {
            channels: Arc::new(channels),
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn cluster(&self, index: usize) -> ClusterApiClient<Channel> {
        let (_, channel) = &self.channels[index % self.channels.len()];
        ClusterApiClient::new(channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn node_api(&self, index: usize) -> NodeApiClient<Channel> {
        NodeApiClient::new(self.channels[index % self.channels.len()].1.clone())
    }

    /// The index of a server by address, if it is one of ours.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.channels.iter().position(|(a, _)| a == addr)
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Runs `call` with a Cluster API client, moving on to the next server on retryable errors.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(ClusterApiClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..CALL_ATTEMPTS_MAX.max(self.channels.len()) {
            let index = (start + attempt) % self.channels.len();
            let result = tokio::time::timeout(CALL_TIMEOUT, call(self.cluster(index))).await;
            match result {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if !retryable(&status) => return Err(status),
                Ok(Err(status)) => last = Some(status),
                Err(_) => last = Some(Status::deadline_exceeded("call timed out")),
            }
            if (attempt + 1) % self.channels.len() == 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Err(last.expect("at least one attempt"))
    }
}
