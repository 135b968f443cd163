//! The Cluster API client of the CLI: tries each server address in turn when one is down or has
//! no leader, with a bounded number of attempts.

use std::future::Future;
use std::time::Duration;

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{GetRequest, ObjectRef};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Attempts per call across all addresses.
pub const CALL_ATTEMPTS_MAX: usize = 8;
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Deadline of one unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response the CLI accepts (a full list page).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

pub struct Client {
    addrs: Vec<String>,
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded
    )
}

impl Client {
    pub fn new(servers: &str) -> Client {
        let addrs = servers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| a.trim_start_matches("http://").to_string())
            .collect();
        Client { addrs }
    }

    pub fn api(
        &self,
        index: usize,
        timeout: Option<Duration>,
    ) -> Result<ClusterApiClient<Channel>, Status> {
        let addr = &self.addrs[index % self.addrs.len()];
        let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("server address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2));
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(ClusterApiClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// One object's stored bytes (JSON), read linearizably, retried like [`Client::call`].
    pub async fn get_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<u8>, Status> {
        let request = GetRequest {
            r#ref: Some(ObjectRef {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            }),
            stale: false,
        };
        let response = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.get(r).await }
            })
            .await?;
        Ok(response.object)
    }

    /// Runs `call` against the servers until one answers (or the error is not a retryable one).
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(ClusterApiClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        if self.addrs.is_empty() {
            return Err(Status::invalid_argument(
                "no server address given (--server or FLOTILLA_SERVER)",
            ));
        }
        let mut last = None;
        for attempt in 0..CALL_ATTEMPTS_MAX.max(self.addrs.len()) {
            match call(self.api(attempt, Some(CALL_TIMEOUT))?).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if retryable(&status) => {
                    last = Some(status);
                    if (attempt + 1) % self.addrs.len() == 0 {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Err(status) => return Err(status),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// An error from the server as kubectl prints it.
pub fn describe_status(status: &Status) -> String {
    let reason = match status.code() {
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::Aborted => "Conflict",
        Code::InvalidArgument => "Invalid",
        Code::Unavailable => "ServiceUnavailable",
        Code::OutOfRange => "Expired",
        Code::FailedPrecondition => "Forbidden",
        Code::DeadlineExceeded => "Timeout",
        _ => "InternalError",
    };
    format!("Error from server ({reason}): {}", status.message())
}
