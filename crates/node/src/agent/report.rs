//! Writing a pod's status through `UpdateStatus`, conditional on the resourceVersion read
//! (on conflict: re-read, check it is still the same pod, retry). Bounds: a write only when
//! the status differs from the last one reported, at most one write in flight per pod, at
//! least [`STATUS_MIN_INTERVAL`] between two writes of a pod, and the node-wide
//! [`super::context::STATUS_WRITES_PER_SECOND`]. Writes run in their own task so that a slow
//! or unreachable control plane never stalls the pod worker.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cluster::{GetRequest, ObjectRef, ObjectRequest};
use flotilla_state::informer::Cached;
use flotilla_state::objects::{Pod, PodStatus};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::context::Ctx;

/// Shortest time between two status writes of one pod.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Conditional writes tried per status before giving up until the next pass.
pub const STATUS_CONFLICT_ATTEMPTS: usize = 3;

type WriteResult = Result<Option<(i64, PodStatus)>, Status>;

/// The status writer of one pod.
#[derive(Default)]
pub struct Reporter {
    /// The revision our last write produced and the status it wrote.
    reported: Option<(i64, PodStatus)>,
    in_flight: Option<JoinHandle<WriteResult>>,
    last_start: Option<Instant>,
}

impl Reporter {
    /// The status last reported: ours if our write is newer than the cached pod, else the
    /// cached pod's.
    pub fn baseline<'a>(&'a self, cached: &'a Cached<Pod>) -> Option<&'a PodStatus> {
        match &self.reported {
            Some((revision, status)) if *revision > cached.revision => Some(status),
            _ => cached.object.status.as_ref(),
        }
    }

    /// Collects a finished write.
    fn poll(&mut self) {
        let finished = self.in_flight.as_ref().is_some_and(|t| t.is_finished());
        if !finished {
            return;
        }
        let Some(task) = self.in_flight.take() else {
            return;
        };
        // A finished task's output is ready: this does not wait.
        match futures::FutureExt::now_or_never(task) {
            Some(Ok(Ok(Some(written)))) => self.reported = Some(written),
            Some(Ok(Ok(None))) => {}
            Some(Ok(Err(status))) => {
                tracing::debug!(error = %status, "pod status write failed; retried on the next pass")
            }
            Some(Err(e)) => tracing::warn!(error = %e, "pod status writer panicked"),
            None => {}
        }
    }

    /// Writes `status` if it differs from the baseline and the bounds allow; returns when to
    /// look again if a write is due but has to wait.
    pub fn update(
        &mut self,
        ctx: &Arc<Ctx>,
        cached: &Cached<Pod>,
        status: PodStatus,
        wake: &Arc<Notify>,
    ) -> Option<Instant> {
        self.poll();
        if self.baseline(cached) == Some(&status) {
            return None;
        }
        if self.in_flight.is_some() {
            return None; // Its completion wakes the worker.
        }
        let now = Instant::now();
        if let Some(earliest) = self.last_start.map(|t| t + STATUS_MIN_INTERVAL) {
            if now < earliest {
                return Some(earliest);
            }
        }
        self.last_start = Some(now);
        let (ctx, cached, wake) = (ctx.clone(), cached.clone(), wake.clone());
        self.in_flight = Some(tokio::spawn(async move {
            let result = write(&ctx, &cached, status).await;
            wake.notify_one();
            result
        }));
        None
    }
}

impl Drop for Reporter {
    /// A write still in flight for a pod that is gone, or an agent that stops, is moot.
    fn drop(&mut self) {
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
    }
}

/// One status write with conflict retries. `Ok(None)`: the pod is gone (or replaced).
async fn write(ctx: &Ctx, cached: &Cached<Pod>, status: PodStatus) -> WriteResult {
    ctx.status_rate.acquire().await;
    let uid = cached.object.metadata.uid.clone();
    let mut base = document(&cached.object, cached.revision);
    for _ in 0..STATUS_CONFLICT_ATTEMPTS {
        base["status"] = serde_json::to_value(&status).unwrap_or(Value::Null);
        let request = ObjectRequest {
            object: serde_json::to_vec(&base).unwrap_or_default(),
            default_namespace: String::new(),
        };
        let written = ctx
            .client
            .call(|mut c| {
                let r = request.clone();
                async move { c.update_status(r).await }
            })
            .await;
        match written {
            Ok(response) => return Ok(Some((revision_of(&response.object), status))),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) if s.code() == Code::Aborted => match reread(ctx, cached, &uid).await? {
                Some(fresh) => base = fresh,
                None => return Ok(None),
            },
            Err(s) => return Err(s),
        }
    }
    Err(Status::aborted("pod status kept conflicting"))
}

/// The pod as stored now, if it is still the pod `uid`.
async fn reread(ctx: &Ctx, cached: &Cached<Pod>, uid: &str) -> Result<Option<Value>, Status> {
    let meta = &cached.object.metadata;
    let request = GetRequest {
        r#ref: Some(ObjectRef {
            kind: "Pod".into(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }),
        stale: false,
    };
    let got = ctx
        .client
        .call(|mut c| {
            let r = request.clone();
            async move { c.get(r).await }
        })
        .await;
    let object = match got {
        Ok(response) => response.object,
        Err(s) if s.code() == Code::NotFound => return Ok(None),
        Err(s) => return Err(s),
    };
    let value: Value =
        serde_json::from_slice(&object).map_err(|e| Status::internal(e.to_string()))?;
    let same = value.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid);
    Ok(same.then_some(value))
}

/// A pod as a Cluster API document at `revision`.
pub fn document(pod: &Pod, revision: i64) -> Value {
    let mut value = serde_json::to_value(pod).unwrap_or(Value::Null);
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Pod");
    value["metadata"]["resourceVersion"] = json!(revision.to_string());
    value
}

/// The resourceVersion of a stored object (0 when unreadable).
pub fn revision_of(object: &[u8]) -> i64 {
    serde_json::from_slice::<Value>(object)
        .ok()
        .and_then(|v| {
            v.pointer("/metadata/resourceVersion")?
                .as_str()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
