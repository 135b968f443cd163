//! Docker Swarm as a baseline: a private `dockerd` (Debian's docker.io) started with its own
//! data root, exec root and socket in a temporary directory, addresses only from 198.19.240.0/20
//! (inside the benchmark range 198.18.0.0/15), a one-node swarm on loopback, the busybox rootfs
//! imported as an image, and a replicated service timed until every replica runs. Dropping a
//! [`Dockerd`] removes the service, leaves the swarm, stops the daemon and sweeps its mounts,
//! processes, runtime directories and the links it made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cleanup;

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
/// The image name of the imported rootfs (never resolved against a registry).
const IMAGE: &str = "flotilla-bench/busybox:latest";
const SERVICE: &str = "flotilla-bench";
/// Addresses: the default bridge is off; local networks (docker_gwbridge) and swarm networks
/// (ingress) come from these pools, all inside 198.18.0.0/15.
const LOCAL_POOL: &str = "base=198.19.244.0/22,size=24";
const SWARM_POOL: &str = "198.19.248.0/22";
/// Links dockerd makes in the host namespace and leaves behind.
const DOCKER_LINKS: [&str; 2] = ["docker_gwbridge", "docker0"];
/// Host directories dockerd's containerd and plugins create outside the exec root.
const HOST_DIRS: [&str; 4] = [
    "/run/containerd/s",
    "/run/containerd",
    "/var/run/docker/plugins",
    "/var/run/docker",
];
/// The trust key dockerd writes on its first start.
const HOST_FILES: [&str; 1] = ["/etc/docker/key.json"];
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(60);
/// One docker CLI call (swarm leave takes ~15 s with running tasks).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between `docker service ls` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A private docker daemon; everything it made goes away on drop.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    new_links: Vec<&'static str>,
    new_dirs: Vec<&'static str>,
    new_files: Vec<&'static str>,
    swarm: bool,
}

impl Dockerd {
    /// Starts the daemon and waits until it answers.
    pub fn start() -> Result<Dockerd> {
        for bin in [DOCKERD, DOCKER] {
            if !Path::new(bin).exists() {
                bail!("{bin} is missing: install Debian's docker.io");
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("flotilla-swarm")
            .tempdir()?;
        let mut daemon = Dockerd {
            new_links: DOCKER_LINKS
                .into_iter()
                .filter(|l| !cleanup::link_exists(l))
                .collect(),
            new_dirs: HOST_DIRS
                .into_iter()
                .filter(|d| !Path::new(d).exists())
                .collect(),
            new_files: HOST_FILES
                .into_iter()
                .filter(|f| !Path::new(f).exists())
                .collect(),
            dir,
            child: None,
            swarm: false,
        };
        daemon.spawn()?;
        daemon.wait_answering()?;
        Ok(daemon)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.path("dockerd.log"))?;
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.path("docker.sock").display()))
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .args(["--default-address-pool", LOCAL_POOL])
            // Tasks use the imported image; never try a registry first.
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning dockerd")?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_answering(&mut self) -> Result<()> {
        let begin = Instant::now();
        while begin.elapsed() < DAEMON_START_TIMEOUT {
            if self.docker(&["version"]).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("dockerd exited ({status}): {}", self.log_tail());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        bail!(
            "dockerd did not answer within {DAEMON_START_TIMEOUT:?}: {}",
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Runs the docker CLI against this daemon; its stdout on success.
    fn docker(&self, args: &[&str]) -> Result<String> {
        let mut child = Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.path("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let begin = Instant::now();
        while child.try_wait()?.is_none() {
            if begin.elapsed() > CLI_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("docker {} took over {CLI_TIMEOUT:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports `rootfs` (a directory) as the service image.
    pub fn import_rootfs(&self, rootfs: &Path) -> Result<()> {
        let tar = self.path("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()?;
        if !status.success() {
            bail!("tar of {} failed", rootfs.display());
        }
        self.docker(&["import", &tar.display().to_string(), IMAGE])?;
        Ok(())
    }

    /// A one-node swarm listening on loopback only; its networks (ingress) come from
    /// [`SWARM_POOL`], never docker's default 10.0.0.0/8.
    pub fn swarm_init(&mut self) -> Result<()> {
        self.swarm = true;
        self.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:0",
            "--default-addr-pool",
            SWARM_POOL,
            "--default-addr-pool-mask-length",
            "24",
        ])?;
        Ok(())
    }

    /// Creates a service of `replicas` busybox tasks on the host network and returns the time
    /// until `docker service ls` shows all of them running, or the count reached by `timeout`.
    pub fn time_service(&self, replicas: usize, timeout: Duration) -> Result<(Duration, usize)> {
        let begin = Instant::now();
        self.docker(&[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--network",
            "host",
            "--replicas",
            &replicas.to_string(),
            "--name",
            SERVICE,
            IMAGE,
            "sh",
            "-c",
            "sleep 3600",
        ])?;
        let mut running = 0;
        while begin.elapsed() < timeout {
            let out = self.docker(&[
                "service",
                "ls",
                "--filter",
                &format!("name={SERVICE}"),
                "--format",
                "{{.Replicas}}",
            ])?;
            running = out
                .trim()
                .split('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if running >= replicas {
                return Ok((begin.elapsed(), running));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok((begin.elapsed(), running))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.swarm {
            let _ = self.docker(&["service", "rm", SERVICE]);
            let _ = self.docker(&["swarm", "leave", "--force"]);
        }
        if let Some(mut child) = self.child.take() {
            cleanup::stop_child(&mut child, cleanup::STOP_GRACE);
        }
        cleanup::kill_processes_naming(self.dir.path());
        cleanup::unmount_below(self.dir.path());
        for link in &self.new_links {
            cleanup::delete_link(link);
        }
        // Only directories this daemon created, and only when it left them empty.
        for dir in &self.new_dirs {
            let _ = std::fs::remove_dir(dir);
        }
        for file in &self.new_files {
            let _ = std::fs::remove_file(file);
        }
    }
}
