//! Process identity that survives pid reuse: a pid together with its start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot). Liveness checks compare both, and signals
//! go through a pidfd opened only after the identity matched, so a recycled pid is never
//! signalled.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// A process as the runtime remembers it across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcIdentity {
    pub pid: i32,
    pub start_ticks: u64,
}

/// What `/proc/<pid>/stat` says about a pid right now.
struct StatFields {
    state: char,
    start_ticks: u64,
}

fn read_stat(pid: i32) -> io::Result<StatFields> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// `pid (comm) state ppid … starttime …`: comm may hold spaces and parentheses, so fields are
/// counted after the last `)`; the state is field 3 and the start time field 22.
fn parse_stat(text: &str) -> Option<StatFields> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(StatFields {
        state: fields.first()?.chars().next()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

impl ProcIdentity {
    /// The identity of the live process `pid`.
    pub fn of(pid: i32) -> io::Result<ProcIdentity> {
        let stat = read_stat(pid)?;
        Ok(ProcIdentity {
            pid,
            start_ticks: stat.start_ticks,
        })
    }

    /// Whether this very process still runs (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok(stat) => stat.start_ticks == self.start_ticks && !matches!(stat.state, 'Z' | 'X'),
            Err(_) => false,
        }
    }

    /// A pidfd for this process, or `None` when it is gone (or its pid was reused).
    pub fn pidfd(&self) -> Option<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked after opening: the descriptor now pins this process, so a match means the
        // fd refers to the process we recorded.
        self.is_alive().then_some(fd)
    }

    /// Sends `signal`; `Ok(false)` when the process is already gone.
    pub fn signal(&self, signal: Signal) -> Result<bool, Errno> {
        let Some(fd) = self.pidfd() else {
            return Ok(false);
        };
        send_via_pidfd(&fd, signal)
    }
}

/// `pidfd_send_signal`; ESRCH (exited meanwhile) is `Ok(false)`.
pub fn send_via_pidfd(fd: &OwnedFd, signal: Signal) -> Result<bool, Errno> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match rc {
        0 => Ok(true),
        _ => match Errno::last() {
            Errno::ESRCH => Ok(false),
            errno => Err(errno),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, state: Option<char>, start: Option<u64>) {
        let parsed = parse_stat(text);
        assert_eq!(parsed.as_ref().map(|s| s.state), state, "{text}");
        assert_eq!(parsed.map(|s| s.start_ticks), start, "{text}");
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let tail = "1 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 4242 1000 10";
        check(&format!("12 (sleep) S {tail}"), Some('S'), Some(4242));
        check(&format!("12 (a) b (c) Z {tail}"), Some('Z'), Some(4242));
        check("12 (truncated) S 1 1", None, None);
        check("garbage", None, None);
    }

    #[test]
    fn own_identity_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcIdentity::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(me.pidfd().is_some());
        let impostor = ProcIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!impostor.is_alive());
        assert!(impostor.pidfd().is_none());
    }
}
