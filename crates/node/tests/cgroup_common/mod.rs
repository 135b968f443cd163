//! Cgroup helpers the agent and runtime test fixtures share: counting a test's cgroup
//! directories, the processes in a cgroup tree, and removing the tree (bounded retries while the
//! kernel lets go of exited processes).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Attempts to remove one cgroup directory, and the pause between them.
const REMOVE_ATTEMPTS: usize = 20;
const REMOVE_PAUSE: Duration = Duration::from_millis(50);

pub fn count_dirs(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    1 + entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| count_dirs(&e.path()))
        .sum::<usize>()
}

pub fn collect_pids(dir: &Path, pids: &mut BTreeSet<i32>) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), pids);
            }
        }
    }
}

pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..REMOVE_ATTEMPTS {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(REMOVE_PAUSE);
    }
}
