//! The MVCC key-value model on RocksDB: applying operations at a revision, and reading ranges at
//! the current or an older revision.
//!
//! The `kv` column family holds the latest record of each live key; `history` holds, per
//! revision, the events of that revision with each key's previous record. A read at an older
//! revision R starts from the latest records and undoes, key by key, the changes made after R.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use rocksdb::{Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::db::{cf, decode, encode, key_u64, u64_key, CF_HISTORY, CF_KV, CF_SM};
use crate::types::{
    limits, Compare, CompareOp, CompareTarget, DeleteOp, Event, EventKind, KeyRange, KeyValue,
    KvRecord, LogId, OpResult, PutOp, RangeOp, RangeResult, StoredMembership,
};

const KEY_META: &[u8] = b"meta";

/// Live keys of one page of a range, in key order, and whether more follow.
type Page = (Vec<(Vec<u8>, KvRecord)>, bool);

/// Errors of the MVCC layer.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("corrupt record in the store: {0}")]
    Corrupt(#[from] bincode::Error),
    #[error("revision {requested} is compacted (compacted up to {compacted}): relist")]
    Compacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision { requested: i64, current: i64 },
}

/// State machine bookkeeping, stored as one record so that it changes atomically with the data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The latest revision; 0 for an empty store, bumped by every write that changes a key.
    pub revision: i64,
    /// History at and below this revision is gone.
    pub compact_revision: i64,
    /// The highest Raft term among applied entries (fences deposed leaders' writes).
    pub term: u64,
}

pub fn read_meta_db(db: &DB) -> Result<SmMeta, MvccError> {
    match db.get_cf(cf(db, CF_SM), KEY_META)? {
        Some(raw) => Ok(decode(&raw)?),
        None => Ok(SmMeta::default()),
    }
}

pub fn write_meta(batch: &mut WriteBatch, db: &DB, meta: &SmMeta) {
    batch.put_cf(cf(db, CF_SM), KEY_META, encode(meta));
}

fn bounded_opts(range: &KeyRange) -> ReadOptions {
    let mut opts = ReadOptions::default();
    if let Some(upper) = range.upper_bound() {
        opts.set_iterate_upper_bound(upper);
    }
    opts
}

/// The state machine's view while applying one entry: RocksDB plus the writes of the entry's
/// earlier operations, so that a transaction sees its own writes.
pub struct ApplyView<'a> {
    db: &'a DB,
    overlay: BTreeMap<Vec<u8>, Option<KvRecord>>,
    /// Records read from RocksDB, which does not change while the view lives: a conditional put
    /// reads its key twice (the compare, then the put), and each read was a lookup and a decode.
    /// Holds at most the keys one entry touches.
    read: RefCell<HashMap<Vec<u8>, Option<KvRecord>>>,
}

impl<'a> ApplyView<'a> {
    pub fn new(db: &'a DB) -> Self {
        ApplyView {
            db,
            overlay: BTreeMap::new(),
            read: RefCell::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KvRecord>, MvccError> {
        if let Some(pending) = self.overlay.get(key) {
            return Ok(pending.clone());
        }
        if let Some(read) = self.read.borrow().get(key) {
            return Ok(read.clone());
        }
        let record = match self.db.get_cf(cf(self.db, CF_KV), key)? {
            Some(raw) => Some(decode::<KvRecord>(&raw)?),
            None => None,
        };
        self.read.borrow_mut().insert(key.to_vec(), record.clone());
        Ok(record)
    }

    /// Live keys in `range`, in key order, at most `limit` (plus whether more exist).
    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Page, MvccError> {
        if range.is_single_key() {
            let found = self.get(&range.start)?.map(|r| (range.start.clone(), r));
            return Ok((found.into_iter().collect(), false));
        }
        let upper = range.upper_bound();
        let pending: Vec<(&Vec<u8>, &Option<KvRecord>)> = self
            .overlay
            .range::<Vec<u8>, _>((
                Bound::Included(&range.start),
                match &upper {
                    Some(u) => Bound::Excluded(u),
                    None => Bound::Unbounded,
                },
            ))
            .collect();
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_KV),
            bounded_opts(range),
            IteratorMode::From(&range.start, Direction::Forward),
        );
        merge_overlay(iter, pending.into_iter(), limit)
    }

    pub fn compare(&self, compare: &Compare) -> Result<bool, MvccError> {
        let current = self.get(&compare.key)?;
        Ok(evaluate_compare(compare, current.as_ref()))
    }

    pub fn put(
        &mut self,
        op: &PutOp,
        revision: i64,
        events: &mut Vec<Event>,
    ) -> Result<OpResult, MvccError> {
        let prev = self.get(&op.key)?;
        let record = KvRecord {
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: op.value.clone(),
        };
        let prev_kv = prev.as_ref().map(|p| KeyValue::from_record(&op.key, p));
        events.push(Event {
            kind: EventKind::Put,
            kv: KeyValue::from_record(&op.key, &record),
            prev_kv: prev_kv.clone(),
        });
        self.overlay.insert(op.key.clone(), Some(record));
        Ok(OpResult::Put {
            prev_kv: if op.prev_kv { prev_kv } else { None },
        })
    }

    pub fn delete(
        &mut self,
        op: &DeleteOp,
        revision: i64,
        events: &mut Vec<Event>,
    ) -> Result<OpResult, MvccError> {
        let (doomed, _) = self.scan(&op.range, usize::MAX - 1)?;
        let mut prev_kvs = Vec::new();
        for (key, prev) in &doomed {
            let prev_kv = KeyValue::from_record(key, prev);
            events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    create_revision: 0,
                    mod_revision: revision,
                    version: 0,
                    value: Vec::new(),
                },
                prev_kv: Some(prev_kv.clone()),
            });
            if op.prev_kv {
                prev_kvs.push(prev_kv);
            }
            self.overlay.insert(key.clone(), None);
        }
        Ok(OpResult::Delete {
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    pub fn range(&self, op: &RangeOp) -> Result<OpResult, MvccError> {
        let limit = effective_limit(op.limit);
        if op.count_only {
            let (all, _) = self.scan(&op.range, usize::MAX - 1)?;
            return Ok(OpResult::Range(RangeResult {
                kvs: Vec::new(),
                more: false,
                count: all.len() as i64,
            }));
        }
        let (found, more) = self.scan(&op.range, limit)?;
        let kvs: Vec<KeyValue> = found
            .iter()
            .map(|(k, r)| strip(KeyValue::from_record(k, r), op.keys_only))
            .collect();
        Ok(OpResult::Range(RangeResult {
            count: kvs.len() as i64,
            kvs,
            more,
        }))
    }

    /// Moves the pending writes into `batch`.
    pub fn flush_into(self, batch: &mut WriteBatch) {
        let kv = cf(self.db, CF_KV);
        for (key, record) in self.overlay {
            match record {
                Some(record) => batch.put_cf(kv, key, encode(&record)),
                None => batch.delete_cf(kv, key),
            }
        }
    }
}

/// Merges a RocksDB iterator over the `kv` column family with an ordered overlay whose entries
/// replace the stored record of the same key (`None` hides it). Returns at most `limit` live keys
/// in key order and whether more exist.
fn merge_overlay<'o, I>(
    base: I,
    overlay: impl Iterator<Item = (&'o Vec<u8>, &'o Option<KvRecord>)>,
    limit: usize,
) -> Result<Page, MvccError>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    let mut collector = Collector {
        out: Vec::new(),
        bytes: 0,
        limit,
    };
    let mut overlay = overlay.peekable();
    for item in base {
        let (key, raw) = item?;
        while let Some((okey, orec)) = overlay.next_if(|(okey, _)| okey.as_slice() < key.as_ref()) {
            if collector.push(okey, orec.clone()) {
                return Ok(collector.finish_early());
            }
        }
        let rec = match overlay.next_if(|(okey, _)| okey.as_slice() == key.as_ref()) {
            Some((_, orec)) => orec.clone(),
            None => Some(decode(&raw)?),
        };
        if collector.push(&key, rec) {
            return Ok(collector.finish_early());
        }
    }
    for (okey, orec) in overlay {
        if collector.push(okey, orec.clone()) {
            return Ok(collector.finish_early());
        }
    }
    Ok((collector.out, false))
}

/// Gathers the live keys of a range up to a count and a byte budget.
struct Collector {
    out: Vec<(Vec<u8>, KvRecord)>,
    bytes: usize,
    limit: usize,
}

impl Collector {
    /// Adds a key if it is live; returns true when the page is full.
    fn push(&mut self, key: &[u8], record: Option<KvRecord>) -> bool {
        if let Some(record) = record {
            self.bytes += key.len() + record.value.len();
            self.out.push((key.to_vec(), record));
        }
        self.out.len() > self.limit || self.bytes > limits::MAX_RANGE_RESPONSE_BYTES
    }

    /// The page when it filled up before the range ended: more keys may follow.
    fn finish_early(self) -> Page {
        let mut out = self.out;
        out.truncate(self.limit);
        (out, true)
    }
}

fn strip(mut kv: KeyValue, keys_only: bool) -> KeyValue {
    if keys_only {
        kv.value.clear();
    }
    kv
}

/// A `limit` of 0 means the server's maximum page.
pub fn effective_limit(limit: usize) -> usize {
    if limit == 0 {
        limits::MAX_RANGE_LIMIT
    } else {
        limit.min(limits::MAX_RANGE_LIMIT)
    }
}

pub fn evaluate_compare(compare: &Compare, current: Option<&KvRecord>) -> bool {
    use std::cmp::Ordering;
    let ordering = match &compare.target {
        CompareTarget::Exists(expected) => {
            let equal = current.is_some() == *expected;
            return match compare.op {
                CompareOp::Equal => equal,
                CompareOp::NotEqual => !equal,
                CompareOp::Greater | CompareOp::Less => false,
            };
        }
        CompareTarget::Version(v) => current.map_or(0, |r| r.version).cmp(v),
        CompareTarget::CreateRevision(v) => current.map_or(0, |r| r.create_revision).cmp(v),
        CompareTarget::ModRevision(v) => current.map_or(0, |r| r.mod_revision).cmp(v),
        CompareTarget::Value(v) => match current {
            // A missing key has no value: every value compare fails, as in etcd.
            None => return false,
            Some(r) => r.value.as_slice().cmp(v.as_slice()),
        },
    };
    match compare.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::Less => ordering == Ordering::Less,
    }
}

/// Appends the events of one revision to history.
pub fn write_history(batch: &mut WriteBatch, db: &DB, revision: i64, events: &[Event]) {
    batch.put_cf(
        cf(db, CF_HISTORY),
        u64_key(revision as u64),
        // A slice encodes exactly as a Vec does (length, then items): no copy of the events.
        encode(&events),
    );
}

/// Drops history at and below `revision`.
pub fn compact_history(batch: &mut WriteBatch, db: &DB, revision: i64) {
    batch.delete_range_cf(cf(db, CF_HISTORY), u64_key(0), u64_key(revision as u64 + 1));
}

/// A consistent read view: one RocksDB snapshot plus the state machine meta at that snapshot.
pub struct ReadView<'a> {
    db: &'a DB,
    snap: SnapshotWithThreadMode<'a, DB>,
    pub meta: SmMeta,
}

/// A read at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeQuery {
    pub range: KeyRange,
    pub limit: usize,
    /// 0 = current.
    pub revision: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

impl RangeQuery {
    pub fn new(range: KeyRange) -> Self {
        RangeQuery {
            range,
            limit: 0,
            revision: 0,
            keys_only: false,
            count_only: false,
        }
    }
}

impl<'a> ReadView<'a> {
    pub fn new(db: &'a DB) -> Result<Self, MvccError> {
        let snap = db.snapshot();
        let meta = match snap.get_cf(cf(db, CF_SM), KEY_META)? {
            Some(raw) => decode(&raw)?,
            None => SmMeta::default(),
        };
        Ok(ReadView { db, snap, meta })
    }

    fn opts(&self, upper: Option<Vec<u8>>) -> ReadOptions {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snap);
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper);
        }
        opts
    }

    /// Events of revisions in `[from, to]`, in order, at most `max_revisions` revisions.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
    ) -> Result<Vec<(i64, Vec<Event>)>, MvccError> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_HISTORY),
            self.opts(Some(u64_key(to as u64 + 1).to_vec())),
            IteratorMode::From(&u64_key(from.max(0) as u64), Direction::Forward),
        );
        for item in iter {
            if out.len() >= max_revisions {
                break;
            }
            let (key, raw) = item?;
            out.push((key_u64(&key) as i64, decode(&raw)?));
        }
        Ok(out)
    }

    pub fn range(&self, query: &RangeQuery) -> Result<RangeResult, MvccError> {
        let current = self.meta.revision;
        let at = if query.revision <= 0 {
            current
        } else {
            query.revision
        };
        if at > current {
            return Err(MvccError::FutureRevision {
                requested: at,
                current,
            });
        }
        if at < self.meta.compact_revision {
            return Err(MvccError::Compacted {
                requested: at,
                compacted: self.meta.compact_revision,
            });
        }
        let undo = self.undo_map(&query.range, at)?;
        let limit = if query.count_only {
            usize::MAX - 1
        } else {
            effective_limit(query.limit)
        };
        let (found, more) = self.merged_scan(&query.range, &undo, limit)?;
        if query.count_only {
            return Ok(RangeResult {
                kvs: Vec::new(),
                more: false,
                count: found.len() as i64,
            });
        }
        let kvs: Vec<KeyValue> = found
            .into_iter()
            .map(|(k, r)| strip(KeyValue::from_record(&k, &r), query.keys_only))
            .collect();
        Ok(RangeResult {
            count: kvs.len() as i64,
            kvs,
            more,
        })
    }

    /// For every key in `range` changed after revision `at`, its record at `at`.
    fn undo_map(
        &self,
        range: &KeyRange,
        at: i64,
    ) -> Result<BTreeMap<Vec<u8>, Option<KvRecord>>, MvccError> {
        let mut undo = BTreeMap::new();
        if at >= self.meta.revision {
            return Ok(undo);
        }
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_HISTORY),
            self.opts(None),
            IteratorMode::From(&u64_key(at as u64 + 1), Direction::Forward),
        );
        for item in iter {
            let (_, raw) = item?;
            let events: Vec<Event> = decode(&raw)?;
            for event in events {
                if range.contains(&event.kv.key) && !undo.contains_key(&event.kv.key) {
                    let prev = event.prev_kv.map(|p| KvRecord {
                        create_revision: p.create_revision,
                        mod_revision: p.mod_revision,
                        version: p.version,
                        value: p.value,
                    });
                    undo.insert(event.kv.key, prev);
                }
            }
        }
        Ok(undo)
    }

    fn merged_scan(
        &self,
        range: &KeyRange,
        undo: &BTreeMap<Vec<u8>, Option<KvRecord>>,
        limit: usize,
    ) -> Result<Page, MvccError> {
        let kv = cf(self.db, CF_KV);
        if range.is_single_key() {
            let rec = match undo.get(&range.start) {
                Some(old) => old.clone(),
                None => match self.snap.get_cf(kv, &range.start)? {
                    Some(raw) => Some(decode(&raw)?),
                    None => None,
                },
            };
            return Ok((
                rec.map(|r| (range.start.clone(), r)).into_iter().collect(),
                false,
            ));
        }
        let iter = self.db.iterator_cf_opt(
            kv,
            self.opts(range.upper_bound()),
            IteratorMode::From(&range.start, Direction::Forward),
        );
        merge_overlay(iter, undo.iter(), limit)
    }
}
