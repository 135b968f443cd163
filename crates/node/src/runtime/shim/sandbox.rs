//! `__shim sandbox <sandbox-dir> <hostname>`: creates a pod's network, IPC and UTS namespaces
//! and pins each one by bind-mounting `/proc/self/ns/<kind>` onto `<sandbox-dir>/<kind>` (the
//! way `ip netns add` does), so they outlive this short process without a pause process. The
//! hostname is set and loopback brought up before the process exits. On any error every
//! mount made so far is undone.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::EXIT_FAILED;

/// The namespaces a pod shares, as named under `/proc/self/ns` and in the sandbox directory.
pub(crate) const POD_NAMESPACES: [&str; 3] = ["net", "ipc", "uts"];

pub(super) fn main(dir: &Path, hostname: &OsStr) -> i32 {
    match create(dir, hostname) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            EXIT_FAILED
        }
    }
}

fn create(dir: &Path, hostname: &OsStr) -> Result<(), String> {
    let flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {e}"))?;
    loopback_up().map_err(|e| format!("bringing loopback up: {e}"))?;
    let mut pinned: Vec<PathBuf> = Vec::with_capacity(POD_NAMESPACES.len());
    for kind in POD_NAMESPACES {
        match pin(kind, &dir.join(kind)) {
            Ok(target) => pinned.push(target),
            Err(message) => {
                for target in &pinned {
                    let _ = umount2(target, MntFlags::MNT_DETACH);
                    let _ = fs::remove_file(target);
                }
                return Err(message);
            }
        }
    }
    Ok(())
}

/// Bind-mounts this process's namespace of `kind` onto a new empty file `target`.
fn pin(kind: &str, target: &Path) -> Result<PathBuf, String> {
    File::options()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| format!("creating {}: {e}", target.display()))?;
    let source = PathBuf::from(format!("/proc/self/ns/{kind}"));
    if let Err(e) = mount(
        Some(&source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = fs::remove_file(target);
        return Err(format!("bind-mounting {kind} namespace: {e}"));
    }
    Ok(target.to_path_buf())
}

/// Sets IFF_UP on `lo` of the current network namespace.
fn loopback_up() -> Result<(), nix::errno::Errno> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of a valid ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(nix::errno::Errno::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    Ok(())
}
