//! bench-sched (d): the same workload on one node through Flotilla and through Docker Swarm, in
//! one run — a replicated busybox `sleep 3600` (a Deployment; a Swarm service on the host
//! network), timed from the request until every replica runs. Flotilla runs it twice: with
//! `hostNetwork: true`, like for like with Swarm's `--network host` (the compared figure), then
//! with a network namespace and CNI address per pod (its default, reported beside it). Flotilla
//! goes first and is torn down before dockerd starts, so they never compete. If docker cannot
//! run here, the reason is printed and Flotilla's figures stand alone.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use flotilla_api::cluster::ApplyRequest;

use crate::one_node::{self, NodeMemory, OneNode, PodWatch, IMAGE};
use crate::swarm::Dockerd;

/// Issue 5 (d): Flotilla at least this many times faster than Swarm.
const TARGET_SPEEDUP: f64 = 10.0;
/// Pod subnet of the benchmark node.
const POD_CIDR: &str = "198.18.213.0/24";

pub struct Config {
    pub flotilla: PathBuf,
    pub replicas: usize,
    /// Bound of each side's wait for all replicas.
    pub timeout: Duration,
}

/// Time until `running` of `replicas` ran (all of them unless the wait timed out).
struct Outcome {
    took: Duration,
    running: usize,
}

fn deployment(replicas: usize, host_network: bool) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bench50}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: bench50}}}}\n  template:\n    metadata: {{labels: {{app: bench50}}}}\n    spec: {{hostNetwork: {host_network}, terminationGracePeriodSeconds: 1, containers: [{{name: c, image: '{IMAGE}', command: [sh, -c, 'sleep 3600']}}]}}\n"
    )
}

/// Applies the Deployment and counts distinct pods the watch shows Running.
async fn flotilla_side(
    config: &Config,
    host_network: bool,
) -> Result<(Outcome, Option<NodeMemory>)> {
    let node = OneNode::start(&config.flotilla, POD_CIDR).await?;
    let mut watch = PodWatch::open(&node.addr, "app=bench50").await?;
    let begin = Instant::now();
    let request = ApplyRequest {
        manifests: deployment(config.replicas, host_network).into_bytes(),
        default_namespace: "default".into(),
        dry_run: false,
    };
    node.client().apply(request).await?;
    let mut running = HashSet::new();
    while running.len() < config.replicas {
        match watch.next_running(begin + config.timeout).await? {
            Some(pod) => running.insert(pod.name),
            None => break,
        };
    }
    let outcome = Outcome {
        took: begin.elapsed(),
        running: running.len(),
    };
    let memory = node.memory();
    Ok((outcome, memory))
}

fn swarm_side(config: &Config) -> Result<Outcome> {
    let mut daemon = Dockerd::start()?;
    let rootfs = tempfile::Builder::new()
        .prefix("flotilla-rootfs")
        .tempdir()?;
    one_node::busybox_rootfs(rootfs.path())?;
    daemon.import_rootfs(rootfs.path())?;
    daemon.swarm_init()?;
    let (took, running) = daemon.time_service(config.replicas, config.timeout)?;
    Ok(Outcome { took, running })
}

fn describe(outcome: &Outcome, replicas: usize) -> String {
    let secs = outcome.took.as_secs_f64();
    if outcome.running >= replicas {
        format!("{replicas}/{replicas} running after {secs:.2} s")
    } else {
        format!(
            "only {}/{replicas} running after {secs:.2} s (gave up)",
            outcome.running
        )
    }
}

fn print_memory(memory: Option<&NodeMemory>) {
    if let Some(m) = memory {
        println!(
            "    agent VmRSS {:.1} MiB (VmHWM {:.1} MiB); {} shims, {:.1} MiB VmRSS ({:.1} MiB PSS) together",
            m.agent.rss_kib as f64 / 1024.0,
            m.agent.peak_kib as f64 / 1024.0,
            m.shims,
            m.shims_rss_kib as f64 / 1024.0,
            m.shims_pss_kib as f64 / 1024.0
        );
    }
}

pub async fn run(config: &Config) {
    let replicas = config.replicas;
    eprintln!("(d) Flotilla: one server peer, one agent, a {replicas}-replica Deployment …");
    let flotilla = flotilla_side(config, true).await;
    let pod_network = flotilla_side(config, false).await;
    eprintln!("(d) Docker Swarm: private dockerd, one-node swarm, a {replicas}-replica service …");
    let swarm = swarm_side(config);
    println!();
    println!("(d) {replicas} busybox replicas on one node, request → all running:");
    let runs = [
        ("host network (compared)", &flotilla),
        ("a network per pod", &pod_network),
    ];
    for (network, run) in runs {
        match run {
            Ok((outcome, memory)) => {
                println!(
                    "    Flotilla Deployment, {network}: {}",
                    describe(outcome, replicas)
                );
                print_memory(memory.as_ref());
            }
            Err(e) => println!("    Flotilla Deployment, {network}: failed: {e:#}"),
        }
    }
    match &swarm {
        Ok(outcome) => println!("    Docker Swarm service: {}", describe(outcome, replicas)),
        Err(e) => println!("    Docker Swarm service: cannot run here: {e:#}"),
    }
    if let (Ok((ours, _)), Ok(theirs)) = (&flotilla, &swarm) {
        let complete = ours.running >= replicas && theirs.running >= replicas;
        let speedup = theirs.took.as_secs_f64() / ours.took.as_secs_f64();
        let met = complete && speedup >= TARGET_SPEEDUP;
        println!(
            "    Flotilla {speedup:.1}× faster than Swarm, both on the host network (target ≥ {TARGET_SPEEDUP}×): {}",
            if met { "met" } else { "MISSED" }
        );
        if let Ok((per_pod, _)) = &pod_network {
            let speedup = theirs.took.as_secs_f64() / per_pod.took.as_secs_f64();
            println!("    (with a network per pod: {speedup:.1}×)");
        }
    }
}
