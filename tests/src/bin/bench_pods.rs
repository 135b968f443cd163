//! `make bench-pods`: how fast one node starts a pod, and what the agent costs in memory.
//! Prints figures; asserts nothing. Needs root, Debian's `runc` and busybox-static.
//!
//! - bare `runc run -d` of a busybox bundle until `runc state` says running, then deleted;
//! - a one-node cluster (one server peer, one agent, real processes on loopback): pods with
//!   `nodeName` set, from the Cluster API create until a watch shows them Running, one at a
//!   time, all left running;
//! - the agent's resident memory (and its shims', separately) while it runs those pods.
//!
//! Both sides get one unmeasured warm-up start. Every loop is bounded in count and time.

mod cleanup;
mod one_node;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use flotilla_api::cluster::ObjectRequest;
use one_node::{NodeMemory, OneNode, PodWatch, IMAGE};
use serde_json::{json, Value};

/// Targets from issue 4.
const TARGET_P50_VS_RUNC: f64 = 2.0;
const TARGET_AGENT_RSS_MIB: f64 = 32.0;
/// How long `runc state` is polled for one container to run.
const RUNC_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory samples taken while the pods run (one every 200 ms).
const MEMORY_SAMPLES: usize = 10;
/// Pod subnet of the benchmark node.
const POD_CIDR: &str = "198.18.212.0/24";

#[derive(Parser)]
struct Args {
    #[arg(long)]
    flotilla: PathBuf,
    /// Pods started (and runc containers run).
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Give up on one pod or container after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

/// Latencies of one side, in milliseconds, and how many starts failed or timed out.
#[derive(Default)]
struct Starts {
    ms: Vec<f64>,
    failed: usize,
}

impl Starts {
    /// Nearest-rank percentile `p` (0..=1).
    fn pick(&self, p: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank - 1]
    }
}

/// A runc bundle of the busybox rootfs and a private state root; deletes what it ran on drop.
struct RuncBundle {
    dir: tempfile::TempDir,
    ids: Vec<String>,
}

impl RuncBundle {
    fn create() -> Result<RuncBundle> {
        let dir = tempfile::Builder::new().prefix("flotilla-runc").tempdir()?;
        one_node::busybox_rootfs(&dir.path().join("rootfs"))?;
        let status = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .context("running `runc spec` (is Debian's runc installed?)")?;
        if !status.success() {
            bail!("runc spec failed");
        }
        let path = dir.path().join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sleep", "3600"]);
        spec["root"] = json!({"path": "rootfs", "readonly": true});
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(RuncBundle {
            dir,
            ids: Vec::new(),
        })
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runc");
        command
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Runs container `id` detached; returns the time until `runc state` says running.
    fn start(&mut self, id: &str) -> Result<Duration> {
        self.ids.push(id.to_string());
        let bundle = self.dir.path().display().to_string();
        let begin = Instant::now();
        if !self
            .runc(&["run", "-d", "--bundle", &bundle, id])
            .status()?
            .success()
        {
            bail!("runc run {id} failed");
        }
        while begin.elapsed() < RUNC_START_TIMEOUT {
            let state = self.runc(&["state", id]).stdout(Stdio::piped()).output()?;
            let state: Value = serde_json::from_slice(&state.stdout).unwrap_or_default();
            if state["status"] == "running" {
                return Ok(begin.elapsed());
            }
        }
        bail!("runc container {id} not running after {RUNC_START_TIMEOUT:?}")
    }

    fn delete(&self, id: &str) {
        let _ = self.runc(&["delete", "--force", id]).status();
    }
}

impl Drop for RuncBundle {
    fn drop(&mut self) {
        for id in &self.ids {
            self.delete(id);
        }
        cleanup::unmount_below(self.dir.path());
    }
}

/// Bare runc, `count` times, each container deleted before the next starts.
fn bench_runc(count: usize) -> Result<Starts> {
    let mut bundle = RuncBundle::create()?;
    let tag = std::process::id();
    let mut starts = Starts::default();
    for i in 0..=count {
        let id = format!("flbench-{tag}-{i}");
        let took = bundle.start(&id);
        bundle.delete(&id);
        match took {
            Ok(_) if i == 0 => {}
            Ok(took) => starts.ms.push(took.as_secs_f64() * 1e3),
            Err(e) => {
                eprintln!("runc: {e:#}");
                starts.failed += 1;
            }
        }
    }
    Ok(starts)
}

fn pod(name: &str, node: &str) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}],
        },
    });
    serde_json::to_vec(&pod).expect("a JSON value serializes")
}

/// Creates pod `name` and waits until the watch shows it Running.
async fn start_pod(
    node: &OneNode,
    watch: &mut PodWatch,
    name: &str,
    timeout: Duration,
) -> Result<Duration> {
    let begin = Instant::now();
    let request = ObjectRequest {
        object: pod(name, &node.node_name),
        default_namespace: "default".into(),
    };
    node.client().create(request).await?;
    while let Some(running) = watch.next_running(begin + timeout).await? {
        if running.name == name {
            return Ok(begin.elapsed());
        }
    }
    bail!("pod {name} not Running after {timeout:?}")
}

/// Pods one at a time (plus one warm-up), all left running.
async fn bench_pods(node: &OneNode, count: usize, timeout: Duration) -> Result<Starts> {
    let mut watch = PodWatch::open(&node.addr, "bench=pods").await?;
    start_pod(node, &mut watch, "warm-up", timeout).await?;
    let mut starts = Starts::default();
    for i in 0..count {
        match start_pod(node, &mut watch, &format!("p{i}"), timeout).await {
            Ok(took) => starts.ms.push(took.as_secs_f64() * 1e3),
            Err(e) => {
                eprintln!("flotilla: {e:#}");
                starts.failed += 1;
            }
        }
    }
    Ok(starts)
}

/// The largest agent and shim memory over a few samples.
async fn sample_memory(node: &OneNode) -> Option<NodeMemory> {
    let mut worst: Option<NodeMemory> = None;
    for _ in 0..MEMORY_SAMPLES {
        if let Some(now) = node.memory() {
            let bigger = worst.as_ref().is_none_or(|w| {
                now.agent.rss_kib + now.shims_rss_kib > w.agent.rss_kib + w.shims_rss_kib
            });
            if bigger {
                worst = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worst
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn print_table(runc: &Starts, pods: &Starts, memory: Option<&NodeMemory>) {
    let target_ms = runc.pick(0.5) * TARGET_P50_VS_RUNC;
    println!();
    println!(
        "bench-pods: busybox `sleep 3600`, started one at a time (one warm-up start not counted)"
    );
    let (what, n, p50, p99) = ("", "n", "p50 ms", "p99 ms");
    println!("{what:<44} {n:>5} {p50:>9} {p99:>9}  target");
    let row = |label: &str, s: &Starts, target: &str| {
        let n = format!(
            "{}{}",
            s.ms.len(),
            if s.failed > 0 {
                format!(" ({} failed)", s.failed)
            } else {
                String::new()
            }
        );
        println!(
            "{label:<44} {n:>5} {:>9.1} {:>9.1}  {target}",
            s.pick(0.5),
            s.pick(0.99)
        );
    };
    row("runc run -d → running (bare runc)", runc, "baseline");
    let pod_target = format!(
        "p50 ≤ {TARGET_P50_VS_RUNC}× runc = {target_ms:.1} ms: {}",
        verdict(pods.pick(0.5) <= target_ms)
    );
    row(
        "Flotilla create → Running (watch), 1 node",
        pods,
        &pod_target,
    );
    print_memory(memory, pods.ms.len() + 1);
}

fn print_memory(memory: Option<&NodeMemory>, pods_running: usize) {
    let Some(m) = memory else {
        println!("agent memory: not measured (the agent had exited)");
        return;
    };
    let agent_mib = mib(m.agent.rss_kib);
    println!(
        "agent VmRSS with {pods_running} pods running: {agent_mib:.1} MiB (VmHWM {:.1} MiB); target ≤ {TARGET_AGENT_RSS_MIB} MiB: {}",
        mib(m.agent.peak_kib),
        verdict(agent_mib <= TARGET_AGENT_RSS_MIB)
    );
    println!(
        "shims (separate processes): {} shims, {:.1} MiB VmRSS in total, {:.2} MiB each; {:.1} MiB PSS in total (pages shared with the zygote counted once), {:.2} MiB each",
        m.shims,
        mib(m.shims_rss_kib),
        mib(m.shims_rss_kib) / m.shims.max(1) as f64,
        mib(m.shims_pss_kib),
        mib(m.shims_pss_kib) / m.shims.max(1) as f64
    );
}

async fn run(args: &Args) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_s);
    eprintln!("bare runc: {} containers …", args.pods);
    let runc = bench_runc(args.pods)?;
    eprintln!("starting one server peer and one agent …");
    let node = OneNode::start(&args.flotilla, POD_CIDR).await?;
    eprintln!("Flotilla: {} pods …", args.pods);
    let pods = bench_pods(&node, args.pods, timeout).await;
    let memory = sample_memory(&node).await;
    eprintln!("stopping the agent and its pods …");
    drop(node);
    print_table(&runc, &pods?, memory.as_ref());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    run(&args).await
}
