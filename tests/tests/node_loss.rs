//! Node loss with real agents and real containers (root): SIGKILL one of three agents — its
//! pods are Running elsewhere within seconds, and the agents' own run journals (written by the
//! container shims) prove that no pod ran on two nodes at once and that the deployment never had
//! more containers running than replicas: the dead node's containers stopped themselves when its
//! lease lapsed, before the leader replaced them.

use std::time::{Duration, Instant};

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{ApplyRequest, ListRequest};
use flotilla_chaos::checker::overlap::{check_no_overlap, OverlapConfig, PodEvent, PodRecord};
use flotilla_chaos::checker::Verdict;
use flotilla_e2e::agent::{busybox_image, Agent, AgentOptions, Bridges};
use flotilla_e2e::{channel, ProcessCluster};
use serde_json::Value;

const REPLICAS: usize = 6;

/// The agent's run journal as the overlap checker's records.
fn journal(agent: &Agent) -> Vec<PodRecord> {
    let text = std::fs::read_to_string(agent.journal_path()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| PodRecord {
            pod_uid: r["pod_uid"].as_str().unwrap().to_string(),
            host: agent.name.clone(),
            event: if r["event"] == "started" {
                PodEvent::Started
            } else {
                PodEvent::Stopped
            },
            at_ns: r["at_ns"].as_u64().unwrap(),
        })
        .collect()
}

/// Running pods of the deployment: (uid, node).
async fn running(addr: &str) -> Vec<(String, String)> {
    let request = ListRequest {
        kind: "Pod".into(),
        namespace: "default".into(),
        label_selector: "app=loss".into(),
        ..Default::default()
    };
    let Ok(page) = ClusterApiClient::new(channel(addr)).list(request).await else {
        return Vec::new();
    };
    page.into_inner()
        .items
        .iter()
        .map(|i| serde_json::from_slice::<Value>(i).unwrap())
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_agent_moves_its_pods_and_no_pod_runs_twice() {
    let cluster = ProcessCluster::start(1).await;
    let addr = cluster.peers[0].addr.clone();
    let image = busybox_image(cluster.dir.path(), "busybox:latest");
    let tag = format!("{:04x}", std::process::id() % 0xffff);
    let _bridges = Bridges((0..3).map(|i| format!("fl{tag}{i}")).collect());
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| {
            let name = format!("loss-{i}");
            Agent::start(AgentOptions {
                name: &name,
                dir: &cluster.dir.path().join(&name),
                servers: &addr,
                subnet: 150 + i as u8,
                bridge: &format!("fl{tag}{i}"),
                labels: "",
                images: std::slice::from_ref(&image),
            })
        })
        .collect();
    ClusterApiClient::new(channel(&addr))
        .apply(ApplyRequest {
            manifests: format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: loss}}\nspec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: loss}}}}\n  template:\n    metadata: {{labels: {{app: loss}}}}\n    spec: {{terminationGracePeriodSeconds: 1, containers: [{{name: c, image: busybox:latest, command: [sleep, '3600']}}]}}\n").into_bytes(),
            default_namespace: "default".into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let pods = running(&addr).await;
        if pods.len() == REPLICAS {
            break pods;
        }
        assert!(Instant::now() < deadline, "pods did not start: {pods:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The agent with the most pods dies.
    let victim = (0..3)
        .max_by_key(|i| before.iter().filter(|(_, n)| *n == agents[*i].name).count())
        .unwrap();
    let victim_name = agents[victim].name.clone();
    let killed_at = Instant::now();
    agents[victim].kill9();
    let after = loop {
        let pods = running(&addr).await;
        if pods.len() == REPLICAS && pods.iter().all(|(_, n)| *n != victim_name) {
            break pods;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "pods not replaced: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved_in = killed_at.elapsed();
    assert!(
        moved_in < Duration::from_secs(15),
        "replacement took {moved_in:?}"
    );
    assert!(after.iter().all(|(_, n)| *n != victim_name));

    // Let the dead node's shims record their self-fencing stop, then judge the journals.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records: Vec<PodRecord> = agents.iter().flat_map(journal).collect();
    let count = |host: Option<&str>, event: PodEvent| {
        records
            .iter()
            .filter(|r| r.event == event && host.is_none_or(|h| r.host == h))
            .count()
    };
    let moved = before.iter().filter(|(_, n)| *n == victim_name).count();
    assert!(
        count(None, PodEvent::Started) >= REPLICAS + moved,
        "journals hold every start: {records:?}"
    );
    assert_eq!(
        count(Some(&victim_name), PodEvent::Started),
        count(Some(&victim_name), PodEvent::Stopped),
        "the dead node's containers stopped themselves when its lease lapsed"
    );
    let report = check_no_overlap(
        &records,
        &[],
        &OverlapConfig {
            killed_host_grace_ns: 0,
        },
    );
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    // Never more containers of the deployment running at once than replicas.
    let mut events: Vec<(u64, i64)> = records
        .iter()
        .map(|r| (r.at_ns, if r.event == PodEvent::Started { 1 } else { -1 }))
        .collect();
    events.sort_by_key(|(at, delta)| (*at, *delta));
    let mut concurrent = 0i64;
    let mut peak = 0i64;
    for (_, delta) in events {
        concurrent += delta;
        peak = peak.max(concurrent);
    }
    assert!(
        peak <= REPLICAS as i64,
        "{peak} containers ran at once for {REPLICAS} replicas"
    );

    // Clean up: the dead agent comes back to tear down its leftovers; then everyone stops.
    agents[victim].spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
}
