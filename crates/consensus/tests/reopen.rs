//! Durability across restarts: a peer closed and reopened on the same data directory keeps its
//! log, vote, applied state and revisions, and answers the same reads.

mod support;

use std::time::Duration;

use flotilla_consensus::types::WriteOp;
use flotilla_consensus::{KeyRange, RangeQuery, WriteRequest};
use support::{dump, put, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_log_vote_state_and_revisions() {
    let mut cluster = Cluster::start(1).await;
    for i in 0..300 {
        put(cluster.node(1), &format!("r/{i:03}"), &format!("v{i}")).await;
    }
    cluster
        .node(1)
        .write(WriteRequest::new(WriteOp::Compact { revision: 10 }))
        .await
        .unwrap();
    let before_status = cluster.node(1).status().unwrap();
    let before_data = dump(cluster.node(1), "r/").await;
    let before_vote = cluster.node(1).raft().metrics().borrow().vote;
    cluster.stop(1).await;

    cluster.restart(1).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.node(1);
    let after = node.status().unwrap();
    assert_eq!(after.revision, before_status.revision, "revision survives");
    assert_eq!(after.compact_revision, 10, "compaction survives");
    assert!(after.applied_index >= before_status.applied_index);
    assert!(node.raft().metrics().borrow().vote.leader_id.term >= before_vote.leader_id.term);
    assert_eq!(dump(node, "r/").await, before_data, "every value survives");
    // The log was purged behind a snapshot (200 entries), and both survived the restart.
    assert!(
        after.snapshot_index > 0 && after.purged_index > 0,
        "{after:?}"
    );
    // Older revisions are still readable after the restart.
    let mut query = RangeQuery::new(KeyRange::prefix("r/"));
    query.revision = 20;
    let (old, _) = node.range(query, false).await.unwrap();
    assert_eq!(old.kvs.len(), 20);
    // And it keeps working.
    let next = put(node, "r/new", "x").await;
    assert_eq!(next, before_status.revision + 1);
    cluster.shutdown().await;
}
