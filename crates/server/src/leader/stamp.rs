//! The leader stamp: every fenced write a leader loop makes also puts [`LEADER_KEY`] — this peer
//! and the term the write is fenced to — in the same Raft entry, so it lands at the same
//! revision as the write itself or not at all.
//!
//! Users read the key to see which peer leads, in which term, and (its mod revision) when the
//! leader last changed anything; watching it from revision 1 replays, revision by revision,
//! which leadership term every applied leader write carried — how the end-to-end fencing test
//! checks that no deposed leader's write landed after its successor's first.
//!
//! Only branches that write are stamped, so a write whose compares fail stays a no-op; a batch
//! gets one extra, unconditional transaction. A transaction branch already at
//! [`limits::MAX_TXN_OPS`] goes unstamped rather than failing (leader loops write no such
//! transactions).

use std::sync::Arc;

use flotilla_consensus::types::{limits, OpResult, PutOp, Txn, TxnOp, WriteOp, WriteOutcome};
use flotilla_consensus::{
    KeyRange, RangeQuery, RangeResult, StoreError, StoreNode, WatchError, Watcher, WriteRequest,
    WriteResponse,
};
use flotilla_state::registry::Store;
use serde::{Deserialize, Serialize};

/// The key every leader write also puts.
pub const LEADER_KEY: &[u8] = b"/flotilla/leader";

/// The value of [`LEADER_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderStamp {
    /// The peer whose leader loop wrote.
    pub peer: u64,
    /// The term the write was fenced to.
    pub term: u64,
}

/// Where a request's stamp went, so that its outcome can be handed back without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamped {
    Nothing,
    /// A plain put or delete, turned into a transaction with the stamp after it.
    Single,
    /// The last transaction of a batch.
    LastTxn,
    /// The last op of the branches marked true.
    Branches {
        success: bool,
        failure: bool,
    },
}

/// The store leader loops write through: the peer's store, stamping fenced writes.
#[derive(Clone)]
pub struct StampedStore {
    inner: Arc<StoreNode>,
    peer: u64,
}

impl StampedStore {
    pub fn new(inner: Arc<StoreNode>) -> Self {
        let peer = inner.id;
        StampedStore { inner, peer }
    }

    /// The peer whose writes this store stamps.
    pub fn peer(&self) -> u64 {
        self.peer
    }
}

impl Store for StampedStore {
    async fn range(
        &self,
        query: RangeQuery,
        serializable: bool,
    ) -> Result<(RangeResult, i64), StoreError> {
        self.inner.range(query, serializable).await
    }

    async fn write(&self, mut request: WriteRequest) -> Result<WriteResponse, StoreError> {
        let Some(term) = request.fence_term else {
            return self.inner.write(request).await;
        };
        let stamp = LeaderStamp {
            peer: self.peer,
            term,
        };
        let stamped = stamp_request(&mut request, &stamp);
        let mut response = self.inner.write(request).await?;
        response.outcome = unstamp_outcome(response.outcome, stamped);
        Ok(response)
    }

    fn watch(&self, range: KeyRange, start_revision: i64) -> Result<Watcher, WatchError> {
        self.inner.watch(range, start_revision)
    }
}

fn stamp_op(stamp: &LeaderStamp) -> TxnOp {
    TxnOp::Put(PutOp {
        key: LEADER_KEY.to_vec(),
        value: serde_json::to_vec(stamp).unwrap_or_default(),
        prev_kv: false,
    })
}

/// Adds `stamp` to the branches of `request` that write; returns where it went.
pub fn stamp_request(request: &mut WriteRequest, stamp: &LeaderStamp) -> Stamped {
    let op = stamp_op(stamp);
    match &mut request.op {
        WriteOp::Put(put) => {
            let single = TxnOp::Put(put.clone());
            request.op = WriteOp::Txn(unconditional(vec![single, op]));
            Stamped::Single
        }
        WriteOp::Delete(delete) => {
            let single = TxnOp::Delete(delete.clone());
            request.op = WriteOp::Txn(unconditional(vec![single, op]));
            Stamped::Single
        }
        WriteOp::Batch(txns) if txns.len() < limits::MAX_BATCH_TXNS => {
            txns.push(unconditional(vec![op]));
            Stamped::LastTxn
        }
        WriteOp::Txn(txn) => Stamped::Branches {
            success: stamp_branch(&mut txn.success, &op),
            failure: stamp_branch(&mut txn.failure, &op),
        },
        WriteOp::Batch(_) | WriteOp::Compact { .. } | WriteOp::Group(_) => Stamped::Nothing,
    }
}

fn unconditional(success: Vec<TxnOp>) -> Txn {
    Txn {
        compares: vec![],
        success,
        failure: vec![],
    }
}

/// Appends the stamp to a branch that writes and has room for it.
fn stamp_branch(branch: &mut Vec<TxnOp>, op: &TxnOp) -> bool {
    let writes = branch.iter().any(|o| !matches!(o, TxnOp::Range(_)));
    let stamp = writes && branch.len() < limits::MAX_TXN_OPS;
    if stamp {
        branch.push(op.clone());
    }
    stamp
}

/// The outcome the unstamped request would have had.
pub fn unstamp_outcome(outcome: WriteOutcome, stamped: Stamped) -> WriteOutcome {
    match (outcome, stamped) {
        (WriteOutcome::Txn { results, .. }, Stamped::Single) => match results.into_iter().next() {
            Some(OpResult::Put { prev_kv }) => WriteOutcome::Put { prev_kv },
            Some(OpResult::Delete { deleted, prev_kvs }) => {
                WriteOutcome::Delete { deleted, prev_kvs }
            }
            other => WriteOutcome::Txn {
                succeeded: true,
                results: other.into_iter().collect(),
            },
        },
        (WriteOutcome::Batch(mut outcomes), Stamped::LastTxn) => {
            outcomes.pop();
            WriteOutcome::Batch(outcomes)
        }
        (
            WriteOutcome::Txn {
                succeeded,
                mut results,
            },
            Stamped::Branches { success, failure },
        ) => {
            if (succeeded && success) || (!succeeded && failure) {
                results.pop();
            }
            WriteOutcome::Txn { succeeded, results }
        }
        (outcome, _) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_consensus::types::{Compare, CompareOp, CompareTarget, DeleteOp, RangeOp};

    const STAMP: LeaderStamp = LeaderStamp { peer: 2, term: 7 };

    fn put(key: &str) -> TxnOp {
        TxnOp::Put(PutOp {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            prev_kv: false,
        })
    }

    fn range(key: &str) -> TxnOp {
        TxnOp::Range(RangeOp {
            range: KeyRange::key(key.as_bytes().to_vec()),
            limit: 0,
            keys_only: false,
            count_only: false,
        })
    }

    fn txn(success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Txn {
        Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::ModRevision(3),
            }],
            success,
            failure,
        }
    }

    /// Stamps `op`, checks the request still validates and where the stamp went, then hands
    /// `outcome` (of the stamped request) back unstamped and compares it with `expected`.
    fn check(op: WriteOp, stamped: Stamped, outcome: WriteOutcome, expected: WriteOutcome) {
        let mut request = WriteRequest::new(op).fenced(STAMP.term);
        assert_eq!(stamp_request(&mut request, &STAMP), stamped);
        request.validate().expect("a stamped request is valid");
        let written: Vec<&TxnOp> = match &request.op {
            WriteOp::Txn(t) => t.success.iter().chain(&t.failure).collect(),
            WriteOp::Batch(ts) => ts.iter().flat_map(|t| &t.success).collect(),
            _ => vec![],
        };
        let stamps = written
            .iter()
            .filter(|o| matches!(o, TxnOp::Put(p) if p.key == LEADER_KEY))
            .count();
        let expected_stamps = match stamped {
            Stamped::Nothing => 0,
            Stamped::Single | Stamped::LastTxn => 1,
            Stamped::Branches { success, failure } => usize::from(success) + usize::from(failure),
        };
        assert_eq!(stamps, expected_stamps, "{request:?}");
        assert_eq!(unstamp_outcome(outcome, stamped), expected);
    }

    fn put_result() -> OpResult {
        OpResult::Put { prev_kv: None }
    }

    #[test]
    fn a_batch_gets_one_more_transaction_and_its_outcome_is_dropped() {
        let batch = WriteOp::Batch(vec![
            txn(vec![put("a")], vec![]),
            txn(vec![put("b")], vec![]),
        ]);
        let landed = vec![(true, vec![put_result()]), (false, vec![])];
        let mut stamped = landed.clone();
        stamped.push((true, vec![put_result()]));
        check(
            batch,
            Stamped::LastTxn,
            WriteOutcome::Batch(stamped),
            WriteOutcome::Batch(landed),
        );
    }

    #[test]
    fn only_writing_branches_of_a_transaction_are_stamped() {
        let t = txn(vec![put("a")], vec![range("a")]);
        let branches = Stamped::Branches {
            success: true,
            failure: false,
        };
        let ok = |results| WriteOutcome::Txn {
            succeeded: true,
            results,
        };
        check(
            WriteOp::Txn(t.clone()),
            branches,
            ok(vec![put_result(), put_result()]),
            ok(vec![put_result()]),
        );
        let failed = WriteOutcome::Txn {
            succeeded: false,
            results: vec![OpResult::Range(RangeResult::default())],
        };
        check(WriteOp::Txn(t), branches, failed.clone(), failed);
    }

    #[test]
    fn plain_puts_and_deletes_answer_as_themselves() {
        let p = PutOp {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            prev_kv: false,
        };
        let as_txn = |first| WriteOutcome::Txn {
            succeeded: true,
            results: vec![first, put_result()],
        };
        check(
            WriteOp::Put(p),
            Stamped::Single,
            as_txn(put_result()),
            WriteOutcome::Put { prev_kv: None },
        );
        let d = DeleteOp {
            range: KeyRange::key(b"k".to_vec()),
            prev_kv: false,
        };
        let deleted = OpResult::Delete {
            deleted: 1,
            prev_kvs: vec![],
        };
        check(
            WriteOp::Delete(d),
            Stamped::Single,
            as_txn(deleted),
            WriteOutcome::Delete {
                deleted: 1,
                prev_kvs: vec![],
            },
        );
    }

    #[test]
    fn a_full_branch_and_a_compaction_stay_unstamped() {
        let full = std::iter::once(put("a"))
            .chain((0..limits::MAX_TXN_OPS - 1).map(|i| range(&format!("r{i}"))))
            .collect();
        let t = txn(full, vec![]);
        let none = Stamped::Branches {
            success: false,
            failure: false,
        };
        let outcome = WriteOutcome::Txn {
            succeeded: true,
            results: vec![put_result()],
        };
        check(WriteOp::Txn(t), none, outcome.clone(), outcome);
        let compact = WriteOp::Compact { revision: 5 };
        check(
            compact,
            Stamped::Nothing,
            WriteOutcome::Compacted,
            WriteOutcome::Compacted,
        );
    }
}
