//! No acknowledged write is lost when a peer process is SIGKILLed mid-writes and restarted —
//! alone (nothing else holds the data) and as the leader of three.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::kv::{PutRequest, RangeRequest};
use flotilla_e2e::{kv, wait_for_leader, ProcessCluster};

type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writes unique keys through `addrs` (round robin) until `stop`, recording what was
/// acknowledged. Bounded: at most `max_writes` writes.
async fn writer(
    worker: usize,
    addrs: Vec<String>,
    acked: Acked,
    stop: Arc<tokio::sync::Notify>,
    max_writes: usize,
) {
    let stopped = stop.notified();
    tokio::pin!(stopped);
    for seq in 0..max_writes {
        let key = format!("w{worker}/{seq:06}");
        let value = format!("value-{worker}-{seq}");
        let addr = &addrs[seq % addrs.len()];
        let request = PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            request_id: format!("writer-{worker}-{seq}"),
            prev_kv: false,
        };
        let mut client = kv(addr);
        tokio::select! {
            result = client.put(request) => {
                if result.is_ok() {
                    acked.lock().unwrap().insert(key, value);
                }
            }
            _ = &mut stopped => return,
        }
    }
}

async fn read_all(addr: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let response = kv(addr)
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            ..Default::default()
        })
        .await
        .expect("linearizable range")
        .into_inner();
    assert!(!response.more, "test data fits one page");
    response
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

fn assert_contains(found: &BTreeMap<String, String>, acked: &BTreeMap<String, String>, who: &str) {
    let lost: Vec<&String> = acked
        .keys()
        .filter(|k| found.get(*k) != acked.get(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "{who} lost {} acknowledged writes, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

async fn run_writers(
    addrs: Vec<String>,
    acked: &Acked,
    workers: usize,
) -> (Arc<tokio::sync::Notify>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(tokio::sync::Notify::new());
    let handles = (0..workers)
        .map(|w| tokio::spawn(writer(w, addrs.clone(), acked.clone(), stop.clone(), 5_000)))
        .collect();
    (stop, handles)
}

async fn wait_acked(acked: &Acked, at_least: usize) {
    for _ in 0..600 {
        if acked.lock().unwrap().len() >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("writers did not reach {at_least} acknowledged writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_lone_peer_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(1).await;
    let addr = cluster.peer(1).addr.clone();
    let acked: Acked = Default::default();
    let (stop, handles) = run_writers(vec![addr.clone()], &acked, 8).await;
    wait_acked(&acked, 300).await;
    cluster.peer(1).kill9();
    stop.notify_waiters();
    for h in handles {
        h.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    cluster.peer(1).restart();
    wait_for_leader(&addr, Duration::from_secs(30)).await;
    let found = read_all(&addr, "w").await;
    assert_contains(&found, &acked, "the restarted peer");
    // A server peer runs on mimalloc (the other modes keep the system allocator).
    let log = std::fs::read_to_string(cluster.peer(1).data_dir.join("peer.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("starting a server peer") && l.contains("\"mimalloc\"")),
        "the peer's log names its allocator: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3).await;
    let addrs: Vec<String> = cluster.peers.iter().map(|p| p.addr.clone()).collect();
    let acked: Acked = Default::default();
    let (stop, handles) = run_writers(addrs.clone(), &acked, 8).await;
    wait_acked(&acked, 300).await;
    let leader = cluster.leader().await;
    cluster.peer(leader).kill9();
    let before_kill = acked.lock().unwrap().len();
    wait_acked(&acked, before_kill + 300).await;
    cluster.peer(leader).restart();
    wait_acked(&acked, before_kill + 500).await;
    stop.notify_waiters();
    for h in handles {
        h.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    for addr in &addrs {
        wait_for_leader(addr, Duration::from_secs(30)).await;
        let found = read_all(addr, "w").await;
        assert_contains(&found, &acked, addr);
    }
}
