//! Hollow nodes (like kubemark / kwok): N simulated nodes that register, heartbeat the leader
//! and report the pods bound to them as Running without starting any container. They exercise
//! the control plane at thousands of nodes on one machine. This is a named simulator, not a
//! substitute for the real agent: nothing here runs a process.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_api::cluster::{ApplyRequest, DeleteRequest, ObjectRef, ObjectRequest};
use flotilla_state::informer::{spawn_grouped_informer, Cached, Query};
use flotilla_state::objects::{Pod, PodPhase};
use flotilla_state::Kind;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::agent::client::ApiClient;
use crate::agent::heartbeat::{self, Lease};
use crate::agent::source::ApiSource;

/// Nodes registered per apply (one transaction each).
const REGISTER_CHUNK: usize = 64;
/// Pod status updates in flight at once.
const STATUS_CONCURRENCY: usize = 32;

#[derive(Debug, Clone)]
pub struct HollowConfig {
    pub servers: Vec<String>,
    /// Node names are `<prefix>-<i>`.
    pub prefix: String,
    pub count: usize,
    /// Zones are assigned round-robin (`zone-0` …).
    pub zones: usize,
    /// Of every five nodes, this many are labelled `disk=ssd` and the rest `disk=hdd`, so that
    /// node selectors on storage have both kinds to choose from (as in a mixed datacenter).
    pub ssd_per_five: usize,
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub max_pods: i64,
    pub heartbeat_interval: Duration,
    pub lease: Duration,
}

impl HollowConfig {
    pub fn new(servers: Vec<String>, prefix: impl Into<String>, count: usize) -> Self {
        HollowConfig {
            servers,
            prefix: prefix.into(),
            count,
            zones: 3,
            ssd_per_five: 2,
            cpu_milli: 16_000,
            memory_bytes: 64 << 30,
            max_pods: 110,
            heartbeat_interval: Duration::from_millis(500),
            lease: Duration::from_secs(2),
        }
    }

    pub fn node_names(&self) -> Vec<String> {
        (0..self.count)
            .map(|i| format!("{}-{i}", self.prefix))
            .collect()
    }
}

fn node_manifest(config: &HollowConfig, index: usize, name: &str) -> Value {
    let resources = json!({
        "cpu": format!("{}m", config.cpu_milli),
        "memory": config.memory_bytes.to_string(),
        "pods": config.max_pods.to_string(),
    });
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", index % config.zones.max(1)),
            "disk": if index % 5 < config.ssd_per_five { "ssd" } else { "hdd" },
            "flotilla.dev/hollow": "true",
        }},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "HollowNodeReady"}],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "flotilla-hollow", "osImage": "hollow", "kernelVersion": "none",
                          "architecture": "amd64", "operatingSystem": "linux"},
        },
    })
}

/// Registers the nodes (create or update).
pub async fn register(client: &ApiClient, config: &HollowConfig) -> Result<(), tonic::Status> {
    let names = config.node_names();
    for (chunk_index, chunk) in names.chunks(REGISTER_CHUNK).enumerate() {
        let docs: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, name)| {
                node_manifest(config, chunk_index * REGISTER_CHUNK + i, name).to_string()
            })
            .collect();
        let request = ApplyRequest {
            manifests: docs.join("\n---\n").into_bytes(),
            default_namespace: String::new(),
            dry_run: false,
        };
        client
            .call(|mut c| {
                let r = request.clone();
                async move { c.apply(r).await }
            })
            .await?;
    }
    Ok(())
}

/// A stable fake address for a pod, from its uid (inside 198.18.0.0/15).
fn pod_ip(uid: &str) -> String {
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("198.19.{}.{}", (hash >> 8) % 256, hash % 250 + 1)
}

/// The status a hollow node reports for a pod it "runs". A host-network pod has its node's
/// address, as on a real node.
fn running_status(pod: &Pod, node_index: usize) -> Value {
    let started = flotilla_state::registry::now();
    let containers: Vec<Value> = pod
        .spec
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "ready": true, "restartCount": 0, "image": c.image,
                   "containerID": format!("hollow://{}", pod.metadata.uid),
                   "state": {"running": {"startedAt": started}}})
        })
        .collect();
    let host_ip = format!(
        "198.18.{}.{}",
        (node_index / 250) % 256,
        node_index % 250 + 1
    );
    let pod_ip = if pod.spec.host_network {
        host_ip.clone()
    } else {
        pod_ip(&pod.metadata.uid)
    };
    json!({
        "phase": "Running",
        "hostIP": host_ip,
        "podIP": pod_ip,
        "startTime": started,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": containers,
    })
}

/// The informer group of the bound pods that wait on their node: pending ones (to report
/// Running) and terminating ones (to confirm stopped). Each round reads this group alone, not
/// every bound pod in the cluster.
const WORK: &str = "work";

fn work_group(pod: &Pod) -> Option<String> {
    (pod.metadata.deletion_timestamp.is_some() || pod.phase() == PodPhase::Pending)
        .then(|| WORK.to_string())
}

/// Runs the hollow nodes until the task is dropped.
pub async fn run(config: HollowConfig) -> Result<(), tonic::Status> {
    let client = ApiClient::new(&config.servers).map_err(tonic::Status::invalid_argument)?;
    let lease = Arc::new(Lease::new(config.lease));
    // Heartbeats start before registration: registering thousands of nodes takes seconds, and
    // the nodes registered first would otherwise be silent past the grace period, turn
    // NotReady and back (thousands of needless node writes).
    let beats = {
        let (client, names, interval, lease) = (
            client.clone(),
            config.node_names(),
            config.heartbeat_interval,
            lease.clone(),
        );
        tokio::spawn(async move { heartbeat::run(client, names, interval, &lease).await })
    };
    if let Err(e) = register(&client, &config).await {
        beats.abort();
        return Err(e);
    }
    tracing::info!(count = config.count, prefix = %config.prefix, "hollow nodes registered");
    let source = Arc::new(ApiSource {
        client: client.clone(),
    });
    let pods = spawn_grouped_informer::<Pod, _>(
        source,
        Query::all(Kind::Pod).with_fields("spec.nodeName!="),
        std::future::pending(),
        work_group,
    );
    pods.wait_synced().await;
    let ours: HashSet<String> = config.node_names().into_iter().collect();
    let mut changes = pods.subscribe();
    let started = Instant::now();
    let mut reported = Reported::default();
    loop {
        let (_, waiting) = pods.group(WORK);
        let work: Vec<&Cached<Pod>> = waiting
            .iter()
            .filter(|p| ours.contains(&p.object.spec.node_name))
            .collect();
        let todo = reported.still_to_do(&work);
        if lease.valid(started) {
            let client = &client;
            let done: Vec<(String, i64)> = futures::stream::iter(todo)
                .map(|pod| async move {
                    let key = (pod.object.metadata.uid.clone(), pod.revision);
                    act(client, pod).await.then_some(key)
                })
                .buffer_unordered(STATUS_CONCURRENCY)
                .filter_map(|acted| async move { acted })
                .collect()
                .await;
            reported.record(done);
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
    beats.abort();
    Ok(())
}

/// The pods reported at the revision the cache still shows: the cache lags the writes, and
/// without this every round would report again the pods the round before had just reported
/// (each a read and a refused update on the server).
#[derive(Debug, Default)]
struct Reported {
    /// uid → the revision the pod had when it was reported.
    at: HashMap<String, i64>,
}

impl Reported {
    /// The pods of `work` not yet reported at their current revision; forgets pods that left
    /// `work` (so it holds at most one round's worth).
    fn still_to_do<'a>(&mut self, work: &[&'a Cached<Pod>]) -> Vec<&'a Cached<Pod>> {
        let current: HashSet<&str> = work
            .iter()
            .map(|p| p.object.metadata.uid.as_str())
            .collect();
        self.at.retain(|uid, _| current.contains(uid.as_str()));
        work.iter()
            .filter(|p| self.at.get(&p.object.metadata.uid) != Some(&p.revision))
            .copied()
            .collect()
    }

    fn record(&mut self, done: impl IntoIterator<Item = (String, i64)>) {
        self.at.extend(done);
    }
}

/// Reports a pending pod Running, or confirms a terminating pod stopped (deletes it). Whether
/// the pod needs nothing more from this revision: the write landed, or the pod changed or went
/// meanwhile; a failed write (an election, say) is tried again next round.
async fn act(client: &ApiClient, cached: &Cached<Pod>) -> bool {
    let pod = &cached.object;
    let (ns, name) = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
    let result = if pod.metadata.deletion_timestamp.is_some() {
        let request = DeleteRequest {
            r#ref: Some(ObjectRef {
                kind: "Pod".into(),
                namespace: ns,
                name,
            }),
            grace_period_seconds: Some(0),
            propagation: String::new(),
            resource_version: String::new(),
        };
        client
            .call(|mut c| {
                let r = request.clone();
                async move { c.delete(r).await }
            })
            .await
            .map(|_| ())
    } else {
        let node_index = pod
            .spec
            .node_name
            .rsplit('-')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let mut object = serde_json::to_value(&**pod).unwrap_or(Value::Null);
        object["apiVersion"] = json!("v1");
        object["kind"] = json!("Pod");
        object["metadata"]["resourceVersion"] = json!(cached.revision.to_string());
        object["status"] = running_status(pod, node_index);
        let request = ObjectRequest {
            object: serde_json::to_vec(&object).unwrap_or_default(),
            default_namespace: String::new(),
        };
        client
            .call(|mut c| {
                let r = request.clone();
                async move { c.update_status(r).await }
            })
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => true,
        Err(status)
            if status.code() == tonic::Code::Aborted || status.code() == tonic::Code::NotFound =>
        {
            true
        }
        Err(status) => {
            tracing::debug!(error = %status, "hollow node could not report a pod");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hollow_nodes_carry_zone_and_a_mix_of_disk_labels() {
        let config = HollowConfig::new(vec![], "h", 10);
        let labels: Vec<(String, String)> = config
            .node_names()
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let node = node_manifest(&config, i, name);
                let labels = &node["metadata"]["labels"];
                (
                    labels["topology.kubernetes.io/zone"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    labels["disk"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let ssd = labels.iter().filter(|(_, disk)| disk == "ssd").count();
        assert_eq!(ssd, 4, "two of every five nodes: {labels:?}");
        assert_eq!(labels[0].0, "zone-0");
        assert_eq!(labels[4].0, "zone-1");
    }

    #[test]
    fn the_work_group_holds_pending_and_terminating_pods_only() {
        let mut pod = Pod::default();
        assert_eq!(
            work_group(&pod).as_deref(),
            Some(WORK),
            "no status yet: pending"
        );
        pod.status = serde_json::from_value(json!({"phase": "Running"})).unwrap();
        assert_eq!(work_group(&pod), None, "running: nothing to do");
        pod.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-11-28T00:00:00Z")).unwrap();
        assert_eq!(
            work_group(&pod).as_deref(),
            Some(WORK),
            "terminating: confirm stopped"
        );
    }

    #[test]
    fn a_host_network_pod_reports_its_nodes_address() {
        let mut pod = Pod::default();
        pod.metadata.uid = "u-1".into();
        let own = running_status(&pod, 251);
        assert_eq!(own["hostIP"], json!("198.18.1.2"));
        assert_ne!(own["podIP"], own["hostIP"]);
        pod.spec.host_network = true;
        let shared = running_status(&pod, 251);
        assert_eq!(shared["podIP"], json!("198.18.1.2"));
    }

    fn cached(uid: &str, revision: i64) -> Cached<Pod> {
        let mut pod = Pod::default();
        pod.metadata.uid = uid.into();
        Cached {
            object: Arc::new(pod),
            revision,
        }
    }

    fn uids(pods: &[&Cached<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.object.metadata.uid.clone()).collect()
    }

    #[test]
    fn a_pod_is_reported_once_per_revision_and_forgotten_when_it_leaves_the_work() {
        let mut reported = Reported::default();
        let (a, b) = (cached("a", 5), cached("b", 6));
        assert_eq!(uids(&reported.still_to_do(&[&a, &b])), ["a", "b"]);
        // Only a's report landed (b's failed): b is tried again, a is not.
        reported.record([("a".to_string(), 5)]);
        assert_eq!(uids(&reported.still_to_do(&[&a, &b])), ["b"]);
        // a changed (say, its report was refused and it was rebound): reported again.
        let a_later = cached("a", 9);
        assert_eq!(uids(&reported.still_to_do(&[&a_later, &b])), ["a", "b"]);
        reported.record([("a".to_string(), 9)]);
        // a left the work (it is Running now): forgotten.
        assert!(reported
            .still_to_do(&[&b])
            .iter()
            .all(|p| p.object.metadata.uid == "b"));
        assert!(!reported.at.contains_key("a"));
    }
}
