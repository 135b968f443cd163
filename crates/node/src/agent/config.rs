//! [`AgentConfig`]: everything the node agent is told at start (identity, control plane, data
//! directory, pod network, timing), with the defaults a node uses and the checks that reject
//! a config the agent could not run with.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_state::objects::Taint;

use super::error::AgentError;
use crate::runtime::BackoffConfig;

/// Pods a node accepts unless told otherwise (Kubernetes' default).
pub const DEFAULT_MAX_PODS: i64 = 110;
/// Longest node name accepted (a DNS subdomain).
pub const MAX_NODE_NAME_BYTES: usize = 253;

/// Resources kept back from pods for the system and the agent itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// How one node agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (a DNS subdomain), also its `kubernetes.io/hostname` label.
    pub name: String,
    /// `host:port` of control-plane peers; the agent fails over between them.
    pub servers: Vec<String>,
    /// Root of the agent's state: `images/` (store, `images/import/` for side-loading),
    /// `runtime/` (containers, sandboxes), `pods/` (per-pod volumes and journals).
    pub data_dir: PathBuf,
    /// Where the agent API (logs, exec) listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The node's InternalIP (pods' hostIP, the advertised endpoint's host). Default: the
    /// listen IP, or the first non-loopback IPv4 address when listening on all addresses.
    pub advertise_ip: Option<IpAddr>,
    /// Labels added to the Node (besides `kubernetes.io/hostname`, `…/os`, `…/arch`).
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub reserved: Reserved,
    pub max_pods: i64,
    pub heartbeat_interval: Duration,
    /// The lease: with no heartbeat accepted for this long the agent stops every container.
    pub lease: Duration,
    /// The node's pod subnet (`spec.podCIDR`), e.g. `198.18.7.0/24`.
    pub pod_cidr: String,
    /// The node bridge pods attach to.
    pub bridge: String,
    /// CNI network name (host-local keeps its allocations under it).
    pub cni_network_name: String,
    /// Where the CNI plugins (`bridge`, `host-local`) live.
    pub cni_plugin_dir: PathBuf,
    /// The executable re-executed as container shim (`flotilla __shim …`).
    pub shim_path: PathBuf,
    /// Top-level cgroup of this node's pods.
    pub cgroup_parent: String,
    /// Cap of one container's live log file (one rotated file of the same size is kept).
    pub log_max_bytes: u64,
    /// Crash-loop backoff of restarted containers.
    pub backoff: BackoffConfig,
    /// How often every pod is compared with what the runtime reports, even when nothing in
    /// the cluster changed (container exits are seen this way).
    pub resync_interval: Duration,
    /// How often `images/import/` is looked at for new files to import.
    pub import_scan_interval: Duration,
    /// Longest wait for the pods' containers when shutting down with `stop_pods`.
    pub shutdown_grace: Duration,
}

impl AgentConfig {
    /// A config with the defaults of a node: 500 ms heartbeats, a 2 s lease, bridge
    /// `flotilla0`, CNI plugins in `/usr/lib/cni`, Kubernetes' restart backoff, 110 pods.
    pub fn new(
        name: &str,
        servers: Vec<String>,
        data_dir: &Path,
        listen: SocketAddr,
        pod_cidr: &str,
        shim_path: &Path,
    ) -> AgentConfig {
        AgentConfig {
            name: name.to_string(),
            servers,
            data_dir: data_dir.to_path_buf(),
            listen,
            advertise_ip: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            reserved: Reserved::default(),
            max_pods: DEFAULT_MAX_PODS,
            heartbeat_interval: Duration::from_millis(500),
            lease: Duration::from_secs(2),
            pod_cidr: pod_cidr.to_string(),
            bridge: "flotilla0".to_string(),
            cni_network_name: "flotilla".to_string(),
            cni_plugin_dir: PathBuf::from("/usr/lib/cni"),
            shim_path: shim_path.to_path_buf(),
            cgroup_parent: "flotilla".to_string(),
            log_max_bytes: 10 << 20,
            backoff: BackoffConfig::default(),
            resync_interval: Duration::from_secs(1),
            import_scan_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }

    /// Rejects a config the agent cannot run with, naming the field.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |field: &'static str, reason: &str| {
            Err(AgentError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if !is_dns_subdomain(&self.name) {
            return bad(
                "name",
                "must be a lower-case DNS subdomain of at most 253 bytes",
            );
        }
        if self.servers.is_empty() {
            return bad("servers", "at least one control-plane address is needed");
        }
        if self.heartbeat_interval.is_zero() || self.lease <= self.heartbeat_interval {
            return bad("lease", "must be longer than a non-zero heartbeat interval");
        }
        if self.resync_interval.is_zero() || self.import_scan_interval.is_zero() {
            return bad("resync_interval", "intervals must not be zero");
        }
        if self.max_pods <= 0 || self.reserved.cpu_millis < 0 || self.reserved.memory_bytes < 0 {
            return bad(
                "reserved",
                "max_pods must be positive and reservations not negative",
            );
        }
        Ok(())
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }

    pub(crate) fn import_dir(&self) -> PathBuf {
        self.images_dir().join("import")
    }

    pub(crate) fn runtime_dir(&self) -> PathBuf {
        self.data_dir.join("runtime")
    }

    pub(crate) fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }
}

/// Lower-case DNS labels of `[a-z0-9-]` joined by dots, at most 253 bytes.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME_BYTES
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::new(
            "node-1",
            vec!["127.0.0.1:7000".into()],
            Path::new("/tmp/x"),
            "127.0.0.1:0".parse().unwrap(),
            "198.18.1.0/24",
            Path::new("/bin/true"),
        )
    }

    fn check(change: impl FnOnce(&mut AgentConfig), error_field: Option<&str>) {
        let mut c = config();
        change(&mut c);
        let got = match c.validate() {
            Ok(()) => None,
            Err(AgentError::Config { field, .. }) => Some(field),
            Err(other) => panic!("unexpected {other}"),
        };
        assert_eq!(got, error_field);
    }

    #[test]
    fn configs_are_checked_field_by_field() {
        check(|_| {}, None);
        check(|c| c.name = "Node_1".into(), Some("name"));
        check(|c| c.name = "a.b-c".into(), None);
        check(|c| c.name = String::new(), Some("name"));
        check(|c| c.servers.clear(), Some("servers"));
        check(|c| c.lease = Duration::from_millis(400), Some("lease"));
        check(|c| c.heartbeat_interval = Duration::ZERO, Some("lease"));
        check(|c| c.reserved.memory_bytes = -1, Some("reserved"));
        check(
            |c| c.resync_interval = Duration::ZERO,
            Some("resync_interval"),
        );
    }
}
