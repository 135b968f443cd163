//! The newcomer's journey, end to end with real processes and real containers (root): from empty
//! data directories, three servers and two agents; every example applies; a killed container is
//! restarted; a deleted pod is replaced; scale 3 → 6 → 2; a SIGKILLed agent's pods move; a
//! SIGKILLed leader and the cluster keeps serving and converges; a rolling update to a new image
//! tag completes. (`flotilla dev` stopping and resuming is in `dev_mode.rs`.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flotilla_e2e::{flotilla_bin, free_port, ProcessCluster};
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

struct Agent {
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    fn start(
        name: &str,
        dir: &Path,
        servers: &str,
        subnet: u8,
        bridge: &str,
        labels: &str,
        images: &[PathBuf],
    ) -> Agent {
        std::fs::create_dir_all(dir.join("images/import")).unwrap();
        for image in images {
            std::fs::copy(
                image,
                dir.join("images/import").join(image.file_name().unwrap()),
            )
            .unwrap();
        }
        let args = vec![
            "agent".into(),
            "--name".into(),
            name.into(),
            "--servers".into(),
            servers.into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--pod-cidr".into(),
            format!("198.18.{subnet}.0/24"),
            "--bridge".into(),
            bridge.into(),
            "--labels".into(),
            labels.into(),
            "--stop-pods-on-exit".into(),
        ];
        let mut agent = Agent {
            dir: dir.to_path_buf(),
            args,
            child: None,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(flotilla_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
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
async fn three_servers_two_agents_the_whole_story() {
    let mut cluster = ProcessCluster::start(3).await;
    let servers = cluster
        .peers
        .iter()
        .map(|p| p.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let dir = cluster.dir.path().to_path_buf();
    let latest = busybox_image(&dir, "busybox:latest");
    let v2 = busybox_image(&dir, "busybox:v2");
    let tag = format!("{:04x}", std::process::id() % 0xffff);
    let _bridges = Bridges(vec![format!("fj{tag}0"), format!("fj{tag}1")]);
    let mut agents = vec![
        Agent::start(
            "ssd-node",
            &dir.join("a0"),
            &servers,
            160,
            &format!("fj{tag}0"),
            "disk=ssd",
            &[latest.clone(), v2.clone()],
        ),
        Agent::start(
            "hdd-node",
            &dir.join("a1"),
            &servers,
            161,
            &format!("fj{tag}1"),
            "disk=hdd",
            &[latest, v2],
        ),
    ];
    eventually(Duration::from_secs(30), "two Ready nodes", || {
        let out = ok(cli(&servers, &["get", "nodes"], None));
        (out.matches(" Ready ").count() == 2).then_some(())
    });

    // Every example applies, and its pods run.
    for example in [
        "hello.yaml",
        "two-containers.yaml",
        "disks.yaml",
        "rolling-update.yaml",
        "crashloop.yaml",
    ] {
        let path = examples_dir().join(example);
        ok(cli(
            &servers,
            &["apply", "-f", path.to_str().unwrap()],
            None,
        ));
    }
    eventually(Duration::from_secs(60), "hello: 3 ready", || {
        (ready_count(&servers, "app=hello") == 3).then_some(())
    });
    eventually(Duration::from_secs(60), "rolling: 4 ready", || {
        (ready_count(&servers, "app=rolling") == 4).then_some(())
    });
    let db = eventually(Duration::from_secs(30), "database on the ssd node", || {
        pods(&servers, "app=database")
            .into_iter()
            .find(|p| p["status"]["phase"] == "Running")
    });
    assert_eq!(db["spec"]["nodeName"], "ssd-node");
    let archiver = eventually(Duration::from_secs(30), "archiver on the hdd node", || {
        pods(&servers, "app=archiver")
            .into_iter()
            .find(|p| p["status"]["phase"] == "Running")
    });
    assert_eq!(archiver["spec"]["nodeName"], "hdd-node");
    eventually(
        Duration::from_secs(30),
        "the sidecar fetched from the server over localhost",
        || {
            let out = cli(&servers, &["logs", "sidecar-demo", "-c", "client"], None);
            String::from_utf8_lossy(&out.stdout)
                .contains("hello-from-server")
                .then_some(())
        },
    );
    let crash = eventually(
        Duration::from_secs(90),
        "crashloop restarted by its liveness probe",
        || {
            let p = pods(&servers, "")
                .into_iter()
                .find(|p| p["metadata"]["name"] == "crashloop")?;
            let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_i64()?;
            (restarts >= 1).then_some(p)
        },
    );
    assert!(
        crash["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(),
        "{crash}"
    );

    // Kill a container: it is restarted.
    let victim = pods(&servers, "app=hello")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    ok(cli(
        &servers,
        &["exec", &victim, "--", "killall", "httpd"],
        None,
    ));
    eventually(Duration::from_secs(30), "container restarted", || {
        let p = pods(&servers, "app=hello")
            .into_iter()
            .find(|p| p["metadata"]["name"] == victim.as_str())?;
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 1 && is_running_ready(&p))
            .then_some(())
    });

    // Delete a pod: it is replaced.
    ok(cli(
        &servers,
        &["delete", "pod", &victim, "--grace-period", "1"],
        None,
    ));
    eventually(Duration::from_secs(45), "replacement pod", || {
        let ps = pods(&servers, "app=hello");
        let ready = ps
            .iter()
            .filter(|p| is_running_ready(p) && p["metadata"]["name"] != victim.as_str())
            .count();
        (ready == 3 && ps.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    });

    // Scale 3 → 6 → 2.
    ok(cli(
        &servers,
        &["scale", "deployment/hello", "--replicas", "6"],
        None,
    ));
    eventually(Duration::from_secs(60), "6 ready", || {
        (ready_count(&servers, "app=hello") == 6).then_some(())
    });
    ok(cli(
        &servers,
        &["scale", "deployment/hello", "--replicas", "2"],
        None,
    ));
    eventually(Duration::from_secs(60), "2 left", || {
        (pods(&servers, "app=hello").len() == 2).then_some(())
    });

    // SIGKILL an agent: its pods move to the other node.
    agents[1].kill9();
    eventually(
        Duration::from_secs(30),
        "hello pods all on ssd-node",
        || {
            let ps = pods(&servers, "app=hello");
            (ps.len() == 2
                && ps
                    .iter()
                    .all(|p| is_running_ready(p) && p["spec"]["nodeName"] == "ssd-node"))
            .then_some(())
        },
    );
    agents[1].spawn();

    // SIGKILL the leader: the cluster keeps serving and converges.
    let leader = cluster.leader().await;
    cluster.peer(leader).kill9();
    ok(cli(
        &servers,
        &["scale", "deployment/hello", "--replicas", "3"],
        None,
    ));
    eventually(
        Duration::from_secs(60),
        "3 ready after the leader died",
        || (ready_count(&servers, "app=hello") == 3).then_some(()),
    );
    cluster.peer(leader).restart();

    // A rolling update to a new image tag completes.
    let rolling = std::fs::read_to_string(examples_dir().join("rolling-update.yaml"))
        .unwrap()
        .replace("image: busybox:latest", "image: busybox:v2")
        .replace("first version", "second version");
    ok(cli(&servers, &["apply", "-f", "-"], Some(&rolling)));
    let status = ok(cli(
        &servers,
        &[
            "rollout",
            "status",
            "deployment/rolling",
            "--timeout",
            "120",
        ],
        None,
    ));
    assert!(status.contains("successfully rolled out"), "{status}");
    // The old replicas finish terminating (their shell stops httpd on SIGTERM).
    eventually(
        Duration::from_secs(30),
        "only the 4 new replicas left",
        || {
            let ps = pods(&servers, "app=rolling");
            (ps.len() == 4
                && ps.iter().all(|p| {
                    p["spec"]["containers"][0]["image"] == "busybox:v2" && is_running_ready(p)
                }))
            .then_some(())
        },
    );
    let history = ok(cli(
        &servers,
        &["rollout", "history", "deployment/rolling"],
        None,
    ));
    assert!(history.contains("second version"), "{history}");
    drop(agents);
}
