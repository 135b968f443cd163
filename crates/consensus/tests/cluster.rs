//! A three-peer store over real gRPC on loopback: writes through leader and followers,
//! linearizable follower reads, leader loss, membership changes and snapshot catch-up.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_consensus::StoreError;
use support::{dump, get, put, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_peer_and_linearizable_follower_reads() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = cluster.follower().await;
    put(cluster.node(leader), "x", "from-leader").await;
    put(cluster.node(follower), "y", "from-follower").await;
    // Read-your-writes on every peer, without waiting: linearizable reads use the read index.
    for round in 0..20 {
        let value = format!("v{round}");
        put(cluster.node(leader), "x", &value).await;
        for id in cluster.running() {
            assert_eq!(
                get(cluster.node(id), "x", false).await,
                Some(value.clone()),
                "peer {id} round {round}"
            );
        }
    }
    for id in cluster.running() {
        assert_eq!(
            get(cluster.node(id), "y", false).await.as_deref(),
            Some("from-follower")
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader_and_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3).await;
    let mut acknowledged = BTreeSet::new();
    for i in 0..50 {
        let key = format!("ack/{i:03}");
        let any = cluster.running()[i % 3];
        put(cluster.node(any), &key, "v").await;
        acknowledged.insert(key);
    }
    let old_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.stop(old_leader).await;
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, old_leader);
    for i in 50..100 {
        let key = format!("ack/{i:03}");
        let any = cluster.running()[i % 2];
        put(cluster.node(any), &key, "v").await;
        acknowledged.insert(key);
    }
    cluster.restart(old_leader).await;
    // After healing, every acknowledged write is on every peer.
    let expected: BTreeSet<String> = acknowledged;
    for id in [1, 2, 3] {
        cluster.node(id).read_barrier().await.unwrap();
        let keys: BTreeSet<String> = dump(cluster.node(id), "ack/").await.into_keys().collect();
        assert_eq!(keys, expected, "peer {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_down_writes_fail_retryably() {
    let mut cluster =
        Cluster::start_with(3, |c| c.request_timeout = Duration::from_millis(1500)).await;
    let survivor = cluster.follower().await;
    for id in [1, 2, 3] {
        if id != survivor {
            cluster.stop(id).await;
        }
    }
    let result = cluster
        .node(survivor)
        .write(flotilla_consensus::WriteRequest::put("lost", "v"))
        .await;
    match result {
        Err(e) => assert!(e.is_retryable(), "{e:?} should be retryable"),
        Ok(r) => panic!("a minority must not commit: {r:?}"),
    }
    let read = cluster
        .node(survivor)
        .range(
            flotilla_consensus::RangeQuery::new(flotilla_consensus::KeyRange::key("lost")),
            false,
        )
        .await;
    assert!(matches!(read, Err(ref e) if e.is_retryable()), "{read:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_is_promoted_and_a_voter_is_removed_under_writes() {
    let mut cluster = Cluster::start(3).await;
    let addr = cluster.spawn_empty(4).await;
    let writer_node = cluster.node(1).clone();
    let writer = tokio::spawn(async move {
        let mut written = 0;
        for i in 0..150 {
            if writer_node
                .write(flotilla_consensus::WriteRequest::put(
                    format!("m/{i:03}"),
                    "v",
                ))
                .await
                .is_ok()
            {
                written += 1;
            }
        }
        written
    });
    let members = cluster.node(2).add_member(4, addr, true).await.unwrap();
    assert!(
        members.iter().any(|m| m.id == 4 && m.is_learner),
        "{members:?}"
    );
    let members = cluster.node(3).promote_member(4).await.unwrap();
    assert!(
        members.iter().any(|m| m.id == 4 && !m.is_learner),
        "{members:?}"
    );
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    // Neither the leader nor peer 1, through which the writer writes: a removed peer hears
    // from no leader any more, so writes through it time out (retryably), one by one.
    let removed = [2, 3].into_iter().find(|id| *id != leader).unwrap();
    let members = cluster.node(leader).remove_member(removed).await.unwrap();
    assert!(!members.iter().any(|m| m.id == removed), "{members:?}");
    let written = writer.await.unwrap();
    assert_eq!(
        written, 150,
        "writes kept succeeding through the membership changes"
    );
    cluster.stop(removed).await;
    put(cluster.node(4), "after", "v").await;
    for id in cluster.running() {
        cluster.node(id).read_barrier().await.unwrap();
        assert_eq!(dump(cluster.node(id), "m/").await.len(), 150, "peer {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_purged_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3).await;
    let lagging = cluster.follower().await;
    cluster.stop(lagging).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    for i in 0..600 {
        put(cluster.node(leader), &format!("s/{i:04}"), &format!("{i}")).await;
    }
    let status = cluster.node(leader).status().unwrap();
    assert!(status.purged_index > 100, "log was purged: {status:?}");
    cluster.restart(lagging).await;
    let target = cluster.node(leader).status().unwrap().applied_index;
    cluster
        .node(lagging)
        .raft()
        .wait(Some(Duration::from_secs(20)))
        .applied_index_at_least(Some(target), "caught up")
        .await
        .expect("lagging follower catches up");
    let caught_up = cluster.node(lagging).status().unwrap();
    assert!(
        caught_up.snapshot_index > 0,
        "caught up through a snapshot: {caught_up:?}"
    );
    assert_eq!(dump(cluster.node(lagging), "s/").await.len(), 600);
    assert_eq!(
        caught_up.revision,
        cluster.node(leader).status().unwrap().revision
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_of_an_unknown_peer_is_refused() {
    let cluster = Cluster::start(1).await;
    match cluster.node(1).promote_member(9).await {
        Err(StoreError::Membership(msg)) => assert!(msg.contains("not a member"), "{msg}"),
        other => panic!("expected refusal, got {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    use flotilla_consensus::types::{Compare, CompareOp, CompareTarget, PutOp, Txn, TxnOp};
    use flotilla_consensus::types::{WriteOutcome, WriteRequest};
    const WRITES: usize = 150;
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = cluster.follower().await;
    let node = cluster.node(follower).clone();
    let before = cluster.node(leader).status().unwrap();
    let mut tasks = Vec::new();
    for i in 0..WRITES {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            // Each creates its key only if absent: the answer says which write it was.
            let key = format!("f/{i}");
            let txn = Txn {
                compares: vec![Compare {
                    key: key.clone().into_bytes(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(0),
                }],
                success: vec![TxnOp::Put(PutOp {
                    key: key.clone().into_bytes(),
                    value: format!("v{i}").into_bytes(),
                    prev_kv: false,
                })],
                failure: vec![],
            };
            let request = WriteRequest::txn(txn).with_request_id(format!("follower-{i}"));
            (i, node.write(request).await.expect("write"))
        }));
    }
    let mut revisions = BTreeSet::new();
    for task in tasks {
        let (i, response) = task.await.unwrap();
        assert!(
            matches!(
                response.outcome,
                WriteOutcome::Txn {
                    succeeded: true,
                    ..
                }
            ),
            "write {i}: {response:?}"
        );
        assert!(revisions.insert(response.revision), "revision reused");
    }
    assert_eq!(revisions.len(), WRITES);
    assert_eq!(
        *revisions.first().unwrap(),
        before.revision + 1,
        "no gap before"
    );
    assert_eq!(
        *revisions.last().unwrap(),
        before.revision + WRITES as i64,
        "no gap after"
    );
    for i in [0, WRITES / 2, WRITES - 1] {
        assert_eq!(
            get(&node, &format!("f/{i}"), false).await,
            Some(format!("v{i}"))
        );
    }
    drop(node);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_see_the_write_acknowledged_before_them() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = cluster.follower().await;
    for round in 0..10 {
        let value = format!("v{round}");
        put(cluster.node(leader), "r", &value).await;
        // Many reads at once share leadership confirmations; each still sees the write that
        // was acknowledged before it began, on the leader and through a follower.
        let mut reads = Vec::new();
        for i in 0..40 {
            let node = cluster
                .node(if i % 2 == 0 { leader } else { follower })
                .clone();
            reads.push(tokio::spawn(async move { get(&node, "r", false).await }));
        }
        for read in reads {
            assert_eq!(read.await.unwrap(), Some(value.clone()), "round {round}");
        }
    }
    cluster.shutdown().await;
}
