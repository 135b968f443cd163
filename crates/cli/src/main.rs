//! The one `flotilla` binary: `server` (a control-plane peer) and, as they land, `agent`, `dev`
//! and the client verbs. Argument handling and printing only; the work is in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_server::{parse_initial_cluster, PeerConfig};

#[derive(Parser)]
#[command(name = "flotilla", version, about = "A container orchestrator with its state in an embedded Raft log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control-plane peer (Raft + API on one port).
    Server(ServerArgs),
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
    let initial_cluster = match &args.initial_cluster {
        Some(text) => parse_initial_cluster(text)?,
        None if args.join.is_none() => {
            // A lone peer: a one-member cluster of itself.
            let addr = args.advertise.clone().unwrap_or_else(|| args.listen.to_string());
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
    };
    flotilla_server::run(config, shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla: {e:#}");
            ExitCode::from(1)
        }
    }
}
