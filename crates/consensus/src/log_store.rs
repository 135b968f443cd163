//! The Raft log on RocksDB: entries, vote, committed and purged log ids.
//!
//! Durability: a follower's `append` writes the entries with `sync = true` and reports them to
//! openraft after that fsync. The leader's own appends are written to RocksDB (readable at once),
//! reported at once and queued for a dedicated flusher thread, which fsyncs the write-ahead log
//! once for every group of queued appends while they are replicated; [`Durability`] records what
//! is on disk and explains why reporting early loses nothing. The vote, truncation and purge are
//! written with `sync = true` before they return.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::db::{self, cf, decode, encode, u64_key, CF_LOG, CF_RAFT};
use crate::durable::Durability;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Most leader appends waiting for the flusher; `append` waits when the queue is full.
pub const FLUSH_QUEUE_CAPACITY: usize = 4096;
/// Most appends recorded on disk by one WAL fsync.
pub const FLUSH_GROUP_MAX: usize = 1024;

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// Reads log entries; cloned freely, one per replication stream.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range)
    }
}

fn read_entries(db: &DB, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    };
    let mut entries = Vec::new();
    let iter = db.iterator_cf(
        cf(db, CF_LOG),
        IteratorMode::From(&u64_key(start), Direction::Forward),
    );
    for item in iter {
        let (key, value) = item.map_err(read_err)?;
        let index = db::key_u64(&key);
        if !range.contains(&index) {
            break;
        }
        let entry: Entry = decode(&value).map_err(read_err)?;
        entries.push(entry);
    }
    Ok(entries)
}

/// A leader's append waiting for the flusher: the generation it was written in and its last
/// entry.
struct Unflushed {
    generation: u64,
    last: LogId,
}

/// The log half of the store.
pub struct LogStore {
    id: NodeId,
    db: Arc<DB>,
    /// The vote last saved: whose entries this peer appends as their leader.
    vote: Option<Vote>,
    durability: Arc<Durability>,
    flush_queue: SyncSender<Unflushed>,
}

impl LogStore {
    /// Opens the log of peer `id`: makes what it holds durable and records that in `durability`.
    pub fn new(db: Arc<DB>, id: NodeId, durability: Arc<Durability>) -> Result<Self, StorageError> {
        let (tx, rx) = sync_channel(FLUSH_QUEUE_CAPACITY);
        let weak = Arc::downgrade(&db);
        let flushing = durability.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(weak, rx, flushing))
            .map_err(write_err)?;
        let mut store = LogStore {
            id,
            db,
            vote: None,
            durability,
            flush_queue: tx,
        };
        // A restart after a kill may find entries that were written and never fsynced.
        store.db.flush_wal(true).map_err(write_err)?;
        store.vote = store.get_meta(KEY_VOTE)?;
        store.durability.reset(store.last_log_id()?);
        Ok(store)
    }

    /// The last entry of the log, or the last purged one when it is empty.
    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        Ok(self.last_entry_log_id()?.or(purged))
    }

    /// Whether `last` (the end of an append) was proposed by this peer as the leader of the
    /// vote it holds: then openraft may count it written before it is on disk.
    fn leads(&self, last: &LogId) -> bool {
        self.vote.as_ref().is_some_and(|vote| {
            vote.is_committed()
                && vote.leader_id().voted_for() == Some(self.id)
                && last.leader_id.term == vote.leader_id().get_term()
                && last.leader_id.node_id == self.id
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(cf(&self.db, CF_RAFT), key)
            .map_err(read_err)?;
        raw.map(|bytes| decode(&bytes).map_err(read_err))
            .transpose()
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                let entry: Entry = decode(&value).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// Records a failed fsync of the log: applies stop and the peer stops.
fn fsync_failed(durability: &Durability, error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "fsync of the Raft log failed; the peer stops");
    durability.failed(format!("fsync of the Raft log failed: {error}"));
}

/// Fsyncs the WAL for groups of appends. Holds only a weak reference so that closing the store
/// is not delayed by this thread.
fn flusher(db: Weak<DB>, queue: Receiver<Unflushed>, durability: Arc<Durability>) {
    while let Ok(first) = queue.recv() {
        // One fsync covers every append queued so far; the newest says how far (an older one
        // of an earlier generation says nothing more, see `Durability::flushed`).
        let mut newest = first;
        for _ in 1..FLUSH_GROUP_MAX {
            match queue.try_recv() {
                Ok(next) => newest = next,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the store was closed before the log was flushed".to_string()),
        };
        match result {
            Ok(()) => durability.flushed(newest.generation, newest.last),
            Err(e) => fsync_failed(&durability, &e),
        }
    }
    // The log store is gone: an apply still waiting would wait forever.
    durability.failed("the Raft log was closed".into());
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.get_meta(KEY_PURGED)?,
            last_log_id: self.last_log_id()?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            db: self.db.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(cf(&self.db, CF_RAFT), KEY_VOTE, encode(vote), &synced())
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a lost committed id only means re-learning it from the leader.
        self.db
            .put_cf(cf(&self.db, CF_RAFT), KEY_COMMITTED, encode(&committed))
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        let mut last = None;
        for entry in entries {
            batch.put_cf(log, u64_key(entry.log_id.index), encode(&entry));
            last = Some(entry.log_id);
        }
        let Some(last) = last else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let generation = self.durability.generation();
        if !self.leads(&last) {
            // A follower answers its leader only once the entries are on disk, and its leader
            // sends the next entries only after that answer: nothing would join a group, so the
            // entries are fsynced here rather than handed to the flusher and back.
            if let Err(e) = self.db.write_opt(batch, &synced()) {
                fsync_failed(&self.durability, &e);
                return Err(write_err(e));
            }
            self.durability.flushed(generation, last);
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // The leader's own entries: written to the WAL and memtable now (readable), reported at
        // once, fsynced by the flusher while they are replicated.
        self.db.write(batch).map_err(write_err)?;
        callback.log_io_completed(Ok(()));
        let unflushed = Unflushed { generation, last };
        self.flush_queue
            .send(unflushed)
            .map_err(|_| write_err(std::io::Error::other("the log flusher thread has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            u64_key(log_id.index),
            u64_key(u64::MAX),
        );
        batch.delete_cf(cf(&self.db, CF_LOG), u64_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(write_err)?;
        // The synced write put everything before it on disk, the entries left included.
        self.durability.reset(self.last_log_id()?);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT), KEY_PURGED, encode(&log_id));
        batch.delete_range_cf(cf(&self.db, CF_LOG), u64_key(0), u64_key(log_id.index + 1));
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }
}

/// The id of the peer that wrote the vote, for status reports.
pub fn read_vote_blocking(db: &DB) -> Option<Vote> {
    let raw = db.get_cf(cf(db, CF_RAFT), KEY_VOTE).ok()??;
    decode(&raw).ok()
}

/// Whether this data directory already holds Raft state (a vote or any log entry).
pub fn has_state(db: &DB) -> bool {
    let voted = db
        .get_cf(cf(db, CF_RAFT), KEY_VOTE)
        .ok()
        .flatten()
        .is_some();
    let logged = db
        .iterator_cf(cf(db, CF_LOG), IteratorMode::Start)
        .next()
        .is_some();
    voted || logged
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<LogStore>();
    check::<NodeId>();
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, leader: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, leader), index)
    }

    #[tokio::test]
    async fn only_the_leaders_own_appends_are_reported_before_their_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::open(&dir.path().join("db")).unwrap();
        let mut store = LogStore::new(db, 2, Durability::new()).unwrap();
        assert!(!store.leads(&log_id(1, 2, 1)), "no vote yet");

        store.save_vote(&Vote::new(3, 2)).await.unwrap();
        assert!(
            !store.leads(&log_id(3, 2, 1)),
            "a candidate is not a leader yet"
        );

        store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        assert!(store.leads(&log_id(3, 2, 1)));
        assert!(
            !store.leads(&log_id(2, 2, 1)),
            "an entry of an earlier term is appended as a follower"
        );
        assert!(!store.leads(&log_id(3, 1, 1)));

        store.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        assert!(!store.leads(&log_id(3, 2, 1)), "peer 1 leads now");
        assert!(!store.leads(&log_id(4, 1, 1)));
    }

    #[tokio::test]
    async fn closing_the_log_releases_an_apply_waiting_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::open(&dir.path().join("db")).unwrap();
        let durability = Durability::new();
        let store = LogStore::new(db, 1, durability.clone()).unwrap();
        let waiting = {
            let durability = durability.clone();
            tokio::spawn(async move { durability.wait_for(10).await })
        };
        drop(store);
        let released = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends when the log closes")
            .unwrap();
        assert_eq!(released, Err("the Raft log was closed".to_string()));
    }
}
