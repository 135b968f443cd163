//! End-of-run invariants that need the live cluster: it serves writes again through every
//! member, every member converges to the same leader, applied index and revision within a
//! bound, and every member returns the same final state. Each yields a [`CheckResult`] for the
//! report; judging the recorded data is the checkers' job.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use flotilla_api::cluster::ApplyRequest;
use flotilla_api::kv::{PutRequest, RangeRequest, StatusResponse};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::checker::Verdict;
use crate::client;
use crate::error::ChaosError;
use crate::history::{OpKind, Outcome, Recorder};
use crate::workload::committed::Decode;
use crate::workload::configmap;
use crate::workload::prefix_end;
use crate::workload::register::key_name;

/// Every member must take a write within this long after the faults are healed.
pub const AVAILABILITY_BOUND: Duration = Duration::from_secs(30);

/// Every member must reach the same leader, applied index and revision within this long.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);

/// Deadline of one probe write or final read.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Final reads are recorded as processes from this id up (plus the host number), far above any
/// workload process.
pub const FINAL_READ_PROCESS_BASE: u64 = 1 << 40;

/// One invariant's verdict for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub verdict: Verdict,
    pub summary: String,
    pub details: serde_json::Value,
}

impl CheckResult {
    pub fn new(name: &str, verdict: Verdict, summary: String, details: impl Serialize) -> Self {
        CheckResult {
            name: name.to_string(),
            verdict,
            summary,
            details: serde_json::to_value(details).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A member as the checks address it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Member {
    pub host: u16,
    pub addr: SocketAddr,
}

async fn put(addr: SocketAddr, key: &str, value: &str) -> Result<i64, ChaosError> {
    let mut kv = client::kv(addr)?;
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    };
    let response = client::with_deadline("probe write", PROBE_TIMEOUT, kv.put(request)).await?;
    Ok(response.header.map_or(0, |h| h.revision))
}

#[derive(Debug, Clone, Serialize)]
struct ProbeResult {
    host: u16,
    /// Time from the start of the check to the first acknowledged write through this member.
    first_ok_ms: Option<u64>,
    last_error: Option<String>,
}

/// Writes `chaos/probe/<host>` through every member until each has taken one.
pub async fn check_serving_writes(members: &[Member], probe_prefix: &str) -> CheckResult {
    let started = Instant::now();
    let deadline = started + AVAILABILITY_BOUND;
    let mut results = Vec::new();
    for member in members {
        let mut result = ProbeResult {
            host: member.host,
            first_ok_ms: None,
            last_error: None,
        };
        let key = format!("{probe_prefix}{}", member.host);
        while result.first_ok_ms.is_none() && Instant::now() < deadline {
            match put(member.addr, &key, "probe").await {
                Ok(_) => result.first_ok_ms = Some(started.elapsed().as_millis() as u64),
                Err(e) => {
                    result.last_error = Some(e.to_string());
                    tokio::time::sleep(client::POLL_INTERVAL).await;
                }
            }
        }
        results.push(result);
    }
    let failed: Vec<u16> = results
        .iter()
        .filter(|r| r.first_ok_ms.is_none())
        .map(|r| r.host)
        .collect();
    let (verdict, summary) = if failed.is_empty() {
        let slowest = results
            .iter()
            .filter_map(|r| r.first_ok_ms)
            .max()
            .unwrap_or(0);
        (
            Verdict::Valid,
            format!("every member took a write within {slowest} ms"),
        )
    } else {
        let bound = AVAILABILITY_BOUND.as_secs();
        (
            Verdict::Invalid,
            format!("members {failed:?} took no write within {bound} s"),
        )
    };
    CheckResult::new("serving-writes", verdict, summary, results)
}

/// The parts of a member's status that must agree after convergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSummary {
    pub host: u16,
    pub leader_id: u64,
    pub applied_index: u64,
    pub revision: i64,
}

impl StatusSummary {
    fn from_response(host: u16, s: &StatusResponse) -> Self {
        StatusSummary {
            host,
            leader_id: s.leader_id,
            applied_index: s.raft_applied_index,
            revision: s.header.as_ref().map_or(0, |h| h.revision),
        }
    }
}

/// Why `statuses` are not converged, or `None` if they are: every member names the same leader,
/// which is one of them, and all have applied the same index and revision.
pub fn divergence(statuses: &[StatusSummary]) -> Option<String> {
    let first = statuses.first()?;
    if first.leader_id == 0
        || !statuses
            .iter()
            .any(|s| u64::from(s.host) == first.leader_id)
    {
        return Some(format!(
            "no leader among the members (peer {} names {})",
            first.host, first.leader_id
        ));
    }
    statuses.iter().find_map(|s| {
        let same = (s.leader_id, s.applied_index, s.revision)
            == (first.leader_id, first.applied_index, first.revision);
        (!same).then(|| {
            format!(
                "peer {} at {:?}, peer {} at {:?}",
                first.host, first, s.host, s
            )
        })
    })
}

/// Polls every member's status until they agree (see [`divergence`]) or the bound passes.
pub async fn check_convergence(members: &[Member]) -> CheckResult {
    let started = Instant::now();
    let mut last = String::from("no status yet");
    let mut statuses = Vec::new();
    while started.elapsed() < CONVERGENCE_BOUND {
        statuses.clear();
        for member in members {
            match client::status(member.addr).await {
                Ok(s) => statuses.push(StatusSummary::from_response(member.host, &s)),
                Err(e) => last = format!("peer {}: {e}", member.host),
            }
        }
        if statuses.len() == members.len() {
            match divergence(&statuses) {
                None => {
                    let ms = started.elapsed().as_millis();
                    let summary = format!(
                        "{} members agree (leader {}, applied index {}, revision {}) after {ms} ms",
                        statuses.len(),
                        statuses[0].leader_id,
                        statuses[0].applied_index,
                        statuses[0].revision
                    );
                    return CheckResult::new("convergence", Verdict::Valid, summary, &statuses);
                }
                Some(why) => last = why,
            }
        }
        tokio::time::sleep(client::POLL_INTERVAL).await;
    }
    let summary = format!(
        "not converged within {} s: {last}",
        CONVERGENCE_BOUND.as_secs()
    );
    CheckResult::new("convergence", Verdict::Invalid, summary, &statuses)
}

/// The end-of-run fence: a write under the replayed prefix after everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// A KV key.
    Key(&'a str),
    /// A ConfigMap, applied through the Cluster API together with its namespace, so that it lies
    /// outside the namespace the register watchers watch.
    ConfigMap { namespace: &'a str, name: &'a str },
}

/// Writes the fence through any member and returns its revision.
pub async fn write_fence(members: &[Member], fence: Fence<'_>) -> Result<i64, ChaosError> {
    let deadline = Instant::now() + AVAILABILITY_BOUND;
    let mut last = String::new();
    while Instant::now() < deadline {
        for member in members {
            let written = match fence {
                Fence::Key(key) => put(member.addr, key, "fence").await,
                Fence::ConfigMap { namespace, name } => {
                    apply_fence(member.addr, namespace, name).await
                }
            };
            match written {
                Ok(revision) => return Ok(revision),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(client::POLL_INTERVAL).await;
    }
    Err(ChaosError::NotReady {
        what: "the fence write".into(),
        waited_ms: AVAILABILITY_BOUND.as_millis() as u64,
        last,
    })
}

/// Applies namespace `namespace` and ConfigMap `name` in it with a new value; returns the
/// ConfigMap's resourceVersion.
async fn apply_fence(addr: SocketAddr, namespace: &str, name: &str) -> Result<i64, ChaosError> {
    let mut api = client::cluster_api(addr)?;
    let what = "fence apply";
    let ns = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
    });
    let value = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string();
    let mut revision = None;
    for manifest in [
        ns.to_string().into_bytes(),
        configmap::manifest(namespace, name, &value),
    ] {
        let request = ApplyRequest {
            manifests: manifest,
            default_namespace: namespace.into(),
            dry_run: false,
        };
        let response = client::with_deadline(what, PROBE_TIMEOUT, api.apply(request)).await?;
        revision = response
            .results
            .iter()
            .filter(|r| r.kind == "ConfigMap")
            .filter_map(|r| serde_json::from_slice(&r.object).ok())
            .find_map(|object| configmap::resource_version(&object));
    }
    revision.ok_or_else(|| ChaosError::Rpc {
        context: what.into(),
        message: "the applied ConfigMap has no resourceVersion".into(),
    })
}

/// Register key → (value, mod revision) as one member returned it.
type FinalState = BTreeMap<String, (u64, i64)>;

async fn range(
    addr: SocketAddr,
    prefix: &str,
    serializable: bool,
    decode: Decode<'_>,
) -> Result<FinalState, ChaosError> {
    let mut kv = client::kv(addr)?;
    let request = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        serializable,
        ..Default::default()
    };
    let response = client::with_deadline("final read", PROBE_TIMEOUT, kv.range(request)).await?;
    Ok(response
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                (decode(&kv.value), kv.mod_revision),
            )
        })
        .collect())
}

/// Reads every register through every member: a linearizable read (recorded as one read op
/// per key, for the linearizability checker) and a serializable one; all serializable reads
/// must be identical. Both go through the KV API (every workload's registers are keys of the
/// store), `decode` reading the stored values.
pub async fn final_reads<W: Write + Send>(
    members: &[Member],
    prefix: &str,
    keys: u32,
    recorder: &Recorder<W>,
    decode: Decode<'_>,
) -> Result<CheckResult, ChaosError> {
    let mut states: Vec<(u16, Result<FinalState, String>)> = Vec::new();
    for member in members {
        let process = FINAL_READ_PROCESS_BASE + u64::from(member.host);
        let names: Vec<String> = (0..keys).map(|k| key_name(prefix, k)).collect();
        let ids = names
            .iter()
            .map(|key| recorder.invoke(process, key, OpKind::Read))
            .collect::<Result<Vec<_>, _>>()?;
        let linearizable = range(member.addr, prefix, false, decode).await;
        for (id, key) in ids.into_iter().zip(&names) {
            let outcome = match &linearizable {
                Ok(state) => Outcome::Ok {
                    read: state.get(key).map(|(v, _)| *v),
                },
                Err(_) => Outcome::Info,
            };
            recorder.complete(id, outcome)?;
        }
        let serializable = range(member.addr, prefix, true, decode)
            .await
            .map_err(|e| e.to_string());
        states.push((member.host, serializable));
    }
    Ok(judge_final_states(&states))
}

fn judge_final_states(states: &[(u16, Result<FinalState, String>)]) -> CheckResult {
    let failures: Vec<String> = states
        .iter()
        .filter_map(|(h, s)| s.as_ref().err().map(|e| format!("peer {h}: {e}")))
        .collect();
    let readable: Vec<(u16, &FinalState)> = states
        .iter()
        .filter_map(|(h, s)| s.as_ref().ok().map(|s| (*h, s)))
        .collect();
    let disagreement = readable.first().and_then(|(h0, s0)| {
        readable
            .iter()
            .find(|(_, s)| s != s0)
            .map(|(h, s)| format!("peer {h0} holds {s0:?}, peer {h} holds {s:?}"))
    });
    let details: BTreeMap<u16, &FinalState> = readable.iter().copied().collect();
    let (verdict, summary) = match (failures.first(), disagreement) {
        (Some(failure), _) => (
            Verdict::Invalid,
            format!("final state unreadable: {failure}"),
        ),
        (None, Some(disagreement)) => (Verdict::Invalid, disagreement),
        (None, None) => (
            Verdict::Valid,
            format!(
                "{} members return the same {} registers",
                readable.len(),
                readable.first().map_or(0, |(_, s)| s.len())
            ),
        ),
    };
    CheckResult::new("final-state", verdict, summary, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(host: u16, leader_id: u64, applied_index: u64, revision: i64) -> StatusSummary {
        StatusSummary {
            host,
            leader_id,
            applied_index,
            revision,
        }
    }

    #[test]
    fn convergence_needs_one_leader_index_and_revision() {
        let check = |statuses: &[StatusSummary], converged: bool| {
            assert_eq!(divergence(statuses).is_none(), converged, "{statuses:?}");
        };
        check(
            &[
                status(1, 2, 40, 30),
                status(2, 2, 40, 30),
                status(3, 2, 40, 30),
            ],
            true,
        );
        check(&[status(1, 2, 40, 30), status(2, 2, 39, 30)], false);
        check(&[status(1, 2, 40, 30), status(2, 2, 40, 29)], false);
        check(&[status(1, 2, 40, 30), status(2, 3, 40, 30)], false);
        check(&[status(1, 0, 40, 30), status(2, 0, 40, 30)], false);
        // A leader that is no longer a member does not count.
        check(&[status(1, 7, 40, 30), status(2, 7, 40, 30)], false);
    }

    #[test]
    fn final_states_must_match_and_be_readable() {
        let state =
            |v: u64| -> FinalState { [("r/000".to_string(), (v, 9))].into_iter().collect() };
        let verdict =
            |states: Vec<(u16, Result<FinalState, String>)>| judge_final_states(&states).verdict;
        assert_eq!(
            verdict(vec![(1, Ok(state(5))), (2, Ok(state(5)))]),
            Verdict::Valid
        );
        assert_eq!(
            verdict(vec![(1, Ok(state(5))), (2, Ok(state(6)))]),
            Verdict::Invalid
        );
        assert_eq!(
            verdict(vec![(1, Ok(state(5))), (2, Err("timeout".into()))]),
            Verdict::Invalid
        );
    }
}
