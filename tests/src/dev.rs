//! A `flotilla dev` process (one-peer control plane plus an agent) for end-to-end tests: started
//! on free loopback ports, stopped with Ctrl-C (SIGINT) as a user stops it, also when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{flotilla_bin, free_port};

/// How long `flotilla dev` may take to stop its pods and exit after Ctrl-C before SIGKILL.
pub const DEV_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The bridge `flotilla dev`'s agent puts pods on.
pub const DEV_BRIDGE: &str = "flotilla-dev";

pub struct Dev {
    /// The API address (`--listen`).
    pub api: String,
    data_dir: PathBuf,
    agent_listen: String,
    pod_cidr: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Dev {
    /// Starts `flotilla dev --data-dir DATA_DIR` with pods in `pod_cidr`; output goes to `log`.
    pub fn start(data_dir: &Path, pod_cidr: &str, log: &Path) -> Dev {
        let mut dev = Dev {
            api: format!("127.0.0.1:{}", free_port()),
            data_dir: data_dir.to_path_buf(),
            agent_listen: format!("127.0.0.1:{}", free_port()),
            pod_cidr: pod_cidr.to_string(),
            log: log.to_path_buf(),
            child: None,
        };
        dev.spawn();
        dev
    }

    /// Starts it again on the same data dir and ports (after [`Dev::interrupt`]).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(flotilla_bin())
            .arg("dev")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.api, "--agent-listen", &self.agent_listen])
            .args(["--pod-cidr", &self.pod_cidr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Ctrl-C; waits for the exit (at most [`DEV_STOP_TIMEOUT`], then SIGKILL). `None` if it
    /// was not running.
    pub fn interrupt(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + DEV_STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.interrupt();
        let _ = Command::new("ip")
            .args(["link", "del", DEV_BRIDGE])
            .status();
    }
}
