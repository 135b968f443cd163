//! Snapshots of the state machine: built from a consistent RocksDB snapshot into a file, sent in
//! chunks by openraft, and installed atomically on the receiving peer.
//!
//! File format: the magic `FLSNAP01`, then frames `[cf u8][key_len u32][key][value_len u32][value]`
//! (lengths little-endian; `cf` indexes [`STATE_MACHINE_CFS`]), then a trailer `[0xff][frames
//! u64][crc32 u32]` whose CRC covers every byte before it.
//!
//! Atomic install: the received file is made durable under its final name, an "installing"
//! marker naming it is written with sync, the state machine column families are replaced, and
//! the marker is swapped for the new "current" record in one synced batch. A crash in between is
//! finished on the next open from the file the marker names.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{IteratorMode, ReadOptions, SnapshotWithThreadMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::db::{cf, decode, encode, key_space_end, CF_SNAPSHOT, STATE_MACHINE_CFS};
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"FLSNAP01";
const TRAILER_TAG: u8 = 0xff;
const KEY_CURRENT: &[u8] = b"current";
const KEY_INSTALLING: &[u8] = b"installing";
/// Bytes of records per RocksDB write batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest key or value accepted from a snapshot file.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot io: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("snapshot file is corrupt: {0}")]
    Corrupt(String),
}

/// The current snapshot's meta and its file name inside the snapshot directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta,
    pub file: String,
}

/// A RocksDB snapshot that owns its database handle, so it can move to a builder task.
pub struct OwnedSnapshot {
    // Declared before `db`: the snapshot is released before the handle that keeps the DB open.
    snap: SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
}

impl OwnedSnapshot {
    pub fn new(db: Arc<DB>) -> Self {
        let snap = db.snapshot();
        // SAFETY: the snapshot borrows the DB behind `db`, an `Arc` stored in the same struct and
        // dropped after the snapshot (field order), so the borrow never outlives the DB.
        let snap: SnapshotWithThreadMode<'static, DB> = unsafe { std::mem::transmute(snap) };
        OwnedSnapshot { snap, db }
    }

    fn read_opts(&self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snap);
        opts
    }
}

/// The snapshot directory of one peer and the bookkeeping of its current snapshot.
pub struct SnapshotStore {
    dir: PathBuf,
    db: Arc<DB>,
    /// The file a transfer in progress is being received into.
    receiving: Mutex<Option<PathBuf>>,
    /// Serialises builds and installs, which both replace the current snapshot.
    replace: Mutex<()>,
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SnapshotStore {
    pub fn open(dir: PathBuf, db: Arc<DB>) -> Result<Arc<Self>, SnapshotError> {
        fs::create_dir_all(&dir)?;
        let store = Arc::new(SnapshotStore {
            dir,
            db,
            receiving: Mutex::new(None),
            replace: Mutex::new(()),
        });
        store.remove_stale_files(true)?;
        Ok(store)
    }

    pub fn current(&self) -> Result<Option<SnapshotRecord>, SnapshotError> {
        let raw = self.db.get_cf(cf(&self.db, CF_SNAPSHOT), KEY_CURRENT)?;
        raw.map(|r| decode(&r).map_err(|e| SnapshotError::Corrupt(e.to_string())))
            .transpose()
    }

    pub fn path_of(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Deletes snapshot files that are neither current nor named by an install marker; files of
    /// transfers in progress only when `with_transfers` (at open, when none can be running).
    fn remove_stale_files(&self, with_transfers: bool) -> Result<(), SnapshotError> {
        let mut keep = Vec::new();
        if let Some(current) = self.current()? {
            keep.push(current.file);
        }
        if let Some(raw) = self.db.get_cf(cf(&self.db, CF_SNAPSHOT), KEY_INSTALLING)? {
            let record: SnapshotRecord =
                decode(&raw).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            keep.push(record.file);
        }
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let transfer = name.starts_with("receiving-");
            if !keep.contains(&name) && (with_transfers || !transfer) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes the state machine as of `snap` into a new snapshot file and makes it current.
    pub fn build(
        &self,
        snap: &OwnedSnapshot,
        meta: SnapshotMeta,
    ) -> Result<SnapshotRecord, SnapshotError> {
        let _guard = self.replace.lock().expect("snapshot lock");
        let file = format!("{}.snap", meta.snapshot_id);
        let tmp = self.dir.join(format!("{file}.tmp"));
        write_snapshot_file(&tmp, snap)?;
        fs::rename(&tmp, self.dir.join(&file))?;
        fsync_dir(&self.dir)?;
        let record = SnapshotRecord { meta, file };
        self.db.put_cf_opt(
            cf(&self.db, CF_SNAPSHOT),
            KEY_CURRENT,
            encode(&record),
            &synced(),
        )?;
        self.remove_stale_files(false)?;
        Ok(record)
    }

    /// A fresh file to receive a snapshot from the leader into.
    pub fn begin_receiving(&self) -> Result<File, SnapshotError> {
        let path = self
            .dir
            .join(format!("receiving-{:016x}.tmp", rand::random::<u64>()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let previous = self.receiving.lock().expect("snapshot lock").replace(path);
        if let Some(previous) = previous {
            let _ = fs::remove_file(previous);
        }
        Ok(file)
    }

    /// Copies the received snapshot under its final name (durably), checks it, and replaces the
    /// state machine with its contents. The data is read from `file` itself, whatever file the
    /// transfer ended up in.
    pub fn install_received(
        &self,
        meta: &SnapshotMeta,
        mut file: File,
    ) -> Result<(), SnapshotError> {
        let _guard = self.replace.lock().expect("snapshot lock");
        let name = format!("{}.snap", meta.snapshot_id);
        let tmp = self.dir.join(format!("{name}.tmp"));
        file.seek(SeekFrom::Start(0))?;
        let mut out = File::create(&tmp)?;
        std::io::copy(&mut file, &mut out)?;
        out.sync_all()?;
        drop((file, out));
        if let Some(received) = self.receiving.lock().expect("snapshot lock").take() {
            let _ = fs::remove_file(received);
        }
        if let Err(e) = verify_file(&tmp) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, self.dir.join(&name))?;
        fsync_dir(&self.dir)?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: name,
        };
        self.db.put_cf_opt(
            cf(&self.db, CF_SNAPSHOT),
            KEY_INSTALLING,
            encode(&record),
            &synced(),
        )?;
        self.load(&record)?;
        self.remove_stale_files(false)?;
        Ok(())
    }

    /// Finishes an install that a crash interrupted. Returns whether there was one.
    pub fn finish_interrupted_install(&self) -> Result<bool, SnapshotError> {
        let Some(raw) = self.db.get_cf(cf(&self.db, CF_SNAPSHOT), KEY_INSTALLING)? else {
            return Ok(false);
        };
        let record: SnapshotRecord =
            decode(&raw).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        tracing::warn!(snapshot = %record.meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
        self.load(&record)?;
        Ok(true)
    }

    /// Replaces the state machine column families with the file's records; the last, synced
    /// batch swaps the install marker for the current-snapshot record.
    fn load(&self, record: &SnapshotRecord) -> Result<(), SnapshotError> {
        let db = &self.db;
        let mut batch = WriteBatch::default();
        for name in STATE_MACHINE_CFS {
            batch.delete_range_cf(cf(db, name), Vec::new(), key_space_end());
        }
        db.write(batch)?;
        let mut batch = WriteBatch::default();
        read_frames(&self.path_of(&record.file), |tag, key, value| {
            batch.put_cf(cf(db, STATE_MACHINE_CFS[tag as usize]), key, value);
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                db.write(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        batch.put_cf(cf(db, CF_SNAPSHOT), KEY_CURRENT, encode(record));
        batch.delete_cf(cf(db, CF_SNAPSHOT), KEY_INSTALLING);
        db.write_opt(batch, &synced())?;
        Ok(())
    }
}

fn write_snapshot_file(path: &Path, snap: &OwnedSnapshot) -> Result<(), SnapshotError> {
    let file = File::create(path)?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1024 * 1024, file),
        crc: crc32fast::Hasher::new(),
    };
    out.write_all(MAGIC)?;
    let mut frames: u64 = 0;
    for (tag, name) in STATE_MACHINE_CFS.iter().enumerate() {
        let iter =
            snap.db
                .iterator_cf_opt(cf(&snap.db, name), snap.read_opts(), IteratorMode::Start);
        for item in iter {
            let (key, value) = item?;
            out.write_all(&[tag as u8])?;
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(&key)?;
            out.write_all(&(value.len() as u32).to_le_bytes())?;
            out.write_all(&value)?;
            frames += 1;
        }
    }
    out.write_all(&[TRAILER_TAG])?;
    out.write_all(&frames.to_le_bytes())?;
    let crc = out.crc.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

struct HashingWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> HashingReader<R> {
    fn exact(&mut self, n: usize) -> Result<Vec<u8>, SnapshotError> {
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| SnapshotError::Corrupt(format!("truncated: {e}")))?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn len(&mut self) -> Result<usize, SnapshotError> {
        let raw = self.exact(4)?;
        let len = u32::from_le_bytes(raw.try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(SnapshotError::Corrupt(format!("frame of {len} bytes")));
        }
        Ok(len)
    }
}

/// Streams the frames of a snapshot file to `each`, then checks the trailer.
fn read_frames(
    path: &Path,
    mut each: impl FnMut(u8, &[u8], &[u8]) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(1024 * 1024, File::open(path)?),
        crc: crc32fast::Hasher::new(),
    };
    if reader.exact(MAGIC.len())? != MAGIC {
        return Err(SnapshotError::Corrupt("bad magic".into()));
    }
    let mut frames: u64 = 0;
    loop {
        let tag = reader.exact(1)?[0];
        if tag == TRAILER_TAG {
            break;
        }
        if tag as usize >= STATE_MACHINE_CFS.len() {
            return Err(SnapshotError::Corrupt(format!(
                "unknown column family tag {tag}"
            )));
        }
        let key_len = reader.len()?;
        let key = reader.exact(key_len)?;
        let value_len = reader.len()?;
        let value = reader.exact(value_len)?;
        each(tag, &key, &value)?;
        frames += 1;
    }
    let counted = u64::from_le_bytes(reader.exact(8)?.try_into().expect("8 bytes"));
    let expected_crc = reader.crc.clone().finalize();
    let mut crc = [0u8; 4];
    reader
        .inner
        .read_exact(&mut crc)
        .map_err(|e| SnapshotError::Corrupt(format!("truncated trailer: {e}")))?;
    if counted != frames || u32::from_le_bytes(crc) != expected_crc {
        return Err(SnapshotError::Corrupt(
            "checksum or frame count mismatch".into(),
        ));
    }
    Ok(())
}

/// Checks a whole snapshot file before anything is replaced with it.
fn verify_file(path: &Path) -> Result<(), SnapshotError> {
    read_frames(path, |_, _, _| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.snap");
        fs::write(&path, b"FLSNAP01\x00\x01\x00\x00\x00k").unwrap();
        assert!(matches!(verify_file(&path), Err(SnapshotError::Corrupt(_))));
        fs::write(&path, b"NOTASNAP").unwrap();
        assert!(matches!(verify_file(&path), Err(SnapshotError::Corrupt(_))));
    }
}
