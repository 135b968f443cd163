//! `__shim cleanup <container-dir>`: removes what a shim that died early left behind — the
//! libcontainer container (its processes are killed) and the container's cgroup. Idempotent;
//! run by `Runtime::remove` only when the shim did not finish its own cleanup.

use std::fs;
use std::path::Path;

use libcontainer::container::Container;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{error_chain, EXIT_FAILED};
use crate::runtime::cgroups::{self, CgroupMode};
use crate::runtime::state::{read_json, ContainerPaths, ShimSpec};

/// Most processes killed in one cgroup (a container with more is killed on the next pass).
const MAX_PIDS_KILLED: usize = 65_536;

pub(super) fn main(dir: &Path) -> i32 {
    match cleanup(&ContainerPaths::new(dir)) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            EXIT_FAILED
        }
    }
}

fn cleanup(paths: &ContainerPaths) -> Result<(), String> {
    let spec: ShimSpec = read_json(&paths.shim_spec()).map_err(|e| e.to_string())?;
    let youki_dir = paths.youki_root().join(&spec.id);
    let mut errors = Vec::new();
    if youki_dir.exists() {
        let deleted = Container::load(youki_dir.clone()).and_then(|mut c| c.delete(true));
        if let Err(e) = deleted {
            errors.push(format!("libcontainer delete: {}", error_chain(&e)));
        }
    }
    // Whatever libcontainer could not do (or a container it never recorded): kill what is
    // left in the cgroup, then remove it.
    let mode = CgroupMode::detect().map_err(|e| e.to_string())?;
    for hierarchy in mode.hierarchies() {
        let procs = cgroups::in_hierarchy(&hierarchy, &spec.cgroups_path).join("cgroup.procs");
        let text = fs::read_to_string(&procs).unwrap_or_default();
        for pid in text.lines().take(MAX_PIDS_KILLED) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    if let Err(e) = remove_with_retry(mode, &spec.cgroups_path) {
        errors.push(e);
    }
    if let Err(e) = fs::remove_dir_all(&youki_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            errors.push(format!("removing {}: {e}", youki_dir.display()));
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

/// Killed processes leave their cgroup a moment after SIGKILL; retry the removal briefly.
fn remove_with_retry(mode: CgroupMode, path: &Path) -> Result<(), String> {
    const ATTEMPTS: u32 = 20;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match cgroups::remove_tree(mode, path) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(PAUSE);
    }
    Err(last)
}
