//! Smoke test of the real harness: a 3-peer cluster in network namespaces under the `kill`
//! scenario and then a majority/minority partition, 15 s each with ConfigMap registers through
//! the Cluster API, and a 10 s `kill` run with KV registers, through the `flotilla-chaos`
//! binary. Every check must be valid and nothing may be left behind. Needs root and the `flotilla` binary (`$FLOTILLA_BIN`, or next to this test's target
//! directory: `cargo build -p flotilla-cli --bin flotilla`).

mod common;

use std::process::Command;

use common::{find_report, flotilla_bin};

use flotilla_chaos::checker::Verdict;
use flotilla_chaos::clean::{self, Which};
use flotilla_chaos::net::slot_of_name;

/// Runs `scenario` with `seed` and the `workload` API for `duration` and asserts that every
/// check passed and the run left nothing behind.
fn check_run(scenario: &str, seed: u64, workload: &str, duration: &str) {
    let out = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_flotilla-chaos"))
        .args([
            "run",
            "--scenario",
            scenario,
            "--seed",
            &seed.to_string(),
            "--duration",
            duration,
            "--workload",
            workload,
        ])
        .arg("--flotilla")
        .arg(flotilla_bin())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("flotilla-chaos runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = find_report(out.path());
    assert_eq!(report.api, workload, "{scenario}: the run used another API");
    for check in &report.checks {
        assert_eq!(
            check.verdict,
            Verdict::Valid,
            "{scenario}: check {} failed: {}\n{stdout}\n{stderr}",
            check.name,
            check.summary
        );
    }
    assert!(
        output.status.success(),
        "{scenario}: exit {}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        !report.faults.is_empty(),
        "{scenario}: no fault was injected"
    );
    assert!(report.workload.ops.ok > 0, "{scenario}: no op succeeded");
    assert!(
        report.cleanup.errors.is_empty(),
        "{scenario}: {:?}",
        report.cleanup.errors
    );
    assert_nothing_left(&report.run_id);
}

fn assert_nothing_left(run_id: &str) {
    let slot = slot_of_name(&format!("flc-{run_id}-")).expect("run id names a slot");
    let mut report = clean::CleanReport::default();
    let namespaces = clean::list_namespaces(&Which::Slot(slot), &mut report);
    assert!(
        namespaces.is_empty(),
        "namespaces left behind: {namespaces:?}"
    );
    let processes = clean::peer_processes(&Which::Slot(slot));
    assert!(
        processes.is_empty(),
        "peer processes left behind: {processes:?}"
    );
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    let prefix = format!("flc-{run_id}-");
    assert!(!links.contains(&prefix), "links left behind: {links}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(!mounts.contains(&prefix), "mounts left behind");
}

#[test]
fn kill_and_partition_runs_through_both_apis_are_valid_and_leave_nothing_behind() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the chaos smoke test needs root (network namespaces, iptables)"
    );
    check_run("kill", 1, "configmap", "15s");
    check_run("partition-majority", 2, "configmap", "15s");
    check_run("kill", 3, "kv", "10s");
}
