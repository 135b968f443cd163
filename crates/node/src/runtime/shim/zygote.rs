//! `__shim zygote`: a single-threaded process the agent starts once and asks, over the
//! `SOCK_SEQPACKET` socket it gets as stdin, to fork shim modes. A fork of this small,
//! already-loaded process replaces an `exec` of the agent's binary per container (dynamic
//! linking, relocations, faulting the image in: about 3.5 ms of CPU each).
//!
//! Protocol, one request and one reply per packet (see [`crate::runtime::zygote`]):
//! - request: `cwd \0 arg \0 arg …` (the arguments after `__shim`), with exactly two
//!   descriptors attached (`SCM_RIGHTS`): the child's stdout and stderr;
//! - reply: `ok <pid>` or `error <message>`.
//!
//! The child gets /dev/null as stdin, the two descriptors as stdout and stderr, the default
//! SIGCHLD action and `cwd`, then runs the mode exactly as an exec'd shim would and exits with
//! its code. The zygote ignores SIGCHLD, so the kernel reaps its children. It exits when the
//! agent's end of the socket closes (the agent exited or dropped its runtime).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessageOwned, MsgFlags};
use nix::unistd::{dup2, fork, ForkResult};

use super::{run_mode, EXIT_FAILED};

/// Largest request packet: a working directory and a few paths.
pub(crate) const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Descriptors a request carries: stdout and stderr.
pub(crate) const REQUEST_FDS: usize = 2;
/// Length of the zygote's blank last argument: room for a forked shim's own command line.
pub(crate) const TITLE_BYTES: usize = 4096;

/// The socket to the agent.
const SOCKET_FD: RawFd = libc::STDIN_FILENO;

/// `title` is the blank argument that makes room for the children's command lines.
pub(super) fn main(title: &OsStr) -> i32 {
    if title.len() != TITLE_BYTES || title.as_bytes().iter().any(|b| *b != b' ') {
        eprintln!("zygote: the last argument must be {TITLE_BYTES} spaces");
        return EXIT_FAILED;
    }
    // SAFETY: installing SIG_IGN runs no handler code. Ignored SIGCHLD: no zombies.
    if let Err(e) = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) } {
        eprintln!("zygote: ignoring SIGCHLD: {e}");
        return EXIT_FAILED;
    }
    // Read once: every child inherits the same argument area.
    let title = Title {
        argv0: std::env::args_os().next().unwrap_or_default(),
        area: own_arg_range(),
    };
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    loop {
        let (len, fds) = match receive(&mut buf) {
            Ok(Some(request)) => request,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("zygote: receiving a request: {e}");
                return EXIT_FAILED;
            }
        };
        let reply = match parse(&buf[..len]) {
            Some((cwd, args)) if fds.len() == REQUEST_FDS => fork_mode(&title, &cwd, &args, fds),
            _ => "error malformed request".to_string(),
        };
        let sent = sendmsg::<()>(
            SOCKET_FD,
            &[IoSlice::new(reply.as_bytes())],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        if sent.is_err() {
            return 0;
        }
    }
}

/// One request: its length in `buf` and the descriptors it carried. `None`: the agent closed
/// its end.
fn receive(buf: &mut [u8]) -> nix::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; REQUEST_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            SOCKET_FD,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: SCM_RIGHTS hands this process new descriptors that nothing else owns.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        // Too long or too many descriptors: answer as malformed (the fds are dropped).
        return Ok(Some((0, Vec::new())));
    }
    Ok(Some((msg.bytes, fds)))
}

/// `cwd \0 arg \0 arg …` → the working directory and the mode's arguments.
fn parse(request: &[u8]) -> Option<(OsString, Vec<OsString>)> {
    let mut parts = request.split(|b| *b == 0).map(OsStr::from_bytes);
    let cwd = parts.next().filter(|cwd| !cwd.is_empty())?.to_os_string();
    let args: Vec<OsString> = parts.map(OsStr::to_os_string).collect();
    let mode = args.first()?;
    (mode != "zygote").then_some((cwd, args))
}

/// Forks a child that runs the shim mode `args` with the given stdout and stderr.
fn fork_mode(title: &Title, cwd: &OsStr, args: &[OsString], fds: Vec<OwnedFd>) -> String {
    // SAFETY: the zygote is single-threaded.
    match unsafe { fork() } {
        Err(e) => format!("error fork: {e}"),
        Ok(ForkResult::Parent { child }) => format!("ok {child}"),
        Ok(ForkResult::Child) => {
            let code = match become_mode_process(cwd, &fds) {
                Ok(()) => {
                    drop(fds);
                    title.show(args);
                    run_mode(args)
                }
                Err(message) => {
                    eprintln!("zygote child: {message}");
                    EXIT_FAILED
                }
            };
            std::process::exit(code)
        }
    }
}

/// In the forked child: the standard descriptors, signal action and directory an exec'd
/// shim would start with.
fn become_mode_process(cwd: &OsStr, fds: &[OwnedFd]) -> Result<(), String> {
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let targets = [
        (null.as_raw_fd(), libc::STDIN_FILENO),
        (fds[0].as_raw_fd(), libc::STDOUT_FILENO),
        (fds[1].as_raw_fd(), libc::STDERR_FILENO),
    ];
    for (from, to) in targets {
        dup2(from, to).map_err(|e| format!("dup2 onto {to}: {e}"))?;
    }
    // SAFETY: installing SIG_DFL runs no handler code.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }
        .map_err(|e| format!("restoring SIGCHLD: {e}"))?;
    std::env::set_current_dir(cwd).map_err(|e| format!("entering {cwd:?}: {e}"))
}

/// This process's argument area, which the zygote's blank argument ([`TITLE_BYTES`]) makes
/// large enough for a forked shim's own command line.
struct Title {
    argv0: OsString,
    /// `arg_start` and `arg_end`; `None` when they could not be read.
    area: Option<(usize, usize)>,
}

impl Title {
    /// Rewrites the argument area so `/proc/self/cmdline` reads `<argv0> __shim <args…>`,
    /// what an exec'd shim shows: `ps` tells the shims apart, and sweeps that look for a
    /// container directory find them. A command line that does not fit keeps the zygote's.
    fn show(&self, args: &[OsString]) {
        let mut text = Vec::new();
        for part in [self.argv0.as_os_str(), OsStr::new(super::SHIM_ARG)]
            .into_iter()
            .chain(args.iter().map(OsString::as_os_str))
        {
            text.extend_from_slice(part.as_bytes());
            text.push(0);
        }
        let Some((start, end)) = self.area else {
            return;
        };
        let room = end.saturating_sub(start);
        if text.len() > room {
            eprintln!(
                "shim: keeping the zygote's command line ({} bytes do not fit in {room})",
                text.len()
            );
            return;
        }
        // SAFETY: [start, end) is this process's own argument area on its initial stack,
        // mapped and writable; no Rust reference into it exists (std copies arguments when
        // asked for them). The area stays NUL-terminated, so every old argv pointer still
        // ends in it.
        unsafe {
            let area = start as *mut u8;
            std::ptr::copy_nonoverlapping(text.as_ptr(), area, text.len());
            std::ptr::write_bytes(area.add(text.len()), 0, room - text.len());
        }
    }
}

/// `arg_start` and `arg_end` of this process (`/proc/self/stat` fields 48 and 49).
fn own_arg_range() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields from the third on follow the command name's closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some((field(48)?, field(49)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_a_directory_then_arguments() {
        let parsed = parse(b"/var/c\0run\0/var/c").unwrap();
        assert_eq!(parsed.0, OsString::from("/var/c"));
        assert_eq!(
            parsed.1,
            vec![OsString::from("run"), OsString::from("/var/c")]
        );
        assert_eq!(parse(b"/var/c"), None, "no mode");
        assert_eq!(parse(b"/var/c\0zygote"), None, "no zygote of a zygote");
        assert_eq!(parse(b"\0run"), None, "no directory");
        assert_eq!(parse(b""), None);
    }

    #[test]
    fn the_own_argument_range_is_read() {
        let (start, end) = own_arg_range().unwrap();
        assert!(start < end, "{start:#x}..{end:#x}");
    }
}
