//! [`Runtime`] and [`RuntimeConfig`]: the runtime's directories and the read side (`status`,
//! `list`). The runtime keeps no container state in memory: everything is read from the
//! container directories the shims maintain, so a restarted agent sees exactly what the old
//! one left (adoption needs no special path).
//!
//! State directory layout: `containers/<id>/` (see `state.rs`), `sandboxes/<pod-uid>/` (see
//! `sandbox.rs`), `rootfs/<random>/` (root filesystems handed out by [`Runtime::rootfs_dir`]),
//! `ipam/` (host-local allocations, when the default network config is used).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::cgroups::CgroupMode;
use super::container::{
    derive_state, ContainerId, ContainerState, ContainerStatus, ExitReason, Liveness,
    UNKNOWN_EXIT_CODE,
};
use super::error::{IoContext, RuntimeError};
use super::state::{read_json, ContainerPaths, ShimState};
use super::zygote::Zygote;
use crate::network::{Cni, CniConfig};

/// Most containers (or sandboxes) listed from the state directory.
pub const MAX_LISTED: usize = 100_000;

/// How the runtime is set up on this node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of all runtime state; must be on a filesystem that supports overlayfs upper dirs
    /// if the agent prepares root filesystems under [`Runtime::rootfs_dir`].
    pub state_dir: PathBuf,
    /// The executable re-executed as shim (`current_exe()` of the agent binary).
    pub shim_path: PathBuf,
    /// Cap of a container's live log file; one rotated file of the same size is kept.
    pub log_max_bytes: u64,
    /// Top-level cgroup under which pods get `<pod-uid>/<container-id>`.
    pub cgroup_parent: String,
    /// Pod network; `None` gives pods a network namespace with loopback only.
    pub network: Option<CniConfig>,
    /// Longest a shim may take to create and start a container.
    pub start_timeout: Duration,
    /// Longest a short helper (cleanup) or the creation of a pod's namespaces may take.
    pub helper_timeout: Duration,
    /// Longest to wait for a shim to record an exit after its container died.
    pub shim_exit_timeout: Duration,
    /// The node lease file shims watch (self-fencing without the agent); `None`: no watchdog.
    pub lease_file: Option<PathBuf>,
    /// Fork container shims from a zygote process instead of exec'ing `shim_path` for each
    /// (an exec stays the fallback when the zygote fails).
    pub shim_zygote: bool,
}

impl RuntimeConfig {
    /// Defaults: 10 MiB logs, cgroup parent `flotilla`, no network, 60 s start timeout.
    pub fn new(state_dir: &Path, shim_path: &Path) -> RuntimeConfig {
        RuntimeConfig {
            state_dir: state_dir.to_path_buf(),
            shim_path: shim_path.to_path_buf(),
            log_max_bytes: 10 << 20,
            cgroup_parent: "flotilla".to_string(),
            network: None,
            start_timeout: Duration::from_secs(60),
            helper_timeout: Duration::from_secs(30),
            shim_exit_timeout: Duration::from_secs(30),
            lease_file: None,
            shim_zygote: true,
        }
    }
}

/// The container runtime of one node. Cheap to share behind an `Arc`; all methods take
/// `&self`, and two runtimes must not share a state directory at once.
pub struct Runtime {
    pub(crate) config: RuntimeConfig,
    pub(crate) cgroup_mode: CgroupMode,
    pub(crate) cni: Option<Cni>,
    pub(crate) nofile_limit: u64,
    pub(crate) zygote: Option<Zygote>,
}

impl Runtime {
    /// Opens (creating if needed) the state directory. Containers and sandboxes found there
    /// are adopted as they are: `list` reports them, nothing is restarted.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if !config.shim_path.is_file() {
            return Err(RuntimeError::invalid(
                "shim path",
                format!("{} is not a file", config.shim_path.display()),
            ));
        }
        super::spec::validate_name("cgroup parent", &config.cgroup_parent)?;
        for dir in ["containers", "sandboxes", "rootfs"] {
            let path = config.state_dir.join(dir);
            fs::create_dir_all(&path).ctx("creating", &path)?;
        }
        let cni = config.network.clone().map(Cni::new).transpose()?;
        Ok(Runtime {
            cgroup_mode: CgroupMode::detect()?,
            cni,
            nofile_limit: super::oci::nofile_limit(),
            zygote: config.shim_zygote.then(|| Zygote::new(&config.shim_path)),
            config,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The pid of the zygote that forks this runtime's shims, while one runs (it starts with
    /// the first container and stops when it fails or the runtime is dropped).
    pub async fn zygote_pid(&self) -> Option<u32> {
        self.zygote.as_ref()?.pid().await
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroup_mode
    }

    /// A fresh directory for a container's root filesystem: pass it to
    /// [`crate::image::prepare_rootfs`]; `remove` releases and deletes it.
    pub fn rootfs_dir(&self) -> Result<PathBuf, RuntimeError> {
        let name = format!("{:016x}", rand::thread_rng().gen::<u64>());
        let dir = self.config.state_dir.join("rootfs").join(name);
        fs::create_dir(&dir).ctx("creating", &dir)?;
        Ok(dir)
    }

    pub(crate) fn container_paths(&self, id: &ContainerId) -> ContainerPaths {
        ContainerPaths::new(&self.config.state_dir.join("containers").join(id.as_str()))
    }

    /// The live log file of a container (CRI format; see [`crate::runtime::LogLine`]).
    pub fn log_path(&self, id: &ContainerId) -> PathBuf {
        self.container_paths(id).log()
    }

    /// The recorded state of a container; `NotFound` when it has no directory.
    pub(crate) fn shim_state(&self, id: &ContainerId) -> Result<ShimState, RuntimeError> {
        let paths = self.container_paths(id);
        if !paths.dir.is_dir() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        read_json(&paths.state())
    }

    /// The container's state, checked against the live processes.
    pub fn status(&self, id: &ContainerId) -> Result<ContainerStatus, RuntimeError> {
        let state = match self.shim_state(id) {
            Err(RuntimeError::Io { source, .. })
                if source.kind() == ErrorKind::NotFound && self.start_abandoned(id) =>
            {
                return Ok(abandoned(id));
            }
            other => other?,
        };
        let alive = Liveness {
            shim: state.shim.is_alive(),
            init: state.init.is_some_and(|p| p.is_alive()),
        };
        let (state, pid) = derive_state(&state, alive, SystemTime::now());
        Ok(ContainerStatus {
            id: id.clone(),
            state,
            pid,
        })
    }

    /// Whether a container directory without a state file is older than any start can
    /// take: its agent died before the shim ran.
    fn start_abandoned(&self, id: &ContainerId) -> bool {
        self.older_than_a_start(&self.container_paths(id).dir)
    }

    /// Whether `path` was made (or last changed) longer ago than creating a sandbox or
    /// starting a container may take: whatever made it and left it unfinished is gone.
    pub(crate) fn older_than_a_start(&self, path: &Path) -> bool {
        let limit = self.config.start_timeout + self.config.helper_timeout;
        fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > limit)
    }

    /// Every container in the state directory, sorted by ID. A directory whose state cannot
    /// be read yet (a start in progress) is skipped; one whose start was abandoned by a dead
    /// agent is listed as exited, so that it gets removed.
    pub fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.list_where(|_| true)
    }

    /// The containers of one pod. Reads only their state, not every container's: a pod torn
    /// down while many others run would otherwise read all of theirs (quadratic when a whole
    /// node's pods are deleted together).
    pub fn list_pod(&self, pod_uid: &str) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.list_where(|id| id.pod_uid() == pod_uid)
    }

    fn list_where(
        &self,
        wanted: impl Fn(&ContainerId) -> bool,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let readable = self.list_readable_where(wanted)?;
        match readable.unreadable.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(readable.listed),
        }
    }

    /// Every container whose record can be read, and apart from them those whose record
    /// cannot (a corrupt state file, say), with the error: one bad record hides none of the
    /// others. For whoever must act on every container it can (the fence).
    pub fn list_readable(&self) -> Result<Readable, RuntimeError> {
        self.list_readable_where(|_| true)
    }

    fn list_readable_where(
        &self,
        wanted: impl Fn(&ContainerId) -> bool,
    ) -> Result<Readable, RuntimeError> {
        let mut listed = Vec::new();
        let mut unreadable = Vec::new();
        for id in self.container_ids()?.into_iter().filter(|id| wanted(id)) {
            match self.status(&id) {
                Ok(status) => listed.push(status),
                Err(RuntimeError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => unreadable.push((id, e)),
            }
        }
        Ok(Readable { listed, unreadable })
    }

    /// The IDs [`Runtime::list`] would return, without reading their state: containers with a
    /// state file, and those whose start was abandoned. One whose shim has not yet written its
    /// state (a start in progress) is left out, as `list` leaves it out.
    pub(crate) fn listed_ids(&self) -> Result<Vec<ContainerId>, RuntimeError> {
        let mut ids = self.container_ids()?;
        ids.retain(|id| self.container_paths(id).state().is_file() || self.start_abandoned(id));
        Ok(ids)
    }

    pub(crate) fn container_ids(&self) -> Result<Vec<ContainerId>, RuntimeError> {
        let dir = self.config.state_dir.join("containers");
        let mut ids: Vec<ContainerId> = fs::read_dir(&dir)
            .ctx("listing", &dir)?
            .take(MAX_LISTED)
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| ContainerId::parse(&name).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// What [`Runtime::list_readable`] found.
#[derive(Debug)]
pub struct Readable {
    /// The containers whose record could be read.
    pub listed: Vec<ContainerStatus>,
    /// Those whose record could not, with why.
    pub unreadable: Vec<(ContainerId, RuntimeError)>,
}

/// The status of a container whose shim never ran.
fn abandoned(id: &ContainerId) -> ContainerStatus {
    ContainerStatus {
        id: id.clone(),
        state: ContainerState::Exited {
            exit_code: UNKNOWN_EXIT_CODE,
            reason: ExitReason::Error,
            started_at: None,
            finished_at: SystemTime::now(),
            message: Some("the agent died before the container's shim started".into()),
        },
        pid: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::{ContainerSpec, LogOptions, Sandbox};

    fn assert_send<T: Send>(_: &T) {}

    /// The agent drives the runtime from spawned tokio tasks: every future must be `Send`.
    /// (Type-checked only; the body never runs.)
    #[allow(dead_code)]
    fn futures_are_send(rt: &Runtime, sandbox: &Sandbox, spec: ContainerSpec, id: &ContainerId) {
        assert_send(&rt.create_sandbox("p", "h"));
        assert_send(&rt.remove_sandbox("p"));
        assert_send(&rt.start_container(sandbox, spec));
        assert_send(&rt.stop(id, Duration::ZERO));
        assert_send(&rt.remove(id));
        assert_send(&rt.exec(id, &[], Duration::ZERO));
        let mut logs = rt.logs(id, LogOptions::default()).unwrap();
        assert_send(&logs.next());
    }

    #[test]
    fn runtime_is_shareable_between_tasks() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Runtime>();
    }

    /// A dispatcher pass uses `listed_ids` instead of `list`: both must name the same
    /// containers, leaving out a start whose shim has not written its state yet.
    #[test]
    fn listed_ids_name_what_list_lists() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig::new(dir.path(), Path::new("/bin/true"));
        let runtime = Runtime::new(config).unwrap();
        let make = |text: &str| {
            let id = ContainerId::parse(text).unwrap();
            fs::create_dir(runtime.container_paths(&id).dir).unwrap();
            id
        };
        let starting = make("pod-a.c.0000000a");
        let abandoned = make("pod-b.c.0000000b");
        let long_ago = SystemTime::now() - Duration::from_secs(3 * 3600);
        fs::File::open(runtime.container_paths(&abandoned).dir)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let listed: Vec<ContainerId> = runtime.list().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(listed, std::slice::from_ref(&abandoned));
        assert_eq!(runtime.listed_ids().unwrap(), listed);
        assert_eq!(runtime.container_ids().unwrap(), [starting, abandoned]);
    }
}
