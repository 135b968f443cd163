//! Real `flotilla agent` processes for end-to-end tests: a busybox image to side-load, the agent
//! process (SIGKILL, restart, graceful stop on drop) and the pod bridges CNI leaves behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{flotilla_bin, free_port, spawn_logged};

/// How long a graceful agent stop (which stops its pods) may take before SIGKILL.
pub const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Packs Debian's static busybox with every applet as image `tag`; returns the archive path.
pub fn busybox_image(dir: &Path, tag: &str) -> PathBuf {
    let slug = tag.replace([':', '/'], "-");
    let root = dir.join(format!("rootfs-{slug}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("Debian's busybox-static");
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let out = dir.join(format!("{slug}.tar"));
    let status = Command::new(flotilla_bin())
        .args(["image", "pack"])
        .arg(&root)
        .args(["--tag", tag, "--cmd", "sh", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "image pack {tag}");
    out
}

/// What one agent is started with.
pub struct AgentOptions<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    pub servers: &'a str,
    /// Pods get addresses from `198.18.<subnet>.0/24`.
    pub subnet: u8,
    pub bridge: &'a str,
    /// `--labels`, e.g. `disk=ssd`; empty for none.
    pub labels: &'a str,
    /// Image archives side-loaded through `DATA_DIR/images/import/`.
    pub images: &'a [PathBuf],
}

/// A `flotilla agent` process, stopped gracefully (pods stopped) when dropped.
pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    pub fn start(options: AgentOptions<'_>) -> Agent {
        let import = options.dir.join("images/import");
        std::fs::create_dir_all(&import).unwrap();
        for image in options.images {
            std::fs::copy(image, import.join(image.file_name().unwrap())).unwrap();
        }
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--name".into(),
            options.name.into(),
            "--servers".into(),
            options.servers.into(),
            "--data-dir".into(),
            options.dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--pod-cidr".into(),
            format!("198.18.{}.0/24", options.subnet),
            "--bridge".into(),
            options.bridge.into(),
            "--stop-pods-on-exit".into(),
        ];
        if !options.labels.is_empty() {
            args.extend(["--labels".into(), options.labels.into()]);
        }
        let mut agent = Agent {
            name: options.name.into(),
            dir: options.dir.to_path_buf(),
            args,
            child: None,
        };
        agent.spawn();
        agent
    }

    /// Starts (again) with the same arguments; output appends to `DIR/agent.log`.
    pub fn spawn(&mut self) {
        self.child = Some(spawn_logged(&self.args, &self.dir.join("agent.log")));
    }

    /// SIGKILL: the agent dies, its shims and containers are left to fence themselves.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the agent stops its pods (`--stop-pods-on-exit`) and exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + AGENT_STOP_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The run journal the agent's shims append to (one JSON line per start and stop).
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("runtime/journal.jsonl")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Deletes the pod bridges once the agents are gone (CNI leaves them behind).
pub struct Bridges(pub Vec<String>);

impl Drop for Bridges {
    fn drop(&mut self) {
        for bridge in &self.0 {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
    }
}
