//! Counting bound pods for bench-sched (b) from one watch instead of listing all of them again
//! and again: at 150,000 pods each full list cost the peers seconds of CPU, taken from the very
//! control plane being measured. The watch starts before any pod exists, so every binding shows
//! up in it; if the watch ends (a watcher that falls too far behind is cancelled), one paged
//! list recounts and the watch resumes from that list's revision.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{ListRequest, WatchEvent, WatchRequest};
use serde::Deserialize;

/// Page size of the recount after a watch ended.
const LIST_PAGE: i64 = 5000;
/// Times the watch may be reopened before the count gives up.
const REOPEN_MAX: usize = 20;

#[derive(Deserialize)]
struct PodLite {
    metadata: MetaLite,
    #[serde(default)]
    spec: SpecLite,
}

#[derive(Deserialize)]
struct MetaLite {
    #[serde(default)]
    namespace: String,
    name: String,
}

#[derive(Deserialize, Default)]
struct SpecLite {
    #[serde(default, rename = "nodeName")]
    node_name: String,
}

fn key(pod: &PodLite) -> String {
    format!("{}/{}", pod.metadata.namespace, pod.metadata.name)
}

/// The names of existing and of bound pods, kept current by a watch on one peer.
pub struct BoundPods {
    /// One connection to the peer, for the watch and any recount.
    client: ClusterApiClient<tonic::transport::Channel>,
    existing: HashSet<String>,
    bound: HashSet<String>,
    stream: Option<tonic::Streaming<WatchEvent>>,
    reopened: usize,
}

async fn client(addr: &str) -> Result<ClusterApiClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(ClusterApiClient::new(channel).max_decoding_message_size(256 << 20))
}

impl BoundPods {
    /// Opens the watch from now on; call before the pods are created.
    pub async fn open(addr: &str) -> Result<BoundPods, String> {
        let mut tracker = BoundPods {
            client: client(addr).await?,
            existing: HashSet::new(),
            bound: HashSet::new(),
            stream: None,
            reopened: 0,
        };
        tracker.watch_from(String::new()).await?;
        Ok(tracker)
    }

    /// Bound pods.
    pub fn count(&self) -> usize {
        self.bound.len()
    }

    /// Pods that exist, bound or not: how far the controllers' creates have got.
    pub fn existing(&self) -> usize {
        self.existing.len()
    }

    async fn watch_from(&mut self, resource_version: String) -> Result<(), String> {
        let request = WatchRequest {
            kind: "Pod".into(),
            all_namespaces: true,
            resource_version,
            ..Default::default()
        };
        let stream = self
            .client
            .watch(request)
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        self.stream = Some(stream);
        Ok(())
    }

    /// Recounts with one paged list and resumes the watch at its revision.
    async fn relist(&mut self) -> Result<(), String> {
        let mut existing = HashSet::new();
        let mut bound = HashSet::new();
        let mut token = String::new();
        let mut revision = String::new();
        loop {
            let request = ListRequest {
                kind: "Pod".into(),
                all_namespaces: true,
                limit: LIST_PAGE,
                r#continue: token.clone(),
                ..Default::default()
            };
            let page = self
                .client
                .list(request)
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            for item in &page.items {
                let pod = serde_json::from_slice::<PodLite>(item)
                    .map_err(|e| format!("a listed pod does not decode: {e}"))?;
                if !pod.spec.node_name.is_empty() {
                    bound.insert(key(&pod));
                }
                existing.insert(key(&pod));
            }
            if revision.is_empty() {
                revision = page.resource_version;
            }
            if page.r#continue.is_empty() {
                break;
            }
            token = page.r#continue;
        }
        self.existing = existing;
        self.bound = bound;
        self.watch_from(revision).await
    }

    /// Applies the events that arrive until `until`; returns early when the watch ends (after
    /// recounting and reopening it), so the caller can report.
    pub async fn follow(&mut self, until: Instant) -> Result<(), String> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let stream = self.stream.as_mut().ok_or("no watch")?;
            let Ok(next) = tokio::time::timeout(left, stream.message()).await else {
                return Ok(());
            };
            let ended = match next {
                Ok(Some(event)) if event.r#type == "ERROR" => Some(event.error),
                Ok(Some(event)) => {
                    self.apply(&event)?;
                    None
                }
                Ok(None) => Some("the watch closed".to_string()),
                Err(status) => Some(status.message().to_string()),
            };
            if let Some(why) = ended {
                self.reopened += 1;
                if self.reopened > REOPEN_MAX {
                    return Err(format!("the pod watch ended {REOPEN_MAX} times: {why}"));
                }
                eprintln!("    (pod watch ended: {why}; recounting)");
                return self.relist().await;
            }
        }
    }

    fn apply(&mut self, event: &WatchEvent) -> Result<(), String> {
        if event.r#type == "BOOKMARK" {
            return Ok(());
        }
        let pod = serde_json::from_slice::<PodLite>(&event.object)
            .map_err(|e| format!("a watched pod does not decode: {e}"))?;
        let key = key(&pod);
        if event.r#type == "DELETED" {
            self.existing.remove(&key);
        } else {
            self.existing.insert(key.clone());
        }
        if event.r#type == "DELETED" || pod.spec.node_name.is_empty() {
            self.bound.remove(&key);
        } else {
            self.bound.insert(key);
        }
        Ok(())
    }
}
