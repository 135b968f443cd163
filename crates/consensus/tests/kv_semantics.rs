//! The MVCC key-value semantics of the store, through a real single-peer Raft: revisions and
//! versions, transactions with compares, ranges at older revisions, pagination, compaction,
//! watches, request dedup, and refusal of bad input.

mod support;

use std::time::Duration;

use flotilla_consensus::types::{
    Compare, CompareOp, CompareTarget, DeleteOp, KeyRange, PutOp, RangeOp, Rejection, Txn, TxnOp,
    WriteOp, WriteOutcome, WriteRequest,
};
use flotilla_consensus::watch::WatchError;
use flotilla_consensus::{limits, OpResult, RangeQuery, StoreError, StoreNode};
use support::{put, Cluster};

async fn single() -> Cluster {
    Cluster::start(1).await
}

fn cmp(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare {
        key: key.into(),
        op,
        target,
    }
}

fn put_op(key: &str, value: &str) -> TxnOp {
    TxnOp::Put(PutOp {
        key: key.into(),
        value: value.into(),
        prev_kv: false,
    })
}

async fn txn(
    node: &StoreNode,
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
) -> (bool, Vec<OpResult>) {
    let response = node
        .write(WriteRequest::txn(Txn {
            compares,
            success,
            failure,
        }))
        .await
        .expect("txn");
    match response.outcome {
        WriteOutcome::Txn { succeeded, results } => (succeeded, results),
        other => panic!("unexpected {other:?}"),
    }
}

async fn range_at(
    node: &StoreNode,
    range: KeyRange,
    revision: i64,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut query = RangeQuery::new(range);
    query.revision = revision;
    query.limit = limit;
    let (result, _) = node.range(query, false).await?;
    Ok(result
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect())
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_versions_and_deletes() {
    let cluster = single().await;
    let node = cluster.node(1);
    let r1 = put(node, "a", "1").await;
    let r2 = put(node, "a", "2").await;
    let r3 = put(node, "b", "1").await;
    assert_eq!(
        (r2, r3),
        (r1 + 1, r1 + 2),
        "every write bumps the one revision"
    );
    let (result, revision) = node
        .range(RangeQuery::new(KeyRange::key("a")), false)
        .await
        .unwrap();
    let kv = &result.kvs[0];
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert_eq!(revision, r3);

    let deleted = node
        .write(WriteRequest::delete(KeyRange::prefix("a")))
        .await
        .unwrap();
    assert!(matches!(
        deleted.outcome,
        WriteOutcome::Delete { deleted: 1, .. }
    ));
    assert_eq!(deleted.revision, r3 + 1);
    // Deleting nothing changes nothing and does not bump the revision.
    let none = node
        .write(WriteRequest::delete(KeyRange::prefix("zz")))
        .await
        .unwrap();
    assert!(matches!(
        none.outcome,
        WriteOutcome::Delete { deleted: 0, .. }
    ));
    assert_eq!(none.revision, r3 + 1);
    // A re-created key starts a new life: version 1, new create revision.
    let r5 = put(node, "a", "3").await;
    let (result, _) = node
        .range(RangeQuery::new(KeyRange::key("a")), false)
        .await
        .unwrap();
    assert_eq!(
        (result.kvs[0].create_revision, result.kvs[0].version),
        (r5, 1)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_branches() {
    let cluster = single().await;
    let node = cluster.node(1);
    let rev = put(node, "k", "v1").await;
    use CompareOp::*;
    use CompareTarget::*;
    // (compare, expected result) — each evaluated against k = v1 (version 1, mod = rev).
    let cases = vec![
        (cmp("k", Equal, ModRevision(rev)), true),
        (cmp("k", Equal, ModRevision(rev + 1)), false),
        (cmp("k", Less, ModRevision(rev + 1)), true),
        (cmp("k", Greater, ModRevision(rev - 1)), true),
        (cmp("k", NotEqual, Version(1)), false),
        (cmp("k", Equal, Version(1)), true),
        (cmp("k", Equal, CreateRevision(rev)), true),
        (cmp("k", Equal, Value(b"v1".to_vec())), true),
        (cmp("k", Greater, Value(b"v0".to_vec())), true),
        (cmp("k", Equal, Exists(true)), true),
        (cmp("missing", Equal, Exists(false)), true),
        (cmp("missing", Equal, Version(0)), true),
        (cmp("missing", Equal, ModRevision(0)), true),
        (cmp("missing", Equal, Value(Vec::new())), false),
    ];
    for (compare, expected) in cases {
        let (succeeded, _) = txn(node, vec![compare.clone()], vec![], vec![]).await;
        assert_eq!(succeeded, expected, "{compare:?}");
    }
    // Else branch runs when a compare fails; the branch sees its own earlier writes.
    let (succeeded, results) = txn(
        node,
        vec![cmp("k", Equal, Value(b"nope".to_vec()))],
        vec![put_op("then", "x")],
        vec![
            put_op("else", "y"),
            TxnOp::Range(RangeOp {
                range: KeyRange::prefix("else"),
                limit: 0,
                keys_only: false,
                count_only: false,
            }),
        ],
    )
    .await;
    assert!(!succeeded);
    match &results[1] {
        OpResult::Range(r) => assert_eq!(r.kvs[0].value, b"y"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(support::get(node, "then", false).await, None);
    assert_eq!(
        support::get(node, "else", false).await.as_deref(),
        Some("y")
    );
    // A put and a delete of the same key in one branch: one revision, two events, key gone.
    let before = node.status().unwrap().revision;
    let (_, _) = txn(
        node,
        vec![],
        vec![
            put_op("tmp", "1"),
            TxnOp::Delete(DeleteOp {
                range: KeyRange::key("tmp"),
                prev_kv: true,
            }),
        ],
        vec![],
    )
    .await;
    assert_eq!(node.status().unwrap().revision, before + 1);
    assert_eq!(support::get(node, "tmp", false).await, None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_at_older_revisions_pages_and_compaction() {
    let cluster = single().await;
    let node = cluster.node(1);
    let r1 = put(node, "p/a", "1").await;
    put(node, "p/b", "1").await;
    let r3 = put(node, "p/a", "2").await;
    node.write(WriteRequest::delete(KeyRange::key("p/b")))
        .await
        .unwrap();
    put(node, "p/c", "1").await;
    let prefix = || KeyRange::prefix("p/");
    assert_eq!(
        range_at(node, prefix(), r1, 0).await.unwrap(),
        pairs(&[("p/a", "1")])
    );
    assert_eq!(
        range_at(node, prefix(), r1 + 1, 0).await.unwrap(),
        pairs(&[("p/a", "1"), ("p/b", "1")])
    );
    assert_eq!(
        range_at(node, prefix(), r3, 0).await.unwrap(),
        pairs(&[("p/a", "2"), ("p/b", "1")])
    );
    assert_eq!(
        range_at(node, prefix(), 0, 0).await.unwrap(),
        pairs(&[("p/a", "2"), ("p/c", "1")])
    );
    // Pagination at a fixed revision: the second page is read at the first page's revision.
    let mut query = RangeQuery::new(prefix());
    query.limit = 1;
    query.revision = r3;
    let (page, _) = node.range(query.clone(), false).await.unwrap();
    assert!(page.more);
    query.range = KeyRange::between("p/a\0", flotilla_consensus::prefix_end(b"p/"));
    let (page2, _) = node.range(query, false).await.unwrap();
    assert_eq!(page2.kvs[0].key, b"p/b");
    // A future revision and, after compaction, an old one are refused with clear errors.
    let current = node.status().unwrap().revision;
    assert!(matches!(
        range_at(node, prefix(), current + 5, 0).await,
        Err(StoreError::FutureRevision { .. })
    ));
    let compacted = node
        .write(WriteRequest::new(WriteOp::Compact { revision: r3 }))
        .await
        .unwrap();
    assert_eq!(compacted.outcome, WriteOutcome::Compacted);
    assert_eq!(
        range_at(node, prefix(), r1, 0).await,
        Err(StoreError::Compacted {
            requested: r1,
            compacted: r3
        })
    );
    assert_eq!(
        range_at(node, prefix(), r3, 0).await.unwrap(),
        pairs(&[("p/a", "2"), ("p/b", "1")])
    );
    let again = node
        .write(WriteRequest::new(WriteOp::Compact { revision: r1 }))
        .await
        .unwrap();
    assert!(matches!(
        again.outcome,
        WriteOutcome::Rejected(Rejection::AlreadyCompacted { .. })
    ));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_change_in_order_and_resumes() {
    let cluster = single().await;
    let node = cluster.node(1);
    let start = put(node, "w/0", "x").await;
    put(node, "other", "x").await;
    let mut live = node.watch(KeyRange::prefix("w/"), 0).unwrap();
    for i in 1..=50 {
        put(node, &format!("w/{i}"), "v").await;
    }
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let batch = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .unwrap()
            .unwrap();
        seen.extend(batch.events.iter().map(|e| e.kv.mod_revision));
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seen:?}"
    );
    assert_eq!(seen.len(), 50, "no duplicates");
    // A watch from an old revision replays history, then continues live, without gaps.
    let mut resumed = node.watch(KeyRange::prefix("w/"), start).unwrap();
    put(node, "w/late", "v").await;
    let mut replayed = Vec::new();
    while replayed.len() < 52 {
        let batch = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .unwrap()
            .unwrap();
        replayed.extend(
            batch
                .events
                .iter()
                .map(|e| String::from_utf8(e.kv.key.clone()).unwrap()),
        );
    }
    assert_eq!(replayed.first().map(String::as_str), Some("w/0"));
    assert_eq!(replayed.last().map(String::as_str), Some("w/late"));
    assert!(
        !replayed.contains(&"other".to_string()),
        "only the watched prefix"
    );
    // After compaction a watch from a compacted revision is told to relist.
    let now = node.status().unwrap().revision;
    node.write(WriteRequest::new(WriteOp::Compact { revision: now - 1 }))
        .await
        .unwrap();
    match node.watch(KeyRange::prefix("w/"), start) {
        Err(WatchError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, now - 1),
        other => panic!("expected compacted, got {:?}", other.map(|_| ())),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_cancelled_not_buffered_forever() {
    let cluster = Cluster::start_with(1, |c| c.watch.buffer_revisions = 8).await;
    let node = cluster.node(1);
    let mut slow = node.watch(KeyRange::prefix("s/"), 0).unwrap();
    for i in 0..20 {
        put(node, &format!("s/{i}"), "v").await;
    }
    let mut delivered = 0;
    let error = loop {
        match slow.next().await {
            Ok(batch) => delivered += batch.events.len(),
            Err(e) => break e,
        }
    };
    assert!(delivered <= 8, "at most the buffer was kept: {delivered}");
    match error {
        WatchError::FellBehind { next_revision, .. } => assert!(next_revision > 0),
        other => panic!("expected FellBehind, got {other:?}"),
    }
    assert_eq!(node.watch_hub().watcher_count(), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_id_is_applied_once() {
    let cluster = single().await;
    let node = cluster.node(1);
    let request = WriteRequest::txn(Txn {
        compares: vec![cmp("counter", CompareOp::Equal, CompareTarget::Version(0))],
        success: vec![put_op("counter", "1")],
        failure: vec![put_op("counter", "2")],
    })
    .with_request_id("client-7-op-1");
    let first = node.write(request.clone()).await.unwrap();
    let retry = node.write(request).await.unwrap();
    assert_eq!(
        first.outcome, retry.outcome,
        "the retry gets the first answer"
    );
    assert_eq!(
        support::get(node, "counter", false).await.as_deref(),
        Some("1")
    );
    let (result, _) = node
        .range(RangeQuery::new(KeyRange::key("counter")), false)
        .await
        .unwrap();
    assert_eq!(result.kvs[0].version, 1, "applied once");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let cluster = single().await;
    let node = cluster.node(1);
    put(node, "keep", "v").await;
    let before = node.status().unwrap().revision;
    let huge_key = "k".repeat(limits::MAX_KEY_BYTES + 1);
    let huge_value = vec![0u8; limits::MAX_VALUE_BYTES + 1];
    let too_many: Vec<TxnOp> = (0..=limits::MAX_TXN_OPS)
        .map(|i| put_op(&format!("t{i}"), "v"))
        .collect();
    let bad = vec![
        (
            WriteRequest::put(huge_key.as_bytes().to_vec(), "v"),
            "key is",
        ),
        (WriteRequest::put("k", huge_value), "value is"),
        (WriteRequest::put(Vec::new(), "v"), "key must not be empty"),
        (
            WriteRequest::txn(Txn {
                compares: vec![],
                success: too_many,
                failure: vec![],
            }),
            "operations; the limit",
        ),
        (
            WriteRequest::txn(Txn {
                compares: vec![],
                success: vec![put_op("d", "1"), put_op("d", "2")],
                failure: vec![],
            }),
            "twice",
        ),
        (
            WriteRequest::delete(KeyRange::between("b", "a")),
            "greater than its start",
        ),
        (
            WriteRequest::put("k", "v").with_request_id("x".repeat(200)),
            "request id",
        ),
        (
            WriteRequest::new(WriteOp::Compact { revision: 0 }),
            "positive",
        ),
    ];
    for (request, expected) in bad {
        match node.write(request).await {
            Err(StoreError::Invalid(msg)) => {
                assert!(msg.contains(expected), "{msg} should mention {expected}")
            }
            other => panic!("expected Invalid({expected}), got {other:?}"),
        }
    }
    assert_eq!(
        node.status().unwrap().revision,
        before,
        "nothing was written"
    );
    assert_eq!(support::dump(node, "").await.len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_write_from_an_older_term_is_refused() {
    let cluster = single().await;
    let node = cluster.node(1);
    let term = node.leader_term().expect("leader");
    let ok = node
        .write(WriteRequest::put("f", "1").fenced(term))
        .await
        .unwrap();
    assert!(matches!(ok.outcome, WriteOutcome::Put { .. }));
    let stale = node
        .write(WriteRequest::put("f", "2").fenced(term - 1))
        .await
        .unwrap();
    assert_eq!(
        stale.outcome,
        WriteOutcome::Rejected(Rejection::Fenced {
            fence_term: term - 1,
            current_term: term
        })
    );
    assert_eq!(support::get(node, "f", false).await.as_deref(), Some("1"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_commits_independent_transactions_in_one_revision() {
    let cluster = single().await;
    let node = cluster.node(1);
    let ra = put(node, "b/a", "1").await;
    put(node, "b/b", "1").await;
    let conditional = |key: &str, rev: i64, value: &str| Txn {
        compares: vec![cmp(key, CompareOp::Equal, CompareTarget::ModRevision(rev))],
        success: vec![put_op(key, value)],
        failure: vec![],
    };
    // b/a is at ra (holds); b/b is not at ra (fails): only b/a changes.
    let response = node
        .write(WriteRequest::new(WriteOp::Batch(vec![
            conditional("b/a", ra, "2"),
            conditional("b/b", ra, "2"),
        ])))
        .await
        .unwrap();
    match response.outcome {
        WriteOutcome::Batch(outcomes) => {
            assert_eq!(
                outcomes.iter().map(|(ok, _)| *ok).collect::<Vec<_>>(),
                vec![true, false]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(support::get(node, "b/a", false).await.as_deref(), Some("2"));
    assert_eq!(support::get(node, "b/b", false).await.as_deref(), Some("1"));
    // Two transactions of one batch may not put the same key.
    let twice = node
        .write(WriteRequest::new(WriteOp::Batch(vec![
            conditional("b/a", 0, "x"),
            conditional("b/a", 0, "y"),
        ])))
        .await;
    assert!(
        matches!(twice, Err(StoreError::Invalid(ref m)) if m.contains("twice")),
        "{twice:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_but_keep_their_own_revisions() {
    const WRITES: usize = 200;
    let cluster = single().await;
    let node = cluster.node(1).clone();
    let before = node.status().unwrap();
    let mut watch = node.watch(KeyRange::prefix("c/"), 0).unwrap();
    let mut tasks = Vec::new();
    for i in 0..WRITES {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("c/{i}");
            let response = node.write(WriteRequest::put(key.clone(), "v")).await;
            (key, response.expect("write").revision)
        }));
    }
    let mut revisions = std::collections::BTreeMap::new();
    for task in tasks {
        let (key, revision) = task.await.unwrap();
        revisions.insert(key, revision);
    }
    // Every write has a revision of its own, and the revisions are exactly the next WRITES.
    let mut distinct: Vec<i64> = revisions.values().copied().collect();
    distinct.sort();
    let expected: Vec<i64> = (before.revision + 1..=before.revision + WRITES as i64).collect();
    assert_eq!(distinct, expected);
    for (key, revision) in &revisions {
        let (result, _) = node
            .range(RangeQuery::new(KeyRange::key(key.as_str())), false)
            .await
            .unwrap();
        assert_eq!(result.kvs[0].mod_revision, *revision, "{key}");
    }
    // The proposer carried them in far fewer log entries (and fsyncs) than writes.
    let entries = node.status().unwrap().last_log_index - before.last_log_index;
    assert!(
        entries as usize <= WRITES / 2,
        "{WRITES} concurrent writes took {entries} log entries"
    );
    // A watcher sees each write once, in revision order.
    let mut seen = Vec::new();
    while seen.len() < WRITES {
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap();
        seen.extend(batch.events.iter().map(|e| e.kv.mod_revision));
    }
    assert_eq!(seen, expected);
    drop(watch);
    drop(node);
    cluster.shutdown().await;
}
