//! The committed history, read back at the end of a run, and what it proves on its own.
//!
//! After the cluster has converged the run writes a *fence* key and then, on every member,
//! replays a watch from revision 1 over the harness's whole prefix until the fence arrives. The
//! store serves that replay from its per-revision history, i.e. from the log as that peer applied
//! it; so each replay is the committed history as one peer knows it. Choice documented in the
//! README: the watch checker judges watchers against the first member's replay, and
//! [`compare_replays`] requires every member's replay to be identical.
//!
//! [`check_acknowledged`] then needs no search: every acknowledged write or compare-and-set
//! value appears exactly once in the committed history under its key, no failed compare-and-set
//! value appears at all, and no value appears that nobody wrote.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use flotilla_api::kv::event::EventType;
use flotilla_api::kv::WatchRequest;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::checker::watch::{CommittedHistory, EventKind};
use crate::checker::Verdict;
use crate::client;
use crate::error::ChaosError;
use crate::history::{History, Op, OpKind, Outcome, Value};
use crate::workload::prefix_end;

/// Events one replay may hold.
pub const MAX_REPLAY_EVENTS: usize = 5_000_000;

/// Problems listed per check; the rest are counted.
pub const MAX_PROBLEMS_LISTED: usize = 20;

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEntry {
    pub revision: i64,
    pub key: String,
    pub kind: EventKind,
    pub value: Vec<u8>,
}

/// Replays the history of `prefix` on the peer at `addr` from revision 1 through
/// `fence_revision` (which must hold a change under `prefix`).
pub async fn replay(
    addr: SocketAddr,
    prefix: &str,
    fence_revision: i64,
    timeout: Duration,
) -> Result<Vec<CommittedEntry>, ChaosError> {
    let deadline = Instant::now() + timeout;
    let what = format!("history replay from {addr}");
    let mut watch = client::watch(addr)?;
    let request = WatchRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        start_revision: 1,
        prev_kv: false,
    };
    let mut stream = client::with_deadline(&what, timeout, watch.watch(request)).await?;
    let mut entries = Vec::new();
    while entries
        .last()
        .is_none_or(|e: &CommittedEntry| e.revision < fence_revision)
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, stream.message()).await;
        let response = match message {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err(not_reached(&what, timeout, "the stream ended")),
            Ok(Err(status)) => return Err(ChaosError::rpc(&what, &status)),
            Err(_) => return Err(not_reached(&what, timeout, "no more events")),
        };
        if response.canceled {
            return Err(not_reached(&what, timeout, &response.cancel_reason));
        }
        entries.extend(response.events.iter().filter_map(entry));
        if entries.len() > MAX_REPLAY_EVENTS {
            return Err(ChaosError::Config(format!(
                "{what}: more than {MAX_REPLAY_EVENTS} events"
            )));
        }
    }
    Ok(entries)
}

fn not_reached(what: &str, timeout: Duration, last: &str) -> ChaosError {
    ChaosError::NotReady {
        what: format!("{what} up to the fence"),
        waited_ms: timeout.as_millis() as u64,
        last: last.to_string(),
    }
}

fn entry(event: &flotilla_api::kv::Event) -> Option<CommittedEntry> {
    let kv = event.kv.as_ref()?;
    let kind = if event.r#type == EventType::Delete as i32 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Some(CommittedEntry {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        kind,
        value: kv.value.clone(),
    })
}

/// The watch checker's view of a replay.
pub fn committed_history(entries: &[CommittedEntry]) -> CommittedHistory {
    let mut history = CommittedHistory::new();
    for e in entries {
        history.record(e.revision.max(0) as u64, &e.key, e.kind);
    }
    history
}

/// The first difference between members' replays, if any: `None` when all are identical.
pub fn compare_replays(replays: &[(u16, Vec<CommittedEntry>)]) -> Option<String> {
    let (first_host, first) = replays.first()?;
    for (host, replay) in &replays[1..] {
        if let Some(i) = (0..first.len().max(replay.len())).find(|&i| first.get(i) != replay.get(i))
        {
            return Some(format!(
                "entry {i}: peer {first_host} has {:?}, peer {host} has {:?}",
                first.get(i),
                replay.get(i)
            ));
        }
    }
    None
}

/// What the committed history says about acknowledged and failed writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgedReport {
    pub verdict: Verdict,
    pub acknowledged_writes: usize,
    pub committed_register_writes: usize,
    pub problems_total: usize,
    pub problems: Vec<String>,
}

/// How a stored register value decodes (it depends on the workload's API).
pub type Decode<'a> = &'a dyn Fn(&[u8]) -> Value;

/// Checks the register ops of `history` (keys under `prefix`) against the committed entries,
/// whose values `decode` reads.
pub fn check_acknowledged(
    history: &History,
    entries: &[CommittedEntry],
    prefix: &str,
    decode: Decode<'_>,
) -> AcknowledgedReport {
    let committed = committed_writes(entries, prefix, decode);
    let mut problems: Vec<String> = history
        .ops()
        .iter()
        .filter_map(|op| op_problem(op, &committed))
        .collect();
    problems.extend(phantom_problems(history, &committed));
    let acknowledged = history
        .ops()
        .iter()
        .filter(|op| written_value(op.kind).is_some() && matches!(op.outcome, Outcome::Ok { .. }))
        .count();
    let problems_total = problems.len();
    problems.truncate(MAX_PROBLEMS_LISTED);
    AcknowledgedReport {
        verdict: if problems_total == 0 {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        acknowledged_writes: acknowledged,
        committed_register_writes: committed.values().map(Vec::len).sum(),
        problems_total,
        problems,
    }
}

/// (key, value) → the revisions that put it, for puts under `prefix`.
type CommittedWrites<'a> = HashMap<(&'a str, Value), Vec<i64>>;

fn committed_writes<'a>(
    entries: &'a [CommittedEntry],
    prefix: &str,
    decode: Decode<'_>,
) -> CommittedWrites<'a> {
    let mut committed: CommittedWrites<'a> = HashMap::new();
    let puts = entries
        .iter()
        .filter(|e| e.key.starts_with(prefix) && e.kind == EventKind::Put);
    for e in puts {
        let value = decode(&e.value);
        committed
            .entry((e.key.as_str(), value))
            .or_default()
            .push(e.revision);
    }
    committed
}

/// What is wrong with one op's write, given where its value was committed.
fn op_problem(op: &Op, committed: &CommittedWrites<'_>) -> Option<String> {
    let value = written_value(op.kind)?;
    let revisions = committed
        .get(&(op.key.as_str(), value))
        .map_or(&[][..], Vec::as_slice);
    let (kind, key, id) = (op.kind, &op.key, op.id);
    match (op.outcome, revisions) {
        (Outcome::Ok { .. }, []) => Some(format!(
            "acknowledged {kind} on {key} is not in the committed history (op {id})"
        )),
        (Outcome::Fail, [first, ..]) => Some(format!(
            "failed {kind} on {key} was committed at revision {first} (op {id})"
        )),
        (_, [_, _, ..]) => Some(format!(
            "{kind} on {key} was applied {} times, at revisions {revisions:?} (op {id})",
            revisions.len()
        )),
        _ => None,
    }
}

/// Committed values no op of the workload wrote, in revision order.
fn phantom_problems(history: &History, committed: &CommittedWrites<'_>) -> Vec<String> {
    let written: HashSet<(&str, Value)> = history
        .ops()
        .iter()
        .filter_map(|op| written_value(op.kind).map(|v| (op.key.as_str(), v)))
        .collect();
    let mut phantoms: Vec<(i64, String)> = committed
        .iter()
        .filter(|(write, _)| !written.contains(*write))
        .map(|((key, value), revisions)| {
            let at = revisions[0];
            (
                at,
                format!(
                    "value {value} on {key} at revision {at} was never written by the workload"
                ),
            )
        })
        .collect();
    phantoms.sort();
    phantoms.into_iter().map(|(_, problem)| problem).collect()
}

fn written_value(kind: OpKind) -> Option<Value> {
    match kind {
        OpKind::Write(value) | OpKind::Cas { new: value, .. } => Some(value),
        OpKind::Read => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str, value: Value) -> CommittedEntry {
        CommittedEntry {
            revision,
            key: key.into(),
            kind: EventKind::Put,
            value: value.to_string().into_bytes(),
        }
    }

    fn op(id: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op {
            id,
            process: id,
            key: "r/1".into(),
            kind,
            invoke_ns: 10 * id,
            complete_ns: Some(10 * id + 5),
            outcome,
        }
    }

    fn check(ops: Vec<Op>, entries: &[CommittedEntry], expected_problems: &[&str]) {
        let history = History::from_ops(ops).unwrap();
        let report =
            check_acknowledged(&history, entries, "r/", &crate::workload::kv::decode_value);
        assert_eq!(
            report.problems.len(),
            expected_problems.len(),
            "{:?}",
            report.problems
        );
        for (problem, expected) in report.problems.iter().zip(expected_problems) {
            assert!(
                problem.contains(expected),
                "{problem} should mention {expected}"
            );
        }
        let expected_verdict = if expected_problems.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        assert_eq!(report.verdict, expected_verdict);
    }

    const OK: Outcome = Outcome::Ok { read: None };

    #[test]
    fn acknowledged_writes_must_be_committed_once() {
        let cas = OpKind::Cas { expect: 1, new: 2 };
        check(
            vec![op(1, OpKind::Write(1), OK), op(2, cas, OK)],
            &[put(5, "r/1", 1), put(6, "r/1", 2)],
            &[],
        );
        check(
            vec![op(1, OpKind::Write(1), OK)],
            &[],
            &["not in the committed history"],
        );
        check(
            vec![op(1, OpKind::Write(1), OK)],
            &[put(5, "r/1", 1), put(7, "r/1", 1)],
            &["applied 2 times"],
        );
        // An indeterminate write may or may not be there.
        check(
            vec![op(1, OpKind::Write(1), Outcome::Info)],
            &[put(5, "r/1", 1)],
            &[],
        );
        check(vec![op(1, OpKind::Write(1), Outcome::Info)], &[], &[]);
    }

    #[test]
    fn failed_and_phantom_writes_are_flagged() {
        let cas = OpKind::Cas { expect: 1, new: 2 };
        check(
            vec![op(1, OpKind::Write(1), OK), op(2, cas, Outcome::Fail)],
            &[put(5, "r/1", 1), put(6, "r/1", 2)],
            &["failed cas 1->2"],
        );
        check(vec![], &[put(5, "r/1", 77)], &["never written"]);
        // Keys outside the prefix (probes, the fence) are not register writes.
        check(vec![], &[put(5, "p/1", 77)], &[]);
    }

    #[test]
    fn replays_must_agree() {
        let a = vec![put(1, "r/1", 1), put(2, "r/1", 2)];
        let b = vec![put(1, "r/1", 1)];
        assert_eq!(compare_replays(&[(1, a.clone()), (2, a.clone())]), None);
        let difference = compare_replays(&[(1, a.clone()), (3, b)]).unwrap();
        assert!(difference.starts_with("entry 1: peer 1"), "{difference}");
        let history = committed_history(&a);
        assert_eq!(history.revisions().len(), 2);
    }
}
