//! Leader fencing end to end (design decision 4): three `flotilla server` peers, each in a network
//! namespace of its own on a bridge (chaos hosts, 198.18.0.0/15), and hollow nodes. Mid-way
//! through a rolling update the leader's network is cut entirely. A user sees a new leader, the
//! old leader's loops stop (its log says so while it is still cut off), and after the cut heals
//! the rollout finishes with exactly the desired pods of the new template, never more than
//! replicas + maxSurge at once.
//!
//! Every write of a leader loop also puts the leader stamp (`/flotilla/leader`: peer and fence
//! term) in the same Raft entry, so replaying the committed history from revision 1 says which
//! term each applied leader write carried: none of the old term may follow the successor's first.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_api::cluster::{ApplyRequest, GetRequest, ListRequest, ObjectRef};
use flotilla_api::kv::RangeRequest;
use flotilla_chaos::checker::watch::EventKind;
use flotilla_chaos::client;
use flotilla_chaos::cluster::{self, Cluster, ClusterOptions};
use flotilla_chaos::host::HostOptions;
use flotilla_chaos::netfault::Rule;
use flotilla_chaos::workload::committed::{compare_replays, replay, CommittedEntry};
use flotilla_e2e::user::eventually_async as eventually;
use flotilla_e2e::{flotilla_bin, free_port};
use flotilla_server::leader::stamp::{LeaderStamp, LEADER_KEY};
use serde_json::Value;

const PEERS: u16 = 3;
const HOLLOW_NODES: usize = 6;
const REPLICAS: usize = 60;
const MAX_SURGE: usize = 2;
/// The leader is cut off once this many pods of the new template are up.
const CUT_AFTER_NEW_PODS: usize = 10;
const OLD_IMAGE: &str = "busybox:v1";
const NEW_IMAGE: &str = "busybox:v2";
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const REPLAY_TIMEOUT: Duration = Duration::from_secs(20);
const POD_PREFIX: &str = "/registry/pods/default/";
const REPLICASET_PREFIX: &str = "/registry/replicasets/default/";

/// A process that is killed when the test lets go of it, pass or fail.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of each log shown when the test fails.
const LOG_TAIL_LINES: usize = 60;

/// Prints the tail of each log (without replication chatter) if the test fails, before the run directory is removed.
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // Replication warnings (timeouts to a cut-off peer) drown the rest.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.contains("openraft::replication") && !l.contains("replication_handler")
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- {}\n{}", path.display(), tail.join("\n"));
        }
    }
}

/// `HOLLOW_NODES` hollow nodes in the root namespace, dialing every peer over the bridge.
fn start_hollow(peers: &[SocketAddr], dir: &Path) -> Guarded {
    let servers: Vec<String> = peers.iter().map(SocketAddr::to_string).collect();
    let log = std::fs::File::create(dir.join("hollow.log")).unwrap();
    let child = Command::new(flotilla_bin())
        .args(["agent", "--name", "hollow", "--hollow"])
        .arg(HOLLOW_NODES.to_string())
        .arg("--servers")
        .arg(servers.join(","))
        .arg("--data-dir")
        .arg(dir.join("hollow"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn the hollow agent");
    Guarded(child)
}

async fn start_cluster(run_dir: PathBuf) -> Cluster {
    let slot = cluster::claim_slot().await.expect("a free network slot");
    let options = ClusterOptions {
        slot,
        run_dir,
        peers: PEERS,
        agents: 0,
        host: HostOptions {
            flotilla: flotilla_bin(),
            tmpfs_bytes: None,
            faketime_lib: None,
        },
        delay_proxy: false,
    };
    Cluster::create(options).await.expect("the cluster starts")
}

/// The leader as the peers at `ask` see it, if it is one of `among`, with the term it leads in
/// (from the leader itself). `all` holds every peer's address, by id.
async fn leader_and_term(
    all: &[SocketAddr],
    ask: &[SocketAddr],
    among: &[u64],
) -> Option<(u64, u64)> {
    let leader = client::find_leader(ask).await?;
    let at = *all.get(usize::try_from(leader).ok()?.checked_sub(1)?)?;
    let status = client::status(at).await.ok()?;
    let term = status.header?.raft_term;
    (status.leader_id == leader && among.contains(&leader)).then_some((leader, term))
}

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: {MAX_SURGE}, maxUnavailable: 0}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: '{image}', resources: {{requests: {{cpu: 10m}}}}}}]}}\n"
    )
}

async fn apply(addr: SocketAddr, yaml: &str) -> Option<()> {
    let request = ApplyRequest {
        manifests: yaml.as_bytes().to_vec(),
        default_namespace: "default".into(),
        dry_run: false,
    };
    let mut api = client::cluster_api(addr).ok()?;
    let applied = client::with_deadline("apply", CALL_TIMEOUT, api.apply(request)).await;
    applied.ok().map(|_| ())
}

async fn list(addr: SocketAddr, kind: &str) -> Option<Vec<Value>> {
    let request = ListRequest {
        kind: kind.into(),
        namespace: "default".into(),
        ..Default::default()
    };
    let mut api = client::cluster_api(addr).ok()?;
    let page = client::with_deadline("list", CALL_TIMEOUT, api.list(request))
        .await
        .ok()?;
    let items = page.items.iter();
    Some(
        items
            .filter_map(|i| serde_json::from_slice(i).ok())
            .collect(),
    )
}

/// Not being deleted and not finished: what counts towards replicas.
fn is_active(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn image(pod: &Value) -> &str {
    pod.pointer("/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Active pods running `image`.
async fn running_pods(addr: SocketAddr, image_name: &str) -> Option<usize> {
    let pods = list(addr, "Pod").await?;
    let running = pods
        .iter()
        .filter(|p| is_active(p) && image(p) == image_name && p["status"]["phase"] == "Running");
    Some(running.count())
}

/// The rollout to `image_name` is complete: exactly `REPLICAS` active pods, all of it, all
/// Running, and the Deployment says so.
async fn rollout_done(addr: SocketAddr, image_name: &str) -> Option<()> {
    let pods = list(addr, "Pod").await?;
    let active: Vec<&Value> = pods.iter().filter(|p| is_active(p)).collect();
    let all_new = active
        .iter()
        .all(|p| image(p) == image_name && p["status"]["phase"] == "Running");
    let request = GetRequest {
        r#ref: Some(ObjectRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
        }),
        stale: false,
    };
    let mut api = client::cluster_api(addr).ok()?;
    let got = client::with_deadline("get", CALL_TIMEOUT, api.get(request))
        .await
        .ok()?;
    let deployment: Value = serde_json::from_slice(&got.object).ok()?;
    let status = &deployment["status"];
    let counted = [
        "replicas",
        "updatedReplicas",
        "availableReplicas",
        "readyReplicas",
    ]
    .iter()
    .all(|field| status[field] == REPLICAS);
    (active.len() == REPLICAS && all_new && counted).then_some(())
}

/// The leader stamp as `addr` reads it (linearizably).
async fn stamp_at(addr: SocketAddr) -> Option<LeaderStamp> {
    let request = RangeRequest {
        key: LEADER_KEY.to_vec(),
        ..Default::default()
    };
    let mut kv = client::kv(addr).ok()?;
    let found = client::with_deadline("range", CALL_TIMEOUT, kv.range(request))
        .await
        .ok()?;
    serde_json::from_slice(&found.kvs.first()?.value).ok()
}

async fn current_revision(addr: SocketAddr) -> Option<i64> {
    let request = RangeRequest {
        key: b"/".to_vec(),
        range_end: b"0".to_vec(),
        count_only: true,
        ..Default::default()
    };
    let mut kv = client::kv(addr).ok()?;
    let found = client::with_deadline("range", CALL_TIMEOUT, kv.range(request))
        .await
        .ok()?;
    Some(found.header?.revision)
}

/// The peer's log says its leader loops of `term` stopped.
fn loops_stopped(log: &Path, term: u64) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().any(|line| {
        line.contains("leadership lost: stopping leader loops")
            && line.contains(&format!("term={term}"))
    })
}

/// What a replay of the committed history shows.
#[derive(Debug)]
struct Replayed {
    /// The leader stamp of every revision that has one, in revision order.
    stamps: Vec<(i64, LeaderStamp)>,
    /// The most active pods at any revision: the first such revision and the count per owner.
    peak: Option<Peak>,
    /// The largest sum of the ReplicaSets' `spec.replicas` at any revision.
    max_replicaset_sum: i64,
}

#[derive(Debug)]
struct Peak {
    revision: i64,
    active_pods: usize,
    by_owner: BTreeMap<String, usize>,
}

/// The owner (ReplicaSet) of a pod that counts towards replicas, if it counts.
fn active_owner(entry: &CommittedEntry) -> Option<String> {
    let pod: Value = serde_json::from_slice(&entry.value).ok()?;
    let owner = pod.pointer("/metadata/ownerReferences/0/name")?.as_str()?;
    (entry.kind == EventKind::Put && is_active(&pod)).then(|| owner.to_string())
}

/// The desired replicas of a ReplicaSet as written (0 once deleted).
fn replicaset_size(entry: &CommittedEntry) -> i64 {
    let rs: Option<Value> = serde_json::from_slice(&entry.value).ok();
    let size = rs.and_then(|rs| rs.pointer("/spec/replicas")?.as_i64());
    size.filter(|_| entry.kind == EventKind::Put).unwrap_or(0)
}

/// Replays `entries` (in revision order): leader stamps, active pods and ReplicaSet sizes.
fn replayed(entries: &[CommittedEntry]) -> Replayed {
    let leader_key = String::from_utf8_lossy(LEADER_KEY);
    let mut stamps = Vec::new();
    let mut active: HashMap<&str, String> = HashMap::new();
    let mut sizes: HashMap<&str, i64> = HashMap::new();
    let (mut peak, mut max_replicaset_sum) = (None::<Peak>, 0);
    for (i, entry) in entries.iter().enumerate() {
        if entry.key == leader_key && entry.kind == EventKind::Put {
            let stamp = serde_json::from_slice(&entry.value).expect("a leader stamp");
            stamps.push((entry.revision, stamp));
        } else if entry.key.starts_with(REPLICASET_PREFIX) {
            sizes.insert(&entry.key, replicaset_size(entry));
        } else if entry.key.starts_with(POD_PREFIX) {
            match active_owner(entry) {
                Some(owner) => active.insert(&entry.key, owner),
                None => active.remove(entry.key.as_str()),
            };
        }
        let revision_done = entries
            .get(i + 1)
            .is_none_or(|n| n.revision != entry.revision);
        if !revision_done {
            continue;
        }
        max_replicaset_sum = max_replicaset_sum.max(sizes.values().sum());
        if peak.as_ref().is_none_or(|p| active.len() > p.active_pods) {
            peak = Some(Peak::of(entry.revision, &active));
        }
    }
    Replayed {
        stamps,
        peak,
        max_replicaset_sum,
    }
}

impl Peak {
    fn of(revision: i64, active: &HashMap<&str, String>) -> Peak {
        let mut by_owner = BTreeMap::new();
        for owner in active.values() {
            *by_owner.entry(owner.clone()).or_default() += 1;
        }
        Peak {
            revision,
            active_pods: active.len(),
            by_owner,
        }
    }
}

/// Checks the fencing promise on the stamps of a replay: `old` (the cut-off leader's stamp)
/// wrote, a successor of a later term wrote, and no write of `old`'s term — nor of any earlier
/// term — landed after the successor's first. Returns the successor's first write.
fn check_fenced(
    stamps: &[(i64, LeaderStamp)],
    old: LeaderStamp,
) -> Result<(i64, LeaderStamp), String> {
    let old_last = stamps
        .iter()
        .filter(|(_, s)| *s == old)
        .map(|(revision, _)| *revision)
        .max()
        .ok_or_else(|| format!("the old leader {old:?} never wrote"))?;
    let successor = *stamps
        .iter()
        .find(|(_, s)| s.term > old.term)
        .ok_or_else(|| format!("no leader wrote after term {}", old.term))?;
    if successor.1.peer == old.peer {
        return Err(format!("the old leader itself led next: {successor:?}"));
    }
    if old_last > successor.0 {
        return Err(format!(
            "a write of {old:?} landed at revision {old_last}, after the successor's first at {successor:?}"
        ));
    }
    match stamps.windows(2).find(|w| w[1].1.term < w[0].1.term) {
        Some(w) => Err(format!("a write of an older term followed a newer: {w:?}")),
        None => Ok(successor),
    }
}

#[test]
fn the_fencing_check_rejects_a_late_write_of_the_old_term() {
    let old = LeaderStamp { peer: 1, term: 3 };
    let new = LeaderStamp { peer: 2, term: 4 };
    let check = |stamps: &[(i64, LeaderStamp)]| check_fenced(stamps, old);
    assert_eq!(
        check(&[(5, old), (9, old), (12, new), (13, new)]),
        Ok((12, new))
    );
    for bad in [
        vec![(5, old), (12, new), (13, old)],
        vec![(12, new)],
        vec![(5, old), (9, old)],
        vec![(5, old), (12, LeaderStamp { peer: 1, term: 4 })],
        vec![(5, old), (12, new), (13, LeaderStamp { peer: 3, term: 2 })],
    ] {
        assert!(check(&bad).is_err(), "accepted {bad:?}");
    }
}

/// The first answer of `call` from any of `addrs`, tried in order.
async fn on_any<T, F, Fut>(addrs: &[SocketAddr], call: F) -> Option<T>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for &addr in addrs {
        if let Some(answer) = call(addr).await {
            return Some(answer);
        }
    }
    None
}

/// Applies `yaml` through any of `addrs`, retrying through elections (applying is idempotent).
async fn apply_until_accepted(addrs: &[SocketAddr], yaml: &str) {
    eventually(Duration::from_secs(30), "apply", || {
        on_any(addrs, |addr| apply(addr, yaml))
    })
    .await;
}

/// Waits until the rollout to `image_name` is complete as any of `addrs` sees it.
async fn await_rollout(addrs: &[SocketAddr], image_name: &str, timeout: Duration) {
    eventually(timeout, &format!("the rollout to {image_name}"), || {
        on_any(addrs, |addr| rollout_done(addr, image_name))
    })
    .await;
}

/// Cuts every packet to and from the leader once the rollout to `NEW_IMAGE` is under way;
/// returns the leader's stamp (its id and the term it led in when cut off).
async fn cut_leader_mid_rollout(cluster: &Cluster, addrs: &[SocketAddr]) -> LeaderStamp {
    let peers: Vec<u64> = (1..=u64::from(PEERS)).collect();
    let up = eventually(Duration::from_secs(30), "the rollout under way", || {
        on_any(addrs, |addr| async move {
            let up = running_pods(addr, NEW_IMAGE).await?;
            (up >= CUT_AFTER_NEW_PODS).then_some(up)
        })
    })
    .await;
    assert!(up < REPLICAS, "the rollout finished before the cut");
    let (peer, term) = eventually(Duration::from_secs(10), "the leader", || {
        leader_and_term(addrs, addrs, &peers)
    })
    .await;
    let drop_all = Rule::DropAny {
        loss_permille: 1000,
    };
    let host = cluster.host(peer as u16).unwrap();
    host.set_rules(&[drop_all])
        .await
        .expect("cutting the leader off");
    LeaderStamp { peer, term }
}

/// Replays the committed history up to the current revision on every peer, checks that all
/// peers applied the same, and returns it.
async fn replay_everywhere(addrs: &[SocketAddr]) -> Vec<CommittedEntry> {
    let fence = eventually(Duration::from_secs(10), "the current revision", || {
        on_any(addrs, current_revision)
    })
    .await;
    let what = format!("every peer applied revision {fence}");
    eventually(Duration::from_secs(60), &what, || async {
        for &addr in addrs {
            let applied = client::status(addr).await.ok()?.header?.revision;
            (applied >= fence).then_some(())?;
        }
        Some(())
    })
    .await;
    let mut replays = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let entries = replay(addr, "/", fence, REPLAY_TIMEOUT)
            .await
            .expect("a replay");
        replays.push((i as u16 + 1, entries));
    }
    assert_eq!(compare_replays(&replays), None, "peers disagree on history");
    replays.swap_remove(0).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_stops_and_none_of_its_writes_land_after_its_successors_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path().join("run")).await;
    let addrs: Vec<SocketAddr> = cluster.hosts().iter().map(|h| h.addr).collect();
    let mut logs: Vec<PathBuf> = cluster.hosts().iter().map(|h| h.log_path()).collect();
    logs.push(dir.path().join("hollow.log"));
    let _logs = LogsOnFailure(logs);
    let _hollow = start_hollow(&addrs, dir.path());
    eventually(Duration::from_secs(30), "hollow nodes registered", || {
        on_any(&addrs, |addr| async move {
            (list(addr, "Node").await?.len() == HOLLOW_NODES).then_some(())
        })
    })
    .await;
    apply_until_accepted(&addrs, &deployment(OLD_IMAGE)).await;
    await_rollout(&addrs, OLD_IMAGE, Duration::from_secs(60)).await;
    let stamp = on_any(&addrs, stamp_at).await;
    assert!(
        stamp.is_some(),
        "no leader stamp: is {} built from this tree?",
        flotilla_bin().display()
    );

    // Roll to the new image and cut the leader off mid-way. A new leader is elected, the old
    // one's loops stop while it is still cut off, and a successor writes in a later term.
    apply_until_accepted(&addrs, &deployment(NEW_IMAGE)).await;
    let old = cut_leader_mid_rollout(&cluster, &addrs).await;
    let old_host = cluster.host(old.peer as u16).unwrap();
    let others: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| *a != old_host.addr)
        .collect();
    let successors: Vec<u64> = (1..=u64::from(PEERS)).filter(|p| *p != old.peer).collect();
    let (_, new_term) = eventually(Duration::from_secs(30), "a new leader", || {
        leader_and_term(&addrs, &others, &successors)
    })
    .await;
    assert!(new_term > old.term, "term {new_term} after {}", old.term);
    let old_log = old_host.log_path();
    eventually(
        Duration::from_secs(15),
        "the old leader's loops stop",
        || async { loops_stopped(&old_log, old.term).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(60), "a successor writes", || {
        on_any(&others, |addr| async move {
            (stamp_at(addr).await?.term > old.term).then_some(())
        })
    })
    .await;

    // Heal: the rollout completes with exactly the desired pods of the new template.
    old_host.flush_rules().await.expect("healing");
    await_rollout(&addrs, NEW_IMAGE, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    await_rollout(&addrs, NEW_IMAGE, Duration::from_secs(10)).await;

    // Every peer, the old leader included, applied the same history, and it keeps the promise.
    let history = replayed(&replay_everywhere(&addrs).await);
    let successor = check_fenced(&history.stamps, old).unwrap_or_else(|e| panic!("{e}"));
    // maxSurge bounds the ReplicaSets' sizes, as in Kubernetes. Active pods may briefly exceed
    // it when a scaled-down ReplicaSet's deletions land after its successor's creations; the
    // peak is printed so that a run shows by how much.
    let peak = history.peak.expect("pods in the history");
    eprintln!(
        "most active pods at once: {} at revision {} (by ReplicaSet {:?}); successor's first \
         write {successor:?}",
        peak.active_pods, peak.revision, peak.by_owner
    );
    let bound = (REPLICAS + MAX_SURGE) as i64;
    assert!(
        history.max_replicaset_sum <= bound,
        "the ReplicaSets wanted {} pods at once; cut-off leader {old:?}",
        history.max_replicaset_sum
    );
    let report = cluster.teardown().await;
    assert!(report.errors.is_empty(), "teardown: {:?}", report.errors);
}
