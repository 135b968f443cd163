//! Double-run checker: one pod identity (uid) never ran on two hosts at once.
//!
//! Owns the input shapes (the agents' own start/stop records and the harness's "host was killed"
//! records) and the reconstruction of run intervals from them. Times are nanoseconds on one clock
//! shared by all hosts, which holds for hosts that are network namespaces of one machine.
//!
//! A run starts at a `Started` record and ends at the pod's next `Stopped` record on that host. A
//! killed host cannot log its pods' deaths, so a run open when its host is killed is taken to end
//! at `kill + killed_host_grace_ns`, or at its own `Stopped` record if that comes first. A run
//! that never ends is open until the end of the observation. Two runs of one uid on different
//! hosts overlap when they share a time span of positive length; runs that merely touch (one stops
//! at the instant the other starts) do not. At one instant a host's records are applied in the
//! order stop, start, kill.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checker::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodEvent {
    Started,
    Stopped,
}

/// One line of an agent's start/stop log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub pod_uid: String,
    pub host: String,
    pub event: PodEvent,
    pub at_ns: u64,
}

/// The harness killed `host` (all its processes and containers) at `at_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKill {
    pub host: String,
    pub at_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlapConfig {
    /// How long after its host was killed a pod may still be running (and so must be assumed to
    /// be), e.g. the time the kill takes to reach every process of the host.
    pub killed_host_grace_ns: u64,
}

/// One pod uid running on two hosts during `from_ns..until_ns` (`None`: until the end of the run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlap {
    pub pod_uid: String,
    pub first_host: String,
    pub second_host: String,
    pub from_ns: u64,
    pub until_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlapReport {
    pub verdict: Verdict,
    pub pods_checked: usize,
    pub runs_checked: usize,
    /// `Stopped` records with no open run of that pod on that host (ignored otherwise).
    pub unmatched_stops: usize,
    /// Every overlap, by pod uid and then start time.
    pub overlaps: Vec<Overlap>,
}

/// Reports every span during which one pod uid ran on two hosts.
pub fn check_no_overlap(
    records: &[PodRecord],
    kills: &[HostKill],
    config: &OverlapConfig,
) -> OverlapReport {
    let (runs, unmatched_stops) = reconstruct_runs(records, kills, config);
    let runs_checked = runs.len();
    let mut by_pod: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for run in runs {
        by_pod.entry(run.pod_uid).or_default().push(run);
    }
    let pods_checked = by_pod.len();
    let overlaps: Vec<Overlap> = by_pod
        .into_iter()
        .flat_map(|(pod_uid, runs)| overlaps_of_pod(pod_uid, runs))
        .collect();
    let verdict = if overlaps.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    OverlapReport {
        verdict,
        pods_checked,
        runs_checked,
        unmatched_stops,
        overlaps,
    }
}

/// One interval during which a pod ran on a host.
struct Run<'a> {
    pod_uid: &'a str,
    host: &'a str,
    start_ns: u64,
    /// `None`: still running when observation ended.
    end_ns: Option<u64>,
}

/// A run not yet ended while replaying a host's records.
struct OpenRun {
    start_ns: u64,
    killed_at_ns: Option<u64>,
}

/// A host's records in replay order: (time, rank within an instant, what happened).
enum HostEvent<'a> {
    Pod(&'a PodRecord),
    Kill,
}

fn reconstruct_runs<'a>(
    records: &'a [PodRecord],
    kills: &'a [HostKill],
    config: &OverlapConfig,
) -> (Vec<Run<'a>>, usize) {
    let mut timelines: BTreeMap<&str, Vec<(u64, u8, HostEvent)>> = BTreeMap::new();
    for record in records {
        let rank = match record.event {
            PodEvent::Stopped => 0,
            PodEvent::Started => 1,
        };
        let entry = (record.at_ns, rank, HostEvent::Pod(record));
        timelines.entry(&record.host).or_default().push(entry);
    }
    for kill in kills {
        let entry = (kill.at_ns, 2, HostEvent::Kill);
        timelines.entry(&kill.host).or_default().push(entry);
    }
    let mut runs = Vec::new();
    let mut unmatched_stops = 0;
    for (host, mut timeline) in timelines {
        timeline.sort_by_key(|&(at_ns, rank, _)| (at_ns, rank));
        unmatched_stops += replay_host(host, &timeline, config, &mut runs);
    }
    (runs, unmatched_stops)
}

/// Turns one host's ordered records into runs; returns the number of unmatched stops.
fn replay_host<'a>(
    host: &'a str,
    timeline: &[(u64, u8, HostEvent<'a>)],
    config: &OverlapConfig,
    runs: &mut Vec<Run<'a>>,
) -> usize {
    let grace_ns = config.killed_host_grace_ns;
    let killed_end = |killed_at_ns: u64| killed_at_ns.saturating_add(grace_ns);
    let mut open: HashMap<&str, OpenRun> = HashMap::new();
    let mut unmatched_stops = 0;
    let mut close = |pod_uid: &'a str, run: OpenRun, end_ns: Option<u64>| {
        let start_ns = run.start_ns;
        runs.push(Run {
            pod_uid,
            host,
            start_ns,
            end_ns,
        });
    };
    for (at_ns, _, event) in timeline {
        let record = match event {
            HostEvent::Kill => {
                for run in open.values_mut() {
                    run.killed_at_ns.get_or_insert(*at_ns);
                }
                continue;
            }
            HostEvent::Pod(record) => record,
        };
        let uid = record.pod_uid.as_str();
        match (record.event, open.remove(uid)) {
            (PodEvent::Stopped, None) => unmatched_stops += 1,
            (PodEvent::Stopped, Some(run)) => {
                let end_ns = run
                    .killed_at_ns
                    .map_or(*at_ns, |k| killed_end(k).min(*at_ns));
                close(uid, run, Some(end_ns));
            }
            // A second start of a run that is still open changes nothing: keep the earlier one.
            (PodEvent::Started, Some(run)) if run.killed_at_ns.is_none() => {
                open.insert(uid, run);
            }
            (PodEvent::Started, previous) => {
                if let Some(run) = previous {
                    let end_ns = run.killed_at_ns.map(killed_end);
                    close(uid, run, end_ns);
                }
                let run = OpenRun {
                    start_ns: *at_ns,
                    killed_at_ns: None,
                };
                open.insert(uid, run);
            }
        }
    }
    for (uid, run) in open {
        let end_ns = run.killed_at_ns.map(killed_end);
        close(uid, run, end_ns);
    }
    unmatched_stops
}

/// Every overlapping pair of one pod's runs on different hosts.
fn overlaps_of_pod(pod_uid: &str, mut runs: Vec<Run>) -> Vec<Overlap> {
    runs.sort_by(|a, b| (a.start_ns, a.host).cmp(&(b.start_ns, b.host)));
    let mut overlaps = Vec::new();
    for (i, first) in runs.iter().enumerate() {
        for second in &runs[i + 1..] {
            // Runs are sorted by start, so once one starts after `first` ends, all later do too.
            if first.end_ns.is_some_and(|end_ns| second.start_ns >= end_ns) {
                break;
            }
            if first.host == second.host {
                continue;
            }
            let until_ns = match (first.end_ns, second.end_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (end, None) | (None, end) => end,
            };
            if until_ns.is_some_and(|until_ns| until_ns <= second.start_ns) {
                continue;
            }
            overlaps.push(Overlap {
                pod_uid: pod_uid.to_owned(),
                first_host: first.host.to_owned(),
                second_host: second.host.to_owned(),
                from_ns: second.start_ns,
                until_ns,
            });
        }
    }
    overlaps
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pod {} ran on {} and {} from {} ns ",
            self.pod_uid, self.first_host, self.second_host, self.from_ns
        )?;
        match self.until_ns {
            Some(until_ns) => write!(f, "to {until_ns} ns"),
            None => write!(f, "to the end of the run"),
        }
    }
}

impl fmt::Display for OverlapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no double run: {} ({} pods, {} runs, {} overlaps)",
            self.verdict,
            self.pods_checked,
            self.runs_checked,
            self.overlaps.len()
        )?;
        match self.overlaps.first() {
            Some(first) => write!(f, "; {first}"),
            None => Ok(()),
        }
    }
}
