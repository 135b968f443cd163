//! Pod networking through CNI plugin binaries, per the CNI 1.0 spec: the plugin gets the
//! command and container in `CNI_*` environment variables and its network config on stdin,
//! and prints a result (or an error) as JSON on stdout. A pod gets one network: `bridge` with
//! `host-local` IPAM (a veth pair from the node's bridge, an address from the node's pod CIDR),
//! plus `portmap` when the pod has host ports (a container's `hostPort`: DNAT rules from the
//! node's port to the pod's, removed at DEL). Its `lo` is already up: the runtime brings it up
//! when it creates the namespace, so the `loopback` plugin is not run (it would cost a process
//! start per pod on ADD and on DEL, about a quarter of the CNI time in bench-sched (d)). `del`
//! is idempotent and safe after a half-failed `add`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::error::NetworkError;

/// CNI spec version spoken to the plugins.
pub const CNI_VERSION: &str = "1.0.0";
/// Largest plugin output read (results are a few hundred bytes).
pub const MAX_PLUGIN_OUTPUT_BYTES: u64 = 1 << 20;
/// Linux interface names are at most 15 bytes.
const MAX_IFNAME_BYTES: usize = 15;
/// `PATH` given to plugins (they may run `iptables` and friends).
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How this node's pods are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// Directory of the plugin binaries (`/usr/lib/cni` on Debian).
    pub plugin_dir: PathBuf,
    /// CNI network name (also host-local's allocation namespace).
    pub network_name: String,
    /// The node bridge pods attach to; created by the plugin on first use.
    pub bridge: String,
    /// The node's pod CIDR, e.g. `10.88.0.0/24`; the bridge takes the first address.
    pub subnet: String,
    /// Where host-local keeps its allocations.
    pub ipam_data_dir: PathBuf,
    /// Interface name inside the pod.
    pub pod_ifname: String,
    /// Longest a single plugin call may take.
    pub plugin_timeout: Duration,
}

impl CniConfig {
    /// Defaults for a node: Debian's plugin directory, `eth0` in pods, 30 s per plugin call.
    pub fn new(bridge: &str, subnet: &str, ipam_data_dir: &Path) -> CniConfig {
        CniConfig {
            plugin_dir: PathBuf::from("/usr/lib/cni"),
            network_name: "flotilla".to_string(),
            bridge: bridge.to_string(),
            subnet: subnet.to_string(),
            ipam_data_dir: ipam_data_dir.to_path_buf(),
            pod_ifname: "eth0".to_string(),
            plugin_timeout: Duration::from_secs(30),
        }
    }
}

/// A pod's address on the node network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// A port of the node forwarded to a pod: a container's `hostPort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: PortProtocol,
}

/// The protocol of a [`PortMapping`], as CNI's `portMappings` capability spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

/// The CNI client of one node.
#[derive(Debug, Clone)]
pub struct Cni {
    config: CniConfig,
}

/// A plugin invocation: which network config, which interface.
struct Invocation<'a> {
    plugin: &'a str,
    config: Value,
    ifname: &'a str,
}

impl Cni {
    /// Checks the config and that the plugins exist.
    pub fn new(config: CniConfig) -> Result<Cni, NetworkError> {
        parse_subnet(&config.subnet)?;
        for (field, name) in [
            ("bridge", &config.bridge),
            ("pod_ifname", &config.pod_ifname),
        ] {
            let valid = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if name.is_empty() || name.len() > MAX_IFNAME_BYTES || !valid {
                return Err(NetworkError::InvalidConfig {
                    field,
                    reason: format!("{name:?} is not an interface name"),
                });
            }
        }
        for plugin in ["bridge", "host-local"] {
            let path = config.plugin_dir.join(plugin);
            if !path.is_file() {
                return Err(NetworkError::PluginMissing { path });
            }
        }
        Ok(Cni { config })
    }

    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// Attaches the network namespace `netns` of `container_id` (the pod) to the node network,
    /// forwards `host_ports` to it, and returns its address. On failure, whatever was set up
    /// is torn down again.
    pub async fn add(
        &self,
        container_id: &str,
        netns: &Path,
        host_ports: &[PortMapping],
    ) -> Result<PodAddress, NetworkError> {
        let result = self.add_all(container_id, netns, host_ports).await;
        if result.is_err() {
            let _ = self.del(container_id, Some(netns), Some(host_ports)).await;
        }
        result
    }

    async fn add_all(
        &self,
        container_id: &str,
        netns: &Path,
        host_ports: &[PortMapping],
    ) -> Result<PodAddress, NetworkError> {
        let output = self
            .invoke("ADD", &self.bridge(), container_id, Some(netns))
            .await?;
        let address = parse_result(&output)?;
        if !host_ports.is_empty() {
            let previous: Value =
                serde_json::from_slice(&output).map_err(|e| NetworkError::BadResult {
                    plugin: "bridge".to_string(),
                    reason: e.to_string(),
                })?;
            let portmap = self.portmap(host_ports, Some(previous))?;
            self.invoke("ADD", &portmap, container_id, Some(netns))
                .await?;
        }
        Ok(address)
    }

    /// Detaches the pod: removes its port forwards, releases its address and removes its veth.
    /// `host_ports` are the forwards as given to `add`, or `None` when they are no longer
    /// known (the pod's record was lost): portmap finds its rules by network and container
    /// id, so a DEL with any mapping removes them, and a node without portmap has none.
    /// Idempotent; `netns` is `None` (or missing) when the namespace is already gone. Every
    /// step is tried; the first error is returned. (A sandbox made by an older agent also ran
    /// `loopback`; its DEL only set `lo` down in a namespace about to go, so it is not run for
    /// those either.)
    pub async fn del(
        &self,
        container_id: &str,
        netns: Option<&Path>,
        host_ports: Option<&[PortMapping]>,
    ) -> Result<(), NetworkError> {
        let netns = netns.filter(|p| p.exists());
        let unknown = [PortMapping {
            host_port: 1,
            container_port: 1,
            protocol: PortProtocol::Tcp,
        }];
        let portmap = match host_ports {
            Some([]) => None,
            Some(ports) => Some(self.portmap(ports, None)),
            None => match self.portmap(&unknown, None) {
                Err(NetworkError::PluginMissing { .. }) => None,
                other => Some(other),
            },
        };
        let unmapped = match portmap {
            Some(Ok(portmap)) => self
                .invoke("DEL", &portmap, container_id, netns)
                .await
                .err(),
            Some(Err(e)) => Some(e),
            None => None,
        };
        let detached = self
            .invoke("DEL", &self.bridge(), container_id, netns)
            .await;
        match (unmapped, detached) {
            (Some(e), _) => Err(e),
            (None, result) => result.map(|_| ()),
        }
    }

    /// The `portmap` call for `host_ports`, chained after the bridge's `previous` result.
    fn portmap(
        &self,
        host_ports: &[PortMapping],
        previous: Option<Value>,
    ) -> Result<Invocation<'_>, NetworkError> {
        let path = self.config.plugin_dir.join("portmap");
        if !path.is_file() {
            return Err(NetworkError::PluginMissing { path });
        }
        Ok(Invocation {
            plugin: "portmap",
            config: portmap_config(&self.config, host_ports, previous),
            ifname: &self.config.pod_ifname,
        })
    }

    fn bridge(&self) -> Invocation<'_> {
        Invocation {
            plugin: "bridge",
            config: bridge_config(&self.config),
            ifname: &self.config.pod_ifname,
        }
    }

    async fn invoke(
        &self,
        command: &'static str,
        call: &Invocation<'_>,
        container_id: &str,
        netns: Option<&Path>,
    ) -> Result<Vec<u8>, NetworkError> {
        let timeout = self.config.plugin_timeout;
        let run = run_plugin(&self.config.plugin_dir, command, call, container_id, netns);
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(NetworkError::Timeout {
                plugin: call.plugin.to_string(),
                command,
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

/// Runs one plugin to completion; a timeout drops the future, which kills the plugin.
async fn run_plugin(
    plugin_dir: &Path,
    command: &'static str,
    call: &Invocation<'_>,
    container_id: &str,
    netns: Option<&Path>,
) -> Result<Vec<u8>, NetworkError> {
    let spawn_error = |source| NetworkError::Spawn {
        plugin: call.plugin.to_string(),
        source,
    };
    let netns = netns.map(|p| p.display().to_string()).unwrap_or_default();
    let mut child = Command::new(plugin_dir.join(call.plugin))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", plugin_dir)
        .env("PATH", PLUGIN_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let config = call.config.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.as_bytes())
            .await
            .map_err(spawn_error)?;
    }
    let mut output = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(MAX_PLUGIN_OUTPUT_BYTES)
            .read_to_end(&mut output)
            .await
            .map_err(spawn_error)?;
    }
    let status = child.wait().await.map_err(spawn_error)?;
    if status.success() {
        return Ok(output);
    }
    let (code, message) = parse_error(&output);
    Err(NetworkError::PluginFailed {
        plugin: call.plugin.to_string(),
        command,
        code,
        message,
    })
}

/// The bridge network config: gateway on the bridge, no masquerading (no iptables rules to
/// leak), a default route via the bridge, host-local IPAM in our own data directory.
fn bridge_config(config: &CniConfig) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": config.network_name,
        "type": "bridge",
        "bridge": config.bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": config.subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": config.ipam_data_dir,
        },
    })
}

/// The portmap config: DNAT from the node's ports (for traffic arriving and for the node's own,
/// to any of its addresses), with SNAT so a pod can reach itself through the node's port.
fn portmap_config(
    config: &CniConfig,
    host_ports: &[PortMapping],
    previous: Option<Value>,
) -> Value {
    let mut value = json!({
        "cniVersion": CNI_VERSION,
        "name": config.network_name,
        "type": "portmap",
        "snat": true,
        "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": host_ports },
    });
    if let Some(previous) = previous {
        value["prevResult"] = previous;
    }
    value
}

/// `a.b.c.d/len` with a host part of zeroes.
fn parse_subnet(subnet: &str) -> Result<(Ipv4Addr, u8), NetworkError> {
    let invalid = |reason: &str| NetworkError::InvalidConfig {
        field: "subnet",
        reason: format!("{subnet:?}: {reason}"),
    };
    let (addr, len) = subnet
        .split_once('/')
        .ok_or_else(|| invalid("expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("bad address"))?;
    let len: u8 = len.parse().map_err(|_| invalid("bad prefix length"))?;
    if !(8..=30).contains(&len) {
        return Err(invalid("prefix length must be 8..=30"));
    }
    let host_mask = u32::MAX >> len;
    if u32::from(addr) & host_mask != 0 {
        return Err(invalid("host bits are set"));
    }
    Ok((addr, len))
}

/// The first IPv4 address of a CNI 1.0 result.
fn parse_result(output: &[u8]) -> Result<PodAddress, NetworkError> {
    let bad = |reason: String| NetworkError::BadResult {
        plugin: "bridge".to_string(),
        reason,
    };
    let value: Value = serde_json::from_slice(output).map_err(|e| bad(e.to_string()))?;
    let ips = value["ips"]
        .as_array()
        .ok_or_else(|| bad("no ips".into()))?;
    for ip in ips {
        let Some((addr, len)) = ip["address"].as_str().and_then(|a| a.split_once('/')) else {
            continue;
        };
        let (Ok(ip_addr), Ok(prefix_len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
            continue;
        };
        let gateway = ip["gateway"].as_str().and_then(|g| g.parse().ok());
        return Ok(PodAddress {
            ip: ip_addr,
            prefix_len,
            gateway,
        });
    }
    Err(bad("no IPv4 address".into()))
}

/// The `code` and `msg` (plus `details`) of a CNI error result; raw output otherwise.
fn parse_error(output: &[u8]) -> (Option<u64>, String) {
    match serde_json::from_slice::<Value>(output) {
        Ok(v) => {
            let msg = v["msg"].as_str().unwrap_or("").to_string();
            let details = v["details"].as_str().unwrap_or("");
            let text = if details.is_empty() {
                msg
            } else {
                format!("{msg}: {details}")
            };
            (v["code"].as_u64(), text)
        }
        Err(_) => (None, String::from_utf8_lossy(output).trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_subnet(subnet: &str, ok: bool) {
        assert_eq!(parse_subnet(subnet).is_ok(), ok, "{subnet}");
    }

    #[test]
    fn subnets_are_validated() {
        check_subnet("198.18.7.0/24", true);
        check_subnet("10.88.0.0/16", true);
        check_subnet("198.18.7.1/24", false);
        check_subnet("198.18.7.0", false);
        check_subnet("198.18.7.0/31", false);
        check_subnet("nonsense/24", false);
    }

    #[test]
    fn results_yield_the_first_ipv4_address() {
        let result = br#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],
            "ips":[{"address":"fd00::2/64"},{"address":"198.18.7.2/24","gateway":"198.18.7.1","interface":0}]}"#;
        let addr = parse_result(result).unwrap();
        assert_eq!(addr.ip, Ipv4Addr::new(198, 18, 7, 2));
        assert_eq!(addr.prefix_len, 24);
        assert_eq!(addr.gateway, Some(Ipv4Addr::new(198, 18, 7, 1)));
        assert!(parse_result(br#"{"ips":[]}"#).is_err());
        assert!(parse_result(b"not json").is_err());
    }

    #[test]
    fn errors_carry_code_and_message() {
        let (code, msg) = parse_error(br#"{"code":11,"msg":"no IP","details":"range full"}"#);
        assert_eq!(code, Some(11));
        assert_eq!(msg, "no IP: range full");
        assert_eq!(parse_error(b"boom\n"), (None, "boom".to_string()));
    }

    #[test]
    fn portmap_config_carries_the_mappings_and_the_previous_result() {
        let config = CniConfig::new("br-test", "198.18.9.0/24", Path::new("/run/ipam"));
        let ports = [PortMapping {
            host_port: 18080,
            container_port: 8080,
            protocol: PortProtocol::Udp,
        }];
        let value = portmap_config(&config, &ports, Some(json!({"ips": []})));
        assert_eq!(value["type"], json!("portmap"));
        assert_eq!(
            value["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "udp"}])
        );
        assert_eq!(value["prevResult"], json!({"ips": []}));
        assert!(portmap_config(&config, &ports, None)
            .get("prevResult")
            .is_none());
    }

    #[test]
    fn bridge_config_has_no_masquerading_and_our_ipam_dir() {
        let config = CniConfig::new("br-test", "198.18.9.0/24", Path::new("/run/ipam"));
        let value = bridge_config(&config);
        assert_eq!(value["ipMasq"], json!(false));
        assert_eq!(value["bridge"], json!("br-test"));
        assert_eq!(value["ipam"]["dataDir"], json!("/run/ipam"));
        assert_eq!(
            value["ipam"]["ranges"][0][0]["subnet"],
            json!("198.18.9.0/24")
        );
    }
}
