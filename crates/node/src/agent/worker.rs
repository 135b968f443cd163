//! The pod worker: one task per pod UID, reconciling level-triggered what the cluster wants
//! of that pod ([`Order`], the newest accepted version) against what the runtime reports.
//! It wakes on a new order, on a probe result, on the fence changing, at a restart that
//! comes due, and every `resync_interval`; each pass looks at everything again and does the
//! next steps (sandbox, volumes, container starts and restarts, liveness kills), then
//! reports the status. Terminating or vanished pods are torn down (`teardown.rs`). One pod's
//! slow step never holds up another pod.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_state::informer::Cached;
use flotilla_state::objects::{
    Container, Pod, PodPhase, Protocol, RestartPolicy as PodRestartPolicy,
};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::image::Digest;
use crate::network::{PortMapping, PortProtocol};
use crate::runtime::{
    ContainerId, ContainerState as RtState, ContainerStatus as RtStatus, ProbeResult,
    RestartPolicy, RuntimeError, Sandbox, SandboxNetwork, START_FAILED_EXIT_CODE,
};

use super::adopt::adopt;
use super::context::{entry_of, Ctx};
use super::plan::{decide, plan, Decision, Observed, Step};
use super::poddir::{Journal, PodDir};
use super::probes::{probe_plan, spawn_probe, ProbeTarget};
use super::record::{ContainerRecord, Current};
use super::report::Reporter;
use super::spec::HostVolume;
use super::status::{self, ContainerReport, Note, PodReport};
use super::teardown::Teardown;

/// How long a pod whose sandbox could not be created waits before the next try.
const SANDBOX_RETRY: Duration = Duration::from_secs(2);
/// Grace period of pods torn down without a known spec (found only in the runtime).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);
/// Kubernetes' default grace period, for pods that set none.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Longest hostname a sandbox takes.
const MAX_HOSTNAME_BYTES: usize = 63;

/// What the cluster wants of a pod, as the dispatcher last accepted it.
#[derive(Debug, Clone)]
pub enum Order {
    /// Run this version of the pod (tear it down if it is terminating).
    Pod(Cached<Pod>),
    /// The pod is not in the cluster (or the agent shuts down and stops its pods): remove
    /// what is left, with at most `max_grace` per container when set.
    Gone { max_grace: Option<Duration> },
}

pub struct PodWorker {
    pub(super) ctx: Arc<Ctx>,
    pub(super) uid: String,
    pub(super) orders: watch::Receiver<Order>,
    pub(super) pod: Option<Cached<Pod>>,
    pub(super) dir: PodDir,
    pub(super) journal: Journal,
    pub(super) records: BTreeMap<String, ContainerRecord>,
    leftovers: Vec<ContainerId>,
    volumes: Option<BTreeMap<String, HostVolume>>,
    pub(super) sandbox: Option<Sandbox>,
    problem: Option<(String, String)>,
    sandbox_retry_at: Option<Instant>,
    pub(super) reporter: Reporter,
    pub(super) wake: Arc<Notify>,
    fence: watch::Receiver<bool>,
    pub(super) teardown: Teardown,
}

impl PodWorker {
    /// A worker for pod `uid`, adopting `containers` (the runtime's containers of that pod).
    pub fn new(
        ctx: Arc<Ctx>,
        uid: &str,
        orders: watch::Receiver<Order>,
        containers: &[RtStatus],
    ) -> PodWorker {
        let dir = PodDir::new(&ctx.config.pods_dir(), uid);
        let journal = dir.load();
        let spec_pod = match &*orders.borrow() {
            Order::Pod(cached) => Some(cached.object.clone()),
            Order::Gone { .. } => None,
        };
        let names: Vec<String> = spec_pod
            .iter()
            .flat_map(|p| p.spec.containers.iter().map(|c| c.name.clone()))
            .collect();
        let adoption = adopt(containers, &names);
        let mut records = BTreeMap::new();
        for (name, instances) in adoption.instances {
            let mut record = ContainerRecord {
                current: instances
                    .current
                    .clone()
                    .map_or(Current::None, Current::Instance),
                previous: instances.previous.clone(),
                ..ContainerRecord::default()
            };
            let remembered = journal.containers.get(&name).cloned().unwrap_or_default();
            record.backoff = remembered.backoff();
            let image = spec_pod
                .as_ref()
                .and_then(|p| p.spec.containers.iter().find(|c| c.name == name))
                .map(|c| c.image.clone());
            for id in [instances.current, instances.previous]
                .into_iter()
                .flatten()
            {
                repin(
                    &ctx,
                    &mut record,
                    &id,
                    remembered.images.get(id.as_str()),
                    image.as_deref(),
                );
            }
            records.insert(name, record);
        }
        let sandbox = ctx.runtime.sandbox(uid).ok();
        let fence = ctx.fence.subscribe();
        PodWorker {
            uid: uid.to_string(),
            orders,
            pod: None,
            dir,
            journal,
            records,
            leftovers: adoption.leftovers,
            volumes: None,
            sandbox,
            problem: None,
            sandbox_retry_at: None,
            reporter: Reporter::default(),
            wake: Arc::new(Notify::new()),
            fence,
            teardown: Teardown::default(),
            ctx,
        }
    }

    /// Runs until the pod is torn down, or until the dispatcher goes away (agent shutdown
    /// without stopping pods: containers keep running for the next agent to adopt).
    pub async fn run(mut self) {
        loop {
            let order = self.orders.borrow_and_update().clone();
            let next = match order {
                Order::Pod(cached) if cached.object.metadata.deletion_timestamp.is_some() => {
                    self.pod = Some(cached);
                    match self.terminate(true, None).await {
                        Some(retry_at) => retry_at,
                        None => return,
                    }
                }
                Order::Pod(cached) => {
                    self.accept(cached);
                    self.sync().await
                }
                Order::Gone { max_grace } => match self.terminate(false, max_grace).await {
                    Some(retry_at) => retry_at,
                    None => return,
                },
            };
            tokio::select! {
                changed = self.orders.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(next) => {}
                _ = self.wake.notified() => {}
                _ = self.fence.changed() => {}
            }
        }
    }

    fn accept(&mut self, cached: Cached<Pod>) {
        let meta = &cached.object.metadata;
        if self.journal.name.is_empty() {
            self.journal.namespace = meta.namespace.clone();
            self.journal.name = meta.name.clone();
        }
        self.pod = Some(cached);
    }

    /// One reconcile pass over a pod that should run; returns when to look again.
    async fn sync(&mut self) -> Instant {
        let Some(cached) = self.pod.clone() else {
            return Instant::now() + self.ctx.config.resync_interval;
        };
        let pod = cached.object.clone();
        let mut wake = Instant::now() + self.ctx.config.resync_interval;
        self.remove_leftovers().await;
        let fenced = self.ctx.fence.is_fenced();
        let finished = matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed);
        if !fenced && !finished {
            if let Some(retry_at) = self.ensure_sandbox(&pod).await {
                wake = wake.min(retry_at);
            }
        }
        let ready = self.sandbox.is_some() && self.ensure_volumes(&pod).await;
        let may_start = !fenced && !finished && ready;
        for container in &pod.spec.containers {
            if let Some(at) = self.sync_container(&pod, container, may_start).await {
                wake = wake.min(at);
            }
        }
        self.publish(&pod);
        if !fenced {
            let report = self.report(&pod);
            let status = status::pod_status(&report, self.reporter.baseline(&cached), &now_time());
            if let Some(at) = self.reporter.update(&self.ctx, &cached, status, &self.wake) {
                wake = wake.min(at);
            }
        }
        wake
    }

    /// Stops and removes containers adoption found surplus.
    async fn remove_leftovers(&mut self) {
        for id in std::mem::take(&mut self.leftovers) {
            let grace = self
                .pod
                .as_ref()
                .map_or(ORPHAN_GRACE, |p| grace_of(&p.object));
            let removed = match self.ctx.runtime.stop(&id, grace).await {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => self.ctx.runtime.remove(&id).await,
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                tracing::warn!(container = %id, error = %e, "could not remove a surplus container");
                self.leftovers.push(id);
            }
        }
    }

    /// Creates (or finds) the pod's sandbox; returns when to retry after a failure.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> Option<Instant> {
        if self.sandbox.is_some() {
            return None;
        }
        if self.sandbox_retry_at.is_some_and(|at| Instant::now() < at) {
            return self.sandbox_retry_at;
        }
        let network = if pod.spec.host_network {
            SandboxNetwork::Host
        } else {
            SandboxNetwork::Pod {
                host_ports: host_ports(pod),
            }
        };
        let created = self
            .ctx
            .runtime
            .create_pod_sandbox(&self.uid, &hostname_of(pod), network)
            .await;
        let created = match created {
            Err(RuntimeError::SandboxExists { .. }) => self.ctx.runtime.sandbox(&self.uid),
            other => other,
        };
        match created {
            Ok(sandbox) => {
                self.sandbox = Some(sandbox);
                self.problem = None;
                None
            }
            Err(e) => {
                tracing::warn!(pod = %self.uid, error = %e, "pod sandbox could not be created");
                self.problem = Some(("FailedCreatePodSandBox".into(), e.to_string()));
                self.sandbox_retry_at = Some(Instant::now() + SANDBOX_RETRY);
                self.sandbox_retry_at
            }
        }
    }

    /// Prepares the pod's volumes once; false (with a blocker on every container) on error.
    async fn ensure_volumes(&mut self, pod: &Pod) -> bool {
        if self.volumes.is_some() {
            return true;
        }
        match super::volumes::prepare(&self.ctx.client, pod, &self.dir).await {
            Ok(volumes) => {
                self.volumes = Some(volumes);
                true
            }
            Err(blocker) => {
                for c in &pod.spec.containers {
                    let record = self.records.entry(c.name.clone()).or_default();
                    if record.current == Current::None {
                        record.blocker = Some(blocker.clone());
                    }
                }
                false
            }
        }
    }

    /// One container's next step; returns when its restart comes due, if it waits for one.
    async fn sync_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        may_start: bool,
    ) -> Option<Instant> {
        let observed = self.observe(&c.name);
        let policy = restart_policy(pod.spec.restart_policy());
        let record = self.records.entry(c.name.clone()).or_default();
        if let Observed::Exited {
            exit_code,
            ran_for,
            finished_at,
        } = &observed
        {
            record.stop_probes();
            if record.decision().is_none() {
                let decision = decide(
                    policy,
                    &self.ctx.config.backoff,
                    record.backoff,
                    *exit_code,
                    *ran_for,
                    *finished_at,
                );
                record.decided = record.exit_token().map(|t| (t, decision));
            }
        }
        let liveness_failed = record
            .liveness
            .as_ref()
            .is_some_and(|p| p.result() == ProbeResult::Failure);
        let step = plan(
            &observed,
            record.decision(),
            record.backoff,
            liveness_failed,
            may_start,
            Instant::now(),
        );
        match step {
            Step::Keep => {
                if let Observed::Running { started_at } = observed {
                    self.ensure_probes(c, started_at);
                }
                None
            }
            Step::WaitUntil(at) => Some(at),
            Step::Kill => {
                self.kill_for_liveness(pod, &c.name).await;
                None
            }
            Step::Start { backoff } => {
                self.start_instance(pod, c, backoff).await;
                None
            }
        }
    }

    /// What the runtime shows of the current instance of `name`.
    pub(super) fn observe(&mut self, name: &str) -> Observed {
        let Some(record) = self.records.get_mut(name) else {
            return Observed::Never;
        };
        let id = match &record.current {
            Current::None => return Observed::Never,
            Current::StartFailed { at, .. } => {
                return Observed::Exited {
                    exit_code: START_FAILED_EXIT_CODE,
                    ran_for: Duration::ZERO,
                    finished_at: *at,
                }
            }
            Current::Instance(id) => id.clone(),
        };
        match self.ctx.runtime.status(&id) {
            Ok(status) => observed_of(&status.state),
            Err(RuntimeError::NotFound { .. }) => {
                tracing::warn!(container = %id, "the runtime lost a container; starting afresh");
                record.current = Current::None;
                record.prune();
                Observed::Never
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "container status unreadable");
                Observed::Creating
            }
        }
    }

    /// The pod's address: the node's for a host-network pod, else the one CNI gave it.
    fn pod_ip(&self) -> Option<IpAddr> {
        let sandbox = self.sandbox.as_ref()?;
        if sandbox.host_network {
            return Some(self.ctx.node_ip);
        }
        sandbox.address.map(|a| a.ip.into())
    }

    /// Starts the liveness and readiness probes of a newly seen running instance.
    fn ensure_probes(&mut self, c: &Container, started_at: SystemTime) {
        let pod_ip = self.pod_ip();
        let Some(record) = self.records.get_mut(&c.name) else {
            return;
        };
        let Some(id) = record.current_id().cloned() else {
            return;
        };
        if record.probed.as_ref() == Some(&id) {
            return;
        }
        record.stop_probes();
        let probes = [
            (c.liveness_probe.as_ref(), ProbeResult::Success, true),
            (c.readiness_probe.as_ref(), ProbeResult::Failure, false),
        ];
        for (probe, initial, is_liveness) in probes {
            let Some(probe) = probe else { continue };
            let handle = match probe_plan(probe, c) {
                Ok((action, timing)) => {
                    let target = ProbeTarget {
                        runtime: self.ctx.runtime.clone(),
                        id: id.clone(),
                        pod_ip,
                        started: super::plan::instant_of(started_at),
                        wake: self.wake.clone(),
                    };
                    Some(spawn_probe(target, action, timing, initial))
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "probe cannot run");
                    None
                }
            };
            if is_liveness {
                record.liveness = handle;
            } else {
                record.readiness = handle;
            }
        }
        record.probed = Some(id);
    }

    /// Stops an instance whose liveness probe failed; its exit is then decided as usual.
    async fn kill_for_liveness(&mut self, pod: &Pod, name: &str) {
        let Some(record) = self.records.get_mut(name) else {
            return;
        };
        let Some(id) = record.current_id().cloned() else {
            return;
        };
        record.stop_probes();
        record.notes.insert(
            id.clone(),
            Note {
                reason: None,
                message: format!("container {name} failed its liveness probe and was killed"),
            },
        );
        tracing::info!(container = %id, "liveness probe failed: restarting");
        let grace = Duration::from_secs(
            pod.spec
                .termination_grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECONDS)
                .max(0) as u64,
        );
        if let Err(e) = self.ctx.runtime.stop(&id, grace).await {
            tracing::warn!(container = %id, error = %e, "could not stop a container");
        }
    }

    pub(super) fn volumes_ref(&self) -> Option<&BTreeMap<String, HostVolume>> {
        self.volumes.as_ref()
    }

    /// Tells the agent API where the pod's containers are.
    pub(super) fn publish(&self, pod: &Pod) {
        let names: Vec<String> = pod.spec.containers.iter().map(|c| c.name.clone()).collect();
        let instances = self
            .records
            .iter()
            .map(|(name, r)| (name.clone(), r.instances()))
            .collect();
        let meta = &pod.metadata;
        self.ctx.directory.publish(
            &meta.namespace,
            &meta.name,
            entry_of(&self.uid, &names, &instances),
        );
    }

    /// Everything the status is made of, as of now.
    fn report(&mut self, pod: &Pod) -> PodReport {
        let containers = pod
            .spec
            .containers
            .iter()
            .map(|c| self.container_report(pod, c))
            .collect();
        PodReport {
            containers,
            restart_policy: pod.spec.restart_policy(),
            host_ip: self.ctx.node_ip.to_string(),
            pod_ip: self.pod_ip().map(|ip| ip.to_string()).unwrap_or_default(),
            problem: self.problem.clone(),
        }
    }

    fn container_report(&mut self, pod: &Pod, c: &Container) -> ContainerReport {
        let observed = self.observe(&c.name);
        let record = self.records.entry(c.name.clone()).or_default();
        let runtime = &self.ctx.runtime;
        let fence = &self.ctx.fence;
        let terminated_of = |id: &ContainerId| {
            let state = runtime.status(id).ok()?.state;
            let fenced = fence.note(id).map(|message| Note {
                reason: Some(status::NODE_LEASE_LAPSED.into()),
                message,
            });
            let note = fenced.or_else(|| record.notes.get(id).cloned());
            status::terminated_of(&state, note.as_ref()).map(status::terminated_state)
        };
        let current_term = match &record.current {
            Current::Instance(id) => terminated_of(id),
            Current::StartFailed { at, message } => Some(start_failed(*at, message)),
            Current::None => None,
        };
        let previous_term = record.previous.as_ref().and_then(&terminated_of);
        let ready = match (&observed, &c.readiness_probe) {
            (Observed::Running { .. }, None) => true,
            (Observed::Running { .. }, Some(_)) => record
                .readiness
                .as_ref()
                .is_some_and(|p| p.result() == ProbeResult::Success),
            _ => false,
        };
        let (state, last_state) = match &observed {
            Observed::Never => {
                let (reason, message) = record
                    .blocker
                    .as_ref()
                    .map_or((status::CONTAINER_CREATING, String::new()), |b| {
                        (b.reason, b.message.clone())
                    });
                (status::waiting(reason, &message), previous_term)
            }
            Observed::Creating => (
                status::waiting(status::CONTAINER_CREATING, ""),
                previous_term,
            ),
            Observed::Running { started_at } => (status::running(*started_at), previous_term),
            Observed::Exited { .. } => {
                let term = current_term.unwrap_or_default();
                match (record.decision(), &record.blocker) {
                    (Some(Decision::RestartAt { at, delay, .. }), _) if Instant::now() < *at => {
                        let message = format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            delay.as_secs_f64(),
                            c.name,
                            pod.metadata.name,
                            pod.metadata.namespace,
                            self.uid
                        );
                        (
                            status::waiting(crate::runtime::CRASH_LOOP_BACK_OFF, &message),
                            Some(term),
                        )
                    }
                    (Some(Decision::RestartAt { .. }), Some(blocker)) => (
                        status::waiting(blocker.reason, &blocker.message),
                        Some(term),
                    ),
                    _ => (term, previous_term),
                }
            }
        };
        ContainerReport {
            name: c.name.clone(),
            image: c.image.clone(),
            container_id: record
                .current_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            state,
            last_state,
            ready,
            restart_count: record.backoff.restart_count,
        }
    }
}

/// Pins the image an adopted instance runs on: by the digest the journal remembers, else by
/// the pod's image reference.
fn repin(
    ctx: &Ctx,
    record: &mut ContainerRecord,
    id: &ContainerId,
    digest: Option<&String>,
    reference: Option<&str>,
) {
    let by_digest = digest
        .and_then(|d| Digest::parse(d).ok())
        .and_then(|d| ctx.images.load_image(&d).ok())
        .map(|image| ctx.images.pin(&image));
    let pin = by_digest
        .or_else(|| reference.and_then(|r| ctx.images.acquire(r).ok().map(|(_, pin)| pin)));
    match pin {
        Some(pin) => {
            record.pins.insert(id.clone(), pin);
        }
        None => {
            tracing::warn!(container = %id, "the image of an adopted container is not in the store")
        }
    }
}

fn observed_of(state: &RtState) -> Observed {
    match state {
        RtState::Creating => Observed::Creating,
        RtState::Running { started_at } => Observed::Running {
            started_at: *started_at,
        },
        RtState::Exited {
            exit_code,
            started_at,
            finished_at,
            ..
        } => Observed::Exited {
            exit_code: *exit_code,
            ran_for: started_at
                .and_then(|s| finished_at.duration_since(s).ok())
                .unwrap_or_default(),
            finished_at: *finished_at,
        },
    }
}

fn start_failed(at: SystemTime, message: &str) -> flotilla_state::objects::ContainerState {
    status::terminated_state(flotilla_state::objects::ContainerStateTerminated {
        exit_code: START_FAILED_EXIT_CODE,
        signal: None,
        reason: "StartError".into(),
        message: message.to_string(),
        started_at: None,
        finished_at: Some(status::time_of(at)),
    })
}

pub(super) fn restart_policy(policy: PodRestartPolicy) -> RestartPolicy {
    match policy {
        PodRestartPolicy::Always => RestartPolicy::Always,
        PodRestartPolicy::OnFailure => RestartPolicy::OnFailure,
        PodRestartPolicy::Never => RestartPolicy::Never,
    }
}

/// The grace period a terminating pod's containers get.
pub(super) fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod.spec.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0);
    Duration::from_secs(seconds as u64)
}

/// The node ports the pod's containers ask for (`hostPort`), as the runtime forwards them.
fn host_ports(pod: &Pod) -> Vec<PortMapping> {
    let ports = pod.spec.containers.iter().flat_map(|c| &c.ports);
    ports
        .filter_map(|port| {
            let host_port = u16::try_from(port.host_port?).ok().filter(|p| *p > 0)?;
            let container_port = u16::try_from(port.container_port).ok()?;
            let protocol = match port.protocol.unwrap_or(Protocol::Tcp) {
                Protocol::Tcp => PortProtocol::Tcp,
                Protocol::Udp => PortProtocol::Udp,
                Protocol::Sctp => PortProtocol::Sctp,
            };
            Some(PortMapping {
                host_port,
                container_port,
                protocol,
            })
        })
        .collect()
}

/// The pod's hostname: its name, cut to a valid hostname.
fn hostname_of(pod: &Pod) -> String {
    let name = pod.metadata.name.to_ascii_lowercase();
    let cut = &name[..name.len().min(MAX_HOSTNAME_BYTES)];
    let trimmed = cut.trim_end_matches(['-', '.']);
    if trimmed.is_empty() {
        "pod".to_string()
    } else {
        trimmed.to_string()
    }
}

fn now_time() -> flotilla_state::objects::Time {
    status::time_of(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_named(name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = name.to_string();
        pod
    }

    #[test]
    fn hostnames_are_cut_to_valid_ones() {
        assert_eq!(hostname_of(&pod_named("web-0")), "web-0");
        let long = format!("{}-{}", "a".repeat(62), "b");
        assert_eq!(hostname_of(&pod_named(&long)), "a".repeat(62));
        assert_eq!(hostname_of(&pod_named("my.pod")), "my.pod");
    }

    #[test]
    fn host_ports_are_the_containers_host_ports() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "image": "i", "ports": [
                    {"containerPort": 8080, "hostPort": 18080},
                    {"containerPort": 9090},
                ]},
                {"name": "b", "image": "i", "ports": [
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
                ]},
            ]},
        }))
        .unwrap();
        let mapping = |host_port, container_port, protocol| PortMapping {
            host_port,
            container_port,
            protocol,
        };
        assert_eq!(
            host_ports(&pod),
            vec![
                mapping(18080, 8080, PortProtocol::Tcp),
                mapping(5353, 53, PortProtocol::Udp),
            ]
        );
        assert!(host_ports(&pod_named("p")).is_empty());
    }

    #[test]
    fn grace_comes_from_the_deletion_then_the_spec() {
        let mut pod = pod_named("p");
        assert_eq!(grace_of(&pod), Duration::from_secs(30));
        pod.spec.termination_grace_period_seconds = Some(5);
        assert_eq!(grace_of(&pod), Duration::from_secs(5));
        pod.metadata.deletion_grace_period_seconds = Some(1);
        assert_eq!(grace_of(&pod), Duration::from_secs(1));
    }
}
