//! Placement benchmark: builds a mixed cluster (default 5,000 nodes) and a workload of ~300
//! deployments (default 150,000 pods), places every pod with one `schedule_batch` call, and
//! prints throughput and how evenly the pods spread. It prints figures; it asserts nothing.
//!
//! Usage: `bench_placement [NODES] [PODS] [least|most]`

use std::collections::BTreeMap;
use std::time::Instant;

use flotilla_scheduler::{
    schedule_batch, Allocatable, ClusterSnapshot, Decision, LabelSelector, NodeInfo,
    NodeSelectorTerm, PodInfo, Protocol, SchedulerConfig, ScoringStrategy, SelectorOperator,
    TaintEffect, Toleration,
};

const GIB: i64 = 1024 * 1024 * 1024;
const MIB: i64 = 1024 * 1024;
const DEPLOYMENTS: usize = 300;
const ZONES: [&str; 4] = ["zone-a", "zone-b", "zone-c", "zone-d"];

/// splitmix64: a tiny deterministic generator, so every run builds the same cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Args {
    nodes: usize,
    pods: usize,
    strategy: ScoringStrategy,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| match args.get(i) {
        Some(s) => s.parse().map_err(|_| format!("not a count: {s:?}")),
        None => Ok(default),
    };
    let strategy = match args.get(2).map(String::as_str) {
        None | Some("least") => ScoringStrategy::LeastAllocated,
        Some("most") => ScoringStrategy::MostAllocated,
        Some(other) => return Err(format!("strategy must be least or most, not {other:?}")),
    };
    Ok(Args {
        nodes: number(0, 5_000)?,
        pods: number(1, 150_000)?,
        strategy,
    })
}

fn build_nodes(count: usize, rng: &mut Rng) -> Vec<NodeInfo> {
    (0..count)
        .map(|i| {
            let cpus = *rng.pick(&[4i64, 8, 16, 32]);
            let gib_per_cpu = *rng.pick(&[2i64, 4, 4]);
            let allocatable =
                Allocatable::new(cpus * 1_000 - 100, (cpus * gib_per_cpu).max(16) * GIB, 110);
            let mut node = NodeInfo::new(format!("node-{i:05}"), allocatable)
                .with_label("disk", if rng.chance(40) { "ssd" } else { "hdd" })
                .with_label("kubernetes.io/hostname", format!("node-{i:05}"))
                .with_zone(*rng.pick(&ZONES));
            if rng.chance(2) {
                node = node.with_taint("dedicated", "gpu", TaintEffect::NoSchedule);
            }
            if rng.chance(3) {
                node = node.with_taint("spot", "true", TaintEffect::PreferNoSchedule);
            }
            node.with_unschedulable(rng.chance(1))
                .with_ready(!rng.chance(1))
        })
        .collect()
}

/// One deployment's pod template.
struct Template {
    name: String,
    cpu_milli: i64,
    memory_bytes: i64,
    wants_ssd: bool,
    tolerates_gpu: bool,
    anti_affine: bool,
    prefers_zone: Option<&'static str>,
    host_port: Option<u16>,
}

fn build_templates(rng: &mut Rng) -> Vec<Template> {
    (0..DEPLOYMENTS)
        .map(|d| Template {
            name: format!("app-{d:03}"),
            cpu_milli: *rng.pick(&[50, 100, 250, 500, 1_000]),
            memory_bytes: *rng.pick(&[64, 128, 256, 512, 1_024]) * MIB,
            wants_ssd: rng.chance(20),
            tolerates_gpu: rng.chance(5),
            anti_affine: rng.chance(5),
            prefers_zone: rng.chance(10).then(|| *rng.pick(&ZONES)),
            host_port: rng.chance(1).then(|| 9_000 + d as u16),
        })
        .collect()
}

fn build_pods(count: usize, templates: &[Template], rng: &mut Rng) -> Vec<PodInfo> {
    let weights: Vec<usize> = templates
        .iter()
        .map(|_| 1 + rng.below(10) as usize)
        .collect();
    let total_weight: usize = weights.iter().sum();
    let mut pods = Vec::with_capacity(count);
    for (i, (t, w)) in templates.iter().zip(&weights).enumerate() {
        let replicas = if i + 1 == templates.len() {
            count - pods.len()
        } else {
            (count * w / total_weight).min(count - pods.len())
        };
        pods.extend((0..replicas).map(|r| pod_from(t, r)));
    }
    pods
}

fn pod_from(t: &Template, replica: usize) -> PodInfo {
    let mut pod = PodInfo::new("bench", format!("{}-{replica}", t.name))
        .with_label("app", t.name.clone())
        .with_requests(t.cpu_milli, t.memory_bytes)
        .with_owner(format!("rs-{}", t.name));
    if t.wants_ssd {
        pod = pod.with_node_selector("disk", "ssd");
    }
    if t.tolerates_gpu {
        pod = pod.with_toleration(Toleration::equal("dedicated", "gpu", None));
    }
    if t.anti_affine {
        pod = pod.with_anti_affinity(LabelSelector::new().match_label("app", t.name.clone()));
    }
    if let Some(zone) = t.prefers_zone {
        let term = NodeSelectorTerm::new().with(
            flotilla_scheduler::ZONE_LABEL,
            SelectorOperator::In,
            &[zone],
        );
        pod = pod.with_preferred_term(50, term);
    }
    if let Some(port) = t.host_port {
        pod = pod.with_host_port(Protocol::Tcp, port);
    }
    pod
}

fn min_max(values: impl Iterator<Item = usize>) -> (usize, usize) {
    values.fold((usize::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// "min/p10/median/p90/max" of `values`.
fn spread_line(mut values: Vec<usize>) -> String {
    values.sort_unstable();
    if values.is_empty() {
        return "-".to_string();
    }
    let at = |q: usize| values[(values.len() - 1) * q / 100];
    format!("{}/{}/{}/{}/{}", at(0), at(10), at(50), at(90), at(100))
}

/// Nodes any pod may use: ready, schedulable and untainted.
fn is_open(node: &NodeInfo) -> bool {
    node.ready && !node.unschedulable && node.taints.is_empty()
}

fn report_spread(
    nodes: &[NodeInfo],
    pods: &[PodInfo],
    decisions: &[Decision],
    snapshot: &ClusterSnapshot,
) {
    let zone_of: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.zone().unwrap_or("-")))
        .collect();
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_owner_node: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (pod, decision) in pods.iter().zip(decisions) {
        if let Decision::Bind { node } = decision {
            *per_zone.entry(zone_of[node.as_str()]).or_default() += 1;
            let owner = pod.owner.as_deref().unwrap_or("-");
            *per_owner_node.entry((owner, node.as_str())).or_default() += 1;
        }
    }
    let open: Vec<&NodeInfo> = nodes.iter().filter(|n| is_open(n)).collect();
    let usage = |n: &NodeInfo| snapshot.usage(&n.name).unwrap_or_default();
    let percent = |used: i64, total: i64| (used * 100 / total.max(1)) as usize;
    println!(
        "untainted ready nodes: {} of {} (min/p10/median/p90/max below)",
        open.len(),
        nodes.len()
    );
    let pods_per_node = open.iter().map(|n| usage(n).pods as usize).collect();
    println!("  pods per node:      {}", spread_line(pods_per_node));
    let cpu = open
        .iter()
        .map(|n| percent(usage(n).requested.cpu_milli, n.allocatable.cpu_milli))
        .collect();
    println!("  cpu requested %:    {}", spread_line(cpu));
    let memory = open
        .iter()
        .map(|n| percent(usage(n).requested.memory_bytes, n.allocatable.memory_bytes))
        .collect();
    println!("  memory requested %: {}", spread_line(memory));
    let (zone_min, zone_max) = min_max(per_zone.values().copied());
    println!("pods per zone: min {zone_min}, max {zone_max} {per_zone:?}");
    let (_, owner_max) = min_max(per_owner_node.values().copied());
    println!("most replicas of one deployment on one node: {owner_max}");
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\nusage: bench_placement [NODES] [PODS] [least|most]");
            std::process::exit(2);
        }
    };
    let mut rng = Rng(0x5EED);
    let nodes = build_nodes(args.nodes, &mut rng);
    let templates = build_templates(&mut rng);
    let pods = build_pods(args.pods, &templates, &mut rng);
    let config = SchedulerConfig {
        strategy: args.strategy,
        ..SchedulerConfig::default()
    };

    let started = Instant::now();
    let mut snapshot = match ClusterSnapshot::new(nodes.clone()) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            eprintln!("bad cluster: {e}");
            std::process::exit(1);
        }
    };
    let build_ms = started.elapsed().as_secs_f64() * 1e3;

    let started = Instant::now();
    let decisions = schedule_batch(&pods, &mut snapshot, &config);
    let elapsed_s = started.elapsed().as_secs_f64();

    let placed = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Bind { .. }))
        .count();
    println!(
        "cluster: {} nodes, {} pods from {} deployments, strategy {:?}, {} feasible nodes scored per pod",
        nodes.len(),
        pods.len(),
        templates.len(),
        config.strategy,
        config.feasible_nodes_to_find(nodes.len())
    );
    println!("snapshot build: {build_ms:.1} ms");
    println!("placed: {placed}, unschedulable: {}", pods.len() - placed);
    println!(
        "wall time: {:.3} s, {:.0} pods/s",
        elapsed_s,
        pods.len() as f64 / elapsed_s
    );
    if let Some(Decision::Unschedulable { reasons }) = decisions
        .iter()
        .find(|d| matches!(d, Decision::Unschedulable { .. }))
    {
        println!("first unschedulable: {reasons}");
    }
    report_spread(&nodes, &pods, &decisions, &snapshot);
}
