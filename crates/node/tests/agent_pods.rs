//! The node agent running pods for a real control plane (root only): a bound pod runs and
//! serves on its pod IP; exits are restarted per restartPolicy with CrashLoopBackOff and
//! restart counts; probes restart (liveness) and gate Ready (readiness); OOM kills, missing
//! images and graceful deletes are reported as a user of `flotilla get pods` would see them.

mod agent_common;
mod portmap_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent_common::{condition_is, container, phase_is, pod, stage_busybox, World};
use flotilla_node::agent::{AGENT_ENDPOINT_ANNOTATION, IMAGE_PULL_BACK_OFF};
use flotilla_node::runtime::http_get_status;
use flotilla_state::objects::Pod;
use portmap_common::{nat_rules_for, PortmapChains, PORTMAP_TESTS};
use serde_json::{json, Value};

const HTTPD: &str = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
const IDLE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";

/// Waits until `addr` serves `/index.html`.
async fn wait_served(addr: SocketAddr) {
    let deadline = Instant::now() + agent_common::WAIT_LIMIT;
    while http_get_status(addr, "/index.html", Duration::from_secs(1)).await != Some(200) {
        assert!(Instant::now() < deadline, "nothing answered on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port of this machine that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_pod_runs_and_serves_on_its_pod_ip() {
    let world = World::new().await;
    let node = world.wait_node_ready().await;
    let endpoint = world.agent().endpoint().to_string();
    assert_eq!(
        node.metadata.annotations[AGENT_ENDPOINT_ANNOTATION],
        endpoint
    );
    assert_eq!(node.metadata.labels["kubernetes.io/hostname"], world.node);
    assert_eq!(node.spec.pod_cidr, world.subnet);
    let status = node.status.as_ref().unwrap();
    assert!(status.allocatable["cpu"].milli_value() > 0);
    assert!(
        world
            .data_dir()
            .join("images/import/done/busybox.tar")
            .exists(),
        "side-loaded"
    );

    world.run_pod("web", HTTPD).await;
    let pod = world
        .api
        .wait_pod("web", "Running and Ready", |p| {
            phase_is(p, "Running") && condition_is(p, "Ready", "True")
        })
        .await;
    let status = pod.status.as_ref().unwrap();
    let prefix = world.subnet.trim_end_matches("0/24");
    assert!(
        status.pod_ip.starts_with(prefix),
        "{} in {}",
        status.pod_ip,
        world.subnet
    );
    assert_eq!(status.host_ip, "127.0.0.1");
    assert!(status.start_time.is_some());
    let main = container(&pod, "main").unwrap();
    assert!(
        main.ready && main.container_id.starts_with("flotilla://"),
        "{main:?}"
    );
    assert!(main.state.as_ref().unwrap().running.is_some());

    let addr: SocketAddr = format!("{}:8080", status.pod_ip).parse().unwrap();
    wait_served(addr).await;

    // A pod that changes nothing costs no writes: many resyncs later, the same revision.
    let settled = world
        .api
        .pod("web")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = world
        .api
        .pod("web")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(later, settled, "status rewritten without a change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_serves_on_the_nodes_address() {
    let mut world = World::new().await;
    world.wait_node_ready().await;
    let port = free_port();
    let script = format!("trap 'exit 0' TERM; httpd -f -p 127.0.0.1:{port} -h /www & wait");
    let mut object = pod("edge", &world.node, &script);
    object["spec"]["hostNetwork"] = json!(true);
    object["spec"]["containers"][0]["ports"] = json!([{"containerPort": port}]);
    object["spec"]["containers"][0]["readinessProbe"] =
        json!({"tcpSocket": {"port": port}, "periodSeconds": 1});
    world.api.apply(&object).await;
    let pod = world
        .api
        .wait_pod("edge", "Running and Ready", |p| {
            phase_is(p, "Running") && condition_is(p, "Ready", "True")
        })
        .await;
    let status = pod.status.as_ref().unwrap();
    assert_eq!(
        (status.pod_ip.as_str(), status.host_ip.as_str()),
        ("127.0.0.1", "127.0.0.1"),
        "the pod's address is the node's"
    );
    let container_port = &pod.spec.containers[0].ports[0];
    assert_eq!(container_port.host_port, Some(i32::from(port)), "defaulted");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_served(addr).await;

    // A new agent adopts the pod as it is: same container, still the node's address.
    let running = container(&pod, "main").unwrap().container_id.clone();
    world.agent.take().unwrap().shutdown(false).await.unwrap();
    world.start_agent().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pod = world.api.pod("edge").await.unwrap();
    assert_eq!(container(&pod, "main").unwrap().container_id, running);
    assert_eq!(pod.status.as_ref().unwrap().pod_ip, "127.0.0.1");
    wait_served(addr).await;

    world.api.delete_pod("edge", None).await;
    world.api.wait_pod_gone("edge").await;
    assert!(
        std::net::TcpListener::bind(addr).is_ok(),
        "the node's port is free once the pod is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_port_reaches_the_pod_until_it_is_deleted() {
    let _serial = PORTMAP_TESTS.lock().await;
    let world = World::new().await;
    let mut chains = PortmapChains::new(&world.config().cni_network_name, &[]);
    world.wait_node_ready().await;
    let port = free_port();
    let mut object = pod("forwarded", &world.node, HTTPD);
    object["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080, "hostPort": port}]);
    world.api.apply(&object).await;
    let pod = world
        .api
        .wait_pod("forwarded", "Running", |p| phase_is(p, "Running"))
        .await;
    chains.add_pod(&pod.metadata.uid);
    // On the node, its own loopback address and port lead to the pod.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_served(addr).await;
    world.api.delete_pod("forwarded", None).await;
    world.api.wait_pod_gone("forwarded").await;
    let deadline = Instant::now() + agent_common::WAIT_LIMIT;
    while !nat_rules_for(port).is_empty() {
        assert!(Instant::now() < deadline, "the forward outlived the pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies a pod with `policy` running `script`, then waits until `done` holds.
async fn check_policy(
    world: &World,
    name: &str,
    policy: &str,
    script: &str,
    what: &str,
    done: fn(&Pod) -> bool,
) {
    let mut object = pod(name, &world.node, script);
    object["spec"]["restartPolicy"] = json!(policy);
    world.api.apply(&object).await;
    world.api.wait_pod(name, what, done).await;
}

fn restarts(p: &Pod) -> i32 {
    container(p, "main").map_or(0, |c| c.restart_count)
}

fn terminated(p: &Pod) -> Option<(i32, String)> {
    let t = container(p, "main")?.state.as_ref()?.terminated.as_ref()?;
    Some((t.exit_code, t.reason.clone()))
}

fn crash_looping(p: &Pod, exit_code: i32) -> bool {
    let Some(c) = container(p, "main") else {
        return false;
    };
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    waiting.is_some_and(|w| w.reason == "CrashLoopBackOff" && w.message.contains("back-off"))
        && last.is_some_and(|t| t.exit_code == exit_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_are_restarted_per_policy_with_backoff() {
    let world = World::new().await;
    let w = &world;
    tokio::join!(
        check_policy(
            w,
            "always",
            "Always",
            "exit 3",
            "crash-looping after 2 restarts",
            |p| { restarts(p) >= 2 && crash_looping(p, 3) && phase_is(p, "Running") }
        ),
        check_policy(w, "never-fails", "Never", "exit 3", "Failed", |p| {
            phase_is(p, "Failed") && terminated(p) == Some((3, "Error".into())) && restarts(p) == 0
        }),
        check_policy(w, "never-ok", "Never", "exit 0", "Succeeded", |p| {
            phase_is(p, "Succeeded") && terminated(p) == Some((0, "Completed".into()))
        }),
        check_policy(w, "onfailure-ok", "OnFailure", "exit 0", "Succeeded", |p| {
            phase_is(p, "Succeeded") && restarts(p) == 0
        }),
        check_policy(
            w,
            "onfailure-fails",
            "OnFailure",
            "exit 4",
            "restarted",
            |p| { restarts(p) >= 1 && phase_is(p, "Running") }
        ),
    );
    // Finished pods stay finished: more than one backoff later, nothing was restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, phase) in [
        ("never-fails", "Failed"),
        ("never-ok", "Succeeded"),
        ("onfailure-ok", "Succeeded"),
    ] {
        let p = world.api.pod(name).await.unwrap();
        assert!(
            phase_is(&p, phase) && restarts(&p) == 0,
            "{name}: {:?}",
            p.status
        );
    }
}

/// A pod whose `main` container has `probe` as `kind` (livenessProbe or readinessProbe).
fn probed(world: &World, name: &str, script: &str, kind: &str, probe: Value) -> Value {
    let mut object = pod(name, &world.node, script);
    object["spec"]["containers"][0][kind] = probe;
    object
}

fn exec_probe(file: &str) -> Value {
    json!({"exec": {"command": ["cat", file]}, "periodSeconds": 1, "failureThreshold": 1})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let world = World::new().await;
    let script = "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 1000";
    world
        .api
        .apply(&probed(
            &world,
            "sick",
            script,
            "livenessProbe",
            exec_probe("/tmp/healthy"),
        ))
        .await;
    let pod = world
        .api
        .wait_pod("sick", "restarted by its liveness probe", |p| {
            restarts(p) >= 1
        })
        .await;
    let last = container(&pod, "main").unwrap().last_state.clone().unwrap();
    let message = last.terminated.unwrap().message;
    assert!(message.contains("liveness"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_probe_drives_ready() {
    let world = World::new().await;
    let script = "sleep 2; touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 1000";
    world
        .api
        .apply(&probed(
            &world,
            "shy",
            script,
            "readinessProbe",
            exec_probe("/tmp/ready"),
        ))
        .await;
    let ready = |want: &'static str| {
        move |p: &Pod| phase_is(p, "Running") && condition_is(p, "Ready", want)
    };
    world
        .api
        .wait_pod("shy", "running but not ready", ready("False"))
        .await;
    let pod = world.api.wait_pod("shy", "ready", ready("True")).await;
    assert!(container(&pod, "main").unwrap().ready);
    assert!(condition_is(&pod, "ContainersReady", "True"));
    let pod = world
        .api
        .wait_pod("shy", "unready again", ready("False"))
        .await;
    assert_eq!(restarts(&pod), 0, "readiness never restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_is_reported_as_oom_killed() {
    let world = World::new().await;
    // busybox `tail` buffers a newline-free input whole: 200 MiB against a 32 MiB limit.
    let mut object = pod("hog", &world.node, "head -c 200m /dev/zero | tail");
    object["spec"]["restartPolicy"] = json!("Never");
    object["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "32Mi"}});
    world.api.apply(&object).await;
    let pod = world
        .api
        .wait_pod("hog", "Failed", |p| phase_is(p, "Failed"))
        .await;
    assert_eq!(terminated(&pod), Some((137, "OOMKilled".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_waits_with_a_clear_message_until_it_is_imported() {
    let mut world = World::without_agent().await;
    let mut config = world.config();
    config.import_scan_interval = Duration::from_millis(500);
    world.start_agent_with(config).await;
    let mut object = pod("late", &world.node, IDLE);
    object["spec"]["containers"][0]["image"] = json!("late:1");
    world.api.apply(&object).await;
    let pod = world
        .api
        .wait_pod("late", "waiting for its image", |p| {
            let waiting = container(p, "main").and_then(|c| c.state.as_ref()?.waiting.clone());
            waiting.is_some_and(|w| w.reason == IMAGE_PULL_BACK_OFF)
        })
        .await;
    let waiting = container(&pod, "main")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(
        waiting.message,
        "image \"late:1\" is not in this node's image store; import it with `flotilla image import`"
    );
    assert!(phase_is(&pod, "Pending"));

    // Side-loading the image later is enough: the agent scans `images/import/`.
    let staging = world.dir.path().join("staging");
    stage_late_image(&staging);
    let import = world.data_dir().join("images/import/late.tar");
    std::fs::rename(staging.join("late.tar"), &import).unwrap();
    world
        .api
        .wait_pod("late", "Running", |p| phase_is(p, "Running"))
        .await;
}

/// Packs the busybox tree as `late:1` into `dir/late.tar`.
fn stage_late_image(dir: &std::path::Path) {
    stage_busybox(dir, &dir.join("tree"));
    let config = flotilla_node::image::ImageConfig {
        env: vec!["PATH=/bin".to_string()],
        ..Default::default()
    };
    flotilla_node::image::pack_directory(
        &dir.join("tree"),
        "late:1",
        &config,
        &dir.join("late.tar"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_delete_honours_the_grace_period_then_the_pod_disappears() {
    let world = World::new().await;
    let out = world.dir.path().join("out");
    let volume = json!([{"name": "out", "hostPath": {"path": out.display().to_string(), "type": "DirectoryOrCreate"}}]);
    let mount = json!([{"name": "out", "mountPath": "/out"}]);
    let scripts = [
        ("polite", "trap 'echo term > /out/polite; exit 0' TERM; echo up > /out/polite; while true; do sleep 0.2; done"),
        ("stubborn", "trap '' TERM; echo up > /out/stubborn; sleep 1000"),
    ];
    for (name, script) in scripts {
        let mut object = pod(name, &world.node, script);
        object["spec"]["terminationGracePeriodSeconds"] = json!(3);
        object["spec"]["volumes"] = volume.clone();
        object["spec"]["containers"][0]["volumeMounts"] = mount.clone();
        world.api.apply(&object).await;
        world
            .api
            .wait_pod(name, "Running", |p| phase_is(p, "Running"))
            .await;
    }
    let uid = |p: Pod| p.metadata.uid;
    let stubborn_uid = uid(world.api.pod("stubborn").await.unwrap());
    for (name, _) in scripts {
        let deleted_at = Instant::now();
        world.api.delete_pod(name, None).await;
        world.api.wait_pod_gone(name).await;
        let took = deleted_at.elapsed();
        let written = std::fs::read_to_string(out.join(name)).unwrap();
        match name {
            // Stopped by SIGTERM, well within the grace period.
            "polite" => assert_eq!(written.trim(), "term"),
            // Ignores SIGTERM: killed only once the 3 s grace period passed.
            _ => assert!(took >= Duration::from_secs(3), "killed after {took:?}"),
        }
    }
    let runtime = world.agent().runtime();
    assert!(runtime.list().unwrap().is_empty(), "containers removed");
    assert!(
        runtime.list_sandboxes().unwrap().is_empty(),
        "sandboxes removed"
    );

    // The name is free again: a new pod of that name (a new UID) runs.
    world.run_pod("stubborn", IDLE).await;
    let again = world
        .api
        .wait_pod("stubborn", "Running", |p| phase_is(p, "Running"))
        .await;
    assert_ne!(again.metadata.uid, stubborn_uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_comes_from_values_and_config_maps() {
    let world = World::new().await;
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                            "data": {"greeting": "hello", "motd.txt": "from a file"}});
    world.api.apply(&config_map).await;
    let mut object = pod(
        "env",
        &world.node,
        "echo \"$GREETING $WHO $BOTH\" > /tmp/x; cat /etc/cfg/motd.txt; sleep 1000",
    );
    object["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "settings"}}]);
    object["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "cfg", "mountPath": "/etc/cfg"}]);
    object["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
        {"name": "WHO", "value": "world"},
        {"name": "BOTH", "value": "$(GREETING)-$(WHO)"},
    ]);
    world.api.apply(&object).await;
    world
        .api
        .wait_pod("env", "Running", |p| phase_is(p, "Running"))
        .await;
    let id = world.agent().runtime().list().unwrap().remove(0).id;
    let argv: Vec<String> = ["cat", "/tmp/x"].iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + agent_common::WAIT_LIMIT;
    let out = loop {
        let out = world
            .agent()
            .runtime()
            .exec(&id, &argv, Duration::from_secs(10))
            .await
            .unwrap();
        if out.exit_code == 0 || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello world hello-world\n"
    );

    // A missing key blocks the start with a config error, not a crash loop.
    let mut broken = pod("broken", &world.node, IDLE);
    broken["spec"]["containers"][0]["env"] = json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope"}}}]);
    world.api.apply(&broken).await;
    world
        .api
        .wait_pod("broken", "blocked by its config", |p| {
            let waiting = container(p, "main").and_then(|c| c.state.as_ref()?.waiting.clone());
            waiting.is_some_and(|w| {
                w.reason == "CreateContainerConfigError" && w.message.contains("nope")
            })
        })
        .await;
}
