//! Node registration: the `Node` object this agent stands for (capacity from the host,
//! allocatable after reservations, labels, taints, pod CIDR, addresses, software, Ready, and
//! the agent endpoint annotation) and writing it — create, or update an existing one while
//! keeping the taints the leader's node lifecycle loop owns.

use std::net::{IpAddr, SocketAddr};

use flotilla_api::cluster::{GetRequest, ObjectRef, ObjectRequest};
use flotilla_state::objects::{
    ConditionStatus, Node, NodeAddress, NodeAddressType, NodeCondition, NodeSpec, NodeStatus,
    NodeSystemInfo, Quantity, ResourceList,
};
use serde_json::{json, Value};
use tonic::{Code, Status};

use super::client::ApiClient;
use super::config::AgentConfig;
use super::host::HostFacts;

/// Annotation naming the agent API address (`ip:port`) for `flotilla logs` and `exec`.
pub const AGENT_ENDPOINT_ANNOTATION: &str = "flotilla.dev/agent-endpoint";
/// Taints with this prefix belong to the leader (not-ready, unreachable); an agent keeps them.
const LIFECYCLE_TAINT_PREFIX: &str = "node.kubernetes.io/";
/// Read-modify-write attempts of a registration racing other writers of the Node.
const REGISTER_CONFLICT_ATTEMPTS: usize = 5;

/// The Node as this agent reports it.
pub fn node_object(
    config: &AgentConfig,
    facts: &HostFacts,
    ip: IpAddr,
    endpoint: SocketAddr,
) -> Node {
    let mut node = Node::default();
    let meta = &mut node.metadata;
    meta.name = config.name.clone();
    meta.labels = config.labels.clone();
    meta.labels
        .insert("kubernetes.io/hostname".into(), config.name.clone());
    meta.labels
        .insert("kubernetes.io/os".into(), "linux".into());
    meta.labels
        .insert("kubernetes.io/arch".into(), facts.architecture.clone());
    meta.annotations
        .insert(AGENT_ENDPOINT_ANNOTATION.into(), endpoint.to_string());
    node.spec = NodeSpec {
        pod_cidr: config.pod_cidr.clone(),
        unschedulable: false,
        taints: config.taints.clone(),
    };
    node.status = Some(node_status(config, facts, ip));
    node
}

fn node_status(config: &AgentConfig, facts: &HostFacts, ip: IpAddr) -> NodeStatus {
    let resources = |cpu_millis: i64, memory_bytes: i64| -> ResourceList {
        [
            ("cpu".to_string(), Quantity::from_milli(cpu_millis.max(0))),
            (
                "memory".to_string(),
                Quantity::from_bytes(memory_bytes.max(0)),
            ),
            ("pods".to_string(), Quantity::from_value(config.max_pods)),
        ]
        .into_iter()
        .collect()
    };
    let reserved = config.reserved;
    NodeStatus {
        capacity: resources(facts.cpu_millis, facts.memory_bytes),
        allocatable: resources(
            facts.cpu_millis - reserved.cpu_millis,
            facts.memory_bytes - reserved.memory_bytes,
        ),
        conditions: vec![NodeCondition {
            type_: "Ready".into(),
            status: ConditionStatus::True,
            reason: "AgentReady".into(),
            message: "flotilla agent is ready".into(),
            last_heartbeat_time: None,
            last_transition_time: None,
        }],
        addresses: vec![
            NodeAddress {
                type_: NodeAddressType::InternalIp,
                address: ip.to_string(),
            },
            NodeAddress {
                type_: NodeAddressType::Hostname,
                address: config.name.clone(),
            },
        ],
        node_info: Some(NodeSystemInfo {
            kubelet_version: format!("flotilla-{}", env!("CARGO_PKG_VERSION")),
            os_image: facts.os_image.clone(),
            kernel_version: facts.kernel_version.clone(),
            architecture: facts.architecture.clone(),
            operating_system: "linux".into(),
            ..NodeSystemInfo::default()
        }),
    }
}

/// `node` as a Cluster API document (typed kinds carry apiVersion and kind in their type).
fn document(node: &Node) -> Value {
    let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Node");
    value
}

/// Creates the Node, or brings an existing one up to date (metadata and spec, then status).
pub async fn register(client: &ApiClient, node: &Node) -> Result<(), Status> {
    let request = ObjectRequest {
        object: serde_json::to_vec(&document(node)).unwrap_or_default(),
        default_namespace: String::new(),
    };
    let created = client
        .call(|mut c| {
            let r = request.clone();
            async move { c.create(r).await }
        })
        .await;
    match created {
        Err(status) if status.code() == Code::AlreadyExists => {}
        other => return other.map(|_| ()),
    }
    let mut last = None;
    for _ in 0..REGISTER_CONFLICT_ATTEMPTS {
        match update_existing(client, node).await {
            Err(status) if status.code() == Code::Aborted => last = Some(status),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| Status::aborted("node registration kept conflicting")))
}

async fn update_existing(client: &ApiClient, node: &Node) -> Result<(), Status> {
    let get = GetRequest {
        r#ref: Some(ObjectRef {
            kind: "Node".into(),
            namespace: String::new(),
            name: node.metadata.name.clone(),
        }),
        stale: false,
    };
    let current = client
        .call(|mut c| {
            let r = get.clone();
            async move { c.get(r).await }
        })
        .await?;
    let current: Node = decode(&current.object)?;
    let merged = merge(&current, node);
    let stored = write(client, &merged, false).await?;
    let mut with_status: Node = decode(&stored)?;
    with_status.status = node.status.clone();
    write(client, &with_status, true).await.map(|_| ())
}

/// Our labels, annotations, pod CIDR and taints over the stored Node, keeping the leader's
/// lifecycle taints and everything else others set.
fn merge(current: &Node, ours: &Node) -> Node {
    let mut merged = current.clone();
    merged.metadata.labels.extend(ours.metadata.labels.clone());
    merged
        .metadata
        .annotations
        .extend(ours.metadata.annotations.clone());
    merged.spec.pod_cidr = ours.spec.pod_cidr.clone();
    let lifecycle = current
        .spec
        .taints
        .iter()
        .filter(|t| t.key.starts_with(LIFECYCLE_TAINT_PREFIX))
        .cloned();
    merged.spec.taints = ours.spec.taints.iter().cloned().chain(lifecycle).collect();
    merged
}

async fn write(client: &ApiClient, node: &Node, status: bool) -> Result<Vec<u8>, Status> {
    let request = ObjectRequest {
        object: serde_json::to_vec(&document(node)).unwrap_or_default(),
        default_namespace: String::new(),
    };
    let response = client
        .call(|mut c| {
            let r = request.clone();
            async move {
                if status {
                    c.update_status(r).await
                } else {
                    c.update(r).await
                }
            }
        })
        .await?;
    Ok(response.object)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| Status::internal(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    serde_json::from_value(value).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flotilla_state::objects::{Taint, TaintEffect};

    use super::*;
    use crate::agent::config::Reserved;

    fn facts() -> HostFacts {
        HostFacts {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            kernel_version: "6.1.0".into(),
            os_image: "Debian".into(),
            architecture: "amd64".into(),
        }
    }

    fn config() -> AgentConfig {
        let mut c = AgentConfig::new(
            "n1",
            vec!["127.0.0.1:1".into()],
            Path::new("/d"),
            "127.0.0.1:7001".parse().unwrap(),
            "198.18.3.0/24",
            Path::new("/bin/true"),
        );
        c.reserved = Reserved {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
        };
        c.labels.insert("zone".into(), "a".into());
        c
    }

    fn quantity(list: &ResourceList, name: &str) -> String {
        list[name].as_str().to_string()
    }

    #[test]
    fn the_node_reports_capacity_minus_reservations_and_the_endpoint() {
        let endpoint: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let node = node_object(&config(), &facts(), endpoint.ip(), endpoint);
        let status = node.status.as_ref().unwrap();
        assert_eq!(quantity(&status.capacity, "cpu"), "4");
        assert_eq!(quantity(&status.allocatable, "cpu"), "3500m");
        assert_eq!(quantity(&status.allocatable, "memory"), "7Gi");
        assert_eq!(quantity(&status.allocatable, "pods"), "110");
        assert_eq!(node.metadata.labels["kubernetes.io/hostname"], "n1");
        assert_eq!(node.metadata.labels["zone"], "a");
        assert_eq!(
            node.metadata.annotations[AGENT_ENDPOINT_ANNOTATION],
            "127.0.0.1:7001"
        );
        assert_eq!(node.spec.pod_cidr, "198.18.3.0/24");
        assert_eq!(node.ready(), ConditionStatus::True);
        let info = status.node_info.as_ref().unwrap();
        assert!(info.kubelet_version.starts_with("flotilla-"));
        assert_eq!(status.addresses[0].address, "127.0.0.1");
        // The document passes the object model's own decoding.
        let doc = document(&node).to_string();
        flotilla_state::parse_manifests(&doc).unwrap();
    }

    #[test]
    fn re_registration_keeps_lifecycle_taints_and_foreign_labels() {
        let endpoint: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let ours = node_object(&config(), &facts(), endpoint.ip(), endpoint);
        let mut current = ours.clone();
        current.metadata.labels.insert("team".into(), "x".into());
        let taint = |key: &str| Taint {
            key: key.into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
            time_added: None,
        };
        current.spec.taints = vec![taint("node.kubernetes.io/not-ready"), taint("old")];
        let merged = merge(&current, &ours);
        let keys: Vec<&str> = merged.spec.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, vec!["node.kubernetes.io/not-ready"]);
        assert_eq!(merged.metadata.labels["team"], "x");
        assert_eq!(merged.metadata.labels["zone"], "a");
    }
}
