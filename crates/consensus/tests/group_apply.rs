//! Applying entries straight through the state machine: a group entry (the proposer's
//! `WriteOp::Group`) applies each member as if it had an entry of its own and lands atomically;
//! a snapshot installed over recently written keys replaces what the state machine knew of them.

use std::sync::Arc;

use flotilla_consensus::db;
use flotilla_consensus::durable::Durability;
use flotilla_consensus::mvcc::ReadView;
use flotilla_consensus::snapshot::SnapshotStore;
use flotilla_consensus::state_machine::StateMachine;
use flotilla_consensus::types::{
    Compare, CompareOp, CompareTarget, Entry, KeyRange, KeyValue, LogId, PutOp, Rejection, Txn,
    TxnOp, WriteOp, WriteOutcome, WriteRequest,
};
use flotilla_consensus::watch::{WatchConfig, WatchHub};
use flotilla_consensus::RangeQuery;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};
use tokio::io::AsyncWriteExt;

fn entry(term: u64, index: u64, request: WriteRequest) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(request),
    }
}

fn open(dir: &std::path::Path) -> (Arc<rocksdb::DB>, StateMachine) {
    let db = db::open(&dir.join("db")).unwrap();
    let hub = WatchHub::new(0, WatchConfig::default());
    let snapshots = SnapshotStore::open(dir.join("snapshots"), db.clone()).unwrap();
    let sm = StateMachine::open(db.clone(), hub, snapshots, Durability::ungated()).unwrap();
    (db, sm)
}

/// The key's record at `revision` (0: the current one).
fn read(db: &rocksdb::DB, key: &str, revision: i64) -> Option<KeyValue> {
    let mut query = RangeQuery::new(KeyRange::key(key));
    query.revision = revision;
    let result = ReadView::new(db).unwrap().range(&query).unwrap();
    result.kvs.into_iter().next()
}

fn text(kv: &KeyValue) -> String {
    String::from_utf8(kv.value.clone()).unwrap()
}

/// The key's current (value, version, create_revision).
fn record(db: &rocksdb::DB, key: &str) -> Option<(String, i64, i64)> {
    read(db, key, 0).map(|kv| (text(&kv), kv.version, kv.create_revision))
}

fn value_at(db: &rocksdb::DB, key: &str, revision: i64) -> Option<(String, i64)> {
    read(db, key, revision).map(|kv| (text(&kv), kv.mod_revision))
}

#[tokio::test]
async fn group_members_apply_one_by_one_and_the_group_lands_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut sm) = open(dir.path());
    let members = vec![
        WriteRequest::put("a", "1").with_request_id("w1"),
        // The same request id again in the same group: answered as the first, applied once.
        WriteRequest::put("a", "1").with_request_id("w1"),
        // Fenced to an older term: refused on its own, the others still apply.
        WriteRequest::put("b", "1").fenced(1),
        // Reads what the first member wrote.
        WriteRequest::txn(Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(1),
            }],
            success: vec![TxnOp::Put(PutOp {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                prev_kv: false,
            })],
            failure: vec![],
        }),
        // Over a limit (an empty key): refused on its own as well.
        WriteRequest::put("", "x"),
    ];
    let responses = sm
        .apply(vec![entry(
            2,
            1,
            WriteRequest::new(WriteOp::Group(members)),
        )])
        .await
        .unwrap();
    let WriteOutcome::Group(each) = &responses[0].outcome else {
        panic!("expected a group outcome, got {:?}", responses[0]);
    };
    let revisions: Vec<i64> = each.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, vec![1, 1, 1, 2, 2]);
    assert!(
        matches!(
            each[4].outcome,
            WriteOutcome::Rejected(Rejection::Invalid(_))
        ),
        "{:?}",
        each[4]
    );
    assert_eq!(
        each[0].outcome, each[1].outcome,
        "a retry gets the first answer"
    );
    assert_eq!(
        each[2].outcome,
        WriteOutcome::Rejected(Rejection::Fenced {
            fence_term: 1,
            current_term: 2
        })
    );
    assert!(matches!(
        each[3].outcome,
        WriteOutcome::Txn {
            succeeded: true,
            ..
        }
    ));
    assert_eq!(responses[0].revision, 2);
    // History keeps each member's revision.
    assert_eq!(value_at(&db, "a", 1), Some(("1".into(), 1)));
    assert_eq!(value_at(&db, "a", 2), Some(("2".into(), 2)));
    assert_eq!(value_at(&db, "b", 2), None);

    // A malformed group (a group inside a group) is refused whole and changes nothing.
    let nested = WriteRequest::new(WriteOp::Group(vec![
        WriteRequest::put("c", "1"),
        WriteRequest::new(WriteOp::Group(vec![WriteRequest::put("d", "1")])),
    ]));
    let refused = sm.apply(vec![entry(2, 2, nested)]).await.unwrap();
    assert!(
        matches!(
            refused[0].outcome,
            WriteOutcome::Rejected(Rejection::Invalid(_))
        ),
        "{refused:?}"
    );
    assert_eq!(value_at(&db, "c", 0), None);

    // Reopened, the state machine holds the whole group and where it stopped.
    drop(sm);
    drop(db);
    let (db, mut sm) = open(dir.path());
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
    assert_eq!(value_at(&db, "a", 0), Some(("2".into(), 2)));
}

#[tokio::test]
async fn writes_after_a_snapshot_install_continue_from_the_snapshot() {
    // The leader's state: "k" written five times, "theirs" once.
    let source_dir = tempfile::tempdir().unwrap();
    let (_source_db, mut source) = open(source_dir.path());
    let mut writes: Vec<Entry> = (1..=5)
        .map(|i| entry(1, i, WriteRequest::put("k", format!("s{i}"))))
        .collect();
    writes.push(entry(1, 6, WriteRequest::put("theirs", "x")));
    source.apply(writes).await.unwrap();
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    // A follower that applied other writes to the same keys just before.
    let dir = tempfile::tempdir().unwrap();
    let (db, mut sm) = open(dir.path());
    sm.apply(vec![
        entry(1, 1, WriteRequest::put("k", "mine")),
        entry(1, 2, WriteRequest::put("mine", "x")),
        entry(1, 3, WriteRequest::delete(KeyRange::key("theirs"))),
    ])
    .await
    .unwrap();
    assert_eq!(record(&db, "k"), Some(("mine".into(), 1, 1)));

    let mut received = sm.begin_receiving_snapshot().await.unwrap();
    let mut data = snapshot.snapshot;
    tokio::io::copy(&mut *data, &mut *received).await.unwrap();
    received.flush().await.unwrap();
    sm.install_snapshot(&snapshot.meta, received).await.unwrap();

    sm.apply(vec![
        entry(1, 7, WriteRequest::put("k", "after")),
        entry(1, 8, WriteRequest::put("mine", "again")),
        entry(1, 9, WriteRequest::put("theirs", "y")),
    ])
    .await
    .unwrap();
    assert_eq!(
        record(&db, "k"),
        Some(("after".into(), 6, 1)),
        "the sixth version of the snapshot's key"
    );
    assert_eq!(
        record(&db, "mine"),
        Some(("again".into(), 1, 8)),
        "a key the snapshot does not hold is created anew"
    );
    assert_eq!(record(&db, "theirs"), Some(("y".into(), 2, 6)));
}
