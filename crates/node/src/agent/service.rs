//! The agent API (`proto/agent.proto`) served on the agent's listen address: `Logs` streams a
//! container's log (current or previous instance, optionally only the tail, optionally
//! following) and `Exec` runs a non-interactive command in a running container. Pods are
//! looked up by namespace and name in the pod directory the workers keep.
//!
//! Bounds: [`MAX_LOG_STREAMS`] and [`MAX_EXECS`] at once, [`MAX_REQUEST_BYTES`] per request,
//! exec output capped by the runtime, exec time by [`MAX_EXEC_TIMEOUT`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::agent::agent_api_server::AgentApi;
use flotilla_api::agent::{ExecRequest, ExecResponse, LogChunk, LogsRequest};
use futures::Stream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::context::{Directory, Instances};
use crate::runtime::{
    ContainerId, LogOptions, Runtime, RuntimeError, Stream as LogStreamKind, MAX_TAIL_LINES,
};

/// Log streams served at once.
pub const MAX_LOG_STREAMS: usize = 64;
/// Execs running at once.
pub const MAX_EXECS: usize = 16;
/// Largest request accepted (an exec argv).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest response sent (an exec's stdout and stderr, 1 MiB each, plus framing).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Exec timeout when the request sets none.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest exec timeout honoured.
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(600);
/// Log chunks buffered per stream between the reader and gRPC.
const LOG_CHUNK_BUFFER: usize = 64;

pub struct AgentService {
    runtime: Arc<Runtime>,
    directory: Arc<Directory>,
    log_streams: Arc<Semaphore>,
    execs: Arc<Semaphore>,
}

impl AgentService {
    /// Serves the pods `directory` lists (kept by the pod workers).
    pub fn new(runtime: Arc<Runtime>, directory: Arc<Directory>) -> AgentService {
        AgentService {
            runtime,
            directory,
            log_streams: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
            execs: Arc::new(Semaphore::new(MAX_EXECS)),
        }
    }

    /// The instances of the addressed container.
    fn instances(&self, namespace: &str, pod: &str, container: &str) -> Result<Instances, Status> {
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let entry = self.directory.get(namespace, pod).ok_or_else(|| {
            Status::not_found(format!("pod {namespace}/{pod} does not run on this node"))
        })?;
        if container.is_empty() {
            return match entry.containers.as_slice() {
                [(_, instances)] => Ok(instances.clone()),
                many => {
                    let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
                    Err(Status::invalid_argument(format!(
                        "pod {pod} has several containers; name one of: {}",
                        names.join(", ")
                    )))
                }
            };
        }
        entry
            .containers
            .iter()
            .find(|(n, _)| n == container)
            .map(|(_, i)| i.clone())
            .ok_or_else(|| {
                Status::not_found(format!("container {container:?} is not in pod {pod}"))
            })
    }
}

fn permit(
    semaphore: &Arc<Semaphore>,
    what: &str,
    limit: usize,
) -> Result<OwnedSemaphorePermit, Status> {
    semaphore
        .clone()
        .try_acquire_owned()
        .map_err(|_| Status::resource_exhausted(format!("{limit} {what} already run on this node")))
}

fn runtime_status(e: RuntimeError) -> Status {
    match e {
        RuntimeError::NotFound { .. } => Status::not_found(e.to_string()),
        RuntimeError::Invalid { .. } => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl AgentApi for AgentService {
    type LogsStream = LogStream;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        let instances = self.instances(&r.namespace, &r.pod, &r.container)?;
        let id: ContainerId = if r.previous {
            instances
                .previous
                .ok_or_else(|| Status::not_found("the container has no previous instance"))?
        } else {
            instances
                .current
                .ok_or_else(|| Status::not_found("the container has not started yet"))?
        };
        let tail_lines = match r.tail_lines {
            Some(n) if n < 0 => {
                return Err(Status::invalid_argument("tail_lines: must not be negative"))
            }
            Some(n) => Some((n as usize).min(MAX_TAIL_LINES)),
            None => None,
        };
        let permit = permit(&self.log_streams, "log streams", MAX_LOG_STREAMS)?;
        let options = LogOptions {
            tail_lines,
            follow: r.follow,
        };
        let mut lines = self.runtime.logs(&id, options).map_err(runtime_status)?;
        let (tx, rx) = mpsc::channel(LOG_CHUNK_BUFFER);
        tokio::spawn(async move {
            let _permit = permit;
            while let Some(line) = lines.next().await {
                let chunk = line.map_err(runtime_status).map(|l| LogChunk {
                    time: l.time,
                    stream: match l.stream {
                        LogStreamKind::Stdout => "stdout".into(),
                        LogStreamKind::Stderr => "stderr".into(),
                    },
                    content: l.content,
                    partial: l.partial,
                });
                if tx.send(chunk).await.is_err() {
                    return; // The client went away.
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = request.into_inner();
        if r.argv.is_empty() {
            return Err(Status::invalid_argument("argv: Required value"));
        }
        let instances = self.instances(&r.namespace, &r.pod, &r.container)?;
        let id = instances
            .current
            .ok_or_else(|| Status::failed_precondition("the container has not started yet"))?;
        let timeout = match r.timeout_ms {
            0 => DEFAULT_EXEC_TIMEOUT,
            ms => Duration::from_millis(ms).min(MAX_EXEC_TIMEOUT),
        };
        let _permit = permit(&self.execs, "execs", MAX_EXECS)?;
        let out = self
            .runtime
            .exec(&id, &r.argv, timeout)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(ExecResponse {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
            timed_out: out.timed_out,
        }))
    }
}
