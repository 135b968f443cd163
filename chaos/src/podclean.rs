//! Removing what node agents leave behind: their containers (which live in pod network
//! namespaces, not in the agent's, so `ip netns pids` does not see them), the mounts under their
//! data directories (overlay root filesystems, pinned pod namespaces, volumes) and their pods'
//! cgroups (`/<parent>/<pod-uid>/<container>` in every hierarchy). The agents' own processes
//! and shims live in the host's namespace and go with it (see [`crate::clean`]); so do the pod
//! bridge and the host ends of the pods' veths.
//!
//! A run registers its agents' data directories in `<OWNER_DIR>/<run id>.agents` before any
//! agent starts, so `flotilla-chaos clean` finds them after a crash too. Pods are recognised
//! by their uid: a cgroup is only touched when the uid is one an agent of the run knows (a
//! directory under its `runtime/sandboxes/` or a container record naming it), never by the
//! shared parent alone, which other agents on the machine use as well.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::clean::{CleanReport, Which, OWNER_DIR};
use crate::net::slot_of_name;

/// The agent's cgroup parent (`flotilla agent` has no flag for it).
pub const CGROUP_PARENT: &str = "flotilla";

/// Most pods one agent directory is searched for.
pub const MAX_PODS_PER_AGENT: usize = 10_000;

/// Deepest cgroup tree under a pod (pod → container).
const MAX_CGROUP_DEPTH: usize = 2;

/// How long killed containers get to disappear from their cgroups.
const CONTAINER_KILL_WAIT: Duration = Duration::from_secs(5);

/// Rounds of "kill what is in the pods' cgroups" (a dying shim may still start something).
const KILL_ROUNDS: usize = 3;

fn registry_file(slot: u16) -> PathBuf {
    Path::new(OWNER_DIR).join(format!("{slot:03x}.agents"))
}

/// Records the data directories of a run's agents, one per line.
pub fn register_agent_dirs(slot: u16, dirs: &[PathBuf]) -> std::io::Result<()> {
    std::fs::create_dir_all(OWNER_DIR)?;
    let text: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    std::fs::write(registry_file(slot), text)
}

/// The registered agent data directories of the selected runs, with their slots.
pub fn registered_agent_dirs(which: &Which) -> Vec<(u16, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(OWNER_DIR) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".agents") else {
            continue;
        };
        let Some(slot) = slot_of_name(&format!("flc-{id}-")) else {
            continue;
        };
        if !which.matches(&format!("flc-{id}-")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        found.extend(parse_registry(&text).into_iter().map(|dir| (slot, dir)));
    }
    found
}

/// Absolute paths, one per line, each with a harness name component (anything else is ignored:
/// the registry must never steer the clean-up outside the harness's own directories).
pub fn parse_registry(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with('/'))
        .filter(|line| line.split('/').any(|c| slot_of_name(c).is_some()))
        .map(PathBuf::from)
        .collect()
}

pub fn forget_agent_dirs(slot: u16) {
    let _ = std::fs::remove_file(registry_file(slot));
}

/// Kills the containers of every pod the agent at `data_dir` knows, unmounts everything below
/// the directory and removes the pods' cgroups.
pub fn clean_agent_dir(data_dir: &Path, report: &mut CleanReport) {
    let uids = pod_uids(data_dir);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let hierarchies = cgroup_hierarchies(&mountinfo);
    let pod_dirs: Vec<PathBuf> = hierarchies
        .iter()
        .flat_map(|h| uids.iter().map(move |uid| h.join(CGROUP_PARENT).join(uid)))
        .filter(|dir| dir.is_dir())
        .collect();
    kill_cgroup_members(&pod_dirs, report);
    for mount_point in mounts_under(&mountinfo, data_dir) {
        match nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => report.mounts.push(mount_point.display().to_string()),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => report
                .errors
                .push(format!("umount {}: {e}", mount_point.display())),
        }
    }
    for dir in pod_dirs {
        remove_cgroup_tree(&dir, MAX_CGROUP_DEPTH, report);
    }
}

/// Uids of the pods an agent's runtime directory names: sandbox directories, and the pod part
/// of every container's `shim.json` cgroups path.
pub fn pod_uids(data_dir: &Path) -> BTreeSet<String> {
    let runtime = data_dir.join("runtime");
    let mut uids: BTreeSet<String> = dir_names(&runtime.join("sandboxes"))
        .into_iter()
        .filter(|n| is_pod_uid(n))
        .collect();
    for container in dir_names(&runtime.join("containers")) {
        let record = runtime.join("containers").join(container).join("shim.json");
        let Ok(text) = std::fs::read_to_string(record) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(uid) = json["cgroups_path"].as_str().and_then(pod_uid_of_cgroup) {
            uids.insert(uid);
        }
    }
    uids
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .take(MAX_PODS_PER_AGENT)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

/// A uid is letters, digits and dashes (so it is one safe path component).
pub fn is_pod_uid(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `/flotilla/<uid>/<container>` → `<uid>`.
pub fn pod_uid_of_cgroup(cgroups_path: &str) -> Option<String> {
    let mut parts = cgroups_path.trim_start_matches('/').split('/');
    if parts.next()? != CGROUP_PARENT {
        return None;
    }
    parts
        .next()
        .filter(|uid| is_pod_uid(uid))
        .map(str::to_string)
}

/// Mount points of cgroup (v1) and cgroup2 filesystems in mountinfo text.
pub fn cgroup_hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

/// Mount points at or below `dir` in mountinfo text, deepest first, each once.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let found: BTreeSet<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    let mut found: Vec<PathBuf> = found.into_iter().collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pids in `dir`'s `cgroup.procs` and its children's, to [`MAX_CGROUP_DEPTH`].
fn cgroup_members(dir: &Path, depth: usize, pids: &mut BTreeSet<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    if depth == 0 {
        return;
    }
    for child in subdirectories(dir) {
        cgroup_members(&child, depth - 1, pids);
    }
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn kill_cgroup_members(pod_dirs: &[PathBuf], report: &mut CleanReport) {
    let own = std::process::id() as i32;
    for _ in 0..KILL_ROUNDS {
        let mut pids = BTreeSet::new();
        for dir in pod_dirs {
            cgroup_members(dir, MAX_CGROUP_DEPTH, &mut pids);
        }
        pids.remove(&own);
        if pids.is_empty() {
            return;
        }
        for &pid in &pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => report.processes.push(pid),
                Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => report.errors.push(format!("kill {pid}: {e}")),
            }
        }
        let deadline = Instant::now() + CONTAINER_KILL_WAIT;
        while pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes a cgroup and its (empty) children, deepest first.
fn remove_cgroup_tree(dir: &Path, depth: usize, report: &mut CleanReport) {
    if depth > 0 {
        for child in subdirectories(dir) {
            remove_cgroup_tree(&child, depth - 1, report);
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => report.cgroups.push(dir.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report
            .errors
            .push(format!("removing cgroup {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
26 1 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
30 1 0:40 / /tmp/r/hosts/flc-00a-4/data/runtime/containers/c1/rootfs rw - overlay overlay rw
31 1 0:4 net:[4026] /tmp/r/hosts/flc-00a-4/data/runtime/sandboxes/u1/net rw - nsfs nsfs rw
32 1 0:41 / /tmp/r/hosts/flc-00a-4/data/pods/u1/volumes/my\\040vol rw - tmpfs tmpfs rw
33 1 0:42 / /tmp/r/hosts/flc-00a-40/data/x rw - tmpfs tmpfs rw
34 1 8:1 / / rw - ext4 /dev/vda rw
";

    #[test]
    fn finds_hierarchies_and_the_mounts_below_an_agent_deepest_first() {
        assert_eq!(
            cgroup_hierarchies(MOUNTINFO),
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
        let dir = Path::new("/tmp/r/hosts/flc-00a-4/data");
        let mounts = mounts_under(MOUNTINFO, dir);
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        assert!(mounts.contains(&dir.join("pods/u1/volumes/my vol")));
        assert!(
            !mounts
                .iter()
                .any(|m| m.starts_with("/tmp/r/hosts/flc-00a-40")),
            "a sibling whose name merely starts the same is not below"
        );
        let depths: Vec<usize> = mounts.iter().map(|m| m.components().count()).collect();
        assert!(depths.windows(2).all(|w| w[0] >= w[1]), "{mounts:?}");
    }

    #[test]
    fn pod_uids_come_only_from_safe_names_under_the_agent_parent() {
        let check = |path: &str, expected: Option<&str>| {
            assert_eq!(pod_uid_of_cgroup(path).as_deref(), expected, "{path}");
        };
        check("/flotilla/6b1f-22/c-1", Some("6b1f-22"));
        check("flotilla/abc", Some("abc"));
        check("/other/abc/c", None);
        check("/flotilla/../c", None);
        check("/flotilla", None);
        assert!(!is_pod_uid("a/b") && !is_pod_uid("") && is_pod_uid("A-1"));
    }

    #[test]
    fn the_registry_only_names_harness_directories() {
        let text = "/tmp/r/hosts/flc-00a-4/data\nrelative/flc-00a-5\n/var/lib/flotilla\n\n";
        assert_eq!(
            parse_registry(text),
            [PathBuf::from("/tmp/r/hosts/flc-00a-4/data")]
        );
    }

    #[test]
    fn uids_are_read_from_sandboxes_and_container_records() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime");
        std::fs::create_dir_all(runtime.join("sandboxes/uid-a")).unwrap();
        std::fs::create_dir_all(runtime.join("containers/c1")).unwrap();
        std::fs::create_dir_all(runtime.join("containers/c2")).unwrap();
        let record = r#"{"cgroups_path":"/flotilla/uid-b/c1","other":1}"#;
        std::fs::write(runtime.join("containers/c1/shim.json"), record).unwrap();
        std::fs::write(runtime.join("containers/c2/shim.json"), "{torn").unwrap();
        let uids: Vec<String> = pod_uids(dir.path()).into_iter().collect();
        assert_eq!(uids, ["uid-a", "uid-b"]);
    }
}
