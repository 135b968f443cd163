//! The per-container shim (`__shim run <container-dir>`). It detaches from the agent (fork,
//! then `setsid` in the child, so an agent SIGKILL reaches neither it nor the container),
//! becomes a subreaper, creates and starts the container through libcontainer with its
//! stdout/stderr on pipes, tells the agent the outcome on one handshake line, then logs the
//! output, reaps the init process, reads the cgroup's OOM counter, deletes the libcontainer
//! container (cgroup included) and records the exit in `state.json`.
//!
//! Handshake (one line on the shim's stdout): `ok <init-pid>` or `error <message>`.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, pipe2, setsid, ForkResult, Pid};

use super::{default_signal_actions, error_chain, EXIT_FAILED};
use crate::runtime::cgroups::{self, CgroupMode};
use crate::runtime::logfile::{LineSplitter, LogWriter, Stream};
use crate::runtime::procs::ProcIdentity;
use crate::runtime::state::{
    read_json, unix_nanos, write_json_atomic, ContainerPaths, Phase, ShimSpec, ShimState,
};

/// How long output is still collected after the init process exited (the kernel kills the
/// rest of the PID namespace, so the pipes close almost at once).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// Poll timeout while the container runs: a safety net in case a SIGCHLD is missed.
const IDLE_POLL_MS: u16 = 1000;
/// Bytes read from a pipe at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Longest error message put on the handshake line.
const MAX_HANDSHAKE_BYTES: usize = 4096;

pub(super) fn main(dir: &Path) -> i32 {
    // SAFETY: the shim is single-threaded here (no tokio, no threads spawned yet).
    match unsafe { fork() } {
        Err(errno) => {
            handshake(&format!("error fork: {errno}"));
            return EXIT_FAILED;
        }
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
    }
    // A new session: no signal for the agent's process group or terminal reaches us.
    let _ = setsid();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The container inherits signal actions at its fork: defaults until it is started.
    default_signal_actions();
    let paths = ContainerPaths::new(dir);
    let me = match ProcIdentity::of(getpid().as_raw()) {
        Ok(me) => me,
        Err(e) => {
            handshake(&format!("error reading own identity: {e}"));
            return EXIT_FAILED;
        }
    };
    let mut shim = Shim {
        state: ShimState::creating(me),
        paths,
    };
    shim.save();
    // A panic (a libcontainer bug, say) must still leave a Failed record, not a silent gap.
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shim.start()))
        .unwrap_or_else(|_| Err("the shim panicked while starting the container".into()));
    // From here on the shim only talks to the agent (which may be gone) and files.
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigIgn);
        let _ = signal(Signal::SIGHUP, SigHandler::SigIgn);
    }
    match started {
        Ok(started) => shim.supervise(started),
        Err(message) => shim.fail(&message),
    }
}

/// Writes the handshake line to the agent (stdout); errors are ignored: an agent that is gone
/// learns the outcome from `state.json`.
fn handshake(line: &str) {
    let mut text: String = line.replace('\n', " ");
    let mut end = text.len().min(MAX_HANDSHAKE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('\n');
    let _ = nix::unistd::write(std::io::stdout().as_fd(), text.as_bytes());
}

/// Points stdout at /dev/null once the handshake is done, so the agent's pipe closes.
fn close_handshake() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
    }
}

struct Shim {
    paths: ContainerPaths,
    state: ShimState,
}

/// A started container and the read ends of its output pipes.
struct Started {
    spec: ShimSpec,
    container: Container,
    init: ProcIdentity,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Shim {
    fn save(&self) {
        if let Err(e) = write_json_atomic(&self.paths.state(), &self.state) {
            eprintln!("shim: cannot record state: {e}");
        }
    }

    fn fail(&mut self, message: &str) -> i32 {
        self.state.phase = Phase::Failed;
        self.state.error = Some(message.to_string());
        self.state.finished_at_ns = Some(unix_nanos(SystemTime::now()));
        self.save();
        handshake(&format!("error {message}"));
        EXIT_FAILED
    }

    fn start(&mut self) -> Result<Started, String> {
        let spec: ShimSpec = read_json(&self.paths.shim_spec()).map_err(|e| e.to_string())?;
        let youki_root = self.paths.youki_root();
        fs::create_dir_all(&youki_root).map_err(|e| format!("creating youki root: {e}"))?;
        let (stdout_r, stdout_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (stderr_r, stderr_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let stdin = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
        let mut container = ContainerBuilder::new(spec.id.clone(), SyscallType::default())
            .with_root_path(&youki_root)
            .map_err(|e| error_chain(&e))?
            .with_stdin(stdin)
            .with_stdout(stdout_w)
            .with_stderr(stderr_w)
            .validate_id()
            .map_err(|e| error_chain(&e))?
            .as_init(self.paths.bundle())
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| format!("creating container: {}", error_chain(&e)))?;
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            return Err(format!("starting container: {}", error_chain(&e)));
        }
        let pid = container.pid().map(Pid::as_raw).unwrap_or(0);
        let init = ProcIdentity::of(pid).map_err(|e| format!("init process {pid}: {e}"))?;
        Ok(Started {
            spec,
            container,
            init,
            stdout: stdout_r,
            stderr: stderr_r,
        })
    }

    /// Appends to the node's run journal (next to `containers/`, two levels above this shim's
    /// directory). Best effort: a journal failure must not stop the container.
    fn journal(&self, spec: &ShimSpec, event: crate::runtime::journal::RunEvent, at_ns: u64) {
        let Some(state_dir) = self.paths.dir.parent().and_then(Path::parent) else {
            return;
        };
        let record = crate::runtime::journal::RunRecord {
            pod_uid: spec.pod_uid.clone(),
            container: spec.name.clone(),
            event,
            at_ns,
        };
        let _ = crate::runtime::journal::append(state_dir, &record);
    }

    fn supervise(&mut self, mut started: Started) -> i32 {
        self.state.phase = Phase::Running;
        self.state.init = Some(started.init);
        let started_at_ns = unix_nanos(SystemTime::now());
        self.state.started_at_ns = Some(started_at_ns);
        self.save();
        self.journal(
            &started.spec,
            crate::runtime::journal::RunEvent::Started,
            started_at_ns,
        );
        handshake(&format!("ok {}", started.init.pid));
        close_handshake();

        let status = pump(&self.paths, &started);
        let finished_at_ns = unix_nanos(SystemTime::now());
        self.state.finished_at_ns = Some(finished_at_ns);
        self.journal(
            &started.spec,
            crate::runtime::journal::RunEvent::Stopped,
            finished_at_ns,
        );
        let (code, signal) = match status {
            Ok(WaitStatus::Exited(_, code)) => (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
            Ok(other) => {
                self.state.error = Some(format!("unexpected wait status {other:?}"));
                (EXIT_FAILED, None)
            }
            Err(message) => {
                self.state.error = Some(message);
                (EXIT_FAILED, None)
            }
        };
        self.state.exit_code = Some(code);
        self.state.signal = signal;
        self.state.oom_killed = CgroupMode::detect()
            .ok()
            .and_then(|mode| cgroups::oom_kill_count(mode, &started.spec.cgroups_path))
            .is_some_and(|count| count > 0);
        if let Err(e) = started.container.delete(true) {
            self.state.error = Some(format!("deleting container: {}", error_chain(&e)));
        }
        self.state.phase = Phase::Exited;
        self.save();
        0
    }
}

/// Copies the container's output into its log until the init process exited and the pipes
/// closed (or [`DRAIN_AFTER_EXIT`] passed); returns the init's wait status.
fn pump(paths: &ContainerPaths, started: &Started) -> Result<WaitStatus, String> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let mut log = LogWriter::open(
        &paths.log(),
        &paths.rotated_log(),
        started.spec.log_max_bytes,
    )
    .map_err(|e| format!("opening log: {e}"))?;
    let mut pipes = [
        Some(Pipe::new(&started.stdout, Stream::Stdout)),
        Some(Pipe::new(&started.stderr, Stream::Stderr)),
    ];
    let init = Pid::from_raw(started.init.pid);
    let mut exit = reap_children(init);
    let mut deadline = exit.map(|_| Instant::now() + DRAIN_AFTER_EXIT);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut lease_checked = Instant::now();
    let mut lease_seen = false;
    loop {
        if exit.is_none() && lease_checked.elapsed() >= crate::runtime::lease::LEASE_CHECK_PERIOD {
            lease_checked = Instant::now();
            if let Some(path) = &started.spec.lease_file {
                let lease = crate::runtime::lease::read(path);
                if crate::runtime::lease::must_fence(lease, lease_seen) {
                    // Self-fencing: the agent stopped renewing its lease (maybe it is dead).
                    let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                }
                lease_seen |= lease != crate::runtime::lease::Lease::Absent;
            }
        }
        let open = pipes.iter().flatten().count();
        match (exit, deadline) {
            (Some(status), _) if open == 0 => return Ok(status),
            (Some(status), Some(d)) if Instant::now() >= d => return Ok(status),
            _ => {}
        }
        let idle_ms = if started.spec.lease_file.is_some() {
            crate::runtime::lease::LEASE_CHECK_PERIOD.as_millis() as u16
        } else {
            IDLE_POLL_MS
        };
        let timeout_ms = deadline.map_or(idle_ms, |d| {
            let left = d.saturating_duration_since(Instant::now()).as_millis();
            left.min(u128::from(idle_ms)) as u16
        });
        let (pipe_ready, signal_ready) = wait_ready(&pipes, &sigfd, timeout_ms)?;
        for (slot, ready) in pipes.iter_mut().zip(pipe_ready) {
            if ready {
                pump_once(slot, &mut log, &mut buf);
            }
        }
        if signal_ready {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        if exit.is_none() {
            exit = reap_children(init);
            deadline = exit.map(|_| Instant::now() + DRAIN_AFTER_EXIT);
        } else {
            let _ = reap_children(init);
        }
    }
}

/// Polls the open pipes and the signalfd; returns which pipes and whether the signalfd are
/// ready.
fn wait_ready(
    pipes: &[Option<Pipe>; 2],
    sigfd: &SignalFd,
    timeout_ms: u16,
) -> Result<([bool; 2], bool), String> {
    let mut fds: Vec<PollFd> = Vec::with_capacity(3);
    let mut owners = Vec::with_capacity(3);
    for (i, pipe) in pipes.iter().enumerate() {
        if let Some(pipe) = pipe {
            fds.push(PollFd::new(pipe.fd.as_fd(), PollFlags::POLLIN));
            owners.push(Some(i));
        }
    }
    fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
    owners.push(None);
    match poll(&mut fds, timeout_ms) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(errno) => return Err(format!("poll: {errno}")),
    }
    let mut pipe_ready = [false; 2];
    let mut signal_ready = false;
    for (fd, owner) in fds.iter().zip(owners) {
        let ready = fd.revents().is_some_and(|r| !r.is_empty());
        match owner {
            Some(i) => pipe_ready[i] = ready,
            None => signal_ready = ready,
        }
    }
    Ok((pipe_ready, signal_ready))
}

/// One output pipe of the container and the line splitter of its stream.
struct Pipe<'a> {
    fd: &'a OwnedFd,
    lines: LineSplitter,
}

impl<'a> Pipe<'a> {
    fn new(fd: &'a OwnedFd, stream: Stream) -> Pipe<'a> {
        Pipe {
            fd,
            lines: LineSplitter::new(stream),
        }
    }
}

/// Reads once from a ready pipe into the log; at end of stream the pipe is dropped. Log
/// write errors (a full disk) lose output but never stop the shim.
fn pump_once(slot: &mut Option<Pipe>, log: &mut LogWriter, buf: &mut [u8]) {
    let Some(pipe) = slot else { return };
    let now = SystemTime::now();
    match nix::unistd::read(pipe.fd.as_raw_fd(), buf) {
        Ok(0) | Err(Errno::EBADF) | Err(Errno::EIO) => {
            let _ = pipe.lines.finish(log, now);
            *slot = None;
        }
        Ok(n) => {
            if let Err(e) = pipe.lines.feed(&buf[..n], log, now) {
                eprintln!("shim: log write failed: {e}");
            }
        }
        Err(_) => {}
    }
}

/// Reaps every exited child (the shim is a subreaper, so orphans land here too); returns the
/// init process's status once it is among them. Bounded by the number of zombies.
fn reap_children(init: Pid) -> Option<WaitStatus> {
    let mut init_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return init_status,
            Ok(status) if status.pid() == Some(init) => init_status = Some(status),
            Ok(_) => {}
        }
    }
}
