//! A one-node Flotilla cluster of real processes for benchmarks: one `flotilla server` peer and
//! one `flotilla agent` on loopback, data in a temporary directory, the busybox image imported
//! into the agent's store before it starts. Also the busybox root filesystem both Flotilla and
//! the baselines run, a watch that reports pods turning Running, and the memory the agent and
//! its shims hold. Dropping a [`OneNode`] stops the agent (which stops its pods) and then sweeps
//! whatever is left: shims, pod cgroups, mounts, the pod bridge.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{GetRequest, ObjectRef, WatchEvent, WatchRequest};
use flotilla_e2e::{channel, free_port, wait_for_leader, ServerProcess};
use serde_json::Value;
use tonic::transport::Channel;

use crate::cleanup;

/// The image tag pods run.
pub const IMAGE: &str = "busybox:latest";
/// busybox applets linked in the root filesystem (what pods and baselines run).
const APPLETS: [&str; 4] = ["sh", "sleep", "true", "ls"];
/// How long the node gets to register and turn Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The shim's first argument (`flotilla __shim …`).
const SHIM_ARG: &str = "__shim";

/// Makes `dir` a busybox root filesystem (Debian's static busybox and a few applet links).
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    for sub in ["bin", "tmp", "etc", "proc", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("copying /bin/busybox (Debian's busybox-static)")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    Ok(())
}

/// The resident memory of one process, from `/proc/PID/status`.
#[derive(Clone, Copy, Default)]
pub struct Rss {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// `VmRSS` and `VmHWM` of `pid`, if it still lives.
pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Rss {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// `Pss` of `pid` (its share of the pages it shares with other processes), if it still lives.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The agent's and its shims' memory at one moment.
pub struct NodeMemory {
    pub agent: Rss,
    pub shims: usize,
    pub shims_rss_kib: u64,
    /// Shims forked from one zygote share most pages, which `VmRSS` counts in every one.
    pub shims_pss_kib: u64,
}

/// One server peer and one real agent.
pub struct OneNode {
    pub addr: String,
    pub node_name: String,
    agent: Option<Child>,
    agent_dir: PathBuf,
    bridge: String,
    _server: ServerProcess,
    dir: tempfile::TempDir,
}

impl OneNode {
    /// Starts the cluster; pods get addresses from `pod_cidr` (inside 198.18.0.0/15).
    pub async fn start(flotilla: &Path, pod_cidr: &str) -> Result<OneNode> {
        std::env::set_var("FLOTILLA_BIN", flotilla);
        let dir = tempfile::Builder::new()
            .prefix("flotilla-bench")
            .tempdir()?;
        let addr = format!("127.0.0.1:{}", free_port());
        let server = ServerProcess::start(1, &addr, &dir.path().join("peer"), &format!("1={addr}"));
        let tag = format!("{:04x}", std::process::id() % 0xffff);
        let mut node = OneNode {
            addr,
            node_name: format!("bench-{tag}"),
            agent: None,
            agent_dir: dir.path().join("agent"),
            bridge: format!("flbp{tag}"),
            _server: server,
            dir,
        };
        node.import_image(flotilla)?;
        wait_for_leader(&node.addr, Duration::from_secs(30)).await;
        node.spawn_agent(flotilla, pod_cidr)?;
        node.wait_ready().await?;
        Ok(node)
    }

    fn import_image(&self, flotilla: &Path) -> Result<()> {
        let rootfs = self.dir.path().join("rootfs");
        busybox_rootfs(&rootfs)?;
        let archive = self.dir.path().join("busybox.tar");
        let pack = Command::new(flotilla)
            .args(["image", "pack"])
            .arg(&rootfs)
            .args(["--tag", IMAGE, "--cmd", "sh", "-o"])
            .arg(&archive)
            .status()?;
        let import = Command::new(flotilla)
            .args(["image", "import"])
            .arg(&archive)
            .arg("--data-dir")
            .arg(&self.agent_dir)
            .stdout(Stdio::null())
            .status()?;
        if !pack.success() || !import.success() {
            bail!("packing or importing the busybox image failed");
        }
        Ok(())
    }

    fn spawn_agent(&mut self, flotilla: &Path, pod_cidr: &str) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("agent.log"))?;
        let child = Command::new(flotilla)
            .args(["agent", "--name", self.node_name.as_str()])
            .args(["--servers", self.addr.as_str()])
            .arg("--data-dir")
            .arg(&self.agent_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(["--pod-cidr", pod_cidr, "--bridge", self.bridge.as_str()])
            .arg("--stop-pods-on-exit")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning flotilla agent")?;
        self.agent = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let request = GetRequest {
                r#ref: Some(ObjectRef {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: self.node_name.clone(),
                }),
                stale: false,
            };
            if let Ok(reply) = ClusterApiClient::new(channel(&self.addr))
                .get(request)
                .await
            {
                let node: Value = serde_json::from_slice(&reply.into_inner().object)?;
                if is_ready(&node) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "node {} not Ready within {READY_TIMEOUT:?} (see {})",
            self.node_name,
            self.dir.path().join("agent.log").display()
        )
    }

    pub fn client(&self) -> ClusterApiClient<Channel> {
        ClusterApiClient::new(channel(&self.addr))
    }

    /// The agent's memory, and its shims' (processes `flotilla __shim …` under its data dir).
    pub fn memory(&self) -> Option<NodeMemory> {
        let agent = rss(self.agent.as_ref()?.id())?;
        let dir = self.agent_dir.display().to_string();
        let shims = cleanup::pids_where(|args| {
            args.get(1).is_some_and(|a| a == SHIM_ARG) && args.iter().any(|a| a.contains(&dir))
        });
        let shims_rss_kib = shims
            .iter()
            .filter_map(|p| rss(*p))
            .map(|r| r.rss_kib)
            .sum();
        let shims_pss_kib = shims.iter().filter_map(|p| pss_kib(*p)).sum();
        Some(NodeMemory {
            agent,
            shims: shims.len(),
            shims_rss_kib,
            shims_pss_kib,
        })
    }
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

impl Drop for OneNode {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            cleanup::stop_child(&mut agent, cleanup::STOP_GRACE);
        }
        cleanup::sweep_agents(
            self.dir.path(),
            std::slice::from_ref(&self.agent_dir),
            std::slice::from_ref(&self.bridge),
        );
    }
}

/// A watch on pods with a label selector, opened before the pods are created.
pub struct PodWatch {
    stream: tonic::Streaming<WatchEvent>,
}

/// A pod seen Running.
pub struct RunningPod {
    pub name: String,
}

impl PodWatch {
    pub async fn open(addr: &str, label_selector: &str) -> Result<PodWatch> {
        // No per-call timeout: the stream lives as long as the measurement.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        let request = WatchRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            label_selector: label_selector.into(),
            ..Default::default()
        };
        let stream = ClusterApiClient::new(channel)
            .watch(request)
            .await?
            .into_inner();
        Ok(PodWatch { stream })
    }

    /// The next event showing a pod Running (a pod may show up more than once), or `None` once
    /// `deadline` passes.
    pub async fn next_running(&mut self, deadline: Instant) -> Result<Option<RunningPod>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(event) = tokio::time::timeout(left, self.stream.message()).await else {
                return Ok(None);
            };
            let Some(event) = event? else {
                bail!("the pod watch ended");
            };
            if event.r#type == "ERROR" {
                bail!("the pod watch failed: {}", event.error);
            }
            let pod: Value = match serde_json::from_slice(&event.object) {
                Ok(pod) => pod,
                Err(_) => continue,
            };
            if event.r#type != "DELETED" && pod["status"]["phase"] == "Running" {
                let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
                return Ok(Some(RunningPod { name }));
            }
        }
    }
}
