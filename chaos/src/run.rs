//! One chaos run, start to finish: pick a slot, build the cluster, run the register workload and
//! watchers (and, with agents, the deployment churn) while the nemesis works through the seeded
//! schedule, heal, check, tear down, and write `report.json`, `history.jsonl`, `watch.json` (and
//! `churn.jsonl`) into the run directory. The agents' journals are judged after teardown, when
//! every container has stopped and recorded it.
//!
//! Teardown always happens: on success and on error through [`Cluster::teardown`], on a panic
//! or a dropped future through the cluster's `Drop`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::checker::linearizable::{check_linearizable, LinearizabilityConfig};
use crate::checker::watch::{check_watches, WatcherLog};
use crate::checker::Verdict;
use crate::clean::{self, Which};
use crate::client;
use crate::clock::RunClock;
use crate::cluster::{self, Cluster, ClusterOptions, Endpoints, PeerExit};
use crate::error::ChaosError;
use crate::fault::{self, PlanContext, PlannedFault};
use crate::history::{History, Recorder, RecorderConfig};
use crate::host::HostOptions;
use crate::nemesis::{self, FaultRecord, SharedCluster};
use crate::net::RunSlot;
use crate::podcheck;
use crate::report::{self, Report, WatcherSummary};
use crate::scenario::{self, Faketime, Scenario};
use crate::sys;
use crate::verify::{self, CheckResult, Fence, Member};
use crate::workload::churn::{self, ChurnConfig, ChurnOp};
use crate::workload::committed::{self, CommittedEntry};
use crate::workload::configmap::ConfigMapRegisters;
use crate::workload::kv::KvRegisters;
use crate::workload::register::{self, RegisterBackend, RegisterConfig};
use crate::workload::watcher::{self, WatchGoal, WatchSource, WatcherConfig, WatcherOutcome};
use crate::workload::Workload;

/// Where libfaketime may be installed.
pub const FAKETIME_LIBRARIES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// How long every peer has to agree on a leader after the cluster starts.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long watchers get to catch up with the committed history at the end.
pub const WATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one member's history replay may take.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// A watcher that hears nothing for this long resumes on another peer.
pub const WATCH_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Watchers give up this long after the workload's end at the latest.
pub const WATCH_LIFETIME_AFTER_WORKLOAD: Duration = Duration::from_secs(180);

/// Events one watcher records at most.
pub const MAX_WATCH_EVENTS: usize = 2_000_000;

const PROBE_PREFIX: &str = "chaos/probe/";
const FENCE_KEY: &str = "chaos/fence";
/// The configmap workload's fence: a ConfigMap in a namespace of its own.
const FENCE_NAMESPACE: &str = "flotilla-chaos";
const FENCE_NAME: &str = "fence";

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: String,
    pub seed: u64,
    /// The register backend and the API the watchers use.
    pub workload: Workload,
    pub duration: Duration,
    pub peers: u16,
    /// Node agents running real containers and the deployment churn (0: none; scenarios that
    /// need agents raise it).
    pub agents: u16,
    pub flotilla: PathBuf,
    pub out_dir: PathBuf,
    pub keys: u32,
    pub clients: u32,
    pub max_ops: u64,
    pub watchers: u32,
    pub think_max: Duration,
    pub op_timeout: Duration,
    /// Keep the peers' data directories even when the run is valid.
    pub keep_data: bool,
}

impl RunConfig {
    /// A run with the default workload: ConfigMap registers through the Cluster API, 8 keys,
    /// 6 clients, 2 watchers, at most 50 000 ops.
    pub fn new(
        scenario: &str,
        seed: u64,
        duration: Duration,
        flotilla: PathBuf,
        out_dir: PathBuf,
    ) -> Self {
        RunConfig {
            scenario: scenario.to_string(),
            seed,
            workload: Workload::ConfigMap,
            duration,
            peers: 3,
            agents: 0,
            flotilla,
            out_dir,
            keys: 8,
            clients: 6,
            max_ops: 50_000,
            watchers: 2,
            think_max: Duration::from_millis(5),
            op_timeout: Duration::from_millis(2_500),
            keep_data: false,
        }
    }
}

/// Everything the driver collected before teardown.
struct Collected {
    faults: Vec<FaultRecord>,
    workload_ms: u64,
    heal_notes: Vec<String>,
    checks: Vec<CheckResult>,
    exits: Vec<PeerExit>,
    watchers: Vec<WatcherOutcome>,
    committed: Vec<CommittedEntry>,
    churn: Vec<ChurnOp>,
    /// Each agent's node name and data directory, for the journal check after teardown.
    agent_dirs: Vec<(String, PathBuf)>,
}

/// Runs one scenario and returns its report (also written to `<run dir>/report.json`).
pub async fn run(config: &RunConfig) -> Result<Report, ChaosError> {
    let scenario = scenario::find(&config.scenario)
        .ok_or_else(|| ChaosError::UnknownScenario(config.scenario.clone()))?;
    preflight(config)?;
    let peers = config.peers.max(scenario.needs.min_peers);
    let agents = config.agents.max(scenario.needs.min_agents);
    let duration_ms = config.duration.as_millis() as u64;
    let context = PlanContext { peers, agents };
    let schedule = fault::plan_with(scenario.picker, config.seed, duration_ms, context);
    let slot = cluster::claim_slot().await?;
    let (run_dir, options) = match prepare(config, scenario, slot, context) {
        Ok(prepared) => prepared,
        Err(e) => {
            clean::clean(&Which::Slot(slot.index()));
            return Err(e);
        }
    };
    tracing::info!(scenario = scenario.name, seed = config.seed, workload = %config.workload, peers, agents, slot = %slot, faults = schedule.len(), dir = %run_dir.display(), "run starts");
    let cluster: SharedCluster = Arc::new(Mutex::new(Cluster::create(options).await?));
    let collected = drive(config, &cluster, &schedule, &run_dir).await;
    let cleanup = cluster.lock().await.teardown().await;
    let mut collected = collected?;
    let overlap = journals_check(&collected.agent_dirs);
    collected.checks.extend(overlap);
    write_json(
        &run_dir.join("watch.json"),
        &WatchFile {
            committed: &collected.committed,
            watchers: collected.watchers.iter().map(|w| &w.log).collect(),
        },
    )?;
    let verdict = report::overall_verdict(&collected.checks);
    if verdict == Verdict::Valid && !config.keep_data {
        remove_data_dirs(&run_dir);
    }
    let history = load_history(&run_dir)?;
    let report = Report {
        scenario: scenario.name.to_string(),
        seed: config.seed,
        api: config.workload.name().to_string(),
        peers,
        agents,
        duration_ms,
        run_id: slot.id(),
        subnet: slot.to_string(),
        run_dir: run_dir.display().to_string(),
        verdict,
        schedule,
        faults: collected.faults,
        workload: report::summarise_workload(&history, collected.workload_ms),
        churn: (agents > 0).then(|| report::summarise_churn(&collected.churn)),
        watchers: collected
            .watchers
            .iter()
            .map(WatcherSummary::from)
            .collect(),
        checks: collected.checks,
        peer_exits: collected.exits,
        heal_notes: collected.heal_notes,
        cleanup,
    };
    write_json(&run_dir.join("report.json"), &report)?;
    Ok(report)
}

fn preflight(config: &RunConfig) -> Result<(), ChaosError> {
    if !sys::is_root() {
        return Err(ChaosError::NotRoot);
    }
    if !config.flotilla.is_file() {
        return Err(ChaosError::FlotillaMissing(config.flotilla.clone()));
    }
    if config.keys == 0 || config.clients == 0 {
        return Err(ChaosError::Config(
            "the workload needs at least one key and one client".into(),
        ));
    }
    Ok(())
}

fn run_dir(config: &RunConfig, slot: RunSlot) -> PathBuf {
    let unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    config.out_dir.join(format!(
        "{}-seed{}-{unix_s}-{}",
        config.scenario,
        config.seed,
        slot.id()
    ))
}

pub fn faketime_library() -> Option<PathBuf> {
    FAKETIME_LIBRARIES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The run directory (created) and the cluster's options.
fn prepare(
    config: &RunConfig,
    scenario: &Scenario,
    slot: RunSlot,
    context: PlanContext,
) -> Result<(PathBuf, ClusterOptions), ChaosError> {
    let faketime_lib = match scenario.needs.faketime {
        Faketime::Off => None,
        Faketime::IfInstalled => faketime_library(),
        Faketime::Required => Some(faketime_library().ok_or_else(|| {
            ChaosError::Config(format!(
                "scenario {} needs libfaketime: apt-get install faketime",
                scenario.name
            ))
        })?),
    };
    let run_dir = run_dir(config, slot);
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| ChaosError::io(format!("creating {}", run_dir.display()), e))?;
    let options = ClusterOptions {
        slot,
        run_dir: run_dir.clone(),
        peers: context.peers,
        agents: context.agents,
        host: HostOptions {
            flotilla: config.flotilla.clone(),
            tmpfs_bytes: scenario.needs.tmpfs_bytes,
            faketime_lib,
        },
        delay_proxy: scenario.needs.delay_proxy,
    };
    Ok((run_dir, options))
}

async fn serving_members(cluster: &SharedCluster) -> Vec<Member> {
    let c = cluster.lock().await;
    c.members()
        .into_iter()
        .filter_map(|h| c.host(h).ok())
        .map(|h| Member {
            host: h.number,
            addr: h.addr,
        })
        .collect()
}

/// Waits until every peer agrees on a leader; returns the revision watchers start from.
async fn wait_ready(cluster: &SharedCluster) -> Result<i64, ChaosError> {
    let members = serving_members(cluster).await;
    let addrs: Vec<_> = members.iter().map(|m| m.addr).collect();
    let leader = client::wait_for_leader(&addrs, STARTUP_TIMEOUT).await?;
    let leader = members.iter().find(|m| u64::from(m.host) == leader);
    let status = client::status(leader.map_or(addrs[0], |m| m.addr)).await?;
    Ok(status.header.map_or(0, |h| h.revision) + 1)
}

fn open_recorder(run_dir: &Path, clock: RunClock) -> Result<Recorder<BufWriter<File>>, ChaosError> {
    let file = File::create(run_dir.join("history.jsonl"))
        .map_err(|e| ChaosError::io("creating history.jsonl", e))?;
    Ok(Recorder::with_clock(
        BufWriter::new(file),
        RecorderConfig::default(),
        Box::new(clock),
    ))
}

fn workload_config(config: &RunConfig) -> RegisterConfig {
    RegisterConfig {
        key_prefix: config.workload.register_prefix().to_string(),
        keys: config.keys,
        clients: config.clients,
        max_ops: config.max_ops,
        duration: config.duration,
        think_max: config.think_max,
        op_timeout: config.op_timeout,
        seed: config.seed,
    }
}

/// The run's watchers and what they are told to do.
struct Watchers {
    tasks: JoinSet<WatcherOutcome>,
    goal: watch::Sender<WatchGoal>,
}

fn start_watchers(config: &RunConfig, start_revision: i64, endpoints: &Endpoints) -> Watchers {
    let (goal, goal_rx) = watch::channel(WatchGoal::Follow);
    let mut tasks = JoinSet::new();
    let deadline = Instant::now() + config.duration + WATCH_LIFETIME_AFTER_WORKLOAD;
    let source = match config.workload {
        Workload::Kv => WatchSource::Kv,
        Workload::ConfigMap => WatchSource::ConfigMaps,
    };
    for i in 0..config.watchers {
        let watcher = WatcherConfig {
            name: format!("watcher-{i}"),
            source,
            prefix: config.workload.watch_prefix().to_string(),
            start_revision,
            stall_timeout: WATCH_STALL_TIMEOUT,
            max_events: MAX_WATCH_EVENTS,
            deadline,
            seed: config.seed ^ (0xa5a5 + u64::from(i)),
        };
        tasks.spawn(watcher::run(watcher, endpoints.clone(), goal_rx.clone()));
    }
    Watchers { tasks, goal }
}

async fn drive(
    config: &RunConfig,
    cluster: &SharedCluster,
    schedule: &[PlannedFault],
    run_dir: &Path,
) -> Result<Collected, ChaosError> {
    let start_revision = wait_ready(cluster).await?;
    let agent_dirs = agent_dirs(cluster).await;
    wait_agents_ready(cluster, &agent_dirs).await?;
    let endpoints = cluster.lock().await.endpoints();
    let clock = RunClock::start();
    let recorder = Arc::new(open_recorder(run_dir, clock)?);
    let mut monitor = JoinSet::new();
    let (stop_monitor, stop_rx) = watch::channel(false);
    monitor.spawn(nemesis::monitor_exits(cluster.clone(), clock, stop_rx));
    let mut watchers = start_watchers(config, start_revision, &endpoints);
    let (ops, faults, churn) = tokio::join!(
        run_registers(config, recorder.clone(), endpoints.clone()),
        nemesis::run_schedule(cluster.clone(), schedule, clock),
        run_churn(config, !agent_dirs.is_empty(), endpoints, clock, run_dir),
    );
    let ops = ops?;
    let churn = churn?;
    let workload_ms = clock.elapsed_ms();
    tracing::info!(
        ops,
        workload_ms,
        faults = faults.len(),
        "workload done; healing"
    );
    let heal_notes = nemesis::heal_all(cluster, clock).await;
    let members = serving_members(cluster).await;
    // First, so the bound counts from the heal.
    let converged = if agent_dirs.is_empty() {
        None
    } else {
        Some(podcheck::converged_check(&members).await)
    };
    let (mut checks, committed) =
        live_checks(&members, config.workload, config.keys, &recorder).await?;
    checks.extend(converged);
    let watchers = drain_watchers(&mut watchers, &committed, config.workload).await;
    let _ = stop_monitor.send(true);
    let _ = monitor.join_next().await;
    let mut exits = cluster.lock().await.take_exits();
    nemesis::classify_exits(&mut exits, &faults);
    let recorder = Arc::try_unwrap(recorder).map_err(|_| {
        ChaosError::Config("the recorder is still shared after the workload".into())
    })?;
    recorder.finish()?;
    let history = load_history(run_dir)?;
    let recorded = Recorded {
        workload: config.workload,
        history: &history,
        committed: &committed,
        watchers: &watchers,
    };
    checks.extend(judge(&recorded, &faults, &exits));
    Ok(Collected {
        faults,
        workload_ms,
        heal_notes,
        checks,
        exits,
        watchers,
        committed,
        churn,
        agent_dirs,
    })
}

/// `pod-overlap` over the agents' journals (none without agents); after teardown, when every
/// container has stopped and its shim has recorded it.
fn journals_check(agent_dirs: &[(String, PathBuf)]) -> Option<CheckResult> {
    if agent_dirs.is_empty() {
        return None;
    }
    let dirs: Vec<(String, &Path)> = agent_dirs
        .iter()
        .map(|(name, dir)| (name.clone(), dir.as_path()))
        .collect();
    Some(podcheck::overlap_check(&dirs))
}

/// Waits until every agent's Node is Ready (nothing to wait for without agents).
async fn wait_agents_ready(
    cluster: &SharedCluster,
    agent_dirs: &[(String, PathBuf)],
) -> Result<(), ChaosError> {
    if agent_dirs.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = agent_dirs.iter().map(|(name, _)| name.clone()).collect();
    podcheck::wait_nodes_ready(&serving_members(cluster).await, &names).await
}

async fn agent_dirs(cluster: &SharedCluster) -> Vec<(String, PathBuf)> {
    let c = cluster.lock().await;
    c.agents()
        .into_iter()
        .filter_map(|h| c.host(h).ok())
        .map(|h| (h.netns.clone(), h.data_dir()))
        .collect()
}

/// The deployment churn, when the run has agents.
async fn run_churn(
    config: &RunConfig,
    with_agents: bool,
    endpoints: Endpoints,
    clock: RunClock,
    run_dir: &Path,
) -> Result<Vec<ChurnOp>, ChaosError> {
    if !with_agents {
        return Ok(Vec::new());
    }
    let settings = ChurnConfig::new(config.seed, config.duration.as_millis() as u64);
    churn::run(settings, endpoints, clock, run_dir).await
}

/// Runs the register workload through the API `config.workload` names.
async fn run_registers<W: std::io::Write + Send + 'static>(
    config: &RunConfig,
    recorder: Arc<Recorder<W>>,
    endpoints: Endpoints,
) -> Result<u64, ChaosError> {
    async fn with<B: RegisterBackend, W: std::io::Write + Send + 'static>(
        backend: B,
        config: &RunConfig,
        recorder: Arc<Recorder<W>>,
        endpoints: Endpoints,
    ) -> Result<u64, ChaosError> {
        let settings = workload_config(config);
        register::run(Arc::new(backend), settings, recorder, endpoints).await
    }
    match config.workload {
        Workload::Kv => with(KvRegisters, config, recorder, endpoints).await,
        Workload::ConfigMap => with(ConfigMapRegisters, config, recorder, endpoints).await,
    }
}

/// The checks that need the healed cluster; returns them and the committed history.
async fn live_checks<W: std::io::Write + Send>(
    members: &[Member],
    workload: Workload,
    keys: u32,
    recorder: &Recorder<W>,
) -> Result<(Vec<CheckResult>, Vec<CommittedEntry>), ChaosError> {
    let mut checks = vec![
        verify::check_serving_writes(members, PROBE_PREFIX).await,
        verify::check_convergence(members).await,
    ];
    let (committed, replay_check) = replay_everywhere(members, workload).await;
    checks.push(replay_check);
    let prefix = workload.register_prefix();
    let decode = |bytes: &[u8]| workload.decode(bytes);
    checks.push(verify::final_reads(members, prefix, keys, recorder, &decode).await?);
    Ok((checks, committed))
}

fn fence(workload: Workload) -> Fence<'static> {
    match workload {
        Workload::Kv => Fence::Key(FENCE_KEY),
        Workload::ConfigMap => Fence::ConfigMap {
            namespace: FENCE_NAMESPACE,
            name: FENCE_NAME,
        },
    }
}

/// Replays the committed history on every member after a fence write; the first member's
/// replay is returned for the watch checker, and the check says whether all agree.
async fn replay_everywhere(
    members: &[Member],
    workload: Workload,
) -> (Vec<CommittedEntry>, CheckResult) {
    let name = "history-agreement";
    let prefix = workload.replay_prefix();
    let fence = match verify::write_fence(members, fence(workload)).await {
        Ok(revision) => revision,
        Err(e) => {
            return (
                Vec::new(),
                CheckResult::new(name, Verdict::Invalid, format!("no fence write: {e}"), ()),
            )
        }
    };
    let mut replays = Vec::new();
    for member in members {
        match committed::replay(member.addr, prefix, fence, REPLAY_TIMEOUT).await {
            Ok(entries) => replays.push((member.host, entries)),
            Err(e) => {
                return (
                    Vec::new(),
                    CheckResult::new(
                        name,
                        Verdict::Invalid,
                        format!("peer {}: {e}", member.host),
                        (),
                    ),
                )
            }
        }
    }
    let summary = replays.first().map_or(0, |(_, r)| r.len());
    let check = match committed::compare_replays(&replays) {
        None => CheckResult::new(
            name,
            Verdict::Valid,
            format!(
                "{} members replay the same {summary} changes through fence revision {fence}",
                replays.len()
            ),
            fence,
        ),
        Some(difference) => CheckResult::new(name, Verdict::Invalid, difference, fence),
    };
    (
        replays
            .into_iter()
            .next()
            .map(|(_, r)| r)
            .unwrap_or_default(),
        check,
    )
}

/// Tells the watchers to catch up with the last committed register change, and collects them
/// (stopping any still lagging after [`WATCH_DRAIN_TIMEOUT`]).
async fn drain_watchers(
    watchers: &mut Watchers,
    committed: &[CommittedEntry],
    workload: Workload,
) -> Vec<WatcherOutcome> {
    let target = committed
        .iter()
        .filter(|e| e.key.starts_with(workload.watch_prefix()))
        .map(|e| e.revision)
        .max()
        .unwrap_or(0);
    let _ = watchers.goal.send(WatchGoal::CatchUp(target));
    let deadline = Instant::now() + WATCH_DRAIN_TIMEOUT;
    let mut outcomes = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, watchers.tasks.join_next()).await {
            Ok(Some(Ok(outcome))) => outcomes.push(outcome),
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "watcher task failed"),
            Ok(None) => break,
            Err(_) => {
                let _ = watchers.goal.send(WatchGoal::Stop);
                while let Some(joined) = watchers.tasks.join_next().await {
                    outcomes.extend(joined.ok());
                }
                break;
            }
        }
    }
    outcomes.sort_by(|a, b| a.log.name.cmp(&b.log.name));
    outcomes
}

/// The checks on recorded data: linearizability, watches, acknowledged writes, peer exits and
/// whether every fault was carried out.
/// What the run recorded, for the checks that judge it.
struct Recorded<'a> {
    workload: Workload,
    history: &'a History,
    committed: &'a [CommittedEntry],
    watchers: &'a [WatcherOutcome],
}

fn judge(recorded: &Recorded<'_>, faults: &[FaultRecord], exits: &[PeerExit]) -> Vec<CheckResult> {
    vec![
        linearizability_check(recorded.history),
        watch_check(recorded.committed, recorded.watchers),
        acknowledged_check(recorded),
        exits_check(exits),
        nemesis_check(faults),
    ]
}

fn linearizability_check(history: &History) -> CheckResult {
    let report = check_linearizable(history, &LinearizabilityConfig::default());
    CheckResult::new(
        "linearizability",
        report.verdict,
        report.to_string(),
        &report,
    )
}

/// Without a committed history (the replay failed) the watch checks prove nothing: unknown.
fn without_history(committed: &[CommittedEntry], verdict: Verdict) -> Verdict {
    if committed.is_empty() {
        Verdict::Unknown
    } else {
        verdict
    }
}

fn watch_check(committed: &[CommittedEntry], watchers: &[WatcherOutcome]) -> CheckResult {
    let logs: Vec<WatcherLog> = watchers.iter().map(|w| w.log.clone()).collect();
    let report = check_watches(&committed::committed_history(committed), &logs);
    let verdict = without_history(committed, report.verdict);
    let too_old: u32 = watchers.iter().map(|w| w.too_old).sum();
    let mut summary = report.to_string();
    if too_old > 0 {
        summary.push_str(&format!(
            "; {too_old} streams ended \"too old\" (compacted revision)"
        ));
    }
    CheckResult::new("watch", verdict, summary, &report)
}

fn acknowledged_check(recorded: &Recorded<'_>) -> CheckResult {
    let workload = recorded.workload;
    let committed = recorded.committed;
    let decode = |bytes: &[u8]| workload.decode(bytes);
    let report = committed::check_acknowledged(
        recorded.history,
        committed,
        workload.register_prefix(),
        &decode,
    );
    let summary = format!(
        "{} acknowledged writes, {} committed register writes, {} problems",
        report.acknowledged_writes, report.committed_register_writes, report.problems_total
    );
    let verdict = without_history(committed, report.verdict);
    CheckResult::new("acknowledged-writes", verdict, summary, &report)
}

fn exits_check(exits: &[PeerExit]) -> CheckResult {
    let unexpected: Vec<&PeerExit> = exits.iter().filter(|e| !e.expected).collect();
    let (verdict, summary) = match unexpected.first() {
        None => (
            Verdict::Valid,
            format!("no peer exited on its own ({} expected exits)", exits.len()),
        ),
        Some(e) => (
            Verdict::Invalid,
            format!(
                "peer {} exited on its own at {} ms: {}{}",
                e.host,
                e.at_ms,
                e.status,
                exit_hint(e)
            ),
        ),
    };
    CheckResult::new("peer-exits", verdict, summary, &unexpected)
}

/// What an exit status suggests. The harness stops peers with SIGKILL or, in a rolling restart,
/// with a SIGTERM it accounts for; any other clean stop means a signal from outside the run.
fn exit_hint(exit: &PeerExit) -> &'static str {
    if exit.status.ends_with("exit status: 0") && exit.log_tail.contains("stopping") {
        " (a clean stop on a SIGTERM/SIGINT the harness did not send)"
    } else {
        ""
    }
}

/// A fault step that failed leaves the run unproven, not failed: the store was not tested as
/// planned.
fn nemesis_check(faults: &[FaultRecord]) -> CheckResult {
    let failed: Vec<String> = faults
        .iter()
        .flat_map(|f| f.errors.iter().map(move |e| format!("{}: {e}", f.name)))
        .collect();
    let (verdict, summary) = match failed.first() {
        None => (
            Verdict::Valid,
            format!("{} faults injected and healed", faults.len()),
        ),
        Some(first) => (
            Verdict::Unknown,
            format!("{} fault steps failed; first: {first}", failed.len()),
        ),
    };
    CheckResult::new("nemesis", verdict, summary, &failed)
}

fn load_history(run_dir: &Path) -> Result<History, ChaosError> {
    let path = run_dir.join("history.jsonl");
    let file =
        File::open(&path).map_err(|e| ChaosError::io(format!("opening {}", path.display()), e))?;
    Ok(History::read_jsonl(BufReader::new(file))?.history)
}

#[derive(Serialize)]
struct WatchFile<'a> {
    committed: &'a [CommittedEntry],
    watchers: Vec<&'a WatcherLog>,
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ChaosError> {
    let file = File::create(path)
        .map_err(|e| ChaosError::io(format!("creating {}", path.display()), e))?;
    serde_json::to_writer_pretty(BufWriter::new(file), value).map_err(|source| ChaosError::Json {
        what: path.display().to_string(),
        source,
    })
}

/// Removes the hosts' data (logs stay) once a run has passed — never a directory with
/// something still mounted below it (deleting through a mount would reach the mounted files).
fn remove_data_dirs(run_dir: &Path) {
    let Ok(hosts) = std::fs::read_dir(run_dir.join("hosts")) else {
        return;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for host in hosts.filter_map(Result::ok) {
        for dir in ["data", "disk"] {
            let dir = host.path().join(dir);
            if crate::podclean::mounts_under(&mountinfo, &dir).is_empty() {
                let _ = std::fs::remove_dir_all(dir);
            } else {
                tracing::warn!(dir = %dir.display(), "mounts remain below; kept");
            }
        }
    }
}
