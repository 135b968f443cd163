//! Container lifecycle on the agent side: `start_container` (write the bundle, spawn the
//! shim, wait for its handshake), `stop` (SIGTERM, SIGKILL after the grace period) and
//! `remove` (cleanup of a dead shim's leftovers, rootfs release, directory removal).
//! libcontainer itself only ever runs in shim processes.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe::Receiver;
use tokio::process::Command;

use super::cgroups;
use super::container::ContainerId;
use super::error::{IoContext, RuntimeError};
use super::helper::{run_helper, wait_exit};
use super::mounts::remove_dir_safely;
use super::oci::{build_spec, ensure_working_dir, OciInput};
use super::procs::ProcIdentity;
use super::sandbox::Sandbox;
use super::service::{Runtime, MAX_LISTED};
use super::shim::SHIM_ARG;
use super::spec::{validate_name, ContainerSpec};
use super::state::{read_json, write_json_atomic, ContainerPaths, Phase, ShimSpec, ShimState};
use crate::image::Rootfs;

/// Longest handshake line read from a shim.
const MAX_HANDSHAKE_BYTES: u64 = 8 * 1024;
/// Most bytes of a failed shim's stderr added to the start error.
const MAX_DIAGNOSTIC_BYTES: usize = 16 * 1024;
/// How long a SIGKILLed container may take to disappear before `stop` reports a timeout.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// How often a wait on a shim's record or a container's cgroup looks again.
const POLL_STEP: Duration = Duration::from_millis(20);
/// How long a stop of a container with an unreadable record waits for its shim to record the
/// exit (a shim that died with its record never will).
const UNRECORDED_SHIM_WAIT: Duration = Duration::from_secs(2);

impl Runtime {
    /// Creates and starts a container in `sandbox`. Returns once its init process runs (or
    /// the start failed, in which case the rootfs is released and nothing is left behind).
    pub async fn start_container(
        &self,
        sandbox: &Sandbox,
        spec: ContainerSpec,
    ) -> Result<ContainerId, RuntimeError> {
        validate_name("container name", &spec.name)?;
        let id = ContainerId::generate(&sandbox.pod_uid, &spec.name);
        let paths = self.container_paths(&id);
        fs::create_dir(&paths.dir).ctx("creating", &paths.dir)?;
        let prepared = self.write_bundle(&id, sandbox, &spec, &paths);
        let started = match prepared {
            Ok(()) => self.spawn_shim(&id, &paths).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => {
                spec.rootfs.keep();
                Ok(id)
            }
            Err(e) => {
                self.abandon_start(&paths).await;
                let _ = spec.rootfs.release();
                let _ = remove_dir_safely(&paths.dir);
                Err(e)
            }
        }
    }

    /// Writes `bundle/config.json` (the OCI spec) and `shim.json`.
    fn write_bundle(
        &self,
        id: &ContainerId,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        paths: &ContainerPaths,
    ) -> Result<(), RuntimeError> {
        let cgroups_path =
            cgroups::container_cgroup(&self.config.cgroup_parent, &sandbox.pod_uid, id.as_str());
        ensure_working_dir(spec.rootfs.path(), &spec.working_dir)?;
        let oci = build_spec(&OciInput {
            argv: &spec.argv,
            env: &spec.env,
            working_dir: &spec.working_dir,
            user: &spec.user,
            resources: spec.resources,
            mounts: &spec.mounts,
            rootfs: spec.rootfs.path(),
            hostname: &sandbox.hostname,
            namespaces: &sandbox.namespaces,
            cgroups_path: &cgroups_path,
            cgroup_namespace: self.cgroup_mode == cgroups::CgroupMode::V2,
            nofile_limit: self.nofile_limit,
        })?;
        let bundle = paths.bundle();
        fs::create_dir(&bundle).ctx("creating", &bundle)?;
        write_json_atomic(&bundle.join("config.json"), &oci)?;
        let rootfs_dir = spec.rootfs.path().parent().unwrap_or(Path::new("/"));
        let shim_spec = ShimSpec {
            id: id.to_string(),
            pod_uid: sandbox.pod_uid.clone(),
            name: spec.name.clone(),
            rootfs_dir: rootfs_dir.to_path_buf(),
            cgroups_path,
            log_max_bytes: self.config.log_max_bytes,
            lease_file: self.config.lease_file.clone(),
        };
        write_json_atomic(&paths.shim_spec(), &shim_spec)
    }

    /// Starts `<shim> __shim run <dir>` (forked by the zygote, else exec'd) and waits for its
    /// handshake line.
    async fn spawn_shim(
        &self,
        id: &ContainerId,
        paths: &ContainerPaths,
    ) -> Result<(), RuntimeError> {
        let shim_err = File::create(paths.shim_err()).ctx("creating", &paths.shim_err())?;
        let (handshake_read, handshake_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| RuntimeError::io("creating a pipe", &paths.dir, e.into()))?;
        let handshake_read = Receiver::from_owned_fd(handshake_read)
            .map_err(|e| RuntimeError::io("watching the handshake pipe", &paths.dir, e))?;
        let args = [OsStr::new("run"), paths.dir.as_os_str()];
        let forked = match &self.zygote {
            Some(zygote) => {
                let (stdout, stderr) = (handshake_write.as_fd(), shim_err.as_fd());
                zygote.spawn(&paths.dir, &args, stdout, stderr).await
            }
            None => None,
        };
        let mut exec_child = None;
        if let Some(pid) = forked {
            tracing::debug!(container = %id, pid, "shim forked by the zygote");
            // Only the shim holds the write end now: its exit ends our read.
            drop(handshake_write);
        } else {
            let child = Command::new(&self.config.shim_path)
                .arg(SHIM_ARG)
                .args(args)
                .current_dir(&paths.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(handshake_write))
                .stderr(shim_err)
                .spawn()
                .map_err(|e| RuntimeError::io("spawning shim", &self.config.shim_path, e))?;
            exec_child = Some(child);
        }
        let handshake = async {
            let mut line = String::new();
            let mut reader = BufReader::new(handshake_read.take(MAX_HANDSHAKE_BYTES));
            let _ = reader.read_line(&mut line).await;
            line
        };
        let timeout = self.config.start_timeout;
        let line = tokio::time::timeout(timeout, handshake).await;
        // The first shim process exits right after forking the real shim: reap it (the
        // zygote reaps the ones it forked).
        if let Some(mut child) = exec_child {
            let _ = child.wait().await;
        }
        let line = line.map_err(|_| RuntimeError::Timeout {
            what: format!("start of container {id}"),
            waited_ms: timeout.as_millis() as u64,
        })?;
        match line.trim_end().split_once(' ') {
            Some(("ok", _)) => Ok(()),
            Some(("error", message)) => Err(RuntimeError::StartFailed {
                id: id.to_string(),
                message: with_diagnostics(message, &paths.shim_err()),
            }),
            _ => Err(RuntimeError::StartFailed {
                id: id.to_string(),
                message: format!(
                    "shim gave no handshake (see {})",
                    paths.shim_err().display()
                ),
            }),
        }
    }

    /// After a failed or timed-out start: make sure no shim or container process survives
    /// and libcontainer's leftovers are gone.
    async fn abandon_start(&self, paths: &ContainerPaths) {
        if let Ok(state) = read_json::<ShimState>(&paths.state()) {
            for process in state.init.iter().chain([&state.shim]) {
                let _ = process.signal(Signal::SIGKILL);
                wait_exit(process, KILL_WAIT).await;
            }
        }
        if paths.shim_spec().exists() {
            let args = [OsString::from(&paths.dir)];
            let timeout = self.config.helper_timeout;
            let _ = run_helper(&self.config.shim_path, "cleanup", &args, timeout).await;
        }
    }

    /// Stops a container: SIGTERM to its init process, SIGKILL once `grace` passed. Returns
    /// when it is dead and its shim recorded the exit. Stopping a stopped container is a
    /// no-op.
    ///
    /// The init process is PID 1 of its namespace, so the kernel drops a SIGTERM it has no
    /// handler for: such a container (e.g. a bare `sleep`) always takes the whole grace.
    pub async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        let mut state = match self.shim_state(id) {
            Err(RuntimeError::CorruptState { .. }) => return self.stop_unrecorded(id).await,
            other => other?,
        };
        if state.phase == Phase::Creating && state.shim.is_alive() {
            wait_exit_or_phase(self, id, self.config.start_timeout).await;
            state = self.shim_state(id)?;
        }
        if let (Phase::Running, Some(init)) = (state.phase, state.init) {
            self.terminate(id, &init, grace).await?;
        }
        if !wait_exit(&state.shim, self.config.shim_exit_timeout).await {
            return Err(RuntimeError::Timeout {
                what: format!("shim of container {id} recording the exit"),
                waited_ms: self.config.shim_exit_timeout.as_millis() as u64,
            });
        }
        Ok(())
    }

    /// Stops a container whose record cannot be read, so neither its init process nor its
    /// shim is known: SIGKILLs every process in its cgroup (named by `shim.json`), then waits
    /// until the cgroup is empty. A live shim then records the exit, which replaces the
    /// unreadable record; `remove` cleans up after a dead one. An empty cgroup: already
    /// stopped.
    async fn stop_unrecorded(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let spec: ShimSpec = read_json(&self.container_paths(id).shim_spec())?;
        let (mode, path) = (self.cgroup_mode, spec.cgroups_path.clone());
        let killed = tokio::task::spawn_blocking(move || cgroups::kill_all(mode, &path))
            .await
            .map_err(|e| RuntimeError::invalid("cgroup kill", e.to_string()))??;
        if killed == 0 {
            return Ok(());
        }
        tracing::warn!(container = %id, killed, "container record unreadable: its cgroup was killed");
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while !cgroups::procs(self.cgroup_mode, &spec.cgroups_path).is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    what: format!("SIGKILLed container {id}"),
                    waited_ms: KILL_WAIT.as_millis() as u64,
                });
            }
            tokio::time::sleep(POLL_STEP).await;
        }
        // A live shim now records the exit; then it exits, as after any stop.
        let deadline = tokio::time::Instant::now() + UNRECORDED_SHIM_WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(state) = self.shim_state(id) {
                wait_exit(&state.shim, self.config.shim_exit_timeout).await;
                break;
            }
            tokio::time::sleep(POLL_STEP).await;
        }
        Ok(())
    }

    async fn terminate(
        &self,
        id: &ContainerId,
        init: &ProcIdentity,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let signal_error = |errno| RuntimeError::sys(format!("signalling container {id}"), errno);
        if init.signal(Signal::SIGTERM).map_err(signal_error)? && wait_exit(init, grace).await {
            return Ok(());
        }
        init.signal(Signal::SIGKILL).map_err(signal_error)?;
        if !wait_exit(init, KILL_WAIT).await {
            return Err(RuntimeError::Timeout {
                what: format!("SIGKILLed container {id}"),
                waited_ms: KILL_WAIT.as_millis() as u64,
            });
        }
        Ok(())
    }

    /// Removes a stopped container: cgroup, libcontainer state, rootfs, logs and directory.
    /// Refused while it runs; removing a removed container is a no-op.
    pub async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let paths = self.container_paths(id);
        if !paths.dir.exists() {
            return Ok(());
        }
        if let Ok(state) = read_json::<ShimState>(&paths.state()) {
            if state.init.is_some_and(|p| p.is_alive()) {
                return Err(RuntimeError::StillRunning { id: id.to_string() });
            }
            // A shim still finishing (logs drained, cgroup deleted) gets a moment.
            wait_exit(&state.shim, self.config.shim_exit_timeout).await;
        }
        let spec = read_json::<ShimSpec>(&paths.shim_spec()).ok();
        if let Some(spec) = &spec {
            if self.needs_cleanup(&paths, spec) {
                let args = [OsString::from(&paths.dir)];
                let timeout = self.config.helper_timeout;
                run_helper(&self.config.shim_path, "cleanup", &args, timeout).await?;
            }
            release_rootfs(&spec.rootfs_dir)?;
        }
        remove_dir_safely(&paths.dir)
    }

    /// Releases root filesystems under the state directory's `rootfs/` that no container
    /// references and that are older than `min_age`: prepared by an agent that died before
    /// their container started. Pass a `min_age` above the start timeout, so that a start in
    /// progress keeps its rootfs. Returns how many were released.
    pub fn remove_orphan_rootfs(&self, min_age: Duration) -> Result<usize, RuntimeError> {
        let referenced: HashSet<PathBuf> = self
            .container_ids()?
            .iter()
            .filter_map(|id| read_json::<ShimSpec>(&self.container_paths(id).shim_spec()).ok())
            .map(|spec| spec.rootfs_dir)
            .collect();
        let root = self.config.state_dir.join("rootfs");
        let mut released = 0;
        for entry in fs::read_dir(&root).ctx("listing", &root)?.take(MAX_LISTED) {
            let path = entry.ctx("listing", &root)?.path();
            let age = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or(Duration::ZERO);
            if referenced.contains(&path) || age < min_age {
                continue;
            }
            release_rootfs(&path)?;
            released += 1;
        }
        Ok(released)
    }

    /// Whether libcontainer state or the container's cgroup outlived the shim.
    fn needs_cleanup(&self, paths: &ContainerPaths, spec: &ShimSpec) -> bool {
        let cgroup_left = self
            .cgroup_mode
            .hierarchies()
            .iter()
            .any(|h| cgroups::in_hierarchy(h, &spec.cgroups_path).exists());
        cgroup_left || paths.youki_root().join(&spec.id).exists()
    }
}

/// Waits (bounded) until a shim that is still creating finishes that phase.
async fn wait_exit_or_phase(runtime: &Runtime, id: &ContainerId, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match runtime.shim_state(id) {
            Ok(s) if s.phase == Phase::Creating && s.shim.is_alive() => {}
            _ => return,
        }
        tokio::time::sleep(POLL_STEP).await;
    }
}

/// Appends the end of the shim's stderr (its diagnostics, or libcontainer's debug log with
/// `FLOTILLA_SHIM_DEBUG`) to a start error: the container directory is about to go.
fn with_diagnostics(message: &str, shim_err: &Path) -> String {
    let data = fs::read(shim_err).unwrap_or_default();
    let tail = &data[data.len().saturating_sub(MAX_DIAGNOSTIC_BYTES)..];
    let text = String::from_utf8_lossy(tail);
    match text.trim() {
        "" => message.to_string(),
        tail => format!("{message}; shim stderr: {tail}"),
    }
}

/// Unmounts and deletes a container's root filesystem and its directory.
fn release_rootfs(rootfs_dir: &Path) -> Result<(), RuntimeError> {
    if rootfs_dir.join("rootfs").exists() {
        Rootfs::adopt(rootfs_dir)?.release()?;
    }
    match fs::remove_dir(rootfs_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("removing", rootfs_dir, e))
        }
        _ => Ok(()),
    }
}
