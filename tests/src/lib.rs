//! Helpers for end-to-end tests and benchmarks that run real `flotilla` processes on loopback.
//! Every process started here is killed when its handle drops, so a failing test leaves no
//! peers behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_api::kv::cluster_client::ClusterClient;
use flotilla_api::kv::kv_client::KvClient;
use flotilla_api::kv::StatusRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

pub mod agent;
pub mod dev;
pub mod user;

/// The etcd v3 KV subset used as a benchmark baseline.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use flotilla_chaos::flotilla_bin;

/// Starts `flotilla ARGS…` with stdout and stderr appended to `log`.
pub fn spawn_logged(args: &[String], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    Command::new(flotilla_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("spawn flotilla")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `flotilla server` process.
pub struct ServerProcess {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts peer `id` of a static cluster `initial` (`1=ADDR,…`).
    pub fn start(id: u64, addr: &str, data_dir: &Path, initial: &str) -> ServerProcess {
        let args = vec![
            "server".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--initial-cluster".into(),
            initial.to_string(),
        ];
        let mut process = ServerProcess {
            id,
            addr: addr.to_string(),
            data_dir: data_dir.to_path_buf(),
            args,
            child: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        self.child = Some(spawn_logged(&self.args, &self.log_path()));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "peer {} is still running", self.id);
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How the process ended, if it was started and has ended on its own (not killed here).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Where the peer's stdout and stderr go.
    fn log_path(&self) -> PathBuf {
        self.data_dir.join("peer.log")
    }

    /// The last `lines` lines of the peer's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until the first leader has created the `default` namespace (moments after a new
/// cluster elects it), so a test's first write into it does not race the bootstrap.
pub async fn wait_for_default_namespace(addr: &str, timeout: Duration) {
    use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
    use flotilla_api::cluster::{GetRequest, ObjectRef};
    let deadline = Instant::now() + timeout;
    let mut client = ClusterApiClient::new(channel(addr));
    loop {
        let request = GetRequest {
            r#ref: Some(ObjectRef {
                kind: "namespace".into(),
                namespace: String::new(),
                name: "default".into(),
            }),
            stale: false,
        };
        if client.get(request).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no default namespace on {addr} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A lazily connecting client channel to `addr` with a per-call deadline.
pub fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

pub fn kv(addr: &str) -> KvClient<Channel> {
    KvClient::new(channel(addr))
}

/// Waits until the peer at `addr` answers and knows a leader; returns the leader's id.
pub async fn wait_for_leader(addr: &str, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let mut client = ClusterClient::new(channel(addr));
        if let Ok(status) = client.status(StatusRequest {}).await {
            let leader = status.into_inner().leader_id;
            if leader != 0 {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "peer {addr} has no leader after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 3-peer (or n-peer) cluster of processes in one temporary directory.
pub struct ProcessCluster {
    pub peers: Vec<ServerProcess>,
    pub dir: tempfile::TempDir,
}

impl ProcessCluster {
    pub async fn start(n: u64) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let initial = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let peers = (1..=n)
            .map(|id| {
                let data = dir.path().join(format!("peer-{id}"));
                ServerProcess::start(id, &addrs[id as usize - 1], &data, &initial)
            })
            .collect();
        let cluster = ProcessCluster { peers, dir };
        for peer in &cluster.peers {
            wait_for_leader(&peer.addr, Duration::from_secs(30)).await;
        }
        wait_for_default_namespace(&cluster.peers[0].addr, Duration::from_secs(30)).await;
        cluster
    }

    pub fn peer(&mut self, id: u64) -> &mut ServerProcess {
        &mut self.peers[id as usize - 1]
    }

    /// The current leader as seen by a running peer.
    pub async fn leader(&self) -> u64 {
        let any = self
            .peers
            .iter()
            .find(|p| p.is_running())
            .expect("a running peer");
        wait_for_leader(&any.addr, Duration::from_secs(30)).await
    }
}
