//! The nemesis: carries out a fault schedule against a running cluster — start each fault at its
//! planned time, heal it at its planned end — and logs what it did, when, and to which hosts.
//! Also the end-of-run "heal everything" and the monitor that notices peers exiting on their own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kv::MemberRemoveRequest;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use crate::client;
use crate::clock::RunClock;
use crate::cluster::{Cluster, PeerExit};
use crate::error::ChaosError;
use crate::fault::{Fault, PartitionPlan, PlannedFault, Target};
use crate::host::HostState;
use crate::netfault::{self, Shape};
use crate::proxy::LinkDelay;

/// Free bytes left on a filled disk; the peer's own writes take the rest within a second or so.
pub const DISK_SLACK_BYTES: u64 = 64 * 1024;

/// A peer may notice its full disk this long after the disk was freed (a write in flight).
pub const DISK_FULL_EXIT_GRACE_MS: u64 = 5_000;

/// What a peer's log says when it stopped because its disk was full.
pub const DISK_FULL_MESSAGE: &str = "No space left on device";

/// How long a joining peer may take to become a voter, and a restarted one to see a leader.
pub const PEER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at removing a member (each with [`MEMBERSHIP_CALL_TIMEOUT`]).
pub const MEMBER_REMOVE_ATTEMPTS: u32 = 5;
const MEMBERSHIP_CALL_TIMEOUT: Duration = Duration::from_secs(10);

const MONITOR_INTERVAL: Duration = Duration::from_millis(250);

pub type SharedCluster = Arc<Mutex<Cluster>>;

/// One fault as it happened; times in ms since the workload started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub name: String,
    pub fault: Fault,
    pub planned_start_ms: u64,
    pub planned_end_ms: u64,
    pub started_ms: u64,
    pub healed_ms: u64,
    /// Hosts the fault hit.
    pub hosts: Vec<u16>,
    /// The partition as applied (host indices into the members of that moment).
    pub shape: Option<Shape>,
    pub members: Vec<u16>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

/// What must be undone at the end of a fault.
enum Active {
    Nothing,
    Killed(Vec<u16>),
    Paused(Vec<u16>),
    Rules(Vec<u16>),
    Bandwidth(Vec<u16>),
    Delayed(Vec<u16>),
    DiskFull(u16),
    Joined { new: u16, remove: Target },
    Clock(Vec<u16>),
}

/// Runs `schedule` (times relative to `clock`) and returns what happened.
pub async fn run_schedule(
    cluster: SharedCluster,
    schedule: &[PlannedFault],
    clock: RunClock,
) -> Vec<FaultRecord> {
    let mut records = Vec::with_capacity(schedule.len());
    for planned in schedule {
        tokio::time::sleep_until(clock.at_ms(planned.start_ms).into()).await;
        let mut record = FaultRecord {
            name: planned.fault.name().to_string(),
            fault: planned.fault,
            planned_start_ms: planned.start_ms,
            planned_end_ms: planned.end_ms,
            started_ms: clock.elapsed_ms(),
            healed_ms: 0,
            hosts: Vec::new(),
            shape: None,
            members: cluster.lock().await.members(),
            notes: Vec::new(),
            errors: Vec::new(),
        };
        tracing::info!(
            fault = record.name,
            at_ms = record.started_ms,
            "fault starts"
        );
        let active = match start(&cluster, planned.fault, &mut record).await {
            Ok(active) => active,
            Err(e) => {
                record.errors.push(format!("start: {e}"));
                Active::Nothing
            }
        };
        tokio::time::sleep_until(clock.at_ms(planned.end_ms).into()).await;
        if let Err(e) = heal(&cluster, active, &mut record, clock).await {
            record.errors.push(format!("heal: {e}"));
        }
        record.healed_ms = clock.elapsed_ms();
        tracing::info!(fault = record.name, at_ms = record.healed_ms, hosts = ?record.hosts, errors = ?record.errors, "fault healed");
        records.push(record);
    }
    records
}

async fn leader_host(cluster: &SharedCluster) -> Option<u16> {
    let addrs: Vec<SocketAddr> = cluster
        .lock()
        .await
        .endpoints()
        .snapshot()
        .iter()
        .map(|e| e.addr)
        .collect();
    client::find_leader(&addrs)
        .await
        .and_then(|id| u16::try_from(id).ok())
}

async fn resolve(cluster: &SharedCluster, target: Target) -> Vec<u16> {
    let leader = match target {
        Target::Leader => leader_host(cluster).await,
        Target::Random { .. } => None,
    };
    let members = cluster.lock().await.members();
    target.resolve(&members, leader)
}

/// Resolves `target` and notes the hosts in the record.
async fn hit(cluster: &SharedCluster, target: Target, record: &mut FaultRecord) -> Vec<u16> {
    let hosts = resolve(cluster, target).await;
    record.hosts = hosts.clone();
    hosts
}

async fn start(
    cluster: &SharedCluster,
    fault: Fault,
    record: &mut FaultRecord,
) -> Result<Active, ChaosError> {
    match fault {
        Fault::Kill { target } => {
            let hosts = hit(cluster, target, record).await;
            let mut c = cluster.lock().await;
            for &h in &hosts {
                c.kill(h).await?;
            }
            Ok(Active::Killed(hosts))
        }
        Fault::Pause { target } => {
            let hosts = hit(cluster, target, record).await;
            let mut c = cluster.lock().await;
            for &h in &hosts {
                c.host_mut(h)?.pause()?;
            }
            Ok(Active::Paused(hosts))
        }
        Fault::Partition { partition } => start_partition(cluster, partition, record).await,
        Fault::Bandwidth { target, rate_kbit } => {
            let hosts = hit(cluster, target, record).await;
            let c = cluster.lock().await;
            for &h in &hosts {
                c.host(h)?.limit_bandwidth(rate_kbit).await?;
            }
            Ok(Active::Bandwidth(hosts))
        }
        Fault::Delay {
            target,
            delay_ms,
            jitter_ms,
        } => {
            let hosts = hit(cluster, target, record).await;
            let c = cluster.lock().await;
            let proxy = c
                .proxy()
                .ok_or_else(|| ChaosError::Config("delay faults need the delay proxy".into()))?;
            for &h in &hosts {
                proxy.set_delay(
                    h,
                    Some(LinkDelay {
                        delay_ms,
                        jitter_ms,
                    }),
                );
            }
            Ok(Active::Delayed(hosts))
        }
        Fault::DiskFull { target } => start_disk_full(cluster, target, record).await,
        Fault::Membership { remove } => start_membership(cluster, remove, record).await,
        Fault::RollingRestart => {
            rolling_restart(cluster, record).await?;
            Ok(Active::Nothing)
        }
        Fault::AgentLoss { pick } => start_agent_loss(cluster, pick, record).await,
        Fault::ClockSkew { target, offset_s } => {
            let hosts = hit(cluster, target, record).await;
            let c = cluster.lock().await;
            for &h in &hosts {
                c.host(h)?.set_clock(&format!("{offset_s:+}"))?;
            }
            Ok(Active::Clock(hosts))
        }
    }
}

/// kill -9 of one agent process only: its shims and containers stay (they are separate
/// processes), so the node keeps running pods until its lease lapses.
async fn start_agent_loss(
    cluster: &SharedCluster,
    pick: u64,
    record: &mut FaultRecord,
) -> Result<Active, ChaosError> {
    let mut c = cluster.lock().await;
    let agents = c.agents();
    let Some(&h) = agents.get((pick % agents.len().max(1) as u64) as usize) else {
        return Err(ChaosError::Config(
            "agent-loss needs agents (--agents)".into(),
        ));
    };
    record.hosts = vec![h];
    c.kill(h).await?;
    Ok(Active::Killed(vec![h]))
}

/// Fits the partition to the members of this moment and installs each member's rules.
async fn start_partition(
    cluster: &SharedCluster,
    partition: PartitionPlan,
    record: &mut FaultRecord,
) -> Result<Active, ChaosError> {
    let leader = leader_host(cluster).await;
    let c = cluster.lock().await;
    let members = c.members();
    let shape = partition.resolve(&members, leader);
    let ips: Vec<_> = members
        .iter()
        .map(|&m| c.host(m).map(|h| h.ip))
        .collect::<Result<_, _>>()?;
    let rules = netfault::rules(&shape, &ips)?;
    record.shape = Some(shape);
    record.hosts = members.clone();
    for (&m, host_rules) in members.iter().zip(&rules) {
        c.host(m)?.set_rules(host_rules).await?;
    }
    Ok(Active::Rules(members))
}

async fn start_disk_full(
    cluster: &SharedCluster,
    target: Target,
    record: &mut FaultRecord,
) -> Result<Active, ChaosError> {
    let Some(&h) = hit(cluster, target, record).await.first() else {
        return Ok(Active::Nothing);
    };
    let c = cluster.lock().await;
    let ballast_bytes = c.host(h)?.fill_disk(DISK_SLACK_BYTES).await?;
    record
        .notes
        .push(format!("host {h}: ballast of {ballast_bytes} bytes"));
    Ok(Active::DiskFull(h))
}

async fn heal(
    cluster: &SharedCluster,
    active: Active,
    record: &mut FaultRecord,
    clock: RunClock,
) -> Result<(), ChaosError> {
    let mut c = cluster.lock().await;
    match active {
        Active::Nothing => {}
        Active::Killed(hosts) => {
            for h in hosts {
                c.start(h)?;
            }
        }
        Active::Paused(hosts) => {
            for h in hosts {
                c.host_mut(h)?.resume()?;
            }
        }
        Active::Rules(hosts) => {
            for h in hosts {
                c.host(h)?.flush_rules().await?;
            }
        }
        Active::Bandwidth(hosts) => {
            for h in hosts {
                c.host(h)?.unlimit_bandwidth().await?;
            }
        }
        Active::Delayed(hosts) => {
            if let Some(proxy) = c.proxy() {
                for h in hosts {
                    proxy.set_delay(h, None);
                }
            }
        }
        Active::DiskFull(h) => heal_disk(&mut c, h, record, clock)?,
        Active::Joined { new, remove } => {
            drop(c);
            finish_membership(cluster, new, remove, record).await?;
        }
        Active::Clock(hosts) => {
            for h in hosts {
                c.host(h)?.set_clock("+0")?;
            }
        }
    }
    Ok(())
}

/// Frees the disk and restarts the peer if it stopped on it.
fn heal_disk(
    c: &mut Cluster,
    h: u16,
    record: &mut FaultRecord,
    clock: RunClock,
) -> Result<(), ChaosError> {
    c.host(h)?.free_disk()?;
    c.poll_exits(clock.elapsed_ms());
    let host = c.host(h)?;
    if host.is_serving() {
        record
            .notes
            .push(format!("host {h} kept running on a full disk"));
        return Ok(());
    }
    record.notes.push(format!(
        "host {h} was {:?} when the disk was freed; restarted",
        host.state
    ));
    c.start(h)
}

async fn start_membership(
    cluster: &SharedCluster,
    remove: Target,
    record: &mut FaultRecord,
) -> Result<Active, ChaosError> {
    let started = Instant::now();
    let mut c = cluster.lock().await;
    let via = c
        .endpoints()
        .snapshot()
        .first()
        .copied()
        .ok_or_else(|| ChaosError::Config("no serving peer to join through".into()))?;
    let new = c.add_joining_host(via.addr).await?;
    drop(c);
    record.hosts = vec![new];
    match wait_voter(via.addr, new).await {
        Ok(()) => record.notes.push(format!(
            "host {new} joined through peer {} and is a voter after {} ms",
            via.peer,
            started.elapsed().as_millis()
        )),
        Err(e) => record
            .errors
            .push(format!("host {new} did not become a voter: {e}")),
    }
    Ok(Active::Joined { new, remove })
}

async fn wait_voter(via: SocketAddr, new: u16) -> Result<(), ChaosError> {
    let deadline = Instant::now() + PEER_READY_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match client::member_list(via).await {
            Ok(list)
                if list
                    .members
                    .iter()
                    .any(|m| m.id == u64::from(new) && !m.is_learner) =>
            {
                return Ok(())
            }
            Ok(list) => {
                last = format!(
                    "members {:?}",
                    list.members
                        .iter()
                        .map(|m| (m.id, m.is_learner))
                        .collect::<Vec<_>>()
                )
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(client::POLL_INTERVAL).await;
    }
    Err(ChaosError::NotReady {
        what: format!("peer {new} as a voter"),
        waited_ms: PEER_READY_TIMEOUT.as_millis() as u64,
        last,
    })
}

/// Removes one member other than the one that just joined, then stops it for good.
async fn finish_membership(
    cluster: &SharedCluster,
    new: u16,
    remove: Target,
    record: &mut FaultRecord,
) -> Result<(), ChaosError> {
    let leader = leader_host(cluster).await;
    let (victim, via) = {
        let c = cluster.lock().await;
        let candidates: Vec<u16> = c.members().into_iter().filter(|&m| m != new).collect();
        let victim = remove.resolve(&candidates, leader).first().copied();
        let via = c
            .endpoints()
            .snapshot()
            .into_iter()
            .find(|e| Some(e.peer) != victim.map(u64::from));
        (victim, via)
    };
    let (Some(victim), Some(via)) = (victim, via) else {
        return Err(ChaosError::Config(
            "no member to remove, or none to ask".into(),
        ));
    };
    let mut last = String::new();
    for attempt in 1..=MEMBER_REMOVE_ATTEMPTS {
        let mut admin = client::cluster(via.addr)?;
        let call = admin.member_remove(MemberRemoveRequest {
            id: u64::from(victim),
        });
        match client::with_deadline("member remove", MEMBERSHIP_CALL_TIMEOUT, call).await {
            Ok(_) => {
                record.notes.push(format!(
                    "removed host {victim} through peer {} (attempt {attempt}); stopped it",
                    via.peer
                ));
                record.hosts.push(victim);
                cluster.lock().await.retire(victim).await?;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ChaosError::NotReady {
        what: format!("removal of peer {victim}"),
        waited_ms: 0,
        last,
    })
}

async fn rolling_restart(
    cluster: &SharedCluster,
    record: &mut FaultRecord,
) -> Result<(), ChaosError> {
    let members = cluster.lock().await.members();
    record.hosts = members.clone();
    for h in members {
        let begun = Instant::now();
        cluster.lock().await.stop(h).await?;
        let addr = {
            let mut c = cluster.lock().await;
            c.start(h)?;
            c.host(h)?.addr
        };
        match client::wait_for_leader(&[addr], PEER_READY_TIMEOUT).await {
            Ok(leader) => record.notes.push(format!(
                "host {h} back after {} ms, sees leader {leader}",
                begun.elapsed().as_millis()
            )),
            Err(e) => record.errors.push(format!("host {h}: {e}")),
        }
    }
    Ok(())
}

/// Undoes every fault that could be in place and starts every member and agent that is not
/// running.
/// Returns what it had to do.
pub async fn heal_all(cluster: &SharedCluster, clock: RunClock) -> Vec<String> {
    let mut notes = Vec::new();
    let mut c = cluster.lock().await;
    c.poll_exits(clock.elapsed_ms());
    if let Some(proxy) = c.proxy() {
        proxy.clear_delays();
    }
    for h in c.members().into_iter().chain(c.agents()) {
        let outcome = heal_host(&mut c, h).await;
        if let Err(e) = outcome {
            notes.push(format!("host {h}: {e}"));
        }
        if let Ok(host) = c.host(h) {
            if !host.is_serving() {
                notes.push(format!("host {h} was {:?}; restarted", host.state));
                if let Err(e) = c.start(h) {
                    notes.push(format!("restarting host {h}: {e}"));
                }
            }
        }
    }
    notes
}

async fn heal_host(c: &mut Cluster, h: u16) -> Result<(), ChaosError> {
    let host = c.host_mut(h)?;
    host.resume()?;
    host.flush_rules().await?;
    host.unlimit_bandwidth().await?;
    if host.state != HostState::Retired {
        // Without libfaketime or a tmpfs these have nothing to undo.
        let _ = host.set_clock("+0");
        let _ = host.free_disk();
    }
    Ok(())
}

/// Records peer exits (in the cluster, see [`Cluster::poll_exits`]) until `stop` turns true.
pub async fn monitor_exits(
    cluster: SharedCluster,
    clock: RunClock,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        cluster.lock().await.poll_exits(clock.elapsed_ms());
        tokio::select! {
            _ = tokio::time::sleep(MONITOR_INTERVAL) => {}
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
}

/// Marks the exits that a disk-full fault explains: on a host whose disk was filled, from the
/// fault's start until shortly after it was healed, with the peer's log naming the full disk.
pub fn classify_exits(exits: &mut [PeerExit], faults: &[FaultRecord]) {
    for exit in exits {
        let during_disk_full = faults.iter().any(|f| {
            matches!(f.fault, Fault::DiskFull { .. })
                && f.hosts.contains(&exit.host)
                && (f.started_ms..=f.healed_ms + DISK_FULL_EXIT_GRACE_MS).contains(&exit.at_ms)
        });
        exit.expected = during_disk_full && exit.log_tail.contains(DISK_FULL_MESSAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fault: Fault, hosts: Vec<u16>, started_ms: u64, healed_ms: u64) -> FaultRecord {
        FaultRecord {
            name: fault.name().into(),
            fault,
            planned_start_ms: started_ms,
            planned_end_ms: healed_ms,
            started_ms,
            healed_ms,
            hosts,
            shape: None,
            members: vec![1, 2, 3],
            notes: vec![],
            errors: vec![],
        }
    }

    #[test]
    fn only_exits_during_a_full_disk_on_that_host_are_expected() {
        let target = Target::Leader;
        let faults = [
            record(Fault::DiskFull { target }, vec![2], 1_000, 5_000),
            record(Fault::Kill { target }, vec![3], 6_000, 8_000),
        ];
        let exit = |host, at_ms, log: &str| PeerExit {
            host,
            at_ms,
            status: "exit 1".into(),
            log_tail: log.into(),
            expected: false,
        };
        let full = "rocksdb: IO error: No space left on device";
        let mut exits = vec![
            exit(2, 3_000, full),
            exit(2, 6_000, full),
            exit(2, 3_000, "panicked at consensus/src/log_store.rs"),
            exit(1, 3_000, full),
            exit(2, 11_000, full),
            exit(3, 7_000, ""),
        ];
        classify_exits(&mut exits, &faults);
        let expected: Vec<bool> = exits.iter().map(|e| e.expected).collect();
        assert_eq!(expected, [true, true, false, false, false, false]);
    }
}
