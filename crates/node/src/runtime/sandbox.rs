//! Pod sandboxes: the network, IPC and UTS namespaces a pod's containers share, pinned as
//! bind-mounted nsfs files (no pause process), plus the pod's CNI attachment and cgroup. A
//! host-network pod (`hostNetwork: true`) owns only its IPC namespace: its containers use the
//! node's network and UTS namespaces, and it has no CNI attachment.
//!
//! Sandbox directory `<state_dir>/sandboxes/<pod-uid>/`: `net`, `ipc`, `uts` (the pinned
//! namespaces; `ipc` alone for a host-network pod) and `sandbox.json` ([`SandboxRecord`]).
//! Teardown runs CNI DEL (not for a host-network pod), unmounts the namespaces, removes the
//! pod cgroup and the directory; it is idempotent and also undoes a half-finished creation.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroups;
use super::error::{IoContext, RuntimeError};
use super::mounts::{remove_dir_safely, unmount};
use super::oci::PodNamespaces;
use super::podns::{self, Kind};
use super::service::{Runtime, MAX_LISTED};
use super::spec::validate_name;
use super::state::{read_json, write_json_atomic};
use crate::network::{PodAddress, PortMapping};

/// Longest hostname the kernel accepts.
pub const MAX_HOSTNAME_BYTES: usize = 64;

/// A pod's shared namespaces and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub pod_uid: String,
    pub hostname: String,
    pub dir: PathBuf,
    pub namespaces: PodNamespaces,
    /// The pod's IP on the node network; `None` without a network config and for a
    /// host-network pod (whose address is the node's).
    pub address: Option<PodAddress>,
    /// The pod uses the node's network and UTS namespaces.
    pub host_network: bool,
}

/// Which network a new sandbox gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxNetwork {
    /// A network namespace of its own, attached to the node network (when the runtime has
    /// one) with these ports of the node forwarded to it.
    Pod { host_ports: Vec<PortMapping> },
    /// The node's network and UTS namespaces; the node's hostname.
    Host,
}

/// `sandbox.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    pod_uid: String,
    hostname: String,
    ip: Option<Ipv4Addr>,
    prefix_len: Option<u8>,
    gateway: Option<Ipv4Addr>,
    /// Absent in records written before host-network pods existed: false.
    #[serde(default)]
    host_network: bool,
    /// Recorded before the CNI ADD that sets them up, so teardown removes them even after a
    /// crash in between.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    host_ports: Vec<PortMapping>,
}

impl Runtime {
    fn sandbox_dir(&self, pod_uid: &str) -> PathBuf {
        self.config.state_dir.join("sandboxes").join(pod_uid)
    }

    /// Creates the pod's namespaces (hostname set, loopback up) and attaches it to the node
    /// network, no host ports. On failure nothing is left behind.
    pub async fn create_sandbox(
        &self,
        pod_uid: &str,
        hostname: &str,
    ) -> Result<Sandbox, RuntimeError> {
        let network = SandboxNetwork::Pod {
            host_ports: Vec::new(),
        };
        self.create_pod_sandbox(pod_uid, hostname, network).await
    }

    /// Creates the pod's sandbox on `network`: with [`SandboxNetwork::Pod`], its namespaces
    /// (hostname set, loopback up), its attachment and its host ports; with
    /// [`SandboxNetwork::Host`], its own IPC namespace only, and `hostname` is replaced by the
    /// node's. On failure nothing is left behind.
    pub async fn create_pod_sandbox(
        &self,
        pod_uid: &str,
        hostname: &str,
        network: SandboxNetwork,
    ) -> Result<Sandbox, RuntimeError> {
        validate_name("pod uid", pod_uid)?;
        let (hostname, host_network, host_ports) = match network {
            SandboxNetwork::Host => (node_hostname()?, true, Vec::new()),
            SandboxNetwork::Pod { host_ports } => {
                validate_hostname(hostname)?;
                if !host_ports.is_empty() && self.cni.is_none() {
                    return Err(RuntimeError::invalid(
                        "host ports",
                        "need the node's pod network (the agent has none configured)",
                    ));
                }
                (hostname.to_string(), false, host_ports)
            }
        };
        let dir = self.sandbox_dir(pod_uid);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(RuntimeError::SandboxExists {
                    pod_uid: pod_uid.to_string(),
                })
            }
            other => other.ctx("creating", &dir)?,
        }
        let mut record = SandboxRecord {
            pod_uid: pod_uid.to_string(),
            hostname,
            ip: None,
            prefix_len: None,
            gateway: None,
            host_network,
            host_ports,
        };
        let created = self.populate_sandbox(&dir, &mut record).await;
        if let Err(e) = created {
            let _ = self.teardown_sandbox(pod_uid).await;
            return Err(e);
        }
        Ok(sandbox_of(&dir, &record))
    }

    async fn populate_sandbox(
        &self,
        dir: &Path,
        record: &mut SandboxRecord,
    ) -> Result<(), RuntimeError> {
        let record_path = dir.join("sandbox.json");
        write_json_atomic(&record_path, record)?;
        let kinds = owned_kinds(record.host_network);
        let timeout = self.config.helper_timeout;
        podns::create(dir, kinds, &record.hostname, timeout).await?;
        if let (Some(cni), false) = (&self.cni, record.host_network) {
            let address = cni
                .add(&record.pod_uid, &dir.join("net"), &record.host_ports)
                .await?;
            record.ip = Some(address.ip);
            record.prefix_len = Some(address.prefix_len);
            record.gateway = address.gateway;
            write_json_atomic(&record_path, record)?;
        }
        Ok(())
    }

    /// The sandbox of a pod, as created earlier (also by a previous agent).
    pub fn sandbox(&self, pod_uid: &str) -> Result<Sandbox, RuntimeError> {
        validate_name("pod uid", pod_uid)?;
        let dir = self.sandbox_dir(pod_uid);
        let record: SandboxRecord = match read_json(&dir.join("sandbox.json")) {
            Err(RuntimeError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                return Err(RuntimeError::SandboxNotFound {
                    pod_uid: pod_uid.to_string(),
                })
            }
            other => other?,
        };
        Ok(sandbox_of(&dir, &record))
    }

    /// The pod UIDs that have a sandbox, sorted, without reading the records: a sandbox
    /// record, or a directory that never got one and is older than any creation takes (its
    /// agent died between the two), so that it is torn down rather than kept forever.
    pub fn sandbox_uids(&self) -> Result<Vec<String>, RuntimeError> {
        let root = self.config.state_dir.join("sandboxes");
        let mut uids: Vec<String> = std::fs::read_dir(&root)
            .ctx("listing", &root)?
            .take(MAX_LISTED)
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|uid| validate_name("pod uid", uid).is_ok())
            .filter(|uid| {
                let dir = root.join(uid);
                dir.join("sandbox.json").is_file() || self.older_than_a_start(&dir)
            })
            .collect();
        uids.sort();
        Ok(uids)
    }

    /// Every sandbox with a record in the state directory, sorted by pod UID.
    pub fn list_sandboxes(&self) -> Result<Vec<Sandbox>, RuntimeError> {
        let uids = self.sandbox_uids()?;
        let mut out = Vec::with_capacity(uids.len());
        for uid in uids {
            match self.sandbox(&uid) {
                Ok(sandbox) => out.push(sandbox),
                Err(RuntimeError::SandboxNotFound { .. } | RuntimeError::Invalid { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Detaches the pod from the network and releases its namespaces and cgroup. Refused
    /// while a container of the pod still runs; a missing sandbox is already removed.
    pub async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        validate_name("pod uid", pod_uid)?;
        let live: Vec<String> = self
            .list_pod(pod_uid)?
            .into_iter()
            .filter(|c| c.is_running())
            .map(|c| c.id.to_string())
            .collect();
        if !live.is_empty() {
            return Err(RuntimeError::SandboxBusy {
                pod_uid: pod_uid.to_string(),
                containers: live,
            });
        }
        self.teardown_sandbox(pod_uid).await
    }

    /// Undoes every step of sandbox creation that happened; safe to repeat.
    async fn teardown_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let dir = self.sandbox_dir(pod_uid);
        let net = dir.join("net");
        let mut first_error = None;
        // A record that cannot be read does not prove the pod had no attachment: DEL anyway,
        // with its port forwards unknown.
        let record = read_json::<SandboxRecord>(&dir.join("sandbox.json")).ok();
        let host_network = record.as_ref().is_some_and(|r| r.host_network);
        if let (Some(cni), false, true) = (&self.cni, host_network, dir.exists()) {
            let netns = is_pinned_namespace(&net).then_some(net.as_path());
            let host_ports = record.as_ref().map(|r| r.host_ports.as_slice());
            if let Err(e) = cni.del(pod_uid, netns, host_ports).await {
                first_error.get_or_insert(e.into());
            }
        }
        for kind in Kind::ALL {
            if let Err(e) = unmount(&dir.join(kind.name())) {
                first_error.get_or_insert(e);
            }
        }
        let pod_cgroup = cgroups::pod_cgroup(&self.config.cgroup_parent, pod_uid);
        if let Err(e) = cgroups::remove_tree(self.cgroup_mode, &pod_cgroup) {
            first_error.get_or_insert(e);
        }
        if first_error.is_none() {
            remove_dir_safely(&dir)?;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The namespaces a pod owns (the rest are the node's).
fn owned_kinds(host_network: bool) -> &'static [Kind] {
    if host_network {
        &[Kind::Ipc]
    } else {
        &Kind::ALL
    }
}

/// The node's hostname, which a host-network pod's containers see.
fn node_hostname() -> Result<String, RuntimeError> {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .map_err(|e| RuntimeError::Sandbox {
            message: format!("reading the node's hostname: {e}"),
        })
}

fn sandbox_of(dir: &Path, record: &SandboxRecord) -> Sandbox {
    let address = record.ip.map(|ip| PodAddress {
        ip,
        prefix_len: record.prefix_len.unwrap_or(32),
        gateway: record.gateway,
    });
    Sandbox {
        pod_uid: record.pod_uid.clone(),
        hostname: record.hostname.clone(),
        dir: dir.to_path_buf(),
        namespaces: PodNamespaces {
            net: (!record.host_network).then(|| dir.join("net")),
            ipc: dir.join("ipc"),
            uts: (!record.host_network).then(|| dir.join("uts")),
        },
        address,
        host_network: record.host_network,
    }
}

/// True when `path` is a bind-mounted namespace (not the empty file it is mounted on).
fn is_pinned_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// A hostname is lower-case DNS labels separated by dots, at most 64 bytes.
fn validate_hostname(hostname: &str) -> Result<(), RuntimeError> {
    let labels_ok = hostname.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if hostname.is_empty() || hostname.len() > MAX_HOSTNAME_BYTES || !labels_ok {
        return Err(RuntimeError::invalid(
            format!("hostname {hostname:?}"),
            "must be lower-case DNS labels, at most 64 bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(hostname: &str, ok: bool) {
        assert_eq!(validate_hostname(hostname).is_ok(), ok, "{hostname:?}");
    }

    #[test]
    fn hostnames_are_dns_names() {
        check("web-0", true);
        check("web-0.svc", true);
        check("", false);
        check("a..b", false);
        check("-a", false);
        check("A", false);
        check(&"a".repeat(64), true);
        check(&"a".repeat(65), false);
    }
}
