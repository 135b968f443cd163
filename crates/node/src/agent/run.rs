//! Starting and stopping the node agent: [`Agent::start`] opens the image store (importing
//! what waits in `images/import/`) and the runtime (CNI bridge + host-local on the pod CIDR),
//! binds the agent API, and spawns the heartbeats, the fence, the import scanner, the agent
//! API server and the main task (register the Node, then informer + dispatcher).
//! [`Agent::shutdown`] ends them, leaving containers running for adoption or stopping them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_api::agent::agent_api_server::AgentApiServer;
use flotilla_state::informer::{spawn_informer, Query};
use flotilla_state::objects::Pod;
use flotilla_state::Kind;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::image::ImageStore;
use crate::network::CniConfig;
use crate::runtime::{Runtime, RuntimeConfig};

use super::client::ApiClient;
use super::config::AgentConfig;
use super::context::{Ctx, RateLimiter, STATUS_WRITES_BURST, STATUS_WRITES_PER_SECOND};
use super::dispatch::{Dispatcher, Stop};
use super::error::AgentError;
use super::fence::Fence;
use super::heartbeat::{self, Lease};
use super::host::{node_ip, HostFacts};
use super::images::{import_pending, prepare_import_dir, ImportReport};
use super::register::{node_object, register};
use super::service::{AgentService, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use super::source::ApiSource;

/// Pause between attempts to register the Node while the control plane does not answer.
const REGISTER_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long a starting agent waits for its image store while another process holds it (an
/// `image import` run just before, or while, the agent starts).
const IMAGE_STORE_WAIT: Duration = Duration::from_secs(60);
/// Extra time the main task may take to stop beyond the pods' shutdown grace.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(60);

/// A running node agent.
pub struct Agent {
    name: String,
    endpoint: SocketAddr,
    runtime: Arc<Runtime>,
    fence: Arc<Fence>,
    stop: watch::Sender<Stop>,
    main: Option<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
    /// Heartbeats, fence and import scanner: aborted at shutdown.
    background: Vec<JoinHandle<()>>,
    shutdown_grace: Duration,
}

impl Agent {
    /// Starts the agent; it keeps running in spawned tasks until [`Agent::shutdown`].
    pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        config.validate()?;
        let pods_dir = config.pods_dir();
        std::fs::create_dir_all(&pods_dir).map_err(|e| AgentError::io("creating", &pods_dir, e))?;
        let images = open_images(&config).await?;
        let runtime = Arc::new(Runtime::new(runtime_config(&config))?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| AgentError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let port = listener.local_addr().map_err(|source| AgentError::Listen {
            addr: config.listen,
            source,
        })?;
        let ip = config
            .advertise_ip
            .unwrap_or_else(|| node_ip(config.listen.ip()));
        let endpoint = SocketAddr::new(ip, port.port());
        let client = ApiClient::new(&config.servers).map_err(|reason| AgentError::Config {
            field: "servers",
            reason,
        })?;
        let fence = Arc::new(Fence::default());
        let ctx = Arc::new(Ctx {
            client,
            runtime: runtime.clone(),
            images,
            node_ip: ip,
            fence: fence.clone(),
            directory: Default::default(),
            tombstones: Default::default(),
            status_rate: RateLimiter::new(STATUS_WRITES_PER_SECOND, STATUS_WRITES_BURST),
            config,
        });
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let background = spawn_background(&ctx);
        let server = spawn_server(&ctx, listener, stop_rx.clone());
        let main = tokio::spawn(main_task(ctx.clone(), endpoint, stop_rx));
        tracing::info!(node = %ctx.config.name, %endpoint, "agent started");
        Ok(Agent {
            name: ctx.config.name.clone(),
            endpoint,
            runtime,
            fence,
            stop,
            main: Some(main),
            server: Some(server),
            background,
            shutdown_grace: ctx.config.shutdown_grace,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the agent API listens, as advertised on the Node.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The node's container runtime (read-only uses: status, list, logs).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Whether the agent is fenced now (its lease lapsed).
    pub fn is_fenced(&self) -> bool {
        self.fence.is_fenced()
    }

    /// Stops the agent. With `stop_pods`, every pod's containers are stopped (each gets at
    /// most `shutdown_grace`) and removed first; without, they keep running and the next
    /// agent on this data directory adopts them.
    pub async fn shutdown(mut self, stop_pods: bool) -> Result<(), AgentError> {
        let mode = if stop_pods { Stop::Pods } else { Stop::Detach };
        self.stop.send_replace(mode);
        let limit = self.shutdown_grace + SHUTDOWN_SLACK;
        let mut result = Ok(());
        if let Some(main) = self.main.take() {
            if tokio::time::timeout(limit, main).await.is_err() {
                result = Err(AgentError::Shutdown("pods did not stop in time".into()));
            }
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        for task in std::mem::take(&mut self.background) {
            task.abort();
            let _ = task.await;
        }
        tracing::info!(node = %self.name, stop_pods, "agent stopped");
        result
    }
}

impl Drop for Agent {
    /// Dropped without `shutdown`: end everything, leave the containers running.
    fn drop(&mut self) {
        self.stop.send_replace(Stop::Detach);
        for task in self.background.iter().chain(self.server.iter()) {
            task.abort();
        }
    }
}

/// Runs an agent until `stop` resolves; its value says whether to stop the pods.
pub async fn run(config: AgentConfig, stop: impl Future<Output = bool>) -> Result<(), AgentError> {
    let agent = Agent::start(config).await?;
    let stop_pods = stop.await;
    agent.shutdown(stop_pods).await
}

async fn open_images(config: &AgentConfig) -> Result<Arc<ImageStore>, AgentError> {
    let (root, import_dir) = (config.images_dir(), config.import_dir());
    let opened = tokio::task::spawn_blocking(move || {
        let store = ImageStore::open_waiting(&root, IMAGE_STORE_WAIT)?;
        prepare_import_dir(&import_dir)?;
        log_imports(&import_pending(&store, &import_dir));
        Ok::<_, AgentError>(store)
    })
    .await
    .map_err(|e| AgentError::Shutdown(e.to_string()))??;
    Ok(Arc::new(opened))
}

fn log_imports(report: &ImportReport) {
    if !report.imported.is_empty() || !report.failed.is_empty() {
        let failed: Vec<&str> = report
            .failed
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        tracing::info!(
            imported = report.imported.len(),
            ?failed,
            "images side-loaded"
        );
    }
}

fn runtime_config(config: &AgentConfig) -> RuntimeConfig {
    let state_dir = config.runtime_dir();
    let mut rc = RuntimeConfig::new(&state_dir, &config.shim_path);
    rc.cgroup_parent = config.cgroup_parent.clone();
    rc.log_max_bytes = config.log_max_bytes;
    let mut cni = CniConfig::new(&config.bridge, &config.pod_cidr, &state_dir.join("ipam"));
    cni.plugin_dir = config.cni_plugin_dir.clone();
    cni.network_name = config.cni_network_name.clone();
    rc.network = Some(cni);
    rc.lease_file = Some(state_dir.join("lease"));
    rc
}

/// Heartbeats, the fence and the import scanner.
fn spawn_background(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let lease = Arc::new(Lease::new(ctx.config.lease));
    let started = Instant::now();
    let beats = {
        let (client, name, interval, lease) = (
            ctx.client.clone(),
            ctx.config.name.clone(),
            ctx.config.heartbeat_interval,
            lease.clone(),
        );
        tokio::spawn(async move { heartbeat::run(client, vec![name], interval, &lease).await })
    };
    let fence = tokio::spawn(super::fence::run(
        ctx.fence.clone(),
        lease,
        ctx.runtime.clone(),
        started,
    ));
    let scanner = {
        let (images, dir, every) = (
            ctx.images.clone(),
            ctx.config.import_dir(),
            ctx.config.import_scan_interval,
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (images, dir) = (images.clone(), dir.clone());
                let scan = tokio::task::spawn_blocking(move || import_pending(&images, &dir));
                if let Ok(report) = scan.await {
                    log_imports(&report);
                }
            }
        })
    };
    vec![beats, fence, scanner]
}

fn spawn_server(
    ctx: &Arc<Ctx>,
    listener: TcpListener,
    mut stop: watch::Receiver<Stop>,
) -> JoinHandle<()> {
    let service = AgentApiServer::new(AgentService::new(
        ctx.runtime.clone(),
        ctx.directory.clone(),
    ))
    .max_decoding_message_size(MAX_REQUEST_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s != Stop::Run).await;
        };
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "agent API server failed");
        }
    })
}

/// Registers the Node (retrying while the control plane does not answer), then watches the
/// pods bound here and dispatches them until told to stop.
async fn main_task(ctx: Arc<Ctx>, endpoint: SocketAddr, mut stop: watch::Receiver<Stop>) {
    let node = node_object(&ctx.config, &HostFacts::read(), ctx.node_ip, endpoint);
    loop {
        match register(&ctx.client, &node).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "node registration failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REGISTER_RETRY_PAUSE) => {}
            _ = stop.wait_for(|s| *s != Stop::Run) => return,
        }
    }
    tracing::info!(node = %ctx.config.name, "node registered");
    let source = Arc::new(ApiSource {
        client: ctx.client.clone(),
    });
    let query = Query::all(Kind::Pod).with_fields(format!("spec.nodeName={}", ctx.config.name));
    let informer_stop = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s != Stop::Run).await;
        }
    };
    let pods = spawn_informer::<Pod, _>(source, query, informer_stop);
    Dispatcher::new(ctx, pods).run(stop).await;
}
