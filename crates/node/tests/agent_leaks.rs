//! No leaks under pod churn through the agent (root only): after a warm-up pod and then
//! [`CHURN_CYCLES`] pods created, run, exec'd into and deleted (reusing one name, so every
//! cycle is a new UID), the node's mounts, cgroups, network namespaces, veths, processes,
//! runtime state entries and pod directories are back to where they started.

mod agent_common;

use std::path::Path;

use agent_common::{container, phase_is, pod, World};
use serde_json::json;

/// Pods created and deleted after the warm-up one.
const CHURN_CYCLES: usize = 8;

#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    mounts: usize,
    cgroup_dirs: usize,
    netns: usize,
    veths: usize,
    processes: usize,
    containers: usize,
    sandboxes: usize,
    rootfs_dirs: usize,
    pod_dirs: usize,
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn footprint(world: &World) -> Footprint {
    let state = world.state_dir();
    Footprint {
        mounts: world.mounts().len(),
        cgroup_dirs: world.cgroup_dirs(),
        netns: world.netns(),
        veths: world.veths(),
        processes: world.processes().len(),
        containers: entries(&state.join("containers")),
        sandboxes: entries(&state.join("sandboxes")),
        rootfs_dirs: entries(&state.join("rootfs")),
        pod_dirs: entries(&world.data_dir().join("pods")),
    }
}

/// One pod's life: two containers (one exits and is restarted), a memory emptyDir, deletion.
async fn cycle(world: &World) {
    let mut object = pod(
        "churn",
        &world.node,
        "trap 'exit 0' TERM; sleep 1000 & wait",
    );
    let quick = json!({"name": "quick", "image": agent_common::IMAGE, "command": ["/bin/sh", "-c", "echo hi > /scratch/x; exit 1"],
                       "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]});
    object["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(quick);
    object["spec"]["volumes"] =
        json!([{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]);
    world.api.apply(&object).await;
    world
        .api
        .wait_pod("churn", "running with a restarted sidecar", |p| {
            phase_is(p, "Running") && container(p, "quick").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    world.api.delete_pod("churn", Some(1)).await;
    world.api.wait_pod_gone("churn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_churn_leaves_no_trace() {
    let world = World::new().await;
    cycle(&world).await;
    let before = footprint(&world);
    assert_eq!(
        (
            before.processes,
            before.mounts,
            before.containers,
            before.pod_dirs
        ),
        (0, 0, 0, 0),
        "{before:?}"
    );
    for _ in 0..CHURN_CYCLES {
        cycle(&world).await;
    }
    assert_eq!(footprint(&world), before);
}
