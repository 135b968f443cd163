//! `flotilla dev` (root, real containers): Ctrl-C stops it cleanly, leaving no mounts behind,
//! and running it again resumes the same cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flotilla_e2e::{flotilla_bin, free_port};
use serde_json::Value;

/// `flotilla --server SERVERS ARGS…`, with stdin.
fn cli(servers: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(flotilla_bin())
        .arg("--server")
        .arg(servers)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "flotilla failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn pods(servers: &str, selector: &str) -> Vec<Value> {
    let out = cli(
        servers,
        &["get", "pods", "-l", selector, "-o", "json"],
        None,
    );
    if !out.status.success() {
        return Vec::new();
    }
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    match doc.get("items") {
        Some(items) => items.as_array().cloned().unwrap_or_default(),
        None if doc.is_object() => vec![doc],
        None => Vec::new(),
    }
}

fn is_running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true))
}

/// Waits until `check` holds, polling every 250 ms, at most `timeout`.
fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ready_count(servers: &str, selector: &str) -> usize {
    pods(servers, selector)
        .iter()
        .filter(|p| is_running_ready(p))
        .count()
}

fn busybox_image(dir: &Path, tag: &str) -> PathBuf {
    let root = dir.join(format!("rootfs-{}", tag.replace(':', "-")));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("Debian's busybox-static");
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let out = dir.join(format!("{}.tar", tag.replace(':', "-")));
    let status = Command::new(flotilla_bin())
        .args(["image", "pack"])
        .arg(&root)
        .args(["--tag", tag, "--cmd", "sh", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

struct Bridges(Vec<String>);

impl Drop for Bridges {
    fn drop(&mut self) {
        for b in &self.0 {
            let _ = Command::new("ip").args(["link", "del", b]).status();
        }
    }
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotilla_dev_stopped_and_started_resumes_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let image = busybox_image(dir.path(), "busybox:latest");
    let data = dir.path().join("dev");
    std::fs::create_dir_all(data.join("agent/images/import")).unwrap();
    std::fs::copy(&image, data.join("agent/images/import/busybox.tar")).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let start = || {
        Command::new(flotilla_bin())
            .args(["dev", "--data-dir"])
            .arg(&data)
            .args([
                "--listen",
                &api,
                "--agent-listen",
                &format!("127.0.0.1:{}", free_port()),
                "--pod-cidr",
                "198.18.170.0/24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dev.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let stop = |mut child: Child| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait().unwrap()
    };
    let _bridge = Bridges(vec!["flotilla-dev".into()]);
    let dev = start();
    eventually(Duration::from_secs(30), "dev node Ready", || {
        let out = cli(&api, &["get", "nodes"], None);
        String::from_utf8_lossy(&out.stdout)
            .contains(" Ready ")
            .then_some(())
    });
    let hello = examples_dir().join("hello.yaml");
    ok(cli(&api, &["apply", "-f", hello.to_str().unwrap()], None));
    ok(cli(
        &api,
        &["scale", "deployment/hello", "--replicas", "2"],
        None,
    ));
    eventually(Duration::from_secs(60), "2 ready", || {
        (ready_count(&api, "app=hello") == 2).then_some(())
    });
    let status = stop(dev);
    assert!(
        status.success(),
        "Ctrl-C stops flotilla dev cleanly: {status:?}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .matches(data.to_str().unwrap())
            .count(),
        0,
        "no mounts left behind"
    );

    let dev = start();
    eventually(
        Duration::from_secs(60),
        "the same cluster, running again",
        || {
            let out = cli(&api, &["get", "deployment", "hello", "-o", "json"], None);
            let d: Value = serde_json::from_slice(&out.stdout).ok()?;
            (d["spec"]["replicas"] == 2 && ready_count(&api, "app=hello") == 2).then_some(())
        },
    );
    stop(dev);
}
