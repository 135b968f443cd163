//! The Raft state machine: applies committed entries to the MVCC store in RocksDB, remembers
//! client request ids to drop retried duplicates, fences deposed leaders' writes, publishes
//! changes to watchers, and builds and installs snapshots.
//!
//! Every entry — normal, blank or membership — is applied in one RocksDB write batch that also
//! records `last_applied` and the membership, so the state machine is consistent at every entry
//! boundary. Apply writes are not synced on their own: they sit in the same WAL as the Raft log,
//! behind entries that are, and a lost tail is re-applied from the log on restart. An entry is
//! applied only once the local log holds it on disk ([`Durability`]).

use std::collections::HashMap;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::db::{cf, decode, encode, u64_key, CF_DEDUP, CF_DEDUP_INDEX};
use crate::durable::Durability;
use crate::mvcc::{self, ApplyView, MvccError, SmMeta};
use crate::snapshot::{OwnedSnapshot, SnapshotError, SnapshotStore};
use crate::types::{
    limits, Entry, Event, LogId, OpResult, Rejection, StorageError, TxnOp, TypeConfig, WriteOp,
    WriteOutcome, WriteRequest, WriteResponse,
};
use crate::watch::WatchHub;

/// Expired client request ids are swept every this many log entries.
const DEDUP_SWEEP_EVERY: u64 = 1024;

fn sm_write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn sm_read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}

fn snapshot_err(e: SnapshotError) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

/// What applying one log entry writes: one RocksDB batch for the whole entry (a group's
/// members included, so a crash never leaves half a group applied), the key overlay later members
/// read through, the request ids applied so far in the entry, and the changes to publish to
/// watchers, per revision, once the batch is written.
struct EntryWrites<'a> {
    view: ApplyView<'a>,
    batch: WriteBatch,
    fresh_ids: HashMap<String, WriteOutcome>,
    changes: Vec<(i64, Vec<Event>)>,
}

pub struct StateMachine {
    db: Arc<DB>,
    meta: SmMeta,
    hub: Arc<WatchHub>,
    snapshots: Arc<SnapshotStore>,
    durability: Arc<Durability>,
}

impl StateMachine {
    /// Opens the state machine, finishing a snapshot install that a crash interrupted. It
    /// applies entries only as far as `durability` says the log is on disk.
    pub fn open(
        db: Arc<DB>,
        hub: Arc<WatchHub>,
        snapshots: Arc<SnapshotStore>,
        durability: Arc<Durability>,
    ) -> Result<Self, StorageError> {
        snapshots
            .finish_interrupted_install()
            .map_err(snapshot_err)?;
        let meta = mvcc::read_meta_db(&db).map_err(sm_read_err)?;
        hub.reset(meta.revision);
        Ok(StateMachine {
            db,
            meta,
            hub,
            snapshots,
            durability,
        })
    }

    pub fn meta(&self) -> &SmMeta {
        &self.meta
    }

    fn apply_entry(&mut self, entry: Entry) -> Result<WriteResponse, StorageError> {
        let log_id = entry.log_id;
        let previous_term = self.meta.term;
        self.meta.last_applied = Some(log_id);
        self.meta.term = self.meta.term.max(log_id.leader_id.term);
        let db = self.db.clone();
        let mut writes = EntryWrites {
            view: ApplyView::new(&db),
            batch: WriteBatch::default(),
            fresh_ids: HashMap::new(),
            changes: Vec::new(),
        };
        let outcome = match entry.payload {
            EntryPayload::Blank => WriteOutcome::None,
            EntryPayload::Membership(membership) => {
                self.meta.membership = StoredMembership::new(Some(log_id), membership);
                WriteOutcome::None
            }
            EntryPayload::Normal(request) => self
                .apply_request(&mut writes, log_id, previous_term, request)
                .map_err(|e| StorageIOError::apply(log_id, AnyError::error(e.to_string())))?,
        };
        let EntryWrites {
            view,
            mut batch,
            changes,
            ..
        } = writes;
        view.flush_into(&mut batch);
        if log_id.index % DEDUP_SWEEP_EVERY == 0 {
            self.sweep_dedup(&mut batch, log_id.index)
                .map_err(sm_write_err)?;
        }
        mvcc::write_meta(&mut batch, &self.db, &self.meta);
        self.db.write(batch).map_err(sm_write_err)?;
        for (revision, events) in changes {
            self.hub.publish(revision, &events);
        }
        Ok(WriteResponse {
            revision: self.meta.revision,
            outcome,
        })
    }

    /// Applies one client write (each member in turn, for a group) into the entry's writes.
    fn apply_request(
        &mut self,
        writes: &mut EntryWrites<'_>,
        log_id: LogId,
        previous_term: u64,
        request: WriteRequest,
    ) -> Result<WriteOutcome, MvccError> {
        if matches!(request.op, WriteOp::Group(_)) {
            if let Err(reason) = request.validate() {
                return Ok(WriteOutcome::Rejected(Rejection::Invalid(reason)));
            }
            let WriteOp::Group(members) = request.op else {
                unreachable!("checked to be a group above")
            };
            let mut responses = Vec::with_capacity(members.len());
            for member in members {
                let outcome = self.apply_request(writes, log_id, previous_term, member)?;
                responses.push(WriteResponse {
                    revision: self.meta.revision,
                    outcome,
                });
            }
            return Ok(WriteOutcome::Group(responses));
        }
        if let Some(id) = &request.request_id {
            if let Some(earlier) = writes.fresh_ids.get(id) {
                return Ok(earlier.clone());
            }
            if let Some(raw) = self.db.get_cf(cf(&self.db, CF_DEDUP), id.as_bytes())? {
                let (_, earlier): (u64, WriteResponse) = decode(&raw)?;
                return Ok(earlier.outcome);
            }
        }
        let mut events = Vec::new();
        let outcome = self.execute(writes, log_id, previous_term, &request, &mut events)?;
        if !events.is_empty() {
            writes.changes.push((self.meta.revision, events));
        }
        if let Some(id) = request.request_id {
            let response = WriteResponse {
                revision: self.meta.revision,
                outcome: outcome.clone(),
            };
            writes.batch.put_cf(
                cf(&self.db, CF_DEDUP),
                id.as_bytes(),
                encode(&(log_id.index, response)),
            );
            let mut index_key = u64_key(log_id.index).to_vec();
            index_key.extend_from_slice(id.as_bytes());
            writes
                .batch
                .put_cf(cf(&self.db, CF_DEDUP_INDEX), index_key, []);
            writes.fresh_ids.insert(id, outcome.clone());
        }
        Ok(outcome)
    }

    fn execute(
        &mut self,
        writes: &mut EntryWrites<'_>,
        log_id: LogId,
        previous_term: u64,
        request: &WriteRequest,
        events: &mut Vec<Event>,
    ) -> Result<WriteOutcome, MvccError> {
        if let Err(reason) = request.validate() {
            return Ok(WriteOutcome::Rejected(Rejection::Invalid(reason)));
        }
        if let Some(fence_term) = request.fence_term {
            let current_term = previous_term.max(log_id.leader_id.term);
            if current_term != fence_term {
                return Ok(WriteOutcome::Rejected(Rejection::Fenced {
                    fence_term,
                    current_term,
                }));
            }
        }
        let revision = self.meta.revision + 1;
        let view = &mut writes.view;
        let outcome = match &request.op {
            WriteOp::Compact { revision: target } => {
                return Ok(self.compact(&mut writes.batch, *target))
            }
            WriteOp::Put(put) => match view.put(put, revision, events)? {
                OpResult::Put { prev_kv } => WriteOutcome::Put { prev_kv },
                other => unreachable!("put returned {other:?}"),
            },
            WriteOp::Delete(delete) => match view.delete(delete, revision, events)? {
                OpResult::Delete { deleted, prev_kvs } => {
                    WriteOutcome::Delete { deleted, prev_kvs }
                }
                other => unreachable!("delete returned {other:?}"),
            },
            WriteOp::Txn(txn) => {
                let (succeeded, results) = run_txn(view, txn, revision, events)?;
                WriteOutcome::Txn { succeeded, results }
            }
            WriteOp::Batch(txns) => {
                let mut outcomes = Vec::with_capacity(txns.len());
                for txn in txns {
                    outcomes.push(run_txn(view, txn, revision, events)?);
                }
                WriteOutcome::Batch(outcomes)
            }
            WriteOp::Group(_) => unreachable!("groups are unpacked by apply_request"),
        };
        if !events.is_empty() {
            self.meta.revision = revision;
            mvcc::write_history(&mut writes.batch, &self.db, revision, events);
        }
        Ok(outcome)
    }

    fn compact(&mut self, batch: &mut WriteBatch, target: i64) -> WriteOutcome {
        if target <= self.meta.compact_revision {
            return WriteOutcome::Rejected(Rejection::AlreadyCompacted {
                requested: target,
                compacted: self.meta.compact_revision,
            });
        }
        if target > self.meta.revision {
            return WriteOutcome::Rejected(Rejection::FutureRevision {
                requested: target,
                current: self.meta.revision,
            });
        }
        mvcc::compact_history(batch, &self.db, target);
        self.meta.compact_revision = target;
        WriteOutcome::Compacted
    }

    /// Forgets request ids older than the dedup window.
    fn sweep_dedup(&self, batch: &mut WriteBatch, index: u64) -> Result<(), rocksdb::Error> {
        let Some(horizon) = index.checked_sub(limits::DEDUP_WINDOW_ENTRIES) else {
            return Ok(());
        };
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_DEDUP_INDEX),
            IteratorMode::From(&[], Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            if key.len() < 8 || crate::db::key_u64(&key) >= horizon {
                break;
            }
            batch.delete_cf(cf(&self.db, CF_DEDUP), &key[8..]);
            batch.delete_cf(cf(&self.db, CF_DEDUP_INDEX), &key);
        }
        Ok(())
    }
}

/// Evaluates a transaction's compares and runs the branch they select.
fn run_txn(
    view: &mut ApplyView<'_>,
    txn: &crate::types::Txn,
    revision: i64,
    events: &mut Vec<Event>,
) -> Result<(bool, Vec<OpResult>), MvccError> {
    let mut succeeded = true;
    for compare in &txn.compares {
        if !view.compare(compare)? {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut results = Vec::with_capacity(branch.len());
    for op in branch {
        results.push(match op {
            TxnOp::Put(put) => view.put(put, revision, events)?,
            TxnOp::Delete(delete) => view.delete(delete, revision, events)?,
            TxnOp::Range(range) => view.range(range)?,
        });
    }
    Ok((succeeded, results))
}

/// Builds a snapshot of the state as of the moment it was created.
pub struct SnapshotBuilder {
    snap: Option<OwnedSnapshot>,
    meta: SmMeta,
    store: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snap = self
            .snap
            .take()
            .ok_or_else(|| sm_read_err("snapshot builder used twice"))?;
        let last = self.meta.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.meta.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{:08x}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                rand::random::<u32>()
            ),
        };
        let store = self.store.clone();
        let record = tokio::task::spawn_blocking(move || store.build(&snap, meta))
            .await
            .map_err(sm_write_err)?
            .map_err(snapshot_err)?;
        let file = tokio::fs::File::open(self.store.path_of(&record.file))
            .await
            .map_err(sm_read_err)?;
        tracing::info!(snapshot = %record.meta.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta: record.meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, crate::types::StoredMembership), StorageError> {
        Ok((self.meta.last_applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<WriteResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.durability
                .wait_for(last.log_id.index)
                .await
                .map_err(|e| StorageIOError::write_logs(AnyError::error(e)))?;
        }
        entries.into_iter().map(|e| self.apply_entry(e)).collect()
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Taken while no entry is being applied, so it holds exactly `last_applied`.
        SnapshotBuilder {
            snap: Some(OwnedSnapshot::new(self.db.clone())),
            meta: self.meta.clone(),
            store: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = self.snapshots.begin_receiving().map_err(snapshot_err)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &crate::types::SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let file = snapshot.into_std().await;
        let store = self.snapshots.clone();
        let owned_meta = meta.clone();
        tokio::task::spawn_blocking(move || store.install_received(&owned_meta, file))
            .await
            .map_err(sm_write_err)?
            .map_err(snapshot_err)?;
        self.meta = mvcc::read_meta_db(&self.db).map_err(sm_read_err)?;
        if self.meta.last_applied != meta.last_log_id {
            return Err(sm_read_err(format!(
                "installed snapshot {} holds state up to {:?}, its meta says {:?}",
                meta.snapshot_id, self.meta.last_applied, meta.last_log_id
            )));
        }
        self.hub.reset(self.meta.revision);
        tracing::info!(snapshot = %meta.snapshot_id, revision = self.meta.revision, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(record) = self.snapshots.current().map_err(snapshot_err)? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(self.snapshots.path_of(&record.file))
            .await
            .map_err(sm_read_err)?;
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: Box::new(file),
        }))
    }
}
