//! The checks of runs with agents, and the wait for their nodes before the workload starts.
//!
//! - `pod-overlap`: every agent's run journal (`runtime/journal.1.jsonl` then
//!   `runtime/journal.jsonl`, one line per container start or stop, written by the container's
//!   shim, so complete even when the agent was killed) fed to [`check_no_overlap`]: one pod uid
//!   never ran on two hosts at once. An agent's kill -9 does not stop its containers — their
//!   shims record the stop when the lease fences them — so no host-kill records are needed.
//! - `workload-converged`: after the heal, the churn Deployment's `spec.replicas` pods of its
//!   current template (the `CHURN_REVISION` env value) are Running and Ready, and no other live
//!   pod of it is left, within [`CONVERGE_TIMEOUT`]. [`assess`] is the pure judgement.
//! - [`wait_nodes_ready`]: every agent's Node is Ready before the churn creates its Deployment,
//!   so the first replicas spread over all agents instead of landing on the first one up.

use std::path::Path;
use std::time::Duration;

use flotilla_api::cluster::{GetRequest, ListRequest, ObjectRef};
use serde::Serialize;
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::checker::overlap::{check_no_overlap, OverlapConfig, PodEvent, PodRecord};
use crate::checker::Verdict;
use crate::client;
use crate::error::ChaosError;
use crate::verify::{CheckResult, Member};
use crate::workload::churn::{APP, DEPLOYMENT, NAMESPACE, REVISION_ENV};

/// How long after the heal the Deployment has to be converged.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between two looks at the Deployment.
const CONVERGE_POLL: Duration = Duration::from_millis(500);

/// How long the agents' Nodes have to become Ready after the cluster started.
pub const NODES_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline of one Get or List.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Journal lines read per agent at most (two full 16 MiB files are ~200 000 lines).
pub const MAX_JOURNAL_RECORDS: usize = 1_000_000;

/// Parses journal text of host `host`; returns the records and how many lines were skipped
/// (a torn last line after a crash, or anything that is not a record).
pub fn parse_journal(text: &str, host: &str) -> (Vec<PodRecord>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    for line in text.lines().take(MAX_JOURNAL_RECORDS) {
        match parse_line(line, host) {
            Some(record) => records.push(record),
            None => skipped += 1,
        }
    }
    (records, skipped)
}

fn parse_line(line: &str, host: &str) -> Option<PodRecord> {
    let json: Json = serde_json::from_str(line).ok()?;
    let event = match json["event"].as_str()? {
        "started" => PodEvent::Started,
        "stopped" => PodEvent::Stopped,
        _ => return None,
    };
    Some(PodRecord {
        pod_uid: json["pod_uid"].as_str()?.to_string(),
        host: host.to_string(),
        event,
        at_ns: json["at_ns"].as_u64()?,
    })
}

/// Every record of the agent whose data directory is `data_dir`, oldest file first.
pub fn read_journal(data_dir: &Path, host: &str) -> (Vec<PodRecord>, usize) {
    let runtime = data_dir.join("runtime");
    let mut records = Vec::new();
    let mut skipped = 0;
    for file in ["journal.1.jsonl", "journal.jsonl"] {
        let text = std::fs::read_to_string(runtime.join(file)).unwrap_or_default();
        let (mut more, bad) = parse_journal(&text, host);
        records.append(&mut more);
        skipped += bad;
    }
    (records, skipped)
}

/// `pod-overlap` over the journals of `agents` (host name, data directory).
pub fn overlap_check(agents: &[(String, &Path)]) -> CheckResult {
    let mut records = Vec::new();
    let mut skipped = 0;
    for (host, dir) in agents {
        let (mut more, bad) = read_journal(dir, host);
        records.append(&mut more);
        skipped += bad;
    }
    let config = OverlapConfig {
        killed_host_grace_ns: 0,
    };
    let report = check_no_overlap(&records, &[], &config);
    let starts = records
        .iter()
        .filter(|r| r.event == PodEvent::Started)
        .count();
    let verdict = if starts == 0 {
        // No container ever ran: the property holds trivially and proves nothing.
        Verdict::Unknown
    } else {
        report.verdict
    };
    let summary = format!(
        "{report}; {starts} container starts in {} journals, {skipped} lines skipped",
        agents.len()
    );
    CheckResult::new("pod-overlap", verdict, summary, &report)
}

/// What the Deployment and its pods look like at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Convergence {
    pub desired_replicas: u64,
    pub revision: String,
    /// Running, Ready, not terminating, of the current revision.
    pub ready_current: u64,
    /// Other pods not terminating: `name phase revision`.
    pub others: Vec<String>,
}

impl Convergence {
    pub fn converged(&self) -> bool {
        self.ready_current == self.desired_replicas && self.others.is_empty()
    }
}

fn revision_of(pod_spec: &Json) -> Option<String> {
    pod_spec["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .find(|e| e["name"] == REVISION_ENV)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

fn is_ready(pod: &Json) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Names of the Nodes in a list whose `Ready` condition is `True`.
pub fn ready_nodes(nodes: &[Json]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every Node named in `names` is Ready, asking the members in turn.
pub async fn wait_nodes_ready(members: &[Member], names: &[String]) -> Result<(), ChaosError> {
    let deadline = Instant::now() + NODES_READY_TIMEOUT;
    let mut last = String::from("no member asked");
    for member in members.iter().cycle() {
        let list = ListRequest {
            kind: "Node".into(),
            ..Default::default()
        };
        let answer = match client::cluster_api(member.addr) {
            Ok(mut api) => client::with_deadline("list nodes", CALL_TIMEOUT, api.list(list)).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(page) => {
                let nodes: Vec<Json> = page
                    .items
                    .iter()
                    .filter_map(|i| serde_json::from_slice(i).ok())
                    .collect();
                let ready = ready_nodes(&nodes);
                if names.iter().all(|n| ready.contains(n)) {
                    return Ok(());
                }
                last = format!("ready nodes {ready:?}");
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
    Err(ChaosError::NotReady {
        what: format!("nodes {names:?} Ready"),
        waited_ms: NODES_READY_TIMEOUT.as_millis() as u64,
        last,
    })
}

/// Judges the Deployment object and the pods its selector lists.
pub fn assess(deployment: &Json, pods: &[Json]) -> Convergence {
    let revision = revision_of(&deployment["spec"]["template"]["spec"]).unwrap_or_default();
    let mut ready_current = 0;
    let mut others = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    {
        let pod_revision = revision_of(&pod["spec"]).unwrap_or_default();
        if pod_revision == revision && is_ready(pod) {
            ready_current += 1;
        } else {
            let phase = pod["status"]["phase"].as_str().unwrap_or("-");
            let name = pod["metadata"]["name"].as_str().unwrap_or("?");
            others.push(format!("{name} {phase} revision {pod_revision}"));
        }
    }
    Convergence {
        desired_replicas: deployment["spec"]["replicas"].as_u64().unwrap_or(1),
        revision,
        ready_current,
        others,
    }
}

async fn observe(member: &Member) -> Result<Convergence, ChaosError> {
    let mut api = client::cluster_api(member.addr)?;
    let get = GetRequest {
        r#ref: Some(ObjectRef {
            kind: "Deployment".into(),
            namespace: NAMESPACE.into(),
            name: DEPLOYMENT.into(),
        }),
        stale: false,
    };
    let deployment = client::with_deadline("get deployment", CALL_TIMEOUT, api.get(get)).await?;
    let list = ListRequest {
        kind: "Pod".into(),
        namespace: NAMESPACE.into(),
        label_selector: format!("app={APP}"),
        ..Default::default()
    };
    let pods = client::with_deadline("list pods", CALL_TIMEOUT, api.list(list)).await?;
    let json = |bytes: &[u8]| serde_json::from_slice::<Json>(bytes).unwrap_or(Json::Null);
    let pods: Vec<Json> = pods.items.iter().map(|i| json(i.as_slice())).collect();
    Ok(assess(&json(&deployment.object), &pods))
}

/// `workload-converged`: polls the members in turn until the Deployment has converged.
pub async fn converged_check(members: &[Member]) -> CheckResult {
    let name = "workload-converged";
    let started = Instant::now();
    let deadline = started + CONVERGE_TIMEOUT;
    let mut last = String::from("no member asked");
    let mut last_seen: Option<Convergence> = None;
    for member in members.iter().cycle() {
        match observe(member).await {
            Ok(seen) if seen.converged() => {
                let summary = format!(
                    "{} ready pods of revision {} after {} ms (bound {} s)",
                    seen.ready_current,
                    seen.revision,
                    started.elapsed().as_millis(),
                    CONVERGE_TIMEOUT.as_secs()
                );
                return CheckResult::new(name, Verdict::Valid, summary, &seen);
            }
            Ok(seen) => {
                last = format!(
                    "{}/{} ready of revision {}, others {:?}",
                    seen.ready_current, seen.desired_replicas, seen.revision, seen.others
                );
                last_seen = Some(seen);
            }
            Err(e) => last = format!("peer {}: {e}", member.host),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
    let summary = format!(
        "not converged within {} s: {last}",
        CONVERGE_TIMEOUT.as_secs()
    );
    CheckResult::new(name, Verdict::Invalid, summary, &last_seen)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn journal_lines_become_records_and_torn_lines_are_skipped() {
        let text = r#"{"pod_uid":"u1","container":"app","event":"started","at_ns":10}
{"pod_uid":"u1","container":"app","event":"stopped","at_ns":20}
{"pod_uid":"u2","container":"app","event":"paused","at_ns":30}
{"pod_uid":"u3","cont"#;
        let (records, skipped) = parse_journal(text, "flc-001-4");
        assert_eq!(skipped, 2);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].event, PodEvent::Stopped);
        assert_eq!(
            (records[1].at_ns, records[1].host.as_str()),
            (20, "flc-001-4")
        );
    }

    fn pod(name: &str, revision: &str, phase: &str, ready: bool, deleting: bool) -> Json {
        json!({
            "metadata": {"name": name, "deletionTimestamp": if deleting { json!("t") } else { Json::Null }},
            "spec": {"containers": [{"env": [{"name": REVISION_ENV, "value": revision}]}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    fn check(replicas: u64, pods: &[Json], converged: bool) {
        let deployment = json!({"spec": {"replicas": replicas, "template": {"spec":
            {"containers": [{"env": [{"name": REVISION_ENV, "value": "3"}]}]}}}});
        let seen = assess(&deployment, pods);
        assert_eq!(seen.converged(), converged, "{seen:?}");
    }

    #[test]
    fn only_nodes_with_a_true_ready_condition_are_ready() {
        let node = |name: &str, status: &str| {
            json!({"metadata": {"name": name},
                   "status": {"conditions": [{"type": "Ready", "status": status}]}})
        };
        let nodes = [
            node("a", "True"),
            node("b", "False"),
            node("c", "Unknown"),
            json!({"metadata": {"name": "d"}}),
        ];
        assert_eq!(ready_nodes(&nodes), ["a"]);
    }

    #[test]
    fn converged_means_exactly_the_desired_ready_pods_of_the_current_revision() {
        let ready = |n: &str| pod(n, "3", "Running", true, false);
        check(2, &[ready("a"), ready("b")], true);
        check(
            2,
            &[ready("a"), ready("b"), pod("c", "2", "Running", true, true)],
            true,
        );
        check(2, &[ready("a")], false);
        check(
            2,
            &[ready("a"), pod("b", "3", "Running", false, false)],
            false,
        );
        check(
            2,
            &[
                ready("a"),
                ready("b"),
                pod("c", "2", "Running", true, false),
            ],
            false,
        );
        check(
            1,
            &[ready("a"), pod("b", "3", "Pending", false, false)],
            false,
        );
    }
}
