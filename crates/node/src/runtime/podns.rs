//! A pod's own namespaces, created on a short-lived thread of the agent and pinned by
//! bind-mounting `/proc/thread-self/ns/<kind>` onto `<sandbox-dir>/<kind>` (the way
//! `ip netns add` does), so they outlive the thread without a pause process. The hostname is
//! set and loopback brought up before the thread exits. On any error every mount made so far
//! is undone.
//!
//! Why a thread and not a helper process: `unshare` of the network, IPC and UTS namespaces
//! moves only the calling thread, so it is safe in the multithreaded agent. The thread is
//! spawned for this alone and exits when done, so no other work ever runs inside the new
//! namespaces. A helper process cost an `exec` of the agent's binary per pod (about 3.5 ms
//! of CPU) for the same three calls.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::error::RuntimeError;

/// A namespace a pod may own, as named under `/proc/<pid>/ns` and in the sandbox directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Net,
    Ipc,
    Uts,
}

impl Kind {
    /// Every kind, in the order they are pinned (and looked for at teardown).
    pub(crate) const ALL: [Kind; 3] = [Kind::Net, Kind::Ipc, Kind::Uts];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// Creates new namespaces of `kinds` and pins each at `<dir>/<kind>`. With a UTS namespace
/// its hostname is set to `hostname`; with a network namespace its loopback is brought up.
/// Runs on a thread of its own and waits for it at most `timeout`.
pub(crate) async fn create(
    dir: &Path,
    kinds: &[Kind],
    hostname: &str,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let error = |message: String| RuntimeError::Sandbox { message };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dir = dir.to_path_buf();
    let kinds = kinds.to_vec();
    let hostname = OsString::from(hostname);
    std::thread::Builder::new()
        .name("pod-namespaces".into())
        .spawn(move || {
            let _ = tx.send(create_on_this_thread(&dir, &kinds, &hostname));
        })
        .map_err(|e| error(format!("spawning a thread: {e}")))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result.map_err(error),
        Ok(Err(_)) => Err(error("the namespace thread ended without an answer".into())),
        Err(_) => Err(RuntimeError::Timeout {
            what: "creating pod namespaces".into(),
            waited_ms: timeout.as_millis() as u64,
        }),
    }
}

/// Must run on a thread that is dropped right after: it leaves the thread in the new
/// namespaces.
fn create_on_this_thread(dir: &Path, kinds: &[Kind], hostname: &OsString) -> Result<(), String> {
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |flags, kind| flags | kind.flag());
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if kinds.contains(&Kind::Uts) {
        nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {e}"))?;
    }
    if kinds.contains(&Kind::Net) {
        loopback_up().map_err(|e| format!("bringing loopback up: {e}"))?;
    }
    let mut pinned: Vec<PathBuf> = Vec::with_capacity(kinds.len());
    for kind in kinds {
        match pin(kind.name(), &dir.join(kind.name())) {
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

/// Bind-mounts this thread's namespace of `kind` onto a new empty file `target`.
fn pin(kind: &str, target: &Path) -> Result<PathBuf, String> {
    File::options()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| format!("creating {}: {e}", target.display()))?;
    let source = PathBuf::from(format!("/proc/thread-self/ns/{kind}"));
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
