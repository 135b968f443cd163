//! One host: a network namespace with one veth on the run's bridge, its own directory (optionally
//! on a size-limited tmpfs) and one process started inside the namespace — a `flotilla server`
//! peer ([`HostRole::Server`]) or a `flotilla agent` running real containers
//! ([`HostRole::Agent`]).
//!
//! Owns the process's life: start (through `setns` in `pre_exec`, with `PR_SET_PDEATHSIG` so a
//! crashed harness leaves no peers), kill -9, SIGSTOP / SIGCONT, graceful stop, and noticing an
//! exit nobody asked for. Faults that act on one host's namespace — firewall rules, bandwidth,
//! clock, disk — are methods here too; *which* host gets them is decided elsewhere.
//!
//! An agent host's namespace also holds its pods' CNI bridge and the host ends of their veths;
//! its containers, shims, mounts and cgroups are found and removed by [`crate::podclean`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::error::ChaosError;
use crate::net::{RunSlot, AGENT_PORT, PEER_PORT};
use crate::netfault::{self, Rule, FAULT_CHAIN};
use crate::sys;

/// Bytes of a peer's log kept in a report when it exits on its own.
pub const LOG_TAIL_BYTES: u64 = 2048;

/// How long a graceful stop waits for the peer to exit before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a graceful stop waits for an agent, which first stops its pods' containers.
pub const AGENT_STOP_GRACE: Duration = Duration::from_secs(20);

/// Bytes written per step while filling a disk.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// Most steps of filling a disk (64 GiB at one chunk per step).
const FILL_MAX_STEPS: u32 = 1 << 16;

/// What a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostRole {
    /// A control-plane peer (`flotilla server`).
    Server,
    /// A node agent running pods as containers (`flotilla agent`).
    Agent,
}

/// How a host's process starts; kept so that a restart uses the same arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A member of the static initial cluster (`1=ADDR,2=ADDR,…`).
    Initial(String),
    /// Joins through a running peer (`HOST:PORT`).
    Join(String),
    /// A node agent.
    Agent(AgentLaunch),
}

/// What an agent host is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLaunch {
    /// The Node's name (the host's namespace name, so it says which run and host it is).
    pub name: String,
    /// `HOST:PORT` of every control-plane peer, comma-separated.
    pub servers: String,
    /// The node's pod subnet, see [`crate::net::pod_cidr`].
    pub pod_cidr: String,
    /// The CNI bridge inside the host's namespace.
    pub bridge: String,
}

impl Launch {
    pub fn role(&self) -> HostRole {
        match self {
            Launch::Initial(_) | Launch::Join(_) => HostRole::Server,
            Launch::Agent(_) => HostRole::Agent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum HostState {
    Running,
    Paused,
    /// Stopped on purpose (killed or terminated by the harness).
    Stopped,
    /// Exited without the harness asking.
    Exited {
        status: String,
    },
    /// Removed from the cluster and stopped for good.
    Retired,
}

/// Settings every host of a run shares.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub flotilla: PathBuf,
    /// Put each data directory on a tmpfs of this size (for disk-full faults).
    pub tmpfs_bytes: Option<u64>,
    /// Start peers under libfaketime (this library), with a per-host control file.
    pub faketime_lib: Option<PathBuf>,
}

pub struct Host {
    pub number: u16,
    pub role: HostRole,
    pub ip: Ipv4Addr,
    /// Where the peer listens.
    pub addr: SocketAddr,
    /// What other peers are told to dial (the delay proxy, when there is one).
    pub advertise: SocketAddr,
    pub netns: String,
    pub veth: String,
    pub dir: PathBuf,
    pub state: HostState,
    /// Times the process was started.
    pub starts: u32,
    tmpfs: Option<PathBuf>,
    launch: Launch,
    options: HostOptions,
    child: Option<Child>,
}

impl Host {
    /// Creates host `number`'s namespace, veth and directory (its process is not started).
    pub async fn create(
        slot: RunSlot,
        number: u16,
        hosts_dir: &Path,
        options: HostOptions,
        advertise: Option<SocketAddr>,
        launch: Launch,
    ) -> Result<Host, ChaosError> {
        let ip = slot.host_addr(number)?;
        let netns = slot.host_netns(number);
        let port = match launch.role() {
            HostRole::Server => PEER_PORT,
            HostRole::Agent => AGENT_PORT,
        };
        let addr = SocketAddr::from((ip, port));
        let mut host = Host {
            number,
            role: launch.role(),
            ip,
            addr,
            advertise: advertise.unwrap_or(addr),
            veth: slot.host_veth(number),
            dir: hosts_dir.join(&netns),
            netns,
            state: HostState::Stopped,
            starts: 0,
            tmpfs: None,
            launch,
            options,
            child: None,
        };
        host.create_network(slot).await?;
        host.create_dirs()?;
        Ok(host)
    }

    async fn create_network(&self, slot: RunSlot) -> Result<(), ChaosError> {
        let (ns, veth, bridge_ns) = (&self.netns, &self.veth, slot.bridge_netns());
        let port = slot.bridge_port(self.number);
        let cidr = format!("{}/24", self.ip);
        sys::run_str("ip", &["netns", "add", ns]).await?;
        sys::run_str("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
        let add = [
            "link", "add", veth, "netns", ns, "type", "veth", "peer", "name", &port, "netns",
            &bridge_ns,
        ];
        sys::run_str("ip", &add).await?;
        sys::run_str("ip", &["-n", ns, "addr", "add", &cidr, "dev", veth]).await?;
        sys::run_str("ip", &["-n", ns, "link", "set", veth, "up"]).await?;
        let bridge = [
            "-n", &bridge_ns, "link", "set", &port, "master", &bridge_ns, "up",
        ];
        sys::run_str("ip", &bridge).await?;
        let chain = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        sys::iptables(ns, &chain(&["-N", FAULT_CHAIN])).await?;
        sys::iptables(ns, &chain(&["-A", "INPUT", "-i", veth, "-j", FAULT_CHAIN])).await?;
        sys::iptables(ns, &chain(&["-A", "OUTPUT", "-o", veth, "-j", FAULT_CHAIN])).await?;
        Ok(())
    }

    fn create_dirs(&mut self) -> Result<(), ChaosError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| ChaosError::io(format!("creating {}", self.dir.display()), e))?;
        if let Some(size_bytes) = self.options.tmpfs_bytes {
            let mount_point = self.dir.join("disk");
            mount_tmpfs(&self.netns, &mount_point, size_bytes)?;
            self.tmpfs = Some(mount_point);
        }
        if self.options.faketime_lib.is_some() {
            self.set_clock("+0")?;
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        match &self.tmpfs {
            Some(mount_point) => mount_point.join("data"),
            None => self.dir.join("data"),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        match self.role {
            HostRole::Server => self.dir.join("peer.log"),
            HostRole::Agent => self.dir.join("agent.log"),
        }
    }

    fn faketime_path(&self) -> PathBuf {
        self.dir.join("faketime")
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(Child::id).map(|id| id as i32)
    }

    /// Whether clients should send requests here (running or merely paused).
    pub fn is_serving(&self) -> bool {
        matches!(self.state, HostState::Running | HostState::Paused)
    }

    /// Starts the peer process inside the host's namespace.
    pub fn start(&mut self) -> Result<(), ChaosError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| ChaosError::io("opening the peer log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ChaosError::io("opening the peer log", e))?;
        let mut command = Command::new(&self.options.flotilla);
        command
            .args(self.args())
            .env("RUST_LOG", "info,openraft=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        if let Some(lib) = &self.options.faketime_lib {
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", self.faketime_path())
                // Re-read the control file on every wall-clock call (a few µs each): with a
                // cache, libfaketime 0.9.10 never picks up a changed file.
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let netns = File::open(format!("/run/netns/{}", self.netns))
            .map_err(|e| ChaosError::io(format!("opening namespace {}", self.netns), e))?;
        // SAFETY: the closure only makes system calls that are async-signal-safe (setns, setsid,
        // prctl) and allocates nothing. Its own session keeps the peer out of the harness's
        // process group, so a Ctrl-C at the harness's terminal reaches only the harness (which
        // then kills its peers).
        unsafe {
            command.as_std_mut().pre_exec(move || {
                nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                nix::unistd::setsid().map_err(io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            ChaosError::io(format!("starting {}", self.options.flotilla.display()), e)
        })?;
        self.child = Some(child);
        self.state = HostState::Running;
        self.starts += 1;
        Ok(())
    }

    fn args(&self) -> Vec<String> {
        match &self.launch {
            Launch::Agent(agent) => self.agent_args(agent),
            Launch::Initial(_) | Launch::Join(_) => self.server_args(),
        }
    }

    /// `--stop-pods-on-exit`: a graceful stop (teardown) takes the pods down with the agent;
    /// kill -9 (the `agent-loss` fault) leaves them to the lease's self-fencing.
    fn agent_args(&self, agent: &AgentLaunch) -> Vec<String> {
        let data_dir = self.data_dir().display().to_string();
        [
            "agent",
            "--name",
            &agent.name,
            "--servers",
            &agent.servers,
            "--data-dir",
            &data_dir,
            "--listen",
            &self.addr.to_string(),
            "--pod-cidr",
            &agent.pod_cidr,
            "--bridge",
            &agent.bridge,
            "--stop-pods-on-exit",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    fn server_args(&self) -> Vec<String> {
        let mut args = vec![
            "server".to_string(),
            "--id".into(),
            self.number.to_string(),
            "--listen".into(),
            self.addr.to_string(),
            "--advertise".into(),
            self.advertise.to_string(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
        ];
        match &self.launch {
            Launch::Initial(cluster) => args.extend(["--initial-cluster".into(), cluster.clone()]),
            Launch::Join(via) => args.extend(["--join".into(), via.clone()]),
            Launch::Agent(_) => {}
        }
        args
    }

    fn signal(&self, signal: Signal) -> Result<(), ChaosError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        kill(Pid::from_raw(pid), signal).map_err(|e| {
            ChaosError::io(
                format!("sending {signal} to peer {}", self.number),
                e.into(),
            )
        })
    }

    /// kill -9, and wait for the process to be gone.
    pub async fn kill(&mut self) -> Result<(), ChaosError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.state = HostState::Stopped;
        Ok(())
    }

    /// SIGTERM, then kill -9 if the process has not exited after [`STOP_GRACE`]
    /// ([`AGENT_STOP_GRACE`] for an agent).
    pub async fn stop(&mut self) -> Result<(), ChaosError> {
        if self.state == HostState::Paused {
            self.resume()?;
        }
        self.signal(Signal::SIGTERM)?;
        let grace = match self.role {
            HostRole::Server => STOP_GRACE,
            HostRole::Agent => AGENT_STOP_GRACE,
        };
        if let Some(child) = self.child.as_mut() {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                tracing::warn!(host = self.number, "peer ignored SIGTERM; killing it");
            }
        }
        self.kill().await
    }

    pub fn pause(&mut self) -> Result<(), ChaosError> {
        if self.state == HostState::Running {
            self.signal(Signal::SIGSTOP)?;
            self.state = HostState::Paused;
        }
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), ChaosError> {
        if self.state == HostState::Paused {
            self.signal(Signal::SIGCONT)?;
            self.state = HostState::Running;
        }
        Ok(())
    }

    /// Kills the peer and marks the host as no longer part of the cluster.
    pub async fn retire(&mut self) -> Result<(), ChaosError> {
        self.kill().await?;
        self.state = HostState::Retired;
        Ok(())
    }

    /// If the process exited without being asked, records that and returns its exit status.
    pub fn poll_exit(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok()??;
        self.child = None;
        let status = status.to_string();
        self.state = HostState::Exited {
            status: status.clone(),
        };
        Some(status)
    }

    /// The last [`LOG_TAIL_BYTES`] of the peer's log.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path(), LOG_TAIL_BYTES).unwrap_or_default()
    }

    /// Replaces the fault rules in the host's firewall chain with `rules`.
    pub async fn set_rules(&self, rules: &[Rule]) -> Result<(), ChaosError> {
        self.flush_rules().await?;
        for rule in rules {
            sys::iptables(&self.netns, &rule.iptables_args()).await?;
        }
        Ok(())
    }

    pub async fn flush_rules(&self) -> Result<(), ChaosError> {
        sys::iptables(&self.netns, &["-F".to_string(), FAULT_CHAIN.to_string()]).await?;
        Ok(())
    }

    /// Caps what the host sends at `rate_kbit`.
    pub async fn limit_bandwidth(&self, rate_kbit: u32) -> Result<(), ChaosError> {
        let args = netfault::bandwidth_args(&self.veth, rate_kbit);
        sys::run_in_netns(&self.netns, "tc", &args).await?;
        Ok(())
    }

    pub async fn unlimit_bandwidth(&self) -> Result<(), ChaosError> {
        let args = netfault::bandwidth_reset_args(&self.veth);
        match sys::run_in_netns(&self.netns, "tc", &args).await {
            Ok(_) => Ok(()),
            // Nothing to remove: the default qdisc is back already.
            Err(ChaosError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
            Err(ChaosError::Command { stderr, .. }) if stderr.contains("Cannot delete") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the host's libfaketime control (for example `+3600` or `-86400`); the peer's next
    /// wall-clock reading uses it. Without libfaketime this is an error.
    pub fn set_clock(&self, faketime: &str) -> Result<(), ChaosError> {
        if self.options.faketime_lib.is_none() {
            return Err(ChaosError::Config(
                "clock faults need libfaketime (apt-get install faketime)".into(),
            ));
        }
        std::fs::write(self.faketime_path(), format!("{faketime}\n"))
            .map_err(|e| ChaosError::io("writing the faketime control file", e))
    }

    fn ballast_path(&self) -> Result<PathBuf, ChaosError> {
        match &self.tmpfs {
            Some(mount_point) => Ok(mount_point.join("ballast")),
            None => Err(ChaosError::Config(
                "disk faults need hosts on tmpfs (the scenario sets it)".into(),
            )),
        }
    }

    /// Fills the host's disk with a ballast file until at most `slack_bytes` stay free; the
    /// peer's own writes fill the rest. Returns the ballast's size.
    pub async fn fill_disk(&self, slack_bytes: u64) -> Result<u64, ChaosError> {
        let path = self.ballast_path()?;
        let mount_point = self.tmpfs.clone().unwrap_or_default();
        tokio::task::spawn_blocking(move || fill(&path, &mount_point, slack_bytes))
            .await
            .map_err(|e| ChaosError::Config(format!("disk filler panicked: {e}")))?
    }

    pub fn free_disk(&self) -> Result<(), ChaosError> {
        let path = self.ballast_path()?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ChaosError::io("removing the ballast", e))
            }
            _ => Ok(()),
        }
    }

    /// Stops the process (if any) and unmounts the tmpfs. The namespace goes with the network.
    /// An agent is asked to stop first, so that it takes its pods down itself; what it leaves
    /// is removed by [`crate::podclean`].
    pub async fn shut_down(&mut self) {
        if self.role == HostRole::Agent && self.child.is_some() {
            if let Err(e) = self.stop().await {
                tracing::warn!(host = self.number, error = %e, "stopping the agent");
            }
        }
        let _ = self.kill().await;
        self.unmount();
    }

    fn unmount(&mut self) {
        if let Some(mount_point) = self.tmpfs.take() {
            if let Err(e) = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %mount_point.display(), error = %e, "unmounting tmpfs");
            }
        }
    }

    /// The synchronous part of teardown, for `Drop` when no runtime can be awaited.
    pub fn shut_down_blocking(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if let Some(pid) = child.id() {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
            }
        }
        self.unmount();
    }
}

fn mount_tmpfs(source: &str, mount_point: &Path, size_bytes: u64) -> Result<(), ChaosError> {
    std::fs::create_dir_all(mount_point)
        .map_err(|e| ChaosError::io(format!("creating {}", mount_point.display()), e))?;
    let options = format!("size={size_bytes},mode=0755");
    nix::mount::mount(
        Some(source),
        mount_point,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        ChaosError::io(
            format!("mounting tmpfs on {}", mount_point.display()),
            e.into(),
        )
    })
}

fn free_bytes(path: &Path) -> Result<u64, ChaosError> {
    let stat = nix::sys::statvfs::statvfs(path)
        .map_err(|e| ChaosError::io(format!("statvfs {}", path.display()), e.into()))?;
    Ok(stat.blocks_available() * stat.fragment_size())
}

fn fill(path: &Path, mount_point: &Path, slack_bytes: u64) -> Result<u64, ChaosError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ChaosError::io("creating the ballast", e))?;
    let chunk = vec![0xa5u8; FILL_CHUNK_BYTES];
    let mut written = 0u64;
    for _ in 0..FILL_MAX_STEPS {
        let free = free_bytes(mount_point)?;
        if free <= slack_bytes {
            break;
        }
        let step = (free - slack_bytes).min(FILL_CHUNK_BYTES as u64) as usize;
        match file.write(&chunk[..step]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(ChaosError::io("writing the ballast", e)),
        }
    }
    Ok(written)
}

fn read_tail(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut buf = Vec::new();
    file.take(max_bytes).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
