//! The leader's scheduler and node lifecycle against a real server process, with nodes whose
//! heartbeats the test sends itself: a pending pod is placed when a fitting node appears, the
//! reasons of an unschedulable pod are counted, a silent node turns NotReady and loses its pods
//! only after lease + margin, a Deployment's pods spread and come back, and two pods that
//! want one node port never share a node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{ApplyRequest, GetRequest, ListRequest, ObjectRef};
use flotilla_api::node::node_api_client::NodeApiClient;
use flotilla_api::node::HeartbeatRequest;
use flotilla_e2e::user::eventually_async as eventually;
use flotilla_e2e::{channel, ProcessCluster};
use serde_json::Value;

async fn apply(addr: &str, yaml: &str) {
    ClusterApiClient::new(channel(addr))
        .apply(ApplyRequest {
            manifests: yaml.as_bytes().to_vec(),
            default_namespace: "default".into(),
            dry_run: false,
        })
        .await
        .expect("apply");
}

async fn get(addr: &str, kind: &str, name: &str) -> Option<Value> {
    let request = GetRequest {
        r#ref: Some(ObjectRef {
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
        }),
        stale: false,
    };
    match ClusterApiClient::new(channel(addr)).get(request).await {
        Ok(r) => Some(serde_json::from_slice(&r.into_inner().object).unwrap()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => panic!("get {kind}/{name}: {s}"),
    }
}

async fn list(addr: &str, kind: &str, labels: &str) -> Vec<Value> {
    let request = ListRequest {
        kind: kind.into(),
        namespace: "default".into(),
        label_selector: labels.into(),
        ..Default::default()
    };
    let page = ClusterApiClient::new(channel(addr))
        .list(request)
        .await
        .expect("list")
        .into_inner();
    page.items
        .iter()
        .map(|i| serde_json::from_slice(i).unwrap())
        .collect()
}

fn node_yaml(name: &str, disk: &str, zone: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{disk: {disk}, topology.kubernetes.io/zone: {zone}}}\nstatus:\n  capacity: {{cpu: '4', memory: 8Gi, pods: '110'}}\n  allocatable: {{cpu: '4', memory: 8Gi, pods: '110'}}\n  conditions: [{{type: Ready, status: 'True'}}]\n"
    )
}

/// Heartbeats for `nodes` every 200 ms while `alive` is set (as an agent would).
fn heartbeats(
    addr: String,
    nodes: Vec<String>,
    alive: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    heartbeats_noting(addr, nodes, alive, Arc::default())
}

/// [`heartbeats`], noting in `last_sent` when the latest round of them started.
fn heartbeats_noting(
    addr: String,
    nodes: Vec<String>,
    alive: Arc<AtomicBool>,
    last_sent: Arc<std::sync::Mutex<Option<Instant>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while alive.load(Ordering::SeqCst) {
            *last_sent.lock().unwrap() = Some(Instant::now());
            let mut client = NodeApiClient::new(channel(&addr));
            for node in &nodes {
                let _ = client
                    .heartbeat(HeartbeatRequest {
                        node: node.clone(),
                        lease_ms: 2000,
                        more_nodes: vec![],
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pods_are_placed_when_a_fitting_node_appears_and_leave_a_lost_node() {
    let cluster = ProcessCluster::start(1).await;
    let addr = cluster.peers[0].addr.clone();
    let hdd_alive = Arc::new(AtomicBool::new(true));
    let _hdd = heartbeats(addr.clone(), vec!["hdd-1".into()], hdd_alive.clone());
    apply(&addr, &node_yaml("hdd-1", "hdd", "a")).await;
    apply(
        &addr,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wants-ssd}\nspec:\n  nodeSelector: {disk: ssd}\n  containers: [{name: c, image: busybox, resources: {requests: {cpu: 100m}}}]\n",
    )
    .await;
    let message = eventually(
        Duration::from_secs(10),
        "unschedulable condition",
        || async {
            let pod = get(&addr, "Pod", "wants-ssd").await?;
            let c = condition(&pod, "PodScheduled")?;
            (c["status"] == "False").then(|| c["message"].as_str().unwrap().to_string())
        },
    )
    .await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    );

    // A fitting node appears: the pod is placed on it.
    let ssd_alive = Arc::new(AtomicBool::new(true));
    let ssd_last_sent = Arc::new(std::sync::Mutex::new(None));
    let ssd = heartbeats_noting(
        addr.clone(),
        vec!["ssd-1".into()],
        ssd_alive.clone(),
        ssd_last_sent.clone(),
    );
    apply(&addr, &node_yaml("ssd-1", "ssd", "b")).await;
    eventually(Duration::from_secs(10), "pod bound to ssd-1", || async {
        let pod = get(&addr, "Pod", "wants-ssd").await?;
        (pod["spec"]["nodeName"] == "ssd-1").then_some(())
    })
    .await;

    // ssd-1 goes silent: NotReady after the grace period, the pod deleted only after
    // lease + margin from the last heartbeat (the agent has stopped it by then). The leader
    // received that heartbeat after it was sent, so its sending is the earliest start.
    ssd_alive.store(false, Ordering::SeqCst);
    ssd.await.unwrap();
    let silent_at = ssd_last_sent.lock().unwrap().expect("ssd-1 heartbeated");
    eventually(Duration::from_secs(10), "ssd-1 NotReady", || async {
        let node = get(&addr, "Node", "ssd-1").await?;
        (condition(&node, "Ready")?["status"] != "True").then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "pod removed from the lost node",
        || async { get(&addr, "Pod", "wants-ssd").await.is_none().then_some(()) },
    )
    .await;
    let lease_and_margin = Duration::from_millis(2000 + 1000);
    assert!(
        silent_at.elapsed() >= lease_and_margin,
        "evicted before the agent's lease ran out"
    );
    // The node that kept heartbeating stayed Ready.
    let hdd = get(&addr, "Node", "hdd-1").await.unwrap();
    assert_eq!(condition(&hdd, "Ready").unwrap()["status"], "True");
    hdd_alive.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_on_the_node_network_with_one_port_never_share_a_node() {
    let cluster = ProcessCluster::start(1).await;
    let addr = cluster.peers[0].addr.clone();
    let alive = Arc::new(AtomicBool::new(true));
    let _beats = heartbeats(addr.clone(), vec!["edge-1".into()], alive.clone());
    apply(&addr, &node_yaml("edge-1", "ssd", "a")).await;
    // hostNetwork makes the container port a host port; the second pod asks for it by hostPort.
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {extra}containers: [{{name: c, image: busybox, ports: [{{containerPort: 9100{}}}]}}]\n",
            if extra.is_empty() { ", hostPort: 9100" } else { "" }
        )
    };
    apply(&addr, &pod("exporter", "hostNetwork: true\n  ")).await;
    eventually(Duration::from_secs(10), "the first pod bound", || async {
        let pod = get(&addr, "Pod", "exporter").await?;
        (pod["spec"]["nodeName"] == "edge-1").then_some(())
    })
    .await;
    let exporter = get(&addr, "Pod", "exporter").await.unwrap();
    assert_eq!(
        exporter["spec"]["containers"][0]["ports"][0]["hostPort"], 9100,
        "defaulted from containerPort"
    );
    apply(&addr, &pod("forwarded", "")).await;
    let message = eventually(
        Duration::from_secs(10),
        "unschedulable condition",
        || async {
            let pod = get(&addr, "Pod", "forwarded").await?;
            let c = condition(&pod, "PodScheduled")?;
            (c["status"] == "False").then(|| c["message"].as_str().unwrap().to_string())
        },
    )
    .await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    );
    alive.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_spreads_over_zones_and_replaces_deleted_pods() {
    let cluster = ProcessCluster::start(1).await;
    let addr = cluster.peers[0].addr.clone();
    let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    let alive = Arc::new(AtomicBool::new(true));
    let _beats = heartbeats(addr.clone(), names.clone(), alive.clone());
    for (i, name) in names.iter().enumerate() {
        apply(&addr, &node_yaml(name, "ssd", &format!("z{i}"))).await;
    }
    apply(
        &addr,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: 100m}}}]}\n",
    )
    .await;
    let pods = eventually(Duration::from_secs(15), "6 pods bound", || async {
        let pods = list(&addr, "Pod", "app=web").await;
        (pods.len() == 6
            && pods.iter().all(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            }))
        .then_some(pods)
    })
    .await;
    for name in &names {
        let on = pods
            .iter()
            .filter(|p| p["spec"]["nodeName"] == name.as_str())
            .count();
        assert_eq!(on, 2, "replicas spread evenly; {name} has {on}");
    }
    // Delete a pod: the ReplicaSet replaces it.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    ClusterApiClient::new(channel(&addr))
        .delete(flotilla_api::cluster::DeleteRequest {
            r#ref: Some(ObjectRef {
                kind: "Pod".into(),
                namespace: "default".into(),
                name: victim.clone(),
            }),
            grace_period_seconds: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "replacement pod", || async {
        let pods = list(&addr, "Pod", "app=web").await;
        let names: Vec<&str> = pods
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        (pods.len() == 6 && !names.contains(&victim.as_str())).then_some(())
    })
    .await;
    alive.store(false, Ordering::SeqCst);
}

/// Heartbeats for `nodes` to every peer (only the leader accepts them).
fn heartbeats_to_all(
    addrs: Vec<String>,
    nodes: Vec<String>,
    alive: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    addrs
        .into_iter()
        .map(|a| heartbeats(a, nodes.clone(), alive.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_during_scale_up_converges_to_exactly_the_desired_count() {
    let mut cluster = ProcessCluster::start(3).await;
    let addrs: Vec<String> = cluster.peers.iter().map(|p| p.addr.clone()).collect();
    let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    let alive = Arc::new(AtomicBool::new(true));
    let _beats = heartbeats_to_all(addrs.clone(), names.clone(), alive.clone());
    for (i, name) in names.iter().enumerate() {
        apply(&addrs[0], &node_yaml(name, "ssd", &format!("z{i}"))).await;
    }
    let deployment = |replicas: u32| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: grow}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: grow}}}}\n  template:\n    metadata: {{labels: {{app: grow}}}}\n    spec: {{containers: [{{name: c, image: busybox, resources: {{requests: {{cpu: 10m}}}}}}]}}\n")
    };
    apply(&addrs[0], &deployment(3)).await;
    eventually(Duration::from_secs(15), "3 pods", || async {
        (list(&addrs[1], "Pod", "app=grow").await.len() == 3).then_some(())
    })
    .await;
    // Scale up to 60 and kill the leader while the ReplicaSet is creating pods.
    apply(&addrs[1], &deployment(60)).await;
    let leader = cluster.leader().await;
    cluster.peer(leader).kill9();
    let survivor = addrs
        .iter()
        .enumerate()
        .find(|(i, _)| *i as u64 + 1 != leader)
        .unwrap()
        .1
        .clone();
    let pods = eventually(Duration::from_secs(30), "60 pods, all bound", || async {
        let pods = list(&survivor, "Pod", "app=grow").await;
        let bound = pods.iter().all(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        });
        (pods.len() == 60 && bound).then_some(pods)
    })
    .await;
    // And it stays exactly there: no duplicate creations show up later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = list(&survivor, "Pod", "app=grow").await;
    assert_eq!(later.len(), 60, "replica count drifted after convergence");
    let mut names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    names.dedup();
    assert_eq!(names.len(), 60);
    alive.store(false, Ordering::SeqCst);
}
