//! The newcomer's journey, end to end with real processes and real containers (root): from empty
//! data directories, three servers and two agents; every example applies; a killed container is
//! restarted; a deleted pod is replaced; scale 3 → 6 → 2; a SIGKILLed agent's pods move; a
//! SIGKILLed leader and the cluster keeps serving and converges; a rolling update to a new image
//! tag completes. (`flotilla dev` stopping and resuming is in `dev_mode.rs`.)

use std::time::Duration;

use flotilla_e2e::agent::{busybox_image, Agent, AgentOptions, Bridges};
use flotilla_e2e::user::{cli, eventually, examples_dir, is_running_ready, ok, pods, ready_count};
use flotilla_e2e::ProcessCluster;

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
        Agent::start(AgentOptions {
            name: "ssd-node",
            dir: &dir.join("a0"),
            servers: &servers,
            subnet: 160,
            bridge: &format!("fj{tag}0"),
            labels: "disk=ssd",
            images: &[latest.clone(), v2.clone()],
        }),
        Agent::start(AgentOptions {
            name: "hdd-node",
            dir: &dir.join("a1"),
            servers: &servers,
            subnet: 161,
            bridge: &format!("fj{tag}1"),
            labels: "disk=hdd",
            images: &[latest, v2],
        }),
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
