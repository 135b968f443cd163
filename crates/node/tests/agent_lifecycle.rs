//! The agent's own life (root only): killed with SIGKILL and started again, it adopts the
//! running container (same process, restart count kept) instead of duplicating it; when its
//! lease lapses (the control plane is gone) it kills every container and starts nothing
//! until heartbeats are accepted again; `shutdown(stop_pods)` leaves nothing behind.

mod agent_common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::{alive, container, phase_is, ControlPlane, World};
use flotilla_node::agent::{Agent, NODE_LEASE_LAPSED};
use flotilla_node::runtime::{ContainerId, Runtime, RuntimeConfig};
use serde::{Deserialize, Serialize};

const IDLE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";
/// Set in the child: the agent config it runs with.
const CHILD_ENV: &str = "FLOTILLA_AGENT_CHILD";

#[derive(Serialize, Deserialize)]
struct ChildSpec {
    node: String,
    server: String,
    data_dir: PathBuf,
    subnet: String,
    bridge: String,
    cgroup_parent: String,
}

/// The agent that gets killed; a no-op unless run by the adoption test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_child_process() {
    let Some(spec) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let spec: ChildSpec = serde_json::from_str(spec.to_str().unwrap()).unwrap();
    let mut config = flotilla_node::agent::AgentConfig::new(
        &spec.node,
        vec![spec.server],
        &spec.data_dir,
        "127.0.0.1:0".parse().unwrap(),
        &spec.subnet,
        std::path::Path::new(agent_common::SHIM),
    );
    config.bridge = spec.bridge;
    config.cgroup_parent = spec.cgroup_parent;
    config.cni_network_name = format!("flotilla-{}", spec.node);
    config.resync_interval = Duration::from_millis(200);
    config.backoff.initial = Duration::from_secs(1);
    config.backoff.max = Duration::from_secs(2);
    let _agent = Agent::start(config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

fn spawn_child(world: &World) -> std::process::Child {
    let spec = ChildSpec {
        node: world.node.clone(),
        server: world.server.addr.clone(),
        data_dir: world.data_dir(),
        subnet: world.subnet.clone(),
        bridge: world.bridge.clone(),
        cgroup_parent: world.cgroup_parent.clone(),
    };
    let log = std::fs::File::create(world.dir.path().join("child.log")).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "agent_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(&spec).unwrap())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A read-only view of the world's runtime state (status reads only).
fn runtime_of(world: &World) -> Runtime {
    let mut config =
        RuntimeConfig::new(&world.state_dir(), std::path::Path::new(agent_common::SHIM));
    config.cgroup_parent = world.cgroup_parent.clone();
    Runtime::new(config).unwrap()
}

fn container_id(pod: &flotilla_state::objects::Pod) -> ContainerId {
    let id = &container(pod, "main").unwrap().container_id;
    ContainerId::parse(id.trim_start_matches("flotilla://")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_and_restarted_adopts_its_running_containers() {
    let mut world = World::without_agent().await;
    let mut child = spawn_child(&world);
    world.wait_node_ready().await;
    world.run_pod("sleeper", IDLE).await;
    world.run_pod("crasher", "exit 3").await;
    world.run_pod("doomed", IDLE).await;
    let before = world
        .api
        .wait_pod("sleeper", "Running", |p| phase_is(p, "Running"))
        .await;
    let crashed = world
        .api
        .wait_pod("crasher", "restarted", |p| {
            container(p, "main").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    let restarts_before = container(&crashed, "main").unwrap().restart_count;
    let id = container_id(&before);
    let pid = runtime_of(&world)
        .status(&id)
        .unwrap()
        .pid
        .expect("a running process");
    let doomed = world
        .api
        .wait_pod("doomed", "Running", |p| phase_is(p, "Running"))
        .await;
    let doomed_pid = runtime_of(&world)
        .status(&container_id(&doomed))
        .unwrap()
        .pid
        .unwrap();

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive(pid), "the container outlives its agent");
    // While no agent runs, one pod is force-deleted: nothing wants its container any more.
    world.api.delete_pod("doomed", Some(0)).await;
    world.api.wait_pod_gone("doomed").await;
    world.start_agent().await;
    let deadline = Instant::now() + agent_common::WAIT_LIMIT;
    let doomed_uid = doomed.metadata.uid.clone();
    let leftovers = |world: &World| {
        let runtime = world.agent().runtime();
        let containers = runtime.list().unwrap().into_iter();
        let sandboxes = runtime.list_sandboxes().unwrap().into_iter();
        containers.filter(|c| c.id.pod_uid() == doomed_uid).count()
            + sandboxes.filter(|s| s.pod_uid == doomed_uid).count()
    };
    while alive(doomed_pid) || leftovers(&world) > 0 {
        assert!(Instant::now() < deadline, "the orphan was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several reconcile passes later: same instance, same process, nothing duplicated.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = world
        .api
        .wait_pod("sleeper", "Running", |p| phase_is(p, "Running"))
        .await;
    assert_eq!(container_id(&after), id);
    assert_eq!(container(&after, "main").unwrap().restart_count, 0);
    let runtime = world.agent().runtime();
    assert_eq!(runtime.status(&id).unwrap().pid, Some(pid));
    let sleeper_uid = before.metadata.uid.clone();
    let instances = runtime
        .list()
        .unwrap()
        .into_iter()
        .filter(|c| c.id.pod_uid() == sleeper_uid)
        .count();
    assert_eq!(instances, 1);
    let crashed = world.api.pod("crasher").await.unwrap();
    assert!(
        container(&crashed, "main").unwrap().restart_count >= restarts_before,
        "restart count kept"
    );

    // Still managed: deleting the pod stops the adopted process.
    world.api.delete_pod("sleeper", Some(1)).await;
    world.api.wait_pod_gone("sleeper").await;
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_stops_every_container_until_heartbeats_are_accepted_again() {
    let mut world = World::new().await;
    world.run_pod("fenced", IDLE).await;
    let pod = world
        .api
        .wait_pod("fenced", "Running", |p| phase_is(p, "Running"))
        .await;
    let id = container_id(&pod);
    let pid = world.agent().runtime().status(&id).unwrap().pid.unwrap();

    world.server.kill();
    let config = world.config();
    let lost_at = Instant::now();
    // The lease (2 s) plus one heartbeat interval, plus slack for a loaded test machine.
    let limit = config.lease + config.heartbeat_interval + Duration::from_secs(3);
    while alive(pid) {
        assert!(
            lost_at.elapsed() < limit,
            "still running {:?} after the control plane died",
            lost_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(world.agent().is_fenced());
    // Longer than the restart backoff: still nothing runs while fenced.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running: Vec<_> = world
        .agent()
        .runtime()
        .list()
        .unwrap()
        .into_iter()
        .filter(|c| c.is_running())
        .collect();
    assert!(running.is_empty(), "{running:?}");

    // The control plane comes back on the same address: the lease is renewed, the pod runs.
    let addr = world.server.addr.clone();
    world.server = ControlPlane::start_at(&world.dir.path().join("server"), &addr);
    world.api.wait_ready().await;
    let pod = world
        .api
        .wait_pod("fenced", "running again", |p| {
            phase_is(p, "Running")
                && container(p, "main").is_some_and(|c| c.restart_count >= 1 && c.ready)
        })
        .await;
    let last = container(&pod, "main")
        .unwrap()
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(last.reason, NODE_LEASE_LAPSED, "{last:?}");
    assert!(!world.agent().is_fenced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_stop_pods_hands_the_containers_to_the_next_agent() {
    let mut world = World::new().await;
    world.run_pod("kept", IDLE).await;
    let pod = world
        .api
        .wait_pod("kept", "Running", |p| phase_is(p, "Running"))
        .await;
    let id = container_id(&pod);
    let pid = world.agent().runtime().status(&id).unwrap().pid.unwrap();
    world.agent.take().unwrap().shutdown(false).await.unwrap();
    assert!(alive(pid), "a normal shutdown leaves containers running");
    world.start_agent().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(world.agent().runtime().status(&id).unwrap().pid, Some(pid));
    let pod = world.api.pod("kept").await.unwrap();
    assert_eq!(container_id(&pod), id);
    assert_eq!(container(&pod, "main").unwrap().restart_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_stop_pods_leaves_nothing_running() {
    let mut world = World::new().await;
    world.run_pod("a", IDLE).await;
    world.run_pod("b", "trap '' TERM; sleep 1000").await;
    for name in ["a", "b"] {
        world
            .api
            .wait_pod(name, "Running", |p| phase_is(p, "Running"))
            .await;
    }
    assert!(!world.processes().is_empty());
    let agent = world.agent.take().unwrap();
    agent.shutdown(true).await.unwrap();
    assert!(world.processes().is_empty(), "{:?}", world.processes());
    assert_eq!(world.cgroup_dirs(), 0);
    assert_eq!(world.netns(), 0);
    let runtime = runtime_of(&world);
    assert!(runtime.list().unwrap().is_empty());
    assert!(runtime.list_sandboxes().unwrap().is_empty());
}

/// An agent that died between making a sandbox directory and writing its record left a
/// directory no pod owns: the next agent removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_sandbox_directory_is_removed() {
    let world = World::new().await;
    let runtime = world.agent().runtime().clone();
    let dir = runtime
        .config()
        .state_dir
        .join("sandboxes")
        .join("pod-left-behind");
    std::fs::create_dir_all(&dir).unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.exists() {
        assert!(Instant::now() < deadline, "{} still there", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
