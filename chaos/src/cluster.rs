//! A run's cluster: the bridge network (a namespace of its own holding a Linux bridge, plus one
//! veth from the root namespace so the harness reaches every host), the hosts on it — server
//! peers first (hosts `1..=peers`), then node agents (`peers+1..=peers+agents`) —, the optional
//! delay proxy, and the list of endpoints clients may use (server peers only).
//!
//! [`Cluster`] is the teardown guard: [`Cluster::teardown`] stops every process and removes the
//! run's namespaces, veths and mounts; if it was never called (an error or a panic unwound past
//! it), `Drop` does the same synchronously.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::clean::{self, CleanReport, Which};
use crate::error::ChaosError;
use crate::host::{AgentLaunch, Host, HostOptions, HostRole, HostState, Launch};
use crate::image;
use crate::net::{self, NetError, RunSlot};
use crate::podclean;
use crate::proxy::DelayProxy;
use crate::sys;

/// A peer clients may send requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub peer: u64,
    pub addr: SocketAddr,
}

/// The endpoints of serving peers, shared with workload tasks and updated as faults come and go.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    inner: Arc<RwLock<Vec<Endpoint>>>,
}

impl Endpoints {
    pub fn snapshot(&self) -> Vec<Endpoint> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A random serving peer, if any serves.
    pub fn pick(&self, rng: &mut impl Rng) -> Option<Endpoint> {
        self.snapshot().choose(rng).copied()
    }

    fn set(&self, endpoints: Vec<Endpoint>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = endpoints;
    }
}

/// Peer exits one run records at most.
pub const MAX_EXITS_RECORDED: usize = 100;

/// A peer that exited without the harness asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerExit {
    pub host: u16,
    /// When it was noticed, in ms on the run's clock.
    pub at_ms: u64,
    pub status: String,
    pub log_tail: String,
    /// Whether a fault explains it (a full disk on that host).
    pub expected: bool,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub slot: RunSlot,
    pub run_dir: PathBuf,
    pub peers: u16,
    /// Node agents running real containers (0: none).
    pub agents: u16,
    pub host: HostOptions,
    /// Route peer-to-peer traffic through the delay proxy.
    pub delay_proxy: bool,
}

pub struct Cluster {
    pub slot: RunSlot,
    options: ClusterOptions,
    hosts: Vec<Host>,
    endpoints: Endpoints,
    proxy: Option<DelayProxy>,
    exits: Vec<PeerExit>,
    torn_down: bool,
}

impl Cluster {
    /// Builds the network in a slot from [`claim_slot`] and the initial hosts, and starts their
    /// peers (without waiting for a leader). On error, everything created so far is removed.
    pub async fn create(options: ClusterOptions) -> Result<Cluster, ChaosError> {
        let mut cluster = Cluster {
            slot: options.slot,
            options: options.clone(),
            hosts: Vec::new(),
            endpoints: Endpoints::default(),
            proxy: None,
            exits: Vec::new(),
            torn_down: false,
        };
        create_bridge(options.slot).await?;
        if options.delay_proxy {
            cluster.proxy = Some(DelayProxy::new(options.slot.harness_addr()));
        }
        let advertised: Vec<SocketAddr> = (1..=options.peers)
            .map(|n| cluster.advertise_addr(n))
            .collect::<Result<_, _>>()?;
        let initial = initial_cluster(&advertised);
        for number in 1..=options.peers {
            let launch = Launch::Initial(initial.clone());
            cluster.add_host(number, launch).await?;
        }
        cluster.add_agents().await?;
        for host in &mut cluster.hosts {
            host.start()?;
        }
        cluster.refresh_endpoints();
        Ok(cluster)
    }

    fn advertise_addr(&self, number: u16) -> Result<SocketAddr, ChaosError> {
        let own = SocketAddr::from((self.slot.host_addr(number)?, crate::net::PEER_PORT));
        Ok(match &self.proxy {
            Some(proxy) => proxy.address_for(number),
            None => own,
        })
    }

    async fn add_host(&mut self, number: u16, launch: Launch) -> Result<(), ChaosError> {
        let advertise = self.advertise_addr(number)?;
        let hosts_dir = self.options.run_dir.join("hosts");
        let host = Host::create(
            self.slot,
            number,
            &hosts_dir,
            self.options.host.clone(),
            Some(advertise),
            launch,
        )
        .await?;
        if let Some(proxy) = &mut self.proxy {
            proxy.add_target(number, host.addr).await?;
        }
        self.hosts.push(host);
        Ok(())
    }

    /// Creates the agent hosts (not started): registers their data directories for the
    /// clean-up first, then packs the image once and stages it in each.
    async fn add_agents(&mut self) -> Result<(), ChaosError> {
        if self.options.agents == 0 {
            return Ok(());
        }
        let first = self.options.peers + 1;
        let numbers: Vec<u16> = (first..first + self.options.agents).collect();
        let hosts_dir = self.options.run_dir.join("hosts");
        let data_dirs: Vec<PathBuf> = numbers
            .iter()
            .map(|&n| hosts_dir.join(self.slot.host_netns(n)).join("data"))
            .collect();
        podclean::register_agent_dirs(self.slot.index(), &data_dirs)
            .map_err(|e| ChaosError::io("registering the agents' directories", e))?;
        let image = image::pack_busybox(&self.options.host.flotilla, &self.options.run_dir).await?;
        let servers = self.server_addrs().join(",");
        for (i, &number) in numbers.iter().enumerate() {
            let launch = Launch::Agent(AgentLaunch {
                name: self.slot.host_netns(number),
                servers: servers.clone(),
                pod_cidr: net::pod_cidr(self.slot, i as u16 + 1)?,
                bridge: self.slot.pod_bridge(number),
            });
            let options = HostOptions {
                tmpfs_bytes: None,
                faketime_lib: None,
                ..self.options.host.clone()
            };
            let host = Host::create(self.slot, number, &hosts_dir, options, None, launch).await?;
            image::stage(&image, &host.data_dir())?;
            self.hosts.push(host);
        }
        Ok(())
    }

    /// `HOST:PORT` of every server host (what agents are told to dial).
    fn server_addrs(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.role == HostRole::Server)
            .map(|h| h.addr.to_string())
            .collect()
    }

    /// Creates a fresh host and starts its peer with `--join via`. Returns its number.
    pub async fn add_joining_host(&mut self, via: SocketAddr) -> Result<u16, ChaosError> {
        let number = self.hosts.len() as u16 + 1;
        self.add_host(number, Launch::Join(via.to_string())).await?;
        self.host_mut(number)?.start()?;
        self.refresh_endpoints();
        Ok(number)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, number: u16) -> Result<&Host, ChaosError> {
        self.hosts
            .get(usize::from(number).wrapping_sub(1))
            .ok_or_else(|| ChaosError::Config(format!("no host {number}")))
    }

    /// Mutable access to host `number`; call [`Cluster::refresh_endpoints`] after changing its
    /// state (the fault methods below do).
    pub fn host_mut(&mut self, number: u16) -> Result<&mut Host, ChaosError> {
        self.hosts
            .get_mut(usize::from(number).wrapping_sub(1))
            .ok_or_else(|| ChaosError::Config(format!("no host {number}")))
    }

    /// Numbers of the server hosts that are cluster members (not retired), ascending.
    pub fn members(&self) -> Vec<u16> {
        self.hosts
            .iter()
            .filter(|h| h.role == HostRole::Server && h.state != HostState::Retired)
            .map(|h| h.number)
            .collect()
    }

    /// Numbers of the agent hosts, ascending.
    pub fn agents(&self) -> Vec<u16> {
        self.hosts
            .iter()
            .filter(|h| h.role == HostRole::Agent)
            .map(|h| h.number)
            .collect()
    }

    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    pub fn proxy(&self) -> Option<&DelayProxy> {
        self.proxy.as_ref()
    }

    pub fn refresh_endpoints(&self) {
        let serving = self
            .hosts
            .iter()
            .filter(|h| h.role == HostRole::Server && h.is_serving())
            .map(|h| Endpoint {
                peer: u64::from(h.number),
                addr: h.addr,
            })
            .collect();
        self.endpoints.set(serving);
    }

    pub async fn kill(&mut self, number: u16) -> Result<(), ChaosError> {
        self.host_mut(number)?.kill().await?;
        self.refresh_endpoints();
        Ok(())
    }

    pub async fn stop(&mut self, number: u16) -> Result<(), ChaosError> {
        self.host_mut(number)?.stop().await?;
        self.refresh_endpoints();
        Ok(())
    }

    pub fn start(&mut self, number: u16) -> Result<(), ChaosError> {
        self.host_mut(number)?.start()?;
        self.refresh_endpoints();
        Ok(())
    }

    pub async fn retire(&mut self, number: u16) -> Result<(), ChaosError> {
        self.host_mut(number)?.retire().await?;
        self.refresh_endpoints();
        Ok(())
    }

    /// Records the peers that exited without being asked (at `at_ms` on the run's clock),
    /// keeping at most [`MAX_EXITS_RECORDED`].
    pub fn poll_exits(&mut self, at_ms: u64) {
        let mut changed = false;
        for host in &mut self.hosts {
            let Some(status) = host.poll_exit() else {
                continue;
            };
            tracing::warn!(host = host.number, status, "peer exited on its own");
            changed = true;
            if self.exits.len() < MAX_EXITS_RECORDED {
                self.exits.push(PeerExit {
                    host: host.number,
                    at_ms,
                    status,
                    log_tail: host.log_tail(),
                    expected: false,
                });
            }
        }
        if changed {
            self.refresh_endpoints();
        }
    }

    /// The exits recorded so far (and forgets them).
    pub fn take_exits(&mut self) -> Vec<PeerExit> {
        std::mem::take(&mut self.exits)
    }

    /// Stops every process (agents first) and removes the run's network, mounts, namespaces
    /// and the agents' leftovers (containers, mounts, pod cgroups).
    pub async fn teardown(&mut self) -> CleanReport {
        // Agents first, while the control plane still answers them: they stop their pods.
        self.hosts
            .sort_by_key(|h| (h.role == HostRole::Server, h.number));
        for host in &mut self.hosts {
            host.shut_down().await;
        }
        self.hosts.sort_by_key(|h| h.number);
        self.proxy = None;
        self.torn_down = true;
        let slot = self.slot.index();
        tokio::task::spawn_blocking(move || clean::clean(&Which::Slot(slot)))
            .await
            .unwrap_or_else(|e| CleanReport {
                errors: vec![format!("clean-up task failed: {e}")],
                ..CleanReport::default()
            })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        for host in &mut self.hosts {
            host.shut_down_blocking();
        }
        let report = clean::clean(&Which::Slot(self.slot.index()));
        if !report.errors.is_empty() {
            tracing::warn!(errors = ?report.errors, "tearing down the cluster");
        }
    }
}

/// `1=ADDR,2=ADDR,…` for `--initial-cluster`.
pub fn initial_cluster(advertised: &[SocketAddr]) -> String {
    advertised
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}={addr}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Slots a run tries to claim before giving up.
pub const SLOT_CLAIM_ATTEMPTS: usize = 32;

/// Picks a free slot and claims it by creating its bridge namespace (which fails if another run
/// created it first). Pass the slot to [`Cluster::create`] at once: until then nothing removes
/// the namespace but `flotilla-chaos clean`.
pub async fn claim_slot() -> Result<RunSlot, ChaosError> {
    let mut report = clean::CleanReport::default();
    let used: BTreeSet<u16> = clean::list_namespaces(&Which::All, &mut report)
        .iter()
        .filter_map(|ns| net::slot_of_name(ns))
        .collect();
    let routes = net::parse_routes(&sys::run_str("ip", &["-4", "route", "show"]).await?);
    // Start in 198.19.0.0/16, away from 198.18.x networks other tools tend to use.
    let start = 256 + (std::process::id() % 256) as u16;
    let candidates = net::candidate_slots(&used, &routes, start);
    for slot in candidates.into_iter().take(SLOT_CLAIM_ATTEMPTS) {
        match sys::run_str("ip", &["netns", "add", &slot.bridge_netns()]).await {
            Ok(_) => {
                if let Err(e) = clean::mark_owner(slot.index()) {
                    tracing::warn!(error = %e, "cannot record the run's owner; `clean` may remove it");
                }
                return Ok(slot);
            }
            Err(ChaosError::Command { stderr, .. }) if stderr.contains("exists") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(NetError::NoFreeSlot.into())
}

/// The bridge (in the slot's claimed namespace), and the harness's veth from the root namespace
/// into it.
async fn create_bridge(slot: RunSlot) -> Result<(), ChaosError> {
    let ns = slot.bridge_netns();
    let (root, root_port) = (slot.root_veth(), slot.root_bridge_port());
    let harness = format!("{}/24", slot.harness_addr());
    sys::run_str("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
    sys::run_str("ip", &["-n", &ns, "link", "add", &ns, "type", "bridge"]).await?;
    sys::run_str("ip", &["-n", &ns, "link", "set", &ns, "up"]).await?;
    let veth = [
        "link", "add", &root, "type", "veth", "peer", "name", &root_port, "netns", &ns,
    ];
    sys::run_str("ip", &veth).await?;
    sys::run_str("ip", &["addr", "add", &harness, "dev", &root]).await?;
    sys::run_str("ip", &["link", "set", &root, "up"]).await?;
    let port = ["-n", &ns, "link", "set", &root_port, "master", &ns, "up"];
    sys::run_str("ip", &port).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_lists_peers_by_id() {
        let addrs: Vec<SocketAddr> = ["198.18.1.1:7001", "198.18.1.2:7001"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            initial_cluster(&addrs),
            "1=198.18.1.1:7001,2=198.18.1.2:7001"
        );
    }
}
