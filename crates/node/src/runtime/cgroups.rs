//! cgroup layout of the runtime: v1 (legacy or hybrid) or v2 detection, the cgroups path of a
//! pod and of a container (`/<parent>/<pod-uid>/<container-id>`, relative to the root of every
//! hierarchy, which is what libcontainer's cgroupfs managers expect for both versions), the OOM
//! kill counter, killing every process of a cgroup (frozen first), and removal of the empty pod
//! and parent directories that libcontainer leaves.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::error::RuntimeError;

/// Where cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Deepest directory tree removed under a pod cgroup (pod → container).
const MAX_REMOVE_DEPTH: usize = 2;

/// Which cgroup version the host runs containers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Legacy or hybrid hosts: controllers live in v1 hierarchies.
    V1,
    /// Unified hosts.
    V2,
}

impl CgroupMode {
    /// Detects the mode the same way libcontainer will choose its cgroup manager.
    pub fn detect() -> Result<CgroupMode, RuntimeError> {
        use libcgroups::common::{get_cgroup_setup, CgroupSetup};
        match get_cgroup_setup() {
            Ok(CgroupSetup::Unified) => Ok(CgroupMode::V2),
            Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid) => Ok(CgroupMode::V1),
            Err(e) => Err(RuntimeError::invalid("cgroup setup", e.to_string())),
        }
    }

    /// The directories a relative cgroups path lives under: every v1 controller hierarchy, or
    /// the single v2 root.
    pub fn hierarchies(self) -> Vec<PathBuf> {
        match self {
            CgroupMode::V2 => vec![PathBuf::from(CGROUP_ROOT)],
            CgroupMode::V1 => v1_hierarchies(),
        }
    }
}

/// Mount points of v1 hierarchies that carry controllers (named ones like `name=systemd` are
/// skipped: libcontainer does not create cgroups there).
fn v1_hierarchies() -> Vec<PathBuf> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let (fstype, options) = (right.next()?, right.nth(1)?);
            let named_only = options.split(',').all(|o| !is_controller_option(o));
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup" && !named_only).then(|| PathBuf::from(mount_point))
        })
        .collect()
}

fn is_controller_option(option: &str) -> bool {
    !matches!(
        option,
        "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
    ) && !option.starts_with("name=")
        && !option.starts_with("release_agent")
        && option != "xattr"
        && option != "clone_children"
}

/// `/<parent>/<pod-uid>`.
pub fn pod_cgroup(parent: &str, pod_uid: &str) -> PathBuf {
    Path::new("/").join(parent).join(pod_uid)
}

/// `/<parent>/<pod-uid>/<container-id>`.
pub fn container_cgroup(parent: &str, pod_uid: &str, container_id: &str) -> PathBuf {
    pod_cgroup(parent, pod_uid).join(container_id)
}

/// How long a freeze may take to settle before the kill goes ahead anyway.
const FREEZE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a freeze in progress is looked at.
const FREEZE_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Most pids read from one `cgroup.procs`.
const MAX_CGROUP_PROCS: usize = 65_536;

/// SIGKILLs every process in `cgroups_path`; returns how many were signalled. The cgroup is
/// frozen first (v1 `freezer`, v2 `cgroup.freeze`) and thawed after, so no process exits
/// and has its pid reused between the read of `cgroup.procs` and the kill; a cgroup that
/// cannot be frozen is killed without it.
pub fn kill_all(mode: CgroupMode, cgroups_path: &Path) -> Result<usize, RuntimeError> {
    let procs_dir = freezer_dir(mode, cgroups_path)
        .ok_or_else(|| RuntimeError::invalid("cgroup", "no v1 freezer hierarchy"))?;
    let freeze = match mode {
        CgroupMode::V2 => Freeze {
            file: procs_dir.join("cgroup.freeze"),
            frozen: "1",
            thawed: "0",
            state: procs_dir.join("cgroup.events"),
            state_frozen: "frozen 1",
        },
        CgroupMode::V1 => Freeze {
            file: procs_dir.join("freezer.state"),
            frozen: "FROZEN",
            thawed: "THAWED",
            state: procs_dir.join("freezer.state"),
            state_frozen: "FROZEN",
        },
    };
    let procs_file = procs_dir.join("cgroup.procs");
    if !procs_file.exists() {
        return Ok(0);
    }
    let frozen = freeze.freeze();
    let killed = fs::read_to_string(&procs_file).map(|text| {
        text.lines()
            .take(MAX_CGROUP_PROCS)
            .filter_map(|line| line.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1)
            .filter(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL)
                    .is_ok()
            })
            .count()
    });
    if frozen {
        freeze.thaw();
    }
    killed.map_err(|e| RuntimeError::io("reading", &procs_file, e))
}

/// The freeze switch of one cgroup.
struct Freeze {
    file: PathBuf,
    frozen: &'static str,
    thawed: &'static str,
    /// Where the kernel reports the freeze done, and the text that says so.
    state: PathBuf,
    state_frozen: &'static str,
}

impl Freeze {
    /// Asks for a freeze and waits up to [`FREEZE_WAIT`] for it to settle; whether it was
    /// asked (and so must be thawed).
    fn freeze(&self) -> bool {
        if fs::write(&self.file, self.frozen).is_err() {
            return false;
        }
        let started = std::time::Instant::now();
        while started.elapsed() < FREEZE_WAIT {
            let state = fs::read_to_string(&self.state).unwrap_or_default();
            if state.lines().any(|l| l.trim() == self.state_frozen) {
                return true;
            }
            std::thread::sleep(FREEZE_POLL);
        }
        true
    }

    fn thaw(&self) {
        let _ = fs::write(&self.file, self.thawed);
    }
}

/// The directory of `cgroups_path` that can be frozen: in the v2 root, or in the v1
/// `freezer` hierarchy (which libcontainer puts every container in).
fn freezer_dir(mode: CgroupMode, cgroups_path: &Path) -> Option<PathBuf> {
    let hierarchy = match mode {
        CgroupMode::V2 => PathBuf::from(CGROUP_ROOT),
        CgroupMode::V1 => v1_hierarchies().into_iter().find(|h| {
            h.file_name()
                .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == "freezer"))
        })?,
    };
    Some(in_hierarchy(&hierarchy, cgroups_path))
}

/// Pids in `cgroups_path`; empty when it is gone.
pub fn procs(mode: CgroupMode, cgroups_path: &Path) -> Vec<i32> {
    let Some(dir) = freezer_dir(mode, cgroups_path) else {
        return Vec::new();
    };
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .take(MAX_CGROUP_PROCS)
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// `cgroups_path` inside `hierarchy` (the path is absolute relative to the hierarchy root).
pub fn in_hierarchy(hierarchy: &Path, cgroups_path: &Path) -> PathBuf {
    hierarchy.join(cgroups_path.strip_prefix("/").unwrap_or(cgroups_path))
}

/// How many times the kernel OOM-killed a process of this cgroup; `None` when unknown.
pub fn oom_kill_count(mode: CgroupMode, cgroups_path: &Path) -> Option<u64> {
    let (hierarchy, file) = match mode {
        CgroupMode::V1 => (Path::new(CGROUP_ROOT).join("memory"), "memory.oom_control"),
        CgroupMode::V2 => (PathBuf::from(CGROUP_ROOT), "memory.events"),
    };
    let text = fs::read_to_string(in_hierarchy(&hierarchy, cgroups_path).join(file)).ok()?;
    parse_oom_kill(&text)
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Removes the (empty) cgroup `cgroups_path` and its empty children from every hierarchy.
/// A cgroup that still holds processes is left in place and reported.
pub fn remove_tree(mode: CgroupMode, cgroups_path: &Path) -> Result<(), RuntimeError> {
    for hierarchy in mode.hierarchies() {
        remove_dir_tree(&in_hierarchy(&hierarchy, cgroups_path), MAX_REMOVE_DEPTH)?;
    }
    Ok(())
}

fn remove_dir_tree(dir: &Path, depth_left: usize) -> Result<(), RuntimeError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RuntimeError::io("listing cgroup", dir, e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) && depth_left > 0 {
            remove_dir_tree(&entry.path(), depth_left - 1)?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(RuntimeError::io("removing cgroup", dir, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<u64>) {
        assert_eq!(parse_oom_kill(text), expected, "{text:?}");
    }

    #[test]
    fn oom_kill_counter_is_read_from_both_formats() {
        check("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", Some(2));
        check("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n", Some(1));
        check("oom_kill_disable 0\nunder_oom 0\n", None);
    }

    #[test]
    fn paths_nest_pod_and_container() {
        let path = container_cgroup("flotilla", "pod-1", "pod-1.web.ab12");
        assert_eq!(path, Path::new("/flotilla/pod-1/pod-1.web.ab12"));
        assert_eq!(
            in_hierarchy(Path::new("/sys/fs/cgroup/memory"), &path),
            Path::new("/sys/fs/cgroup/memory/flotilla/pod-1/pod-1.web.ab12")
        );
    }
}
