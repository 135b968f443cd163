//! The on-disk records that let an agent restart adopt containers: the layout of a container
//! directory, [`ShimSpec`] (written by the agent before it starts a shim) and [`ShimState`]
//! (written only by the shim, always by an atomic rename), plus bounded JSON IO.
//!
//! Container directory `<state_dir>/containers/<id>/`:
//! - `shim.json` — [`ShimSpec`]; `state.json` — [`ShimState`];
//! - `bundle/config.json` — the OCI spec; `youki/` — libcontainer's state root;
//! - `container.log`, `container.log.1` — CRI-format output, rotated;
//! - `shim.err` — the shim's own diagnostics.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{IoContext, RuntimeError};
use super::procs::ProcIdentity;

/// Largest state or spec file read (they are a few hundred bytes; a bigger one is corrupt).
pub const MAX_STATE_FILE_BYTES: u64 = 1 << 20;

/// Paths inside one container directory.
#[derive(Debug, Clone)]
pub(crate) struct ContainerPaths {
    pub dir: PathBuf,
}

impl ContainerPaths {
    pub fn new(dir: &Path) -> ContainerPaths {
        ContainerPaths {
            dir: dir.to_path_buf(),
        }
    }
    pub fn shim_spec(&self) -> PathBuf {
        self.dir.join("shim.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn youki_root(&self) -> PathBuf {
        self.dir.join("youki")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn rotated_log(&self) -> PathBuf {
        self.dir.join("container.log.1")
    }
    pub fn shim_err(&self) -> PathBuf {
        self.dir.join("shim.err")
    }
}

/// What the shim needs besides the OCI bundle; written by the agent before the shim starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShimSpec {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    /// The directory whose `rootfs/` the container uses (released on remove).
    pub rootfs_dir: PathBuf,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroups_path: PathBuf,
    /// Bound of the live log file before it is rotated.
    pub log_max_bytes: u64,
    /// The node lease the agent keeps renewed ([`crate::runtime::lease`]); when it lapses the
    /// shim kills its container even if the agent itself is dead.
    #[serde(default)]
    pub lease_file: Option<PathBuf>,
}

/// Where a container is in its life, as its shim last recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Phase {
    /// The shim runs; the container is being created.
    Creating,
    Running,
    /// The init process exited; the fields `finished_at_ns`, `exit_code` are set.
    Exited,
    /// Creating or starting failed; `error` says why.
    Failed,
}

/// The shim's record of its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShimState {
    pub phase: Phase,
    pub shim: ProcIdentity,
    pub init: Option<ProcIdentity>,
    pub started_at_ns: Option<u64>,
    pub finished_at_ns: Option<u64>,
    /// Exit code, or 128 + signal number when the init process was killed by a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The container's cgroup recorded at least one OOM kill.
    pub oom_killed: bool,
    pub error: Option<String>,
}

impl ShimState {
    pub fn creating(shim: ProcIdentity) -> ShimState {
        ShimState {
            phase: Phase::Creating,
            shim,
            init: None,
            started_at_ns: None,
            finished_at_ns: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            error: None,
        }
    }
}

pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_nanos(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Writes `value` as JSON to `path` atomically: a temporary file in the same directory,
/// fsynced, then renamed over the target, so readers see the old or the new file, whole.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let data =
        serde_json::to_vec(value).map_err(|e| RuntimeError::invalid("state", e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).ctx("creating", &tmp)?;
    file.write_all(&data).ctx("writing", &tmp)?;
    file.sync_all().ctx("syncing", &tmp)?;
    fs::rename(&tmp, path).ctx("renaming into", path)
}

/// Reads JSON from `path`, refusing files over [`MAX_STATE_FILE_BYTES`].
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RuntimeError> {
    let file = File::open(path).ctx("opening", path)?;
    let mut data = Vec::new();
    file.take(MAX_STATE_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .ctx("reading", path)?;
    if data.len() as u64 > MAX_STATE_FILE_BYTES {
        return Err(RuntimeError::CorruptState {
            path: path.to_path_buf(),
            reason: "larger than MAX_STATE_FILE_BYTES".into(),
        });
    }
    serde_json::from_slice(&data).map_err(|e| RuntimeError::CorruptState {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_an_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = ShimState::creating(ProcIdentity {
            pid: 42,
            start_ticks: 7,
        });
        write_json_atomic(&path, &state).unwrap();
        state.phase = Phase::Exited;
        state.exit_code = Some(3);
        write_json_atomic(&path, &state).unwrap();
        let back: ShimState = read_json(&path).unwrap();
        assert_eq!(back, state);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn garbage_is_a_corrupt_state_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{not json").unwrap();
        let result: Result<ShimState, _> = read_json(&path);
        assert!(matches!(result, Err(RuntimeError::CorruptState { .. })));
    }
}
