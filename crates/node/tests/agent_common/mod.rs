//! Shared fixture of the agent tests (root only): a real one-peer control plane (`flotilla
//! server` as a child process, on loopback), a node agent run in-process on a private data
//! directory, cgroup parent, bridge and random `198.18.X.0/24` pod subnet, the busybox image
//! (packed from the host's static `/bin/busybox`) side-loaded through `images/import/`, and a
//! [`World`] guard whose drop removes everything the test made — even after a failed
//! assertion — without trusting the agent under test.
#![allow(dead_code)]

#[path = "../cgroup_common/mod.rs"]
mod cgroup_common;
use cgroup_common::{collect_pids, count_dirs, remove_cgroup_tree};

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_api::cluster::{ApplyRequest, DeleteRequest, GetRequest, ListRequest, ObjectRef};
use flotilla_node::agent::client::ApiClient;
use flotilla_node::agent::{Agent, AgentConfig};
use flotilla_node::image::{pack_directory, ImageConfig};
use flotilla_node::runtime::{BackoffConfig, CgroupMode};
use flotilla_state::objects::{Node, Pod};
use rand::Rng;
use serde_json::{json, Value};
use tempfile::TempDir;

pub const SHIM: &str = env!("CARGO_BIN_EXE_flotilla-node-shim");
pub const IMAGE: &str = "busybox:test";
/// Longest any test waits for the cluster or a pod to reach a state.
pub const WAIT_LIMIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);
const APPLETS: [&str; 22] = [
    "sh", "echo", "sleep", "cat", "head", "tail", "dd", "httpd", "wget", "true", "false", "ls",
    "mkdir", "hostname", "env", "kill", "ps", "seq", "grep", "wc", "touch", "rm",
];

/// The `flotilla` binary: `$FLOTILLA_BIN`, else next to this test binary's target directory.
pub fn flotilla_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FLOTILLA_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let bin = debug.join("flotilla");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p flotilla-cli --bin flotilla` \
         (same CARGO_TARGET_DIR) or set FLOTILLA_BIN",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-peer control plane in a child process; killed on drop.
pub struct ControlPlane {
    pub addr: String,
    child: Option<Child>,
    dir: PathBuf,
}

impl ControlPlane {
    pub fn start(dir: &Path) -> ControlPlane {
        ControlPlane::start_at(dir, &format!("127.0.0.1:{}", free_port()))
    }

    /// Starts (or restarts, with the same `dir`) the peer on `addr`.
    pub fn start_at(dir: &Path, addr: &str) -> ControlPlane {
        let addr = addr.to_string();
        fs::create_dir_all(dir).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = Command::new(flotilla_bin())
            .args(["server", "--id", "1", "--listen", &addr, "--data-dir"])
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ControlPlane {
            addr,
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }

    /// Kills the peer (SIGKILL): nothing answers any more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Cluster API client for the test's assertions.
#[derive(Clone)]
pub struct Api {
    pub client: ApiClient,
}

impl Api {
    pub fn new(addr: &str) -> Api {
        Api {
            client: ApiClient::new(&[addr.to_string()]).unwrap(),
        }
    }

    /// Waits until the control plane answers lists.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let request = ListRequest {
                kind: "Namespace".into(),
                all_namespaces: true,
                ..ListRequest::default()
            };
            let mut c = self.client.cluster(0);
            if c.list(request).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the control plane never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn apply(&self, object: &Value) {
        let request = ApplyRequest {
            manifests: object.to_string().into_bytes(),
            default_namespace: "default".into(),
            dry_run: false,
        };
        self.client
            .call(|mut c| {
                let r = request.clone();
                async move { c.apply(r).await }
            })
            .await
            .unwrap_or_else(|e| panic!("apply {object}: {e}"));
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, kind: &str, name: &str) -> Option<T> {
        let request = GetRequest {
            r#ref: Some(ObjectRef {
                kind: kind.into(),
                namespace: "default".into(),
                name: name.into(),
            }),
            stale: false,
        };
        let got = self
            .client
            .call(|mut c| {
                let r = request.clone();
                async move { c.get(r).await }
            })
            .await;
        match got {
            Ok(response) => {
                let mut value: Value = serde_json::from_slice(&response.object).unwrap();
                let map = value.as_object_mut().unwrap();
                map.remove("apiVersion");
                map.remove("kind");
                Some(serde_json::from_value(value).unwrap())
            }
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => panic!("get {kind} {name}: {s}"),
        }
    }

    pub async fn pod(&self, name: &str) -> Option<Pod> {
        self.get("Pod", name).await
    }

    pub async fn node(&self, name: &str) -> Option<Node> {
        self.get("Node", name).await
    }

    /// Deletes a pod gracefully (`grace` seconds, or the pod's own when `None`).
    pub async fn delete_pod(&self, name: &str, grace: Option<i64>) {
        let request = DeleteRequest {
            r#ref: Some(ObjectRef {
                kind: "Pod".into(),
                namespace: "default".into(),
                name: name.into(),
            }),
            grace_period_seconds: grace,
            propagation: String::new(),
            resource_version: String::new(),
        };
        self.client
            .call(|mut c| {
                let r = request.clone();
                async move { c.delete(r).await }
            })
            .await
            .unwrap();
    }

    /// Polls pod `name` until `ok` holds; panics with the last state after [`WAIT_LIMIT`].
    pub async fn wait_pod(&self, name: &str, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let pod = self.pod(name).await;
            if let Some(pod) = pod.as_ref().filter(|p| ok(p)) {
                return pod.clone();
            }
            assert!(
                Instant::now() < deadline,
                "pod {name}: never {what}; last: {}",
                serde_json::to_string_pretty(&pod).unwrap()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until pod `name` is gone from the cluster.
    pub async fn wait_pod_gone(&self, name: &str) {
        let deadline = Instant::now() + WAIT_LIMIT;
        while let Some(pod) = self.pod(name).await {
            assert!(
                Instant::now() < deadline,
                "pod {name} never went away: {}",
                serde_json::to_string_pretty(&pod).unwrap()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A pod bound to `node` running `script` with `sh -c` in container `main`.
pub fn pod(name: &str, node: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": IMAGE, "command": ["/bin/sh", "-c", script]}],
        },
    })
}

/// The status of container `name` of `pod`.
pub fn container<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a flotilla_state::objects::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .find(|c| c.name == name)
}

pub fn phase_is(pod: &Pod, phase: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.as_str() == phase)
}

pub fn condition_is(pod: &Pod, type_: &str, status: &str) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status.as_str() == status)
    })
}

/// A test's private node: control plane, agent data, cgroups, bridge; dropping it tears
/// everything down.
pub struct World {
    pub server: ControlPlane,
    pub api: Api,
    pub node: String,
    pub cgroup_parent: String,
    pub bridge: String,
    pub subnet: String,
    pub agent: Option<Agent>,
    pub dir: TempDir,
}

impl World {
    /// A control plane and a node agent with the busybox image waiting in `images/import/`.
    pub async fn new() -> World {
        let mut world = World::without_agent().await;
        world.start_agent().await;
        world
    }

    /// The control plane and the node's directories, without starting the agent.
    pub async fn without_agent() -> World {
        assert!(nix::unistd::geteuid().is_root(), "agent tests need root");
        let dir = tempfile::Builder::new()
            .prefix("flotilla-agent-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let suffix: u32 = rand::thread_rng().gen();
        let x: u8 = rand::thread_rng().gen_range(1..=254);
        let server = ControlPlane::start(&dir.path().join("server"));
        let api = Api::new(&server.addr);
        let world = World {
            api,
            server,
            node: format!("node-{suffix:08x}"),
            cgroup_parent: format!("flotilla-agent-test-{suffix:08x}"),
            bridge: format!("fla{suffix:08x}"),
            subnet: format!("198.18.{x}.0/24"),
            agent: None,
            dir,
        };
        stage_busybox(
            &world.data_dir().join("images/import"),
            &world.dir.path().join("tree"),
        );
        world.api.wait_ready().await;
        world
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.data_dir().join("runtime")
    }

    /// The agent config of this world: fast resync, millisecond-scale backoff.
    pub fn config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(
            &self.node,
            vec![self.server.addr.clone()],
            &self.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
            &self.subnet,
            Path::new(SHIM),
        );
        c.bridge = self.bridge.clone();
        c.cgroup_parent = self.cgroup_parent.clone();
        c.cni_network_name = format!("flotilla-{}", self.node);
        c.log_max_bytes = 1 << 20;
        c.resync_interval = Duration::from_millis(200);
        c.backoff = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(600),
        };
        c.shutdown_grace = Duration::from_secs(5);
        c
    }

    pub async fn start_agent(&mut self) {
        self.start_agent_with(self.config()).await;
    }

    pub async fn start_agent_with(&mut self, config: AgentConfig) {
        let agent = Agent::start(config).await.unwrap();
        self.agent = Some(agent);
        self.wait_node_ready().await;
    }

    pub async fn wait_node_ready(&self) -> Node {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(node) = self.api.node(&self.node).await {
                if node.ready().as_str() == "True" {
                    return node;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} never registered",
                self.node
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent runs")
    }

    /// Applies pod `name` running `script`, bound to this node.
    pub async fn run_pod(&self, name: &str, script: &str) {
        self.api.apply(&pod(name, &self.node, script)).await;
    }

    /// Processes in this world's cgroups plus shims working on its state directory.
    pub fn processes(&self) -> BTreeSet<i32> {
        let mut pids = BTreeSet::new();
        for h in hierarchies() {
            collect_pids(&h.join(&self.cgroup_parent), &mut pids);
        }
        let state = self.state_dir().display().to_string();
        for pid in all_pids() {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&state) {
                pids.insert(pid);
            }
        }
        pids
    }

    /// Mount points under this world's directory.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.path().display().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }

    /// Cgroup directories below this world's parent, in every hierarchy.
    pub fn cgroup_dirs(&self) -> usize {
        hierarchies()
            .iter()
            .map(|h| count_dirs(&h.join(&self.cgroup_parent)).saturating_sub(1))
            .sum()
    }

    pub fn veths(&self) -> usize {
        fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Network namespaces pinned under this world's directory.
    pub fn netns(&self) -> usize {
        self.mounts().iter().filter(|m| m.ends_with("/net")).count()
    }
}

impl Drop for World {
    /// Scorched earth, scoped to this world: the agent's tasks end, every process in its
    /// cgroups and every shim on its state directory is killed, everything mounted under its
    /// directory unmounted, its cgroups and bridge removed, the control plane killed.
    fn drop(&mut self) {
        drop(self.agent.take());
        for _ in 0..3 {
            for pid in self.processes() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for h in hierarchies() {
            remove_cgroup_tree(&h.join(&self.cgroup_parent));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        self.server.kill();
        if std::env::var_os("FLOTILLA_TEST_KEEP").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(&mut self.dir, TempDir::new().unwrap()));
        }
    }
}

/// Packs `/bin/busybox` with its applets as `busybox:test` into `import_dir/busybox.tar`.
pub fn stage_busybox(import_dir: &Path, tree: &Path) {
    assert!(
        Path::new("/bin/busybox").is_file(),
        "install busybox-static (apt-get install -y busybox-static)"
    );
    for sub in ["bin", "proc", "sys", "dev", "tmp", "etc", "www"] {
        fs::create_dir_all(tree.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        let _ = symlink("busybox", tree.join("bin").join(applet));
    }
    fs::write(tree.join("www/index.html"), "flotilla-ok\n").unwrap();
    fs::create_dir_all(import_dir).unwrap();
    let config = ImageConfig {
        env: vec!["PATH=/bin".to_string()],
        ..ImageConfig::default()
    };
    pack_directory(tree, IMAGE, &config, &import_dir.join("busybox.tar")).unwrap();
}

pub fn hierarchies() -> Vec<PathBuf> {
    CgroupMode::detect().unwrap().hierarchies()
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Whether process `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}
