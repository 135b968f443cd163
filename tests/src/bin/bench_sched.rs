//! `make bench-sched`: the control plane at scale, and node loss with real agents. Prints
//! figures; asserts nothing.
//!
//! (b) a 3-peer cluster with hollow nodes: Deployments applied, time until every pod is bound
//!     (committed through Raft), pods/s.
//! (c) node loss with real agents (needs root and the busybox image): SIGKILL an agent, time
//!     until its pods are Running elsewhere, over several kills.
//!
//! (d) `--versus-swarm` (root, Debian's docker.io): a 50-replica busybox Deployment on one node
//!     (one server peer, one real agent), apply → all Running, next to Docker Swarm doing the
//!     same on a private dockerd in the same run.
//!
//! (a), pure placement, is `cargo run --release -p flotilla-scheduler --example bench_placement`.
//! Every loop is bounded in time; everything runs on loopback.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod bound;
mod cleanup;
mod one_node;
mod swarm;
mod versus_swarm;

use clap::Parser;
use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{ApplyRequest, ListRequest};
use flotilla_e2e::{channel, free_port, ProcessCluster};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    flotilla: PathBuf,
    /// Hollow nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    #[arg(long, default_value_t = 300)]
    deployments: usize,
    #[arg(long, default_value_t = 500)]
    replicas: usize,
    /// Give up on (b) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Run (c) with this many agent kills (0 skips it).
    #[arg(long, default_value_t = 0)]
    node_loss_kills: usize,
    /// The busybox image archive for (c).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Run (d): one node vs Docker Swarm, a Deployment of `--swarm-replicas` pods.
    #[arg(long)]
    versus_swarm: bool,
    #[arg(long, default_value_t = 50)]
    swarm_replicas: usize,
}

struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &PathBuf, args: &[String], log: &std::path::Path) -> Killer {
    let out = std::fs::File::create(log).unwrap();
    Killer(
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn flotilla"),
    )
}

/// Attempts at one count before it is reported as unknown.
const COUNT_ATTEMPTS_MAX: usize = 3;

/// Counts the objects that match, paging through one list; a failed page restarts the count
/// (at most [`COUNT_ATTEMPTS_MAX`] times) rather than reporting a partial total. `None`: no
/// complete count could be taken.
async fn count(addr: &str, kind: &str, fields: &str, labels: &str) -> Option<usize> {
    'attempt: for _ in 0..COUNT_ATTEMPTS_MAX {
        let mut total = 0;
        let mut token = String::new();
        loop {
            let request = ListRequest {
                kind: kind.into(),
                all_namespaces: true,
                field_selector: fields.into(),
                label_selector: labels.into(),
                limit: 5000,
                r#continue: token.clone(),
                stale: true,
                ..Default::default()
            };
            let page = match ClusterApiClient::new(channel(addr))
                .max_decoding_message_size(256 << 20)
                .list(request)
                .await
            {
                Ok(page) => page.into_inner(),
                Err(status) => {
                    eprintln!(
                        "    (count of {kind} failed: {}; counting again)",
                        status.message()
                    );
                    continue 'attempt;
                }
            };
            total += page.items.len();
            if page.r#continue.is_empty() {
                return Some(total);
            }
            token = page.r#continue;
        }
    }
    None
}

/// How often (b) prints its progress.
const REPORT_EVERY: Duration = Duration::from_secs(5);

fn deployment(i: usize, replicas: usize) -> String {
    let ssd = if i % 5 == 0 {
        "\n      nodeSelector: {disk: ssd}"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: d{i}}}}}\n  template:\n    metadata: {{labels: {{app: d{i}}}}}\n    spec:{ssd}\n      containers: [{{name: c, image: busybox, resources: {{requests: {{cpu: {}m, memory: {}Mi}}}}}}]\n",
        10 + (i % 7) * 5,
        16 + (i % 5) * 8
    )
}

async fn at_scale(args: &Args) {
    std::env::set_var("FLOTILLA_BIN", &args.flotilla);
    eprintln!("(b) starting 3 peers …");
    let cluster = ProcessCluster::start(3).await;
    let addrs: Vec<String> = cluster.peers.iter().map(|p| p.addr.clone()).collect();
    let hollow_log = cluster.dir.path().join("hollow.log");
    let _hollow = spawn(
        &args.flotilla,
        &[
            "agent".into(),
            "--name".into(),
            "hollow".into(),
            "--servers".into(),
            addrs.join(","),
            "--hollow".into(),
            args.nodes.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ],
        &hollow_log,
    );
    let started = Instant::now();
    while count(&addrs[0], "Node", "", "").await.unwrap_or(0) < args.nodes {
        assert!(
            started.elapsed() < Duration::from_secs(args.timeout),
            "hollow nodes did not register"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "(b) {} hollow nodes registered in {:.1} s",
        args.nodes,
        started.elapsed().as_secs_f64()
    );
    let total = args.deployments * args.replicas;
    let mut bound = bound::BoundPods::open(&addrs[1])
        .await
        .expect("watching pods");
    let begin = Instant::now();
    let docs: Vec<String> = (0..args.deployments)
        .map(|i| deployment(i, args.replicas))
        .collect();
    for chunk in docs.chunks(50) {
        ClusterApiClient::new(channel(&addrs[0]))
            .apply(ApplyRequest {
                manifests: chunk.join("---\n").into_bytes(),
                default_namespace: "default".into(),
                dry_run: false,
            })
            .await
            .expect("apply deployments");
    }
    let applied = begin.elapsed();
    let deadline = begin + Duration::from_secs(args.timeout);
    let mut next_report = Instant::now() + REPORT_EVERY;
    while bound.count() < total && Instant::now() < deadline {
        // Follow the watch in short steps so the loop notices the total as soon as it is reached.
        let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
        if let Err(e) = bound.follow(step).await {
            eprintln!("    counting stopped: {e}");
            break;
        }
        if Instant::now() >= next_report {
            eprintln!(
                "    {}/{total} created, {} bound after {:.0} s",
                bound.existing(),
                bound.count(),
                begin.elapsed().as_secs_f64()
            );
            next_report = Instant::now() + REPORT_EVERY;
        }
    }
    let bound = bound.count();
    let secs = begin.elapsed().as_secs_f64();
    println!();
    println!(
        "(b) {} Deployments × {} replicas onto {} hollow nodes, 3 peers:",
        args.deployments, args.replicas, args.nodes
    );
    println!("    applied in {:.1} s; {bound}/{total} pods bound and committed after {secs:.1} s: {:.0} pods/s", applied.as_secs_f64(), bound as f64 / secs);
}

/// Real agents in (c).
const NODE_LOSS_AGENTS: usize = 3;

/// Sweeps up after (c)'s agents (`<root>/agent-<i>`, bridges `flb<i>`) when dropped.
struct AgentSweep {
    root: PathBuf,
    agents: usize,
}

impl Drop for AgentSweep {
    fn drop(&mut self) {
        let dirs: Vec<PathBuf> = (0..self.agents)
            .map(|i| self.root.join(format!("agent-{i}")))
            .collect();
        let bridges: Vec<String> = (0..self.agents).map(|i| format!("flb{i}")).collect();
        cleanup::sweep_agents(&self.root, &dirs, &bridges);
    }
}

/// (c): three real agents; kill one at a time and time the replacement.
async fn node_loss(args: &Args) {
    let image = args
        .image
        .clone()
        .expect("--image busybox.tar for node loss");
    std::env::set_var("FLOTILLA_BIN", &args.flotilla);
    let cluster = ProcessCluster::start(3).await;
    let addrs: Vec<String> = cluster.peers.iter().map(|p| p.addr.clone()).collect();
    // Dropped after the agents (declared later) and before the cluster's directory goes: the
    // killed agents' containers, mounts, cgroups and bridges go too, even after a failure.
    let _sweep = AgentSweep {
        root: cluster.dir.path().to_path_buf(),
        agents: NODE_LOSS_AGENTS,
    };
    let mut agents: Vec<Option<Killer>> = Vec::new();
    let start_agent = |i: usize| {
        let dir = cluster.dir.path().join(format!("agent-{i}"));
        std::fs::create_dir_all(dir.join("images/import")).unwrap();
        std::fs::copy(&image, dir.join("images/import/busybox.tar")).unwrap();
        spawn(
            &args.flotilla,
            &[
                "agent".into(),
                "--name".into(),
                format!("bench-{i}"),
                "--servers".into(),
                addrs.join(","),
                "--data-dir".into(),
                dir.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()),
                "--pod-cidr".into(),
                format!("198.18.{}.0/24", 200 + i),
                "--bridge".into(),
                format!("flb{i}"),
            ],
            &cluster.dir.path().join(format!("agent-{i}.log")),
        )
    };
    for i in 0..NODE_LOSS_AGENTS {
        agents.push(Some(start_agent(i)));
    }
    let running = |addr: String| async move {
        let request = ListRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            label_selector: "app=loss".into(),
            ..Default::default()
        };
        let page = ClusterApiClient::new(channel(&addr))
            .list(request)
            .await
            .map(|r| r.into_inner())
            .ok();
        page.map(|p| {
            p.items
                .iter()
                .map(|i| serde_json::from_slice::<Value>(i).unwrap())
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    };
    // All agents Ready first, or the replicas all land on the first one up.
    let ready_nodes = |addr: String| async move {
        let request = ListRequest {
            kind: "Node".into(),
            ..Default::default()
        };
        let page = ClusterApiClient::new(channel(&addr))
            .list(request)
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        page.iter()
            .filter_map(|item| serde_json::from_slice::<Value>(item).ok())
            .filter(|node| {
                node["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count()
    };
    let settle = Instant::now();
    while ready_nodes(addrs[0].clone()).await < NODE_LOSS_AGENTS {
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "the agents did not all turn Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ClusterApiClient::new(channel(&addrs[0]))
        .apply(ApplyRequest {
            manifests: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: loss}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: loss}}\n  template:\n    metadata: {labels: {app: loss}}\n    spec: {terminationGracePeriodSeconds: 1, containers: [{name: c, image: busybox:latest, command: [sleep, '3600']}]}\n".as_bytes().to_vec(),
            default_namespace: "default".into(),
            dry_run: false,
        })
        .await
        .expect("apply");
    let mut times = Vec::new();
    for kill in 0..args.node_loss_kills {
        let settle = Instant::now();
        while running(addrs[0].clone()).await.len() < 6
            && settle.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The agent running the most pods (the next in turn on a tie): a node without pods
        // would time nothing.
        let placed = running(addrs[0].clone()).await;
        let on = |i: usize| {
            let name = format!("bench-{i}");
            placed.iter().filter(|n| **n == name).count()
        };
        let mut victim = kill % NODE_LOSS_AGENTS;
        for step in 1..NODE_LOSS_AGENTS {
            let next = (kill + step) % NODE_LOSS_AGENTS;
            if on(next) > on(victim) {
                victim = next;
            }
        }
        let name = format!("bench-{victim}");
        let on_victim = on(victim);
        let killed_at = Instant::now();
        agents[victim] = None;
        loop {
            let nodes = running(addrs[1].clone()).await;
            if nodes.len() >= 6 && !nodes.contains(&name) {
                break;
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                eprintln!("(c) kill {kill}: no recovery within 60 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = killed_at.elapsed();
        eprintln!(
            "(c) kill {}: {on_victim} pods on {name}, all 6 Running elsewhere after {:.2} s",
            kill + 1,
            took.as_secs_f64()
        );
        times.push(took.as_secs_f64());
        agents[victim] = Some(start_agent(victim));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if !times.is_empty() {
        let pick = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
        println!();
        println!("(c) node loss, {} kills: pods Running elsewhere after p50 {:.2} s, p99 {:.2} s (target p99 ≤ 5 s)", times.len(), pick(0.5), pick(0.99));
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.deployments > 0 {
        at_scale(&args).await;
    }
    if args.node_loss_kills > 0 {
        node_loss(&args).await;
    }
    if args.versus_swarm {
        let config = versus_swarm::Config {
            flotilla: args.flotilla.clone(),
            replicas: args.swarm_replicas,
            timeout: Duration::from_secs(args.timeout),
        };
        versus_swarm::run(&config).await;
    }
}
