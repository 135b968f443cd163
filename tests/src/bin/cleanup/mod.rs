//! Best-effort sweeps that leave the host as a benchmark found it, even after a failure: kill
//! processes whose command line names a benchmark's temporary directory, unmount everything
//! below that directory, kill and remove pod cgroups, delete network links the benchmark made.
//! Every sweep only touches what is provably the benchmark's own (its directory, its pod uids,
//! links that did not exist before it started).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Processes looked at per sweep (far above what a benchmark starts).
const MAX_PROCS_SCANNED: usize = 100_000;
/// Mounts unmounted per sweep.
const MAX_MOUNTS: usize = 10_000;
/// cgroup directories removed per pod (pod → container).
const MAX_CGROUP_DEPTH: usize = 3;
/// How long a process gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// The cgroup parent (below each hierarchy) of the agent's pods (the agent's default).
pub const POD_CGROUP_PARENT: &str = "flotilla";

/// The command line of process `pid`, arguments separated by spaces.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Pids of processes (other than this one) whose command line matches `wanted`.
pub fn pids_where(wanted: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .take(MAX_PROCS_SCANNED)
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| cmdline(*pid).is_some_and(|args| wanted(&args)))
        .collect()
}

/// SIGKILLs every process whose command line mentions `dir`.
pub fn kill_processes_naming(dir: &Path) {
    let needle = dir.display().to_string();
    for pid in pids_where(|args| args.iter().any(|a| a.contains(&needle))) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL and reap.
pub fn stop_child(child: &mut std::process::Child, grace: Duration) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Mount points below `dir`, deepest (last mounted) first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .take(MAX_MOUNTS)
        .collect();
    points.reverse();
    points
}

/// Lazily unmounts everything mounted below `dir`.
pub fn unmount_below(dir: &Path) {
    for point in mounts_below(dir) {
        let _ = umount2(&point, MntFlags::MNT_DETACH);
    }
}

/// Kills the processes of pod cgroups `<hierarchy>/<parent>/<uid>` and removes the cgroups.
pub fn remove_pod_cgroups(parent: &str, uids: &[String]) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots: Vec<PathBuf> = hierarchies.filter_map(|h| Some(h.ok()?.path())).collect();
    for uid in uids {
        for root in &roots {
            let pod = root.join(parent).join(uid);
            if pod.is_dir() {
                kill_and_remove_cgroup(&pod, MAX_CGROUP_DEPTH);
            }
        }
    }
}

fn kill_and_remove_cgroup(dir: &Path, depth_left: usize) {
    if depth_left == 0 {
        return;
    }
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.filter_map(|c| c.ok()).map(|c| c.path()) {
            if child.is_dir() {
                kill_and_remove_cgroup(&child, depth_left - 1);
            }
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when network link `name` exists in this namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes network link `name` if it exists.
pub fn delete_link(name: &str) {
    if link_exists(name) {
        let _ = Command::new("ip").args(["link", "del", name]).status();
    }
}

/// Pod uids agent `agent_dir` made directories for (`<agent_dir>/pods/<uid>`).
pub fn pod_uids(agent_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(agent_dir.join("pods")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// After real agents with data directories `agent_dirs` below `root` have been stopped: kills
/// what is left of their pods (processes naming `root`, pod cgroups), unmounts everything below
/// `root` and deletes their `bridges`.
pub fn sweep_agents(root: &Path, agent_dirs: &[PathBuf], bridges: &[String]) {
    let uids: Vec<String> = agent_dirs.iter().flat_map(|d| pod_uids(d)).collect();
    kill_processes_naming(root);
    remove_pod_cgroups(POD_CGROUP_PARENT, &uids);
    unmount_below(root);
    for bridge in bridges {
        delete_link(bridge);
    }
}
