//! Smoke test of agent runs: `agent-loss` with 3 server peers and 3 node agents running real
//! busybox containers under the deployment churn, 30 s, through the `flotilla-chaos` binary.
//! Every check — the pod checks included — must be valid, an agent must really have been killed
//! and restarted, the churn must have changed the Deployment, and nothing of the run may be left:
//! no namespace, process, link, mount below the run directory, pod cgroup or registry file.
//! Needs root and the `flotilla` binary (`$FLOTILLA_BIN`, or next to this test's target
//! directory: `cargo build -p flotilla-cli --bin flotilla`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{find_report, flotilla_bin, run_dir};

use flotilla_chaos::checker::Verdict;
use flotilla_chaos::clean::{self, Which};
use flotilla_chaos::net::slot_of_name;
use flotilla_chaos::podclean::{self, CGROUP_PARENT};
use flotilla_chaos::report::Report;

/// Runs `scenario` with agents (data kept, so leftovers can be looked for) and returns the report
/// and the run directory.
fn run_with_agents(scenario: &str, seed: u64, duration: &str) -> (Report, PathBuf, String) {
    let out = tempfile::tempdir().expect("temporary directory").keep();
    let output = Command::new(env!("CARGO_BIN_EXE_flotilla-chaos"))
        .args(["run", "--scenario", scenario, "--seed", &seed.to_string()])
        .args(["--duration", duration, "--agents", "3", "--keep-data"])
        .arg("--flotilla")
        .arg(flotilla_bin())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("flotilla-chaos runs");
    let log = format!(
        "exit {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = run_dir(&out);
    let report = find_report(&out);
    (report, dir, log)
}

fn check_valid(report: &Report, log: &str) {
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    for wanted in ["pod-overlap", "workload-converged", "linearizability"] {
        assert!(
            names.contains(&wanted),
            "no {wanted} check: {names:?}\n{log}"
        );
    }
    for check in &report.checks {
        assert_eq!(
            check.verdict,
            Verdict::Valid,
            "check {} failed: {}\n{log}",
            check.name,
            check.summary
        );
    }
    assert!(log.starts_with("exit exit status: 0"), "{log}");
    let losses: Vec<_> = report
        .faults
        .iter()
        .filter(|f| f.name == "agent-loss" && f.errors.is_empty())
        .collect();
    assert!(!losses.is_empty(), "no agent was lost: {:?}", report.faults);
    assert!(losses.iter().all(|f| f.hosts.len() == 1 && f.hosts[0] > 3));
    let churn = report.churn.as_ref().expect("a churn summary");
    assert!(churn.ops.ok >= 3, "the churn barely ran: {churn:?}");
    assert!(report.cleanup.errors.is_empty(), "{:?}", report.cleanup);
}

fn assert_nothing_left(report: &Report, dir: &Path) {
    let run_id = &report.run_id;
    let slot = slot_of_name(&format!("flc-{run_id}-")).expect("run id names a slot");
    let mut scratch = clean::CleanReport::default();
    let namespaces = clean::list_namespaces(&Which::Slot(slot), &mut scratch);
    assert!(namespaces.is_empty(), "namespaces left: {namespaces:?}");
    let processes = clean::peer_processes(&Which::Slot(slot));
    assert!(processes.is_empty(), "processes left: {processes:?}");
    let links = Command::new("ip").args(["-o", "link", "show"]).output();
    let links = String::from_utf8_lossy(&links.expect("ip link").stdout).into_owned();
    assert!(!links.contains(&format!("flc-{run_id}-")), "links: {links}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = podclean::mounts_under(&mountinfo, dir);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let hierarchies = podclean::cgroup_hierarchies(&mountinfo);
    let mut pods = 0;
    for agent in 4..=6 {
        let data = dir.join(format!("hosts/flc-{run_id}-{agent}/data"));
        for uid in podclean::pod_uids(&data) {
            pods += 1;
            for h in &hierarchies {
                let cgroup = h.join(CGROUP_PARENT).join(&uid);
                assert!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
            }
        }
        let journal = std::fs::read_to_string(data.join("runtime/journal.jsonl"));
        assert!(
            journal.is_ok_and(|j| j.contains("\"started\"")),
            "agent {agent} ran nothing"
        );
    }
    let registry = Path::new(clean::OWNER_DIR).join(format!("{run_id}.agents"));
    assert!(!registry.exists(), "{} left", registry.display());
    eprintln!("{pods} pods still known to the agents' directories, none with a cgroup");
}

#[test]
fn agent_loss_with_three_agents_is_valid_and_leaves_nothing_behind() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "agent runs need root (namespaces, cgroups, mounts)"
    );
    let (report, dir, log) = run_with_agents("agent-loss", 1, "30s");
    check_valid(&report, &log);
    assert_nothing_left(&report, &dir);
    let _ = std::fs::remove_dir_all(dir.parent().expect("out dir"));
}
