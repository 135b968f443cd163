//! No leaks under churn (root only): after 20 cycles of sandbox + CNI + containers + exec +
//! stop + remove, the fixture's mounts (rootfs overlays, pinned namespaces), cgroup
//! directories, veths, allocated pod addresses, processes, state directories and this
//! process's file descriptors are back to where they started. (Alone in its binary: it counts
//! this process's descriptors.)

mod runtime_common;

use std::time::Duration;

use runtime_common::{Fixture, FixtureOptions};

/// Cycles measured after the warm-up one (which creates the node bridge, kept as on a node).
const CHURN_CYCLES: usize = 20;

#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    mounts: usize,
    cgroup_dirs: usize,
    veths: usize,
    allocated_ips: usize,
    processes: usize,
    containers: usize,
    sandboxes: usize,
    rootfs_dirs: usize,
    own_fds: usize,
}

fn footprint(fx: &Fixture) -> Footprint {
    let entries = |sub: &str| {
        std::fs::read_dir(fx.state_dir().join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    Footprint {
        mounts: fx.mounts().len(),
        cgroup_dirs: fx.cgroup_dirs(),
        veths: fx.veths(),
        allocated_ips: fx.allocated_ips(),
        processes: fx.processes(),
        containers: entries("containers"),
        sandboxes: entries("sandboxes"),
        rootfs_dirs: entries("rootfs"),
        own_fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
    }
}

/// One pod's life: a container that exits on its own, one that is exec'd into and stopped.
async fn cycle(fx: &Fixture, n: usize) {
    let uid = format!("churn-{n}");
    let sandbox = fx.runtime.create_sandbox(&uid, "churn").await.unwrap();
    let quick = fx.start(&sandbox, "quick", "echo done").await;
    let idle = fx
        .start(&sandbox, "idle", "trap 'exit 0' TERM; sleep 1000 & wait")
        .await;
    let argv = vec!["true".to_string()];
    let out = fx
        .runtime
        .exec(&idle, &argv, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    fx.wait_exited(&quick).await;
    fx.runtime
        .stop(&idle, Duration::from_secs(30))
        .await
        .unwrap();
    for id in [&quick, &idle] {
        fx.runtime.remove(id).await.unwrap();
    }
    fx.runtime.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test]
async fn churn_leaves_no_trace() {
    let fx = Fixture::new(FixtureOptions {
        network: true,
        ..Default::default()
    });
    cycle(&fx, 0).await;
    let before = footprint(&fx);
    assert_eq!((before.veths, before.processes, before.mounts), (0, 0, 0));
    for n in 1..=CHURN_CYCLES {
        cycle(&fx, n).await;
    }
    assert_eq!(footprint(&fx), before);
}
