//! `flotilla cluster up` / `cluster down` (root, real containers): a 3-server, 2-agent cluster of
//! separate processes on loopback ports runs the hello example, and `down` leaves no process,
//! mount or pod bridge behind.

use std::time::Duration;

use flotilla_e2e::agent::busybox_image;
use flotilla_e2e::flotilla_bin;
use flotilla_e2e::user::{eventually, examples_dir, ok, ready_count};

/// The servers `cluster up` starts (fixed loopback ports 7101…).
const SERVERS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

fn flotilla(args: &[&str]) -> std::process::Output {
    std::process::Command::new(flotilla_bin())
        .args(args)
        .env("FLOTILLA_SERVER", SERVERS)
        .output()
        .unwrap()
}

/// Stops the cluster even when an assertion fails first.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = flotilla(&["cluster", "down", "--dir", &self.0]);
    }
}

#[test]
fn cluster_up_runs_a_deployment_and_cluster_down_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let image = busybox_image(dir.path(), "busybox:latest");
    let cluster_dir = dir.path().join("ha").display().to_string();
    ok(flotilla(&[
        "cluster",
        "up",
        "--servers",
        "3",
        "--agents",
        "2",
        "--dir",
        &cluster_dir,
    ]));
    let down = Down(cluster_dir.clone());
    for agent in ["agent-1", "agent-2"] {
        let data = format!("{cluster_dir}/{agent}");
        ok(flotilla(&[
            "image",
            "import",
            "--data-dir",
            &data,
            image.to_str().unwrap(),
        ]));
    }
    eventually(Duration::from_secs(30), "two Ready nodes", || {
        let out = flotilla(&["get", "nodes"]);
        (String::from_utf8_lossy(&out.stdout)
            .matches(" Ready ")
            .count()
            == 2)
            .then_some(())
    });
    let hello = examples_dir().join("hello.yaml");
    ok(flotilla(&["apply", "-f", hello.to_str().unwrap()]));
    eventually(Duration::from_secs(60), "3 hello pods ready", || {
        (ready_count(SERVERS, "app=hello") == 3).then_some(())
    });
    let status = ok(flotilla(&["cluster", "status", "--dir", &cluster_dir]));
    assert_eq!(status.matches("running").count(), 5, "{status}");

    drop(down);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts.matches(&cluster_dir).count(), 0, "no mounts left");
    let links = String::from_utf8(
        std::process::Command::new("ip")
            .args(["-br", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !links
            .lines()
            .any(|l| l.starts_with("flc1 ") || l.starts_with("flc2 ")),
        "pod bridges removed: {links}"
    );
    let procs = String::from_utf8(
        std::process::Command::new("pgrep")
            .args(["-f", &cluster_dir])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(procs.trim().is_empty(), "no process left: {procs}");
}
