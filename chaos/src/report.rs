//! Run reports: the `report.json` every run writes (scenario, seed, faults with their times,
//! throughput, latency, each check's verdict and details), its short human summary, and the
//! matrix table that sums many runs up.
//!
//! Pure: built from data the run collected; writing the file is the run driver's job.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checker::Verdict;
use crate::clean::CleanReport;
use crate::cluster::PeerExit;
use crate::fault::PlannedFault;
use crate::history::{History, Op, OpKind, Outcome};
use crate::nemesis::FaultRecord;
use crate::verify::{CheckResult, FINAL_READ_PROCESS_BASE};
use crate::workload::churn::{ChurnKind, ChurnOp, ChurnOutcome};
use crate::workload::watcher::WatcherOutcome;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// The register workload's API (`kv` or `configmap`).
    #[serde(default)]
    pub api: String,
    pub peers: u16,
    /// Node agents (0: a run without pods).
    #[serde(default)]
    pub agents: u16,
    pub duration_ms: u64,
    /// The run's slot id (names start `flc-<run_id>-`).
    pub run_id: String,
    pub subnet: String,
    pub run_dir: String,
    pub verdict: Verdict,
    pub schedule: Vec<PlannedFault>,
    pub faults: Vec<FaultRecord>,
    pub workload: WorkloadSummary,
    /// The deployment churn's ops, in runs with agents.
    #[serde(default)]
    pub churn: Option<ChurnSummary>,
    pub watchers: Vec<WatcherSummary>,
    pub checks: Vec<CheckResult>,
    pub peer_exits: Vec<PeerExit>,
    /// What the final "heal everything" had to do.
    pub heal_notes: Vec<String>,
    pub cleanup: CleanReport,
}

/// Ops of one kind by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok { .. } => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info => self.info += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// Latency of completed (`Ok` and `Fail`) ops, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub ops: Counts,
    pub by_kind: BTreeMap<String, Counts>,
    /// Ops that got an answer (`Ok` or `Fail`) per second of workload.
    pub ops_per_s: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherSummary {
    pub name: String,
    pub events: usize,
    pub resumes: u32,
    pub caught_up: bool,
    pub events_dropped: u64,
    pub cancel_reasons: Vec<String>,
    /// Streams that ended on a compacted ("too old") revision.
    #[serde(default)]
    pub too_old: u32,
}

impl From<&WatcherOutcome> for WatcherSummary {
    fn from(w: &WatcherOutcome) -> Self {
        WatcherSummary {
            name: w.log.name.clone(),
            events: w.log.events.len(),
            resumes: w.resumes,
            caught_up: w.caught_up,
            events_dropped: w.events_dropped,
            cancel_reasons: w.cancel_reasons.clone(),
            too_old: w.too_old,
        }
    }
}

/// The deployment churn's ops by kind and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnSummary {
    pub ops: Counts,
    pub by_kind: BTreeMap<String, Counts>,
}

/// Counts of the churn's ops (`churn.jsonl` has each op).
pub fn summarise_churn(ops: &[ChurnOp]) -> ChurnSummary {
    let mut summary = ChurnSummary::default();
    for op in ops {
        let kind = match op.kind {
            ChurnKind::Create { .. } => "create",
            ChurnKind::Scale { .. } => "scale",
            ChurnKind::Roll { .. } => "roll",
        };
        for counts in [
            &mut summary.ops,
            summary.by_kind.entry(kind.into()).or_default(),
        ] {
            match op.outcome {
                ChurnOutcome::Ok => counts.ok += 1,
                ChurnOutcome::Fail => counts.fail += 1,
                ChurnOutcome::Info => counts.info += 1,
            }
        }
    }
    summary
}

fn is_workload_op(op: &Op) -> bool {
    op.process < FINAL_READ_PROCESS_BASE
}

/// Counts, throughput and latency of the workload's ops (final reads excluded).
pub fn summarise_workload(history: &History, workload_ms: u64) -> WorkloadSummary {
    let mut summary = WorkloadSummary::default();
    let mut latencies_ns: Vec<u64> = Vec::new();
    for op in history.ops().iter().filter(|op| is_workload_op(op)) {
        summary.ops.add(op.outcome);
        let kind = match op.kind {
            OpKind::Read => "read",
            OpKind::Write(_) => "write",
            OpKind::Cas { .. } => "cas",
        };
        summary
            .by_kind
            .entry(kind.to_string())
            .or_default()
            .add(op.outcome);
        if op.outcome != Outcome::Info {
            if let Some(complete_ns) = op.complete_ns {
                latencies_ns.push(complete_ns - op.invoke_ns);
            }
        }
    }
    latencies_ns.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    summary.latency = Latency {
        p50_ms: ms(percentile(&latencies_ns, 50)),
        p99_ms: ms(percentile(&latencies_ns, 99)),
        max_ms: ms(latencies_ns.last().copied().unwrap_or(0)),
    };
    let answered = summary.ops.ok + summary.ops.fail;
    summary.ops_per_s = if workload_ms == 0 {
        0.0
    } else {
        answered as f64 * 1000.0 / workload_ms as f64
    };
    summary
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[u64], pct: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (u64::from(pct) * sorted.len() as u64).div_ceil(100).max(1);
    sorted[(rank as usize - 1).min(sorted.len() - 1)]
}

/// Invalid if any check is, else unknown if any is, else valid.
pub fn overall_verdict(checks: &[CheckResult]) -> Verdict {
    if checks.iter().any(|c| c.verdict == Verdict::Invalid) {
        Verdict::Invalid
    } else if checks.is_empty() || checks.iter().any(|c| c.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Valid
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.workload;
        writeln!(
            f,
            "scenario {} seed {} ({} workload, {} peers{}, {:.1} s, run {} on {}): {}",
            self.scenario,
            self.seed,
            self.api,
            self.peers,
            match self.agents {
                0 => String::new(),
                n => format!(", {n} agents"),
            },
            self.duration_ms as f64 / 1000.0,
            self.run_id,
            self.subnet,
            self.verdict
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|r| {
                let errors = if r.errors.is_empty() {
                    String::new()
                } else {
                    format!(" [{} errors]", r.errors.len())
                };
                format!(
                    "{} {:?} {:.1}-{:.1}s{errors}",
                    r.name,
                    r.hosts,
                    r.started_ms as f64 / 1000.0,
                    r.healed_ms as f64 / 1000.0
                )
            })
            .collect();
        writeln!(f, "  faults ({}): {}", faults.len(), faults.join(", "))?;
        writeln!(
            f,
            "  workload: {} ops (ok {}, fail {}, info {}), {:.0} ops/s, p50 {:.1} ms, p99 {:.1} ms",
            w.ops.total(),
            w.ops.ok,
            w.ops.fail,
            w.ops.info,
            w.ops_per_s,
            w.latency.p50_ms,
            w.latency.p99_ms
        )?;
        if let Some(churn) = &self.churn {
            let kinds: Vec<String> = churn
                .by_kind
                .iter()
                .map(|(kind, c)| format!("{kind} {}/{}", c.ok, c.total()))
                .collect();
            writeln!(
                f,
                "  churn: {} ops (ok {}, fail {}, info {}): {}",
                churn.ops.total(),
                churn.ops.ok,
                churn.ops.fail,
                churn.ops.info,
                kinds.join(", ")
            )?;
        }
        for check in &self.checks {
            writeln!(
                f,
                "  {:<18} {:<8} {}",
                check.name,
                check.verdict.to_string(),
                check.summary
            )?;
        }
        for exit in &self.peer_exits {
            let kind = if exit.expected {
                "expected"
            } else {
                "UNEXPECTED"
            };
            writeln!(
                f,
                "  peer {} exited at {:.1}s ({}): {kind}",
                exit.host,
                exit.at_ms as f64 / 1000.0,
                exit.status
            )?;
        }
        if !self.cleanup.errors.is_empty() {
            writeln!(f, "  clean-up errors: {:?}", self.cleanup.errors)?;
        }
        write!(f, "  report: {}/report.json", self.run_dir)
    }
}

/// One cell of the matrix: a run's result, or the error that stopped it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixEntry {
    pub scenario: String,
    pub seed: u64,
    pub verdict: Option<Verdict>,
    pub error: Option<String>,
    pub ops_per_s: f64,
    pub p99_ms: f64,
    /// Checks that were not valid.
    pub failed_checks: Vec<String>,
}

impl MatrixEntry {
    pub fn from_report(report: &Report) -> Self {
        MatrixEntry {
            scenario: report.scenario.clone(),
            seed: report.seed,
            verdict: Some(report.verdict),
            error: None,
            ops_per_s: report.workload.ops_per_s,
            p99_ms: report.workload.latency.p99_ms,
            failed_checks: report
                .checks
                .iter()
                .filter(|c| c.verdict != Verdict::Valid)
                .map(|c| c.name.clone())
                .collect(),
        }
    }
}

/// The matrix as a table: one row per scenario, in first-seen order.
pub fn matrix_table(entries: &[MatrixEntry]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut rows: BTreeMap<&str, Vec<&MatrixEntry>> = BTreeMap::new();
    for e in entries {
        if !rows.contains_key(e.scenario.as_str()) {
            order.push(&e.scenario);
        }
        rows.entry(&e.scenario).or_default().push(e);
    }
    let mut out = format!(
        "{:<20} {:>4} {:>5} {:>7} {:>7} {:>5} {:>7} {:>8}  {}\n",
        "scenario",
        "runs",
        "valid",
        "invalid",
        "unknown",
        "error",
        "ops/s",
        "p99 ms",
        "not valid (seed: checks)"
    );
    for scenario in order {
        out.push_str(&matrix_row(scenario, &rows[scenario]));
    }
    out
}

fn matrix_row(scenario: &str, runs: &[&MatrixEntry]) -> String {
    let count = |v: Verdict| runs.iter().filter(|e| e.verdict == Some(v)).count();
    let errors = runs.iter().filter(|e| e.error.is_some()).count();
    let finished: Vec<&&MatrixEntry> = runs.iter().filter(|e| e.verdict.is_some()).collect();
    let mean_ops = finished.iter().map(|e| e.ops_per_s).sum::<f64>() / finished.len().max(1) as f64;
    let worst_p99 = finished.iter().map(|e| e.p99_ms).fold(0.0, f64::max);
    let bad: Vec<String> = runs
        .iter()
        .filter(|e| e.verdict != Some(Verdict::Valid))
        .map(|e| match &e.error {
            Some(error) => format!(
                "{}: error {}",
                e.seed,
                error.chars().take(60).collect::<String>()
            ),
            None => format!("{}: {}", e.seed, e.failed_checks.join("+")),
        })
        .collect();
    format!(
        "{:<20} {:>4} {:>5} {:>7} {:>7} {:>5} {:>7.0} {:>8.1}  {}\n",
        scenario,
        runs.len(),
        count(Verdict::Valid),
        count(Verdict::Invalid),
        count(Verdict::Unknown),
        errors,
        mean_ops,
        worst_p99,
        bad.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Fault, Target};

    fn op(
        id: u64,
        process: u64,
        kind: OpKind,
        invoke_ns: u64,
        complete_ns: u64,
        outcome: Outcome,
    ) -> Op {
        Op {
            id,
            process,
            key: "k".into(),
            kind,
            invoke_ns,
            complete_ns: Some(complete_ns),
            outcome,
        }
    }

    #[test]
    fn workload_summary_counts_answered_ops_and_their_latency() {
        let ms = 1_000_000;
        let history = History::from_ops(vec![
            op(
                0,
                1,
                OpKind::Write(1),
                0,
                2 * ms,
                Outcome::Ok { read: None },
            ),
            op(1, 2, OpKind::Read, 0, 4 * ms, Outcome::Ok { read: Some(1) }),
            op(
                2,
                3,
                OpKind::Cas { expect: 9, new: 2 },
                0,
                6 * ms,
                Outcome::Fail,
            ),
            op(3, 4, OpKind::Write(3), 0, 900 * ms, Outcome::Info),
            op(
                4,
                FINAL_READ_PROCESS_BASE + 1,
                OpKind::Read,
                0,
                1,
                Outcome::Ok { read: Some(1) },
            ),
        ])
        .unwrap();
        let s = summarise_workload(&history, 1_000);
        assert_eq!(
            s.ops,
            Counts {
                ok: 2,
                fail: 1,
                info: 1
            }
        );
        assert_eq!(
            s.by_kind["cas"],
            Counts {
                ok: 0,
                fail: 1,
                info: 0
            }
        );
        assert_eq!(s.ops_per_s, 3.0);
        assert_eq!(s.latency.p50_ms, 4.0);
        assert_eq!(s.latency.max_ms, 6.0);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), 50);
        assert_eq!(percentile(&values, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    fn check(name: &str, verdict: Verdict) -> CheckResult {
        CheckResult::new(
            name,
            verdict,
            format!("{name} said {verdict}"),
            serde_json::json!({"n": 1}),
        )
    }

    fn sample_report() -> Report {
        let fault = Fault::Kill {
            target: Target::Leader,
        };
        Report {
            scenario: "kill".into(),
            seed: 7,
            api: "configmap".into(),
            peers: 3,
            agents: 0,
            duration_ms: 20_000,
            run_id: "10a".into(),
            subnet: "198.19.10.0/24".into(),
            run_dir: "/tmp/x".into(),
            verdict: Verdict::Valid,
            schedule: vec![PlannedFault {
                start_ms: 2_000,
                end_ms: 5_000,
                fault,
            }],
            faults: vec![FaultRecord {
                name: "kill".into(),
                fault,
                planned_start_ms: 2_000,
                planned_end_ms: 5_000,
                started_ms: 2_001,
                healed_ms: 5_003,
                hosts: vec![2],
                shape: None,
                members: vec![1, 2, 3],
                notes: vec![],
                errors: vec![],
            }],
            workload: WorkloadSummary::default(),
            churn: None,
            watchers: vec![],
            checks: vec![
                check("linearizability", Verdict::Valid),
                check("watch", Verdict::Valid),
            ],
            peer_exits: vec![],
            heal_notes: vec![],
            cleanup: CleanReport::default(),
        }
    }

    #[test]
    fn report_json_carries_scenario_faults_and_verdicts() {
        let report = sample_report();
        let json = serde_json::to_string_pretty(&report).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["scenario"], "kill");
        assert_eq!(value["seed"], 7);
        assert_eq!(value["verdict"], "valid");
        assert_eq!(value["faults"][0]["fault"]["fault"], "kill");
        assert_eq!(value["faults"][0]["fault"]["target"]["target"], "leader");
        assert_eq!(value["faults"][0]["started_ms"], 2_001);
        assert_eq!(value["checks"][1]["name"], "watch");
        assert_eq!(value["checks"][1]["verdict"], "valid");
        assert!(value["workload"]["latency"]["p99_ms"].is_number());
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let text = report.to_string();
        assert!(
            text.starts_with("scenario kill seed 7 (configmap workload, 3 peers, 20.0 s"),
            "{text}"
        );
        assert!(text.contains("kill [2] 2.0-5.0s"), "{text}");
    }

    #[test]
    fn one_invalid_check_makes_the_run_invalid() {
        assert_eq!(
            overall_verdict(&[check("a", Verdict::Valid)]),
            Verdict::Valid
        );
        assert_eq!(
            overall_verdict(&[check("a", Verdict::Valid), check("b", Verdict::Unknown)]),
            Verdict::Unknown
        );
        assert_eq!(
            overall_verdict(&[check("a", Verdict::Invalid), check("b", Verdict::Unknown)]),
            Verdict::Invalid
        );
        assert_eq!(overall_verdict(&[]), Verdict::Unknown);
    }

    #[test]
    fn matrix_table_sums_runs_per_scenario() {
        let valid = MatrixEntry::from_report(&sample_report());
        let mut invalid = valid.clone();
        invalid.seed = 8;
        invalid.verdict = Some(Verdict::Invalid);
        invalid.failed_checks = vec!["watch".into()];
        let errored = MatrixEntry {
            verdict: None,
            error: Some("no leader".into()),
            seed: 9,
            ..valid.clone()
        };
        let table = matrix_table(&[valid, invalid, errored]);
        let row = table.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..6], ["kill", "3", "1", "1", "0", "1"], "{table}");
        assert!(
            row.contains("8: watch") && row.contains("9: error no leader"),
            "{row}"
        );
    }
}
