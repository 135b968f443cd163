//! The Raft log on RocksDB: entries, vote, committed and purged log ids.
//!
//! Durability: `append` writes the entries to RocksDB (readable at once) and hands the flush
//! callback to a dedicated flusher thread, which fsyncs the write-ahead log once for every group
//! of queued appends and only then reports them flushed to openraft. The vote, truncation and
//! purge are written with `sync = true` before they return.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::db::{self, cf, decode, encode, u64_key, CF_LOG, CF_RAFT};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Most append callbacks waiting for the flusher; `append` waits when the queue is full.
pub const FLUSH_QUEUE_CAPACITY: usize = 4096;
/// Most callbacks completed by one WAL fsync.
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

/// The log half of the store.
pub struct LogStore {
    db: Arc<DB>,
    flush_queue: SyncSender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        let (tx, rx) = sync_channel(FLUSH_QUEUE_CAPACITY);
        let weak = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(weak, rx))
            .expect("spawning the log flusher thread");
        LogStore {
            db,
            flush_queue: tx,
        }
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

/// Fsyncs the WAL for groups of appends. Holds only a weak reference so that closing the store
/// is not delayed by this thread.
fn flusher(db: Weak<DB>, queue: Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < FLUSH_GROUP_MAX {
            match queue.try_recv() {
                Ok(cb) => group.push(cb),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the store was closed before the log was flushed".to_string()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "fsync of the Raft log failed; the peer stops");
        }
        for cb in group {
            cb.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
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
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
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
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
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
        for entry in entries {
            batch.put_cf(log, u64_key(entry.log_id.index), encode(&entry));
        }
        // Written to the WAL and memtable now (readable), fsynced by the flusher.
        self.db.write(batch).map_err(write_err)?;
        self.flush_queue
            .send(callback)
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
        self.db.write_opt(batch, &synced()).map_err(write_err)
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
