//! The one `flotilla` binary: `server` (a control-plane peer) and the client verbs (`apply`,
//! `get`, `describe`, `delete`, `scale`, …). Argument handling and printing only; the work is in
//! the library crates.

mod allocator;
mod client;
mod cluster;
mod describe;
mod node_verbs;
mod printer;
mod rollout;
mod verbs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use flotilla_server::{parse_initial_cluster, PeerConfig};
use flotilla_state::objects::Kind;

use crate::client::Client;
use crate::printer::Format;

/// mimalloc for `flotilla server`, glibc's malloc for the other modes (see [`allocator`]).
#[global_allocator]
static ALLOCATOR: allocator::ByMode = allocator::ByMode;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A container orchestrator with its state in an embedded Raft log"
)]
struct Cli {
    /// Server peers to talk to, comma-separated; the next is tried when one is down.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_SERVER",
        default_value = "127.0.0.1:7001"
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control-plane peer (Raft + API on one port).
    Server(ServerArgs),
    /// Run a node agent (or, with --hollow N, N simulated nodes).
    Agent(AgentArgs),
    /// A one-machine cluster in one process: a one-peer control plane and an agent.
    Dev(DevArgs),
    /// Manage a node's image store (air-gapped: import files, no registry).
    Image {
        #[command(subcommand)]
        action: ImageCli,
    },
    /// Print a container's log.
    Logs(LogsCli),
    /// Run a command in a container: flotilla exec POD [-c C] -- CMD ARGS…
    Exec(ExecCli),
    /// Create or update objects from manifests (YAML or JSON; files, directories or - for stdin).
    Apply(ApplyArgs),
    /// Create objects from manifests; fails if one already exists.
    Create(ApplyArgs),
    /// List objects or show one.
    Get(GetCli),
    /// Show one object in detail, with its events.
    Describe(DescribeCli),
    /// Delete objects by kind and name, or those named in manifests.
    Delete(DeleteCli),
    /// Set the replica count of a deployment or replica set.
    Scale(ScaleCli),
    /// Watch, list or undo the rollouts of a deployment.
    Rollout {
        #[command(subcommand)]
        action: RolloutCli,
    },
    /// Start, inspect or stop a local multi-process cluster on loopback ports.
    Cluster {
        #[command(subcommand)]
        action: ClusterCli,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// This peer's id (1, 2, 3 …), unique in the cluster.
    #[arg(long)]
    id: u64,
    /// Address to listen on for peers and clients.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// Address others reach this peer at, if not the listen address.
    #[arg(long)]
    advertise: Option<String>,
    /// Where the Raft log, state and snapshots live. Restarting with the same directory resumes.
    #[arg(long)]
    data_dir: PathBuf,
    /// The initial cluster, identical on every initial peer: 1=ADDR,2=ADDR,3=ADDR.
    #[arg(long, conflicts_with = "join")]
    initial_cluster: Option<String>,
    /// Join a running cluster through one of its peers (HOST:PORT).
    #[arg(long)]
    join: Option<String>,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The node's name (with --hollow, the prefix of the simulated nodes' names).
    #[arg(long)]
    name: String,
    /// Control-plane peers, comma-separated.
    #[arg(long, env = "FLOTILLA_SERVER", default_value = "127.0.0.1:7001")]
    servers: String,
    /// The agent's state: image store, containers, pod volumes.
    #[arg(long, default_value = "/var/lib/flotilla/agent")]
    data_dir: PathBuf,
    /// Where the agent API (logs, exec) listens.
    #[arg(long, default_value = "127.0.0.1:7201")]
    listen: SocketAddr,
    /// Node labels: disk=ssd,zone=a
    #[arg(long, default_value = "")]
    labels: String,
    /// Node taints: key=value:NoSchedule,other:NoExecute
    #[arg(long, default_value = "")]
    taints: String,
    /// Resources kept from pods: cpu=500m,memory=512Mi
    #[arg(long, default_value = "")]
    reserved: String,
    /// The node's pod subnet.
    #[arg(long, default_value = "198.18.1.0/24")]
    pod_cidr: String,
    /// The Linux bridge pods attach to.
    #[arg(long, default_value = "flotilla0")]
    bridge: String,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,
    /// The lease: pods are stopped when no heartbeat was accepted for this long.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// Simulate this many nodes that report their pods Running without running containers.
    #[arg(long)]
    hollow: Option<usize>,
    /// Stop the pods' containers when the agent exits (default: leave them for the next agent).
    #[arg(long)]
    stop_pods_on_exit: bool,
}

#[derive(clap::Args)]
struct DevArgs {
    /// Where the cluster's data lives (default: $XDG_STATE_HOME/flotilla/dev or
    /// ~/.local/state/flotilla/dev). Running again resumes the same cluster.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Wipe the data directory first.
    #[arg(long)]
    fresh: bool,
    /// The API address.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// The agent API address (logs, exec).
    #[arg(long, default_value = "127.0.0.1:7002")]
    agent_listen: SocketAddr,
    /// The node's pod subnet.
    #[arg(long, default_value = "198.18.0.0/24")]
    pod_cidr: String,
}

#[derive(Subcommand)]
enum ImageCli {
    /// Import OCI layouts, OCI archives or docker-save archives.
    Import {
        files: Vec<PathBuf>,
        #[arg(long, default_value = "/var/lib/flotilla/agent")]
        data_dir: PathBuf,
    },
    /// List the images of the store.
    Ls {
        #[arg(long, default_value = "/var/lib/flotilla/agent")]
        data_dir: PathBuf,
    },
    /// Remove an image (its layers go when no other image uses them).
    Rm {
        reference: String,
        #[arg(long, default_value = "/var/lib/flotilla/agent")]
        data_dir: PathBuf,
    },
    /// Make an OCI archive from a directory (a root filesystem).
    Pack {
        dir: PathBuf,
        #[arg(long)]
        tag: String,
        #[arg(short, long)]
        output: PathBuf,
        /// The image's entrypoint (repeatable).
        #[arg(long)]
        entrypoint: Vec<String>,
        /// The image's default command (repeatable).
        #[arg(long)]
        cmd: Vec<String>,
    },
}

#[derive(clap::Args)]
struct LogsCli {
    pod: String,
    #[arg(short, long, default_value = "")]
    container: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[arg(short, long)]
    follow: bool,
    /// The previous (exited) instance of the container.
    #[arg(short, long)]
    previous: bool,
    #[arg(long)]
    tail: Option<i64>,
}

#[derive(clap::Args)]
struct ExecCli {
    pod: String,
    #[arg(short, long, default_value = "")]
    container: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// Manifest file, directory or - (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Validate and report only.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct GetCli {
    /// KIND, KIND/NAME, or KIND NAME.
    kind: String,
    name: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. app=web,tier!=db or 'env in (prod,staging)'.
    #[arg(short = 'l', long = "selector", default_value = "")]
    selector: String,
    /// Field selector, e.g. spec.nodeName=n1,status.phase!=Running.
    #[arg(long, default_value = "")]
    field_selector: String,
    /// Output format: wide, yaml, json or name.
    #[arg(short, long)]
    output: Option<String>,
    /// After listing, watch for changes.
    #[arg(short, long)]
    watch: bool,
}

#[derive(clap::Args)]
struct DescribeCli {
    kind: String,
    name: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

#[derive(clap::Args)]
struct DeleteCli {
    /// KIND NAME [NAME…] or KIND/NAME …
    args: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Seconds a pod gets to stop; 0 deletes at once.
    #[arg(long)]
    grace_period: Option<i64>,
    /// background (dependents deleted too) or orphan.
    #[arg(long, default_value = "background")]
    cascade: String,
}

#[derive(Subcommand)]
enum RolloutCli {
    /// Show the rollout's progress until it is done.
    Status {
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Return after printing the current status once.
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// List the deployment's revisions.
    History {
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Roll back to the previous (or a given) revision.
    Undo {
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        to_revision: Option<i64>,
    },
}

#[derive(Subcommand)]
enum ClusterCli {
    /// Start server peers and agents as separate processes.
    Up {
        #[arg(long, default_value_t = 3)]
        servers: usize,
        #[arg(long, default_value_t = 3)]
        agents: usize,
        /// Make each agent simulate this many hollow nodes instead of running containers.
        #[arg(long)]
        hollow: Option<usize>,
        #[arg(long, default_value = "flotilla-cluster")]
        dir: PathBuf,
    },
    /// Stop every process of the cluster (agents first).
    Down {
        #[arg(long, default_value = "flotilla-cluster")]
        dir: PathBuf,
        /// Also remove the data directories and logs.
        #[arg(long)]
        wipe: bool,
    },
    /// List the cluster's processes.
    Status {
        #[arg(long, default_value = "flotilla-cluster")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ScaleCli {
    /// deployment/NAME or replicaset/NAME.
    target: String,
    #[arg(long)]
    replicas: i32,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    tracing::info!(allocator = allocator::name(), "starting a server peer");
    let initial_cluster = match &args.initial_cluster {
        Some(text) => parse_initial_cluster(text)?,
        None if args.join.is_none() => {
            // A lone peer: a one-member cluster of itself.
            let addr = args
                .advertise
                .clone()
                .unwrap_or_else(|| args.listen.to_string());
            [(args.id, addr)].into_iter().collect()
        }
        None => Default::default(),
    };
    let config = PeerConfig {
        id: args.id,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        initial_cluster,
        join: args.join,
        leader: Default::default(),
    };
    flotilla_server::run(config, shutdown_signal()).await?;
    Ok(())
}

fn default_dev_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    state.join("flotilla").join("dev")
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.unwrap_or_else(default_dev_dir);
    if args.fresh && dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(dir.join("agent/images/import"))?;
    let addr = args.listen.to_string();
    let server = PeerConfig {
        id: 1,
        listen: args.listen,
        advertise: None,
        data_dir: dir.join("server"),
        initial_cluster: [(1, addr.clone())].into_iter().collect(),
        join: None,
        leader: Default::default(),
    };
    let agent = node_verbs::AgentOptions {
        name: "dev".into(),
        servers: vec![addr.clone()],
        data_dir: dir.join("agent"),
        listen: args.agent_listen,
        labels: String::new(),
        taints: String::new(),
        reserved: String::new(),
        pod_cidr: args.pod_cidr,
        bridge: "flotilla-dev".into(),
        heartbeat: std::time::Duration::from_millis(500),
        lease: std::time::Duration::from_secs(2),
        hollow: None,
        stop_pods_on_exit: true,
    };
    println!("flotilla dev: API on {addr}, data in {}", dir.display());
    println!(
        "  images: drop image archives into {}/agent/images/import/",
        dir.display()
    );
    println!("  try:    flotilla --server {addr} apply -f examples/hello.yaml");
    println!("          flotilla --server {addr} get pods -o wide");
    println!("  Ctrl-C stops everything (pods included); running again resumes the cluster.");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let server_task = tokio::spawn(flotilla_server::run(server, stopped()));
    let agent_run = node_verbs::agent(agent, stopped());
    tokio::pin!(agent_run);
    let agent_result = tokio::select! {
        ended = &mut agent_run => ended,
        () = shutdown_signal() => {
            stop_tx.send_replace(true);
            agent_run.await
        }
    };
    // The agent has stopped its pods; now the control plane.
    stop_tx.send_replace(true);
    let server_result = server_task.await?;
    agent_result?;
    server_result?;
    Ok(())
}

fn parse_kind(text: &str) -> anyhow::Result<Kind> {
    Kind::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `KIND NAME` or `KIND/NAME` into a kind and an optional name.
fn kind_and_name(kind: &str, name: Option<String>) -> anyhow::Result<(Kind, Option<String>)> {
    match kind.split_once('/') {
        Some((k, n)) => {
            anyhow::ensure!(name.is_none(), "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form");
            Ok((parse_kind(k)?, Some(n.to_string())))
        }
        None => Ok((parse_kind(kind)?, name)),
    }
}

fn delete_targets(args: &DeleteCli) -> anyhow::Result<Vec<(Kind, String, String)>> {
    if !args.files.is_empty() {
        return verbs::targets_of_manifests(&args.files, &args.namespace);
    }
    let mut targets = Vec::new();
    let mut kind = None;
    for arg in &args.args {
        match arg.split_once('/') {
            Some((k, n)) => targets.push((parse_kind(k)?, n.to_string())),
            None => match kind {
                None => kind = Some(parse_kind(arg)?),
                Some(k) => targets.push((k, arg.clone())),
            },
        }
    }
    anyhow::ensure!(!targets.is_empty(), "give KIND NAME, KIND/NAME or -f FILE");
    Ok(targets
        .into_iter()
        .map(|(k, n)| {
            (
                k,
                if k.is_namespaced() {
                    args.namespace.clone()
                } else {
                    String::new()
                },
                n,
            )
        })
        .collect())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.server);
    match cli.command {
        Command::Server(args) => server(args).await,
        Command::Agent(a) => {
            let options = node_verbs::AgentOptions {
                name: a.name,
                servers: a
                    .servers
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                data_dir: a.data_dir,
                listen: a.listen,
                labels: a.labels,
                taints: a.taints,
                reserved: a.reserved,
                pod_cidr: a.pod_cidr,
                bridge: a.bridge,
                heartbeat: std::time::Duration::from_millis(a.heartbeat_ms),
                lease: std::time::Duration::from_millis(a.lease_ms),
                hollow: a.hollow,
                stop_pods_on_exit: a.stop_pods_on_exit,
            };
            node_verbs::agent(options, shutdown_signal()).await
        }
        Command::Dev(d) => dev(d).await,
        Command::Image { action } => match action {
            ImageCli::Import { files, data_dir } => node_verbs::image_import(&data_dir, &files),
            ImageCli::Ls { data_dir } => node_verbs::image_ls(&data_dir),
            ImageCli::Rm {
                reference,
                data_dir,
            } => node_verbs::image_rm(&data_dir, &reference),
            ImageCli::Pack {
                dir,
                tag,
                output,
                entrypoint,
                cmd,
            } => node_verbs::image_pack(&dir, &tag, &output, entrypoint, cmd),
        },
        Command::Logs(l) => {
            node_verbs::logs(
                &client,
                &l.namespace,
                &l.pod,
                &l.container,
                l.follow,
                l.previous,
                l.tail,
            )
            .await
        }
        Command::Exec(e) => {
            let code =
                node_verbs::exec(&client, &e.namespace, &e.pod, &e.container, e.command).await?;
            if code != 0 {
                std::process::exit(code.clamp(1, 255));
            }
            Ok(())
        }
        Command::Apply(a) => verbs::apply(&client, &a.files, &a.namespace, a.dry_run, false).await,
        Command::Create(a) => verbs::apply(&client, &a.files, &a.namespace, a.dry_run, true).await,
        Command::Get(g) => {
            let (kind, name) = kind_and_name(&g.kind, g.name)?;
            let format = Format::parse(g.output.as_deref()).map_err(anyhow::Error::msg)?;
            let args = verbs::GetArgs {
                kind,
                name,
                namespace: g.namespace,
                all_namespaces: g.all_namespaces,
                labels: g.selector,
                fields: g.field_selector,
                format,
                watch: g.watch,
            };
            verbs::get(&client, args).await
        }
        Command::Describe(d) => {
            let (kind, name) = kind_and_name(&d.kind, d.name)?;
            let name = name.ok_or_else(|| anyhow::anyhow!("describe needs a name"))?;
            verbs::describe(&client, kind, &name, &d.namespace).await
        }
        Command::Delete(d) => {
            let targets = delete_targets(&d)?;
            let args = verbs::DeleteArgs {
                grace_period: d.grace_period,
                cascade: d.cascade.clone(),
            };
            verbs::delete(&client, targets, &args).await
        }
        Command::Scale(s) => {
            let (kind, name) = kind_and_name(&s.target, None)?;
            let name = name.ok_or_else(|| anyhow::anyhow!("scale needs TYPE/NAME"))?;
            verbs::scale(&client, kind, &name, &s.namespace, s.replicas).await
        }
        Command::Rollout { action } => {
            let deployment_name = |target: &str| -> anyhow::Result<String> {
                match kind_and_name(target, None)? {
                    (Kind::Deployment, Some(name)) => Ok(name),
                    _ => anyhow::bail!("rollout works on deployment/NAME"),
                }
            };
            match action {
                RolloutCli::Status {
                    target,
                    namespace,
                    watch,
                    timeout,
                } => {
                    let name = deployment_name(&target)?;
                    rollout::status(
                        &client,
                        &namespace,
                        &name,
                        watch,
                        timeout.map(std::time::Duration::from_secs),
                    )
                    .await
                }
                RolloutCli::History { target, namespace } => {
                    rollout::history(&client, &namespace, &deployment_name(&target)?).await
                }
                RolloutCli::Undo {
                    target,
                    namespace,
                    to_revision,
                } => {
                    rollout::undo(&client, &namespace, &deployment_name(&target)?, to_revision)
                        .await
                }
            }
        }
        Command::Cluster { action } => match action {
            ClusterCli::Up {
                servers,
                agents,
                hollow,
                dir,
            } => cluster::up(&dir, servers, agents, hollow),
            ClusterCli::Down { dir, wipe } => cluster::down(&dir, wipe),
            ClusterCli::Status { dir } => cluster::status(&dir),
        },
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "flotilla",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // The agent re-executes this binary as a single-threaded container shim: dispatch before any
    // runtime or thread exists.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == flotilla_node::runtime::shim::SHIM_ARG)
    {
        flotilla_node::runtime::shim::main(args[2..].to_vec());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Server(_) | Command::Agent(_) | Command::Dev(_)
    ) {
        // Client verbs end quietly when their output is closed (`| head`), as Unix tools do.
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("{}", client::describe_status(status)),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}
