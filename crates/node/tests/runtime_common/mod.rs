//! Shared fixture of the runtime tests (root only): a busybox image packed from the host's
//! static `/bin/busybox` and imported into a store, a [`Runtime`] on a private state
//! directory with a private cgroup parent (and, when asked, a private bridge and a random
//! 198.18.X.0/24 subnet), and a [`Fixture`] guard whose drop removes everything the test
//! made — even after a failed assertion — without trusting the runtime under test.
#![allow(dead_code)]

#[path = "../cgroup_common/mod.rs"]
mod cgroup_common;
use cgroup_common::{collect_pids, count_dirs, remove_cgroup_tree};

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flotilla_node::image::{pack_directory, prepare_rootfs, Image, ImageConfig, ImageStore};
use flotilla_node::network::CniConfig;
use flotilla_node::runtime::{
    CgroupMode, ContainerId, ContainerSpec, ContainerState, ExitReason, Resources, Runtime,
    RuntimeConfig, Sandbox, UserSpec,
};
use rand::Rng;
use tempfile::TempDir;

pub const SHIM: &str = env!("CARGO_BIN_EXE_flotilla-node-shim");
pub const IMAGE: &str = "busybox:test";
/// Busybox applets linked into the image.
const APPLETS: [&str; 24] = [
    "sh", "echo", "sleep", "cat", "head", "tail", "dd", "httpd", "wget", "true", "false", "ls",
    "mkdir", "hostname", "env", "id", "kill", "ps", "yes", "seq", "grep", "wc", "ip", "readlink",
];
/// Longest any test waits for a container to reach a state.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// A busybox rootfs image in an image store.
pub struct BusyboxImage {
    pub store: ImageStore,
    pub image: Image,
}

/// Packs `/bin/busybox` with its applets into an image and imports it under `dir`.
pub fn busybox_image(dir: &Path) -> BusyboxImage {
    assert!(
        Path::new("/bin/busybox").is_file(),
        "install busybox-static (apt-get install -y busybox-static)"
    );
    let tree = dir.join("busybox-tree");
    for sub in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(tree.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    let archive = dir.join("busybox.tar");
    let config = ImageConfig {
        env: vec!["PATH=/bin".to_string()],
        ..ImageConfig::default()
    };
    pack_directory(&tree, IMAGE, &config, &archive).unwrap();
    let store = ImageStore::open(&dir.join("images")).unwrap();
    store.import(&archive).unwrap();
    let image = store.resolve(IMAGE).unwrap();
    BusyboxImage { store, image }
}

/// A test's private runtime world; dropping it tears everything down.
pub struct Fixture {
    pub runtime: Arc<Runtime>,
    pub busybox: BusyboxImage,
    pub cgroup_parent: String,
    pub bridge: Option<String>,
    pub subnet: Option<String>,
    /// Bridges handed out by [`Fixture::private_network`], deleted on drop.
    pub extra_bridges: std::sync::Mutex<Vec<String>>,
    pub dir: TempDir,
}

/// Options of a fixture.
#[derive(Clone, Copy, Default)]
pub struct FixtureOptions {
    pub network: bool,
    /// Start shims by exec only.
    pub no_zygote: bool,
}

impl Fixture {
    pub fn new(options: FixtureOptions) -> Fixture {
        assert!(nix::unistd::geteuid().is_root(), "runtime tests need root");
        let dir = tempfile::Builder::new()
            .prefix("flotilla-rt-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let suffix: u32 = rand::thread_rng().gen();
        let cgroup_parent = format!("flotilla-test-{suffix:08x}");
        let busybox = busybox_image(dir.path());
        let mut config = RuntimeConfig::new(&dir.path().join("state"), Path::new(SHIM));
        config.cgroup_parent = cgroup_parent.clone();
        config.log_max_bytes = 1 << 20;
        config.shim_zygote = !options.no_zygote;
        let (mut bridge, mut subnet) = (None, None);
        if options.network {
            let x: u8 = rand::thread_rng().gen_range(1..=254);
            let name = format!("flt{suffix:08x}");
            let cidr = format!("198.18.{x}.0/24");
            let mut cni = CniConfig::new(&name, &cidr, &dir.path().join("ipam"));
            cni.network_name = format!("flotilla-test-{suffix:08x}");
            config.network = Some(cni);
            bridge = Some(name);
            subnet = Some(cidr);
        }
        let runtime = Arc::new(Runtime::new(config).unwrap());
        Fixture {
            runtime,
            busybox,
            cgroup_parent,
            bridge,
            subnet,
            extra_bridges: std::sync::Mutex::new(Vec::new()),
            dir,
        }
    }

    /// A CNI config on a new bridge private to this fixture, with a random
    /// `198.18.X.0/<prefix_len>` subnet.
    pub fn private_network(&self, prefix_len: u8) -> CniConfig {
        let suffix: u32 = rand::thread_rng().gen();
        let x: u8 = rand::thread_rng().gen_range(1..=254);
        let bridge = format!("flx{suffix:08x}");
        let subnet = format!("198.18.{x}.0/{prefix_len}");
        let ipam = self.dir.path().join(format!("ipam-{suffix:08x}"));
        let mut config = CniConfig::new(&bridge, &subnet, &ipam);
        config.network_name = format!("flotilla-test-{suffix:08x}");
        self.extra_bridges.lock().unwrap().push(bridge);
        config
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A container spec running `script` with `sh -c` in a fresh busybox rootfs.
    pub fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        self.spec_with(name, script, Resources::default())
    }

    pub fn spec_with(&self, name: &str, script: &str, resources: Resources) -> ContainerSpec {
        let rootfs_dir = self.runtime.rootfs_dir().unwrap();
        let rootfs = prepare_rootfs(&self.busybox.image, &rootfs_dir).unwrap();
        ContainerSpec {
            name: name.to_string(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: self.busybox.image.config.env.clone(),
            working_dir: String::new(),
            user: UserSpec::default(),
            rootfs,
            resources,
            mounts: Vec::new(),
        }
    }

    /// Starts `script` as container `name` in `sandbox`.
    pub async fn start(&self, sandbox: &Sandbox, name: &str, script: &str) -> ContainerId {
        let spec = self.spec(name, script);
        self.runtime.start_container(sandbox, spec).await.unwrap()
    }

    /// Waits until the container exited; returns its final state.
    pub async fn wait_exited(&self, id: &ContainerId) -> ContainerState {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let status = self.runtime.status(id).unwrap();
            if let ContainerState::Exited { .. } = status.state {
                return status.state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} did not exit: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything in the live log of `id`, one string per record.
    pub fn log_lines(&self, id: &ContainerId) -> Vec<String> {
        let data = fs::read(self.runtime.log_path(id)).unwrap_or_default();
        data.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(flotilla_node::runtime::parse_line)
            .map(|l| String::from_utf8_lossy(&l.content).into_owned())
            .collect()
    }

    /// Cgroup directories below this fixture's parent (pods, containers), in every
    /// hierarchy; the parent itself stays, as on a node.
    pub fn cgroup_dirs(&self) -> usize {
        let mode = self.runtime.cgroup_mode();
        hierarchies(mode)
            .iter()
            .map(|h| count_dirs(&h.join(&self.cgroup_parent)).saturating_sub(1))
            .sum()
    }

    /// Processes in this fixture's cgroups, plus shims working on its state directory.
    pub fn processes(&self) -> usize {
        let mode = self.runtime.cgroup_mode();
        let mut pids = std::collections::BTreeSet::new();
        for h in hierarchies(mode) {
            collect_pids(&h.join(&self.cgroup_parent), &mut pids);
        }
        let state = self.state_dir().display().to_string();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&state) {
                pids.insert(pid);
            }
        }
        pids.len()
    }

    /// Mount points under this fixture's directory (rootfs overlays, pinned namespaces).
    pub fn mounts(&self) -> Vec<String> {
        mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&self.dir.path().display().to_string()))
            .collect()
    }

    /// veth interfaces enslaved to this fixture's bridge.
    pub fn veths(&self) -> usize {
        self.bridge.as_deref().map_or(0, veths_on)
    }

    /// Addresses host-local still has allocated for this fixture's network.
    pub fn allocated_ips(&self) -> usize {
        let Some(cni) = &self.runtime.config().network else {
            return 0;
        };
        let dir = cni.ipam_data_dir.join(&cni.network_name);
        fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("198.18."))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Fixture {
    /// Scorched earth, scoped to this fixture: kill every process in its cgroups and every
    /// shim on its state directory, unmount everything under its directory, remove its
    /// cgroups and its bridge. The temporary directory goes last (TempDir's own drop).
    fn drop(&mut self) {
        let mode = self.runtime.cgroup_mode();
        for _ in 0..3 {
            let mut pids = std::collections::BTreeSet::new();
            for h in hierarchies(mode) {
                collect_pids(&h.join(&self.cgroup_parent), &mut pids);
            }
            let state = self.state_dir().display().to_string();
            for entry in fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains(&state) {
                        pids.insert(pid);
                    }
                }
            }
            for pid in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for h in hierarchies(mode) {
            remove_cgroup_tree(&h.join(&self.cgroup_parent));
        }
        let extra = std::mem::take(&mut *self.extra_bridges.lock().unwrap());
        for bridge in self.bridge.iter().chain(&extra) {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
        if std::env::var_os("FLOTILLA_TEST_KEEP").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(&mut self.dir, TempDir::new().unwrap()));
        }
    }
}

/// veth interfaces enslaved to `bridge`.
pub fn veths_on(bridge: &str) -> usize {
    fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn hierarchies(mode: CgroupMode) -> Vec<PathBuf> {
    mode.hierarchies()
}

/// All mount points of this mount namespace.
pub fn mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// Exit code and reason of an exited state.
pub fn exit_of(state: &ContainerState) -> (i32, ExitReason) {
    match state {
        ContainerState::Exited {
            exit_code, reason, ..
        } => (*exit_code, *reason),
        other => panic!("not exited: {other:?}"),
    }
}
