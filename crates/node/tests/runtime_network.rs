//! Pod networking with real containers (root only): two containers of one sandbox talk over
//! localhost, the test process reaches the pod over the CNI bridge (addresses only from
//! 198.18.0.0/15, on a bridge private to the test), probes work against it, and removal
//! releases the address and the veth.

mod portmap_common;
mod runtime_common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use flotilla_node::network::{Cni, NetworkError, PortMapping, PortProtocol};
use flotilla_node::runtime::{
    http_get_status, run_probe, ContainerId, ProbeAction, ProbeOutcome, RuntimeError, Sandbox,
    SandboxNetwork,
};
use portmap_common::{nat_rules_for, PortmapChains, PORTMAP_TESTS};
use runtime_common::{veths_on, Fixture, FixtureOptions, WAIT_LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HTTPD: &str = "mkdir -p /www && echo flotilla-ok > /www/index.html && \
                     trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
const IDLE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";

/// Waits until `addr` answers an HTTP GET with 200.
async fn wait_http(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while http_get_status(addr, "/", Duration::from_secs(1)).await != Some(200) {
        assert!(Instant::now() < deadline, "{addr} never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `GET /` on `addr`, read raw over TCP.
async fn fetch_body(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let request = "GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n";
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    conn.take(64 * 1024)
        .read_to_end(&mut response)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

async fn check_exec_stdout(fx: &Fixture, id: &ContainerId, argv: &[&str], expected: &str) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = fx
        .runtime
        .exec(id, &argv, Duration::from_secs(20))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!((out.exit_code, stdout.as_ref()), (0, expected), "{argv:?}");
}

async fn check_probe(fx: &Fixture, id: &ContainerId, ip: IpAddr, action: ProbeAction, ok: bool) {
    let outcome = run_probe(&fx.runtime, id, ip, &action, Duration::from_secs(2)).await;
    let expected = if ok {
        ProbeOutcome::Success
    } else {
        ProbeOutcome::Failure
    };
    assert_eq!(outcome, expected, "{action:?}");
}

#[tokio::test]
async fn containers_share_localhost_and_the_pod_is_reachable_over_the_bridge() {
    let fx = Fixture::new(FixtureOptions {
        network: true,
        ..Default::default()
    });
    let sandbox = fx.runtime.create_sandbox("pod-net", "web-0").await.unwrap();
    let address = sandbox.address.expect("the pod got an address");
    let subnet = fx.subnet.clone().unwrap();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(
        address.ip.to_string().starts_with(prefix),
        "{address:?} in {subnet}"
    );
    assert_eq!(address.prefix_len, 24);

    let server = fx.start(&sandbox, "server", HTTPD).await;
    let client = fx.start(&sandbox, "client", IDLE).await;
    let pod_http = SocketAddr::new(IpAddr::V4(address.ip), 8080);
    wait_http(pod_http).await;

    let wget = ["wget", "-qO-", "http://127.0.0.1:8080/index.html"];
    check_exec_stdout(&fx, &client, &wget, "flotilla-ok\n").await;
    let own_ip = ["ip", "-4", "-o", "addr", "show", "eth0"];
    let out = fx
        .runtime
        .exec(&client, &own_ip.map(String::from), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {}/24", address.ip)),
        "{out:?}"
    );
    assert_eq!(fetch_body(pod_http).await, "flotilla-ok\n");

    let pod_ip = IpAddr::V4(address.ip);
    let http = |path: &str| ProbeAction::HttpGet {
        port: 8080,
        path: path.to_string(),
    };
    check_probe(&fx, &server, pod_ip, http("/index.html"), true).await;
    check_probe(&fx, &server, pod_ip, http("/missing"), false).await;
    check_probe(
        &fx,
        &server,
        pod_ip,
        ProbeAction::TcpSocket { port: 8080 },
        true,
    )
    .await;
    check_probe(
        &fx,
        &server,
        pod_ip,
        ProbeAction::TcpSocket { port: 8081 },
        false,
    )
    .await;
    let exec = |argv: &[&str]| ProbeAction::Exec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
    };
    check_probe(&fx, &client, pod_ip, exec(&["true"]), true).await;
    check_probe(&fx, &client, pod_ip, exec(&["false"]), false).await;

    let busy = fx.runtime.remove_sandbox("pod-net").await;
    assert!(
        matches!(busy, Err(RuntimeError::SandboxBusy { .. })),
        "{busy:?}"
    );
    for id in [&server, &client] {
        fx.runtime.stop(id, Duration::from_secs(30)).await.unwrap();
        fx.runtime.remove(id).await.unwrap();
    }
    assert_eq!((fx.veths(), fx.allocated_ips()), (1, 1));
    fx.runtime.remove_sandbox("pod-net").await.unwrap();
    assert_eq!((fx.veths(), fx.allocated_ips()), (0, 0));
    assert!(fx.mounts().iter().all(|m| !m.contains("sandboxes")));
    fx.runtime.remove_sandbox("pod-net").await.unwrap();
}

#[tokio::test]
async fn a_host_network_pod_serves_on_the_nodes_address_and_owns_only_its_ipc() {
    let fx = Fixture::new(FixtureOptions {
        network: true,
        ..Default::default()
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let node_hostname = nix::unistd::gethostname().unwrap();
    let sandbox = fx
        .runtime
        .create_pod_sandbox("pod-host", "ignored", SandboxNetwork::Host)
        .await
        .unwrap();
    assert!(sandbox.host_network);
    assert_eq!(sandbox.address, None, "no address of its own");
    assert_eq!(
        (fx.veths(), fx.allocated_ips()),
        (0, 0),
        "no CNI attachment"
    );

    let httpd = format!(
        "mkdir -p /www && echo host-ok > /www/index.html && \
         trap 'exit 0' TERM; httpd -f -p 127.0.0.1:{port} -h /www & wait"
    );
    let server = fx.start(&sandbox, "server", &httpd).await;
    let on_node = SocketAddr::from(([127, 0, 0, 1], port));
    wait_http(on_node).await;
    assert_eq!(fetch_body(on_node).await, "host-ok\n");
    let hostname = format!("{}\n", node_hostname.to_string_lossy());
    check_exec_stdout(&fx, &server, &["hostname"], &hostname).await;
    // The node's network namespace, a private IPC namespace.
    let host_ns = |kind: &str| {
        let link = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        format!("{}\n", link.display())
    };
    check_exec_stdout(
        &fx,
        &server,
        &["readlink", "/proc/self/ns/net"],
        &host_ns("net"),
    )
    .await;
    let ipc = ["readlink", "/proc/self/ns/ipc"].map(String::from);
    let out = fx
        .runtime
        .exec(&server, &ipc, Duration::from_secs(10))
        .await
        .unwrap();
    let pod_ipc = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(pod_ipc.starts_with("ipc:["), "{out:?}");
    assert_ne!(pod_ipc, host_ns("ipc"));
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        node_hostname,
        "the node kept its hostname"
    );

    fx.runtime
        .stop(&server, Duration::from_secs(30))
        .await
        .unwrap();
    fx.runtime.remove(&server).await.unwrap();
    fx.runtime.remove_sandbox("pod-host").await.unwrap();
    assert!(fx.mounts().iter().all(|m| !m.contains("sandboxes")));
    assert_eq!((fx.veths(), fx.allocated_ips()), (0, 0));
}

/// A port of this machine that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// The sandbox of pod `uid` with a free node port forwarded to its port 8080, and that port.
async fn forwarded_sandbox(fx: &Fixture, uid: &str) -> (Sandbox, u16) {
    let port = free_port();
    let network = SandboxNetwork::Pod {
        host_ports: vec![PortMapping {
            host_port: port,
            container_port: 8080,
            protocol: PortProtocol::Tcp,
        }],
    };
    let sandbox = fx
        .runtime
        .create_pod_sandbox(uid, "forwarded", network)
        .await
        .unwrap();
    (sandbox, port)
}

/// A fixture with a pod network, and that network's CNI name.
fn networked_fixture() -> (Fixture, String) {
    let fx = Fixture::new(FixtureOptions {
        network: true,
        ..Default::default()
    });
    let network = fx.runtime.config().network.as_ref().unwrap();
    let name = network.network_name.clone();
    (fx, name)
}

#[tokio::test]
async fn a_host_port_forwards_the_nodes_port_to_the_pod_until_the_sandbox_goes() {
    let _serial = PORTMAP_TESTS.lock().await;
    let (fx, network) = networked_fixture();
    let _chains = PortmapChains::new(&network, &["pod-hostport"]);
    let (sandbox, port) = forwarded_sandbox(&fx, "pod-hostport").await;
    let address = sandbox.address.unwrap();
    // The bridge's address is one of the node's own: the node's port there leads to the pod.
    let node_ip = IpAddr::V4(address.gateway.expect("the bridge is the gateway"));
    assert!(
        !nat_rules_for(port).is_empty(),
        "portmap's DNAT is in place"
    );
    let server = fx.start(&sandbox, "server", HTTPD).await;
    wait_http(SocketAddr::new(IpAddr::V4(address.ip), 8080)).await;
    let via_node = SocketAddr::new(node_ip, port);
    wait_http(via_node).await;
    assert_eq!(fetch_body(via_node).await, "flotilla-ok\n");
    // The node's loopback too (portmap masquerades it).
    let on_loopback = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(fetch_body(on_loopback).await, "flotilla-ok\n");

    fx.runtime
        .stop(&server, Duration::from_secs(30))
        .await
        .unwrap();
    fx.runtime.remove(&server).await.unwrap();
    fx.runtime.remove_sandbox("pod-hostport").await.unwrap();
    assert_eq!(
        nat_rules_for(port),
        Vec::<String>::new(),
        "no rule left behind"
    );
    assert!(
        TcpStream::connect(via_node).await.is_err(),
        "nothing answers on the node's port"
    );
    assert_eq!((fx.veths(), fx.allocated_ips()), (0, 0));
}

#[tokio::test]
async fn a_lost_sandbox_record_still_takes_its_port_forwards_along() {
    let _serial = PORTMAP_TESTS.lock().await;
    let (fx, network) = networked_fixture();
    let _chains = PortmapChains::new(&network, &["pod-lost"]);
    let (sandbox, port) = forwarded_sandbox(&fx, "pod-lost").await;
    assert!(!nat_rules_for(port).is_empty());
    std::fs::write(sandbox.dir.join("sandbox.json"), b"{ torn").unwrap();
    fx.runtime.remove_sandbox("pod-lost").await.unwrap();
    assert_eq!(
        nat_rules_for(port),
        Vec::<String>::new(),
        "no rule left behind"
    );
    assert_eq!((fx.veths(), fx.allocated_ips()), (0, 0));
    assert!(!sandbox.dir.exists());
}

#[tokio::test]
async fn cni_del_is_idempotent_and_cleans_up_a_half_failed_add() {
    // Pods without a network of their own; the CNI client under test is separate.
    let fx = Fixture::new(FixtureOptions::default());
    // A /30 holds one pod: .1 is the gateway on the bridge, .2 the only pod address.
    let config = fx.private_network(30);
    let cni = Cni::new(config.clone()).unwrap();
    let first = fx.runtime.create_sandbox("pod-a", "a").await.unwrap();
    let second = fx.runtime.create_sandbox("pod-b", "b").await.unwrap();
    let first_net = first
        .namespaces
        .net
        .clone()
        .expect("a pod network namespace");
    let second_net = second
        .namespaces
        .net
        .clone()
        .expect("a pod network namespace");

    let address = cni.add("pod-a", &first_net, &[]).await.unwrap();
    assert!(address.ip.to_string().starts_with("198.18."), "{address:?}");
    assert_eq!(veths_on(&config.bridge), 1);
    let full = cni.add("pod-b", &second_net, &[]).await;
    assert!(
        matches!(full, Err(NetworkError::PluginFailed { .. })),
        "{full:?}"
    );
    assert_eq!(veths_on(&config.bridge), 1, "the failed ADD left no veth");

    for _ in 0..2 {
        cni.del("pod-a", Some(&first_net), Some(&[])).await.unwrap();
        assert_eq!(veths_on(&config.bridge), 0);
    }
    cni.del("pod-a", None, Some(&[])).await.unwrap();
    cni.del("never-added", None, Some(&[])).await.unwrap();
    // The address is free again: the second pod gets it now.
    let again = cni.add("pod-b", &second_net, &[]).await.unwrap();
    assert_eq!(again.ip, address.ip);
    cni.del("pod-b", Some(&second_net), Some(&[]))
        .await
        .unwrap();
    for uid in ["pod-a", "pod-b"] {
        fx.runtime.remove_sandbox(uid).await.unwrap();
    }
}
