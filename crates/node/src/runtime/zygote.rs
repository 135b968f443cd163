//! The agent's end of the shim zygote (`__shim zygote`, see `shim/zygote.rs`): started on
//! first use and asked to fork a shim mode with the given stdout and stderr, so a container
//! start costs a fork of a small single-threaded process rather than an `exec` of the agent's
//! binary.
//!
//! Any failure (the zygote cannot start, dies, answers late or with an error) drops it, which
//! kills it, and the caller starts the shim by `exec` as before. A new zygote is tried only
//! [`ZYGOTE_RETRY`] later, so a broken one costs one failed attempt per period, not one per
//! container. Requests are one at a time (the lock), each answered within
//! [`ZYGOTE_REPLY_TIMEOUT`].

use std::ffi::OsStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::socket::{
    recv, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::shim::{MAX_ZYGOTE_REQUEST_BYTES, SHIM_ARG, ZYGOTE_REQUEST_FDS, ZYGOTE_TITLE_BYTES};

/// How long after a zygote failed the next one is tried.
pub const ZYGOTE_RETRY: Duration = Duration::from_secs(60);
/// Longest wait for the zygote's answer to one request (a fork).
pub const ZYGOTE_REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest answer read from the zygote.
const MAX_REPLY_BYTES: usize = 4096;

pub(crate) struct Zygote {
    shim_path: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    /// No new zygote before this instant (one failed).
    retry_at: Option<Instant>,
}

struct Live {
    /// Killed when dropped.
    child: Child,
    socket: AsyncFd<OwnedFd>,
}

impl Zygote {
    pub(crate) fn new(shim_path: &Path) -> Zygote {
        Zygote {
            shim_path: shim_path.to_path_buf(),
            state: Mutex::new(State::default()),
        }
    }

    /// The running zygote's pid, if one runs.
    pub(crate) async fn pid(&self) -> Option<u32> {
        self.state.lock().await.live.as_ref()?.child.id()
    }

    /// Forks `<shim> __shim <args…>` in `cwd` with `stdout` and `stderr`; returns its pid.
    /// `None`: the shim was not started (start it another way). A zygote that fails is logged
    /// once, when it is given up; while no new one is tried, `None` comes quietly.
    pub(crate) async fn spawn(
        &self,
        cwd: &Path,
        args: &[&OsStr],
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Option<i32> {
        let request = match encode(cwd, args) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(error = %e, "this shim cannot be forked by the zygote");
                return None;
            }
        };
        let mut state = self.state.lock().await;
        if state.live.is_none() {
            if state.retry_at.is_some_and(|at| Instant::now() < at) {
                return None;
            }
            match start(&self.shim_path) {
                Ok(live) => state.live = Some(live),
                Err(e) => {
                    give_up(&mut state, &format!("starting the zygote: {e}"));
                    return None;
                }
            }
        }
        let live = state.live.as_ref().expect("started above");
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let answer = tokio::time::timeout(ZYGOTE_REPLY_TIMEOUT, live.ask(&request, &fds)).await;
        let failure = match answer {
            Ok(Ok(reply)) => match parse_reply(&reply) {
                Ok(pid) => return Some(pid),
                Err(e) => e,
            },
            Ok(Err(e)) => format!("talking to the zygote: {e}"),
            Err(_) => format!(
                "the zygote did not answer within {} ms",
                ZYGOTE_REPLY_TIMEOUT.as_millis()
            ),
        };
        give_up(&mut state, &failure);
        None
    }
}

/// Drops (kills) the zygote, if one runs, and tries no new one for [`ZYGOTE_RETRY`].
fn give_up(state: &mut State, reason: &str) {
    tracing::warn!(
        error = %reason,
        retry_in_s = ZYGOTE_RETRY.as_secs(),
        "shim zygote failed: container shims are started by exec until a new zygote is tried"
    );
    state.live = None;
    state.retry_at = Some(Instant::now() + ZYGOTE_RETRY);
}

/// `cwd \0 arg \0 arg …`, refused when a part holds a NUL or the whole is too long.
fn encode(cwd: &Path, args: &[&OsStr]) -> Result<Vec<u8>, String> {
    let parts = std::iter::once(cwd.as_os_str()).chain(args.iter().copied());
    let mut request = Vec::new();
    for (i, part) in parts.enumerate() {
        if part.as_bytes().contains(&0) {
            return Err(format!("argument {part:?} holds a NUL byte"));
        }
        if i > 0 {
            request.push(0);
        }
        request.extend_from_slice(part.as_bytes());
    }
    if request.len() > MAX_ZYGOTE_REQUEST_BYTES {
        return Err(format!(
            "request of {} bytes is over the zygote's {MAX_ZYGOTE_REQUEST_BYTES}",
            request.len()
        ));
    }
    Ok(request)
}

fn parse_reply(reply: &[u8]) -> Result<i32, String> {
    let text = String::from_utf8_lossy(reply);
    match text.split_once(' ') {
        Some(("ok", pid)) => pid
            .parse()
            .map_err(|_| format!("the zygote answered {text:?}")),
        Some(("error", message)) => Err(format!("the zygote could not fork: {message}")),
        _ => Err(format!("the zygote answered {text:?}")),
    }
}

fn start(shim_path: &Path) -> io::Result<Live> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let flags = nix::fcntl::fcntl(ours.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let nonblocking = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(ours.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nonblocking))?;
    let child = Command::new(shim_path)
        .arg(SHIM_ARG)
        .arg("zygote")
        .arg(" ".repeat(ZYGOTE_TITLE_BYTES))
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    // SAFETY: `ours` is an owned, valid descriptor that AsyncFd keeps open until dropped.
    let socket = unsafe { AsyncFd::register(ours) }?;
    Ok(Live { child, socket })
}

impl Live {
    /// Sends one request with its descriptors and reads the one answer.
    async fn ask(&self, request: &[u8], fds: &[i32]) -> io::Result<Vec<u8>> {
        debug_assert_eq!(fds.len(), ZYGOTE_REQUEST_FDS);
        loop {
            let mut guard = self.socket.writable().await?;
            let sent = guard.try_io(|socket| {
                sendmsg::<()>(
                    socket.as_raw_fd(),
                    &[IoSlice::new(request)],
                    &[ControlMessage::ScmRights(fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            if let Ok(sent) = sent {
                sent?;
                break;
            }
        }
        let mut reply = vec![0u8; MAX_REPLY_BYTES];
        loop {
            let mut guard = self.socket.readable().await?;
            let read = guard.try_io(|socket| {
                recv(socket.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(io::Error::from)
            });
            if let Ok(read) = read {
                let len = read?;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the zygote exited",
                    ));
                }
                reply.truncate(len);
                return Ok(reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_encoded_and_bounded() {
        let args = [OsStr::new("run"), OsStr::new("/s/c")];
        assert_eq!(
            encode(Path::new("/s/c"), &args).unwrap(),
            b"/s/c\0run\0/s/c"
        );
        assert!(encode(Path::new("/s"), &[OsStr::new("a\0b")]).is_err());
        let long = "x".repeat(MAX_ZYGOTE_REQUEST_BYTES);
        assert!(encode(Path::new("/s"), &[OsStr::new(&long)]).is_err());
    }

    #[test]
    fn replies_carry_a_pid_or_an_error() {
        assert_eq!(parse_reply(b"ok 4242"), Ok(4242));
        let error = parse_reply(b"error fork: EAGAIN").unwrap_err();
        assert!(error.contains("EAGAIN"), "{error}");
        assert!(parse_reply(b"ok x").is_err());
        assert!(parse_reply(b"").is_err());
    }
}
