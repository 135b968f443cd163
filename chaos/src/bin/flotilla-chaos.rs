//! `flotilla-chaos`: run chaos scenarios against real `flotilla server` peers in network
//! namespaces (`run`, `matrix`), list them (`list`), and remove a crashed run's leftovers
//! (`clean`). Argument handling and printing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flotilla_chaos::checker::Verdict;
use flotilla_chaos::clean::{self, Which};
use flotilla_chaos::matrix::{self, MatrixConfig};
use flotilla_chaos::net::slot_of_name;
use flotilla_chaos::report::matrix_table;
use flotilla_chaos::run::{self, RunConfig};
use flotilla_chaos::scenario::SCENARIOS;
use flotilla_chaos::workload::Workload;

#[derive(Parser)]
#[command(
    name = "flotilla-chaos",
    about = "Chaos harness for flotilla: faults, workloads, checkers, reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario with one seed.
    Run(RunArgs),
    /// Run scenarios × seeds and print a summary table.
    Matrix(MatrixArgs),
    /// List the scenarios.
    List,
    /// Remove leftovers of crashed runs: processes, containers, mounts, pod cgroups, veths,
    /// namespaces (flc-*).
    Clean {
        /// Also remove runs whose harness is still alive.
        #[arg(long)]
        force: bool,
        /// Only this run (its three-hex-digit id, as in `flc-<id>-…` and the report's run_id).
        #[arg(long)]
        run: Option<String>,
    },
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The registers' API: ConfigMaps through the Cluster API, or keys of the KV API.
    #[arg(long, value_enum, default_value_t = Workload::ConfigMap)]
    workload: Workload,
    /// How long the workload runs (e.g. 60s, 2m, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Control-plane peers (scenarios that need more get more).
    #[arg(long, default_value_t = 3)]
    peers: u16,
    /// Node agents running real containers, plus a deployment-churn workload and the pod
    /// checks (0: none; agent scenarios raise it to 3).
    #[arg(long, default_value_t = 0)]
    agents: u16,
    /// The flotilla binary (default: next to this binary).
    #[arg(long)]
    flotilla: Option<PathBuf>,
    /// Where run directories go.
    #[arg(long, default_value = "/tmp/flotilla-chaos")]
    out: PathBuf,
    /// Registers the workload uses.
    #[arg(long, default_value_t = 8)]
    keys: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: u32,
    /// Most ops across all clients.
    #[arg(long, default_value_t = 50_000)]
    max_ops: u64,
    /// Keep the peers' data directories even when the run is valid.
    #[arg(long)]
    keep_data: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct MatrixArgs {
    /// Seeds per scenario (1..=N, or from --first-seed).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Comma-separated scenarios (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// Parses `60s`, `2m`, `1500ms` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1_000)
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s, 2m or 500ms"))?;
    Ok(Duration::from_millis(value.saturating_mul(unit_ms)))
}

fn flotilla_path(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating flotilla-chaos")?;
    let dir = exe.parent().context("flotilla-chaos has no directory")?;
    Ok(dir.join("flotilla"))
}

fn run_config(scenario: &str, seed: u64, common: Common) -> anyhow::Result<RunConfig> {
    let mut config = RunConfig::new(
        scenario,
        seed,
        common.duration,
        flotilla_path(common.flotilla)?,
        common.out,
    );
    config.workload = common.workload;
    config.peers = common.peers;
    config.agents = common.agents;
    config.keys = common.keys;
    config.clients = common.clients;
    config.max_ops = common.max_ops;
    config.keep_data = common.keep_data;
    Ok(config)
}

async fn run_one(args: RunArgs) -> anyhow::Result<bool> {
    let config = run_config(&args.scenario, args.seed, args.common)?;
    let report = run::run(&config).await?;
    println!("{report}");
    Ok(report.verdict == Verdict::Valid)
}

async fn run_matrix(args: MatrixArgs) -> anyhow::Result<bool> {
    let scenarios = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.name.to_string()).collect()
    } else {
        args.scenarios
    };
    let out = args.common.out.clone();
    let config = MatrixConfig {
        scenarios,
        first_seed: args.first_seed,
        seeds: args.seeds,
        base: run_config("", 0, args.common)?,
    };
    let entries = matrix::run_matrix(&config, |entry, report| match report {
        Some(report) => println!("{report}\n"),
        None => println!(
            "scenario {} seed {}: error: {}\n",
            entry.scenario,
            entry.seed,
            entry.error.as_deref().unwrap_or("")
        ),
    })
    .await?;
    matrix::write_matrix(&out, &entries)?;
    print!("{}", matrix_table(&entries));
    Ok(entries.iter().all(|e| e.verdict == Some(Verdict::Valid)))
}

fn list() {
    for s in SCENARIOS {
        println!("{:<20} {}", s.name, s.description);
    }
}

fn clean_leftovers(force: bool, run: Option<&str>) -> anyhow::Result<bool> {
    if !flotilla_chaos::sys::is_root() {
        bail!("clean needs root");
    }
    let which = if let Some(id) = run {
        let slot = slot_of_name(&format!("flc-{id}-"))
            .with_context(|| format!("--run {id:?} is not a run id (three hex digits)"))?;
        if !force && clean::live_slots().contains(&slot) {
            bail!("run {id} is live (its harness runs); --force removes it anyway");
        }
        Which::Slot(slot)
    } else if force {
        Which::All
    } else {
        let live = clean::live_slots();
        if !live.is_empty() {
            println!(
                "leaving {} live runs alone (--force removes them too)",
                live.len()
            );
        }
        Which::AllExcept(live)
    };
    let report = clean::clean(&which);
    if report.is_empty() {
        println!("nothing to clean");
    } else {
        println!("killed processes {:?}", report.processes);
        println!("unmounted {:?}", report.mounts);
        println!("deleted links {:?}", report.links);
        println!("deleted namespaces {:?}", report.namespaces);
        println!("removed pod cgroups {:?}", report.cgroups);
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    Ok(report.errors.is_empty())
}

async fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run(args) => run_one(args).await,
        Command::Matrix(args) => run_matrix(args).await,
        Command::List => {
            list();
            Ok(true)
        }
        Command::Clean { force, run } => clean_leftovers(force, run.as_deref()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flotilla-chaos: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = dispatch(cli.command) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; the run's hosts were removed")),
        }
    });
    // Dropping the runtime drops an interrupted run, whose cluster guard tears its hosts down.
    drop(runtime);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("flotilla-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let check = |text: &str, ms: u64| {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            )
        };
        check("60s", 60_000);
        check("2m", 120_000);
        check("1500ms", 1_500);
        check("20", 20_000);
        assert!(parse_duration("soon").is_err());
    }
}
