//! Watches: subscribe to a key range from a revision and receive every later change in order,
//! with no gaps and no duplicates.
//!
//! A new watcher registers with the hub (which records the revision it has published up to),
//! replays older revisions from the `history` column family, then follows live events. Each
//! watcher's live queue is bounded; a watcher that falls further behind than that is cancelled
//! with [`WatchError::FellBehind`] instead of growing memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rocksdb::DB;
use tokio::sync::mpsc;

use crate::mvcc::{MvccError, ReadView};
use crate::types::{Event, KeyRange};

/// Revisions read from history per replay step.
pub const REPLAY_PAGE_REVISIONS: usize = 256;

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Revisions queued per watcher before it is cancelled as too slow.
    pub buffer_revisions: usize,
    /// Most watchers registered on one peer at once.
    pub max_watchers: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            buffer_revisions: 1024,
            max_watchers: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("revision {requested} is compacted (compacted up to {compact_revision}): relist, then watch from the list's revision")]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    #[error("the watcher fell more than {buffer} revisions behind and was cancelled; resume from revision {next_revision}")]
    FellBehind { next_revision: i64, buffer: usize },
    #[error(
        "this peer's state was replaced by a snapshot from the leader; relist, then watch again"
    )]
    Reset,
    #[error("the store is shutting down")]
    Closed,
    #[error("too many watchers on this peer (limit {0})")]
    TooMany(usize),
    #[error("storage error while replaying history: {0}")]
    Storage(String),
}

/// Events of one or more whole revisions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    /// The highest revision this batch covers.
    pub revision: i64,
}

const END_NONE: u8 = 0;
const END_LAGGED: u8 = 1;
const END_RESET: u8 = 2;

struct Live {
    range: KeyRange,
    tx: mpsc::Sender<(i64, Vec<Event>)>,
    end: Arc<AtomicU8>,
}

struct HubInner {
    next_id: u64,
    /// Every revision up to this one is in RocksDB and was offered to live watchers.
    revision: i64,
    closed: bool,
    watchers: HashMap<u64, Live>,
}

pub struct WatchHub {
    inner: Mutex<HubInner>,
    config: WatchConfig,
}

impl WatchHub {
    pub fn new(revision: i64, config: WatchConfig) -> Arc<Self> {
        Arc::new(WatchHub {
            inner: Mutex::new(HubInner {
                next_id: 0,
                revision,
                closed: false,
                watchers: HashMap::new(),
            }),
            config,
        })
    }

    pub fn watcher_count(&self) -> usize {
        self.inner.lock().expect("watch hub lock").watchers.len()
    }

    /// Offers the events of `revision` (already durable in RocksDB) to live watchers.
    pub fn publish(&self, revision: i64, events: &[Event]) {
        let mut inner = self.inner.lock().expect("watch hub lock");
        inner.revision = revision;
        inner.watchers.retain(|_, live| {
            let matching: Vec<Event> = events
                .iter()
                .filter(|e| live.range.contains(&e.kv.key))
                .cloned()
                .collect();
            if matching.is_empty() {
                return !live.tx.is_closed();
            }
            match live.tx.try_send((revision, matching)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    live.end.store(END_LAGGED, Ordering::SeqCst);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Cancels every watcher: the state was replaced wholesale (snapshot install).
    pub fn reset(&self, revision: i64) {
        let mut inner = self.inner.lock().expect("watch hub lock");
        inner.revision = revision;
        for (_, live) in inner.watchers.drain() {
            live.end.store(END_RESET, Ordering::SeqCst);
        }
    }

    /// Ends every watcher and refuses new ones.
    pub fn close(&self) {
        let mut inner = self.inner.lock().expect("watch hub lock");
        inner.closed = true;
        inner.watchers.clear();
    }

    /// Starts a watch on `range` from `start_revision` (0: changes after the current revision).
    pub fn subscribe(
        self: &Arc<Self>,
        db: Arc<DB>,
        range: KeyRange,
        start_revision: i64,
    ) -> Result<Watcher, WatchError> {
        let compact_revision = ReadView::new(&db)
            .map_err(|e| WatchError::Storage(e.to_string()))?
            .meta
            .compact_revision;
        if start_revision > 0 && start_revision <= compact_revision {
            return Err(WatchError::Compacted {
                requested: start_revision,
                compact_revision,
            });
        }
        let mut inner = self.inner.lock().expect("watch hub lock");
        if inner.closed {
            return Err(WatchError::Closed);
        }
        if inner.watchers.len() >= self.config.max_watchers {
            return Err(WatchError::TooMany(self.config.max_watchers));
        }
        let (tx, rx) = mpsc::channel(self.config.buffer_revisions.max(1));
        let end = Arc::new(AtomicU8::new(END_NONE));
        let id = inner.next_id;
        inner.next_id += 1;
        let registered_at = inner.revision;
        inner.watchers.insert(
            id,
            Live {
                range: range.clone(),
                tx,
                end: end.clone(),
            },
        );
        drop(inner);
        let next_revision = if start_revision <= 0 {
            registered_at + 1
        } else {
            start_revision
        };
        Ok(Watcher {
            id,
            hub: self.clone(),
            db: Arc::downgrade(&db),
            range,
            next_revision,
            replay_until: registered_at,
            rx,
            end,
        })
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.watchers.remove(&id);
        }
    }
}

/// One watch. Dropping it unregisters it.
pub struct Watcher {
    id: u64,
    hub: Arc<WatchHub>,
    /// Weak, so that a lingering watcher does not keep a closed store open.
    db: Weak<DB>,
    range: KeyRange,
    /// The next revision this watcher has not yet delivered.
    next_revision: i64,
    /// History up to here is replayed from RocksDB; later revisions arrive live.
    replay_until: i64,
    rx: mpsc::Receiver<(i64, Vec<Event>)>,
    end: Arc<AtomicU8>,
}

impl Watcher {
    /// The next revision this watcher would deliver: resume from here after an error.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The next batch of events, or an error that ends the watch.
    pub async fn next(&mut self) -> Result<WatchBatch, WatchError> {
        while self.next_revision <= self.replay_until {
            if let Some(batch) = self.replay_page()? {
                return Ok(batch);
            }
        }
        loop {
            match self.rx.recv().await {
                Some((revision, events)) => {
                    if revision < self.next_revision {
                        continue;
                    }
                    self.next_revision = revision + 1;
                    return Ok(WatchBatch { events, revision });
                }
                None => {
                    return Err(match self.end.load(Ordering::SeqCst) {
                        END_LAGGED => WatchError::FellBehind {
                            next_revision: self.next_revision,
                            buffer: self.hub.config.buffer_revisions,
                        },
                        END_RESET => WatchError::Reset,
                        _ => WatchError::Closed,
                    });
                }
            }
        }
    }

    /// Reads one page of history; `None` when the page held nothing for this watcher.
    fn replay_page(&mut self) -> Result<Option<WatchBatch>, WatchError> {
        let storage = |e: MvccError| WatchError::Storage(e.to_string());
        let db = self.db.upgrade().ok_or(WatchError::Closed)?;
        let view = ReadView::new(&db).map_err(storage)?;
        if self.next_revision <= view.meta.compact_revision {
            return Err(WatchError::Compacted {
                requested: self.next_revision,
                compact_revision: view.meta.compact_revision,
            });
        }
        let page = view
            .history(self.next_revision, self.replay_until, REPLAY_PAGE_REVISIONS)
            .map_err(storage)?;
        let covered = match page.last() {
            Some((revision, _)) if page.len() >= REPLAY_PAGE_REVISIONS => *revision,
            _ => self.replay_until,
        };
        let events: Vec<Event> = page
            .into_iter()
            .flat_map(|(_, events)| events)
            .filter(|e| self.range.contains(&e.kv.key))
            .collect();
        self.next_revision = covered + 1;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(WatchBatch {
            events,
            revision: covered,
        }))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}
