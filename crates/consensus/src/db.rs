//! The one RocksDB instance of a peer, its column families and small encoding helpers.
//!
//! Column families:
//! - `log`: Raft log entries, keyed by index (u64 big-endian).
//! - `raft`: vote, last purged log id, committed log id.
//! - `kv`: the latest record of every live key.
//! - `history`: per revision (u64 big-endian), the events of that revision, each with the
//!   previous record — enough to replay watches and to read at an older revision.
//! - `sm`: state machine meta (last applied, membership, revision, compacted revision, term).
//! - `dedup`: client request id -> (log index, response) for the dedup window.
//! - `dedup_index`: log index ‖ request id, to expire the window in index order.
//! - `snapshot`: the current snapshot's meta and the install-in-progress marker.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_KV: &str = "kv";
pub const CF_HISTORY: &str = "history";
pub const CF_SM: &str = "sm";
pub const CF_DEDUP: &str = "dedup";
pub const CF_DEDUP_INDEX: &str = "dedup_index";
pub const CF_SNAPSHOT: &str = "snapshot";

/// The column families that make up the state machine; a snapshot holds exactly these.
pub const STATE_MACHINE_CFS: [&str; 5] = [CF_KV, CF_HISTORY, CF_SM, CF_DEDUP, CF_DEDUP_INDEX];

/// Column families read by exact key on every write (request ids, current key records).
const POINT_LOOKUP_CFS: [&str; 2] = [CF_DEDUP, CF_KV];
/// Bloom filter bits per key (about 1 % false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Share of a memtable's size given to its bloom filter.
const MEMTABLE_BLOOM_RATIO: f64 = 0.1;

/// The column families every write lands in: the log entry, the key's new record and its
/// history. Larger memtables there mean fewer, larger level-0 files and so fewer compactions,
/// which rewrite the `kv` family's random keys: with 16 MiB memtables, flushes and compactions
/// took a fifth of a follower's CPU in `bench-sched` (b), and the run used a third more CPU in
/// all. Memory: at most two memtables of each (one filling, one flushing), 384 MiB.
const BULK_CFS: [&str; 3] = [CF_LOG, CF_KV, CF_HISTORY];
const BULK_MEMTABLE_BYTES: usize = 64 * 1024 * 1024;
/// Memtable size of the other, small column families.
const MEMTABLE_BYTES: usize = 16 * 1024 * 1024;
/// How SST files are compressed. Stored objects are JSON with the same field names over and
/// over; uncompressed, the flushes and compactions of three peers on one disk wrote hundreds of
/// MB/s in `bench-sched` (b), and the Raft log's fsyncs waited behind them past openraft's
/// append deadline. The WAL stays uncompressed (it is fsynced on the write path).
const SST_COMPRESSION: DBCompressionType = DBCompressionType::Lz4;
/// WAL size that forces the oldest memtables to flush (see `open`).
const WAL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Flushes and compactions write their files to disk in steps of this size as they go, rather
/// than leaving up to a memtable's worth of dirty pages for the file's final fsync: that burst
/// queued in front of the Raft log's own fsyncs, and a follower's append then outlasted the
/// heartbeat interval openraft gives it.
const BACKGROUND_SYNC_BYTES: u64 = 1024 * 1024;
/// WAL files kept, once their memtables are flushed, to be written over by later WALs. The
/// Raft log's appends are fsynced WAL writes: appending past a file's end changes its size, and
/// every `fdatasync` must then write the file's metadata (its inode, or ext4's journal) besides
/// the data; writing over an old file changes no size. Synced 400-byte writes took p50
/// 114–132 µs against 146–180 µs once the WAL had rolled. Costs at most this many old WAL files
/// of disk (each up to about a memtable's size).
const RECYCLED_WAL_FILES: usize = 2;

const ALL_CFS: [&str; 8] = [
    CF_LOG,
    CF_RAFT,
    CF_KV,
    CF_HISTORY,
    CF_SM,
    CF_DEDUP,
    CF_DEDUP_INDEX,
    CF_SNAPSHOT,
];

/// A key greater than every key the store writes (keys are at most
/// [`crate::types::limits::MAX_KEY_BYTES`] long; request ids and indexes are shorter).
pub fn key_space_end() -> Vec<u8> {
    vec![0xff; crate::types::limits::MAX_KEY_BYTES + 256]
}

pub fn open(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // The log column family is synced explicitly and state machine writes are ordered behind it
    // in the same WAL. A WAL past this size forces the memtables holding its oldest data to
    // flush: at 64 MiB it flushed small column families and half-full memtables every second
    // under load. Bounds what a restart replays.
    opts.set_max_total_wal_size(WAL_MAX_BYTES);
    opts.set_keep_log_file_num(4);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(BACKGROUND_SYNC_BYTES);
    // Supported with the default point-in-time WAL recovery: a recycled file's old records
    // carry an older log number and end the replay where the new ones end.
    opts.set_recycle_log_file_num(RECYCLED_WAL_FILES);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(SST_COMPRESSION);
        let bulk = BULK_CFS.contains(name);
        cf_opts.set_write_buffer_size(if bulk {
            BULK_MEMTABLE_BYTES
        } else {
            MEMTABLE_BYTES
        });
        if POINT_LOOKUP_CFS.contains(name) {
            // Every write looks up its request id (almost always absent) and its key: a
            // whole-key bloom filter, in the SST files and the memtable, answers "absent"
            // without searching every level.
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            table.set_whole_key_filtering(true);
            cf_opts.set_block_based_table_factory(&table);
            cf_opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
            cf_opts.set_memtable_whole_key_filtering(true);
        }
        ColumnFamilyDescriptor::new(*name, cf_opts)
    });
    let db = DB::open_cf_descriptors(&opts, path, cfs)?;
    Ok(Arc::new(db))
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created at open"))
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn key_u64(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&key[..8]);
    u64::from_be_bytes(buf)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("in-memory serialization of store types cannot fail")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files in `dir` whose name ends in `.{extension}`.
    fn files_ending(dir: &Path, extension: &str) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == extension))
            .collect()
    }

    fn sst_bytes(dir: &Path) -> u64 {
        files_ending(dir, "sst")
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    }

    /// RocksDB's build script compiles its CRC32C with the CPU's instruction only when the
    /// target features `.cargo/config.toml` sets are on; otherwise every WAL record and SST
    /// block is checksummed by a table-driven loop. RocksDB says which one it has in its LOG.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rocksdb_checksums_with_the_crc32c_instruction() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("db")).unwrap();
        drop(db);
        let log = std::fs::read_to_string(dir.path().join("db/LOG")).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("Fast CRC32 supported"))
            .expect("RocksDB logs its CRC32C support at open");
        assert!(
            line.ends_with("Fast CRC32 supported: Supported on x86"),
            "{line} (built without .cargo/config.toml's target features? RUSTFLAGS overrides them)"
        );
    }

    #[test]
    fn synced_writes_into_a_recycled_wal_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = open(&path).unwrap();
        // Two flushes retire two WAL files, which are kept for reuse.
        for round in 0..2u64 {
            for i in 0..100u64 {
                db.put_cf(cf(&db, CF_KV), u64_key(round * 1000 + i), [1u8; 512])
                    .unwrap();
            }
            db.flush_cf(cf(&db, CF_KV)).unwrap();
        }
        assert!(
            files_ending(&path, "log").len() > 1,
            "flushed WAL files are kept for reuse"
        );
        let mut sync = rocksdb::WriteOptions::default();
        sync.set_sync(true);
        for index in 1..=50u64 {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(cf(&db, CF_LOG), u64_key(index), index.to_string());
            db.write_opt(batch, &sync).unwrap();
        }
        drop(db);
        let db = open(&path).unwrap();
        for index in 1..=50u64 {
            assert_eq!(
                db.get_cf(cf(&db, CF_LOG), u64_key(index)).unwrap(),
                Some(index.to_string().into_bytes()),
                "entry {index} after the reopen"
            );
        }
        assert_eq!(
            db.iterator_cf(cf(&db, CF_LOG), rocksdb::IteratorMode::Start)
                .count(),
            50,
            "no stale record of a recycled file was replayed"
        );
    }

    #[test]
    fn flushed_objects_take_a_fraction_of_their_size_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = open(&path).unwrap();
        let mut written = 0u64;
        for i in 0..4000 {
            let key = format!("/registry/pods/default/web-{i:05}");
            let value = format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web-{i:05}","namespace":"default","labels":{{"app":"web"}}}},"spec":{{"nodeName":"node-{n}","containers":[{{"name":"web","image":"busybox:latest","resources":{{"requests":{{"cpu":"100m","memory":"64Mi"}}}}}}]}},"status":{{"phase":"Running","podIP":"198.18.{a}.{b}"}}}}"#,
                n = i % 50,
                a = i / 250,
                b = i % 250,
            );
            written += (key.len() + value.len()) as u64;
            db.put_cf(cf(&db, CF_KV), key, value).unwrap();
        }
        db.flush_cf(cf(&db, CF_KV)).unwrap();
        let on_disk = sst_bytes(&path);
        assert!(on_disk > 0, "the flush wrote an SST file");
        assert!(
            on_disk * 2 < written,
            "{written} bytes of objects took {on_disk} bytes of SST files"
        );
    }
}
