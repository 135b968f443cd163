//! The node-side commands: `agent` (real or hollow), `image import|ls|rm|pack` on an agent's
//! image store, and `logs` / `exec`, which find the pod's node and call its agent directly.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_api::agent::agent_api_client::AgentApiClient;
use flotilla_api::agent::{ExecRequest, LogsRequest};
use flotilla_node::agent::{AgentConfig, Reserved, AGENT_ENDPOINT_ANNOTATION};
use flotilla_node::image::{pack_directory, ImageConfig, ImageError, ImageStore};
use flotilla_state::objects::{Quantity, Taint, TaintEffect};
use serde_json::Value;

use crate::client::Client;

/// Largest log chunk stream / exec answer the CLI accepts.
const MAX_AGENT_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

pub struct AgentOptions {
    pub name: String,
    pub servers: Vec<String>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub labels: String,
    pub taints: String,
    pub reserved: String,
    pub pod_cidr: String,
    pub bridge: String,
    pub heartbeat: Duration,
    pub lease: Duration,
    pub hollow: Option<usize>,
    pub stop_pods_on_exit: bool,
}

fn pairs(text: &str, what: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--{what}: {p:?} is not KEY=VALUE"))
        })
        .collect()
}

/// `k=v:NoSchedule,k2:NoExecute`
fn parse_taints(text: &str) -> anyhow::Result<Vec<Taint>> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (kv, effect) = t
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("--taints: {t:?} needs :EFFECT"))?;
            let effect = match effect {
                "NoSchedule" => TaintEffect::NoSchedule,
                "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                "NoExecute" => TaintEffect::NoExecute,
                other => anyhow::bail!(
                    "--taints: effect {other:?} is not NoSchedule, PreferNoSchedule or NoExecute"
                ),
            };
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            Ok(Taint {
                key: key.to_string(),
                value: value.to_string(),
                effect,
                time_added: None,
            })
        })
        .collect()
}

fn parse_reserved(text: &str) -> anyhow::Result<Reserved> {
    let mut reserved = Reserved::default();
    for (key, value) in pairs(text, "reserved")? {
        let q = Quantity::parse(&value).map_err(|e| anyhow::anyhow!("--reserved {key}: {e}"))?;
        match key.as_str() {
            "cpu" => reserved.cpu_millis = q.milli_value(),
            "memory" => reserved.memory_bytes = q.value(),
            other => anyhow::bail!("--reserved: {other:?} is not cpu or memory"),
        }
    }
    Ok(reserved)
}

pub async fn agent(
    options: AgentOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(count) = options.hollow {
        let mut config =
            flotilla_node::hollow::HollowConfig::new(options.servers, options.name, count);
        config.heartbeat_interval = options.heartbeat;
        config.lease = options.lease;
        tokio::select! {
            result = flotilla_node::hollow::run(config) => result?,
            () = stop => {}
        }
        return Ok(());
    }
    let shim = std::env::current_exe()?;
    let mut config = AgentConfig::new(
        &options.name,
        options.servers,
        &options.data_dir,
        options.listen,
        &options.pod_cidr,
        &shim,
    );
    config.labels = pairs(&options.labels, "labels")?.into_iter().collect();
    config.taints = parse_taints(&options.taints)?;
    config.reserved = parse_reserved(&options.reserved)?;
    config.bridge = options.bridge;
    config.heartbeat_interval = options.heartbeat;
    config.lease = options.lease;
    let stop_pods = options.stop_pods_on_exit;
    flotilla_node::agent::run(config, async move {
        stop.await;
        stop_pods
    })
    .await?;
    Ok(())
}

fn open_store(data_dir: &Path) -> Result<ImageStore, ImageError> {
    ImageStore::open(&data_dir.join("images"))
}

pub fn image_import(data_dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    match open_store(data_dir) {
        Ok(store) => {
            for file in files {
                for image in store
                    .import(file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                {
                    let name = image
                        .tags
                        .first()
                        .cloned()
                        .unwrap_or_else(|| image.digest.to_string());
                    println!("imported {name} ({})", image.digest);
                }
            }
            Ok(())
        }
        Err(ImageError::StoreLocked { .. }) => {
            // The agent holds the store: hand the files to its import directory.
            let import = data_dir.join("images").join("import");
            std::fs::create_dir_all(&import)?;
            for file in files {
                let name = file
                    .file_name()
                    .ok_or_else(|| anyhow::anyhow!("{}: not a file", file.display()))?;
                std::fs::copy(file, import.join(name))?;
                println!(
                    "queued {} for the running agent (it imports {} within seconds)",
                    file.display(),
                    import.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn image_ls(data_dir: &Path) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    let rows: Vec<Vec<String>> = store
        .list()?
        .into_iter()
        .map(|i| {
            let digest = i.digest.to_string();
            vec![
                i.tags.join(","),
                digest.chars().take(19).collect(),
                i.layer_count.to_string(),
                format!("{:.1}MB", i.size_bytes as f64 / 1_000_000.0),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::printer::render_table(&["IMAGE", "DIGEST", "LAYERS", "SIZE"], &rows, true)
    );
    Ok(())
}

pub fn image_rm(data_dir: &Path, reference: &str) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    store.remove(reference)?;
    println!("removed {reference}");
    Ok(())
}

pub fn image_pack(
    dir: &Path,
    tag: &str,
    out: &Path,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
) -> anyhow::Result<()> {
    let config = ImageConfig {
        entrypoint,
        cmd,
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..ImageConfig::default()
    };
    let digest = pack_directory(dir, tag, &config, out)?;
    println!("packed {tag} ({digest}) into {}", out.display());
    Ok(())
}

/// The agent endpoint of the node a pod runs on.
async fn agent_of(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> anyhow::Result<AgentApiClient<tonic::transport::Channel>> {
    let pod_obj: Value = serde_json::from_slice(&client.get_object("Pod", namespace, pod).await?)?;
    let node = pod_obj["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("pod {pod} is not scheduled to a node yet"))?;
    let node_obj: Value = serde_json::from_slice(&client.get_object("Node", "", node).await?)?;
    let endpoint = node_obj["metadata"]["annotations"][AGENT_ENDPOINT_ANNOTATION]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("node {node} has no agent endpoint (a hollow node?)"))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("agent of node {node} at {endpoint}: {e}"))?;
    Ok(AgentApiClient::new(channel).max_decoding_message_size(MAX_AGENT_MESSAGE_BYTES))
}

pub async fn logs(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    follow: bool,
    previous: bool,
    tail: Option<i64>,
) -> anyhow::Result<()> {
    let mut agent = agent_of(client, namespace, pod).await?;
    let mut stream = agent
        .logs(LogsRequest {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            follow,
            previous,
            tail_lines: tail,
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.content)?;
        if !chunk.partial {
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

pub async fn exec(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    argv: Vec<String>,
) -> anyhow::Result<i32> {
    anyhow::ensure!(!argv.is_empty(), "give the command after --");
    let mut agent = agent_of(client, namespace, pod).await?;
    let response = agent
        .exec(ExecRequest {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            argv,
            timeout_ms: 0,
        })
        .await?
        .into_inner();
    std::io::stdout().write_all(&response.stdout)?;
    std::io::stderr().write_all(&response.stderr)?;
    if response.truncated {
        eprintln!("(output truncated)");
    }
    if response.timed_out {
        eprintln!("(command timed out)");
    }
    Ok(response.exit_code)
}
