//! `pack_directory` round trips: a busybox rootfs (from Debian's busybox-static) is packed,
//! imported, resolved by its short and long names, prepared as a rootfs and actually run
//! with the argv Kubernetes would use (needs root: chroot and overlayfs). Packing is
//! deterministic. Tests that need /bin/busybox print a notice and skip when it is absent.

mod image_common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use flotilla_node::image::{pack_directory, prepare_rootfs, resolve_argv, ImageConfig, ImageStore};
use image_common::tree;
use tempfile::TempDir;

const HOST_BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 5] = ["sh", "echo", "sleep", "httpd", "cat"];

/// A minimal busybox rootfs under `dir`, or `None` (with a notice) if the host lacks busybox.
fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
    if !Path::new(HOST_BUSYBOX).is_file() {
        eprintln!(
            "NOTICE: skipping, {HOST_BUSYBOX} is missing (apt-get install -y busybox-static)"
        );
        return None;
    }
    let root = dir.join("busybox-root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("srv")).unwrap();
    fs::copy(HOST_BUSYBOX, root.join("bin/busybox")).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("srv/index.html"), "served by busybox httpd\n").unwrap();
    Some(root)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn busybox_config() -> ImageConfig {
    ImageConfig {
        entrypoint: strings(&["/bin/sh", "-c"]),
        cmd: strings(&["echo hello from $GREETING in $(pwd)"]),
        env: strings(&["PATH=/bin", "GREETING=flotilla"]),
        working_dir: "/srv".to_string(),
        ..ImageConfig::default()
    }
}

/// The host's chroot(8); the child runs with the image's PATH, so it is named absolutely.
fn chroot_binary() -> &'static str {
    const CANDIDATES: [&str; 3] = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"];
    CANDIDATES
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot(8) is part of coreutils")
}

/// Runs `argv` inside `rootfs` with the image's env and working dir; returns stdout.
fn run_in(rootfs: &Path, config: &ImageConfig, argv: &[String]) -> String {
    let mut script = format!("cd {} && exec", config.working_dir);
    for arg in argv {
        script.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
    }
    let output = Command::new(chroot_binary())
        .arg(rootfs)
        .args(["/bin/sh", "-c", &script])
        .env_clear()
        .envs(config.env.iter().filter_map(|kv| kv.split_once('=')))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Resolves argv for a pod's `command`/`args` and checks what the container prints.
fn check_run(rootfs: &Path, config: &ImageConfig, command: &[&str], args: &[&str], expected: &str) {
    let argv = resolve_argv(
        &config.entrypoint,
        &config.cmd,
        &strings(command),
        &strings(args),
    );
    assert_eq!(
        run_in(rootfs, config, &argv),
        expected,
        "command={command:?} args={args:?}"
    );
}

#[test]
fn packed_busybox_imports_resolves_and_runs_needs_root() {
    let work = TempDir::new().unwrap();
    let Some(root) = busybox_rootfs(work.path()) else {
        return;
    };
    let archive = work.path().join("busybox.tar");
    let digest = pack_directory(&root, "busybox", &busybox_config(), &archive).unwrap();

    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let summaries = store.import(&archive).unwrap();
    assert_eq!(summaries[0].digest, digest);
    assert_eq!(summaries[0].tags, vec!["busybox:latest".to_string()]);
    let image = store.resolve("docker.io/library/busybox:latest").unwrap();
    let config = ImageConfig {
        architecture: image.config.architecture.clone(),
        os: "linux".to_string(),
        ..busybox_config()
    };
    assert_eq!(image.config, config);

    let _pin = store.pin(&image);
    let rootfs = prepare_rootfs(&image, &work.path().join("container")).unwrap();
    check_run(
        rootfs.path(),
        &image.config,
        &[],
        &[],
        "hello from flotilla in /srv\n",
    );
    check_run(
        rootfs.path(),
        &image.config,
        &[],
        &["echo args replace cmd"],
        "args replace cmd\n",
    );
    check_run(
        rootfs.path(),
        &image.config,
        &["/bin/echo", "command"],
        &["replaces", "entrypoint"],
        "command replaces entrypoint\n",
    );
    check_run(
        rootfs.path(),
        &image.config,
        &["cat", "index.html"],
        &[],
        "served by busybox httpd\n",
    );
    rootfs.release().unwrap();
}

/// A small tree with a nested dir, an executable, a symlink and a hardlink.
fn sample_tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("etc/app/conf"), "x=1").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(root.join("run.sh"), root.join("start.sh")).unwrap();
    symlink("etc/app/conf", root.join("conf")).unwrap();
    root
}

fn pack(dir: &Path, out: &Path) -> (String, Vec<u8>) {
    let digest = pack_directory(dir, "sample:1", &ImageConfig::default(), out).unwrap();
    (digest.to_string(), fs::read(out).unwrap())
}

#[test]
fn packing_is_deterministic_and_round_trips() {
    let work = TempDir::new().unwrap();
    let root = sample_tree(work.path());
    let first = pack(&root, &work.path().join("one.tar"));
    let again = pack(&root, &work.path().join("two.tar"));
    assert_eq!(first, again, "same directory, different archive");

    let later = SystemTime::now() + Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(root.join("etc/app/conf"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        pack(&root, &work.path().join("three.tar")).0,
        first.0,
        "mtimes must not matter"
    );

    fs::write(root.join("etc/app/conf"), "x=2").unwrap();
    assert_ne!(
        pack(&root, &work.path().join("four.tar")).0,
        first.0,
        "content must matter"
    );

    let store = ImageStore::open(&work.path().join("store")).unwrap();
    store.import(&work.path().join("four.tar")).unwrap();
    let layer = &store.resolve("sample:1").unwrap().layer_dirs[0];
    assert_eq!(
        tree(layer),
        [
            "conf symlink -> etc/app/conf",
            "etc dir",
            "etc/app dir",
            "etc/app/conf file:x=2",
            "run.sh file:#!/bin/sh",
            "start.sh file:#!/bin/sh",
        ]
    );
    let run = fs::metadata(layer.join("run.sh")).unwrap();
    assert_eq!(run.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&run),
        2,
        "the hardlink must survive"
    );
}

#[test]
fn packing_refuses_a_digest_reference() {
    let work = TempDir::new().unwrap();
    let root = sample_tree(work.path());
    let reference = format!("sample@sha256:{}", "a".repeat(64));
    let err = pack_directory(
        &root,
        &reference,
        &ImageConfig::default(),
        &work.path().join("x.tar"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs a name:tag"), "{err}");
}
