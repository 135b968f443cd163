//! Removing what runs leave behind: peer and agent processes, the agents' containers, mounts and
//! pod cgroups (through [`crate::podclean`]), tmpfs mounts, the root veth and the network
//! namespaces (whose iptables rules, tc qdiscs, pod bridges and veths go with them). Everything is found by the
//! [`NAME_PREFIX`] its name carries, so `flotilla-chaos clean` can tidy up after a crashed or
//! killed harness, and a finished run removes exactly its own slot.
//!
//! The harness never adds rules to the root namespace's firewall, so there is nothing to remove
//! there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::net::{slot_of_name, NAME_PREFIX};
use crate::podclean;
use crate::sys;

/// How long to wait for killed processes to disappear before removing their namespaces.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a clean-up removed (or failed to remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanReport {
    pub processes: Vec<i32>,
    pub mounts: Vec<String>,
    pub links: Vec<String>,
    pub namespaces: Vec<String>,
    /// Pod cgroups of the run's agents.
    #[serde(default)]
    pub cgroups: Vec<String>,
    pub errors: Vec<String>,
}

impl CleanReport {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.links.is_empty()
            && self.namespaces.is_empty()
            && self.cgroups.is_empty()
    }
}

/// Which runs to clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// Every run, live or not.
    All,
    /// One run's slot.
    Slot(u16),
    /// Every run except these slots (the live ones, see [`live_slots`]).
    AllExcept(BTreeSet<u16>),
}

impl Which {
    /// Whether `name` (a namespace, link, mount source or path component) belongs to a
    /// selected run.
    pub fn matches(&self, name: &str) -> bool {
        match (self, slot_of_name(name)) {
            (_, None) => false,
            (Which::All, Some(_)) => true,
            (Which::Slot(wanted), Some(slot)) => slot == *wanted,
            (Which::AllExcept(live), Some(slot)) => !live.contains(&slot),
        }
    }
}

/// Where a running harness notes which slot it owns (`<run id>.pid`, holding its pid).
pub const OWNER_DIR: &str = "/run/flotilla-chaos";

fn owner_file(slot: u16) -> PathBuf {
    Path::new(OWNER_DIR).join(format!("{slot:03x}.pid"))
}

/// Records that this process owns `slot`, so that `clean` leaves the run alone.
pub fn mark_owner(slot: u16) -> std::io::Result<()> {
    std::fs::create_dir_all(OWNER_DIR)?;
    std::fs::write(owner_file(slot), std::process::id().to_string())
}

fn forget_owner(slot: u16) {
    let _ = std::fs::remove_file(owner_file(slot));
}

/// Whether process `pid` runs (exists and is not a zombie waiting to be reaped).
fn is_alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Slots whose owning harness is still alive (other than this process).
pub fn live_slots() -> BTreeSet<u16> {
    let Ok(entries) = std::fs::read_dir(OWNER_DIR) else {
        return BTreeSet::new();
    };
    let own = std::process::id().to_string();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let slot = u16::from_str_radix(name.strip_suffix(".pid")?, 16).ok()?;
            let pid = std::fs::read_to_string(entry.path()).ok()?;
            let pid = pid.trim();
            (pid != own && is_alive(pid)).then_some(slot)
        })
        .collect()
}

/// Removes every leftover of the selected runs. Never fails: what could not be removed is listed
/// in [`CleanReport::errors`].
pub fn clean(which: &Which) -> CleanReport {
    let mut report = CleanReport::default();
    let namespaces = list_namespaces(which, &mut report);
    kill_processes(which, &namespaces, &mut report);
    let agent_dirs = podclean::registered_agent_dirs(which);
    for (_, dir) in &agent_dirs {
        podclean::clean_agent_dir(dir, &mut report);
    }
    unmount_tmpfs(which, &mut report);
    delete_links(which, &mut report);
    for ns in namespaces {
        match sys::run_blocking("ip", &["netns", "del", &ns]) {
            Ok(_) => report.namespaces.push(ns),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let mut slots: BTreeSet<u16> = report
        .namespaces
        .iter()
        .filter_map(|ns| slot_of_name(ns))
        .collect();
    if let Which::Slot(slot) = which {
        slots.insert(*slot);
    }
    slots.extend(agent_dirs.iter().map(|(slot, _)| *slot));
    for slot in slots {
        forget_owner(slot);
        podclean::forget_agent_dirs(slot);
    }
    report
}

/// The harness's namespaces that exist now (hosts and bridges).
pub fn list_namespaces(which: &Which, report: &mut CleanReport) -> Vec<String> {
    match sys::run_blocking("ip", &["netns", "list"]) {
        Ok(text) => parse_netns_list(&text)
            .into_iter()
            .filter(|ns| which.matches(ns))
            .collect(),
        Err(e) => {
            report.errors.push(e.to_string());
            Vec::new()
        }
    }
}

/// Names from `ip netns list` output (`flc-001-1 (id: 3)` lines).
pub fn parse_netns_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn kill_processes(which: &Which, namespaces: &[String], report: &mut CleanReport) {
    let mut pids: BTreeSet<i32> = peer_processes(which);
    for ns in namespaces {
        if let Ok(text) = sys::run_blocking("ip", &["netns", "pids", ns]) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    let own = std::process::id() as i32;
    pids.remove(&own);
    for &pid in &pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => report.processes.push(pid),
            Err(e) => report.errors.push(format!("kill {pid}: {e}")),
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes whose `--data-dir` lies under a directory the harness named (a peer of some run,
/// possibly outside any namespace if its namespace was already deleted).
pub fn peer_processes(which: &Which) -> BTreeSet<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| is_harness_peer(&cmdline, which))
        })
        .collect()
}

/// Whether a NUL-separated command line is a peer started by the harness for `which`.
pub fn is_harness_peer(cmdline: &[u8], which: &Which) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|pair| {
        pair[0] == b"--data-dir"
            && String::from_utf8_lossy(pair[1])
                .split('/')
                .any(|component| which.matches(component))
    })
}

fn unmount_tmpfs(which: &Which, report: &mut CleanReport) {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    for (source, target) in parse_mounts(&mounts) {
        if !which.matches(&source) {
            continue;
        }
        match nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => report.mounts.push(target),
            Err(e) => report.errors.push(format!("umount {target}: {e}")),
        }
    }
}

/// `(source, mount point)` of every tmpfs in `/proc/mounts` text.
pub fn parse_mounts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "tmpfs").then(|| (source.to_string(), target.to_string()))
        })
        .collect()
}

fn delete_links(which: &Which, report: &mut CleanReport) {
    let Ok(text) = sys::run_blocking("ip", &["-o", "link", "show"]) else {
        return;
    };
    for link in parse_link_names(&text) {
        if !link.starts_with(NAME_PREFIX) || !which.matches(&link) {
            continue;
        }
        match sys::run_blocking("ip", &["link", "del", &link]) {
            Ok(_) => report.links.push(link),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
}

/// Interface names from `ip -o link show` (`5: flc-001-r@if3: <…>` lines).
pub fn parse_link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_harness_names_in_tool_output() {
        let netns = "flc-00a-br (id: 2)\nflc-00a-1 (id: 3)\ncni-1234\n";
        assert_eq!(
            parse_netns_list(netns),
            ["flc-00a-br", "flc-00a-1", "cni-1234"]
        );
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\n5: flc-00a-r@if3: <BROADCAST> mtu 1500\n";
        assert_eq!(parse_link_names(links), ["lo", "flc-00a-r"]);
        let mounts = "flc-00a-2 /tmp/run/hosts/flc-00a-2/disk tmpfs rw,size=1024k 0 0\n\
                      /dev/vda / ext4 rw 0 0\n";
        assert_eq!(
            parse_mounts(mounts),
            [(
                "flc-00a-2".to_string(),
                "/tmp/run/hosts/flc-00a-2/disk".to_string()
            )]
        );
    }

    #[test]
    fn peer_processes_are_recognised_by_their_data_dir() {
        let check = |cmdline: &str, which: Which, expected: bool| {
            let bytes = cmdline.replace(' ', "\0").into_bytes();
            assert_eq!(is_harness_peer(&bytes, &which), expected, "{cmdline}");
        };
        let peer = "flotilla server --id 1 --data-dir /tmp/x/hosts/flc-00a-1/data";
        check(peer, Which::All, true);
        check(peer, Which::Slot(0xa), true);
        check(peer, Which::Slot(0xb), false);
        check(
            "flotilla server --id 1 --data-dir /var/lib/flotilla",
            Which::All,
            false,
        );
        check("vim /tmp/x/hosts/flc-00a-1/data", Which::All, false);
    }
}
