//! Tearing a pod down: every container stopped with the grace period (SIGTERM, SIGKILL once
//! it passed) and removed, the sandbox removed (CNI DEL), pins released, the pod directory
//! (volumes, journal) deleted — then, for a pod the cluster is deleting, the deletion
//! confirmed with `Delete(grace_period_seconds = 0)`, conditional on the resourceVersion so a
//! new pod of the same name is never touched. A finished UID is tombstoned: it is never
//! started again, whatever stale view of it arrives later.

use std::time::Duration;

use flotilla_api::cluster::{DeleteRequest, GetRequest, ObjectRef};
use tokio::time::Instant;
use tonic::Code;

use super::report::revision_of;
use super::worker::{grace_of, PodWorker, ORPHAN_GRACE};

/// Teardown attempts before the worker gives up (the dispatcher starts a new one while the
/// runtime still shows the pod's leftovers).
pub const MAX_TEARDOWN_ATTEMPTS: usize = 20;
/// Deletion confirmations tried before giving up (the pod then stays Terminating until an
/// agent restart confirms it).
pub const MAX_CONFIRM_ATTEMPTS: usize = 60;
/// Conditional deletes per confirmation (each conflict re-reads the pod).
const CONFIRM_CONFLICT_ATTEMPTS: usize = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Progress of a pod's teardown.
#[derive(Debug, Default)]
pub struct Teardown {
    pub done: bool,
    pub attempts: usize,
    pub confirm_attempts: usize,
}

enum Confirmed {
    Yes,
    Retry,
}

impl PodWorker {
    /// Tears the pod down and, with `confirm`, deletes its object. `None` when the worker is
    /// finished, else when to try again.
    pub(super) async fn terminate(
        &mut self,
        confirm: bool,
        max_grace: Option<Duration>,
    ) -> Option<Instant> {
        if !self.teardown.done {
            let mut grace = self
                .pod
                .as_ref()
                .map_or(ORPHAN_GRACE, |p| grace_of(&p.object));
            if let Some(max) = max_grace {
                grace = grace.min(max);
            }
            match self.tear_down(grace).await {
                Ok(()) => self.finish(),
                Err(e) => {
                    self.teardown.attempts += 1;
                    tracing::warn!(pod = %self.uid, error = %e, attempt = self.teardown.attempts, "pod teardown failed");
                    if self.teardown.attempts >= MAX_TEARDOWN_ATTEMPTS {
                        return None;
                    }
                    return Some(Instant::now() + RETRY_PAUSE);
                }
            }
        }
        if !confirm {
            return None;
        }
        match self.confirm_deletion().await {
            Confirmed::Yes => None,
            Confirmed::Retry => {
                self.teardown.confirm_attempts += 1;
                (self.teardown.confirm_attempts < MAX_CONFIRM_ATTEMPTS)
                    .then(|| Instant::now() + RETRY_PAUSE)
            }
        }
    }

    async fn tear_down(&mut self, grace: Duration) -> Result<(), String> {
        for record in self.records.values_mut() {
            record.stop_probes();
        }
        let runtime = self.ctx.runtime.clone();
        let ours = runtime.list_pod(&self.uid).map_err(|e| e.to_string())?;
        let stops = ours
            .iter()
            .filter(|c| c.is_running())
            .map(|c| runtime.stop(&c.id, grace));
        for result in futures::future::join_all(stops).await {
            result.map_err(|e| e.to_string())?;
        }
        for c in &ours {
            runtime.remove(&c.id).await.map_err(|e| e.to_string())?;
        }
        runtime
            .remove_sandbox(&self.uid)
            .await
            .map_err(|e| e.to_string())?;
        self.sandbox = None;
        self.records.clear();
        self.dir.remove().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn finish(&mut self) {
        self.teardown.done = true;
        self.ctx.tombstones.insert(&self.uid);
        if let Some(pod) = &self.pod {
            let meta = &pod.object.metadata;
            self.ctx
                .directory
                .remove(&meta.namespace, &meta.name, &self.uid);
        }
        tracing::info!(pod = %self.uid, "pod torn down");
    }

    /// Deletes the pod object now that nothing of it runs.
    async fn confirm_deletion(&mut self) -> Confirmed {
        let Some(cached) = self.pod.clone() else {
            return Confirmed::Yes;
        };
        let meta = &cached.object.metadata;
        let reference = ObjectRef {
            kind: "Pod".into(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        };
        let mut revision = cached.revision;
        for _ in 0..CONFIRM_CONFLICT_ATTEMPTS {
            let request = DeleteRequest {
                r#ref: Some(reference.clone()),
                grace_period_seconds: Some(0),
                propagation: String::new(),
                resource_version: revision.to_string(),
            };
            let deleted = self
                .ctx
                .client
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.delete(r).await }
                })
                .await;
            match deleted {
                Ok(_) => return Confirmed::Yes,
                Err(s) if s.code() == Code::NotFound => return Confirmed::Yes,
                Err(s) if s.code() == Code::Aborted => {
                    match self.current_revision(&reference).await {
                        Some(Some(fresh)) => revision = fresh,
                        Some(None) => return Confirmed::Yes,
                        None => return Confirmed::Retry,
                    }
                }
                Err(s) => {
                    tracing::debug!(pod = %self.uid, error = %s, "deletion not confirmed yet");
                    return Confirmed::Retry;
                }
            }
        }
        Confirmed::Retry
    }

    /// The pod's revision if it is still this pod; `Some(None)` when it is gone or replaced,
    /// `None` when the control plane did not answer.
    async fn current_revision(&self, reference: &ObjectRef) -> Option<Option<i64>> {
        let request = GetRequest {
            r#ref: Some(reference.clone()),
            stale: false,
        };
        let got = self
            .ctx
            .client
            .call(|mut c| {
                let r = request.clone();
                async move { c.get(r).await }
            })
            .await;
        match got {
            Ok(response) => {
                let value: serde_json::Value = serde_json::from_slice(&response.object).ok()?;
                let same = value.pointer("/metadata/uid").and_then(|u| u.as_str())
                    == Some(self.uid.as_str());
                Some(same.then(|| revision_of(&response.object)))
            }
            Err(s) if s.code() == Code::NotFound => Some(None),
            Err(_) => None,
        }
    }
}
