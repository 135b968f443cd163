//! The store's data types: the openraft type configuration, the write commands that travel in
//! the Raft log, their responses, and the MVCC records kept in RocksDB.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Identity of a control-plane peer.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for the Flotilla store.
    pub TypeConfig:
        D = WriteRequest,
        R = WriteResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
/// What openraft answers a client write with.
pub type ClientWriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    openraft::error::ClientWriteError<NodeId, openraft::BasicNode>,
>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Hard limits on what a single request may carry. Requests over them are refused before they
/// reach the log, and refused again (deterministically) if they ever reach the state machine.
pub mod limits {
    /// Longest key, in bytes.
    pub const MAX_KEY_BYTES: usize = 3 * 1024;
    /// Largest value, in bytes (Kubernetes objects stay under 1.5 MiB in etcd too).
    pub const MAX_VALUE_BYTES: usize = 1536 * 1024;
    /// Most operations in one branch of a transaction (etcd's default).
    pub const MAX_TXN_OPS: usize = 128;
    /// Most transactions in one batch.
    pub const MAX_BATCH_TXNS: usize = 4096;
    /// Most client writes in one group entry ([`super::WriteOp::Group`]).
    pub const MAX_GROUP_WRITES: usize = 1024;
    /// Most compares in one transaction.
    pub const MAX_TXN_COMPARES: usize = 128;
    /// Longest client request id, in bytes.
    pub const MAX_REQUEST_ID_BYTES: usize = 128;
    /// Most bytes of keys and values in one write request.
    pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
    /// Most keys returned by one range; a larger `limit` is clamped and `more` set.
    pub const MAX_RANGE_LIMIT: usize = 10_000;
    /// Most bytes of keys and values in one range response; a fuller page stops early with
    /// `more` set.
    pub const MAX_RANGE_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
    /// Retained client request ids: a retry older than this many log entries is no longer
    /// recognised as a duplicate.
    pub const DEDUP_WINDOW_ENTRIES: u64 = 200_000;
}

/// The MVCC record of one key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRecord {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A key with its record, as returned by reads and watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl KeyValue {
    pub fn from_record(key: &[u8], record: &KvRecord) -> Self {
        KeyValue {
            key: key.to_vec(),
            create_revision: record.create_revision,
            mod_revision: record.mod_revision,
            version: record.version,
            value: record.value.clone(),
        }
    }
}

/// A half-open key range. `end` empty means the single key `start`; `end == [0]` means every key
/// from `start` on (etcd's conventions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(with = "serde_bytes")]
    pub start: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: key.into(),
            end: Vec::new(),
        }
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        KeyRange { start, end }
    }

    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: end.into(),
        }
    }

    pub fn is_single_key(&self) -> bool {
        self.end.is_empty()
    }

    /// The exclusive upper bound, or `None` for "no upper bound".
    pub fn upper_bound(&self) -> Option<Vec<u8>> {
        if self.end.is_empty() {
            let mut next = self.start.clone();
            next.push(0);
            Some(next)
        } else if self.end == [0] {
            None
        } else {
            Some(self.end.clone())
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            return key == self.start.as_slice();
        }
        key >= self.start.as_slice() && (self.end == [0] || key < self.end.as_slice())
    }
}

/// The smallest key greater than every key that starts with `prefix`; `[0]` ("no bound") when
/// the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOp {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOp {
    pub range: KeyRange,
    pub prev_kv: bool,
}

/// A read inside a transaction; it sees the writes of earlier operations of the same branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOp {
    pub range: KeyRange,
    pub limit: usize,
    pub keys_only: bool,
    pub count_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Range(RangeOp),
    Put(PutOp),
    Delete(DeleteOp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a compare looks at. A missing key has version, create and mod revision 0 and no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// True iff the key exists.
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put(PutOp),
    Delete(DeleteOp),
    Txn(Txn),
    /// Independent transactions committed as one log entry and one revision: each is evaluated
    /// on its own (one failing compare fails only its own transaction). For batched writes such
    /// as the scheduler's bindings, each conditional on its object's revision.
    Batch(Vec<Txn>),
    /// Drop history at and below this revision.
    Compact {
        revision: i64,
    },
    /// Independent client writes that the leader's proposer (`propose.rs`) carries in one log
    /// entry, so that one fsync and one replication round serve them all. Each member is applied
    /// as if it had an entry of its own (its own revision, fence check, request-id dedup and
    /// outcome), in order, and the whole group is one atomic RocksDB write. Members are never
    /// groups or compactions.
    Group(Vec<WriteRequest>),
}

/// A write command, as it travels in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Retries of one logical write carry the same id; the state machine applies it once.
    pub request_id: Option<String>,
    /// Leader fencing: applied only if no entry of a later term was applied before it.
    pub fence_term: Option<u64>,
    pub op: WriteOp,
}

impl WriteRequest {
    pub fn new(op: WriteOp) -> Self {
        WriteRequest {
            request_id: None,
            fence_term: None,
            op,
        }
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    pub fn fenced(mut self, term: u64) -> Self {
        self.fence_term = Some(term);
        self
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        WriteRequest::new(WriteOp::Put(PutOp {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
        }))
    }

    pub fn delete(range: KeyRange) -> Self {
        WriteRequest::new(WriteOp::Delete(DeleteOp {
            range,
            prev_kv: false,
        }))
    }

    pub fn txn(txn: Txn) -> Self {
        WriteRequest::new(WriteOp::Txn(txn))
    }

    /// Checks the request against [`limits`]. Called before proposing and again at apply.
    pub fn validate(&self) -> Result<(), String> {
        self.checked_bytes().map(|_| ())
    }

    /// Checks the request against [`limits`] and returns the bytes of keys and values it
    /// carries (what the proposer counts towards a group's size).
    pub fn checked_bytes(&self) -> Result<usize, String> {
        let mut budget = Budget::default();
        self.check(&mut budget)?;
        Ok(budget.bytes)
    }

    fn check(&self, budget: &mut Budget) -> Result<(), String> {
        if let Some(id) = &self.request_id {
            if id.len() > limits::MAX_REQUEST_ID_BYTES {
                return Err(format!(
                    "request id is {} bytes; the limit is {}",
                    id.len(),
                    limits::MAX_REQUEST_ID_BYTES
                ));
            }
        }
        match &self.op {
            WriteOp::Put(put) => check_put(put, budget),
            WriteOp::Delete(del) => check_range(&del.range, budget),
            WriteOp::Txn(txn) => check_txn(txn, budget, &mut BTreeSet::new()),
            WriteOp::Batch(txns) => {
                if txns.len() > limits::MAX_BATCH_TXNS {
                    return Err(format!(
                        "batch has {} transactions; the limit is {}",
                        txns.len(),
                        limits::MAX_BATCH_TXNS
                    ));
                }
                let mut written = BTreeSet::new();
                txns.iter()
                    .try_for_each(|t| check_txn(t, budget, &mut written))
            }
            WriteOp::Compact { revision } if *revision <= 0 => Err(format!(
                "compaction revision must be positive, got {revision}"
            )),
            WriteOp::Compact { .. } => Ok(()),
            WriteOp::Group(members) => {
                if members.len() > limits::MAX_GROUP_WRITES {
                    return Err(format!(
                        "group has {} writes; the limit is {}",
                        members.len(),
                        limits::MAX_GROUP_WRITES
                    ));
                }
                if self.request_id.is_some() || self.fence_term.is_some() {
                    return Err("a group carries no request id or fence of its own".into());
                }
                // Only the group's shape: each member is checked on its own as it is applied
                // (a member over a limit is refused alone), so checking members here too would
                // walk every write twice on the apply path.
                if members
                    .iter()
                    .any(|m| matches!(m.op, WriteOp::Group(_) | WriteOp::Compact { .. }))
                {
                    return Err("a group holds no groups or compactions".into());
                }
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct Budget {
    bytes: usize,
}

impl Budget {
    fn spend(&mut self, bytes: usize) -> Result<(), String> {
        self.bytes += bytes;
        if self.bytes > limits::MAX_REQUEST_BYTES {
            return Err(format!(
                "request carries more than {} bytes of keys and values",
                limits::MAX_REQUEST_BYTES
            ));
        }
        Ok(())
    }
}

fn check_key(key: &[u8], budget: &mut Budget) -> Result<(), String> {
    if key.is_empty() {
        return Err("key must not be empty".into());
    }
    if key.len() > limits::MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes; the limit is {}",
            key.len(),
            limits::MAX_KEY_BYTES
        ));
    }
    budget.spend(key.len())
}

fn check_put(put: &PutOp, budget: &mut Budget) -> Result<(), String> {
    check_key(&put.key, budget)?;
    if put.value.len() > limits::MAX_VALUE_BYTES {
        return Err(format!(
            "value is {} bytes; the limit is {}",
            put.value.len(),
            limits::MAX_VALUE_BYTES
        ));
    }
    budget.spend(put.value.len())
}

fn check_range(range: &KeyRange, budget: &mut Budget) -> Result<(), String> {
    check_key(&range.start, budget)?;
    if range.end.len() > limits::MAX_KEY_BYTES {
        return Err(format!(
            "range end is {} bytes; the limit is {}",
            range.end.len(),
            limits::MAX_KEY_BYTES
        ));
    }
    if !range.end.is_empty() && range.end != [0] && range.end <= range.start {
        return Err("range end must be greater than its start".into());
    }
    budget.spend(range.end.len())
}

/// Checks one transaction; `batch_puts` collects the keys put by earlier transactions of the
/// same batch, which may not be put again (one revision changes a key once per branch).
fn check_txn(
    txn: &Txn,
    budget: &mut Budget,
    batch_puts: &mut BTreeSet<Vec<u8>>,
) -> Result<(), String> {
    if txn.compares.len() > limits::MAX_TXN_COMPARES {
        return Err(format!(
            "transaction has {} compares; the limit is {}",
            txn.compares.len(),
            limits::MAX_TXN_COMPARES
        ));
    }
    for compare in &txn.compares {
        check_key(&compare.key, budget)?;
        if let CompareTarget::Value(v) = &compare.target {
            budget.spend(v.len())?;
        }
    }
    let mut branch_puts = BTreeSet::new();
    for (name, branch) in [("success", &txn.success), ("failure", &txn.failure)] {
        if branch.len() > limits::MAX_TXN_OPS {
            return Err(format!(
                "transaction {name} branch has {} operations; the limit is {}",
                branch.len(),
                limits::MAX_TXN_OPS
            ));
        }
        let mut written = BTreeSet::new();
        for op in branch.iter() {
            match op {
                TxnOp::Put(put) => {
                    check_put(put, budget)?;
                    if !written.insert(put.key.clone()) || batch_puts.contains(&put.key) {
                        return Err(format!(
                            "transaction {name} branch puts key {:?} twice",
                            String::from_utf8_lossy(&put.key)
                        ));
                    }
                }
                TxnOp::Delete(del) => check_range(&del.range, budget)?,
                TxnOp::Range(range) => check_range(&range.range, budget)?,
            }
        }
        branch_puts.extend(written);
    }
    batch_puts.extend(branch_puts);
    Ok(())
}

/// The result of a range read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// More keys in the range than were returned.
    pub more: bool,
    /// With `count_only`, how many keys the range holds; otherwise `kvs.len()`.
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Range(RangeResult),
    Put {
        prev_kv: Option<KeyValue>,
    },
    Delete {
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
}

/// A write the state machine refused. Deterministic: every replica refuses it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("fenced: the write was made for term {fence_term} but term {current_term} has begun")]
    Fenced { fence_term: u64, current_term: u64 },
    #[error("revision {requested} is already compacted (compacted up to {compacted})")]
    AlreadyCompacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("invalid request: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    Put {
        prev_kv: Option<KeyValue>,
    },
    Delete {
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
    Txn {
        succeeded: bool,
        results: Vec<OpResult>,
    },
    /// One `(succeeded, results)` per transaction of a batch, in order.
    Batch(Vec<(bool, Vec<OpResult>)>),
    /// One response per member of a [`WriteOp::Group`], in order.
    Group(Vec<WriteResponse>),
    Compacted,
    Rejected(Rejection),
    /// Membership and blank entries carry no client write.
    None,
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The store's revision after this entry was applied.
    pub revision: i64,
    pub outcome: WriteOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key, as stored in history and delivered to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new record; for a delete, the key with `mod_revision` = the deletion's
    /// revision and an empty value.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;

    /// The encoding before byte fields were marked `serde_bytes`.
    #[derive(Serialize)]
    struct PlainRecord {
        create_revision: i64,
        mod_revision: i64,
        version: i64,
        value: Vec<u8>,
    }

    /// Byte fields are encoded as bytes (one copy, not one call per byte), and bincode writes
    /// bytes exactly as it wrote the old `Vec<u8>` sequences: logs, snapshots and records
    /// written before still read back.
    #[test]
    fn byte_fields_keep_their_stored_encoding() {
        let value = (0..=255u8).collect::<Vec<_>>();
        let old = bincode::serialize(&PlainRecord {
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            value: value.clone(),
        })
        .unwrap();
        let record = KvRecord {
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            value,
        };
        assert_eq!(bincode::serialize(&record).unwrap(), old);
        assert_eq!(bincode::deserialize::<KvRecord>(&old).unwrap(), record);
    }
}
